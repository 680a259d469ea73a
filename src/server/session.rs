//! One client connection: logon, the write path, acks, flush and heartbeats.
//!
//! The connection is a TCP stream or, on a TLS listener, a TLS stream whose handshake the
//! accept loop has already completed; the session does not know which.
//!
//! A session is one tokio task owning its socket. Each turn of its loop waits for the first of:
//! bytes from the client (decoded into as many frames as are buffered, then handled as a batch
//! under one state lock), the conflation timer (drain the durable prefix of the ack queue), a
//! durability change while a flush waits, a heartbeat timer, or a hook (kill, freeze, stall,
//! shutdown), or the socket becoming writable while output waits. Everything to send is
//! appended to one output buffer and written without blocking once per turn: a session never
//! stops reading or reacting to hooks because its peer stopped reading, and a peer whose unsent
//! output passes `max_unsent_bytes` is disconnected.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::Decoder;

use super::acks::AckQueue;
use super::admission::Ticket;
use super::budget::{fit, Account};
use super::closing::{notice, OutFrames};
use super::core::{fnv1a, ConnEntry, Shared, State, Write, LOG_BACKLOG_LIMIT};
use super::subscriptions::conn::SubscriberSide;
use super::subscriptions::feed::FEED_BACKLOG_LIMIT;
use super::txlog::RecordKind;
use crate::error::{is_disconnect, ProtocolError};
use crate::protocol::{
    encode_parts, AckType, AckTypes, AmpsCodec, Command, Frame, Header, Reason, Status,
};

/// The version the server reports in the logon ack.
pub const SERVER_VERSION: &str = "5.3.5.0";

/// Extra frame room above the maximum body, so a slightly oversized body gets a
/// `message too large` ack instead of a closed connection.
const HEADER_ROOM: usize = 64 * 1024;

/// Why a session ended when the server stops.
const STOPPING: &str = "server stopping";

/// Why a session ended when the client closed its side.
const CLIENT_CLOSED: &str = "closed by the client";

