//! [`Publisher`]: the fastest way to publish, a cloneable handle that writes into the publish
//! store without a mailbox hop.
//!
//! # The model
//!
//! A [`ClientActor`] message such as [`Publish`] travels through the client actor's mailbox
//! before the store sees it. A `Publisher` skips that: [`Publisher::publish`] validates the
//! write, takes room in the bounded store, assigns its sequence and encodes its frame in one
//! short critical section, on the caller's thread, and wakes the client's actors once per
//! burst to send what accumulated. The store's rules are the same whichever way a write comes
//! in (every path goes through one state machine): writes are sequenced in the order they are
//! made, the store's bounds hold, and every write that resolves `Ok` is later, exactly once,
//! persisted or reported as a [`FailedWrite`](crate::client::FailedWrite).
//!
//! - [`Publisher::publish`] stores the write *when it is called* and returns a future for its
//!   answer. With a memory store and room, the answer is ready at once; with a full store it
//!   waits for room (or fails, per [`FullPolicy`](crate::client::FullPolicy)); with a file
//!   store it waits for the group commit that makes the write durable.
//! - [`Publisher::try_publish`] never waits: a full store is [`PublishError::StoreFull`]
//!   whatever the `FullPolicy`.
//! - [`Publisher::publish_batch`] and [`Publisher::flush`] round it off.
//!
//! A `Publisher` is `Send + Sync` and may be used from any thread or runtime; it keeps the
//! client running while it exists. Once the client has stopped, writes fail with
//! [`PublishError::Stopped`].
//!
//! ```no_run
//! use actix_amps::client::{ClientConfig, GetPublisher, Publish, Topic};
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let client = ClientConfig::new("pub-1")
//!         .uri("tcp://127.0.0.1:9007/amps/json")?
//!         .start()?;
//!     let publisher = client.send(GetPublisher).await?;
//!     let orders = Topic::new("orders");
//!     for i in 0..1000 {
//!         publisher.publish(Publish::new(&orders, format!(r#"{{"id":{i}}}"#))).await?;
//!     }
//!     let report = publisher.flush(std::time::Duration::from_secs(5)).await?;
//!     assert!(report.all_persisted());
//!     Ok(())
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::{FlushReport, Publish, PublishBatch, PublishFlush};
use super::store::shared::{Reply, SharedStore, Writes};
use super::store::state::WriteMode;
use super::store::Operation;
use super::ClientActor;
use crate::error::{FlushError, PublishError};

/// Encoded bytes waiting for the connection above which an awaited publish lets other tasks
/// run once before it resolves: a producer on the client's own thread that never waits would
/// otherwise keep the burst from being sent until it stops.
const YIELD_AT_OUTBOUND: usize = 64 * 1024;

