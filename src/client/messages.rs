//! The messages users send to the [`ClientActor`](super::ClientActor) and the events the client
//! sends to subscribers.
//!
//! Writes ([`Publish`], [`DeltaPublish`], [`PublishBatch`], [`SowDelete`]) resolve as soon as the
//! publish store holds the message, with its sequence number; they never wait for the server.
//! What happens to each write later is reported: success silently (it leaves the store and the
//! statistics count it), failure as a [`FailedWrite`] to every failed-write subscriber, or, with
//! none, as an [`UnexpectedMessage`] to the last-chance subscribers. [`PublishFlush`] waits for
//! everything stored before it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use crate::client::body::Body;
use crate::client::store::{Operation, StoredMessage};
use crate::client::topic::Topic;
use crate::error::{ConnectError, FlushError, PublishError, SowDeleteError};
use crate::protocol::ack::{Reason, Status};
use crate::protocol::{AmpsUri, Frame, Header};

/// Publishes `data` to `topic`. Resolves to the sequence number once the store holds the message
/// (`None` when the client runs without a store).
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Option<u64>, PublishError>")]
pub struct Publish {
    /// Topic (a [`Topic`](crate::client::Topic): clone one to publish without allocating).
    pub topic: Topic,
    /// Body.
    pub data: Bytes,
    /// Expiration in seconds (`e`).
    pub expiration: Option<u64>,
    /// Correlation id (`x`), opaque, in the base64 character set.
    pub correlation_id: Option<String>,
    /// SOW key (`k`); otherwise the server derives it from the body.
    pub sow_key: Option<String>,
}

impl Publish {
    /// A publish with no options.
    pub fn new(topic: impl Into<Topic>, data: impl Into<Body>) -> Publish {
        Publish {
            topic: topic.into(),
            data: data.into().0,
            expiration: None,
            correlation_id: None,
            sow_key: None,
        }
    }

    /// Sets the expiration in seconds.
    pub fn expiration(mut self, seconds: u64) -> Self {
        self.expiration = Some(seconds);
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the SOW key.
    pub fn sow_key(mut self, key: impl Into<String>) -> Self {
        self.sow_key = Some(key.into());
        self
    }
}

/// A delta publish: the server merges the body's fields into the stored SOW record. Same
/// fields and result as [`Publish`].
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Option<u64>, PublishError>")]
pub struct DeltaPublish(pub Publish);

impl DeltaPublish {
    /// A delta publish with no options.
    pub fn new(topic: impl Into<Topic>, data: impl Into<Body>) -> DeltaPublish {
        DeltaPublish(Publish::new(topic, data))
    }
}

/// Many publishes in one actor message (one mailbox hop for the lot). Resolves to the first and
/// last sequence assigned (consecutive), `None` without a store or for an empty batch.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Option<(u64, u64)>, PublishError>")]
pub struct PublishBatch {
    /// The messages, stored and sent in this order.
    pub messages: Vec<Publish>,
    /// Send them as delta publishes.
    pub delta: bool,
}

impl PublishBatch {
    /// A batch of plain publishes.
    pub fn new(messages: Vec<Publish>) -> PublishBatch {
        PublishBatch {
            messages,
            delta: false,
        }
    }
}

/// What a sow_delete removes. The three selectors are mutually exclusive on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SowDeleteSelector {
    /// Records matching a content filter, e.g. `/id = 1`.
    Filter(String),
    /// Records with these SOW keys (comma list).
    Keys(String),
    /// The record this body would update (its key is derived from the body).
    Data(Bytes),
}

/// Deletes SOW records. Stored, sequenced and replayed like a publish when the client has a
/// store; its outcome is reported like a publish's. Resolves to the sequence number.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Option<u64>, PublishError>")]
pub struct SowDelete {
    /// Topic.
    pub topic: Topic,
    /// What to delete.
    pub selector: SowDeleteSelector,
}

