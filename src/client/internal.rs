//! The typed messages the client's own actors exchange. Users never see these.
//!
//! ```text
//! ClientActor, Publisher --(writes, under the SharedStore lock; Wake once per burst)--> PublishStoreActor
//! ClientActor --StartFlush--> PublishStoreActor
//! SharedStore --(encoded frames, taken by the write task when its Notify fires)--> socket
//! SubscriptionActor --SendFrames--> ConnectionActor
//! ConnectionActor --Inbound--> AckRouter --AckReceived--> PublishStoreActor
//! ConnectionActor --LoggedOn/ConnectionLost--> PublishStoreActor, AckRouter
//! PublishStoreActor --WriteFailed--> HandlerRegistry; AckRouter --Unexpected--> HandlerRegistry
//! PublishStoreActor --ProtocolViolation--> ConnectionActor (an impossible ack: drop and retry)
//! ConnectionActor --NameLost--> AckRouter --NameLost--> PublishStoreActor (after the acks before it)
//! AckRouter --FlushAckReceived--> PublishStoreActor (in order with AckReceived)
//! PublishStoreActor --FlushResolved--> HandlerRegistry (after the failures before it)
//! ```
//! Frames sent on a connection carry the connection's epoch so that bytes meant for a dead
//! connection are never written to its successor before that one has logged on and replayed.

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::client::messages::{ClientStats, FailedWrite, UnexpectedMessage};
use crate::client::store::{MessageOptions, Operation};
use crate::error::{ConnectError, FlushError, ProtocolError};
use crate::protocol::{AckType, Frame, Header};

/// One write to store and send.
#[derive(Debug)]
pub(crate) struct NewWrite {
    pub operation: Operation,
    pub topic: crate::client::topic::Topic,
    pub data: Bytes,
    pub options: Option<Box<MessageOptions>>,
}

/// Bytes holding whole encoded frames, for the connection of `epoch` only.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendFrames {
    pub epoch: u64,
    pub bytes: Bytes,
}

/// The connection `epoch` logged on; the server's last sequence for this client name.
/// The store discards, replays and answers whether the logon stands (publish-gap check).
#[derive(Message)]
#[rtype(result = "Result<usize, ConnectError>")]
pub(crate) struct LoggedOn {
    pub epoch: u64,
    pub server_last: u64,
}

/// The connection `epoch` is gone.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct ConnectionLost {
    pub epoch: u64,
}

/// The connection will not be retried any more.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub(crate) struct GaveUp {
    pub reason: crate::error::GiveUpReason,
}

/// A frame from the server (everything but logon acks and heartbeats).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inbound {
    /// The connection it arrived on.
    pub epoch: u64,
    pub frame: Frame,
    /// When the connection decoded it.
    pub received_at: std::time::Instant,
}

/// A persisted ack, for the store.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AckReceived {
    /// The connection it arrived on (acks are checked per connection).
    pub epoch: u64,
    pub ack: Header,
    pub received_at: std::time::Instant,
}

/// The server broke the protocol on connection `epoch` in a way only the store can see (a
/// persisted ack for a sequence never assigned, or one going backwards): the connection closes
/// it with this error and reconnects; the store keeps every message and replays it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ProtocolViolation {
    pub epoch: u64,
    pub error: ProtocolError,
}

/// Wait for the ack of command `cid`: completes with the first ack of type `completes_on`, or the
/// first ack with status failure. A waiter whose command is replayed with the same cid after a
/// reconnect (a stored sow_delete) survives connection loss; others (a flush, which is re-sent
/// under a new cid) are dropped then, and their receivers see an error.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ExpectAck {
    pub cid: String,
    pub completes_on: AckType,
    pub survives_reconnect: bool,
    pub tx: AckWaiter,
}

/// Who hears about an expected ack.
pub(crate) enum AckWaiter {
    /// A caller waiting on a channel.
    Channel(oneshot::Sender<Header>),
    /// The publish store, as [`FlushAckReceived`] through its mailbox, so that it sees the ack
    /// after every persisted ack the server wrote before it (the read proof depends on it).
    Store,
}

/// The ack of a flush command the store sent.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FlushAckReceived {
    pub cid: String,
    pub ack: Header,
}

/// Another connection logged on with this client name: the client stops. The connection actor
/// sends it through the ack actor, so the store sees it after every ack before it.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct NameLost {
    /// Said on the live connection, after the server answered everything it processed (else:
    /// a logon refused with `name in use`).
    pub on_live_connection: bool,
}

/// A graceful close: resolves once the store proved to the server that it read every failure
/// ack (bounded by the caller).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Closing;

/// Answers once the registry has handed on every event queued before it.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct RegistrySync;

/// Answers a flush through the registry, after the failed writes queued before it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FlushResolved {
    pub tx: oneshot::Sender<Result<crate::client::messages::FlushReport, FlushError>>,
    pub result: Result<crate::client::messages::FlushReport, FlushError>,
}

/// A failed write for the registry to route.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WriteFailed(pub FailedWrite);

/// An unclaimed frame for the registry (last chance).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unexpected(pub UnexpectedMessage);

/// Flush request for the store.
#[derive(Message)]
#[rtype(result = "Result<crate::client::messages::FlushReport, FlushError>")]
pub(crate) struct StartFlush {
    pub deadline: tokio::time::Instant,
}

/// The store's counters (all but reconnects).
#[derive(Message)]
#[rtype(result = "ClientStats")]
pub(crate) struct StoreStats;

/// Resolve `tx` once logged on (at once if already).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct NotifyLoggedOn(pub oneshot::Sender<()>);

/// The connection's count of reconnects.
#[derive(Message)]
#[rtype(result = "u64")]
pub(crate) struct ReconnectCount;

/// Stop an internal actor.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct StopActor;
