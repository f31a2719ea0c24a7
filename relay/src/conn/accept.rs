//! The accept loop both listeners share: it never exits on an accept error (for instance
//! out of file descriptors) but backs off and retries, so running out of descriptors
//! degrades service instead of ending it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::rt::{Listener, SharedClock};

/// Accept errors back off between these bounds, doubling each time.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts until `stop` completes, handing each connection to `on_accept`; `on_error`
/// sees each accept failure (to count it) before the loop backs off.
pub async fn accept_loop<L: Listener>(
    listener: &mut L,
    clock: &SharedClock,
    stop: impl Future<Output = ()>,
    mut on_accept: impl FnMut(L::Stream, SocketAddr),
    on_error: impl Fn(&std::io::Error, Duration),
) {
    tokio::pin!(stop);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                on_accept(stream, peer);
            }
            Err(error) => {
                on_error(&error, backoff);
                tokio::select! {
                    biased;
                    () = &mut stop => return,
                    () = clock.sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io;
    use std::sync::{Arc, Mutex};

    use tokio::io::DuplexStream;
    use tokio::time::Instant;

    use super::*;
    use crate::rt::{Clock, TokioClock};

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Step {
        Fail,
        Accept,
    }

    /// A listener whose accepts follow a script, then fail `then_fail` more times, then
    /// wait forever (so a loop that spins instead of backing off runs out of failures
    /// and the test sees their count, instead of hanging the runtime); it notes when
    /// each accept was asked for.
    struct Scripted {
        script: VecDeque<Step>,
        then_fail: usize,
        asked: Arc<Mutex<Vec<Instant>>>,
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    impl Listener for Scripted {
        type Stream = DuplexStream;

        fn accept(
            &mut self,
        ) -> impl Future<Output = io::Result<(DuplexStream, SocketAddr)>> + Send {
            self.asked.lock().unwrap().push(TokioClock.now());
            let step = self.script.pop_front().or_else(|| {
                self.then_fail = self.then_fail.checked_sub(1)?;
                Some(Step::Fail)
            });
            async move {
                match step {
                    Some(Step::Accept) => Ok((tokio::io::duplex(8).0, addr())),
                    // EMFILE, as when the process is out of file descriptors.
                    Some(Step::Fail) => Err(io::Error::from_raw_os_error(24)),
                    None => std::future::pending().await,
                }
            }
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(addr())
        }
    }

    struct Observed {
        asked: Arc<Mutex<Vec<Instant>>>,
        backoffs: Arc<Mutex<Vec<Duration>>>,
        accepted: Arc<Mutex<usize>>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    fn spawn_loop(script: &[Step], then_fail: usize) -> Observed {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let backoffs = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let mut listener = Scripted {
            script: script.iter().copied().collect(),
            then_fail,
            asked: asked.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (seen_backoffs, seen_accepted) = (backoffs.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let clock: SharedClock = Arc::new(TokioClock);
            accept_loop(
                &mut listener,
                &clock,
                async move {
                    let _ = stopped.await;
                },
                |_stream, _peer| *seen_accepted.lock().unwrap() += 1,
                |_error, backoff| seen_backoffs.lock().unwrap().push(backoff),
            )
            .await;
        });
        Observed {
            asked,
            backoffs,
            accepted,
            stop,
            task,
        }
    }

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    /// Accept errors never end the loop: it waits 5 ms after the first, doubling up to
    /// 1 s, accepts again once accept works (the wait starting over from 5 ms), and
    /// ends only when stopped.
    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_doubling_and_the_loop_survives() {
        use Step::{Accept, Fail};
        let mut script = vec![Fail; 11];
        script.extend([Accept, Fail, Fail, Accept]);
        let observed = spawn_loop(&script, 0);
        // Paused time: this sleep lets the loop run every backoff of the script.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!observed.task.is_finished(), "the loop is still accepting");
        assert_eq!(*observed.accepted.lock().unwrap(), 2);
        let backoffs = observed.backoffs.lock().unwrap().clone();
        assert_eq!(
            backoffs,
            ms(&[5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 5, 10])
        );
        // Each accept after an error came exactly that backoff later; after an accepted
        // connection, the next accept is asked for at once.
        let asked = observed.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), script.len() + 1, "and one more, waiting");
        let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
        let mut expected = ms(&[5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        expected.extend(ms(&[0, 5, 10, 0]));
        assert_eq!(gaps, expected);
        observed.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), observed.task)
            .await
            .expect("stopping ends the loop")
            .unwrap();
    }

    /// A listener that keeps failing costs one accept per backoff (at most one a second
    /// once the backoff is at its bound), and stopping ends the loop in mid-backoff.
    #[tokio::test(start_paused = true)]
    async fn repeated_failures_are_paced_and_stop_still_ends_the_loop() {
        let observed = spawn_loop(&[], 10_000);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let errors = observed.backoffs.lock().unwrap().len();
        // 5 + 10 + ... + 640 ms = 1.275 s for the first 8, then one a second.
        assert!(
            (35..=40).contains(&errors),
            "{errors} accept errors in 30 s"
        );
        assert!(!observed.task.is_finished());
        observed.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_millis(1), observed.task)
            .await
            .expect("stopping does not wait for the backoff")
            .unwrap();
    }
}
