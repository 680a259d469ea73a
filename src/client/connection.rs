//! `ConnectionActor`: the socket, logon, heartbeats, and reconnecting.
//!
//! The model: the actor is always in one of three states, *down* (waiting to reconnect),
//! *logging on* (TCP up, logon sent, waiting for its ack) and *up* (logged on). Each TCP
//! connection gets a new **epoch**; bytes the store sends are tagged with the epoch they were
//! meant for and dropped if that connection is gone, so nothing reaches a new connection before
//! its logon and replay.
//!
//! - **Connecting**: TCP, then for `tcps://` the TLS handshake (both within the connect
//!   timeout; see [`crate::tls`]); a `tcps://` URI never falls back to plaintext. Plain and TLS
//!   connections are split into a read half and a write half and share everything below.
//! - **Writing** happens in a task that owns the socket's write half (`write_task.rs`): it
//!   takes this actor's frames from a channel and the publish store's encoded frames straight
//!   from the store's buffer, gathering everything waiting into one vectored write: no copy
//!   of the bodies, no actor hop for a publish, one system call per burst.
//! - **Reading** is a `FramedRead` added to the actor as a stream, yielding every complete
//!   frame of a read at once (`inbound.rs`), behind the gate the subscription side uses for
//!   flow control. Deliveries, SOW results and acks of subscription commands go, a read at a
//!   time, to the subscription actor; the logon ack and heartbeats are handled here; every
//!   other frame goes to the ack actor.
//! - **Logon** sends client name, `version` `<crate version>:rust`, credentials from the URI or
//!   the config (never logged), the message type and the `ack_conflation` option; the server's
//!   last sequence comes from `bm` (`<hash>|<seq>|`), falling back to `s`; a logon ack with
//!   neither (or neither parseable) means last sequence 0, so the whole store is replayed and
//!   the server's duplicate check drops what it already has. The store then discards, replays
//!   and goes live. A last sequence above `u64::MAX / 2` is a protocol error (no numbering could
//!   follow it).
//! - **Protocol violations** (undecodable bytes, a frame over `max_frame`, a frame cut short,
//!   and the impossible acks the store detects) close the connection with a typed
//!   [`ConnectError::Protocol`], reported in [`ConnectionEvent::Disconnected`], and reconnect
//!   as for any drop. The store is untouched by the offending frame and replays after logon.
//! - **Disconnects** (end of stream, a reset, a broken pipe) are reported as
//!   [`ConnectionEvent::Disconnected`] and retried, never as protocol errors. A closing notice
//!   from the server (`protocol::notice`) says why it closed: a refused logon while logging on,
//!   [`ConnectError::ClosedByServer`] after.
//! - **Heartbeats**: after logon the actor sends `start,<secs>`, a `beat` whenever it has sent
//!   nothing for an interval, and treats 2 x interval without any frame from the server as a
//!   dead connection. It never answers the server's beats (PROTOCOL.md section 9: no storms).
//! - **Name in use**: a logon refused with `name in use`, or a `name in use` failure ack on a
//!   live connection (the embedded server sends one, with the logon's command id, before it
//!   closes a connection whose name another logon took), stops the client for good
//!   ([`ConnectionEvent::NameInUse`]); it does not fight for the name.
//! - **Reconnect**: a dropped connection is retried on the same server first; a failed attempt
//!   moves to the next URI, with per-server backoff (`backoff.rs`). With a maximum
//!   retry time, the actor gives up after that long without a logon, and pending flushes fail.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::stream::StreamExt;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::client::ack_router::AckRouter;
use crate::client::backoff::Reconnects;
use crate::client::config::ClientConfig;
use crate::client::handlers::HandlerRegistry;
use crate::client::inbound::{for_subscriptions, FrameBatchCodec, Gated, ReadGate, READ_BUFFER};
use crate::client::internal::{
    ConnectionLost, GaveUp, Inbound, LoggedOn, NameLost, NotifyLoggedOn, ProtocolViolation,
    ReconnectCount, SendFrames, StopActor,
};
use crate::client::messages::ConnectionEvent;
use crate::client::store::actor::PublishStoreActor;
use crate::client::store::shared::SharedStore;
use crate::client::subscriptions::actor::{InboundBatch, SubsLoggedOn, SubscriptionActor};
use crate::client::write_task::{write_loop, StoreOutlet};
use crate::error::{ConnectError, GiveUpReason, ProtocolError, TlsError};
use crate::protocol::{
    closing_reason, decode_frame, AckTypes, AmpsUri, Command, Frame, Header, Reason, Status,
};

