//! Admission: who may hold a connection, and for how long without logging on.
//!
//! A peer that has not logged on has proved nothing, so it gets little: it must send its logon
//! frame within `logon_timeout`, that frame may be at most `max_logon_frame` bytes, and at most
//! `max_pending_logons` such connections are open at once, apart from the logged-on ones. The
//! accept loop asks [`Admission::admit`] for every new connection:
//!
//! - Room under both caps: admitted, as *pending* (waiting for its logon).
//! - Otherwise, if any connection is pending, the **oldest pending one is displaced** (closed
//!   with `too many pending logons`) and the new one admitted. A real client sends its logon
//!   as soon as it connects, so a flood of connections that never log on only ever displaces
//!   itself; to displace a real client it would have to open `max_pending_logons` connections
//!   in the moment between that client's connect and its logon.
//! - Otherwise (every slot is logged on): refused; the accept loop answers the refused
//!   connection's logon with `too many connections` when a refusal slot is free
//!   ([`Admission::refusal`]), else closes it at once.
//!
//! A [`Ticket`] stands for an admitted connection; [`Ticket::logon_received`] moves it out of
//! the pending set, and dropping it frees its slot. A displaced ticket's connection (or one
//! closing before logon for another reason, [`Ticket::closing`]) may take a moment to close;
//! it no longer counts against the caps, but a hard ceiling of
//! `max_connections + max_pending_logons` open connections bounds those too.
//!
//! The other ways a peer can dawdle (a frame begun and never finished, output it does not
//! read, buffers past the memory budget) are the session's and `budget.rs`'s business; the
//! counters of every such close are kept here, so [`ServerStats`](super::ServerStats) reads
//! them in one place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Most connections being refused with a `too many connections` ack at once; more are closed
/// without an answer.
pub(crate) const MAX_REFUSALS: usize = 32;

/// Counters of connections closed for misbehaving (all since the server started).
#[derive(Debug, Default)]
pub(crate) struct Closes {
    /// No complete logon within the logon timeout.
    pub logon_timeouts: AtomicU64,
    /// Displaced while pending to make room for a newer connection.
    pub displaced: AtomicU64,
    /// A frame begun but not finished within the frame timeout.
    pub read_timeouts: AtomicU64,
    /// Bytes that are not a frame, or a frame over the limit.
    pub bad_frames: AtomicU64,
}

/// The admission state (see the module docs).
#[derive(Debug)]
pub(crate) struct Admission {
    max_connections: usize,
    max_pending: usize,
    inner: Mutex<Inner>,
    /// Why connections were closed.
    pub closes: Closes,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Tickets alive (displaced ones included).
    open: usize,
    /// Tickets out of the pending set without having logged on (displaced, or closing for
    /// another reason), not yet dropped: no longer counted against the caps.
    released: usize,
    /// Pending tickets by age (ids grow), each with the signal that displaces it.
    pending: BTreeMap<u64, Arc<Notify>>,
    /// Refusals in progress.
    refusing: usize,
}

/// The outcome of [`Admission::admit`].
#[derive(Debug)]
pub(crate) enum Admit {
    /// Admitted, pending its logon.
    Admitted(Ticket),
    /// Every slot is taken by logged-on connections (or the hard ceiling is reached).
    Refused,
}

