//! The actor client.
//!
//! # The model
//!
//! Users talk to one actor, the [`ClientActor`], which they start with
//! [`ClientConfig::start`]. Behind it, four actors each own one concern and exchange typed
//! messages (see `docs/ARCHITECTURE.md` in the repository):
//!
//! - the **publish store actor** numbers every write, keeps it until the server acknowledges
//!   it, sends it, replays it after a reconnect, answers flushes and applies backpressure;
//! - the **connection actor** owns the socket: connect, logon, heartbeats, reconnect;
//! - the **ack actor** classifies every frame from the
//!   server: persisted acks go to the store as `AckReceived`, acks for waited-on commands
//!   complete them, the rest is unclaimed;
//! - the **handler registry** delivers failed writes to failed-write subscribers, or with none
//!   to last-chance subscribers, or with neither logs a warning.
//!
//! A write resolves when the store holds it, never later: [`Publish`] returns the sequence
//! number at once. Its fate is reported afterwards: persisted (it leaves the store, counted in
//! [`ClientStats`]) or failed (a [`FailedWrite`] enriched with the stored message). A
//! [`PublishFlush`] resolves when everything before it has one of those two fates.
//!
//! # Example
//!
//! A publisher that hears about every failed write: the server here refuses writes to
//! `secret.*` (`not entitled`), so the second message fails after it was stored, and its
//! failure arrives as a [`FailedWrite`] carrying the stored message.
//!
//! ```
//! use std::time::Duration;
//! use actix::prelude::*;
//! use actix_amps::client::{
//!     ClientConfig, FailedWrite, Publish, PublishFlush, SubscribeFailedWrites, WaitLoggedOn,
//! };
//! use actix_amps::server::{Server, ServerConfig};
//! use tokio::sync::mpsc;
//!
//! /// Forwards every failed write to a channel.
//! struct OnFailure(mpsc::UnboundedSender<FailedWrite>);
//! impl Actor for OnFailure {
//!     type Context = Context<Self>;
//! }
//! impl Handler<FailedWrite> for OnFailure {
//!     type Result = ();
//!     fn handle(&mut self, failed: FailedWrite, _: &mut Context<Self>) {
//!         let _ = self.0.send(failed);
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let server = Server::start(ServerConfig::new(dir.path()).deny_write("^secret"))?;
//!
//! actix::System::new().block_on(async {
//!     let client = ClientConfig::new("pub-1").uri(&server.uri())?.start()?;
//!     let (tx, mut failures) = mpsc::unbounded_channel();
//!     client.send(SubscribeFailedWrites(OnFailure(tx).start().recipient())).await??;
//!     assert!(client.send(WaitLoggedOn::new(Duration::from_secs(10))).await?);
//!
//!     let ok = client.send(Publish::new("orders", r#"{"id":1}"#)).await??;
//!     let refused = client.send(Publish::new("secret.orders", r#"{"id":2}"#)).await??;
//!     let report = client.send(PublishFlush { timeout: Duration::from_secs(10) }).await??;
//!     println!("stored {ok:?} and {refused:?}; flush: {report:?}");
//!
//!     let failed = tokio::time::timeout(Duration::from_secs(10), failures.recv())
//!         .await?
//!         .expect("a failed write");
//!     assert_eq!(Some(failed.sequence), refused);
//!     assert_eq!(failed.reason.to_string(), "not entitled");
//!     let message = failed.message.expect("the stored message");
//!     assert_eq!((&*message.topic, &message.data[..]), ("secret.orders", &br#"{"id":2}"#[..]));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! Inside a plain tokio runtime, start the client within a `tokio::task::LocalSet` (actix actors
//! run on the current thread); `examples/tokio_localset.rs` shows it.

mod ack_router;
mod backoff;
mod body;
mod config;
mod connection;
mod handlers;
mod inbound;
mod internal;
mod messages;
mod publisher;
// The store is not pluggable: `Store` and the two stores are reachable for the command-line
// tool (`actix-amps store --verify/--repair`) and the tests, not part of the documented API.
// Users pick a store with [`StoreKind`].
#[doc(hidden)]
pub mod store;
pub mod subscriptions;
mod topic;
mod write_task;

use std::sync::Arc;

use actix::prelude::*;

pub use crate::tls::TlsClientConfig;
pub use body::Body;
pub use config::{Backoff, ClientConfig, FullPolicy, ReconnectPolicy, StoreKind};
pub use connection::CLIENT_VERSION;
pub use messages::*;
pub use publisher::{FromRange, GetPublisher, Publisher, Written};
pub use store::{FsyncPolicy, MessageOptions, MessageRef, Operation, StoredMessage};
pub use subscriptions::*;
pub use topic::Topic;

