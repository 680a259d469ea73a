//! The publish store: every message the client has accepted and the server has not yet
//! acknowledged.
//!
//! The model: the publish store assigns each publish, delta_publish and sow_delete a sequence
//! number, appends it to a [`Store`], and sends it. A cumulative persisted ack for `N` discards
//! every message `<= N`; a failure ack for `N` looks message `N` up (to report it), then
//! discards `<= N`. After each logon the store discards up to the server's last sequence and
//! replays the rest in order. The capacity bound uses [`Store::len`] and [`Store::bytes`].
//!
//! The logic is a pure state machine, apart from the actor that runs it:
//!
//! ```text
//! state.rs      PublishState: events in (writes, acks, logons, losses, flushes, timers),
//!               effects out (frames to send, callers to answer, failures to report). No actix,
//!               no sockets, no clock reads; the Store is its only dependency.
//! admission.rs  validation, capacity and backpressure: a request is stored whole or not at all
//! acks.rs       persisted acks: distrust, discard, enrich and report failures
//! flush.rs      PublishFlush bookkeeping, one flush command in flight, the read proof
//! failures.rs   failure enrichment: which message, whose write, reported once; flush reports
//! stop.rs       connection lost, gave up, name lost, graceful close, stop
//! replay.rs     what a logon discards, keeps for late failures, reports as conflicts, re-sends
//! encode.rs     how a stored message goes on the wire
//! shared.rs     SharedStore: the state behind one short lock; writes enter it from any thread
//! actor.rs      PublishStoreActor: the thin shell that feeds events and carries out effects
//! memory.rs     MemoryStore (survives reconnects): 24 bytes a message plus its body, which
//!               is copied into shared chunks; get/iter lend MessageRef views
//! file.rs       FileStore (survives the process)
//! ```
//!
//! Both stores keep the unacknowledged messages in memory for lookup and replay; the file store
//! additionally writes them to disk. `docs/ACCOUNTING.md` states the guarantees end to end.

/// The [`Store`] methods that read the in-memory index, forwarded to a [`MemoryStore`] field:
/// the file store and the test stores keep their messages in one and differ only in writing.
macro_rules! reads_from_memory {
    ($field:ident) => {
        fn get(&self, seq: u64) -> Option<$crate::client::store::MessageRef<'_>> {
            self.$field.get(seq)
        }
        fn iter(&self) -> Box<dyn Iterator<Item = $crate::client::store::MessageRef<'_>> + '_> {
            self.$field.iter()
        }
        fn iter_from(
            &self,
            from: u64,
        ) -> Box<dyn Iterator<Item = $crate::client::store::MessageRef<'_>> + '_> {
            self.$field.iter_from(from)
        }
        fn len(&self) -> usize {
            self.$field.len()
        }
        fn bytes(&self) -> usize {
            self.$field.bytes()
        }
        fn last_assigned(&self) -> u64 {
            self.$field.last_assigned()
        }
        fn last_discarded(&self) -> u64 {
            self.$field.last_discarded()
        }
    };
}

mod acks;
pub mod actor;
mod admission;
mod encode;
mod failures;
pub mod file;
mod flush;
pub mod memory;
#[cfg(test)]
mod model_tests;
mod replay;
pub(crate) mod shared;
pub(crate) mod state;
mod stop;
#[cfg(test)]
mod sync_tests;

use std::sync::Arc;

use bytes::Bytes;

pub use file::{
    FileStore, FileStoreConfig, FsyncPolicy, StoreCheck, StoreDamage, STORE_QUARANTINE_DIR,
};
pub use memory::MemoryStore;

use crate::error::StoreError;

/// Which command a stored message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Operation {
    /// `p`
    Publish = 1,
    /// `delta_publish`
    DeltaPublish = 2,
    /// `sow_delete`
    SowDelete = 3,
}