/// Deletes SOW records and waits for the server's `stats` ack (one deadline for the whole call).
///
/// With a store, the delete is also stored and sequenced: if the connection drops before the
/// stats arrive, it is replayed under the same command id and this call still completes within
/// its timeout. Without a store it fails with [`SowDeleteError::Disconnected`] instead.
///
/// ```
/// # use std::time::Duration;
/// # use actix_amps::client::{ClientConfig, Publish, PublishFlush};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let server = actix_amps::server::Server::start(
/// #     actix_amps::server::ServerConfig::new(dir.path()).sow("orders", &["/id"]),
/// # )?;
/// # actix::System::new().block_on(async {
/// # let client = ClientConfig::new("sow-delete-doc").uri(&server.uri())?.start()?;
/// use actix_amps::client::{SowDeleteAndWait, SowDeleteSelector};
///
/// for id in 1..=3 {
///     client.send(Publish::new("orders", format!(r#"{{"id":{id}}}"#))).await??;
/// }
/// let stats = client
///     .send(SowDeleteAndWait::new(
///         "orders",
///         SowDeleteSelector::Filter("/id > 1".into()),
///         Duration::from_secs(10),
///     ))
///     .await??;
/// assert_eq!(stats.records_deleted, 2);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<SowDeleteStats, SowDeleteError>")]
#[non_exhaustive]
pub struct SowDeleteAndWait {
    /// Topic.
    pub topic: String,
    /// What to delete.
    pub selector: SowDeleteSelector,
    /// Deadline for the stats ack.
    pub timeout: Duration,
}

impl SowDeleteAndWait {
    /// Deletes what `selector` names from `topic`, waiting at most `timeout` for the stats.
    pub fn new(
        topic: impl Into<String>,
        selector: SowDeleteSelector,
        timeout: Duration,
    ) -> SowDeleteAndWait {
        SowDeleteAndWait {
            topic: topic.into(),
            selector,
            timeout,
        }
    }
}

/// The server's counters for a sow_delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SowDeleteStats {
    /// Records the selector matched.
    pub matches: u64,
    /// Records removed.
    pub records_deleted: u64,
    /// Records in the topic that were considered.
    pub topic_matches: u64,
}

/// Resolves when every write stored before it is acknowledged (persisted or failed) and the
/// server has acknowledged a flush; fails after `timeout` (one deadline for the whole call) with
/// the count still unacknowledged.
///
/// The answer is a [`FlushReport`]: the writes before the flush that failed and were not in an
/// earlier flush's report. It comes only after every one of those failures is in the mailbox
/// of every failed-write subscriber, so a caller that counts its [`FailedWrite`] events after
/// the flush resolves sees all of them.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Result<FlushReport, FlushError>")]
pub struct PublishFlush {
    /// Deadline for the whole call.
    pub timeout: Duration,
}

/// What a successful [`PublishFlush`] found: the failed writes among those stored before it.
///
/// Each failure reported as a [`FailedWrite`] with a sequence is claimed by exactly one report:
/// the first flush that resolves after it whose target covers it. Failures of a predecessor
/// process's writes (see [`FailedWrite::predecessor`]) are counted too, apart.
///
/// ```
/// # use actix_amps::client::FlushReport;
/// let report = FlushReport::default();
/// assert!(report.all_persisted());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// How many writes before the flush failed (this process's and predecessors').
    pub failed: u64,
    /// Their sequence numbers, ascending. Complete unless more than about a million failures
    /// went unclaimed by any flush, in which case the oldest are counted in `failed` only.
    pub sequences: Vec<u64>,
    /// How many of `failed` were a predecessor's writes.
    pub predecessor_failed: u64,
}

impl FlushReport {
    /// Whether no write before the flush failed.
    pub fn all_persisted(&self) -> bool {
        self.failed == 0
    }
}

/// Identifies a subscription, for unsubscribing. Only the client hands them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub(crate) u64);

/// Subscribes an actor to [`FailedWrite`] events.
#[derive(Message)]
#[rtype(result = "Result<SubscriptionId, crate::error::ClientStopped>")]
pub struct SubscribeFailedWrites(pub Recipient<FailedWrite>);

/// Subscribes an actor to [`UnexpectedMessage`] events (the last-chance handler).
#[derive(Message)]
#[rtype(result = "Result<SubscriptionId, crate::error::ClientStopped>")]
pub struct SubscribeUnexpected(pub Recipient<UnexpectedMessage>);

