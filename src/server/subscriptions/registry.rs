//! Who is subscribed to what: the subscriptions of every connection, each connection's outbox,
//! and the states that make the hand-off from a query or a replay to live delivery exact.
//!
//! # Subscriptions and their states
//!
//! A subscription belongs to one connection and is named by its `sub_id`, unique on that
//! connection only. It is in one of three states ([`SubState`]):
//!
//! - **Live** `{after: L}`: the fan-out delivers every matching write with a log position
//!   above `L` into the connection's [`Outbox`].
//! - **Pending** `{after: L}`: a `sow_and_subscribe` whose query (the SOW exactly as of log
//!   position `L`) is still being sent. Writes above `L` are encoded into the subscription's
//!   own buffer instead of the outbox; when the session has written the query's `group_end`
//!   it calls [`Registry::go_live`], which hands the buffer over and makes the subscription
//!   Live. The query covers everything up to `L`, the buffer everything after: no gap, no
//!   duplicate, and no live message before `group_end`.
//! - **Replaying** `{must_reach: L}`: a bookmark subscription reading the transaction log. The
//!   fan-out skips it. Its reader reads up to the durable end of the log, then asks
//!   [`Registry::hand_off`] to go live after the last position `P` it read. That succeeds only
//!   when `P` is at least `L` (everything accepted before the subscription existed) and at
//!   least the position the fan-out has finished (everything the fan-out skipped for it);
//!   then the subscription is Live `{after: P}`. Otherwise the reader keeps reading. The check
//!   and the switch happen under the registry lock, which the fan-out holds while it works, so
//!   every message lands either in the replay or in the live stream, exactly once.
//!
//! A subscription is placed while the caller holds the server's state lock, so that `L` (the
//! last accepted log position) and the feed agree (see the feed's module docs).
//!
//! # Outboxes
//!
//! The fan-out never writes to a socket: it appends frames to the connection's [`Outbox`] and
//! wakes the session, which moves them to its output. An outbox (or a pending buffer) that
//! grows past the connection's unsent-bytes limit marks the connection overflowed; the session
//! then closes it as a slow subscriber. Writers never wait for any of this.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::matching::Spec;
use crate::protocol::Reason;

/// Frames waiting for a connection's session (module docs).
#[derive(Debug)]
pub(crate) struct Outbox {
    buf: Mutex<BytesMut>,
    /// Bytes in `buf`, readable without the lock.
    len: AtomicUsize,
    ready: Notify,
    overflowed: AtomicBool,
    limit: usize,
}