impl Operation {
    /// The name used in events and the CLI's JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Publish => "publish",
            Operation::DeltaPublish => "delta_publish",
            Operation::SowDelete => "sow_delete",
        }
    }

    /// The inverse of `as u8`, for file stores.
    pub fn from_u8(b: u8) -> Option<Operation> {
        match b {
            1 => Some(Operation::Publish),
            2 => Some(Operation::DeltaPublish),
            3 => Some(Operation::SowDelete),
            _ => None,
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The less common fields of a stored message, boxed so the common case stays small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageOptions {
    /// `x`: correlation id.
    pub correlation_id: Option<String>,
    /// `e`: expiration in seconds.
    pub expiration: Option<u64>,
    /// `k`: SOW key (publish, delta_publish).
    pub sow_key: Option<String>,
    /// `filter` (sow_delete by filter).
    pub filter: Option<String>,
    /// `sow_keys` (sow_delete by keys).
    pub sow_keys: Option<String>,
}

/// The bytes a message counts against the store's byte capacity: topic, body and the text of
/// its options (one definition for stored messages and writes not yet stored).
pub(crate) fn weight(topic: &str, data: &[u8], options: Option<&MessageOptions>) -> usize {
    let opts = options.map_or(0, |o| {
        [&o.correlation_id, &o.sow_key, &o.filter, &o.sow_keys]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum::<usize>()
    });
    topic.len() + data.len() + opts
}

/// One message held by the store, with everything needed to resend it byte-identically and to
/// report it if it fails. A sow_delete by data keeps the data in `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The sequence number the store assigned.
    pub seq: u64,
    /// The command.
    pub operation: Operation,
    /// The topic (shared between consecutive messages to the same topic).
    pub topic: Arc<str>,
    /// The body.
    pub data: Bytes,
    /// Correlation id, expiration, SOW key, filter, keys: `None` when all absent.
    pub options: Option<Box<MessageOptions>>,
}

impl StoredMessage {
    /// Bytes this message counts against the store's byte capacity (topic + body + options).
    pub fn weight(&self) -> usize {
        weight(&self.topic, &self.data, self.options.as_deref())
    }

    /// The options, or the empty defaults.
    pub fn opts(&self) -> &MessageOptions {
        self.options.as_deref().unwrap_or(&NO_OPTIONS)
    }

    /// This message as a [`MessageRef`], the form [`Store::get`] and [`Store::iter`] yield.
    pub fn view(&self) -> MessageRef<'_> {
        MessageRef {
            seq: self.seq,
            operation: self.operation,
            topic: &self.topic,
            data: &self.data,
            shared_data: Some(&self.data),
            options: self.options.as_deref(),
        }
    }
}

static NO_OPTIONS: MessageOptions = MessageOptions {
    correlation_id: None,
    expiration: None,
    sow_key: None,
    filter: None,
    sow_keys: None,
};

/// A message held by a store, borrowed from it: what [`Store::get`] and [`Store::iter`] yield.
///
/// A store keeps its messages in a compact form of its own (the [`MemoryStore`] copies small
/// bodies into shared chunks), so it lends views rather than [`StoredMessage`]s. Encoding a view
/// for the wire reads it in place; [`MessageRef::to_message`] copies one out, for a message that
/// must outlive its place in the store (a failure report, say), so that nothing handed out
/// keeps a store's chunk alive.
///
/// ```
/// use actix_amps::client::store::{MemoryStore, Operation, Store, StoredMessage};
///
/// let mut store = MemoryStore::new();
/// let msg = StoredMessage {
///     seq: 1,
///     operation: Operation::Publish,
///     topic: "orders".into(),
///     data: bytes::Bytes::from_static(b"{\"id\":1}"),
///     options: None,
/// };
/// store.append(msg.clone()).unwrap();
/// let held = store.get(1).unwrap();
/// assert_eq!(held, msg.view());
/// assert_eq!(held.to_message(), msg);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MessageRef<'a> {
    /// The sequence number the store assigned.
    pub seq: u64,
    /// The command.
    pub operation: Operation,
    /// The topic.
    pub topic: &'a Arc<str>,
    /// The body.
    pub data: &'a [u8],
    /// The same body as a shared buffer, when the store holds it as one (a large body, or a
    /// store of `StoredMessage`s): [`MessageRef::to_message`] then shares it instead of copying.
    /// `None` for a body kept in the memory store's chunks.
    pub shared_data: Option<&'a Bytes>,
    /// Correlation id, expiration, SOW key, filter, keys: `None` when all absent.
    pub options: Option<&'a MessageOptions>,
}

/// Two views are equal when they show the same message, however each store keeps the body.
impl PartialEq for MessageRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.operation == other.operation
            && self.topic == other.topic
            && self.data == other.data
            && self.options == other.options
    }
}

impl Eq for MessageRef<'_> {}

impl MessageRef<'_> {
    /// Bytes this message counts against the store's byte capacity (topic + body + options).
    pub fn weight(&self) -> usize {
        weight(self.topic, self.data, self.options)
    }

    /// The options, or the empty defaults.
    pub fn opts(&self) -> &MessageOptions {
        self.options.unwrap_or(&NO_OPTIONS)
    }

    /// An owned copy: the topic shared, the body shared when the store holds it as a shared
    /// buffer, else copied (so an owned message never pins a chunk of the memory store).
    pub fn to_message(&self) -> StoredMessage {
        StoredMessage {
            seq: self.seq,
            operation: self.operation,
            topic: Arc::clone(self.topic),
            data: match self.shared_data {
                Some(b) => b.clone(),
                None => Bytes::copy_from_slice(self.data),
            },
            options: self.options.map(|o| Box::new(o.clone())),
        }
    }
}