/// Highest last sequence a logon ack may report: far above any real sequence (about
/// `now_ms * 1_000_000`, 1.8e18 today), far enough below `u64::MAX` that numbering can continue.
const MAX_LOGON_SEQUENCE: u64 = u64::MAX / 2;

/// A connection that stays up this long clears the protocol-violation streak.
const VIOLATION_STREAK_RESET: Duration = Duration::from_secs(10);

/// The logon's `version`: `<crate version>:rust`.
pub const CLIENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), ":rust");

enum State {
    Down,
    LoggingOn { cid: String },
    Up,
}

/// The connection actor (see the module docs).
pub struct ConnectionActor {
    config: Arc<ClientConfig>,
    store: Addr<PublishStoreActor>,
    /// The publish store's state, whose outbound buffer each connection's write task takes.
    shared: Arc<SharedStore>,
    router: Addr<AckRouter>,
    registry: Addr<HandlerRegistry>,
    /// The subscription side: gets deliveries, SOW results and its acks in batches.
    subscriptions: Addr<SubscriptionActor>,
    /// Holds reading while a subscriber is behind (shared with the subscription actor).
    gate: std::rc::Rc<ReadGate>,
    state: State,
    epoch: u64,
    server: usize,
    reconnects: Reconnects,
    writer: Option<mpsc::UnboundedSender<Bytes>>,
    tasks: Vec<SpawnHandle>,
    last_sent: Instant,
    last_received: Instant,
    down_since: Instant,
    logons: u64,
    /// When the current connection logged on.
    up_since: Instant,
    /// Protocol violations in a row (see `violation`).
    violation_streak: u32,
    stopping: bool,
    gave_up: bool,
    /// The last failed attempt's error, for the reason of giving up.
    last_error: Option<Arc<ConnectError>>,
    /// Callers of `WaitLoggedOn` waiting for the next logon.
    logon_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// A connected socket, before it is split.
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why a connect attempt failed before the logon.
enum ConnectFailure {
    Io(std::io::Error),
    Tls(std::io::Error),
}

/// One read's frames (raw, unparsed), tagged with their connection; `None` when the socket
/// closed.
type ReadItem = (u64, Option<Result<Vec<Bytes>, ProtocolError>>);

/// The write task reports how the socket's write half ended.
#[derive(Message)]
#[rtype(result = "()")]
struct WriterEnded {
    epoch: u64,
    error: Option<std::io::Error>,
}

impl ConnectionActor {
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        store: Addr<PublishStoreActor>,
        shared: Arc<SharedStore>,
        router: Addr<AckRouter>,
        registry: Addr<HandlerRegistry>,
        subscriptions: Addr<SubscriptionActor>,
        gate: std::rc::Rc<ReadGate>,
    ) -> Self {
        let servers = config.uris.len();
        ConnectionActor {
            config,
            store,
            shared,
            router,
            registry,
            subscriptions,
            gate,
            state: State::Down,
            epoch: 0,
            server: 0,
            reconnects: Reconnects::new(servers),
            writer: None,
            tasks: Vec::new(),
            last_sent: Instant::now(),
            last_received: Instant::now(),
            down_since: Instant::now(),
            logons: 0,
            up_since: Instant::now(),
            violation_streak: 0,
            stopping: false,
            gave_up: false,
            last_error: None,
            logon_waiters: Vec::new(),
        }
    }

