//! Peer discovery by DNS: every `[mesh] peers_dns` name is resolved through the network
//! seam every `peers_dns_interval_secs`, and each address it answers is dialed like a
//! configured peer. An address missing from the latest answer is no longer dialed (and
//! leaves the dial table); this relay's own address is skipped.
//!
//! A failed or timed-out lookup keeps that name's previous answer: a DNS hiccup must not
//! make the relay forget its whole mesh. The answers are bounded
//! (`DISCOVERED_ADDRESSES_MAX` in all).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::Mesh;
use crate::rt::Net;

/// Addresses kept from all `peers_dns` answers together; the rest of an answer is
/// ignored (`mesh.peers_max` bounds the links anyway).
pub const DISCOVERED_ADDRESSES_MAX: usize = 1024;
/// Bound on one lookup.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses the latest answer for each `peers_dns` name gave.
#[derive(Default)]
pub(super) struct Discovered {
    by_name: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Discovered {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every discovered address, each once.
    pub(super) fn addresses(&self) -> Vec<String> {
        let by_name = self.lock();
        let all: BTreeSet<&String> = by_name.values().flatten().collect();
        all.into_iter().cloned().collect()
    }

    /// Replaces `name`'s answer; returns whether it changed.
    fn set(&self, name: &str, answer: BTreeSet<String>) -> bool {
        let mut by_name = self.lock();
        let others: usize = by_name
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(_, a)| a.len())
            .sum();
        let room = DISCOVERED_ADDRESSES_MAX.saturating_sub(others);
        let answer: BTreeSet<String> = answer.into_iter().take(room).collect();
        let changed = by_name.get(name) != Some(&answer);
        by_name.insert(name.to_string(), answer);
        changed
    }
}

/// Resolves every `peers_dns` name now and then, until shutdown.
pub(super) async fn run<N: Net>(mesh: std::sync::Arc<Mesh>, net: N) {
    let names = mesh.parts.config.mesh.peers_dns.clone();
    if names.is_empty() {
        return;
    }
    let interval = Duration::from_secs(mesh.parts.config.mesh.peers_dns_interval_secs);
    loop {
        for name in &names {
            resolve_one(&mesh, &net, name).await;
        }
        tokio::select! {
            () = mesh.parts.lifecycle.shutdown_started() => return,
            () = mesh.clock().sleep(interval) => {}
        }
    }
}

async fn resolve_one<N: Net>(mesh: &Mesh, net: &N, name: &str) {
    let answer = match tokio::time::timeout(RESOLVE_TIMEOUT, net.resolve(name)).await {
        Ok(Ok(addresses)) => addresses,
        Ok(Err(error)) => {
            tracing::warn!(%name, %error, "peers_dns lookup failed; keeping its last answer");
            return;
        }
        Err(_) => {
            tracing::warn!(%name, "peers_dns lookup timed out; keeping its last answer");
            return;
        }
    };
    let own = mesh.parts.config.advertised_addr();
    let addresses: BTreeSet<String> = answer
        .iter()
        .map(ToString::to_string)
        .filter(|a| a != own)
        .collect();
    let count = addresses.len();
    if mesh.discovered.set(name, addresses) {
        tracing::info!(%name, addresses = count, "peers_dns answer changed");
        // Dial the new addresses now rather than at the next tick.
        mesh.state.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_answer_replaces_the_old_one_and_names_are_merged() {
        let discovered = Discovered::default();
        assert!(discovered.set("a:1", set_of(&["10.0.0.1:1", "10.0.0.2:1"])));
        assert!(discovered.set("b:1", set_of(&["10.0.0.2:1", "10.0.0.3:1"])));
        assert_eq!(
            discovered.addresses(),
            vec!["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]
        );
        assert!(!discovered.set("a:1", set_of(&["10.0.0.1:1", "10.0.0.2:1"])));
        assert!(discovered.set("a:1", set_of(&["10.0.0.4:1"])));
        assert_eq!(
            discovered.addresses(),
            vec!["10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"]
        );
    }

    #[test]
    fn answers_are_bounded_in_total() {
        let discovered = Discovered::default();
        let big: BTreeSet<String> = (0..DISCOVERED_ADDRESSES_MAX + 10)
            .map(|i| format!("10.{}.{}.1:1", i / 256, i % 256))
            .collect();
        discovered.set("a:1", big.clone());
        discovered.set("b:1", set_of(&["192.168.0.1:1"]));
        assert_eq!(discovered.addresses().len(), DISCOVERED_ADDRESSES_MAX);
    }
}