/// How long closing a connection may wait to send its last bytes (TLS close_notify).
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The input buffer of a connection that has not logged on (it grows for a logon frame up to
/// `max_logon_frame`), and of one that has.
const PENDING_INPUT: usize = 4 * 1024;
const LOGGED_ON_INPUT: usize = 64 * 1024;

/// How much input a graceful close reads (and discards) while waiting for the peer's own
/// close, before it gives up on a peer that keeps sending: enough for the rest of a large
/// message after logon; before logon a real client has sent nothing but its logon.
const CLOSE_DRAIN_LIMIT: usize = 8 << 20;
const PENDING_CLOSE_DRAIN_LIMIT: usize = 64 << 10;

/// How long a logon waits for the log to catch up before giving up.
const LOGON_BARRIER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the loop does after handling input.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Cached facts about a topic (so the hot path does not run regexes per message).
#[derive(Clone)]
struct TopicInfo {
    valid: Result<(), Reason>,
    is_sow: bool,
}

struct Session {
    shared: Arc<Shared>,
    conn_id: u64,
    peer: String,
    client_name: Option<String>,
    out: BytesMut,
    acks: AckQueue,
    conflation: Duration,
    next_ack_at: Option<Instant>,
    heartbeat: Option<Duration>,
    last_recv: Instant,
    last_sent: Instant,
    /// LSN of this connection's last accepted write.
    my_lsn: u64,
    topics: HashMap<String, TopicInfo>,
    /// Subscriptions and queries of this connection.
    subs: SubscriberSide,
    /// This connection's admission slot (pending until its logon arrives).
    ticket: Ticket,
    /// The frame boundary at the front of `out`.
    out_frames: OutFrames,
}

/// Registers a connection and runs it until it closes. `stream` is a TCP stream, or a TLS
/// stream whose handshake has completed.
pub(crate) async fn run<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr, ticket: Ticket)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let kill = Arc::new(Notify::new());
    shared.conns().insert(
        conn_id,
        ConnEntry {
            client_name: None,
            kill: kill.clone(),
        },
    );
    let peer = peer.to_string();
    let now = Instant::now();
    let mut s = Session {
        conflation: shared.settings.ack_conflation,
        shared: shared.clone(),
        conn_id,
        peer,
        client_name: None,
        out: BytesMut::with_capacity(8 * 1024),
        acks: AckQueue::default(),
        next_ack_at: None,
        heartbeat: None,
        last_recv: now,
        last_sent: now,
        my_lsn: 0,
        topics: HashMap::new(),
        subs: SubscriberSide::new(shared.clone(), conn_id),
        ticket,
        out_frames: OutFrames::default(),
    };
    let account = shared.budget.open();
    // Halves, so the loop can wait to write (a peer slow to read) while it goes on reading.
    let (mut rd, mut wr) = tokio::io::split(stream);
    let why = s.run(&mut rd, &mut wr, &kill, &account).await;
    tracing::debug!(peer = %s.peer, client = s.client_name.as_deref().unwrap_or(""), "connection closed: {why}");
    shared.conns().remove(&conn_id);
    // Failure acks written to a socket are not yet delivered: bytes the client has not read
    // die with the connection if it is reset. They count as delivered only after a graceful
    // close: what is queued goes out, then TLS close_notify or TCP FIN, then the client's own
    // close, read to the end (closing with unread input would make the kernel send a reset).
    // A stopping server, a peer that does not close in time, or an error leaves them
    // unreported, so the next logon of this client name re-sends them (the client ignores a
    // failure it has already reported).
    // Only a close the server starts can show that the client read everything: when the
    // client closed first (or the socket failed), what it read is unknown.
    let stopping = why == STOPPING || *shared.shutdown.borrow();
    if stopping || why == CLIENT_CLOSED || why == "read error" || why == "write error" {
        return;
    }
    let drain_limit = if s.client_name.is_some() {
        CLOSE_DRAIN_LIMIT
    } else {
        PENDING_CLOSE_DRAIN_LIMIT
    };
    let graceful = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if !s.out.is_empty() {
            wr.write_all(&s.out).await?;
            wr.flush().await?;
        }
        wr.shutdown().await?;
        let mut sink = vec![0u8; 16 * 1024];
        let mut drained = 0;
        while drained <= drain_limit {
            match rd.read(&mut sink).await? {
                0 => return Ok::<(), std::io::Error>(()),
                n => drained += n,
            }
        }
        // A peer still streaming at us (a hog, an oversized frame) is not waited for.
        Err(std::io::ErrorKind::InvalidData.into())
    })
    .await;
    if matches!(graceful, Ok(Ok(()))) {
        s.failures_delivered();
    }
}