    fn uri(&self) -> &AmpsUri {
        &self.config.uris[self.server % self.config.uris.len()]
    }

    fn write(&mut self, bytes: Bytes) {
        if let Some(w) = &self.writer {
            self.last_sent = Instant::now();
            // A closed channel means the write task ended; WriterEnded handles that.
            let _ = w.send(bytes);
        }
    }

    fn write_frame(&mut self, header: Header) {
        self.write(Frame::header_only(header).to_bytes());
    }

    /// Starts the next attempt after the server's backoff delay (or gives up).
    fn schedule_connect(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.gave_up {
            return;
        }
        if let Some(max) = self.config.reconnect.max_retry_time {
            if self.down_since.elapsed() >= max {
                self.give_up(GiveUpReason::MaxRetryTime {
                    max,
                    last_attempt: self.last_error.clone(),
                });
                return;
            }
        }
        let delay = self
            .reconnects
            .delay(&self.config.reconnect.backoff, self.server);
        tracing::debug!(server = %self.uri(), ?delay, "connecting");
        let epoch = self.epoch;
        if delay.is_zero() {
            self.connect(ctx);
        } else {
            ctx.run_later(delay, move |act, ctx| {
                if act.epoch == epoch && matches!(act.state, State::Down) {
                    act.connect(ctx);
                }
            });
        }
    }

    /// Another connection has this client name (the server said `name in use`, at logon or by
    /// closing this connection): stop for good instead of taking the name back, which would
    /// replay into a sequence space another process now writes. The store hears it through
    /// the ack actor, after every ack of this connection, and reports what is unacknowledged.
    fn name_lost(&mut self, ctx: &mut Context<Self>) {
        let client_name = self.config.client_name.clone();
        tracing::error!(client = %client_name, "client name in use by another connection; stopping");
        self.gave_up = true;
        let was_up = matches!(self.state, State::Up);
        self.router.do_send(NameLost {
            on_live_connection: was_up,
        });
        self.close(ctx);
        if was_up {
            self.registry.do_send(ConnectionEvent::Disconnected {
                reason: "client name in use by another connection".into(),
                error: None,
            });
        }
        self.registry
            .do_send(ConnectionEvent::NameInUse { client_name });
    }

    fn give_up(&mut self, reason: GiveUpReason) {
        tracing::error!(%reason, "giving up on connecting");
        self.gave_up = true;
        self.registry.do_send(ConnectionEvent::GaveUp {
            reason: reason.clone(),
        });
        self.store.do_send(GaveUp { reason });
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.epoch += 1;
        let epoch = self.epoch;
        let uri = self.uri().clone();
        // `tcps://` is TLS or nothing: no configuration or no usable name is a failed attempt.
        let tls = if uri.tls {
            let Some(tls) = &self.config.tls else {
                let err = ConnectError::TlsUnavailable {
                    uri: uri.to_string(),
                };
                self.attempt_failed(err, ctx);
                return;
            };
            match ServerName::try_from(uri.host.clone()) {
                Ok(name) => Some((tls.connector(), name)),
                Err(_) => {
                    let err = ConnectError::Tls {
                        uri: uri.to_string(),
                        source: TlsError::InvalidServerName {
                            host: uri.host.clone(),
                        },
                    };
                    self.attempt_failed(err, ctx);
                    return;
                }
            }
        } else {
            None
        };
        // The timeout covers the TCP connect and the TLS handshake.
        let timeout = self.config.connect_timeout;
        let authority = uri.authority();
        let fut = async move {
            tokio::time::timeout(timeout, async move {
                let tcp = TcpStream::connect(authority)
                    .await
                    .map_err(ConnectFailure::Io)?;
                // Latency matters more than packet count: frames are already batched.
                let _ = tcp.set_nodelay(true);
                match tls {
                    None => Ok(Transport::Plain(tcp)),
                    Some((connector, name)) => connector
                        .connect(name, tcp)
                        .await
                        .map(|s| Transport::Tls(Box::new(s)))
                        .map_err(ConnectFailure::Tls),
                }
            })
            .await
        };
        ctx.spawn(fut::wrap_future::<_, Self>(fut).map(move |res, act, ctx| {
            if act.epoch != epoch || act.stopping {
                return;
            }
            let err = match res {
                Ok(Ok(transport)) => return act.connected(transport, uri, ctx),
                Ok(Err(ConnectFailure::Io(source))) => ConnectError::Io {
                    uri: uri.to_string(),
                    source,
                },
                Ok(Err(ConnectFailure::Tls(e))) => ConnectError::Tls {
                    uri: uri.to_string(),
                    source: TlsError::Handshake(e),
                },
                Err(_) => ConnectError::ConnectTimeout {
                    uri: uri.to_string(),
                },
            };
            act.attempt_failed(err, ctx);
        }));
    }