use crate::error::{ClientStopped, FlushError, PublishError, SowDeleteError, StartError};
use crate::protocol::{AckType, Status};
use ack_router::AckRouter;
use connection::ConnectionActor;
use handlers::HandlerRegistry;
use internal::{
    AckWaiter, Closing, ExpectAck, NewWrite, NotifyLoggedOn, ReconnectCount, RegistrySync,
    StartFlush, StopActor, StoreStats,
};
use store::actor::PublishStoreActor;
use store::shared::{Reply, SharedStore, Writes};
use store::state::{Limits, WriteMode};
use store::{FileStore, FileStoreConfig, MemoryStore, Store};

/// The facade actor users message. Cloneable [`Addr`]s of it can be shared freely.
pub struct ClientActor {
    store: Addr<PublishStoreActor>,
    /// The store's state machine: writes enter it here, without a hop to the store actor.
    shared: Arc<SharedStore>,
    connection: Addr<ConnectionActor>,
    router: Addr<AckRouter>,
    registry: Addr<HandlerRegistry>,
    subscriptions: Addr<subscriptions::actor::SubscriptionActor>,
    next_cid: u64,
    has_store: bool,
    close_timeout: std::time::Duration,
}

impl ClientConfig {
    /// Opens the store and starts the client's actors on the current actix arbiter (inside an
    /// actix `System`, or a tokio `LocalSet`). Connecting starts at once, in the background:
    /// writes made before the logon are kept in the store and sent once logged on.
    ///
    /// Fails at once with [`StartError::NoUri`] without a server, and with
    /// [`StartError::Store`] when the file store cannot be opened (another client holds it, or
    /// its files are damaged).
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
    /// use actix_amps::client::{GetStats, StoreKind, WaitLoggedOn};
    /// use actix_amps::error::StartError;
    ///
    /// assert!(matches!(ClientConfig::new("no-server").start(), Err(StartError::NoUri)));
    ///
    /// let store = tempfile::tempdir()?;
    /// let client = ClientConfig::new("durable-pub")
    ///     .uri(&server.uri())?
    ///     .store(StoreKind::file(store.path())) // survives a crash of this process
    ///     .start()?;
    /// client.send(Publish::new("orders", r#"{"id":1}"#)).await??;
    /// assert!(client.send(WaitLoggedOn::new(Duration::from_secs(10))).await?);
    /// client.send(PublishFlush { timeout: Duration::from_secs(10) }).await??;
    /// assert_eq!(client.send(GetStats).await??.persisted, 1);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok(()) }
    /// ```
    pub fn start(self) -> Result<Addr<ClientActor>, StartError> {
        self.start_here()
    }

    /// Like [`ClientConfig::start`], but runs the client's actors on `arbiter` (another
    /// thread), so that the application's own work on the calling thread never delays acks and
    /// failure notifications.
    ///
    /// The stores are opened on the calling thread (so their errors are returned here); the
    /// actors are then created on `arbiter`, and the returned address queues messages until
    /// they run. It never waits for the arbiter, so `arbiter` may also be the current one
    /// (that is the same as [`ClientConfig::start`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use actix_amps::client::{ClientConfig, Publish, PublishFlush};
    /// # let dir = tempfile::tempdir()?;
    /// # let server = actix_amps::server::Server::start(actix_amps::server::ServerConfig::new(dir.path()))?;
    /// actix::System::new().block_on(async {
    ///     let arbiter = actix::Arbiter::new();
    ///     let client = ClientConfig::new("start-in-doc")
    ///         .uri(&server.uri())?
    ///         .start_in(&arbiter.handle())?;
    ///     client.send(Publish::new("orders", r#"{"id":1}"#)).await??;
    ///     client.send(PublishFlush { timeout: Duration::from_secs(5) }).await??;
    ///     arbiter.stop();
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_in(self, arbiter: &actix::ArbiterHandle) -> Result<Addr<ClientActor>, StartError> {
        let opened = self.open()?;
        // A stopped arbiter drops what it is given: find out before handing it the client.
        if !arbiter.spawn_fn(|| {}) {
            return Err(StartError::ArbiterStopped);
        }
        let client_name = opened.config.client_name.clone();
        Ok(ClientActor::start_in_arbiter(arbiter, move |ctx| {
            crate::metrics::watch_client(&ctx.address(), &client_name);
            opened.into_actor()
        }))
    }

    fn start_here(self) -> Result<Addr<ClientActor>, StartError> {
        let opened = self.open()?;
        let client_name = opened.config.client_name.clone();
        let client = opened.into_actor().start();
        crate::metrics::watch_client(&client, &client_name);
        Ok(client)
    }

