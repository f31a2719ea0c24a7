//! The progress line on stderr: rewritten in place on a terminal, a line every few
//! seconds otherwise (logs stay short).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::task::JoinHandle;

const TERMINAL_INTERVAL: Duration = Duration::from_secs(1);
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Prints `line()` periodically until the returned guard is dropped.
pub struct Progress {
    task: JoinHandle<()>,
    terminal: bool,
}

impl Progress {
    pub fn start(line: impl Fn() -> String + Send + 'static) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let interval = if terminal {
            TERMINAL_INTERVAL
        } else {
            LOG_INTERVAL
        };
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let mut err = std::io::stderr().lock();
                if terminal {
                    let _ = write!(err, "\r\x1b[2K{}", line());
                } else {
                    let _ = writeln!(err, "{}", line());
                }
                let _ = err.flush();
            }
        });
        Progress { task, terminal }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}
