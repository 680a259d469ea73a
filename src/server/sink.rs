//! A minimal AMPS-protocol sink for benchmarks: it frames, reads `s`, and acks cumulatively.
//!
//! # The model
//!
//! Benchmarks of a client against the embedded [`Server`](super::Server) measure the server as
//! much as the client: it parses every header, logs every write and fsyncs. The sink does the
//! least a server can do so that a publisher still gets every guarantee it relies on, so what
//! a benchmark shows is the publisher's own cost:
//!
//! - it answers a logon with a success ack carrying the client name's last sequence in both
//!   `s` and `bm` (`<hash>|<seq>|`), as PROTOCOL.md section 4 requires;
//! - for every sequenced write it remembers the highest `s`, and sends one conflated
//!   `{"c":"ack","a":"persisted","status":"success","s":N}` every [`SinkConfig::ack_interval`]
//!   or every [`SinkConfig::ack_every`] frames, whichever comes first;
//! - with [`SinkConfig::fail_every`] set, every sequence divisible by it is refused: the run of
//!   successes before it is acked first, then a `failure` ack with reason `not entitled`, so
//!   the acks stay cumulative and in order (PROTOCOL.md section 6);
//! - a `flush` is answered at once: the pending persisted ack first, then the flush ack with
//!   the flush's `cid` and ack type;
//! - with acks stalled ([`SinkHandle::stall_acks`]) it keeps reading but sends no persisted or
//!   flush ack until [`SinkHandle::resume_acks`] (for memory measurements).
//!
//! Nothing is stored: "persisted" means "read". It is not a server; it exists so benchmarks can
//! separate the client's cost from the server's. Frames are decoded by [`AmpsCodec`] and acks
//! written through [`Header`], like everywhere else in the crate.
//!
//! It runs on a tokio runtime of its own (one worker thread), like the server, so an actix
//! client in the same process does not share its thread. [`SinkHandle::last_ack_sent`] is the
//! [`Instant`] the sink last wrote a persisted ack, for measuring flush latency in the same
//! process.
//!
//! ```
//! use actix_amps::server::Sink;
//! let sink = Sink::start()?;
//! println!("publish to {}", sink.uri());
//! sink.stop();
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::{Decoder, FramedRead};

use crate::error::ProtocolError;
use crate::protocol::{
    encode_parts, AckType, AckTypes, AmpsCodec, Command, Header, Reason, Status,
};

/// How a [`Sink`] acks. Build with [`SinkConfig::default`] and the chained setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SinkConfig {
    /// Listening address (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Longest time a read write waits for its conflated persisted ack (default 2 ms).
    pub ack_interval: Duration,
    /// Send a conflated ack after at most this many sequenced frames (default 4096).
    pub ack_every: u64,
    /// Refuse every sequence divisible by this (`not entitled`); `None` refuses nothing.
    pub fail_every: Option<u64>,
}

impl Default for SinkConfig {
    fn default() -> SinkConfig {
        SinkConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ack_interval: Duration::from_millis(2),
            ack_every: 4096,
            fail_every: None,
        }
    }
}

impl SinkConfig {
    /// Sets the conflation interval.
    pub fn ack_interval(mut self, d: Duration) -> Self {
        self.ack_interval = d;
        self
    }

    /// Sets the frame count that forces a conflated ack (at least 1).
    pub fn ack_every(mut self, n: u64) -> Self {
        self.ack_every = n.max(1);
        self
    }

    /// Refuses every sequence divisible by `n` (at least 1) with `not entitled`.
    pub fn fail_every(mut self, n: u64) -> Self {
        self.fail_every = Some(n.max(1));
        self
    }
}

/// Entry point: see [`Sink::start`].
#[derive(Debug)]
pub struct Sink;

impl Sink {
    /// Starts a sink with the default [`SinkConfig`] on `127.0.0.1:0`.
    pub fn start() -> io::Result<SinkHandle> {
        Sink::start_with(SinkConfig::default())
    }