    /// Starts the read stream and the write task on the two halves of a connection.
    fn attach<R, W>(&mut self, read: R, write: W, ctx: &mut Context<Self>)
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let epoch = self.epoch;
        let (tx, rx) = mpsc::unbounded_channel();
        self.writer = Some(tx);
        let outlet = StoreOutlet {
            shared: self.shared.clone(),
            ready: self.shared.open_writer(),
            epoch,
        };
        let writer = ctx.spawn(
            fut::wrap_future::<_, Self>(write_loop(write, rx, outlet))
                .map(move |error, act, ctx| act.writer_ended(WriterEnded { epoch, error }, ctx)),
        );
        let frames = FramedRead::with_capacity(
            read,
            FrameBatchCodec::new(self.config.max_frame),
            READ_BUFFER,
        );
        let frames = Gated::new(frames, self.gate.clone())
            .map(move |r| (epoch, Some(r)))
            .chain(futures_util::stream::once(async move { (epoch, None) }));
        let reader = ctx.add_stream(frames);
        self.tasks = vec![writer, reader];
    }

    fn connected(&mut self, transport: Transport, uri: AmpsUri, ctx: &mut Context<Self>) {
        let epoch = self.epoch;
        match transport {
            // Owned halves: no lock between reading and writing, vectored writes straight to
            // the socket.
            Transport::Plain(stream) => {
                let (read, write) = stream.into_split();
                self.attach(read, write, ctx);
            }
            Transport::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                self.attach(read, write, ctx);
            }
        }
        self.last_received = Instant::now();
        tracing::info!(server = %uri, "connected");
        self.registry
            .do_send(ConnectionEvent::Connected { uri: uri.clone() });

        let cid = format!("logon-{epoch}");
        let user = self.config.user.clone().or_else(|| uri.user.clone());
        let password = self
            .config
            .password
            .clone()
            .or_else(|| uri.password.clone());
        self.write_frame(Header {
            command: Some(Command::Logon),
            cid: Some(cid.clone()),
            client_name: Some(self.config.client_name.clone()),
            user_id: user,
            message_type: Some(uri.message_type.clone()),
            ack_type: AckTypes::PROCESSED,
            version: Some(CLIENT_VERSION.to_owned()),
            password,
            options: self.config.logon_options(),
            ..Header::default()
        });
        self.state = State::LoggingOn { cid };
        ctx.run_later(self.config.logon_timeout, move |act, ctx| {
            if act.epoch == epoch && matches!(act.state, State::LoggingOn { .. }) {
                let err = ConnectError::LogonTimeout {
                    uri: act.uri().to_string(),
                };
                act.attempt_failed(err, ctx);
            }
        });
    }

    /// Closes the current socket, if any, and tells the store and the ack actor.
    fn close(&mut self, ctx: &mut Context<Self>) {
        for h in self.tasks.drain(..) {
            ctx.cancel_future(h);
        }
        self.writer = None;
        let was = std::mem::replace(&mut self.state, State::Down);
        if !matches!(was, State::Down) {
            self.store.do_send(ConnectionLost { epoch: self.epoch });
            self.router.do_send(ConnectionLost { epoch: self.epoch });
            self.subscriptions
                .do_send(ConnectionLost { epoch: self.epoch });
        }
        self.gate.set_logged_on(false);
        // Invalidate timers and stragglers of this connection.
        self.epoch += 1;
    }

    /// An attempt (connect or logon) failed: move to the next server and back off.
    fn attempt_failed(&mut self, err: ConnectError, ctx: &mut Context<Self>) {
        tracing::warn!(error = %err, "connection attempt failed");
        let was_connected = !matches!(self.state, State::Down);
        self.close(ctx);
        let reason = err.to_string();
        let err = Arc::new(err);
        self.last_error = Some(err.clone());
        self.registry
            .do_send(ConnectionEvent::AttemptFailed { error: err.clone() });
        if was_connected {
            self.registry.do_send(ConnectionEvent::Disconnected {
                reason,
                error: Some(err),
            });
        }
        self.reconnects.failed(self.server);
        self.server = (self.server + 1) % self.config.uris.len();
        self.schedule_connect(ctx);
    }

    /// An established connection dropped: retry the same server first.
    fn dropped(&mut self, reason: String, ctx: &mut Context<Self>) {
        if !matches!(self.state, State::Up) {
            let err = ConnectError::ClosedDuringLogon {
                uri: self.uri().to_string(),
            };
            self.attempt_failed(err, ctx);
            return;
        }
        tracing::warn!(server = %self.uri(), %reason, "disconnected");
        self.close(ctx);
        self.down_since = Instant::now();
        self.registry.do_send(ConnectionEvent::Disconnected {
            reason,
            error: None,
        });
        self.schedule_connect(ctx);
    }

    /// The server sent a closing notice (`protocol::notice`): while logging on that is a
    /// refused logon; after, a disconnect with the server's reason.
    fn closed_by_server(&mut self, reason: Reason, ctx: &mut Context<Self>) {
        let uri = self.uri().to_string();
        if !matches!(self.state, State::Up) {
            self.attempt_failed(ConnectError::LogonRefused { uri, reason }, ctx);
            return;
        }
        let err = ConnectError::ClosedByServer { uri, reason };
        tracing::warn!(error = %err, "disconnected");
        self.close(ctx);
        self.down_since = Instant::now();
        self.registry.do_send(ConnectionEvent::Disconnected {
            reason: err.to_string(),
            error: Some(Arc::new(err)),
        });
        self.schedule_connect(ctx);
    }

    /// The server broke the protocol: close with the typed error and reconnect (the same
    /// server first when it had logged on, as for any drop; the next server during logon).
    fn violation(&mut self, source: ProtocolError, ctx: &mut Context<Self>) {
        let err = ConnectError::Protocol {
            uri: self.uri().to_string(),
            source,
        };
        tracing::error!(error = %err, "closing the connection");
        if !matches!(self.state, State::Up) {
            self.attempt_failed(err, ctx);
            return;
        }
        // A server that breaks the protocol after every logon must not get a tight reconnect
        // and full replay loop: back off by how many violations came in a row (a connection
        // that stays up for a while clears the streak).
        if self.up_since.elapsed() >= VIOLATION_STREAK_RESET {
            self.violation_streak = 0;
        }
        self.violation_streak = self.violation_streak.saturating_add(1);
        self.reconnects.penalize(self.server, self.violation_streak);
        self.close(ctx);
        self.down_since = Instant::now();
        self.registry.do_send(ConnectionEvent::Disconnected {
            reason: err.to_string(),
            error: Some(Arc::new(err)),
        });
        self.schedule_connect(ctx);
    }

    fn writer_ended(&mut self, msg: WriterEnded, ctx: &mut Context<Self>) {
        if msg.epoch != self.epoch {
            return;
        }
        let reason = match msg.error {
            Some(e) => format!("write failed: {e}"),
            None => "write half closed".to_owned(),
        };
        self.dropped(reason, ctx);
    }

    fn logon_ack(&mut self, ack: Header, ctx: &mut Context<Self>) {
        let uri = self.uri().to_string();
        if matches!(ack.status, Some(Status::Failure) | Some(Status::Retry)) {
            if ack.reason == Some(Reason::NameInUse) {
                self.name_lost(ctx);
                return;
            }
            let reason = ack.reason.unwrap_or(Reason::Other("logon refused".into()));
            let auth = reason == Reason::AuthFailure;
            let err = ConnectError::LogonRefused { uri, reason };
            if auth && self.config.reconnect.stop_on_auth_failure {
                // `give_up` logs the refusal once, as the reason.
                self.close(ctx);
                let err = Arc::new(err);
                self.registry
                    .do_send(ConnectionEvent::AttemptFailed { error: err.clone() });
                self.give_up(GiveUpReason::AuthFailure(err));
                return;
            }
            self.attempt_failed(err, ctx);
            return;
        }
        let server_last = ack
            .bookmark
            .as_deref()
            .and_then(|bm| bm.split('|').nth(1))
            .and_then(|s| s.parse::<u64>().ok())
            .or(ack.seq)
            .unwrap_or(0);
        if server_last > MAX_LOGON_SEQUENCE {
            self.violation(
                ProtocolError::LastSequenceOutOfRange { last: server_last },
                ctx,
            );
            return;
        }
        self.state = State::Up;
        self.up_since = Instant::now();
        for waiter in self.logon_waiters.drain(..) {
            let _ = waiter.send(());
        }
        self.logons += 1;
        self.reconnects.reset();
        self.last_error = None;
        tracing::info!(server = %uri, server_last, server_version = ack.version.as_deref(), "logged on");
        self.registry.do_send(ConnectionEvent::LoggedOn {
            server_last_sequence: server_last,
        });
        self.gate.set_logged_on(true);
        self.subscriptions.do_send(SubsLoggedOn {
            epoch: self.epoch,
            server_version: ack.version.clone(),
            server: uri.clone(),
        });
        if let Some(interval) = self.config.heartbeat {
            self.start_heartbeat(interval, ctx);
        }
        let epoch = self.epoch;
        let registry = self.registry.clone();
        ctx.spawn(
            fut::wrap_future::<_, Self>(self.store.send(LoggedOn { epoch, server_last })).map(
                move |res, act, ctx| match res {
                    Ok(Ok(messages)) => registry.do_send(ConnectionEvent::Replayed { messages }),
                    Ok(Err(err)) => {
                        tracing::error!(error = %err, "logon rejected by the publish store");
                        if act.epoch == epoch {
                            act.close(ctx);
                        }
                        act.give_up(GiveUpReason::store_refused(err));
                    }
                    Err(_) => {}
                },
            ),
        );
    }

    fn start_heartbeat(&mut self, interval: Duration, ctx: &mut Context<Self>) {
        let secs = interval.as_secs().max(1);
        let interval = Duration::from_secs(secs);
        self.write_frame(Header {
            command: Some(Command::Heartbeat),
            options: Some(format!("start,{secs}")),
            ..Header::default()
        });
        let epoch = self.epoch;
        let handle = ctx.run_interval(interval / 4, move |act, ctx| {
            if act.epoch != epoch {
                return;
            }
            if act.last_received.elapsed() >= interval * 2 {
                act.dropped(
                    format!(
                        "no frame from the server for {:?} (heartbeat)",
                        interval * 2
                    ),
                    ctx,
                );
                return;
            }
            if act.last_sent.elapsed() >= interval {
                act.write_frame(Header {
                    command: Some(Command::Heartbeat),
                    options: Some("beat".into()),
                    ..Header::default()
                });
            }
        });
        self.tasks.push(handle);
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.down_since = Instant::now();
        self.schedule_connect(ctx);
    }
}