impl Outbox {
    /// An outbox that overflows past `limit` bytes.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            buf: Mutex::new(BytesMut::new()),
            len: AtomicUsize::new(0),
            ready: Notify::new(),
            overflowed: AtomicBool::new(false),
            limit,
        }
    }

    fn buf(&self) -> MutexGuard<'_, BytesMut> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends encoded frames and wakes the session.
    #[cfg(test)]
    pub fn push(&self, frames: &[u8]) {
        if frames.is_empty() {
            return;
        }
        let len = {
            let mut b = self.buf();
            b.extend_from_slice(frames);
            self.len.store(b.len(), Ordering::Relaxed);
            b.len()
        };
        if len > self.limit {
            self.overflowed.store(true, Ordering::Release);
        }
        self.ready.notify_one();
    }

    /// Moves the frames in `frames` here (swapping buffers when this one is empty, so no bytes
    /// are copied) and wakes the session; `frames` is left empty.
    pub fn push_buf(&self, frames: &mut BytesMut) {
        if frames.is_empty() {
            return;
        }
        let len = {
            let mut b = self.buf();
            if b.is_empty() {
                std::mem::swap(&mut *b, frames);
            } else {
                b.extend_from_slice(frames);
            }
            self.len.store(b.len(), Ordering::Relaxed);
            b.len()
        };
        frames.clear();
        if len > self.limit {
            self.overflowed.store(true, Ordering::Release);
        }
        self.ready.notify_one();
    }

    /// Marks the connection overflowed (a pending buffer went over the limit).
    pub fn overflow(&self) {
        self.overflowed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Resolves when frames were pushed (or the outbox overflowed) since the last take.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Moves everything waiting to `out`; `Err` when the outbox overflowed.
    pub fn take_into(&self, out: &mut BytesMut) -> Result<usize, usize> {
        let mut b = self.buf();
        let n = b.len();
        self.len.store(0, Ordering::Relaxed);
        if self.overflowed.load(Ordering::Acquire) {
            b.clear();
            return Err(n);
        }
        if out.is_empty() {
            std::mem::swap(&mut *b, out);
        } else {
            out.extend_from_slice(&b);
            b.clear();
        }
        Ok(n)
    }

    /// Whether it went over its limit.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The most bytes it may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// A subscription's state (module docs).
#[derive(Debug)]
pub(crate) enum SubState {
    /// Deliveries above `after` go to the outbox.
    Live {
        /// Last log position the subscription already has.
        after: u64,
    },
    /// Deliveries above `after` wait in `buf` until the query has been sent.
    Pending {
        /// Log position of the query's snapshot.
        after: u64,
        /// Encoded deliveries waiting.
        buf: BytesMut,
    },
    /// The log reader delivers; the fan-out skips it.
    Replaying {
        /// The reader must have read at least this far before going live.
        must_reach: u64,
    },
}

/// One subscription.
#[derive(Debug)]
pub(crate) struct Sub {
    /// Its `sub_id`.
    pub id: Arc<str>,
    /// What it matches.
    pub spec: Arc<Spec>,
    /// Its state.
    pub state: SubState,
}

/// One connection's subscriptions.
#[derive(Debug)]
pub(crate) struct ConnSubs {
    /// Where its deliveries go.
    pub outbox: Arc<Outbox>,
    /// In the order they were placed.
    pub subs: Vec<Sub>,
}

/// Everything under the registry lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    /// Subscriptions per connection id.
    pub conns: HashMap<u64, ConnSubs>,
    /// Every write at or below this log position has been fanned out.
    pub fanned: u64,
}

/// How [`Registry::hand_off`] went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HandOff {
    /// The subscription is live after the reader's position.
    Live,
    /// Not yet: the reader must read further.
    NotYet,
    /// The subscription is gone (unsubscribed or replaced).
    Gone,
}

/// The registry (module docs).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    /// Number of subscriptions, read by the accept path (feed) without this lock.
    count: Arc<AtomicUsize>,
}

