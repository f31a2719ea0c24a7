//! Spreading connections over loopback source addresses: one source address has about
//! 28,000 ephemeral ports here, so more connections than that to one relay need several
//! (127.0.0.1, 127.0.0.2, ...; all of 127.0.0.0/8 reaches the loopback interface).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::ensure;

/// Most source addresses used (127.0.0.1 to 127.0.0.254).
pub const SOURCES_MAX: usize = 254;

/// The source address of each connection of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(Vec<IpAddr>);

impl Sources {
    /// No binding: the kernel picks the source.
    pub fn any() -> Sources {
        Sources(Vec::new())
    }

    /// Enough loopback sources for `connections` with at most `ports_per_source` each;
    /// none are bound when one address is enough.
    ///
    /// # Errors
    /// More than one source is needed and the target is not an IPv4 loopback address,
    /// or more than [`SOURCES_MAX`] are needed.
    pub fn plan(
        target: IpAddr,
        connections: usize,
        ports_per_source: usize,
    ) -> anyhow::Result<Sources> {
        ensure!(ports_per_source > 0, "ports per source must be positive");
        let needed = connections.div_ceil(ports_per_source);
        if needed <= 1 {
            return Ok(Sources::any());
        }
        ensure!(
            matches!(target, IpAddr::V4(v4) if v4.is_loopback()),
            "{connections} connections need {needed} source addresses, which only works \
             towards a 127.0.0.0/8 target (got {target})"
        );
        ensure!(
            needed <= SOURCES_MAX,
            "{connections} connections need {needed} source addresses (at most {SOURCES_MAX})"
        );
        Ok(Sources(
            (1..=needed as u8)
                .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
                .collect(),
        ))
    }

    /// The source of connection `index` (round robin), or `None` for no binding.
    pub fn of(&self, index: usize) -> Option<IpAddr> {
        (!self.0.is_empty()).then(|| self.0[index % self.0.len()])
    }

    pub fn len(&self) -> usize {
        self.0.len().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// One address is left to the kernel; more are spread evenly and stay under the cap.
    #[test]
    fn sources_spread_evenly_within_the_port_budget() {
        assert_eq!(
            Sources::plan(LOOPBACK, 25_000, 25_000).unwrap(),
            Sources::any()
        );
        assert_eq!(Sources::any().of(7), None);
        let sources = Sources::plan(LOOPBACK, 60_000, 25_000).unwrap();
        assert_eq!(sources.len(), 3);
        let mut per_source = std::collections::BTreeMap::new();
        for i in 0..60_000 {
            *per_source.entry(sources.of(i).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(per_source.len(), 3);
        assert!(per_source.values().all(|&n| n == 20_000));
        assert_eq!(sources.of(2), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))));
    }

    /// Spreading is refused towards a non-loopback target and past 254 sources.
    #[test]
    fn spreading_needs_loopback_and_is_bounded() {
        let remote = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert!(Sources::plan(remote, 100, 25_000).is_ok());
        assert!(Sources::plan(remote, 30_000, 25_000).is_err());
        assert!(Sources::plan(LOOPBACK, 255, 1).is_err());
        assert!(Sources::plan(LOOPBACK, 254, 1).is_ok());
    }
}
