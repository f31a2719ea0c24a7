//! Deliberate faults for the simulator's negative controls (feature `mutations`, never
//! in a production build): each breaks one thing the whole-mesh checks guard, so a test
//! can show that the check names it. Off unless a relay's configuration carries one.

use std::sync::atomic::{AtomicU64, Ordering};

/// One deliberate fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Every `n`th notification is not delivered to one of its subscribers.
    DropDelivery { every: u64 },
    /// The `nth` notification is delivered twice to its subscribers.
    DuplicateDelivery { nth: u64 },
    /// At the `nth` notification, one subscriber's connection is reset (no close frame)
    /// before it is delivered.
    ResetSubscriber { nth: u64 },
    /// At the `nth` notification, one subscriber is closed with 1001 ("going away")
    /// while the relay goes on, before it is delivered.
    CloseGoingAway { nth: u64 },
    /// With the `nth` notification, subscribers also receive one nobody published.
    InventNotification { nth: u64 },
    /// Links with this peer relay are refused.
    RefuseLink { peer: u32 },
    /// The relay lists relays that do not exist.
    PhantomMembers { count: u32 },
    /// The relay believes its peers: what they send (notifications, membership records)
    /// is taken without checking a signature, as before the mesh was signed.
    SkipVerification,
    /// A peer link may bring new notifications at any rate (no
    /// `mesh_notifications_per_second_max`).
    UnboundedNotifications,
}

impl Mutation {
    /// The mutation a name stands for, with the parameters the negative controls use.
    pub fn parse(name: &str) -> Option<Mutation> {
        Some(match name {
            "drop-delivery" => Mutation::DropDelivery { every: 10 },
            "duplicate-delivery" => Mutation::DuplicateDelivery { nth: 10 },
            "reset-subscriber" => Mutation::ResetSubscriber { nth: 10 },
            "close-going-away" => Mutation::CloseGoingAway { nth: 10 },
            "invent-notification" => Mutation::InventNotification { nth: 10 },
            "refuse-link" => Mutation::RefuseLink { peer: 1 },
            "phantom-members" => Mutation::PhantomMembers { count: 2 },
            "skip-verification" => Mutation::SkipVerification,
            "unbounded-notifications" => Mutation::UnboundedNotifications,
            _ => return None,
        })
    }
}

/// What the hub does to one notification under a mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Twist {
    None,
    SkipOne,
    Twice,
    Reset,
    GoingAway,
    Invent,
}

/// A mutation and the count of notifications it has seen.
#[derive(Debug)]
pub struct Mutant {
    mutation: Mutation,
    seen: AtomicU64,
}

impl Mutant {
    pub fn new(mutation: Mutation) -> Mutant {
        Mutant {
            mutation,
            seen: AtomicU64::new(0),
        }
    }

    pub fn mutation(&self) -> Mutation {
        self.mutation
    }

    /// Counts one notification routed to local subscribers; what to do to it.
    pub fn next_notification(&self) -> Twist {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        match self.mutation {
            Mutation::DropDelivery { every } if n.is_multiple_of(every) => Twist::SkipOne,
            Mutation::DuplicateDelivery { nth } if n == nth => Twist::Twice,
            Mutation::ResetSubscriber { nth } if n == nth => Twist::Reset,
            Mutation::CloseGoingAway { nth } if n == nth => Twist::GoingAway,
            Mutation::InventNotification { nth } if n == nth => Twist::Invent,
            _ => Twist::None,
        }
    }
}
