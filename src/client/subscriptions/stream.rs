//! A subscription as a `futures::Stream`, for code that is not an actor.
//!
//! [`SubscriptionStream::channel`] gives a `Recipient<Deliveries>` to subscribe with and the
//! stream of its events. A small actor behind the recipient puts each batch into a bounded
//! channel and only reports the batch handled once it is in: with one batch in flight per
//! subscription, a stream that is not read fills the channel, the subscription's queue
//! fills behind it, and its [`BehindPolicy`](super::BehindPolicy) applies, exactly as for a slow
//! actor. Dropping the stream stops the actor; the subscription then ends (the client
//! unsubscribes when it finds the subscriber gone).
//!
//! ```
//! # use std::time::Duration;
//! # use actix_amps::client::{ClientConfig, Publish, PublishFlush};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let server = actix_amps::server::Server::start(
//! #     actix_amps::server::ServerConfig::new(dir.path()).sow("orders", &["/id"]),
//! # )?;
//! # actix::System::new().block_on(async {
//! # let client = ClientConfig::new("stream-doc").uri(&server.uri())?.start()?;
//! use actix_amps::client::subscriptions::{Subscribe, SubscriptionEvent, SubscriptionStream};
//! use futures_util::StreamExt;
//!
//! let (recipient, mut events) = SubscriptionStream::channel(16);
//! client.send(Subscribe::new("orders", recipient)).await??;
//! client.send(Publish::new("orders", r#"{"id":1}"#)).await??;
//! // Every wait is bounded: a stream with nothing to deliver waits forever.
//! while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
//!     if let SubscriptionEvent::Message(m) = event {
//!         println!("{}", String::from_utf8_lossy(m.data_slice()));
//!         break;
//!     }
//! }
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::messages::{Deliveries, SubscriptionEvent};

/// The events of one subscription, as a stream (module docs).
pub struct SubscriptionStream {
    rx: mpsc::Receiver<Vec<SubscriptionEvent>>,
    current: VecDeque<SubscriptionEvent>,
    /// Keeps the forwarding actor alive as long as the stream.
    _forwarder: Addr<Forwarder>,
}

impl SubscriptionStream {
    /// A recipient to subscribe with, and the stream of what it receives; at most `batches`
    /// batches wait unread (at least 1). Call it inside an actix system (it starts an actor).
    pub fn channel(batches: usize) -> (Recipient<Deliveries>, SubscriptionStream) {
        let (tx, rx) = mpsc::channel(batches.max(1));
        let forwarder = Forwarder { tx }.start();
        (
            forwarder.clone().recipient(),
            SubscriptionStream {
                rx,
                current: VecDeque::new(),
                _forwarder: forwarder,
            },
        )
    }
}

impl Stream for SubscriptionStream {
    type Item = SubscriptionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(e) = self.current.pop_front() {
                return Poll::Ready(Some(e));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.current = batch.into(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Puts batches into the channel; a batch counts as handled once it is in.
struct Forwarder {
    tx: mpsc::Sender<Vec<SubscriptionEvent>>,
}

impl Actor for Forwarder {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Forwarder {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, batch: Deliveries, _: &mut Context<Self>) -> Self::Result {
        let tx = self.tx.clone();
        Box::pin(
            fut::wrap_future::<_, Self>(async move { tx.send(batch.events).await.is_ok() }).map(
                |sent, _, ctx| {
                    // The stream is gone: stop, so the client sees the subscriber gone.
                    if !sent {
                        ctx.stop();
                    }
                },
            ),
        )
    }
}