/// Subscribes an actor to [`ConnectionEvent`]s.
#[derive(Message)]
#[rtype(result = "Result<SubscriptionId, crate::error::ClientStopped>")]
pub struct SubscribeConnectionEvents(pub Recipient<ConnectionEvent>);

/// Removes a subscription of any kind; resolves to whether it existed.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Result<bool, crate::error::ClientStopped>")]
pub struct Unsubscribe(pub SubscriptionId);

/// Resolves `true` once the client is logged on (at once if it already is), `false` if
/// `timeout` passes first. Useful without a store, where a write made while disconnected is
/// refused rather than kept.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "bool")]
#[non_exhaustive]
pub struct WaitLoggedOn {
    /// How long to wait.
    pub timeout: Duration,
}

impl WaitLoggedOn {
    /// Waits at most `timeout`.
    pub fn new(timeout: Duration) -> WaitLoggedOn {
        WaitLoggedOn { timeout }
    }
}

/// Asks for the client's counters.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Result<ClientStats, crate::error::ClientStopped>")]
pub struct GetStats;

/// The client's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Writes stored (publish, delta_publish, sow_delete).
    pub published: u64,
    /// Writes acknowledged as persisted.
    pub persisted: u64,
    /// This process's writes reported failed (by the server or locally).
    pub failed: u64,
    /// Failures reported for writes a predecessor with the same client name made (restored from
    /// a file store, or unknown to a memory store).
    pub predecessor_failed: u64,
    /// Writes held in the store, not yet acknowledged.
    pub unacknowledged: u64,
    /// Successful logons after the first.
    pub reconnects: u64,
}

/// Stops the client: the connection closes and the actors stop. Unacknowledged messages stay in
/// a file store for the next run; a memory store's are lost, so flush first.
///
/// Before closing, the client proves to the server that it read every failure ack it received
/// (one more `flush`, bounded by about two seconds; see `docs/ACCOUNTING.md`), so that the next
/// process with this client name is not told about them again; nothing arriving after that is
/// reported (the next process hears it). When `Shutdown` resolves, every failure reported
/// before it is in the failed-write subscribers' mailboxes.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A write the server refused, with the stored message it refers to.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct FailedWrite {
    /// The sequence number the failure ack names.
    pub sequence: u64,
    /// Why the write failed, as the server said it.
    pub reason: Reason,
    /// The ack's status.
    pub status: Status,
    /// The stored message (operation, topic, data, correlation id, expiration, SOW key, filter,
    /// keys). `None` when the store held no message with that sequence: nothing is invented.
    pub message: Option<StoredMessage>,
    /// The ack itself.
    pub ack: Header,
    /// When the client decoded the failure ack (for measuring notification latency), or
    /// decided the failure itself.
    pub received_at: std::time::Instant,
    /// Who decided the failure: the server (an ack) or the client itself.
    pub source: FailureSource,
    /// The write was made by an earlier process with the same client name: a file store
    /// restored it, or (with `message: None`) a memory store never knew it. The server re-sends
    /// a failure that no process demonstrably read to the next process, once; a process that
    /// read a failure but stopped before proving it (a crash) may have reported it already.
    pub predecessor: bool,
}

/// Who decided a [`FailedWrite`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureSource {
    /// The server refused the write (a failure ack).
    Server,
    /// The client decided: no ack exists for the write.
    Local(LocalReason),
}

/// Why the client itself reported a write failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LocalReason {
    /// Another connection logged on with this client name; the client stopped. The write had
    /// not been acknowledged, and the server had not processed it when it closed this
    /// connection (it answers everything it processed first), so it was not persisted.
    NameInUse,
    /// The server's last sequence for this client name covers a write this process stored but
    /// never sent (another publisher used the name): it cannot be on the server.
    SequenceConflict {
        /// The last sequence the logon reported.
        server_last: u64,
    },
    /// The write was refused before it was stored (empty topic, too large, store full, the
    /// client gave up or stopped) and nobody awaited the answer (`do_send`): it was never sent.
    /// `sequence` is 0; `message` carries the write.
    Rejected(Arc<PublishError>),
}

