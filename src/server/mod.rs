//! The embedded AMPS-protocol server: run, test and measure the client on one machine.
//!
//! # The model
//!
//! A client connects over TCP and logs on with a client name. The server keeps, per client
//! name, the last publisher sequence number it accepted; it reports it at logon (in `s` and in
//! the bookmark `<hash>|<seq>|`) so a reconnecting client knows what to replay, and refuses any
//! sequence at or below it as a `duplicate`.
//!
//! Every accepted write (publish, delta_publish, sow_delete) is applied to the SOW (the
//! per-topic keyed store of topics declared with [`ServerConfig::sow`]) and appended to a
//! **transaction log** on disk, in one order. A group-commit writer thread writes what has
//! accumulated, fsyncs it ([`LogFsyncPolicy`]) and publishes how far the log is durable. Only then
//! is a write acked `persisted`. Persisted acks are **conflated** per connection: one
//! cumulative `{"c":"ack","a":"persisted","status":"success","s":N}` per interval, split around
//! failures so that acks always come out in the order of the writes they cover.
//!
//! On start the log is replayed: the SOW and every client name's last sequence come back. A
//! torn or corrupt tail record (checksum mismatch, short read) is cut off, never replayed.
//! The data directory is locked (`LOCK`, an OS file lock) while a server runs, so a second
//! server or [`Journal::read`] gets [`ServerError::Locked`].
//!
//! Writes are refused with the reasons AMPS uses (PROTOCOL.md section 7): `duplicate`,
//! `not entitled` ([`ServerConfig::deny_write`]), `message too large`, `no topic`,
//! `invalid topic`, `bad filter`, and the sow_delete one-selector rule.
//!
//! **Failures.** Every refusal of a sequenced write is durable (a record in the log, kept in
//! snapshots) and its failure ack is re-sent after each logon of the client name until the
//! client demonstrably read it (see `failures.rs` and `docs/ACCOUNTING.md`). A logon with a
//! client name already connected takes it over: the older connection is answered in full,
//! told `name in use`, and closed before the new logon is answered.
//!
//! **Limits.** The server never trusts a peer to behave (`docs/HOSTILE_PEERS.md` has the
//! whole model and the load test's figures):
//!
//! - *Before logon* a connection has [`ServerConfig::logon_timeout`] to deliver a logon frame
//!   of at most [`ServerConfig::max_logon_frame`] bytes, and at most
//!   [`ServerConfig::max_pending_logons`] connections wait to log on at once: one more displaces
//!   the oldest, so idle connections can never lock real clients out. Logged-on connections
//!   may stay idle indefinitely (AMPS behaviour).
//! - At most [`ServerConfig::max_connections`] connections are open; one more has its logon
//!   answered with `too many connections` and is closed.
//! - A frame begun must arrive within [`ServerConfig::frame_timeout`]. After logon a write
//!   above the maximum message size is refused (`message too large`) with its body discarded
//!   unread, and the connection stays; any other frame above it closes the connection.
//! - A connection's unsent output is bounded by [`ServerConfig::max_unsent_bytes`]: the session
//!   keeps reading while its output waits for the socket, and a client that sends but does not
//!   read is disconnected once its acks pile up past the bound.
//! - All connections' buffers together are bounded by [`ServerConfig::max_buffered_bytes`]:
//!   past it, the largest holders are disconnected, with a logged reason.
//!
//! A connection closed for one of these reasons gets the reason as its last frame: a failure
//! ack to its logon, or a closing notice ([`protocol::notice`](crate::protocol::notice)).
//! [`ServerHandle::stats`] counts every kind of close.
//!
//! # The API
//!
//! [`Server::start`] runs the server on a tokio runtime of its own threads and returns a
//! [`ServerHandle`] once listening; the handle's methods are synchronous and callable from any
//! thread, including async ones. The handle carries fault hooks for tests: drop connections,
//! stall acks, freeze the whole server, stop and restart on the same port and data directory.
//!
//! A server on a free port of `127.0.0.1`, a client that writes to it, and the journal of
//! what the server persisted, read from its data directory once it has stopped:
//!
//! ```
//! use std::time::Duration;
//! use actix_amps::client::{ClientConfig, Publish, PublishFlush};
//! use actix_amps::server::{Journal, Server, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let server = Server::start(ServerConfig::new(dir.path()).sow("orders", &["/id"]))?;
//! println!("connect to {}", server.uri());
//! actix::System::new().block_on(async {
//!     let client = ClientConfig::new("journal-doc").uri(&server.uri())?.start()?;
//!     for id in 0..3 {
//!         client.send(Publish::new("orders", format!(r#"{{"id":{id}}}"#))).await??;
//!     }
//!     client.send(PublishFlush { timeout: Duration::from_secs(10) }).await??;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! assert_eq!(server.stats().logons_accepted, 1);
//! server.stop();
//! let journal = Journal::read(dir.path())?;
//! assert_eq!(journal.client("journal-doc").map(|c| c.count), Some(3));
//! # Ok(()) }
//! ```
//!
//! # TLS and users
//!
//! With [`ServerConfig::tls`] (a PEM certificate chain and key) the listener speaks only TLS:
//! the handshake runs before anything is read as AMPS, bounded by
//! [`ServerConfig::tls_handshake_timeout`], and a client that does not speak TLS is closed
//! ([`ServerStats::tls_handshake_failures`]). With [`ServerConfig::user`] a logon must carry a
//! matching `user_id` and `pw`, or it is refused with `auth failure` and the connection closed.
//! Passwords are never logged.
//!
//! [`RawWriter`] is a pipelined raw-socket publisher: the baseline for benchmarks. [`Sink`] is a
//! minimal acking endpoint for benchmarks that should measure the client, not the server.