impl Admission {
    /// At most `max_connections` open (at least 1), of which at most `max_pending` (at least
    /// 1, at most `max_connections`) have not logged on.
    pub fn new(max_connections: usize, max_pending: usize) -> Admission {
        let max_connections = max_connections.max(1);
        Admission {
            max_connections,
            max_pending: max_pending.clamp(1, max_connections),
            inner: Mutex::default(),
            closes: Closes::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection, displacing the oldest pending one if it must (module docs).
    pub fn admit(self: &Arc<Self>) -> Admit {
        let mut inner = self.lock();
        let counted = inner.open - inner.released;
        let full = counted >= self.max_connections || inner.pending.len() >= self.max_pending;
        if inner.open >= self.max_connections + self.max_pending {
            return Admit::Refused;
        }
        if full {
            match inner.pending.pop_first() {
                Some((_, displace)) => {
                    inner.released += 1;
                    displace.notify_one();
                    self.closes.displaced.fetch_add(1, Ordering::Relaxed);
                }
                None => return Admit::Refused,
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let displaced = Arc::new(Notify::new());
        inner.pending.insert(id, displaced.clone());
        inner.open += 1;
        Admit::Admitted(Ticket {
            id,
            admission: self.clone(),
            displaced,
            pending: true,
        })
    }

    /// A slot for answering a refused connection, if fewer than [`MAX_REFUSALS`] are in use.
    pub fn refusal(self: &Arc<Self>) -> Option<RefusalSlot> {
        let mut inner = self.lock();
        if inner.refusing >= MAX_REFUSALS {
            return None;
        }
        inner.refusing += 1;
        Some(RefusalSlot(self.clone()))
    }

    /// Connections admitted and not logged on now (displaced ones excluded).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

/// An admitted connection's slot; freed when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    admission: Arc<Admission>,
    displaced: Arc<Notify>,
    pending: bool,
}

impl Ticket {
    /// Notified when this connection is displaced while pending.
    pub fn displaced(&self) -> Arc<Notify> {
        self.displaced.clone()
    }

    /// The connection delivered its logon frame: it leaves the pending set (and can no longer
    /// be displaced). Returns `false` if it had been displaced already: it must close.
    pub fn logon_received(&mut self) -> bool {
        if !self.pending {
            return true;
        }
        // A released ticket stays "pending" so that dropping it settles the released count.
        let removed = self.admission.lock().pending.remove(&self.id).is_some();
        self.pending = !removed;
        removed
    }

    /// The connection is closing before logon (timed out, bad frame, ...): its slot no longer
    /// counts against the caps while the close finishes.
    pub fn closing(&mut self) {
        if self.pending {
            let mut inner = self.admission.lock();
            if inner.pending.remove(&self.id).is_some() {
                inner.released += 1;
            }
        }
    }

    /// The counters of closes, for the session to bump.
    pub fn closes(&self) -> &Closes {
        &self.admission.closes
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.admission.lock();
        inner.open -= 1;
        if self.pending && inner.pending.remove(&self.id).is_none() {
            // Released while pending (a logged-on ticket never is).
            inner.released -= 1;
        }
    }
}

/// One of the [`MAX_REFUSALS`] refusal slots; freed when dropped.
#[derive(Debug)]
pub(crate) struct RefusalSlot(Arc<Admission>);

impl Drop for RefusalSlot {
    fn drop(&mut self) {
        self.0.lock().refusing -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: &Arc<Admission>) -> Ticket {
        match a.admit() {
            Admit::Admitted(t) => t,
            Admit::Refused => panic!("refused"),
        }
    }

    fn is_displaced(t: &Ticket) -> bool {
        use futures_util::FutureExt;
        t.displaced().notified().now_or_never().is_some()
    }

    #[test]
    fn the_oldest_pending_connection_makes_room() {
        let a = Arc::new(Admission::new(10, 2));
        let first = admitted(&a);
        let second = admitted(&a);
        let third = admitted(&a);
        assert!(is_displaced(&first), "the oldest goes");
        assert!(!is_displaced(&second) && !is_displaced(&third));
        assert_eq!(a.pending(), 2);
        assert_eq!(a.closes.displaced.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(a.lock().open, 2);
        assert_eq!(a.lock().released, 0);
    }

    #[test]
    fn logged_on_connections_are_never_displaced_and_refuse_at_the_cap() {
        let a = Arc::new(Admission::new(3, 2));
        let mut tickets: Vec<Ticket> = (0..3).map(|_| admitted(&a)).collect();
        // The third displaced the first (pending cap 2).
        assert!(
            !tickets[0].logon_received(),
            "a displaced ticket cannot log on"
        );
        assert!(tickets[1].logon_received() && tickets[2].logon_received());
        tickets.remove(0);
        let mut last = admitted(&a);
        assert!(last.logon_received());
        // Three logged on: nothing pending to displace, so the next one is refused.
        assert!(matches!(a.admit(), Admit::Refused));
        drop(last);
        let waiting = admitted(&a);
        // Full again, but with one pending: a newcomer displaces it.
        let newcomer = admitted(&a);
        assert!(is_displaced(&waiting));
        assert!(!is_displaced(&newcomer));
        assert!(tickets.iter().all(|t| !is_displaced(t)));
    }

    #[test]
    fn displaced_connections_still_closing_are_bounded() {
        let a = Arc::new(Admission::new(2, 1));
        // Displaced tickets that never close: the ceiling is 2 + 1 open.
        let held: Vec<Ticket> = (0..3).map(|_| admitted(&a)).collect();
        assert!(matches!(a.admit(), Admit::Refused));
        drop(held);
        assert_eq!(a.lock().open, 0);
        assert_eq!(a.pending(), 0);
        let _t = admitted(&a);
    }

    #[test]
    fn refusal_slots_are_bounded() {
        let a = Arc::new(Admission::new(1, 1));
        let slots: Vec<RefusalSlot> = (0..MAX_REFUSALS).filter_map(|_| a.refusal()).collect();
        assert_eq!(slots.len(), MAX_REFUSALS);
        assert!(a.refusal().is_none());
        drop(slots);
        assert!(a.refusal().is_some());
    }
}
