//! CPU time of a process (the relay under test, or this load generator) from
//! `/proc/<pid>/stat`, read before and after a measured window, and what it comes to per
//! message and per delivery.

use anyhow::Context;
use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat`'s times: the kernel's `USER_HZ`, which
/// Linux fixes at 100 for user space on every architecture it reports `/proc` for.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds process `pid` has used so far (fields 14 and 15 of
/// `/proc/<pid>/stat`).
///
/// # Errors
/// The process does not exist or its stat line is not understood.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat(&stat).with_context(|| format!("no CPU times in /proc/{pid}/stat"))
}

/// The command name (field 2) is in parentheses and may hold spaces or `)`: the fields
/// are counted from the last `)`. utime and stime are fields 14 and 15 of the line, so
/// the 12th and 13th after it.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// A process's CPU time at the start of a window.
pub struct CpuWindow {
    pid: u32,
    start_secs: f64,
}

impl CpuWindow {
    /// Starts the window now.
    pub fn start(pid: u32) -> anyhow::Result<CpuWindow> {
        Ok(CpuWindow {
            pid,
            start_secs: cpu_secs(pid)?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU seconds used since the start.
    pub fn used_secs(&self) -> anyhow::Result<f64> {
        Ok(cpu_secs(self.pid)? - self.start_secs)
    }
}

/// CPU a process used in a window, and that divided by the work done in it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CpuUse {
    pub pid: u32,
    /// User + system seconds (10 ms resolution).
    pub cpu_secs: f64,
    /// Microseconds of CPU per message: per round trip (ping) or per publication
    /// (fan-out, mesh). 0 when there was none.
    pub cpu_us_per_message: f64,
    /// Microseconds of CPU per message received: per answer (ping) or per notification
    /// delivered to a subscriber (fan-out, mesh). 0 when there was none.
    pub cpu_us_per_delivery: f64,
}

impl CpuUse {
    pub fn of(pid: u32, cpu_secs: f64, messages: u64, deliveries: u64) -> CpuUse {
        let per = |n: u64| {
            if n == 0 {
                0.0
            } else {
                cpu_secs * 1e6 / n as f64
            }
        };
        CpuUse {
            pid,
            cpu_secs,
            cpu_us_per_message: per(messages),
            cpu_us_per_delivery: per(deliveries),
        }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} CPU s (pid {}): {:.2} µs per message, {:.3} µs per delivery",
            self.cpu_secs, self.pid, self.cpu_us_per_message, self.cpu_us_per_delivery
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are found after a command name with spaces and parentheses.
    #[test]
    fn stat_lines_parse() {
        let line = "4242 (sdk relay (x)) S 1 4242 4242 0 -1 4194560 2046 0 0 0 \
                    1234 567 0 0 20 0 3 0 8976 123456789 2222 18446744073709551615";
        assert_eq!(parse_stat(line), Some(18.01));
        assert_eq!(parse_stat("4242 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    /// This process's CPU time is readable and grows when it works.
    #[test]
    fn own_cpu_time_grows() {
        let window = CpuWindow::start(std::process::id()).unwrap();
        // Busy until a tick of CPU is counted (bounded: a stuck counter fails the test).
        let mut x = 0_u64;
        let start = std::time::Instant::now();
        while cpu_secs(std::process::id()).unwrap() <= window.start_secs
            && start.elapsed() < std::time::Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let used = CpuUse::of(window.pid(), window.used_secs().unwrap(), 10, 20);
        assert!(used.cpu_secs > 0.0, "{used:?}");
        assert!(
            (used.cpu_us_per_message - used.cpu_us_per_delivery * 2.0).abs() < 1e-6,
            "{used:?}"
        );
        assert_eq!(CpuUse::of(1, 1.0, 0, 0).cpu_us_per_message, 0.0);
        assert_eq!(CpuUse::of(1, 2.0, 4, 1_000_000).cpu_us_per_delivery, 2.0);
    }
}
