//! The relay process's own resource use, read from `/proc` (Linux).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` CPU times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;
/// CPU use is averaged over at least this window.
const CPU_WINDOW: Duration = Duration::from_secs(1);

/// Resident memory in bytes, from `/proc/self/status` (`VmRSS`); 0 where unavailable.
pub fn resident_memory_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// User + system CPU time of the whole process, in seconds.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / USER_HZ
}

/// Open file descriptors of the process.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

/// The process's resident memory and CPU use, read from `/proc` at most once per
/// window however often it is asked (every handshake sends a `health` message).
#[derive(Debug, Default)]
pub struct ProcessSampler {
    last: Mutex<Option<Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_seconds: f64,
    figures: ProcessFigures,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessFigures {
    pub resident_bytes: u64,
    /// Percent of one core over the last window (0 before the first window closed).
    pub cpu_percent: f64,
}

impl ProcessSampler {
    pub fn sample(&self, now: Instant) -> ProcessFigures {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sample) = *last
            && now.duration_since(sample.at) < CPU_WINDOW
        {
            return sample.figures;
        }
        let cpu_seconds = cpu_seconds();
        let cpu_percent = match *last {
            Some(previous) => {
                let elapsed = now.duration_since(previous.at).as_secs_f64();
                ((cpu_seconds - previous.cpu_seconds) / elapsed * 100.0).max(0.0)
            }
            None => 0.0,
        };
        let figures = ProcessFigures {
            resident_bytes: resident_memory_bytes(),
            cpu_percent,
        };
        *last = Some(Sample {
            at: now,
            cpu_seconds,
            figures,
        });
        figures
    }
}

/// `128MB` style, as the specification shows memory.
pub fn format_megabytes(bytes: u64) -> String {
    format!("{}MB", (bytes + (1 << 19)) >> 20)
}

/// `5%` style, as the specification shows CPU.
pub fn format_percent(percent: f64) -> String {
    format!("{percent:.1}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_real_figures() {
        assert!(
            resident_memory_bytes() > 1 << 20,
            "a test process holds more than 1 MiB"
        );
        assert!(open_fds() >= 3);
        let before = cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() >= before);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // A test needs some instant to start from.
    fn figures_are_reread_once_per_window() {
        let sampler = ProcessSampler::default();
        let start = Instant::now();
        let first = sampler.sample(start);
        assert!(first.resident_bytes > 0);
        assert_eq!(first.cpu_percent, 0.0, "no window has closed yet");
        let _ballast = vec![1u8; 64 << 20];
        assert_eq!(
            sampler.sample(start + Duration::from_millis(500)),
            first,
            "within the window: cached"
        );
        let later = sampler.sample(start + Duration::from_secs(2));
        assert!(
            later.resident_bytes > first.resident_bytes,
            "after the window: read again"
        );
    }

    #[test]
    fn formats_like_the_specification() {
        assert_eq!(format_megabytes(128 << 20), "128MB");
        assert_eq!(format_percent(5.0), "5.0%");
    }
}
