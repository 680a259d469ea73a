//! The publish store: every message the client has accepted and the server has not yet
//! acknowledged.
//!
//! The model: the [`PublishStoreActor`](crate::client) assigns each publish, delta_publish and
//! sow_delete a sequence number, appends it to a [`Store`], and sends it. A cumulative persisted
//! ack for `N` discards every message `<= N`; a failure ack for `N` looks message `N` up (to report
//! it), then discards `<= N`. After each logon the store discards up to the server's last
//! sequence and replays the rest in order. The actor enforces the capacity bound using
//! [`Store::len`] and [`Store::bytes`].
//!
//! Two implementations: [`MemoryStore`] (survives reconnects) and [`FileStore`] (also survives the
//! client process). Both keep the unacknowledged messages in memory for lookup and replay; the
//! file store additionally writes them to disk.

pub mod actor;
pub mod file;
pub mod memory;

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
        static EMPTY: MessageOptions = MessageOptions {
            correlation_id: None,
            expiration: None,
            sow_key: None,
            filter: None,
            sow_keys: None,
        };
        self.options.as_deref().unwrap_or(&EMPTY)
    }
}

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

    /// The message with this sequence, if still held.
    fn get(&self, seq: u64) -> Option<&StoredMessage>;

    /// Every held message in sequence order (for replay).
    fn iter(&self) -> Box<dyn Iterator<Item = &StoredMessage> + '_>;

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
}