mod acks;
mod admission;
mod bookmark;
mod budget;
mod closing;
mod config;
mod core;
mod failures;
mod filter;
mod journal;
mod maintenance;
mod oversize;
mod query;
mod raw_writer;
mod refusal;
mod session;
mod sink;
mod sow;
pub(crate) mod subscriptions;
// The transaction log's reader, files and repair are reachable for the command-line tool and
// the tests (which check every write against the log), not part of the documented API.
#[doc(hidden)]
pub mod txlog;

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The name this type had before it was told apart from the client store's
/// [`FsyncPolicy`](crate::client::FsyncPolicy); kept for existing code.
#[doc(hidden)]
pub use self::config::LogFsyncPolicy as FsyncPolicy;
pub use self::config::{
    LogFsyncPolicy, ServerConfig, DEFAULT_FRAME_TIMEOUT, DEFAULT_LOGON_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_LOGON_FRAME,
    DEFAULT_MAX_PENDING_LOGONS, DEFAULT_MAX_UNSENT_BYTES,
};
pub use self::journal::{ClientJournal, Journal};
pub use self::raw_writer::{RawRun, RawWriter};
pub use self::session::SERVER_VERSION;
pub use self::sink::{Sink, SinkConfig, SinkHandle};
pub use self::txlog::{LogHolds, RepairReport, Retention};
pub use crate::error::ServerError;

use self::admission::{Admit, RefusalSlot, Ticket};
use self::core::{Counters, Settings, Shared, State};
use self::txlog::retention::SegmentTable;
use self::txlog::writer::{Faults, LogWriter};

/// The name of the lock file in the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// How long [`ServerHandle::stop`] waits for connections to close.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters from [`ServerHandle::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open now (0 once stopped).
    pub connections: usize,
    /// Connections closed at accept because [`ServerConfig::max_connections`] were open.
    pub refused_connections: u64,
    /// Connections closed because their unsent output passed
    /// [`ServerConfig::max_unsent_bytes`].
    pub slow_consumer_disconnects: u64,
    /// The most output any connection had waiting for its socket after a write attempt.
    pub peak_unsent_bytes: usize,
    /// TCP connections accepted since the handle was created (across restarts).
    pub connections_accepted: u64,
    /// TLS handshakes that failed or timed out (plaintext clients on a TLS listener, among
    /// others).
    pub tls_handshake_failures: u64,
    /// Logons accepted.
    pub logons_accepted: u64,
    /// Logons refused (`auth failure`, no client name, bad options, ...).
    pub logons_refused: u64,
    /// Connections open now that have not delivered their logon.
    pub pending_logons: usize,
    /// Connections closed because no logon arrived within [`ServerConfig::logon_timeout`].
    pub logon_timeouts: u64,
    /// Connections waiting to log on closed to make room for a newer one
    /// ([`ServerConfig::max_pending_logons`]).
    pub displaced_pending_logons: u64,
    /// Connections closed because a frame did not arrive within
    /// [`ServerConfig::frame_timeout`] of its first bytes.
    pub read_timeouts: u64,
    /// Connections closed for bytes that are not a frame, or a frame over the limit.
    pub bad_frames: u64,
    /// Connections closed because buffers passed [`ServerConfig::max_buffered_bytes`].
    pub budget_disconnects: u64,
    /// Bytes buffered now across connections (input being framed, output not yet sent).
    pub buffered_bytes: usize,
    /// The most bytes buffered across connections at once.
    pub peak_buffered_bytes: usize,
}

