//! The life of one subscription across connections: placed, re-placed after every logon,
//! reported resumed only once the server has acknowledged it again.
//!
//! # The model
//!
//! ```text
//!            logon: send (new cid)           processed ack (that cid)
//!  Waiting ───────────────────────► Sent ───────────────────────────► Live
//!     ▲                               │                                 │
//!     └──────── connection lost ──────┴─────────────────────────────────┘
//! ```
//!
//! - A subscription starts **Waiting**. It is sent when the connection is logged on (at once,
//!   or after the next logon), with a new `cid` each time and otherwise the same frame (a
//!   bookmark subscription with the store's most recent bookmark instead of the original).
//! - After each logon the manager sends every Waiting subscription **in registration order**,
//!   all at once; each is reported resumed when, and only when, its own processed ack arrives.
//! - An ack carrying the cid of an earlier send (from before a reconnect) is **stale** and
//!   changes nothing.
//! - When the connection drops, a subscription that had been established is reported
//!   *disconnected* to its subscriber once (not again if it drops again before resuming), and
//!   later *resumed*. The first placement of a subscription is reported to the caller of
//!   `Subscribe` instead (its result), never as resumed.
//! - A failure ack for the first placement fails the caller's request; one for a re-placement
//!   ends the subscription with the server's reason.

/// Where a subscription stands on the current connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not sent on this connection.
    Waiting,
    /// Sent under this cid, not yet acknowledged.
    Sent { cid: String },
    /// Acknowledged on this connection.
    Live,
}

/// What a processed ack means for the subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acked {
    /// Its first placement succeeded: the caller's request resolves.
    Placed,
    /// It is re-established after a reconnect: tell the subscriber.
    Resumed,
    /// For an earlier send; nothing to do.
    Stale,
}

/// What a failure ack means for the subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its first placement was refused: the caller's request fails.
    Placement,
    /// A re-placement was refused: the subscription ends with the reason.
    Resumption,
    /// For an earlier send; nothing to do.
    Stale,
}

/// One subscription's lifecycle (module docs).
#[derive(Clone, Debug)]
pub(crate) struct Lifecycle {
    phase: Phase,
    established: bool,
    told_disconnected: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: Phase::Waiting,
            established: false,
            told_disconnected: false,
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether it has been acknowledged at least once.
    pub fn established(&self) -> bool {
        self.established
    }

    /// Whether it must be sent on the current (logged-on) connection.
    pub fn needs_send(&self) -> bool {
        self.phase == Phase::Waiting
    }

    /// It was sent under `cid`.
    pub fn sent(&mut self, cid: String) {
        self.phase = Phase::Sent { cid };
    }

    fn is_current(&self, cid: &str) -> bool {
        matches!(&self.phase, Phase::Sent { cid: c } if c == cid)
    }

    /// A processed ack with `cid` arrived.
    pub fn acked(&mut self, cid: &str) -> Acked {
        if !self.is_current(cid) {
            return Acked::Stale;
        }
        self.phase = Phase::Live;
        if self.established {
            self.told_disconnected = false;
            Acked::Resumed
        } else {
            self.established = true;
            Acked::Placed
        }
    }

    /// A failure ack with `cid` arrived.
    pub fn refused(&mut self, cid: &str) -> Refused {
        if !self.is_current(cid) {
            return Refused::Stale;
        }
        self.phase = Phase::Waiting;
        if self.established {
            Refused::Resumption
        } else {
            Refused::Placement
        }
    }

    /// The connection dropped; `true` when the subscriber is to be told (once per outage).
    pub fn lost(&mut self) -> bool {
        self.phase = Phase::Waiting;
        if self.established && !self.told_disconnected {
            self.told_disconnected = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_stale_ack_changes_nothing() {
        let mut l = Lifecycle::default();
        l.sent("c1".into());
        assert!(!l.lost(), "never established: nobody to tell");
        l.sent("c2".into());
        assert_eq!(l.acked("c1"), Acked::Stale);
        assert_eq!(l.acked("c2"), Acked::Placed);
        assert!(l.lost());
        assert!(!l.lost(), "told once per outage");
        l.sent("c3".into());
        assert_eq!(l.refused("c2"), Refused::Stale);
        assert_eq!(l.acked("c3"), Acked::Resumed);
        l.lost();
        l.sent("c4".into());
        assert_eq!(l.refused("c4"), Refused::Resumption);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Logon,
        AckNext,
        Lose,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
        ))]

        /// A manager's use of lifecycles: after each logon the waiting ones are sent in
        /// order; the server acks sends in order; connections drop at any point. Then every
        /// subscription's events read: Placed, then (Disconnected, Resumed)* with perhaps one
        /// final Disconnected, and the sends of one connection go out in registration order.
        #[test]
        fn events_alternate_and_sends_keep_order(
            n in 1usize..5,
            ops in proptest::collection::vec(prop_oneof![Just(Op::Logon), Just(Op::AckNext), Just(Op::Lose)], 0..60),
        ) {
            let mut subs: Vec<Lifecycle> = vec![Lifecycle::default(); n];
            let mut events: Vec<Vec<&'static str>> = vec![Vec::new(); n];
            let mut up = false;
            let mut in_flight: std::collections::VecDeque<(usize, String)> = Default::default();
            let mut next_cid = 0;
            for op in ops {
                match op {
                    Op::Logon if !up => {
                        up = true;
                        let mut last = None;
                        for (i, l) in subs.iter_mut().enumerate() {
                            if l.needs_send() {
                                prop_assert!(last.is_none_or(|j| j < i));
                                last = Some(i);
                                next_cid += 1;
                                let cid = format!("c{next_cid}");
                                l.sent(cid.clone());
                                in_flight.push_back((i, cid));
                            }
                        }
                    }
                    Op::AckNext => if let Some((i, cid)) = in_flight.pop_front() {
                        match subs[i].acked(&cid) {
                            Acked::Placed => events[i].push("placed"),
                            Acked::Resumed => events[i].push("resumed"),
                            Acked::Stale => {}
                        }
                    },
                    Op::Lose if up => {
                        up = false;
                        // Acks of a dead connection may still be read (stale on the next one):
                        // keep them queued.
                        for (i, l) in subs.iter_mut().enumerate() {
                            if l.lost() { events[i].push("disconnected"); }
                        }
                    }
                    _ => {}
                }
            }
            for ev in events {
                let mut expect_next = "placed";
                for e in ev {
                    prop_assert_eq!(e, expect_next);
                    expect_next = if e == "disconnected" { "resumed" } else { "disconnected" };
                }
            }
        }
    }
}