    /// Everything that can fail: the configuration's checks and the stores' files.
    fn open(self) -> Result<Opened, StartError> {
        if self.uris.is_empty() {
            return Err(StartError::NoUri);
        }
        let store: Option<Box<dyn Store>> = match &self.store {
            StoreKind::None => None,
            StoreKind::Memory => Some(Box::new(MemoryStore::new())),
            StoreKind::File { dir, fsync } => {
                let mut cfg = FileStoreConfig::new(dir.clone());
                cfg.fsync = *fsync;
                Some(Box::new(FileStore::open(cfg)?))
            }
        };
        let bookmarks = subscriptions::bookmark_store_open(&self.bookmark_store)?;
        Ok(Opened {
            config: self,
            store,
            bookmarks,
        })
    }
}

/// A configuration whose stores are open: what [`ClientConfig::start`] and
/// [`ClientConfig::start_in`] turn into actors on the arbiter they run on.
struct Opened {
    config: ClientConfig,
    store: Option<Box<dyn Store>>,
    bookmarks: subscriptions::bookmark_store::BookmarkStore,
}

impl Opened {
    /// Starts the client's actors on the current arbiter and returns the facade (not yet
    /// started: the caller starts it here or in another arbiter's closure).
    fn into_actor(self) -> ClientActor {
        let Opened {
            config,
            store,
            bookmarks,
        } = self;
        let limits = Limits {
            max_messages: config.max_messages,
            max_bytes: config.max_bytes,
            when_full: config.when_full,
            max_frame: config.max_frame,
            error_on_publish_gap: config.error_on_publish_gap,
        };
        let config_has_store = store.is_some();
        let close_timeout = config.close_timeout;
        let config = Arc::new(config);
        tracing::info!(
            client_name = %config.client_name,
            servers = %config.uris.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            store = ?config.store,
            "starting client"
        );
        // The actors know each other's addresses before any of them runs.
        let store_ctx = Context::<PublishStoreActor>::new();
        let conn_ctx = Context::<ConnectionActor>::new();
        let router_ctx = Context::<AckRouter>::new();
        let subs_ctx = Context::<subscriptions::actor::SubscriptionActor>::new();
        let gate = std::rc::Rc::new(inbound::ReadGate::default());
        let registry = HandlerRegistry::default().start();
        let (store_addr, conn_addr, router_addr) = (
            store_ctx.address(),
            conn_ctx.address(),
            router_ctx.address(),
        );
        let router = router_ctx.run(AckRouter::new(store_addr.clone(), registry.clone()));
        let shared = Arc::new(SharedStore::new(
            PublishStoreActor::initial_state(store, limits),
            store_addr.clone(),
        ));
        let store_addr = store_ctx.run(PublishStoreActor::new(
            shared.clone(),
            conn_addr.clone(),
            router_addr,
            registry.clone(),
        ));
        let subs = subs_ctx.run(subscriptions::actor::SubscriptionActor::new(
            bookmarks,
            conn_ctx.address(),
            registry.clone(),
            gate.clone(),
        ));
        let connection = conn_ctx.run(ConnectionActor::new(
            config,
            store_addr.clone(),
            shared.clone(),
            router.clone(),
            registry.clone(),
            subs.clone(),
            gate,
        ));
        ClientActor {
            store: store_addr,
            shared,
            connection,
            router,
            registry,
            subscriptions: subs,
            next_cid: 0,
            has_store: config_has_store,
            close_timeout,
        }
    }
}

impl Actor for ClientActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.connection.do_send(StopActor);
        self.store.do_send(StopActor);
        self.router.do_send(StopActor);
        self.registry.do_send(StopActor);
        self.subscriptions.do_send(StopActor);
    }
}

pub(crate) fn new_write(operation: Operation, p: Publish) -> NewWrite {
    let options = (p.correlation_id.is_some() || p.expiration.is_some() || p.sow_key.is_some())
        .then(|| {
            Box::new(MessageOptions {
                correlation_id: p.correlation_id,
                expiration: p.expiration,
                sow_key: p.sow_key,
                filter: None,
                sow_keys: None,
            })
        });
    NewWrite {
        operation,
        topic: p.topic,
        data: p.data,
        options,
    }
}

pub(crate) fn batch_writes(batch: PublishBatch) -> Vec<NewWrite> {
    let op = if batch.delta {
        Operation::DeltaPublish
    } else {
        Operation::Publish
    };
    batch
        .messages
        .into_iter()
        .map(|p| new_write(op, p))
        .collect()
}

