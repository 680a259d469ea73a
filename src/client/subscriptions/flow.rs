//! Flow control: how many deliveries a subscription may hold, and what happens when its
//! subscriber falls behind.
//!
//! # The model
//!
//! Each subscription has an [`Outbox`]: events routed to it wait in a queue, and the subscriber
//! actor is sent **one batch at a time**: everything queued (up to [`FlowControl::max_batch`])
//! in one mailbox message. The next batch goes when the subscriber's handler for the previous
//! one has returned. So a fast subscriber gets small batches at once, a slow one gets large
//! batches (one actor turn each, however many deliveries), and events reach the subscriber in
//! the order they arrived, control events (disconnected, resumed, ended) included.
//!
//! The queue is bounded: at most [`FlowControl::max_queued`] deliveries and
//! [`FlowControl::max_queued_bytes`] bytes. A subscription past either bound has **fallen
//! behind**, and its [`BehindPolicy`] says what happens, never silent loss:
//!
//! - [`BehindPolicy::PauseReading`] (the default): the client stops reading the connection
//!   until the queue is back under half its bounds. Nothing is lost; the server holds what it
//!   has not sent, and **everything on that connection waits**, publish acks included. A
//!   server that buffers too much for a paused client disconnects it as a slow consumer (the
//!   embedded server's `max_unsent_bytes`); the client then reconnects and resubscribes (a
//!   bookmark subscription resumes where its subscriber got to).
//! - [`BehindPolicy::EndSubscription`]: the subscription is ended: the client unsubscribes, the
//!   queued deliveries are dropped and the subscriber receives
//!   [`SubscriptionEnd::FellBehind`](super::SubscriptionEnd::FellBehind) with their count.
//!   The connection and every other subscription go on untouched. With a bookmark store the
//!   subscriber can subscribe again from its most recent bookmark and lose nothing.
//!
//! Memory per subscription is therefore bounded by the queue's bounds, plus the batch the
//! subscriber holds, plus what the connection read before a pause took effect (one read).

use std::collections::VecDeque;

/// What a subscription does when its subscriber falls behind (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BehindPolicy {
    /// Stop reading the connection until the subscriber catches up (delays everything on the
    /// connection, publish acks included; loses nothing).
    #[default]
    PauseReading,
    /// End this subscription with [`SubscriptionEnd::FellBehind`](super::SubscriptionEnd)
    /// (the queued deliveries are dropped and counted); nothing else is affected.
    EndSubscription,
}

/// The bounds of one subscription's queue and the policy past them.
///
/// ```
/// use actix_amps::client::subscriptions::{BehindPolicy, FlowControl};
/// let flow = FlowControl::default()
///     .max_queued(10_000)
///     .max_queued_bytes(8 << 20)
///     .when_behind(BehindPolicy::EndSubscription);
/// assert_eq!(flow.max_queued, 10_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowControl {
    /// Deliveries waiting for the subscriber, at most (default 65,536).
    pub max_queued: usize,
    /// Bytes of deliveries waiting, at most (default 64 MiB).
    pub max_queued_bytes: usize,
    /// Deliveries per batch (one mailbox message), at most (default 8,192).
    pub max_batch: usize,
    /// What happens past the bounds.
    pub when_behind: BehindPolicy,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            max_queued: 65_536,
            max_queued_bytes: 64 << 20,
            max_batch: 8_192,
            when_behind: BehindPolicy::PauseReading,
        }
    }
}

impl FlowControl {
    /// Sets [`FlowControl::max_queued`] (at least 1).
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n.max(1);
        self
    }

    /// Sets [`FlowControl::max_queued_bytes`] (at least 1).
    pub fn max_queued_bytes(mut self, n: usize) -> Self {
        self.max_queued_bytes = n.max(1);
        self
    }

    /// Sets [`FlowControl::max_batch`] (at least 1).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets [`FlowControl::when_behind`].
    pub fn when_behind(mut self, p: BehindPolicy) -> Self {
        self.when_behind = p;
        self
    }
}

/// Where a queue stands against its bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// At or under half the bounds.
    Low,
    /// Between half and the bounds.
    Normal,
    /// Past a bound: fallen behind.
    Over,
}

/// What the outbox needs to know of an event: its weight in bytes when it is a delivery,
/// `None` for a control event (counted in no bound, never dropped).
pub(crate) trait Weigh {
    fn weight(&self) -> Option<usize>;
}