impl Session {
    /// The loop. Output is written without blocking the loop: what the socket does not take
    /// at once waits in `out`, written by the select's write branch while reading goes on, and
    /// a peer that lets it grow past `max_unsent_bytes` is disconnected.
    async fn run<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        kill: &Notify,
        account: &Account,
    ) -> &'static str
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Bytes handed to the writer that it may still buffer (TLS) until a flush.
        let mut unflushed = false;
        let mut inbuf = BytesMut::with_capacity(PENDING_INPUT);
        let displaced = self.ticket.displaced();
        let logon_timeout = self.shared.settings.logon_timeout;
        let frame_timeout = self.shared.settings.frame_timeout;
        let mut logon_deadline = Instant::now() + logon_timeout;
        // When the frame now arriving began (`None` between frames).
        let mut frame_started: Option<Instant> = None;
        let mut durable_rx = self.shared.durable.subscribe();
        let mut stall_rx = self.shared.stall.subscribe();
        let mut freeze_rx = self.shared.freeze.subscribe();
        let mut shutdown_rx = self.shared.shutdown.subscribe();
        let outbox = self.subs.outbox();
        let mut stream_durable_rx = self.shared.durable.subscribe();
        let far = || Instant::now() + Duration::from_secs(86_400);
        loop {
            if *shutdown_rx.borrow_and_update() {
                return STOPPING;
            }
            let frozen = *freeze_rx.borrow_and_update();
            let stalled = *stall_rx.borrow_and_update();
            let live = !frozen;
            let ack_at = self.next_ack_at.filter(|_| live && !stalled);
            let hb = self.heartbeat.filter(|_| live);
            let (beat_at, dead_at) = match hb {
                Some(i) => (self.last_sent + i, self.last_recv + 2 * i),
                None => (far(), far()),
            };
            let pending = self.client_name.is_none();
            let frame_deadline = frame_started.map(|t| t + frame_timeout);
            // Biased, with reading last: under a constant stream of writes the ack timer and
            // the heartbeat timers still get their turn.
            tokio::select! {
                biased;
                _ = kill.notified() => return "dropped by the server",
                _ = shutdown_rx.changed() => continue,
                _ = account.evicted() => return self.close_for(Reason::MemoryBudgetExceeded, account),
                _ = displaced.notified(), if pending => return self.close_for(Reason::TooManyPendingLogons, account),
                _ = sleep_until(logon_deadline), if live && pending => return self.close_for(Reason::LogonTimeout, account),
                _ = sleep_until(frame_deadline.unwrap_or_else(far)), if live && frame_deadline.is_some() => {
                    return self.close_for(Reason::ReadTimeout, account);
                }
                _ = freeze_rx.changed() => {
                    // Silence while frozen is the server's, not the client's.
                    let now = Instant::now();
                    self.last_recv = now;
                    logon_deadline = logon_deadline.max(now + logon_timeout);
                    frame_started = frame_started.map(|_| now);
                    continue;
                }
                _ = stall_rx.changed() => {
                    if !*stall_rx.borrow() && !frozen {
                        self.drain(*durable_rx.borrow_and_update());
                    }
                }
                _ = durable_rx.changed(), if live && !stalled && self.acks.has_flush() => {
                    let durable = *durable_rx.borrow_and_update();
                    if self.acks.flush_ready(durable) {
                        self.drain(durable);
                    }
                }
                _ = sleep_until(ack_at.unwrap_or_else(far)), if ack_at.is_some() => {
                    self.drain(*durable_rx.borrow_and_update());
                }
                r = write_or_flush(wr, &self.out), if live && (unflushed || !self.out.is_empty()) => {
                    match r {
                        Ok(0) => unflushed = false,
                        Ok(n) => {
                            self.out_frames.advance(&mut self.out, n);
                            self.last_sent = Instant::now();
                            unflushed = true;
                        }
                        Err(_) => return "write error",
                    }
                }
                _ = sleep_until(beat_at), if hb.is_some() => {
                    let h = Header { command: Some(Command::Heartbeat), options: Some("beat".into()), ..Header::default() };
                    encode_parts(&h, b"", &mut self.out);
                }
                _ = sleep_until(dead_at), if hb.is_some() => {
                    tracing::info!(peer = %self.peer, client = self.client_name.as_deref().unwrap_or(""), "closing connection: heartbeat timeout");
                    return "heartbeat timeout";
                }
                _ = outbox.ready(), if live => {
                    if let Err(waiting) = self.subs.outbox_ready(&mut self.out) {
                        return self.slow_subscriber(waiting);
                    }
                }
                step = self.subs.next_step(&mut stream_durable_rx),
                    if live && self.subs.wants_to_write(self.out.len()) => {
                    if let Err(why) = self.subs.apply(step, &mut self.out) {
                        return why;
                    }
                }
                r = rd.read_buf(&mut inbuf), if live => {
                    match r {
                        Ok(0) => return CLIENT_CLOSED,
                        Err(e) if is_disconnect(&e) => {
                            tracing::debug!(peer = %self.peer, error = %e, "client disconnected");
                            return "read error";
                        }
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, error = %e, "read failed");
                            return "read error";
                        }
                        Ok(_) => {}
                    }
                    self.last_recv = Instant::now();
                    let mut frames = VecDeque::new();
                    loop {
                        let mut codec = AmpsCodec::new(self.frame_limit(frames.is_empty()));
                        match codec.decode(&mut inbuf) {
                            Ok(Some(f)) => frames.push_back(f),
                            Ok(None) => break,
                            Err(e) => return self.bad_frame(&e),
                        }
                    }
                    frame_started = match (inbuf.is_empty(), frames.is_empty()) {
                        (true, _) => None,
                        (false, false) => Some(Instant::now()),
                        (false, true) => frame_started.or_else(|| Some(Instant::now())),
                    };
                    let flow = self.handle(frames).await;
                    let durable = *durable_rx.borrow();
                    if !stalled && self.acks.flush_ready(durable) {
                        self.drain(durable);
                    }
                    if flow == Flow::Close {
                        // The refusal's ack goes out in the graceful close that follows.
                        return "closed after a refused command";
                    }
                    if let Err(why) = self.send_out(wr, &mut unflushed) {
                        return why;
                    }
                    let (log_backlog, feed_backlog) = {
                        let st = self.shared.lock();
                        (st.log_buf.len(), st.feed.backlog())
                    };
                    // Backpressure: let the fan-out catch up before reading more writes.
                    if feed_backlog > FEED_BACKLOG_LIMIT {
                        let target = self.my_lsn;
                        let mut fanned = self.shared.subs.fanned.subscribe();
                        let _ = tokio::time::timeout(Duration::from_secs(5), async {
                            fanned.wait_for(|d| *d >= target).await.is_ok()
                        })
                        .await;
                    }
                    // Backpressure: let the log writer catch up before reading more.
                    if log_backlog > LOG_BACKLOG_LIMIT {
                        let target = self.my_lsn;
                        let _ = tokio::time::timeout(Duration::from_secs(5), async {
                            durable_rx.wait_for(|d| *d >= target).await.is_ok()
                        })
                        .await;
                        // The wait was the server's: a frame arriving meanwhile is not late.
                        frame_started = frame_started.map(|_| Instant::now());
                    }
                }
            }
            if !*freeze_rx.borrow() {
                // Deliveries move to the output once it is empty, so a second round when the
                // first one emptied it.
                for _ in 0..2 {
                    if let Err(waiting) = self.subs.move_outbox(&mut self.out) {
                        return self.slow_subscriber(waiting);
                    }
                    if let Err(why) = self.send_out(wr, &mut unflushed) {
                        return why;
                    }
                    if !self.subs.outbox_waiting() || !self.out.is_empty() {
                        break;
                    }
                }
            }
            let input = if self.client_name.is_some() {
                LOGGED_ON_INPUT
            } else {
                PENDING_INPUT
            };
            fit(&mut inbuf, input);
            fit(&mut self.out, 0);
            account.charge(inbuf.len() + self.out.len() + self.subs.buffered());
        }
    }

    /// Counts and logs a subscriber whose deliveries waiting passed the limit; returns why the
    /// connection closes.
    fn slow_subscriber(&self, waiting: usize) -> &'static str {
        self.shared
            .slow_consumer_disconnects
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            peer = %self.peer,
            client = self.client_name.as_deref().unwrap_or(""),
            waiting,
            max_unsent_bytes = self.shared.settings.max_unsent_bytes,
            "closing connection: slow subscriber (deliveries waiting over the limit)"
        );
        "slow subscriber: deliveries over the limit"
    }

    /// The largest frame to accept next: the logon frame limit for the first frame before
    /// logon, the message size limit (with room for the header) otherwise.
    fn frame_limit(&self, first_of_batch: bool) -> usize {
        let settings = &self.shared.settings;
        if self.client_name.is_none() && first_of_batch {
            settings.max_logon_frame
        } else {
            settings.max_message_size.saturating_add(HEADER_ROOM)
        }
    }

    /// Closes for bytes that are not a frame or a frame over the limit, with a notice.
    fn bad_frame(&mut self, e: &ProtocolError) -> &'static str {
        self.ticket.closing();
        let closes = self.ticket.closes();
        closes.bad_frames.fetch_add(1, Ordering::Relaxed);
        if self.client_name.is_some() {
            tracing::warn!(peer = %self.peer, error = %e, "closing connection: bad frame");
        } else {
            // Before logon anyone can send garbage at any rate: not worth a warning each.
            tracing::debug!(peer = %self.peer, error = %e, "closing connection before logon: bad frame");
        }
        let reason = match e {
            ProtocolError::FrameTooLarge { .. } => Reason::MessageTooLarge,
            _ => Reason::BadFrame,
        };
        notice(&mut self.out, reason);
        "protocol error"
    }

    /// Closes because the peer held on too long or took too much: counts and logs why, and
    /// queues a closing notice for the graceful close that follows.
    fn close_for(&mut self, reason: Reason, account: &Account) -> &'static str {
        self.ticket.closing();
        let closes = self.ticket.closes();
        let client = self.client_name.as_deref().unwrap_or("");
        let peer = &self.peer;
        match reason {
            Reason::MemoryBudgetExceeded => tracing::warn!(
                %peer, client, buffered = account.charged(), max_buffered_bytes = account.limit(),
                "closing connection: it holds the most of the server's buffers, which passed their budget"
            ),
            // Counted by the admission when it displaced this one.
            Reason::TooManyPendingLogons => tracing::debug!(
                %peer,
                "closing connection: displaced by a newer one waiting to log on"
            ),
            Reason::LogonTimeout => {
                closes.logon_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, "closing connection: no logon in time");
            }
            Reason::ReadTimeout => {
                closes.read_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, client, "closing connection: a frame began but did not arrive in time");
            }
            _ => tracing::info!(%peer, client, %reason, "closing connection"),
        }
        notice(&mut self.out, reason);
        "closed for a reason"
    }

    /// The connection closed gracefully: every failure ack it wrote was read by the client and
    /// is no longer unreported.
    fn failures_delivered(&mut self) {
        let seqs = self.acks.take_written_failures();
        let Some(name) = self.client_name.as_deref() else {
            return;
        };
        if seqs.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        if let Some(pending) = st.unreported.get_mut(name) {
            for seq in seqs {
                pending.remove(&seq);
            }
            if pending.is_empty() {
                st.unreported.remove(name);
            }
        }
    }

    /// Writes as much pending output as the socket takes now, without waiting (the loop waits
    /// for writability alongside everything else, so reading goes on). Fails on a socket error,
    /// or when the output still waiting passes `max_unsent_bytes`: the peer is not reading.
    fn send_out<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        unflushed: &mut bool,
    ) -> Result<(), &'static str> {
        while !self.out.is_empty() {
            // One poll: `None` means the socket would block, and the loop's write branch
            // takes over.
            match wr.write(&self.out).now_or_never() {
                None => break,
                Some(Ok(0)) => return Err("write error"),
                Some(Ok(n)) => {
                    self.out_frames.advance(&mut self.out, n);
                    self.last_sent = Instant::now();
                    *unflushed = true;
                }
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Some(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "write failed");
                    return Err("write error");
                }
            }
        }
        if *unflushed && self.out.is_empty() {
            match wr.flush().now_or_never() {
                Some(Ok(())) => *unflushed = false,
                Some(Err(_)) => return Err("write error"),
                None => {} // the loop's flush branch finishes it
            }
        }
        let unsent = self.out.len();
        if unsent == 0 {
            return Ok(());
        }
        self.shared.peak_unsent.fetch_max(unsent, Ordering::Relaxed);
        let max = self.shared.settings.max_unsent_bytes;
        if unsent > max {
            self.shared
                .slow_consumer_disconnects
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = %self.peer,
                client = self.client_name.as_deref().unwrap_or(""),
                unsent,
                max_unsent_bytes = max,
                "closing connection: the client is not reading its acks"
            );
            // What it has not begun to read is dropped, so the notice can follow. Failure acks
            // among it stay unreported and go out again at the next logon.
            self.out_frames.cut(&mut self.out);
            self.acks.take_written_failures();
            notice(&mut self.out, Reason::SlowConsumer);
            return Err("slow consumer: unsent output over the limit");
        }
        Ok(())
    }

    /// Sends the durable prefix of the ack queue and re-arms the conflation timer.
    fn drain(&mut self, durable: u64) {
        self.acks.drain(durable, &mut self.out);
        self.next_ack_at = if self.acks.is_empty() {
            None
        } else {
            Some(Instant::now() + self.conflation)
        };
    }

    fn arm_ack_timer(&mut self) {
        if self.next_ack_at.is_none() {
            self.next_ack_at = Some(Instant::now() + self.conflation);
        }
    }

    async fn handle(&mut self, mut frames: VecDeque<Frame>) -> Flow {
        if self.client_name.is_none() {
            let Some(first) = frames.pop_front() else {
                return Flow::Continue;
            };
            // The logon frame has arrived: the connection is no longer pending, unless a newer
            // one displaced it a moment ago.
            if !self.ticket.logon_received() {
                notice(&mut self.out, Reason::TooManyPendingLogons);
                return Flow::Close;
            }
            if first.header.command != Some(Command::Logon) {
                tracing::info!(peer = %self.peer, command = ?first.header.command, "command before logon; closing");
                self.ack(
                    &first.header,
                    AckType::Processed,
                    Err(Reason::LogonRequired),
                );
                return Flow::Close;
            }
            let flow = self.logon(first.header).await;
            let counters = &self.shared.counters;
            if flow == Flow::Close {
                counters.logons_refused.fetch_add(1, Ordering::Relaxed);
                return Flow::Close;
            }
            counters.logons_accepted.fetch_add(1, Ordering::Relaxed);
        }
        self.process(frames);
        Flow::Continue
    }

    /// Writes one non-persisted ack (cid echoed) of type `t`.
    fn ack(&mut self, req: &Header, t: AckType, result: Result<(), Reason>) {
        let (status, reason) = match result {
            Ok(()) => (Status::Success, None),
            Err(r) => (Status::Failure, Some(r)),
        };
        let h = Header {
            command: Some(Command::Ack),
            cid: req.cid.clone(),
            ack_type: AckTypes::only(t),
            status: Some(status),
            reason,
            seq: req.seq,
            ..Header::default()
        };
        encode_parts(&h, b"", &mut self.out);
    }

    async fn logon(&mut self, req: Header) -> Flow {
        let settings = self.shared.settings.clone();
        let name = match req.client_name.as_deref() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                tracing::info!(peer = %self.peer, "logon refused: no client name");
                self.ack(&req, AckType::Processed, Err(Reason::NoClientName));
                return Flow::Close;
            }
        };
        if !settings.users.is_empty() {
            let ok = match (req.user_id.as_deref(), req.password.as_ref()) {
                (Some(u), Some(pw)) => settings
                    .users
                    .get(u)
                    .is_some_and(|p| p.expose() == pw.expose()),
                _ => false,
            };
            if !ok {
                tracing::info!(peer = %self.peer, client = %name, user = req.user_id.as_deref().unwrap_or(""), "logon refused: auth failure");
                self.ack(&req, AckType::Processed, Err(Reason::AuthFailure));
                return Flow::Close;
            }
        }
        if let Some(opts) = req.options.as_deref() {
            for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                if let Some(v) = opt.strip_prefix("ack_conflation=") {
                    match parse_interval(v) {
                        Some(d) => self.conflation = d,
                        None => {
                            self.ack(&req, AckType::Processed, Err(Reason::InvalidOptions));
                            return Flow::Close;
                        }
                    }
                }
            }
        }
        // Name in use: the older connection goes.
        {
            let mut conns = self.shared.conns();
            for (id, entry) in conns.iter_mut() {
                if *id != self.conn_id && entry.client_name.as_deref() == Some(name.as_str()) {
                    tracing::info!(client = %name, "client name logged on again; dropping the older connection");
                    entry.client_name = None;
                    entry.kill.notify_one();
                }
            }
            if let Some(me) = conns.get_mut(&self.conn_id) {
                me.client_name = Some(name.clone());
            }
        }
        // Sync barrier: report a sequence that is durable, not merely accepted.
        let target = self.shared.lock().last_lsn;
        let mut durable_rx = self.shared.durable.subscribe();
        let reached = tokio::time::timeout(LOGON_BARRIER_TIMEOUT, async {
            durable_rx.wait_for(|d| *d >= target).await.is_ok()
        })
        .await;
        if reached != Ok(true) {
            tracing::error!(client = %name, "logon refused: the transaction log is not catching up");
            self.ack(&req, AckType::Processed, Err(Reason::TxStoreFailure));
            return Flow::Close;
        }
        let last = self.shared.lock().last_seq.get(&name).copied().unwrap_or(0);
        let h = Header {
            command: Some(Command::Ack),
            cid: req.cid.clone(),
            ack_type: AckTypes::PROCESSED,
            status: Some(Status::Success),
            client_name: Some(name.clone()),
            version: Some(SERVER_VERSION.into()),
            seq: Some(last),
            bookmark: Some(format!("{}|{}|", fnv1a(&name), last)),
            ..Header::default()
        };
        encode_parts(&h, b"", &mut self.out);
        tracing::info!(peer = %self.peer, client = %name, last_sequence = last, "logon");
        // Failure acks an earlier connection of this name never delivered go out first.
        let unreported: Vec<(u64, Reason)> = self
            .shared
            .lock()
            .unreported
            .get(&name)
            .map(|m| m.iter().map(|(s, r)| (*s, r.clone())).collect())
            .unwrap_or_default();
        if !unreported.is_empty() {
            tracing::info!(client = %name, count = unreported.len(), "re-sending undelivered failure acks");
            for (seq, reason) in unreported {
                self.acks.failure(0, seq, reason);
            }
            self.acks.drain(0, &mut self.out);
        }
        self.client_name = Some(name);
        Flow::Continue
    }

    /// Handles frames after logon; consecutive writes share one state lock.
    fn process(&mut self, frames: VecDeque<Frame>) {
        let shared = self.shared.clone();
        let mut guard: Option<std::sync::MutexGuard<'_, State>> = None;
        let mut wrote = false;
        for f in frames {
            match &f.header.command {
                Some(Command::Publish) => {
                    wrote |= self.write(&shared, &mut guard, RecordKind::Publish, f)
                }
                Some(Command::DeltaPublish) => {
                    wrote |= self.write(&shared, &mut guard, RecordKind::DeltaPublish, f)
                }
                Some(Command::SowDelete) => {
                    // The kind is settled by the selector inside write().
                    wrote |= self.write(&shared, &mut guard, RecordKind::DeleteByFilter, f)
                }
                Some(Command::Flush) => {
                    let acks = f.header.ack_type;
                    if !acks.is_empty() {
                        let wanted = AckTypes::NONE;
                        let wanted = acks
                            .iter()
                            .filter(|t| {
                                matches!(
                                    t,
                                    AckType::Processed | AckType::Persisted | AckType::Completed
                                )
                            })
                            .fold(wanted, AckTypes::with);
                        self.acks.flush(self.my_lsn, f.header.cid.clone(), wanted);
                        self.arm_ack_timer();
                    }
                }
                Some(Command::Heartbeat) => {
                    let o = f.header.options.as_deref().unwrap_or("");
                    if let Some(secs) = o.strip_prefix("start,") {
                        match secs.trim().parse::<f64>() {
                            Ok(s) if s > 0.0 && s < 1e6 => {
                                self.heartbeat = Some(Duration::from_secs_f64(s))
                            }
                            _ => {
                                tracing::debug!(peer = %self.peer, options = o, "ignoring bad heartbeat start")
                            }
                        }
                    } else if o.starts_with("stop") {
                        self.heartbeat = None;
                    }
                    // A beat only proves the client is alive: never answered (PROTOCOL.md 9).
                }
                Some(c) if super::subscriptions::handles(c) => {
                    let st = guard.get_or_insert_with(|| shared.lock());
                    self.subs.command(st, &f.header, &mut self.out);
                }
                Some(Command::Logon) => {
                    if f.header.ack_type.contains(AckType::Processed) || f.header.cid.is_some() {
                        self.ack(
                            &f.header,
                            AckType::Processed,
                            Err(Reason::DuplicateLogonAttempt),
                        );
                    }
                }
                _ => {
                    for t in f.header.ack_type.iter() {
                        self.ack(&f.header, t, Err(Reason::NotSupported));
                    }
                }
            }
        }
        drop(guard);
        if wrote {
            shared.log_cv.notify_one();
        }
    }

    /// Validates, accepts and answers one write. Returns whether a record was logged.
    fn write<'s>(
        &mut self,
        shared: &'s Shared,
        guard: &mut Option<std::sync::MutexGuard<'s, State>>,
        mut kind: RecordKind,
        f: Frame,
    ) -> bool {
        let h = &f.header;
        let client = self.client_name.as_deref().unwrap_or("");
        let topic = h.topic.as_deref().unwrap_or("");
        let st = guard.get_or_insert_with(|| shared.lock());
        let result = (|| {
            if topic.is_empty() {
                return Err(Reason::NoTopic);
            }
            let info = match self.topics.get(topic) {
                Some(i) => i.clone(),
                None => {
                    let info = topic_info(shared, st, topic);
                    if self.topics.len() > 4096 {
                        self.topics.clear();
                    }
                    self.topics.insert(topic.to_owned(), info.clone());
                    info
                }
            };
            info.valid.clone()?;
            if f.body.len() > shared.settings.max_message_size {
                return Err(Reason::MessageTooLarge);
            }
            let mut arg = h.sow_key.as_deref();
            if kind == RecordKind::DeleteByFilter {
                let selectors = [h.filter.is_some(), h.sow_keys.is_some(), !f.body.is_empty()];
                match selectors.iter().filter(|s| **s).count() {
                    0 => return Err(Reason::NoFilterOrBookmark),
                    1 => {}
                    _ => return Err(Reason::SowDeleteOneSelector),
                }
                (kind, arg) = if let Some(filter) = h.filter.as_deref() {
                    (RecordKind::DeleteByFilter, Some(filter))
                } else if let Some(keys) = h.sow_keys.as_deref() {
                    (RecordKind::DeleteByKeys, Some(keys))
                } else {
                    (RecordKind::DeleteByData, None)
                };
            }
            st.accept(&Write {
                kind,
                seq: h.seq,
                client,
                topic,
                arg,
                body: &f.body,
                correlation_id: h.correlation_id.as_deref(),
                is_sow: info.is_sow,
            })
        })();
        let wants = h.ack_type;
        let is_delete = h.command == Some(Command::SowDelete);
        let (logged, outcome) = match result {
            Ok((lsn, stats)) => {
                self.my_lsn = lsn;
                if let (Some(seq), true) = (h.seq, wants.contains(AckType::Persisted)) {
                    self.acks.success(lsn, seq);
                    self.arm_ack_timer();
                }
                (true, Ok(stats))
            }
            Err(reason) => {
                tracing::debug!(peer = %self.peer, client, topic, seq = ?h.seq, %reason, "write refused");
                if let (Some(seq), true) = (h.seq, wants.contains(AckType::Persisted)) {
                    self.acks.failure(self.my_lsn, seq, reason.clone());
                    st.unreported
                        .entry(client.to_owned())
                        .or_default()
                        .insert(seq, reason.clone());
                    self.arm_ack_timer();
                }
                (false, Err(reason))
            }
        };
        for t in wants.iter() {
            match t {
                AckType::Persisted => {}
                AckType::Stats if is_delete => {
                    let (status, reason, stats) = match &outcome {
                        Ok(s) => (Status::Success, None, *s),
                        Err(r) => (Status::Failure, Some(r.clone()), Default::default()),
                    };
                    let a = Header {
                        command: Some(Command::Ack),
                        cid: h.cid.clone(),
                        ack_type: AckTypes::STATS,
                        status: Some(status),
                        reason,
                        matches: Some(stats.matches),
                        records_deleted: Some(stats.records_deleted),
                        topic_matches: Some(stats.topic_matches),
                        ..Header::default()
                    };
                    encode_parts(&a, b"", &mut self.out);
                }
                AckType::Stats => {}
                other => {
                    let r = outcome.as_ref().map(drop).map_err(Clone::clone);
                    self.ack(h, other, r);
                }
            }
        }
        logged
    }
}