impl ConnectionActor {
    /// One parsed frame that is not the subscription side's.
    fn frame(&mut self, epoch: u64, frame: Frame, ctx: &mut Context<Self>) {
        if let Some(reason) = closing_reason(&frame.header) {
            self.closed_by_server(reason.clone(), ctx);
            return;
        }
        match &self.state {
            State::LoggingOn { cid }
                if frame.header.command == Some(Command::Ack)
                    && frame.header.cid.as_deref() == Some(cid.as_str()) =>
            {
                self.logon_ack(frame.header, ctx);
            }
            _ if frame.header.command == Some(Command::Heartbeat) => {}
            State::Up
                if frame.header.command == Some(Command::Ack)
                    && frame.header.status == Some(Status::Failure)
                    && frame.header.reason == Some(Reason::NameInUse) =>
            {
                self.name_lost(ctx);
            }
            _ => self.router.do_send(Inbound {
                epoch,
                frame,
                received_at: std::time::Instant::now(),
            }),
        }
    }

    /// Hands frames to the subscription actor (one message for the lot).
    fn hand_to_subscriptions(&mut self, epoch: u64, frames: &mut Vec<Bytes>) {
        if frames.is_empty() {
            return;
        }
        self.gate.batch_sent();
        self.subscriptions.do_send(InboundBatch {
            epoch,
            frames: std::mem::take(frames),
        });
    }
}

