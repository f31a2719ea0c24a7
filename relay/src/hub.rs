//! Local fan-out: which connected clients receive what.
//!
//! Every client has a bounded outbound queue. Delivery never waits: a client whose queue
//! is full is disconnected as a slow consumer (with the reason recorded), so one slow
//! client can neither delay the others nor make memory grow.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::conn::{CloseReason, Delivery, Outbound, Outlet};
use crate::protocol::{Notification, SUBSCRIBE_ALL, is_private_name};
use crate::resume::{Issuer, Position, StreamKey, stream_key};

/// Identifies one connection for the life of the relay process.
pub type ClientId = u64;

/// A handshaken client, as the hub knows it.
struct Client {
    outlet: Outlet,
    subscriptions: BTreeSet<String>,
    wants_sync: bool,
    /// Set for a client that handshook with capability `resume`.
    resume: Option<Resumable>,
}

/// A client with capability `resume`.
struct Resumable {
    /// Nothing is delivered until its first message after the handshake: a `resume`
    /// (which replays what it missed first) or any other (a fresh session).
    paused: bool,
    /// The position its resume token named: what it already has, never delivered again.
    skip: Position,
}

/// What the hub needs to give resumable clients a token with each notification: the
/// relay's position once this notification is routed, and who signs.
pub struct TokenContext<'a> {
    pub issuer: &'a Issuer,
    /// Every notification this relay has routed (delivered to its clients) so far.
    pub position: &'a Position,
    pub now_unix: u64,
}

impl TokenContext<'_> {
    /// A token for a client accounted for `skip` and everything the relay routed.
    fn token_for(&self, subscriptions: &BTreeSet<String>, skip: &Position) -> String {
        let mut position = skip.clone();
        position.union_with(self.position);
        self.issuer.issue(
            subscriptions.iter().map(String::as_str),
            &position,
            self.now_unix,
        )
    }
}

/// Distinct resume tokens one delivery remembers to hand to several wallets.
const TOKENS_SHARED_MAX: usize = 16;

#[derive(Default)]
struct State {
    clients: BTreeMap<ClientId, Client>,
    /// notification type -> subscribers; `*` subscribers are in `all_types`.
    by_type: HashMap<String, BTreeSet<ClientId>>,
    /// private topic -> subscribers (`protocol::PRIVATE_TOPIC_PREFIX`): apart from the
    /// types, so neither `*` nor a type of the same name ever reaches a private topic.
    by_topic: HashMap<String, BTreeSet<ClientId>>,
    all_types: BTreeSet<ClientId>,
    /// Clients with capability `resume` (they need a position with each notification).
    resumable: usize,
}

/// The registry of handshaken clients and their subscriptions.
#[derive(Default)]
pub struct Hub {
    state: RwLock<State>,
    #[cfg(feature = "mutations")]
    mutant: Option<crate::mutation::Mutant>,
}

impl Hub {
    pub fn new() -> Self {
        Hub::default()
    }

    /// A hub that applies a deliberate fault to the notifications it delivers.
    #[cfg(feature = "mutations")]
    pub fn with_mutation(mutation: Option<crate::mutation::Mutation>) -> Self {
        Hub {
            mutant: mutation.map(crate::mutation::Mutant::new),
            ..Hub::default()
        }
    }

    /// Registers a handshaken client. With `subscribe_all` it receives every type.
    pub fn join(&self, id: ClientId, outlet: Outlet, subscribe_all: bool, wants_sync: bool) {
        self.join_client(id, outlet, subscribe_all, wants_sync, false);
    }

    /// Registers a handshaken client; a `resumable` one starts paused (see `Resumable`).
    pub fn join_client(
        &self,
        id: ClientId,
        outlet: Outlet,
        subscribe_all: bool,
        wants_sync: bool,
        resumable: bool,
    ) {
        let mut state = self.write();
        let resume = resumable.then(|| Resumable {
            paused: true,
            skip: Position::default(),
        });
        if resumable {
            state.resumable += 1;
        }
        let mut subscriptions = BTreeSet::new();
        if subscribe_all {
            subscriptions.insert(SUBSCRIBE_ALL.to_string());
            state.all_types.insert(id);
        }
        state.clients.insert(
            id,
            Client {
                outlet,
                subscriptions,
                wants_sync,
                resume,
            },
        );
    }