    /// Starts a sink on a runtime of its own and returns once it is listening.
    pub fn start_with(config: SinkConfig) -> io::Result<SinkHandle> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("amps-sink")
            .enable_all()
            .build()?;
        let (stall, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            stall,
            last_seq: Mutex::new(HashMap::new()),
            last_ack_sent: Mutex::new(None),
            frames: AtomicU64::new(0),
        });
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        runtime.spawn(accept_loop(shared.clone(), listener));
        Ok(SinkHandle {
            addr,
            shared,
            runtime: Mutex::new(Some(runtime)),
        })
    }
}

struct Shared {
    config: SinkConfig,
    stall: watch::Sender<bool>,
    /// Per client name, the highest sequence acked (returned at the next logon).
    last_seq: Mutex<HashMap<String, u64>>,
    last_ack_sent: Mutex<Option<Instant>>,
    frames: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Controls a running [`Sink`]; stops it when dropped.
pub struct SinkHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SinkHandle {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URI a client connects to: `tcp://127.0.0.1:PORT/amps/json`.
    pub fn uri(&self) -> String {
        format!("tcp://{}/amps/json", self.addr)
    }

    /// Withholds persisted and flush acks (frames are still read) until
    /// [`SinkHandle::resume_acks`].
    pub fn stall_acks(&self) {
        self.shared.stall.send_replace(true);
    }

    /// Resumes acking; what was withheld goes out as one cumulative ack.
    pub fn resume_acks(&self) {
        self.shared.stall.send_replace(false);
    }

    /// When the sink last wrote a persisted ack to any connection.
    pub fn last_ack_sent(&self) -> Option<Instant> {
        *lock(&self.shared.last_ack_sent)
    }

    /// Frames read so far, on all connections.
    pub fn frames_received(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
    }

