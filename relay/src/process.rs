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

/// CPU use as a fraction of one core, averaged over the last window.
#[derive(Debug)]
pub struct CpuSampler {
    last: Mutex<Option<(Instant, f64, f64)>>,
}

impl Default for CpuSampler {
    fn default() -> Self {
        CpuSampler {
            last: Mutex::new(None),
        }
    }
}

impl CpuSampler {
    /// Percent of one core used since the previous window closed (0 before the first).
    pub fn percent(&self, now: Instant) -> f64 {
        let cpu = cpu_seconds();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            None => {
                *last = Some((now, cpu, 0.0));
                0.0
            }
            Some((at, at_cpu, percent)) if now.duration_since(at) < CPU_WINDOW => {
                let _ = (at_cpu, cpu);
                percent
            }
            Some((at, at_cpu, _)) => {
                let elapsed = now.duration_since(at).as_secs_f64();
                let percent = ((cpu - at_cpu) / elapsed * 100.0).max(0.0);
                *last = Some((now, cpu, percent));
                percent
            }
        }
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
    fn formats_like_the_specification() {
        assert_eq!(format_megabytes(128 << 20), "128MB");
        assert_eq!(format_percent(5.0), "5.0%");
    }
}