fn sow_delete_write(topic: Topic, selector: SowDeleteSelector) -> NewWrite {
    let mut options = MessageOptions::default();
    let data = match selector {
        SowDeleteSelector::Filter(f) => {
            options.filter = Some(f);
            bytes::Bytes::new()
        }
        SowDeleteSelector::Keys(k) => {
            options.sow_keys = Some(k);
            bytes::Bytes::new()
        }
        SowDeleteSelector::Data(d) => d,
    };
    let options = (options != MessageOptions::default()).then(|| Box::new(options));
    NewWrite {
        operation: Operation::SowDelete,
        topic,
        data,
        options,
    }
}

/// An awaited write whose answer is wanted as a future (a sow_delete that waits for stats).
fn store_writes(
    shared: &SharedStore,
    writes: Writes,
    cid: Option<String>,
) -> impl std::future::Future<Output = Result<Option<(u64, u64)>, PublishError>> + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let submitted = shared.submit(writes, cid, WriteMode::Awaited, tx, Reply::Range);
    let now = submitted.answered.map(|(r, _)| r);
    async move {
        match now {
            Some(r) => r,
            None => rx.await.unwrap_or(Err(PublishError::Stopped)),
        }
    }
}

/// The answer to a write: decided when actix hands the response over, because only then is it
/// known whether anybody awaits it. The write enters the store's state machine right there
/// (one hop: the client actor's mailbox). With `send`, the answer goes into the caller's own
/// channel, at once or when the store decides (no task is spawned); with `do_send` (no one to
/// tell), any refusal is reported as a [`FailedWrite`] with [`LocalReason::Rejected`] instead
/// of vanishing.
pub struct WriteResponse<R> {
    shared: Arc<SharedStore>,
    writes: Writes,
    map: fn(Option<(u64, u64)>) -> R,
}

impl<R> WriteResponse<R> {
    fn new(shared: &Arc<SharedStore>, writes: Writes, map: fn(Option<(u64, u64)>) -> R) -> Self {
        WriteResponse {
            shared: shared.clone(),
            writes,
            map,
        }
    }
}

impl<M, R> actix::dev::MessageResponse<ClientActor, M> for WriteResponse<R>
where
    M: Message<Result = Result<R, PublishError>>,
    R: Send + 'static,
{
    fn handle(
        self,
        _: &mut Context<ClientActor>,
        tx: Option<actix::dev::OneshotSender<M::Result>>,
    ) {
        let WriteResponse {
            shared,
            writes,
            map,
        } = self;
        let Some(tx) = tx else {
            shared.submit(writes, None, WriteMode::Reported, (), |()| {
                Reply::Mapped(Box::new(drop))
            });
            return;
        };
        let submitted = shared.submit(writes, None, WriteMode::Awaited, tx, move |tx| {
            Reply::Mapped(Box::new(move |r: store::state::WriteResult| {
                let _ = tx.send(r.map(map));
            }))
        });
        if let Some((result, tx)) = submitted.answered {
            let _ = tx.send(result.map(map));
        }
    }
}

fn first_seq(r: Option<(u64, u64)>) -> Option<u64> {
    r.map(|(s, _)| s)
}

impl Handler<Publish> for ClientActor {
    type Result = WriteResponse<Option<u64>>;

    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) -> Self::Result {
        WriteResponse::new(
            &self.shared,
            Writes::One(new_write(Operation::Publish, msg)),
            first_seq,
        )
    }
}

impl Handler<DeltaPublish> for ClientActor {
    type Result = WriteResponse<Option<u64>>;

    fn handle(&mut self, msg: DeltaPublish, _: &mut Context<Self>) -> Self::Result {
        WriteResponse::new(
            &self.shared,
            Writes::One(new_write(Operation::DeltaPublish, msg.0)),
            first_seq,
        )
    }
}

impl Handler<PublishBatch> for ClientActor {
    type Result = WriteResponse<Option<(u64, u64)>>;

    fn handle(&mut self, msg: PublishBatch, _: &mut Context<Self>) -> Self::Result {
        WriteResponse::new(&self.shared, Writes::Many(batch_writes(msg)), |r| r)
    }
}

impl Handler<SowDelete> for ClientActor {
    type Result = WriteResponse<Option<u64>>;

    fn handle(&mut self, msg: SowDelete, _: &mut Context<Self>) -> Self::Result {
        WriteResponse::new(
            &self.shared,
            Writes::One(sow_delete_write(msg.topic, msg.selector)),
            first_seq,
        )
    }
}

impl Handler<SowDeleteAndWait> for ClientActor {
    type Result = ResponseFuture<Result<SowDeleteStats, SowDeleteError>>;