    pub fn leave(&self, id: ClientId) {
        let mut state = self.write();
        let Some(client) = state.clients.remove(&id) else {
            return;
        };
        if client.resume.is_some() {
            state.resumable -= 1;
        }
        for name in &client.subscriptions {
            state.unindex(id, name);
        }
    }

    pub fn len(&self) -> usize {
        self.read().clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds subscriptions, bounded by `max`; returns the client's set afterwards, or
    /// `Err` with it unchanged when the bound would be passed.
    pub fn subscribe(
        &self,
        id: ClientId,
        names: &[String],
        max: usize,
    ) -> Result<Vec<String>, Vec<String>> {
        let mut state = self.write();
        let State {
            clients,
            by_type,
            by_topic,
            all_types,
            ..
        } = &mut *state;
        let Some(client) = clients.get_mut(&id) else {
            return Err(Vec::new());
        };
        let added = names
            .iter()
            .filter(|n| !client.subscriptions.contains(*n))
            .collect::<BTreeSet<_>>();
        if client.subscriptions.len() + added.len() > max {
            return Err(client.subscriptions.iter().cloned().collect());
        }
        for name in added {
            client.subscriptions.insert(name.clone());
            if name == SUBSCRIBE_ALL {
                all_types.insert(id);
            } else if is_private_name(name) {
                by_topic.entry(name.clone()).or_default().insert(id);
            } else {
                by_type.entry(name.clone()).or_default().insert(id);
            }
        }
        Ok(client.subscriptions.iter().cloned().collect())
    }

    /// Removes subscriptions; returns the client's set afterwards.
    pub fn unsubscribe(&self, id: ClientId, names: &[String]) -> Vec<String> {
        let mut state = self.write();
        let removed: Vec<String> = match state.clients.get_mut(&id) {
            Some(client) => names
                .iter()
                .filter(|n| client.subscriptions.remove(*n))
                .cloned()
                .collect(),
            None => return Vec::new(),
        };
        for name in &removed {
            state.unindex(id, name);
        }
        state
            .clients
            .get(&id)
            .map(|c| c.subscriptions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sends a notification frame to every client subscribed to its type (or to `*`),
    /// each exactly once.
    pub fn publish(&self, notification_type: &str, frame: &Bytes) -> Delivery {
        #[cfg(feature = "mutations")]
        if let Some(mutant) = &self.mutant {
            return self.publish_mutated(mutant, notification_type, frame);
        }
        let state = self.read();
        let typed = state.by_type.get(notification_type);
        let mut delivery = Delivery::default();
        let mut send = |id: &ClientId| {
            if let Some(client) = state.clients.get(id) {
                delivery.add(client.outlet.offer(Outbound::Text(frame.clone())));
            }
        };
        match typed {
            // A client subscribed both to `*` and to the type is in both sets: merge them.
            Some(typed) => merge_union(&state.all_types, typed, &mut send),
            None => state.all_types.iter().for_each(send),
        }
        delivery
    }

    /// Whether any client has capability `resume`.
    pub fn has_resumable(&self) -> bool {
        self.read().resumable > 0
    }

    /// Whether `id` is a resumable client still waiting for its first message.
    pub fn is_paused(&self, id: ClientId) -> bool {
        self.read()
            .clients
            .get(&id)
            .and_then(|c| c.resume.as_ref())
            .is_some_and(|r| r.paused)
    }

    /// Starts delivering to a paused client from now on (a fresh session).
    pub fn unpause(&self, id: ClientId) {
        if let Some(resume) = self
            .write()
            .clients
            .get_mut(&id)
            .and_then(|c| c.resume.as_mut())
        {
            resume.paused = false;
        }
    }

    /// Resumes a client: its subscriptions become `subscriptions` (bounded by `max`), what
    /// `skip` names is never delivered to it again, and delivery starts.
    pub fn resume(&self, id: ClientId, skip: Position, subscriptions: &[String], max: usize) {
        {
            let mut state = self.write();
            let Some(client) = state.clients.get_mut(&id) else {
                return;
            };
            let old: Vec<String> = std::mem::take(&mut client.subscriptions)
                .into_iter()
                .collect();
            for name in &old {
                state.unindex(id, name);
            }
        }
        let wanted: Vec<String> = subscriptions.iter().take(max).cloned().collect();
        let _ = self.subscribe(id, &wanted, max);
        if let Some(resume) = self
            .write()
            .clients
            .get_mut(&id)
            .and_then(|c| c.resume.as_mut())
        {
            resume.skip = skip;
            resume.paused = false;
        }
    }

    /// A client's subscriptions.
    pub fn subscriptions(&self, id: ClientId) -> Vec<String> {
        self.read()
            .clients
            .get(&id)
            .map(|c| c.subscriptions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Delivers a routed notification to every subscriber, each exactly once; resumable
    /// clients get it with a resume token (when `tokens` is given), unless paused or their
    /// token already named it.
    pub fn publish_notification(
        &self,
        notification: &Notification,
        frame: &Bytes,
        tokens: Option<&TokenContext<'_>>,
    ) -> Delivery {
        let stream_seq = notification
            .message_id
            .rsplit_once('-')
            .and_then(|(stream, seq)| Some((stream_key(stream), seq.parse::<u64>().ok()?)));
        self.publish_at(notification, frame, stream_seq, tokens)
    }

    /// As `publish_notification`, for a notification whose place in a position is
    /// `stream_seq` (the NATS backbone: its stream and sequence there), not its id's.
    pub fn publish_at(
        &self,
        notification: &Notification,
        frame: &Bytes,
        stream_seq: Option<(StreamKey, u64)>,
        tokens: Option<&TokenContext<'_>>,
    ) -> Delivery {
        #[cfg(feature = "mutations")]
        if let Some(mutant) = &self.mutant
            && notification.topic.is_empty()
        {
            return self.publish_mutated(mutant, &notification.notification_type, frame);
        }
        let state = self.read();
        let private = !notification.topic.is_empty();
        let typed = if private {
            state.by_topic.get(&notification.topic)
        } else {
            state.by_type.get(&notification.notification_type)
        };
        let mut delivery = Delivery::default();
        // A token names the relay's routed position and the wallet's skipped one. Wallets
        // with the same subscriptions whose skipped positions add the same to the routed
        // one get the same token: sign it once (a signature is tens of µs, and this runs
        // under the mesh's route lock). Once the relay has routed what a wallet resumed
        // from (the usual case soon after a resume), that part is empty, so the signatures
        // per notification follow the distinct subscription sets, not the wallets. Bounded,
        // so many distinct wallets cost a few comparisons each.
        let mut issued: Vec<(&BTreeSet<String>, Position, String)> = Vec::new();
        let mut send = |id: &ClientId| {
            let Some(client) = state.clients.get(id) else {
                return;
            };
            let frame = match (&client.resume, tokens) {
                (None, _) => frame.clone(),
                (Some(resume), _) if resume.paused => return,
                (Some(resume), _)
                    if stream_seq.is_some_and(|(key, seq)| resume.skip.contains(&key, seq)) =>
                {
                    return;
                }
                (Some(_), None) => frame.clone(),
                (Some(resume), Some(tokens)) => {
                    let beyond = resume.skip.minus(tokens.position);
                    let cached = issued
                        .iter()
                        .find(|(s, p, _)| *s == &client.subscriptions && *p == beyond);
                    let token = match cached {
                        Some((_, _, token)) => token.clone(),
                        None => {
                            let token = tokens.token_for(&client.subscriptions, &resume.skip);
                            if issued.len() < TOKENS_SHARED_MAX {
                                issued.push((&client.subscriptions, beyond, token.clone()));
                            }
                            token
                        }
                    };
                    crate::protocol::with_resume_token(frame, &token)
                }
            };
            delivery.add(client.outlet.offer(Outbound::Text(frame)));
        };
        match typed {
            Some(subscribers) if private => subscribers.iter().for_each(send),
            Some(typed) => merge_union(&state.all_types, typed, &mut send),
            None if private => {}
            None => state.all_types.iter().for_each(send),
        }
        delivery
    }

    /// A fresh resume token for client `id`, when it is resumable and not paused.
    pub fn token_of(&self, id: ClientId, tokens: &TokenContext<'_>) -> Option<String> {
        let state = self.read();
        let client = state.clients.get(&id)?;
        let resume = client.resume.as_ref().filter(|r| !r.paused)?;
        Some(tokens.token_for(&client.subscriptions, &resume.skip))
    }

    /// Whether the position `id` resumed from names `message_id` (it has it already).
    pub fn resumed_with(&self, id: ClientId, message_id: &str) -> bool {
        let Some((stream, seq)) = message_id
            .rsplit_once('-')
            .and_then(|(stream, seq)| Some((stream_key(stream), seq.parse::<u64>().ok()?)))
        else {
            return false;
        };
        self.read()
            .clients
            .get(&id)
            .and_then(|c| c.resume.as_ref())
            .is_some_and(|r| r.skip.contains(&stream, seq))
    }

    /// Sends every client `frame(token)`: a fresh resume token for resumable clients that
    /// are not paused, `None` for the others.
    pub fn send_each(
        &self,
        tokens: &TokenContext<'_>,
        frame: impl Fn(Option<&str>) -> Bytes,
    ) -> (Delivery, usize) {
        let state = self.read();
        let mut delivery = Delivery::default();
        let mut bytes = 0;
        for client in state.clients.values() {
            let message = match &client.resume {
                Some(resume) if !resume.paused => {
                    frame(Some(&tokens.token_for(&client.subscriptions, &resume.skip)))
                }
                _ => frame(None),
            };
            bytes += message.len();
            delivery.add(client.outlet.offer(Outbound::Text(message)));
        }
        (delivery, bytes)
    }

    /// Asks one client to close with `reason`.
    pub fn close(&self, id: ClientId, reason: CloseReason) {
        if let Some(client) = self.read().clients.get(&id) {
            client.outlet.close(reason);
        }
    }

    /// Sends a frame to one client.
    pub fn send_to(&self, id: ClientId, message: Outbound) -> Delivery {
        let state = self.read();
        let mut delivery = Delivery::default();
        if let Some(client) = state.clients.get(&id) {
            delivery.add(client.outlet.offer(message));
        }
        delivery
    }

    /// Sends a frame to every client, or only to those that asked for `sync`.
    pub fn broadcast(&self, message: Outbound, sync_only: bool) -> Delivery {
        let state = self.read();
        let mut delivery = Delivery::default();
        for client in state
            .clients
            .values()
            .filter(|c| !sync_only || c.wants_sync)
        {
            delivery.add(client.outlet.offer(message.clone()));
        }
        delivery
    }

    /// Closes every client not heard from since `deadline_ms`; returns how many.
    pub fn close_idle(&self, deadline_ms: u64) -> usize {
        let state = self.read();
        let mut closed = 0;
        for client in state.clients.values() {
            let control = client.outlet.control();
            if control.last_seen_ms() < deadline_ms && control.close_reason().is_none() {
                control.close(CloseReason::IDLE_TIMEOUT);
                closed += 1;
            }
        }
        closed
    }

    /// Asks up to `count` clients not yet closing to close with `reason` (lowest ids
    /// first: the longest connected go first); returns how many it asked.
    pub fn close_some(&self, count: usize, reason: CloseReason) -> usize {
        let state = self.read();
        let mut asked = 0;
        for client in state
            .clients
            .values()
            .filter(|c| c.outlet.control().close_reason().is_none())
            .take(count)
        {
            client.outlet.close(reason);
            asked += 1;
        }
        asked
    }

    /// Asks every client to close with `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        for client in self.read().clients.values() {
            client.outlet.close(reason);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // The state is consistent after every statement, so a poisoned lock is still usable.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn unindex(&mut self, id: ClientId, name: &str) {
        if name == SUBSCRIBE_ALL {
            self.all_types.remove(&id);
            return;
        }
        let index = if is_private_name(name) {
            &mut self.by_topic
        } else {
            &mut self.by_type
        };
        if let Some(set) = index.get_mut(name) {
            set.remove(&id);
            if set.is_empty() {
                index.remove(name);
            }
        }
    }
}

#[cfg(feature = "mutations")]
impl Hub {
    /// `publish`, with the deliberate fault applied (see `crate::mutation`).
    fn publish_mutated(
        &self,
        mutant: &crate::mutation::Mutant,
        notification_type: &str,
        frame: &Bytes,
    ) -> Delivery {
        use crate::mutation::Twist;
        let state = self.read();
        let mut ids = Vec::new();
        match state.by_type.get(notification_type) {
            Some(typed) => merge_union(&state.all_types, typed, &mut |id| ids.push(*id)),
            None => ids.extend(state.all_types.iter().copied()),
        }
        if ids.is_empty() {
            // Counted only when someone is there to be wronged: a fault spent on a
            // notification nobody receives would test nothing.
            return Delivery::default();
        }
        let twist = mutant.next_notification();
        let mut delivery = Delivery::default();
        for (index, id) in ids.iter().enumerate() {
            let Some(client) = state.clients.get(id) else {
                continue;
            };
            if index == 0 {
                match twist {
                    Twist::SkipOne => continue,
                    Twist::Reset => {
                        client.outlet.close(CloseReason::LOST);
                        continue;
                    }
                    Twist::GoingAway => {
                        client.outlet.close(CloseReason::SHUTDOWN);
                        continue;
                    }
                    _ => {}
                }
            }
            delivery.add(client.outlet.offer(Outbound::Text(frame.clone())));
            if twist == Twist::Twice {
                delivery.add(client.outlet.offer(Outbound::Text(frame.clone())));
            }
            if twist == Twist::Invent {
                let invented = Bytes::from_static(
                    br#"{"type":"notification","notification_type":"payment_detected","data":{},"timestamp":0,"message_id":"mutant-00000000-1","relay_id":"mutant"}"#,
                );
                delivery.add(client.outlet.offer(Outbound::Text(invented)));
            }
        }
        delivery
    }
}

/// Visits the union of two sorted sets, each element once.
fn merge_union(a: &BTreeSet<ClientId>, b: &BTreeSet<ClientId>, visit: &mut impl FnMut(&ClientId)) {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x < y => visit(a.next().expect("peeked")),
            (Some(x), Some(y)) if x > y => visit(b.next().expect("peeked")),
            (Some(_), Some(_)) => {
                visit(a.next().expect("peeked"));
                b.next();
            }
            (Some(_), None) => visit(a.next().expect("peeked")),
            (None, Some(_)) => visit(b.next().expect("peeked")),
            (None, None) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use crate::conn::Control;

    fn client(
        hub: &Hub,
        id: ClientId,
        all: bool,
        queue: usize,
    ) -> (crate::conn::queue::Receiver, Arc<Control>) {
        let (outlet, rx) = Outlet::new(crate::conn::queue::Bound {
            frames: queue,
            bytes: usize::MAX,
        });
        let control = outlet.control().clone();
        hub.join(id, outlet, all, false);
        (rx, control)
    }

    fn drain(rx: &mut crate::conn::queue::Receiver) -> usize {
        std::iter::from_fn(|| rx.try_recv().ok()).count()
    }

    #[test]
    fn publish_reaches_each_subscriber_once_and_no_one_else() {
        let hub = Hub::new();
        let (mut all, _) = client(&hub, 1, true, 8);
        let (mut typed, _) = client(&hub, 2, false, 8);
        let (mut both, _) = client(&hub, 3, true, 8);
        let (mut other, _) = client(&hub, 4, false, 8);
        hub.subscribe(2, &["payment".into()], 8).unwrap();
        hub.subscribe(3, &["payment".into()], 8).unwrap();
        hub.subscribe(4, &["block".into()], 8).unwrap();
        let d = hub.publish("payment", &Bytes::from_static(b"x"));
        assert_eq!(d.delivered, 3);
        assert_eq!(
            [
                drain(&mut all),
                drain(&mut typed),
                drain(&mut both),
                drain(&mut other)
            ],
            [1, 1, 1, 0]
        );
        hub.unsubscribe(2, &["payment".into()]);
        hub.publish("payment", &Bytes::from_static(b"x"));
        assert_eq!(drain(&mut typed), 0);
    }

    // Proves a private notification reaches only the clients subscribed to its topic:
    // never `*` subscribers, nor a client subscribed to a type of the topic's name.
    #[test]
    fn a_private_notification_reaches_its_topic_only() {
        let hub = Hub::new();
        let topic = format!("wallet:{}", "ab".repeat(16));
        let (mut everything, _) = client(&hub, 1, true, 8);
        let (mut by_type, _) = client(&hub, 2, false, 8);
        let (mut owner, _) = client(&hub, 3, false, 8);
        hub.subscribe(2, &["payment_detected".into()], 8).unwrap();
        hub.subscribe(3, std::slice::from_ref(&topic), 8).unwrap();
        let note =
            |topic: &str, kind: &str| Notification::for_test("r", "r-00000001-1", kind, topic);
        let frame = Bytes::from_static(b"x");
        let private = note(&topic, "payment_detected");
        assert_eq!(
            hub.publish_notification(&private, &frame, None).delivered,
            1
        );
        // A public notification whose type is the topic's name reaches `*` only.
        let named = note("", &topic);
        assert_eq!(hub.publish_notification(&named, &frame, None).delivered, 1);
        assert_eq!(
            [
                drain(&mut everything),
                drain(&mut by_type),
                drain(&mut owner)
            ],
            [1, 0, 1]
        );
        hub.unsubscribe(3, std::slice::from_ref(&topic));
        assert_eq!(
            hub.publish_notification(&private, &frame, None).delivered,
            0
        );
    }

    #[test]
    fn a_full_queue_disconnects_only_that_client() {
        let hub = Hub::new();
        let (_stalled, stalled_control) = client(&hub, 1, true, 2);
        let (mut reader, reader_control) = client(&hub, 2, true, 2);
        let mut slow = 0;
        for _ in 0..5 {
            slow += hub.publish("t", &Bytes::from_static(b"x")).slow_disconnects;
            drain(&mut reader);
        }
        assert_eq!(slow, 1);
        assert_eq!(
            stalled_control.close_reason(),
            Some(CloseReason::SLOW_CONSUMER)
        );
        assert_eq!(reader_control.close_reason(), None);
    }

    #[test]
    fn subscriptions_are_bounded_and_leave_cleans_up() {
        let hub = Hub::new();
        let (_rx, _) = client(&hub, 1, false, 2);
        assert!(
            hub.subscribe(1, &["a".into(), "b".into(), "c".into()], 2)
                .is_err()
        );
        assert_eq!(
            hub.subscribe(1, &["a".into(), "a".into()], 2).unwrap(),
            ["a"]
        );
        hub.leave(1);
        assert!(hub.is_empty());
        assert_eq!(hub.publish("a", &Bytes::from_static(b"x")).delivered, 0);
    }

    #[test]
    fn idle_clients_are_closed() {
        let hub = Hub::new();
        let (_a, a) = client(&hub, 1, false, 2);
        let (_b, b) = client(&hub, 2, false, 2);
        a.touch(100);
        b.touch(900);
        assert_eq!(hub.close_idle(500), 1);
        assert_eq!(a.close_reason(), Some(CloseReason::IDLE_TIMEOUT));
        assert_eq!(b.close_reason(), None);
    }

    /// Three resumable wallets: two resumed from positions the relay has routed since,
    /// one from further on. The first two get one token (one signature), the third its own.
    #[test]
    fn wallets_whose_skipped_position_the_relay_routed_share_one_signature() {
        let hub = Hub::new();
        let issuer = Issuer::new(
            "r",
            Arc::new(crate::identity::Identity::from_seed(&[9; 32])),
        );
        let seen = stream_key("a-0000000a");
        let mut routed = Position::default();
        routed.insert_range(seen, 1, 10);
        let mut receivers = Vec::new();
        for (id, skipped_to) in [(1, 3), (2, 5), (3, 20)] {
            let (outlet, rx) = Outlet::new(crate::conn::queue::Bound {
                frames: 8,
                bytes: usize::MAX,
            });
            hub.join_client(id, outlet, false, false, true);
            let mut skip = Position::default();
            skip.insert_range(seen, 1, skipped_to);
            hub.resume(id, skip, &["pay".to_string()], 8);
            receivers.push(rx);
        }
        let notification = Notification::for_test("b", "b-0000000b-1", "pay", "");
        let tokens = TokenContext {
            issuer: &issuer,
            position: &routed,
            now_unix: 1,
        };
        let frame = Bytes::from_static(br#"{"type":"notification"}"#);
        let delivery = hub.publish_notification(&notification, &frame, Some(&tokens));
        assert_eq!(delivery.delivered, 3);
        assert_eq!(issuer.tokens_signed(), 2);
        let named: Vec<u64> = receivers
            .iter_mut()
            .map(|rx| {
                let Ok(Outbound::Text(bytes)) = rx.try_recv() else {
                    panic!("a delivery")
                };
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let text = value["resume_token"].as_str().unwrap();
                let key = *issuer.public_key();
                let token = crate::resume::token::verify(text, |_| Some(key)).unwrap();
                token
                    .position
                    .stream(&seen)
                    .unwrap()
                    .ranges()
                    .last()
                    .unwrap()
                    .1
            })
            .collect();
        // Each token names what its wallet is accounted for, shared or not.
        assert_eq!(named, [10, 10, 20]);
    }
}
