//! The feed: accepted writes waiting to become durable before they are fanned out.
//!
//! The session that accepts a write (under the server's state lock) knows everything a
//! subscriber will need: the record before and after the write, its key, its bookmark and
//! timestamp. It pushes a [`Committed`] event here, in log order, with the write's log
//! position. The fan-out thread takes the events whose position is durable and delivers them;
//! nothing is delivered that a crash could still undo.
//!
//! With no subscription anywhere the feed stays empty (the accept path checks
//! [`Feed::is_active`] first), so ingest without subscribers pays nothing. A subscription is
//! placed under the same state lock, so every write accepted after it is in the feed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::delivery::Bookmark;
use crate::server::core::Write;
use crate::server::sow::{Change, Removed};
use crate::server::txlog::RecordKind;

/// Above this many bytes waiting in the feed, sessions wait for the fan-out before reading
/// more writes (the same backpressure as the log's).
pub(crate) const FEED_BACKLOG_LIMIT: usize = 64 << 20;

/// One accepted write, as subscribers will see it.
#[derive(Debug)]
pub(crate) struct Committed {
    /// Its position in the transaction log.
    pub lsn: u64,
    /// What it was.
    pub kind: RecordKind,
    /// Its topic.
    pub topic: Arc<str>,
    /// Its bookmark.
    pub bookmark: Bookmark,
    /// When it was accepted (microseconds since the epoch).
    pub ts: u64,
    /// The publisher's correlation id.
    pub correlation_id: Option<Box<str>>,
    /// The SOW key (SOW topics only).
    pub key: Option<String>,
    /// The record after the write (a delta merged into the stored record), or the body as
    /// published on a topic without a SOW. Empty for deletes.
    pub body: Bytes,
    /// The record before the write, on a SOW topic that had one.
    pub prev: Option<Bytes>,
    /// The top-level key field names of the topic (SOW topics only).
    pub key_fields: Arc<[String]>,
    /// Records a sow_delete removed.
    pub removed: Vec<Removed>,
}

/// The key fields of a topic without a SOW: none (one shared allocation).
fn no_key_fields() -> Arc<[String]> {
    static NONE: std::sync::OnceLock<Arc<[String]>> = std::sync::OnceLock::new();
    NONE.get_or_init(|| Arc::from(Vec::new())).clone()
}

impl Committed {
    /// The event of an accepted write `w` at log position `lsn`: `change` is what it did to
    /// a SOW topic (publishes), `removed` what a sow_delete removed.
    pub fn of_write(
        topic: Arc<str>,
        lsn: u64,
        w: &Write<'_>,
        bookmark: Bookmark,
        ts: u64,
        change: Option<Change>,
        removed: Vec<Removed>,
    ) -> Committed {
        let (key, body, prev, key_fields) = match change {
            Some(c) => (Some(c.key), c.now, c.prev, c.key_fields),
            None => (None, w.body.clone(), None, no_key_fields()),
        };
        Committed {
            lsn,
            kind: w.kind,
            topic,
            bookmark,
            ts,
            correlation_id: w.correlation_id.map(Into::into),
            key,
            body: match w.kind {
                RecordKind::Publish | RecordKind::DeltaPublish => body,
                _ => Bytes::new(),
            },
            prev,
            key_fields,
            removed,
        }
    }

    /// The bytes it holds, for the backlog bound.
    pub fn weight(&self) -> usize {
        128 + self.topic.len()
            + self.body.len()
            + self.prev.as_ref().map_or(0, Bytes::len)
            + self
                .removed
                .iter()
                .map(|(k, b)| 32 + k.len() + b.len())
                .sum::<usize>()
    }
}

/// The queue of [`Committed`] events (module docs). Lives in the server's state, under its
/// lock.
#[derive(Debug)]
pub(crate) struct Feed {
    events: VecDeque<Committed>,
    bytes: usize,
    /// How many subscriptions exist (kept by the registry).
    subscriptions: Arc<AtomicUsize>,
    /// The topic of the last event, shared with the next one if it is the same.
    last_topic: Option<Arc<str>>,
}

impl Feed {
    /// A feed that is active while `subscriptions` is above zero.
    pub fn new(subscriptions: Arc<AtomicUsize>) -> Feed {
        Feed {
            events: VecDeque::new(),
            bytes: 0,
            subscriptions,
            last_topic: None,
        }
    }

    /// Whether any subscription exists, so accepted writes must be queued.
    pub fn is_active(&self) -> bool {
        self.subscriptions.load(Ordering::Acquire) > 0
    }

    /// The topic `name` as a shared string (a stream of writes to one topic shares one).
    pub fn topic(&mut self, name: &str) -> Arc<str> {
        match &self.last_topic {
            Some(t) if &**t == name => t.clone(),
            _ => {
                let t: Arc<str> = Arc::from(name);
                self.last_topic = Some(t.clone());
                t
            }
        }
    }

    /// Queues an event (in log order).
    pub fn push(&mut self, ev: Committed) {
        self.bytes += ev.weight();
        self.events.push_back(ev);
    }

    /// Bytes waiting.
    pub fn backlog(&self) -> usize {
        self.bytes
    }

    /// Takes every event at or below the durable position `durable`, oldest first.
    pub fn take_durable(&mut self, durable: u64) -> Vec<Committed> {
        let n = self.events.partition_point(|e| e.lsn <= durable);
        let taken: Vec<Committed> = self.events.drain(..n).collect();
        for e in &taken {
            self.bytes -= e.weight();
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(lsn: u64) -> Committed {
        Committed {
            lsn,
            kind: RecordKind::Publish,
            topic: "t".into(),
            bookmark: Bookmark {
                publisher: 1,
                seq: lsn,
            },
            ts: 0,
            correlation_id: None,
            key: None,
            body: Bytes::from_static(b"{}"),
            prev: None,
            key_fields: Arc::from(Vec::new()),
            removed: Vec::new(),
        }
    }

    #[test]
    fn only_durable_events_leave_in_order() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut f = Feed::new(count.clone());
        assert!(!f.is_active());
        count.store(1, Ordering::Release);
        assert!(f.is_active());
        for lsn in 1..=5 {
            f.push(ev(lsn));
        }
        let w = f.backlog();
        assert!(w > 0);
        let taken: Vec<u64> = f.take_durable(3).iter().map(|e| e.lsn).collect();
        assert_eq!(taken, [1, 2, 3]);
        assert!(f.take_durable(3).is_empty());
        assert_eq!(f.take_durable(9).len(), 2);
        assert_eq!(f.backlog(), 0);
    }
}