    fn handle(&mut self, msg: SowDeleteAndWait, _: &mut Context<Self>) -> Self::Result {
        self.next_cid += 1;
        let cid = format!("sd-{}", self.next_cid);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Registered before the command can be sent, so the ack cannot arrive first.
        self.router.do_send(ExpectAck {
            cid: cid.clone(),
            completes_on: AckType::Stats,
            // With a store the delete is replayed under this cid; without one it is not.
            survives_reconnect: self.has_store,
            tx: AckWaiter::Channel(tx),
        });
        let stored = store_writes(
            &self.shared,
            Writes::One(sow_delete_write(msg.topic.into(), msg.selector)),
            Some(cid),
        );
        let timeout = msg.timeout;
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            tokio::time::timeout_at(deadline, stored)
                .await
                .map_err(|_| SowDeleteError::Timeout)??;
            let ack = tokio::time::timeout_at(deadline, rx)
                .await
                .map_err(|_| SowDeleteError::Timeout)?
                .map_err(|_| SowDeleteError::Disconnected)?;
            if ack.status == Some(Status::Failure) {
                let reason = ack
                    .reason
                    .unwrap_or(crate::protocol::Reason::Other(String::new()));
                return Err(SowDeleteError::Failed { reason });
            }
            Ok(SowDeleteStats {
                matches: ack.matches.unwrap_or(0),
                records_deleted: ack.records_deleted.unwrap_or(0),
                topic_matches: ack.topic_matches.unwrap_or(0),
            })
        })
    }
}

impl Handler<PublishFlush> for ClientActor {
    type Result = ResponseFuture<Result<FlushReport, FlushError>>;

    fn handle(&mut self, msg: PublishFlush, _: &mut Context<Self>) -> Self::Result {
        let deadline = tokio::time::Instant::now() + msg.timeout;
        let req = self.store.send(StartFlush { deadline });
        Box::pin(async move { req.await.unwrap_or(Err(FlushError::Stopped)) })
    }
}

impl Handler<SubscribeFailedWrites> for ClientActor {
    type Result = ResponseFuture<Result<SubscriptionId, ClientStopped>>;

    fn handle(&mut self, msg: SubscribeFailedWrites, _: &mut Context<Self>) -> Self::Result {
        let req = self.registry.send(msg);
        Box::pin(async move { req.await.unwrap_or(Err(ClientStopped)) })
    }
}

impl Handler<SubscribeUnexpected> for ClientActor {
    type Result = ResponseFuture<Result<SubscriptionId, ClientStopped>>;

    fn handle(&mut self, msg: SubscribeUnexpected, _: &mut Context<Self>) -> Self::Result {
        let req = self.registry.send(msg);
        Box::pin(async move { req.await.unwrap_or(Err(ClientStopped)) })
    }
}

impl Handler<SubscribeConnectionEvents> for ClientActor {
    type Result = ResponseFuture<Result<SubscriptionId, ClientStopped>>;

    fn handle(&mut self, msg: SubscribeConnectionEvents, _: &mut Context<Self>) -> Self::Result {
        let req = self.registry.send(msg);
        Box::pin(async move { req.await.unwrap_or(Err(ClientStopped)) })
    }
}

impl Handler<Unsubscribe> for ClientActor {
    type Result = ResponseFuture<Result<bool, ClientStopped>>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        let req = self.registry.send(msg);
        Box::pin(async move { req.await.unwrap_or(Err(ClientStopped)) })
    }
}

impl Handler<GetStats> for ClientActor {
    type Result = ResponseFuture<Result<ClientStats, ClientStopped>>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let stats = self.store.send(StoreStats);
        let reconnects = self.connection.send(ReconnectCount);
        Box::pin(async move {
            let mut s = stats.await.map_err(|_| ClientStopped)?;
            s.reconnects = reconnects.await.map_err(|_| ClientStopped)?;
            Ok(s)
        })
    }
}

impl Handler<WaitLoggedOn> for ClientActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: WaitLoggedOn, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.connection.do_send(NotifyLoggedOn(tx));
        Box::pin(async move { matches!(tokio::time::timeout(msg.timeout, rx).await, Ok(Ok(()))) })
    }
}

impl Handler<Shutdown> for ClientActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let closing = self.store.send(Closing);
        let registry = self.registry.clone();
        let close_timeout = self.close_timeout;
        Box::pin(
            fut::wrap_future::<_, Self>(async move {
                let _ = tokio::time::timeout(close_timeout, closing).await;
                // Every failure reported before the close is in the subscribers' mailboxes
                // when Shutdown returns.
                let _ = registry.send(RegistrySync).await;
            })
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}
