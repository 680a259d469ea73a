//! Subscriptions, SOW queries and bookmark replay in the embedded server.
//!
//! # The model
//!
//! ```text
//!  session (accepts a write, under the state lock)
//!     │  SOW applied, record logged, Committed event pushed to the feed (if any subscription)
//!     ▼
//!  feed ──(log durable up to N)──► fan-out thread ──► registry: per connection, per subscription
//!                                                          │ frames with a comma list of sids
//!                                                          ▼
//!                                        outbox of each subscriber connection ──► its session ──► socket
//!
//!  session (a subscribe/sow command) ──► registry (place) + its own streams:
//!       SOW query results (paced by the socket), or a replay read from the log by a reader thread
//! ```
//!
//! - A subscription is **delivered only what is durable**: the fan-out waits for the
//!   transaction log's durable position before it looks at a write, and a replay reads only
//!   what is durable. A subscriber never sees a write that a crash could undo.
//! - **Writers never wait for subscribers.** The fan-out appends frames to per-connection
//!   outboxes; a subscriber whose outbox (or unsent output) passes the connection's
//!   `max_unsent_bytes` is disconnected as a slow consumer. A writer's persisted ack depends
//!   only on the log.
//! - **No gap, no duplicate** between a query or a replay and the live stream: see the states
//!   in [`registry`].
//! - Sub ids are scoped to their connection; the official client routes deliveries by `sids`
//!   only, so every delivery carries it.
//!
//! Files: [`request`] reads commands, [`matching`] decides what a write gives a subscription,
//! [`delivery`] writes the frames, [`feed`] queues accepted writes, [`fanout`] delivers them,
//! [`registry`] holds the subscriptions and the hand-off states, [`conn`] is a session's side
//! (commands, query and replay streams), [`replay`] reads the log for bookmark subscriptions.

pub(crate) mod conn;
pub(crate) mod delivery;
pub(crate) mod fanout;
pub(crate) mod feed;
pub(crate) mod matching;
pub(crate) mod registry;
pub(crate) mod replay;
pub(crate) mod request;

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::registry::Registry;

/// What a wait on the durable position ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The log is durable up to this position (above the one waited on).
    Durable(u64),
    /// The server is stopping.
    Stopped,
    /// The timeout passed first.
    TimedOut,
}

#[derive(Debug)]
struct Signal {
    durable: u64,
    stopped: bool,
}

/// What the subscription side of the server shares: the registry, and the durable position
/// for the threads (fan-out, replay readers) that cannot await the sessions' watch channel.
#[derive(Debug)]
pub(crate) struct Hub {
    /// Every subscription.
    pub registry: Registry,
    signal: Mutex<Signal>,
    cv: Condvar,
    /// Everything at or below this position has been fanned out (sessions wait on it when the
    /// feed is too far behind).
    pub fanned: watch::Sender<u64>,
    /// The data directory, where replays read the log.
    pub log_dir: PathBuf,
}

impl Hub {
    /// A hub for the log in `log_dir`, durable up to `durable` at start.
    pub fn new(durable: u64, log_dir: PathBuf) -> Hub {
        let registry = Registry::default();
        registry.lock().fanned = durable;
        Hub {
            registry,
            signal: Mutex::new(Signal {
                durable,
                stopped: false,
            }),
            cv: Condvar::new(),
            fanned: watch::Sender::new(durable),
            log_dir,
        }
    }

    fn signal(&self) -> MutexGuard<'_, Signal> {
        self.signal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log writer made everything up to `lsn` durable.
    pub fn durable_advanced(&self, lsn: u64) {
        let mut s = self.signal();
        s.durable = s.durable.max(lsn);
        drop(s);
        self.cv.notify_all();
    }

    /// Stops the fan-out and every replay reader.
    pub fn stop(&self) {
        self.signal().stopped = true;
        self.cv.notify_all();
    }

    /// The durable position now.
    pub fn durable(&self) -> u64 {
        self.signal().durable
    }

    /// Blocks (a plain thread, never a tokio worker) until the durable position is above
    /// `lsn`, the hub stops, or `timeout` passes.
    pub fn wait_durable_above(&self, lsn: u64, timeout: Option<Duration>) -> Wait {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.signal();
        loop {
            if s.stopped {
                return Wait::Stopped;
            }
            if s.durable > lsn {
                return Wait::Durable(s.durable);
            }
            s = match deadline {
                None => self.cv.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Wait::TimedOut;
                    }
                    self.cv
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// Whether `c` is a command this module answers.
pub(crate) fn handles(c: &crate::protocol::Command) -> bool {
    use crate::protocol::Command;
    request::Kind::of(c).is_some() || *c == Command::Unsubscribe
}