/// A handle that publishes straight into the client's publish store (see the module docs).
/// Get one with [`GetPublisher`]; clone it freely.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<SharedStore>,
    client: Addr<ClientActor>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(shared: Arc<SharedStore>, client: Addr<ClientActor>) -> Publisher {
        Publisher { shared, client }
    }

    /// Publishes one message: stored (sequenced, encoded) now, in call order; the future
    /// resolves to its sequence number (`None` without a store) once the store holds it, or
    /// to why it was refused (never stored, never sent). See the module docs for when it
    /// waits.
    pub fn publish(&self, publish: Publish) -> Written<Option<u64>> {
        self.write(Writes::One(super::new_write(Operation::Publish, publish)))
    }

    /// Like [`Publisher::publish`], as a `delta_publish`.
    pub fn delta_publish(&self, publish: Publish) -> Written<Option<u64>> {
        self.write(Writes::One(super::new_write(
            Operation::DeltaPublish,
            publish,
        )))
    }

    /// Publishes a batch, stored whole or not at all; resolves to its first and last sequence.
    pub fn publish_batch(&self, batch: PublishBatch) -> Written<Option<(u64, u64)>> {
        self.write(Writes::Many(super::batch_writes(batch)))
    }

    /// Publishes one message if the store has room now, without waiting: `Err` when it does
    /// not ([`PublishError::StoreFull`], whatever the `FullPolicy`) or the write is refused;
    /// a refused write is never stored and never sent.
    ///
    /// With a file store the write is durable, and sent, after the next group commit; if that
    /// commit fails it is reported as a [`FailedWrite`](crate::client::FailedWrite) with
    /// [`LocalReason::Rejected`](crate::client::LocalReason::Rejected), as for `do_send` (and
    /// `Ok(None)` is returned if that happened within this call).
    pub fn try_publish(&self, publish: Publish) -> Result<Option<u64>, PublishError> {
        let (result, _) = self
            .shared
            .try_submit(super::new_write(Operation::Publish, publish));
        result.map(|r| r.map(|(first, _)| first))
    }

    /// [`PublishFlush`] through this handle's client: resolves once every write stored before
    /// it is persisted or reported failed.
    pub async fn flush(&self, timeout: Duration) -> Result<FlushReport, FlushError> {
        self.client
            .send(PublishFlush { timeout })
            .await
            .unwrap_or(Err(FlushError::Stopped))
    }

    fn write<R: FromRange>(&self, writes: Writes) -> Written<R> {
        let mut rx = None;
        let submitted = self
            .shared
            .submit(writes, None, WriteMode::Awaited, (), |()| {
                let (tx, r) = oneshot::channel();
                rx = Some(r);
                Reply::Range(tx)
            });
        let state = match (submitted.answered, rx) {
            (Some((result, ())), _) => WrittenState::Ready {
                result: Some(result),
                yield_first: submitted.outbound >= YIELD_AT_OUTBOUND,
            },
            (None, Some(rx)) => WrittenState::Waiting(rx),
            // Unreachable: a pending answer always attached a reply.
            (None, None) => WrittenState::Ready {
                result: Some(Err(PublishError::Stopped)),
                yield_first: false,
            },
        };
        Written {
            state,
            _answer: std::marker::PhantomData,
        }
    }
}

/// The answer of a write made through a [`Publisher`]: the write is already stored when this
/// exists; awaiting it gives the result.
#[must_use = "the write is stored either way; await this to learn whether it was refused"]
pub struct Written<R> {
    state: WrittenState,
    _answer: std::marker::PhantomData<fn() -> R>,
}

enum WrittenState {
    Ready {
        result: Option<super::store::state::WriteResult>,
        yield_first: bool,
    },
    Waiting(oneshot::Receiver<super::store::state::WriteResult>),
}

/// The shapes a write's answer takes (a single sequence, or first and last).
pub trait FromRange: Sized {
    /// From the first and last sequence stored.
    fn from_range(range: Option<(u64, u64)>) -> Self;
}

impl FromRange for Option<u64> {
    fn from_range(range: Option<(u64, u64)>) -> Self {
        range.map(|(first, _)| first)
    }
}

impl FromRange for Option<(u64, u64)> {
    fn from_range(range: Option<(u64, u64)>) -> Self {
        range
    }
}

impl<R: FromRange> Future for Written<R> {
    type Output = Result<R, PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            WrittenState::Ready {
                result,
                yield_first,
            } => {
                if std::mem::take(yield_first) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let result = result.take().unwrap_or(Err(PublishError::Stopped));
                Poll::Ready(result.map(R::from_range))
            }
            WrittenState::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(PublishError::Stopped)).map(R::from_range)),
        }
    }
}

impl<R> Unpin for Written<R> {}

/// Asks the client for a [`Publisher`] handle.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Publisher")]
pub struct GetPublisher;

impl Handler<GetPublisher> for ClientActor {
    type Result = MessageResult<GetPublisher>;

    fn handle(&mut self, _: GetPublisher, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(Publisher::new(self.shared.clone(), ctx.address()))
    }
}
