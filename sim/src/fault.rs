//! Faults the harness applies between `sim.step()` calls, and schedules of them.

use std::fmt;
use std::time::Duration;

/// One change to the simulated world. Relays are named by index (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cuts every link between a relay of `a` and a relay of `b`, both ways.
    Partition {
        a: Vec<usize>,
        b: Vec<usize>,
    },
    /// Heals what `Partition { a, b }` cut.
    Repair {
        a: Vec<usize>,
        b: Vec<usize>,
    },
    /// Cuts `from` -> `to` only.
    PartitionOneway {
        from: usize,
        to: usize,
    },
    RepairOneway {
        from: usize,
        to: usize,
    },
    /// Holds messages between two relays until released (they are then delivered).
    Hold {
        a: usize,
        b: usize,
    },
    Release {
        a: usize,
        b: usize,
    },
    /// Sets the link's message latency to `min_ms..=max_ms` (jitter within).
    Latency {
        a: usize,
        b: usize,
        min_ms: u64,
        max_ms: u64,
    },
    /// Stops a relay's software (its state is lost).
    Crash(usize),
    /// Starts a crashed relay again (a new boot, empty state).
    Restart(usize),
}

pub fn host(index: usize) -> String {
    format!("relay-{index}")
}

fn hosts(list: &[usize]) -> String {
    list.iter().map(|i| host(*i)).collect::<Vec<_>>().join(",")
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { a, b } => write!(f, "partition {} | {}", hosts(a), hosts(b)),
            Fault::Repair { a, b } => write!(f, "repair {} | {}", hosts(a), hosts(b)),
            Fault::PartitionOneway { from, to } => {
                write!(f, "partition-oneway {} -> {}", host(*from), host(*to))
            }
            Fault::RepairOneway { from, to } => {
                write!(f, "repair-oneway {} -> {}", host(*from), host(*to))
            }
            Fault::Hold { a, b } => write!(f, "hold {} <-> {}", host(*a), host(*b)),
            Fault::Release { a, b } => write!(f, "release {} <-> {}", host(*a), host(*b)),
            Fault::Latency {
                a,
                b,
                min_ms,
                max_ms,
            } => write!(
                f,
                "latency {} <-> {} {min_ms}..{max_ms} ms",
                host(*a),
                host(*b)
            ),
            Fault::Crash(i) => write!(f, "crash {}", host(*i)),
            Fault::Restart(i) => write!(f, "restart {}", host(*i)),
        }
    }
}

/// Faults at simulated times, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule(pub Vec<(Duration, Fault)>);

impl Schedule {
    pub fn at(&mut self, at: Duration, fault: Fault) {
        self.0.push((at, fault));
    }

    /// Sorted by time; faults at the same time keep their order.
    pub fn sorted(mut self) -> Schedule {
        self.0.sort_by_key(|(at, _)| *at);
        self
    }

    /// When the last fault happens.
    pub fn last(&self) -> Duration {
        self.0.iter().map(|(at, _)| *at).max().unwrap_or_default()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, fault) in &self.0 {
            writeln!(f, "  at {:>5} ms: {fault}", at.as_millis())?;
        }
        Ok(())
    }
}

/// The faults that, applied after `schedule`, leave every link repaired, released and
/// every relay running: a run always ends in a healed world unless the scenario means
/// it not to.
pub fn heal_all(schedule: &Schedule, at: Duration) -> Vec<(Duration, Fault)> {
    let mut out = Vec::new();
    let mut crashed = std::collections::BTreeSet::new();
    for (_, fault) in &schedule.0 {
        match fault {
            Fault::Crash(i) => {
                crashed.insert(*i);
            }
            Fault::Restart(i) => {
                crashed.remove(i);
            }
            _ => {}
        }
    }
    for (_, fault) in &schedule.0 {
        let heal = match fault {
            Fault::Partition { a, b } => Fault::Repair {
                a: a.clone(),
                b: b.clone(),
            },
            Fault::PartitionOneway { from, to } => Fault::RepairOneway {
                from: *from,
                to: *to,
            },
            Fault::Hold { a, b } => Fault::Release { a: *a, b: *b },
            _ => continue,
        };
        if !out.iter().any(|(_, f)| *f == heal) {
            out.push((at, heal));
        }
    }
    out.extend(crashed.into_iter().map(|i| (at, Fault::Restart(i))));
    out
}