/// Validity, entitlement and SOW membership of a topic.
fn topic_info(shared: &Shared, st: &State, topic: &str) -> TopicInfo {
    let valid = if topic.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(Reason::InvalidTopic)
    } else if shared
        .settings
        .deny_write
        .as_ref()
        .is_some_and(|d| d.is_match(topic))
    {
        Err(Reason::NotEntitled)
    } else {
        Ok(())
    };
    TopicInfo {
        valid,
        is_sow: st.sow.is_sow_topic(topic),
    }
}

/// Writes everything and flushes (a no-op for TCP; TLS may buffer records until flushed).
/// Writes some of `out` (returns how much), or with nothing left to write flushes what the
/// writer buffered (TLS) and returns 0.
async fn write_or_flush<W: AsyncWrite + Unpin>(wr: &mut W, out: &[u8]) -> std::io::Result<usize> {
    if out.is_empty() {
        wr.flush().await?;
        return Ok(0);
    }
    match wr.write(out).await? {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

/// `ack_conflation` values: `<n>ms`, `<n>s`, or a bare number of milliseconds.
pub(crate) fn parse_interval(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, scale_ms) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    let n: f64 = num.trim().parse().ok()?;
    (0.0..1e9)
        .contains(&n)
        .then(|| Duration::from_secs_f64(n * scale_ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("10ms"), Some(Duration::from_millis(10)));
        assert_eq!(parse_interval("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_interval("7"), Some(Duration::from_millis(7)));
        assert_eq!(parse_interval("x"), None);
    }
}