impl From<MessageRef<'_>> for StoredMessage {
    fn from(m: MessageRef<'_>) -> StoredMessage {
        m.to_message()
    }
}

/// What [`Store::start_sync`] did.
#[derive(Debug)]
pub enum SyncStart {
    /// Finished at once, with this outcome.
    Done(Result<(), StoreError>),
    /// Running elsewhere: the outcome comes from [`Store::poll_sync`].
    Started,
}

/// Called (from the store's I/O thread) each time a started sync completes.
pub type SyncWaker = Arc<dyn Fn() + Send + Sync>;

/// Storage for unacknowledged messages. Implementations are used from one actor, never shared.
///
/// Sequence numbers are assigned by the caller and strictly increase across `append` calls.
pub trait Store: Send + 'static {
    /// Adds a message. For a durable store, the message is durable once [`Store::sync`] returns
    /// (or at once, under an `always` policy).
    fn append(&mut self, msg: StoredMessage) -> Result<(), StoreError>;

    /// Makes everything appended so far durable (group commit). A no-op for memory.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Discards every message with `seq <= up_to`; returns how many were discarded.
    fn discard_up_to(&mut self, up_to: u64) -> Result<usize, StoreError>;

    /// The message with this sequence, if still held (a view into the store;
    /// [`MessageRef::to_message`] copies it out).
    fn get(&self, seq: u64) -> Option<MessageRef<'_>>;

    /// Every held message in sequence order (for replay).
    fn iter(&self) -> Box<dyn Iterator<Item = MessageRef<'_>> + '_>;

    /// Every held message with `seq >= from`, in sequence order.
    fn iter_from(&self, from: u64) -> Box<dyn Iterator<Item = MessageRef<'_>> + '_> {
        Box::new(self.iter().skip_while(move |m| m.seq < from))
    }

    /// Forgets every held message with `seq >= from`: the publish store never sent them and
    /// told their callers they were not stored, so they must never be replayed, by this store
    /// or by one reopened from the same files. Returns how many were forgotten.
    ///
    /// The publish store only retracts messages appended since its last successful
    /// [`Store::sync`] (a group commit that failed, or an append that failed mid-request).
    /// Numbering is not rewound: [`Store::last_assigned`] stays, so the numbers are not reused.
    /// An error means the messages are gone from memory but may still be on disk.
    fn retract(&mut self, from: u64) -> Result<usize, StoreError>;

    /// How many messages are held.
    fn len(&self) -> usize;

    /// Whether no message is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of [`StoredMessage::weight`] over held messages.
    fn bytes(&self) -> usize;

    /// The highest sequence ever appended (or restored); 0 for a fresh store.
    fn last_assigned(&self) -> u64;

    /// The highest sequence discarded so far (acknowledged); 0 for a fresh store.
    fn last_discarded(&self) -> u64;

    /// Whether [`Store::sync`] must run before a write is reported stored (a durable store
    /// with buffered writes). The store actor then answers a burst of writes after one `sync`:
    /// group commit.
    fn needs_sync(&self) -> bool {
        false
    }

    /// Starts making everything appended so far durable without waiting (the asynchronous half
    /// of group commit). [`SyncStart::Done`] when the store finished at once (the default:
    /// [`Store::sync`]); [`SyncStart::Started`] when the work runs elsewhere (the file store's
    /// I/O thread): its outcome then comes from [`Store::poll_sync`], after the waker set with
    /// [`Store::set_sync_waker`] was called. At most one sync is started at a time.
    fn start_sync(&mut self) -> SyncStart {
        SyncStart::Done(self.sync())
    }

    /// The outcome of the started sync, once it completed (`None`: still running, or none
    /// started). Each outcome is returned once.
    fn poll_sync(&mut self) -> Option<Result<(), StoreError>> {
        None
    }

    /// Blocks until the started sync completes and returns its outcome (`None` if none was
    /// started). Only for the rare terminal events that must settle first (losing the client
    /// name, stopping); the steady state never waits.
    fn wait_sync(&mut self) -> Option<Result<(), StoreError>> {
        None
    }

    /// Sets what a started sync calls, from another thread, when it completes.
    fn set_sync_waker(&mut self, waker: SyncWaker) {
        let _ = waker;
    }

    /// [`Store::discard_up_to`], and makes the mark durable soon without waiting (the file
    /// store hands it to its I/O thread with an fsync). The default discards and syncs.
    fn discard_durably(&mut self, up_to: u64) -> Result<usize, StoreError> {
        let n = self.discard_up_to(up_to)?;
        self.sync()?;
        Ok(n)
    }

    /// Whether the store survives the process (a file store). The publish store then sends a
    /// write only after the `sync` that makes it durable, so that a write whose sync fails can
    /// be refused without ever having been sent.
    fn is_durable(&self) -> bool {
        false
    }
}