impl PartialEq for LocalReason {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (LocalReason::NameInUse, LocalReason::NameInUse) => true,
            (
                LocalReason::SequenceConflict { server_last: a },
                LocalReason::SequenceConflict { server_last: b },
            ) => a == b,
            (LocalReason::Rejected(a), LocalReason::Rejected(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

impl Eq for LocalReason {}

impl FailedWrite {
    /// The operation, if the message was found.
    pub fn operation(&self) -> Option<Operation> {
        self.message.as_ref().map(|m| m.operation)
    }

    /// The topic, if the message was found.
    pub fn topic(&self) -> Option<&str> {
        self.message.as_ref().map(|m| &*m.topic)
    }

    /// The body, if the message was found.
    pub fn data(&self) -> Option<&Bytes> {
        self.message.as_ref().map(|m| &m.data)
    }

    /// The correlation id, if the message was found and had one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.message
            .as_ref()
            .and_then(|m| m.opts().correlation_id.as_deref())
    }
}

/// Why a frame reached the last-chance subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnexpectedKind {
    /// A failed-write ack, with no failed-write subscriber to take it.
    UnhandledFailedWrite,
    /// An ack whose command id nobody is waiting for.
    UnknownCommandId,
    /// Any other frame nothing claimed.
    Unclaimed,
}

/// A frame nothing else handled: the last-chance event. Carries only the frame, no store
/// information.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct UnexpectedMessage {
    /// Why it is here.
    pub kind: UnexpectedKind,
    /// The frame as received.
    pub frame: Frame,
}

/// The connection's life, for subscribers.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// TCP connected to this server.
    Connected {
        /// The server (password masked in `Display`).
        uri: AmpsUri,
    },
    /// Logon accepted.
    LoggedOn {
        /// The last sequence the server had persisted for this client name.
        server_last_sequence: u64,
    },
    /// Replay after logon finished.
    Replayed {
        /// Messages re-sent.
        messages: usize,
    },
    /// The connection ended (it will be retried unless the client stopped or gave up).
    Disconnected {
        /// Why, in words.
        reason: String,
        /// The typed error, when the connection was closed because of one: the client closes a
        /// connection whose server breaks the protocol with [`ConnectError::Protocol`] (bytes
        /// that are not AMPS, a frame over the maximum, a frame cut short, a persisted ack for
        /// a sequence never assigned or going backwards), and reports a server's closing
        /// notice as [`ConnectError::ClosedByServer`] (`slow consumer`,
        /// `memory budget exceeded`, ...). `None` for an ordinary close or reset by the
        /// server, a write error or a heartbeat timeout.
        error: Option<Arc<ConnectError>>,
    },
    /// A connect or logon attempt failed: TCP, TLS ([`ConnectError::Tls`],
    /// [`ConnectError::TlsUnavailable`]), a refused logon ([`ConnectError::LogonRefused`]) or a
    /// timeout. The client backs off and tries again, unless a [`ConnectionEvent::GaveUp`]
    /// follows.
    ///
    /// [`ConnectError::Tls`]: crate::error::ConnectError::Tls
    /// [`ConnectError::TlsUnavailable`]: crate::error::ConnectError::TlsUnavailable
    /// [`ConnectError::LogonRefused`]: crate::error::ConnectError::LogonRefused
    AttemptFailed {
        /// What failed (the URI inside has its password masked).
        error: std::sync::Arc<crate::error::ConnectError>,
    },
    /// The client gave up reconnecting (max retry time, refused credentials, publish gap).
    GaveUp {
        /// Why (typed; its `Display` says it in words).
        reason: crate::error::GiveUpReason,
    },
    /// Another connection logged on with this client name: the client stopped for good (it
    /// does not fight for the name). Every write it had not had acknowledged is reported as a
    /// [`FailedWrite`] with [`LocalReason::NameInUse`]; later writes fail with
    /// [`PublishError::NameInUse`].
    NameInUse {
        /// The client name that was taken over.
        client_name: String,
    },
}