impl StreamHandler<ReadItem> for ConnectionActor {
    fn handle(&mut self, (epoch, item): ReadItem, ctx: &mut Context<Self>) {
        if epoch != self.epoch {
            return;
        }
        self.last_received = Instant::now();
        let frames = match item {
            Some(Ok(frames)) => frames,
            // A reset is the server going away, not a broken protocol.
            Some(Err(e)) if e.is_disconnect() => {
                self.dropped(format!("connection lost: {e}"), ctx);
                return;
            }
            Some(Err(e)) => {
                self.violation(e, ctx);
                return;
            }
            None => {
                self.dropped("server closed the connection".into(), ctx);
                return;
            }
        };
        // Deliveries, SOW results and subscription acks go to the subscription actor in one
        // batch; the rest is parsed here, in arrival order (a frame for this side first sends
        // the subscription frames before it, so a close it causes comes after them).
        let mut subs = Vec::new();
        for raw in frames {
            if self.epoch != epoch {
                return;
            }
            if matches!(self.state, State::Up) && for_subscriptions(&raw) {
                subs.push(raw);
                continue;
            }
            self.hand_to_subscriptions(epoch, &mut subs);
            match decode_frame(raw) {
                Ok(frame) => self.frame(epoch, frame, ctx),
                Err(e) => {
                    self.violation(e, ctx);
                    return;
                }
            }
        }
        if self.epoch == epoch {
            self.hand_to_subscriptions(epoch, &mut subs);
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The tagged `None` item already reported the close; the actor keeps running.
    }
}

impl Handler<SendFrames> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: SendFrames, _: &mut Context<Self>) {
        if msg.epoch == self.epoch && matches!(self.state, State::Up) {
            self.write(msg.bytes);
        }
    }
}

impl Handler<ProtocolViolation> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: ProtocolViolation, ctx: &mut Context<Self>) {
        // A violation seen late, after its connection already ended, changes nothing.
        if msg.epoch == self.epoch && !matches!(self.state, State::Down) {
            self.violation(msg.error, ctx);
        }
    }
}

impl Handler<NotifyLoggedOn> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: NotifyLoggedOn, _: &mut Context<Self>) {
        if matches!(self.state, State::Up) {
            let _ = msg.0.send(());
        } else {
            self.logon_waiters.retain(|w| !w.is_closed());
            self.logon_waiters.push(msg.0);
        }
    }
}

impl Handler<ReconnectCount> for ConnectionActor {
    type Result = u64;

    fn handle(&mut self, _: ReconnectCount, _: &mut Context<Self>) -> u64 {
        self.logons.saturating_sub(1)
    }
}

impl Handler<StopActor> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        self.stopping = true;
        // Let the write task finish what is queued, then shut the socket down.
        self.writer = None;
        ctx.stop();
    }
}