    /// Closes the listener and every connection. Idempotent.
    pub fn stop(&self) {
        if let Some(rt) = lock(&self.runtime).take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(session(shared.clone(), stream));
            }
            Err(e) => {
                tracing::warn!(error = %e, "sink: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connection's ack state.
struct Session {
    shared: Arc<Shared>,
    client_name: Option<String>,
    /// Highest sequence read and not yet acked.
    pending: Option<u64>,
    /// Sequenced frames since the last ack.
    since_ack: u64,
    /// Flushes waiting while acks are stalled: (cid, ack type).
    flushes: Vec<(Option<String>, AckTypes)>,
    out: BytesMut,
    /// Whether `out` holds a persisted ack.
    out_has_persisted: bool,
}

impl Session {
    fn persisted(&mut self, seq: u64, result: Result<(), Reason>) {
        let (status, reason) = match result {
            Ok(()) => (Status::Success, None),
            Err(r) => (Status::Failure, Some(r)),
        };
        let h = Header {
            command: Some(Command::Ack),
            ack_type: AckTypes::PERSISTED,
            status: Some(status),
            reason,
            seq: Some(seq),
            ..Header::default()
        };
        encode_parts(&h, b"", &mut self.out);
        self.out_has_persisted = true;
        if let Some(name) = &self.client_name {
            let mut map = lock(&self.shared.last_seq);
            let last = map.entry(name.clone()).or_insert(0);
            *last = (*last).max(seq);
        }
    }

    /// Writes the cumulative success ack for what was read, if anything.
    fn ack_pending(&mut self) {
        if let Some(seq) = self.pending.take() {
            self.persisted(seq, Ok(()));
        }
        self.since_ack = 0;
    }

    fn answer_flushes(&mut self) {
        self.ack_pending();
        for (cid, acks) in std::mem::take(&mut self.flushes) {
            let h = Header {
                command: Some(Command::Ack),
                cid,
                ack_type: acks,
                status: Some(Status::Success),
                ..Header::default()
            };
            encode_parts(&h, b"", &mut self.out);
        }
    }

    fn logon(&mut self, req: Seen) {
        let name = req.client_name.unwrap_or_default();
        let last = *lock(&self.shared.last_seq).get(&name).unwrap_or(&0);
        let h = Header {
            command: Some(Command::Ack),
            cid: req.cid,
            ack_type: AckTypes::PROCESSED,
            status: Some(Status::Success),
            client_name: Some(name.clone()),
            version: Some(format!("{}:sink", env!("CARGO_PKG_VERSION"))),
            seq: Some(last),
            bookmark: Some(format!("0|{last}|")),
            ..Header::default()
        };
        encode_parts(&h, b"", &mut self.out);
        self.client_name = Some(name);
    }

    fn frame(&mut self, h: Seen, stalled: bool) {
        match h.command {
            Some(Command::Logon) => self.logon(h),
            Some(Command::Heartbeat) => {}
            Some(Command::Flush) => {
                let acks = if h.ack_type.is_empty() {
                    AckTypes::PROCESSED
                } else {
                    h.ack_type
                };
                self.flushes.push((h.cid, acks));
                if !stalled {
                    self.answer_flushes();
                }
            }
            _ => {
                let Some(seq) = h.seq else { return };
                if !h.ack_type.contains(AckType::Persisted) {
                    return;
                }
                let fail = self
                    .shared
                    .config
                    .fail_every
                    .is_some_and(|n| seq.is_multiple_of(n));
                if fail {
                    if !stalled {
                        self.ack_pending();
                        self.persisted(seq, Err(Reason::NotEntitled));
                    }
                    return;
                }
                self.pending = Some(seq);
                self.since_ack += 1;
                if !stalled && self.since_ack >= self.shared.config.ack_every {
                    self.ack_pending();
                }
            }
        }
    }
}

/// The few header fields the sink reads.
struct Seen {
    command: Option<Command>,
    cid: Option<String>,
    ack_type: AckTypes,
    seq: Option<u64>,
    client_name: Option<String>,
}

impl From<Header> for Seen {
    fn from(h: Header) -> Seen {
        Seen {
            command: h.command,
            cid: h.cid,
            ack_type: h.ack_type,
            seq: h.seq,
            client_name: h.client_name,
        }
    }
}

/// [`AmpsCodec`] keeping only what the sink reads: a `Header` is several hundred bytes, and
/// moving whole frames through the stream and `select!` layers cost more than parsing them.
struct SinkCodec(AmpsCodec);

impl Decoder for SinkCodec {
    type Item = Seen;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Seen>, ProtocolError> {
        Ok(self.0.decode(src)?.map(|f| Seen::from(f.header)))
    }
}

async fn session(shared: Arc<Shared>, stream: TcpStream) {
    let (rd, mut wr) = stream.into_split();
    let mut frames = FramedRead::with_capacity(rd, SinkCodec(AmpsCodec::default()), 256 * 1024);
    let mut stall = shared.stall.subscribe();
    let mut tick = tokio::time::interval(shared.config.ack_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut s = Session {
        shared: shared.clone(),
        client_name: None,
        pending: None,
        since_ack: 0,
        flushes: Vec::new(),
        out: BytesMut::with_capacity(4096),
        out_has_persisted: false,
    };
    loop {
        let stalled = *stall.borrow_and_update();
        tokio::select! {
            biased;
            _ = tick.tick(), if s.pending.is_some() && !stalled => s.ack_pending(),
            r = stall.changed() => {
                if r.is_err() {
                    break;
                }
                if !*stall.borrow() {
                    s.answer_flushes();
                }
            }
            f = frames.next() => {
                // Everything already buffered is handled in this turn: one `select!` per
                // socket read, not per frame.
                let mut next = Some(f);
                let mut n = 0u64;
                let mut closed = false;
                while let Some(f) = next.take() {
                    match f {
                        Some(Ok(f)) => s.frame(f, stalled),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "sink: closing a connection");
                            closed = true;
                            break;
                        }
                        None => {
                            closed = true;
                            break;
                        }
                    }
                    n += 1;
                    if n < 4096 {
                        next = frames.next().now_or_never();
                    }
                }
                shared.frames.fetch_add(n, Ordering::Relaxed);
                if closed {
                    break;
                }
            }
        }
        if !s.out.is_empty() {
            if std::mem::take(&mut s.out_has_persisted) {
                *lock(&shared.last_ack_sent) = Some(Instant::now());
            }
            if wr.write_all(&s.out).await.is_err() {
                break;
            }
            s.out.clear();
        }
    }
}