/// A run of queued events: at most `max_batch` deliveries, sent as one batch.
#[derive(Debug)]
struct Chunk<E> {
    events: Vec<E>,
    deliveries: usize,
    bytes: usize,
}

/// One subscription's queue and its batch in flight (module docs). The queue is a list of
/// chunks of at most `max_batch` deliveries each, so taking a batch moves no event: the
/// oldest chunk is handed over whole (and when the subscriber keeps up, the vector the
/// connection's read filled becomes the batch itself).
#[derive(Debug)]
pub(crate) struct Outbox<E> {
    chunks: VecDeque<Chunk<E>>,
    deliveries: usize,
    bytes: usize,
    in_flight: Option<usize>,
    limits: FlowControl,
}

impl<E: Weigh> Outbox<E> {
    pub fn new(limits: FlowControl) -> Self {
        Outbox {
            chunks: VecDeque::new(),
            deliveries: 0,
            bytes: 0,
            in_flight: None,
            limits,
        }
    }

    pub fn limits(&self) -> FlowControl {
        self.limits
    }

    /// Queues one event.
    pub fn push(&mut self, e: E) {
        let w = e.weight();
        let max = self.limits.max_batch;
        let full = self
            .chunks
            .back()
            .is_none_or(|c| w.is_some() && c.deliveries >= max);
        if full {
            self.chunks.push_back(Chunk {
                events: Vec::new(),
                deliveries: 0,
                bytes: 0,
            });
        }
        if let Some(c) = self.chunks.back_mut() {
            if let Some(w) = w {
                c.deliveries += 1;
                c.bytes += w;
                self.deliveries += 1;
                self.bytes += w;
            }
            c.events.push(e);
        }
    }

    /// Queues many events at once. A vector that fits one batch becomes a chunk of its own
    /// (no event moves: when the subscriber keeps up, it is the next batch as it is); only a
    /// few events are merged into the last chunk, to keep batches large under a backlog.
    pub fn append(&mut self, events: Vec<E>) {
        let (mut deliveries, mut bytes) = (0, 0);
        for e in &events {
            if let Some(w) = e.weight() {
                deliveries += 1;
                bytes += w;
            }
        }
        let max = self.limits.max_batch;
        let merge = self
            .chunks
            .back()
            .is_some_and(|c| events.len() <= 64 && c.deliveries + deliveries <= max);
        if merge || deliveries > max {
            for e in events {
                self.push(e);
            }
            return;
        }
        self.chunks.push_back(Chunk {
            events,
            deliveries,
            bytes,
        });
        self.deliveries += deliveries;
        self.bytes += bytes;
    }

    /// Queues a control event.
    pub fn push_control(&mut self, e: E) {
        self.push(e);
    }

    pub fn level(&self) -> Level {
        let l = &self.limits;
        if self.deliveries > l.max_queued || self.bytes > l.max_queued_bytes {
            Level::Over
        } else if self.deliveries <= l.max_queued / 2 && self.bytes <= l.max_queued_bytes / 2 {
            Level::Low
        } else {
            Level::Normal
        }
    }