impl Registry {
    /// The counter the feed reads.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.count.clone()
    }

    /// The lock (the fan-out holds it while it delivers a batch).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Places a subscription on connection `conn` (whose outbox is `outbox`). With `replace`
    /// an existing subscription of that id is replaced; without, it is `subid in use`. Call
    /// with the server's state lock held (module docs).
    pub fn place(
        &self,
        conn: u64,
        outbox: &Arc<Outbox>,
        sub: Sub,
        replace: bool,
    ) -> Result<(), Reason> {
        let mut inner = self.lock();
        let cs = inner.conns.entry(conn).or_insert_with(|| ConnSubs {
            outbox: outbox.clone(),
            subs: Vec::new(),
        });
        if let Some(pos) = cs.subs.iter().position(|s| s.id == sub.id) {
            if !replace {
                return Err(Reason::SubidInUse);
            }
            cs.subs[pos] = sub;
            return Ok(());
        }
        cs.subs.push(sub);
        self.count.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes the listed subscriptions of `conn` (`None`: all of them); returns the ids
    /// removed.
    pub fn remove(&self, conn: u64, ids: Option<&[&str]>) -> Vec<Arc<str>> {
        let mut inner = self.lock();
        let Some(cs) = inner.conns.get_mut(&conn) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        cs.subs.retain(|s| {
            let goes = ids.is_none_or(|ids| ids.contains(&&*s.id));
            if goes {
                removed.push(s.id.clone());
            }
            !goes
        });
        if cs.subs.is_empty() {
            inner.conns.remove(&conn);
        }
        self.count.fetch_sub(removed.len(), Ordering::AcqRel);
        removed
    }

    /// A Pending subscription becomes Live; returns the deliveries it collected (`None` if it
    /// is gone or not pending).
    pub fn go_live(&self, conn: u64, id: &str) -> Option<BytesMut> {
        let mut inner = self.lock();
        let sub = inner
            .conns
            .get_mut(&conn)?
            .subs
            .iter_mut()
            .find(|s| &*s.id == id)?;
        match std::mem::replace(&mut sub.state, SubState::Live { after: 0 }) {
            SubState::Pending { after, buf } => {
                sub.state = SubState::Live { after };
                Some(buf)
            }
            other => {
                sub.state = other;
                None
            }
        }
    }

    /// A Replaying subscription whose reader has read everything up to `read_to` asks to go
    /// live (module docs).
    pub fn hand_off(&self, conn: u64, id: &str, read_to: u64) -> HandOff {
        let mut inner = self.lock();
        let fanned = inner.fanned;
        let Some(sub) = inner
            .conns
            .get_mut(&conn)
            .and_then(|cs| cs.subs.iter_mut().find(|s| &*s.id == id))
        else {
            return HandOff::Gone;
        };
        match sub.state {
            SubState::Replaying { must_reach } if read_to >= must_reach && read_to >= fanned => {
                sub.state = SubState::Live { after: read_to };
                HandOff::Live
            }
            SubState::Replaying { .. } => HandOff::NotYet,
            _ => HandOff::Gone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::subscriptions::matching::TopicPattern;

    fn sub(id: &str, state: SubState) -> Sub {
        Sub {
            id: id.into(),
            spec: Arc::new(Spec {
                topic: TopicPattern::parse("t").unwrap(),
                filter: None,
                delta: false,
                oof: false,
                no_empties: false,
                timestamp: false,
            }),
            state,
        }
    }

    #[test]
    fn ids_are_per_connection_and_counted() {
        let r = Registry::default();
        let ob = Arc::new(Outbox::new(100));
        r.place(1, &ob, sub("a", SubState::Live { after: 0 }), false)
            .unwrap();
        r.place(2, &ob, sub("a", SubState::Live { after: 0 }), false)
            .unwrap();
        assert_eq!(
            r.place(1, &ob, sub("a", SubState::Live { after: 0 }), false),
            Err(Reason::SubidInUse)
        );
        r.place(1, &ob, sub("a", SubState::Live { after: 5 }), true)
            .unwrap();
        r.place(1, &ob, sub("b", SubState::Live { after: 0 }), false)
            .unwrap();
        assert_eq!(r.counter().load(Ordering::Acquire), 3);
        assert_eq!(r.remove(1, Some(&["b", "zz"])).len(), 1);
        assert_eq!(r.remove(1, None).len(), 1);
        assert_eq!(r.counter().load(Ordering::Acquire), 1);
        assert!(!r.lock().conns.contains_key(&1));
    }

    #[test]
    fn pending_goes_live_with_its_buffer() {
        let r = Registry::default();
        let ob = Arc::new(Outbox::new(100));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"frames");
        r.place(1, &ob, sub("q", SubState::Pending { after: 7, buf }), false)
            .unwrap();
        assert_eq!(r.go_live(1, "q").as_deref(), Some(&b"frames"[..]));
        assert!(r.go_live(1, "q").is_none(), "already live");
        assert!(matches!(
            r.lock().conns[&1].subs[0].state,
            SubState::Live { after: 7 }
        ));
    }

    #[test]
    fn a_replay_hands_off_only_past_what_it_must_cover() {
        let r = Registry::default();
        let ob = Arc::new(Outbox::new(100));
        r.place(
            1,
            &ob,
            sub("b", SubState::Replaying { must_reach: 10 }),
            false,
        )
        .unwrap();
        r.lock().fanned = 12;
        assert_eq!(r.hand_off(1, "b", 9), HandOff::NotYet, "below must_reach");
        assert_eq!(r.hand_off(1, "b", 11), HandOff::NotYet, "below fanned");
        assert_eq!(r.hand_off(1, "b", 12), HandOff::Live);
        assert!(matches!(
            r.lock().conns[&1].subs[0].state,
            SubState::Live { after: 12 }
        ));
        assert_eq!(r.hand_off(1, "nope", 12), HandOff::Gone);
    }

    #[test]
    fn an_outbox_over_its_limit_overflows() {
        let ob = Outbox::new(8);
        ob.push(b"12345");
        let mut out = BytesMut::new();
        assert_eq!(ob.take_into(&mut out), Ok(5));
        assert_eq!(&out[..], b"12345");
        ob.push(b"123456789");
        assert!(ob.take_into(&mut out).is_err());
    }
}