/// Entry point: see [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Starts a server on its own runtime threads and returns once it is listening.
    ///
    /// Fails with [`ServerError::BadRegex`] for a bad topic pattern, [`ServerError::Locked`] if
    /// another server uses the data directory, [`ServerError::Bind`] if the address is taken.
    ///
    /// ```
    /// use actix_amps::error::ServerError;
    /// use actix_amps::server::{Server, ServerConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let server = Server::start(ServerConfig::new(dir.path()))?;
    /// let port = server.addr().port();
    /// // One server per data directory.
    /// let second = Server::start(ServerConfig::new(dir.path()));
    /// assert!(matches!(second, Err(ServerError::Locked { .. })));
    /// // Stopped and started again: same port, same data.
    /// server.restart()?;
    /// assert_eq!(server.addr().port(), port);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
        let settings = Arc::new(Settings::compile(&config)?);
        let handle = ServerHandle {
            data_dir: config.data_dir.clone(),
            settings,
            addr: Mutex::new(config.listen),
            running: Mutex::new(None),
            last: Mutex::new(None),
            counters: Arc::default(),
            faults: Arc::default(),
        };
        handle.start_on(config.listen)?;
        Ok(handle)
    }
}

/// Repairs the transaction log of a stopped server's data directory: damaged bytes are moved
/// to `quarantine/`, every intact record is kept, and the report says exactly what was lost.
/// A healthy log is left as it is (the report is empty). Fails with [`ServerError::Locked`]
/// while a server runs there. See [`txlog::repair`].
pub fn repair(data_dir: &Path) -> Result<RepairReport, ServerError> {
    let lock = lock_data_dir(data_dir)?;
    let report = txlog::repair::repair_log(data_dir);
    drop(lock);
    report
}

/// Locks `data_dir` (creating it and its `LOCK` file if missing).
pub(crate) fn lock_data_dir(data_dir: &Path) -> Result<File, ServerError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::Io {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServerError::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::Locked {
            path: data_dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(ServerError::Io { path, source }),
    }
}

/// A running server's parts.
struct Running {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Runtime,
    writer: JoinHandle<()>,
    fanout: JoinHandle<()>,
    /// The snapshot and retention thread, and what stops it.
    maintenance: (JoinHandle<()>, mpsc::Sender<()>),
    accept_done: mpsc::Receiver<()>,
    lock: File,
}