    /// Deliveries queued (not yet sent to the subscriber).
    pub fn queued(&self) -> usize {
        self.deliveries
    }

    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The next batch, when none is in flight: the oldest chunk (at most `max_batch`
    /// deliveries; control events ride along free).
    pub fn take_batch(&mut self) -> Option<Vec<E>> {
        if self.in_flight.is_some() {
            return None;
        }
        let c = self.chunks.pop_front()?;
        self.deliveries -= c.deliveries;
        self.bytes -= c.bytes;
        self.in_flight = Some(c.deliveries);
        Some(c.events)
    }

    /// The subscriber finished the batch in flight; returns how many deliveries it held.
    pub fn completed(&mut self) -> usize {
        self.in_flight.take().unwrap_or(0)
    }

    /// Drops every queued delivery for which `drop` says so (control events stay); returns how
    /// many were dropped.
    pub fn drop_deliveries(&mut self, mut drop: impl FnMut(&E) -> bool) -> usize {
        let before = self.deliveries;
        let (mut deliveries, mut bytes) = (0, 0);
        for c in &mut self.chunks {
            let (mut cd, mut cb) = (0, 0);
            c.events.retain(|e| match e.weight() {
                None => true,
                Some(_) if drop(e) => false,
                Some(w) => {
                    cd += 1;
                    cb += w;
                    true
                }
            });
            c.deliveries = cd;
            c.bytes = cb;
            deliveries += cd;
            bytes += cb;
        }
        self.chunks.retain(|c| !c.events.is_empty());
        self.deliveries = deliveries;
        self.bytes = bytes;
        before - deliveries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A delivery of 10 bytes (`true`), or a control event (`false`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Ev(u32, bool);

    impl Weigh for Ev {
        fn weight(&self) -> Option<usize> {
            self.1.then_some(10)
        }
    }

    fn ids(b: Vec<Ev>) -> Vec<u32> {
        b.into_iter().map(|e| e.0).collect()
    }

    fn limits(max_queued: usize, max_batch: usize) -> FlowControl {
        FlowControl::default()
            .max_queued(max_queued)
            .max_queued_bytes(1 << 30)
            .max_batch(max_batch)
    }

    #[test]
    fn one_batch_in_flight_and_levels() {
        let mut o: Outbox<Ev> = Outbox::new(limits(4, 3));
        for i in 0..5 {
            o.push(Ev(i, true));
        }
        assert_eq!(o.level(), Level::Over);
        assert_eq!(o.take_batch().map(ids), Some(vec![0, 1, 2]));
        assert_eq!(o.take_batch(), None, "one batch at a time");
        assert_eq!(o.level(), Level::Low);
        o.push_control(Ev(99, false));
        assert_eq!(o.completed(), 3);
        assert_eq!(o.take_batch().map(ids), Some(vec![3, 4, 99]));
        assert_eq!(o.completed(), 2);
        assert!(o.is_empty());
        // A vector that fits one batch becomes the batch.
        o.append(vec![Ev(5, true), Ev(6, false), Ev(7, true)]);
        assert_eq!(o.queued(), 2);
        assert_eq!(o.take_batch().map(ids), Some(vec![5, 6, 7]));
    }

    #[test]
    fn bytes_bound_and_dropping() {
        let mut o: Outbox<Ev> = Outbox::new(FlowControl::default().max_queued_bytes(15));
        o.push(Ev(1, true));
        assert_eq!(o.level(), Level::Normal);
        o.push(Ev(2, true));
        assert_eq!(o.level(), Level::Over);
        o.push_control(Ev(3, false));
        assert_eq!(o.drop_deliveries(|e| e.0 == 2), 1);
        assert_eq!(o.queued_bytes(), 10);
        assert_eq!(o.drop_deliveries(|_| true), 1);
        assert_eq!(o.take_batch().map(ids), Some(vec![3]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
        ))]

        /// Whatever the interleaving of pushes, batches and completions: everything pushed
        /// comes out once, in order; no batch exceeds max_batch deliveries; never two batches
        /// in flight; the counters match the queue.
        #[test]
        fn order_and_bounds_hold(ops in proptest::collection::vec(0u8..5, 0..200), max_batch in 1usize..5) {
            let mut o: Outbox<Ev> = Outbox::new(limits(1000, max_batch));
            let mut next = 0u32;
            let mut out = Vec::new();
            let mut pushed = Vec::new();
            for op in ops {
                match op {
                    0 | 1 => { o.push(Ev(next, true)); pushed.push(next); next += 1; }
                    2 => { o.push_control(Ev(next, false)); pushed.push(next); next += 1; }
                    3 => {
                        let v: Vec<Ev> = (0..3).map(|k| Ev(next + k, k != 1)).collect();
                        pushed.extend(next..next + 3);
                        next += 3;
                        o.append(v);
                    }
                    _ => {
                        if o.in_flight() { o.completed(); }
                        if let Some(b) = o.take_batch() {
                            prop_assert!(b.iter().filter(|e| e.1).count() <= max_batch);
                            prop_assert!(o.take_batch().is_none());
                            out.extend(b.into_iter().map(|e| e.0));
                        }
                    }
                }
            }
            loop {
                if o.in_flight() { o.completed(); }
                match o.take_batch() { Some(b) => out.extend(b.into_iter().map(|e| e.0)), None => break }
            }
            prop_assert_eq!(out, pushed);
            prop_assert_eq!(o.queued(), 0);
            prop_assert_eq!(o.queued_bytes(), 0);
        }
    }
}
