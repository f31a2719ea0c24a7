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
    /// Drains a relay as an operator's `POST /admin/drain` does (lame duck): it tells its
    /// peers it is leaving, sends its wallets `reconnect` with resume tokens, closes them
    /// over `limits.lame_duck_secs` and stops. A `Restart` starts it again.
    Drain(usize),
    /// The simulated DNS name `DNS_NAME` answers these relays' addresses from now on
    /// (relays of a `Topology::Dns` mesh discover their peers through it).
    Dns(Vec<usize>),
}

/// The DNS name of every relay, as a Kubernetes headless Service would give it.
pub const DNS_NAME: &str = "relays";

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
            Fault::Drain(i) => write!(f, "drain {}", host(*i)),
            Fault::Dns(list) => write!(f, "dns {DNS_NAME} = {}", hosts(list)),
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
            Fault::Crash(i) | Fault::Drain(i) => {
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

fn parse_host(s: &str) -> Result<usize, String> {
    s.trim()
        .strip_prefix("relay-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("`{s}` is not a relay host (relay-N)"))
}

fn parse_hosts(s: &str) -> Result<Vec<usize>, String> {
    s.split(',').map(parse_host).collect()
}

fn split2<'a>(s: &'a str, sep: &str) -> Result<(&'a str, &'a str), String> {
    s.split_once(sep)
        .ok_or_else(|| format!("expected `{sep}` in `{s}`"))
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// Parses what `Display` writes.
    fn from_str(s: &str) -> Result<Fault, String> {
        let (verb, rest) = s.trim().split_once(' ').unwrap_or((s.trim(), ""));
        Ok(match verb {
            "partition" | "repair" => {
                let (a, b) = split2(rest, "|")?;
                let (a, b) = (parse_hosts(a)?, parse_hosts(b)?);
                if verb == "partition" {
                    Fault::Partition { a, b }
                } else {
                    Fault::Repair { a, b }
                }
            }
            "partition-oneway" | "repair-oneway" => {
                let (from, to) = split2(rest, "->")?;
                let (from, to) = (parse_host(from)?, parse_host(to)?);
                if verb == "partition-oneway" {
                    Fault::PartitionOneway { from, to }
                } else {
                    Fault::RepairOneway { from, to }
                }
            }
            "hold" | "release" => {
                let (a, b) = split2(rest, "<->")?;
                let (a, b) = (parse_host(a)?, parse_host(b)?);
                if verb == "hold" {
                    Fault::Hold { a, b }
                } else {
                    Fault::Release { a, b }
                }
            }
            "latency" => {
                let (a, rest) = split2(rest, "<->")?;
                let mut words = rest.split_whitespace();
                let b = parse_host(words.next().unwrap_or_default())?;
                let (min, max) = split2(words.next().unwrap_or_default(), "..")?;
                let number = |v: &str| v.parse::<u64>().map_err(|e| format!("`{v}`: {e}"));
                Fault::Latency {
                    a: parse_host(a)?,
                    b,
                    min_ms: number(min)?,
                    max_ms: number(max)?,
                }
            }
            "crash" => Fault::Crash(parse_host(rest)?),
            "restart" => Fault::Restart(parse_host(rest)?),
            "drain" => Fault::Drain(parse_host(rest)?),
            "dns" => {
                let (_, list) = split2(rest, "=")?;
                let list = list.trim();
                Fault::Dns(if list.is_empty() {
                    Vec::new()
                } else {
                    parse_hosts(list)?
                })
            }
            other => return Err(format!("unknown fault `{other}`")),
        })
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    /// Parses what `Display` writes: `at <ms> ms: <fault>` per line; blank lines and
    /// lines starting with `#` are skipped.
    fn from_str(text: &str) -> Result<Schedule, String> {
        let mut schedule = Schedule::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let rest = line
                .strip_prefix("at ")
                .ok_or_else(|| format!("`{line}`: expected `at <ms> ms: <fault>`"))?;
            let (at, fault) = split2(rest, "ms:")?;
            let at: u64 = at.trim().parse().map_err(|e| format!("`{line}`: {e}"))?;
            schedule.at(Duration::from_millis(at), fault.parse()?);
        }
        Ok(schedule.sorted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_round_trip_through_text() {
        let mut s = Schedule::default();
        s.at(
            Duration::from_millis(5),
            Fault::Partition {
                a: vec![1, 2],
                b: vec![3],
            },
        );
        s.at(
            Duration::from_millis(6),
            Fault::PartitionOneway { from: 1, to: 3 },
        );
        s.at(Duration::from_millis(7), Fault::Hold { a: 2, b: 3 });
        s.at(
            Duration::from_millis(8),
            Fault::Latency {
                a: 1,
                b: 2,
                min_ms: 3,
                max_ms: 9,
            },
        );
        s.at(Duration::from_millis(9), Fault::Crash(2));
        s.at(Duration::from_millis(10), Fault::Restart(2));
        s.at(Duration::from_millis(10), Fault::Drain(3));
        s.at(
            Duration::from_millis(11),
            Fault::RepairOneway { from: 1, to: 3 },
        );
        s.at(Duration::from_millis(12), Fault::Release { a: 2, b: 3 });
        s.at(
            Duration::from_millis(13),
            Fault::Repair {
                a: vec![1, 2],
                b: vec![3],
            },
        );
        s.at(Duration::from_millis(14), Fault::Dns(Vec::new()));
        s.at(Duration::from_millis(15), Fault::Dns(vec![1, 3]));
        let text = s.to_string();
        assert_eq!(text.parse::<Schedule>().unwrap(), s, "{text}");
    }
}