/// Controls a server started with [`Server::start`]; stops it when dropped.
pub struct ServerHandle {
    data_dir: PathBuf,
    settings: Arc<Settings>,
    addr: Mutex<SocketAddr>,
    running: Mutex<Option<Running>>,
    /// The shared state of the last run (for [`ServerHandle::last_sequence`] after a stop).
    last: Mutex<Option<Arc<Shared>>>,
    counters: Arc<Counters>,
    /// Injected faults (kept across restarts).
    faults: Arc<Faults>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr())
            .field("data_dir", &self.data_dir)
            .field("running", &self.is_running())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServerHandle {
    fn start_on(&self, addr: SocketAddr) -> Result<(), ServerError> {
        let mut running = lock(&self.running);
        if running.is_some() {
            return Ok(());
        }
        let lock_file = lock_data_dir(&self.data_dir)?;
        let mut state = State {
            sow: self.settings.new_sow(),
            last_seq: Default::default(),
            log_buf: bytes::BytesMut::with_capacity(1 << 20),
            last_lsn: 0,
            last_ts: 0,
            log_stop: false,
            log_trouble: None,
            log_room: 0,
            // Rebuilt from the snapshot and the log's refusal and read records.
            unread: Default::default(),
            log_crash: false,
            feed: subscriptions::feed::Feed::new(Default::default()),
            bookmarks: Default::default(),
        };
        let started = std::time::Instant::now();
        txlog::snapshot::remove_leftovers(&self.data_dir)?;
        let snapshot_lsn = match txlog::snapshot::list_snapshots(&self.data_dir)?.pop() {
            Some((_, path)) => txlog::snapshot::load_snapshot(&path, |e| match e {
                txlog::snapshot::Entry::LastSeq(name, seq) => {
                    state.last_seq.insert(name.to_owned(), seq);
                }
                txlog::snapshot::Entry::Unread(name, seq, reason) => {
                    state.unread.insert(
                        name,
                        seq,
                        crate::protocol::Reason::from_str_lossless(reason),
                    );
                }
                txlog::snapshot::Entry::Record(topic, key, body) => {
                    state
                        .sow
                        .restore(topic, key.to_owned(), bytes::Bytes::copy_from_slice(body));
                }
            })?,
            None => 0,
        };
        let recovered = txlog::recover::recover(&self.data_dir, snapshot_lsn, |d| state.replay(d))?;
        state.last_lsn = recovered.last_lsn;
        // The limit applies to new writes; replay applied what was accepted before.
        state.sow.set_limit(self.settings.max_sow_bytes);
        let first_retained = recovered
            .segments
            .first()
            .map_or(recovered.last_lsn + 1, |s| s.first_lsn);
        // Bookmarks of the retained records the snapshot covers (recovery replayed only
        // what follows it).
        if snapshot_lsn >= first_retained {
            let earlier = bookmark::BookmarkIndex::of_log_range(
                &self.data_dir,
                first_retained,
                snapshot_lsn,
            )?;
            state.bookmarks.prepend(earlier);
        }
        let holds = LogHolds::new(first_retained);
        let segments = Arc::new(SegmentTable::with(recovered.segments));
        let writer = LogWriter::open(
            &self.data_dir,
            recovered.active,
            recovered.last_lsn + 1,
            self.settings.log_segment_bytes,
            self.settings.fsync,
            segments.clone(),
            self.faults.clone(),
        )?;
        state.log_room = writer.room();
        state.log_trouble = writer
            .start_error()
            .map(|e| core::LogTrouble::DiskFull(e.to_string()));
        tracing::info!(
            data_dir = %self.data_dir.display(),
            snapshot_lsn,
            replayed = recovered.replayed,
            last_lsn = recovered.last_lsn,
            clients = state.last_seq.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "transaction log recovered"
        );
        let durable = recovered.last_lsn;
        let hub = Arc::new(subscriptions::Hub::new(durable, self.data_dir.clone()));
        state.feed = subscriptions::feed::Feed::new(hub.registry.counter());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("amps-server")
            .enable_all()
            .build()
            .map_err(|e| ServerError::Runtime(e.to_string()))?;
        let listener = {
            let _in_runtime = runtime.enter();
            bind_listener(addr)
        }
        .map_err(|source| ServerError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let shared = Arc::new(Shared::new(
            self.settings.clone(),
            state,
            durable,
            self.counters.clone(),
            holds,
            segments,
            hub,
        ));
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("amps-txlog".into())
                .spawn(move || core::writer_loop(shared, writer))
                .map_err(|e| ServerError::Runtime(e.to_string()))?
        };
        let fanout = {
            let shared = shared.clone();
            // Read here, before any session runs: read on the thread, a write made durable
            // before the thread first ran would never be fanned out.
            let start = shared.subs.durable();
            std::thread::Builder::new()
                .name("amps-fanout".into())
                .spawn(move || subscriptions::fanout::run(shared, start))
                .map_err(|e| ServerError::Runtime(e.to_string()))?
        };
        let maintenance = {
            let shared = shared.clone();
            let dir = self.data_dir.clone();
            let (tx, rx) = mpsc::channel();
            let handle = std::thread::Builder::new()
                .name("amps-maintenance".into())
                .spawn(move || maintenance::maintenance_loop(shared, dir, rx))
                .map_err(|e| ServerError::Runtime(e.to_string()))?;
            (handle, tx)
        };
        let (done_tx, accept_done) = mpsc::channel();
        runtime.spawn(accept_loop(shared.clone(), listener, done_tx));
        *lock(&self.addr) = local;
        *lock(&self.last) = Some(shared.clone());
        *running = Some(Running {
            shared,
            runtime,
            writer,
            fanout,
            maintenance,
            accept_done,
            lock: lock_file,
        });
        tracing::info!(addr = %local, "listening");
        Ok(())
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        lock(&self.running).as_ref().map(|r| r.shared.clone())
    }

    fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// The listening address (kept across [`ServerHandle::restart`]).
    pub fn addr(&self) -> SocketAddr {
        *lock(&self.addr)
    }

    /// The URI a client connects to: `tcp://127.0.0.1:PORT/amps/json`, or `tcps://...` when
    /// the server speaks TLS.
    pub fn uri(&self) -> String {
        let scheme = if self.settings.tls.is_some() {
            "tcps"
        } else {
            "tcp"
        };
        format!("{scheme}://{}/amps/json", self.addr())
    }

    /// Whether the listener speaks TLS only.
    pub fn is_tls(&self) -> bool {
        self.settings.tls.is_some()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Closes every client connection now.
    pub fn drop_connections(&self) {
        if let Some(shared) = self.shared() {
            for entry in shared.conns().values() {
                entry.kill.notify_one();
            }
        }
    }

    /// Closes the connection logged on as `client_name`; `false` if there is none.
    pub fn drop_connection(&self, client_name: &str) -> bool {
        let Some(shared) = self.shared() else {
            return false;
        };
        let conns = shared.conns();
        let mut found = false;
        for entry in conns.values() {
            if entry.client_name.as_deref() == Some(client_name) {
                entry.kill.notify_one();
                found = true;
            }
        }
        found
    }

    /// Withholds persisted and flush acks (writes are still logged) until
    /// [`ServerHandle::resume_acks`].
    pub fn stall_acks(&self) {
        if let Some(s) = self.shared() {
            s.stall.send_replace(true);
        }
    }

    /// Sends the acks withheld since [`ServerHandle::stall_acks`] and resumes normal acking.
    pub fn resume_acks(&self) {
        if let Some(s) = self.shared() {
            s.stall.send_replace(false);
        }
    }

    /// Stops reading and writing on every connection, keeping the sockets open (a stalled
    /// server, for heartbeat tests) until [`ServerHandle::thaw`].
    pub fn freeze(&self) {
        if let Some(s) = self.shared() {
            s.freeze.send_replace(true);
        }
    }

    /// Ends a [`ServerHandle::freeze`].
    pub fn thaw(&self) {
        if let Some(s) = self.shared() {
            s.freeze.send_replace(false);
        }
    }

    /// The registry of what still needs old log history (retention never removes a segment
    /// at or after a held LSN); `None` while stopped. See [`LogHolds`].
    pub fn log_holds(&self) -> Option<LogHolds> {
        self.shared().map(|s| s.log_holds.clone())
    }

    /// Writes a snapshot of the SOW and the last sequences now (the maintenance thread does
    /// this every `snapshot_every` logged bytes). `Ok(None)`: not running, nothing new since
    /// the last snapshot, or the log did not catch up in time.
    pub fn snapshot(&self) -> Result<Option<PathBuf>, ServerError> {
        match self.shared() {
            Some(s) => maintenance::take_snapshot(&s, &self.data_dir),
            None => Ok(None),
        }
    }

    /// The durable LSN: every record up to it is on disk. `None` while stopped.
    pub fn durable_lsn(&self) -> Option<u64> {
        self.shared().map(|s| *s.durable.borrow())
    }

    /// Makes every reservation of transaction log space fail as on a full disk (`true`) or
    /// work again (`false`), to test what a full disk does without filling one. Kept across
    /// restarts.
    pub fn simulate_disk_full(&self, full: bool) {
        self.faults
            .out_of_space
            .store(full, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.shared() {
            s.log_cv.notify_all();
        }
    }

    /// Counters: open connections and the limits' refusals of the current (or last) run;
    /// connection, handshake and logon counts since the handle was created.
    pub fn stats(&self) -> ServerStats {
        let c = &self.counters;
        let totals = ServerStats {
            connections_accepted: c.connections.load(Ordering::Relaxed),
            tls_handshake_failures: c.tls_handshake_failures.load(Ordering::Relaxed),
            logons_accepted: c.logons_accepted.load(Ordering::Relaxed),
            logons_refused: c.logons_refused.load(Ordering::Relaxed),
            ..ServerStats::default()
        };
        let Some(shared) = lock(&self.last).clone() else {
            return totals;
        };
        let connections = if self.is_running() {
            shared.conns().len()
        } else {
            0
        };
        let closes = &shared.admission.closes;
        ServerStats {
            connections,
            refused_connections: shared.refused_connections.load(Ordering::Relaxed),
            slow_consumer_disconnects: shared.slow_consumer_disconnects.load(Ordering::Relaxed),
            peak_unsent_bytes: shared.peak_unsent.load(Ordering::Relaxed),
            pending_logons: if self.is_running() {
                shared.admission.pending()
            } else {
                0
            },
            logon_timeouts: closes.logon_timeouts.load(Ordering::Relaxed),
            displaced_pending_logons: closes.displaced.load(Ordering::Relaxed),
            read_timeouts: closes.read_timeouts.load(Ordering::Relaxed),
            bad_frames: closes.bad_frames.load(Ordering::Relaxed),
            budget_disconnects: shared.budget.disconnects(),
            buffered_bytes: shared.budget.total(),
            peak_buffered_bytes: shared.budget.peak(),
            ..totals
        }
    }

    /// The last durable sequence for `client_name` (waits briefly for the log to catch up
    /// with what was accepted); `None` if the name never persisted a sequenced write.
    pub fn last_sequence(&self, client_name: &str) -> Option<u64> {
        let shared = lock(&self.last).clone()?;
        shared.wait_durable_blocking(STOP_TIMEOUT);
        let st = shared.lock();
        st.last_seq.get(client_name).copied()
    }

    /// Closes the listener and every connection, writes and fsyncs the log, and releases the
    /// data directory. Idempotent.
    pub fn stop(&self) {
        let Some(r) = lock(&self.running).take() else {
            return;
        };
        r.shared.shutdown.send_replace(true);
        for entry in r.shared.conns().values() {
            entry.kill.notify_one();
        }
        if r.accept_done.recv_timeout(STOP_TIMEOUT).is_err() {
            tracing::warn!("connections did not close in time; stopping anyway");
        }
        let (maintenance, stop_maintenance) = r.maintenance;
        drop(stop_maintenance);
        if maintenance.join().is_err() {
            tracing::error!("maintenance thread panicked");
        }
        {
            let mut st = r.shared.lock();
            st.log_stop = true;
        }
        r.shared.log_cv.notify_all();
        if r.writer.join().is_err() {
            tracing::error!("transaction log writer panicked");
        }
        r.shared.subs.stop();
        if r.fanout.join().is_err() {
            tracing::error!("subscription fan-out panicked");
        }
        r.runtime.shutdown_background();
        if let Err(e) = r.lock.unlock() {
            tracing::warn!(error = %e, "could not unlock the data directory");
        }
        drop(r.lock);
        tracing::info!(addr = %self.addr(), "server stopped");
    }

    /// Stops as a killed process would (a test hook for SIGKILL): connections are cut without
    /// a goodbye, log records not yet handed to the file are lost, nothing is fsynced (what
    /// was written stays, as it would in the OS page cache). Restart with
    /// [`ServerHandle::restart`].
    pub fn kill(&self) {
        let Some(r) = lock(&self.running).take() else {
            return;
        };
        // No snapshot or retention after the "crash" (the next start owns the directory).
        let (maintenance, stop_maintenance) = r.maintenance;
        drop(stop_maintenance);
        if maintenance.join().is_err() {
            tracing::error!("maintenance thread panicked");
        }
        {
            let mut st = r.shared.lock();
            st.log_crash = true;
            st.log_stop = true;
            st.log_buf.clear();
        }
        r.shared.log_cv.notify_all();
        // Drops every task (listener and sockets closed, unsent output lost), bounded; on a
        // thread of its own, since the caller may be inside an async context.
        let runtime = r.runtime;
        let dropped = std::thread::Builder::new()
            .name("amps-kill".into())
            .spawn(move || runtime.shutdown_timeout(STOP_TIMEOUT))
            .map(|t| t.join().is_ok());
        if !matches!(dropped, Ok(true)) {
            tracing::warn!("the killed server's runtime did not shut down cleanly");
        }
        if r.writer.join().is_err() {
            tracing::error!("transaction log writer panicked");
        }
        r.shared.subs.stop();
        if r.fanout.join().is_err() {
            tracing::error!("subscription fan-out panicked");
        }
        if let Err(e) = r.lock.unlock() {
            tracing::warn!(error = %e, "could not unlock the data directory");
        }
        tracing::info!(addr = %self.addr(), "server killed");
    }

    /// Starts again on the same address and data directory, recovering from the log. Stops
    /// first if running.
    pub fn restart(&self) -> Result<(), ServerError> {
        self.stop();
        self.start_on(self.addr())
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The listening socket's accept backlog. Under a flood of connections a short backlog (std's
/// is 128) overflows and the kernel drops SYNs: a real client then waits a second or more
/// for its SYN to be retransmitted. (The kernel caps it at `net.core.somaxconn`.)
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a non-blocking listener (address reuse on, as std does) with [`LISTEN_BACKLOG`].
/// Must run inside a tokio runtime context.
fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// Accepts connections until shutdown, then waits for the sessions to end.
async fn accept_loop(shared: Arc<Shared>, listener: std::net::TcpListener, done: mpsc::Sender<()>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener");
            let _ = done.send(());
            return;
        }
    };
    let mut shutdown = shared.shutdown.subscribe();
    let mut sessions = JoinSet::new();
    while !*shutdown.borrow_and_update() {
        tokio::select! {
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    // Finished sessions leave the set here.
                    while sessions.try_join_next().is_some() {}
                    let ticket = match shared.admission.admit() {
                        Admit::Admitted(ticket) => ticket,
                        Admit::Refused => {
                            shared.refused_connections.fetch_add(1, Ordering::Relaxed);
                            let max = shared.settings.max_connections;
                            match shared.admission.refusal() {
                                Some(slot) => {
                                    tracing::warn!(%peer, max_connections = max, "connection refused: too many connections");
                                    sessions.spawn(refuse(shared.clone(), stream, slot));
                                }
                                None => {
                                    tracing::warn!(%peer, max_connections = max, "connection refused: too many connections (closed unanswered)");
                                    drop(stream);
                                }
                            }
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                    match shared.settings.tls.clone() {
                        None => sessions.spawn(session::run(shared.clone(), stream, peer, ticket)),
                        Some(acceptor) => sessions
                            .spawn(tls_session(shared.clone(), acceptor, stream, peer, ticket)),
                    };
                    // Let the new session run (and read the logon that is usually waiting
                    // already) before accepting more: a burst of accepts would otherwise
                    // displace connections that never had a chance to log on.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(STOP_TIMEOUT, async {
        while sessions.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        sessions.abort_all();
    }
    let _ = done.send(());
}

/// Answers a connection refused at accept with `too many connections` (`refusal.rs`), over
/// TLS when the listener speaks it; bounded in time, abandoned on shutdown.
async fn refuse(shared: Arc<Shared>, stream: tokio::net::TcpStream, _slot: RefusalSlot) {
    let mut shutdown = shared.shutdown.subscribe();
    let max_frame = shared.settings.max_logon_frame;
    let answer = async {
        match shared.settings.tls.clone() {
            None => refusal::answer(stream, max_frame).await,
            Some(acceptor) => refusal::answer(acceptor.accept(stream).await?, max_frame).await,
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(refusal::REFUSAL_TIMEOUT, answer) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// Completes the TLS handshake (bounded by the handshake timeout, abandoned on shutdown), then
/// runs the session over TLS. A peer that does not speak TLS is closed, never served in clear.
/// The connection is pending (`ticket`) from its accept, so its handshake counts.
async fn tls_session(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let limit = shared.settings.tls_handshake_timeout;
    let displaced = ticket.displaced();
    let outcome = tokio::select! {
        r = tokio::time::timeout(limit, acceptor.accept(stream)) => r,
        _ = shutdown.wait_for(|stop| *stop) => return,
        // A newer connection needed the slot: no logon can come before the handshake ends.
        _ = displaced.notified() => return,
    };
    match outcome {
        Ok(Ok(tls)) => session::run(shared, tls, peer, ticket).await,
        Ok(Err(e)) => {
            shared
                .counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, error = %e, "TLS handshake failed; closing");
        }
        Err(_) => {
            shared
                .counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, timeout = ?limit, "TLS handshake timed out; closing");
        }
    }
}
