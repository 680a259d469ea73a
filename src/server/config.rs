//! Server configuration: a builder of plain values, validated (regexes compiled) by
//! [`Server::start`](super::Server::start).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::txlog::{Retention, DEFAULT_RETENTION, DEFAULT_SEGMENT_BYTES, DEFAULT_SNAPSHOT_EVERY};
use crate::protocol::{Password, DEFAULT_MAX_FRAME};
use crate::tls::TlsIdentity;

/// When the server's transaction log writer calls `fsync` (`File::sync_data`).
///
/// Not to be confused with the client's [`FsyncPolicy`](crate::client::FsyncPolicy), which
/// says when the client's file *publish store* is forced to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFsyncPolicy {
    /// After every group-commit batch, before acking it `persisted` (the default).
    #[default]
    Batch,
    /// Never: a write is "durable" once handed to the operating system (benchmarks only).
    Never,
}

impl std::str::FromStr for LogFsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFsyncPolicy, String> {
        match s {
            "batch" => Ok(LogFsyncPolicy::Batch),
            "never" => Ok(LogFsyncPolicy::Never),
            other => Err(format!(
                "unknown fsync policy {other:?} (expected batch or never)"
            )),
        }
    }
}

/// How to run a [`Server`](super::Server). Build with [`ServerConfig::new`] and the chained
/// setters; every field is public for inspection.
///
/// ```
/// use std::time::Duration;
/// use actix_amps::server::{LogFsyncPolicy, Retention, ServerConfig};
///
/// let config = ServerConfig::new("/var/lib/amps-test")
///     .sow("^orders$", &["/id"]) // keyed by the JSON field `id`
///     .deny_write("^audit\\.") // writes to `audit.*` are refused `not entitled`
///     .user("alice", "secret")
///     .ack_conflation(Duration::from_millis(5))
///     .fsync(LogFsyncPolicy::Batch)
///     .retain(Retention::Bytes(1 << 30))
///     .max_connections(100);
/// assert_eq!(config.listen.ip().to_string(), "127.0.0.1");
/// assert_eq!(config.listen.port(), 0); // a free port, chosen when the server starts
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Directory holding the transaction log and the `LOCK` file (created if missing).
    pub data_dir: PathBuf,
    /// Listening address (default `127.0.0.1:0`, an ephemeral port).
    pub listen: SocketAddr,
    /// Topic regexes no client may write to (`not entitled`).
    pub deny_write: Vec<String>,
    /// Topic regexes no subscription or query may read (`not entitled`).
    pub deny_read: Vec<String>,
    /// SOW topics: a topic regex and its key fields (`/id`, `/region`, ...).
    pub sow: Vec<(String, Vec<String>)>,
    /// Users and passwords; empty means authentication is disabled. Passwords never print.
    pub users: Vec<(String, Password)>,
    /// Default interval between conflated persisted acks (a logon may ask for another).
    pub ack_conflation: Duration,
    /// fsync policy of the transaction log.
    pub fsync: LogFsyncPolicy,
    /// Largest accepted message body; larger writes fail with `message too large`.
    pub max_message_size: usize,
    /// Most connections open at once; one more is closed as soon as it is accepted (with a
    /// `warn` log line), before it can send anything.
    pub max_connections: usize,
    /// Most bytes a connection may have waiting to be written to it. A client that stops
    /// reading while it keeps sending (so its acks pile up) is disconnected once its unsent
    /// output passes this, so one slow reader cannot make the server grow without bound.
    pub max_unsent_bytes: usize,
    /// The certificate and key: when set the listener speaks only TLS (`tcps://`).
    pub tls: Option<TlsIdentity>,
    /// How long a TLS handshake may take before the connection is closed.
    pub tls_handshake_timeout: Duration,
    /// How long a new connection has to deliver its logon frame (counted after any TLS
    /// handshake); after it, the connection is closed with a `logon timeout` notice. Logged-on
    /// connections may stay idle for as long as they like (AMPS behaviour).
    pub logon_timeout: Duration,
    /// Largest frame accepted before logon (a logon needs a few hundred bytes); a larger one
    /// closes the connection with a `message too large` notice before it is buffered.
    pub max_logon_frame: usize,
    /// Most connections open at once that have not logged on, within `max_connections`. One
    /// more displaces the oldest of them (closed with `too many pending logons`), so idle
    /// connections never lock out a real client, which logs on as soon as it connects.
    pub max_pending_logons: usize,
    /// How long a frame may take to arrive once its first bytes have: a peer that sends part
    /// of a frame and stalls (or trickles) is closed with a `read timeout` notice. Silence
    /// between frames is never timed out.
    pub frame_timeout: Duration,
    /// Server-wide budget for the bytes connections buffer (input being framed plus output
    /// not yet sent). Past it, the connections holding the most are closed with a
    /// `memory budget exceeded` notice and a `warn` log line, largest first.
    pub max_buffered_bytes: usize,
    /// A transaction log segment is finished (and a new one started) once it holds this many
    /// bytes.
    pub log_segment_bytes: u64,
    /// How much finished log history to keep (removal only of what nothing still needs; see
    /// [`txlog::retention`](super::txlog::retention)).
    pub retain: Retention,
    /// A snapshot of the SOW and of every client name's last sequence is written each time this
    /// many bytes have been logged since the last one; start-up replays at most about this much.
    pub snapshot_every: u64,
    /// The most bytes the SOW may hold (each record counts its key, its body and a fixed
    /// overhead; each topic its name and an overhead); `None`: no limit. Writes that would grow
    /// it further fail with `sow store full: ...` and change nothing; replacing a record by one
    /// no larger, and deletes, always work (`docs/STORAGE.md`).
    pub max_sow_bytes: Option<usize>,
}

/// Default [`ServerConfig::logon_timeout`]: 5 s.
pub const DEFAULT_LOGON_TIMEOUT: Duration = Duration::from_secs(5);

/// Default [`ServerConfig::max_logon_frame`]: 64 KiB.
pub const DEFAULT_MAX_LOGON_FRAME: usize = 64 << 10;

/// Default [`ServerConfig::max_pending_logons`].
pub const DEFAULT_MAX_PENDING_LOGONS: usize = 256;

/// Default [`ServerConfig::frame_timeout`]: 30 s.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`ServerConfig::max_buffered_bytes`]: 512 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 512 << 20;

/// Default [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default [`ServerConfig::max_unsent_bytes`]: 32 MiB.
pub const DEFAULT_MAX_UNSENT_BYTES: usize = 32 << 20;

impl ServerConfig {
    /// Defaults: listen on `127.0.0.1:0`, fsync per batch, 5 ms ack conflation, 64 MiB maximum
    /// message, 1024 connections, 32 MiB of unsent output per connection, no users (no
    /// authentication), nothing denied, no SOW topics, plaintext (no TLS; a 10 s handshake
    /// timeout once TLS is set); before logon 5 s and 64 KiB for the logon frame, at most 256
    /// connections waiting; 30 s for a begun frame to arrive; 512 MiB of buffers in all;
    /// 64 MiB log segments, 1 GiB of log retained, a snapshot every 256 MiB logged, no SOW
    /// memory limit.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            deny_write: Vec::new(),
            deny_read: Vec::new(),
            sow: Vec::new(),
            users: Vec::new(),
            ack_conflation: Duration::from_millis(5),
            fsync: LogFsyncPolicy::Batch,
            max_message_size: DEFAULT_MAX_FRAME,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            logon_timeout: DEFAULT_LOGON_TIMEOUT,
            max_logon_frame: DEFAULT_MAX_LOGON_FRAME,
            max_pending_logons: DEFAULT_MAX_PENDING_LOGONS,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            log_segment_bytes: DEFAULT_SEGMENT_BYTES,
            retain: DEFAULT_RETENTION,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            max_sow_bytes: None,
        }
    }

    /// Sets how many logged bytes trigger the next snapshot (at least 4 KiB).
    pub fn snapshot_every(mut self, bytes: u64) -> Self {
        self.snapshot_every = bytes.max(4096);
        self
    }

    /// Bounds the SOW's memory: writes that would grow it past `bytes` fail.
    pub fn max_sow_bytes(mut self, bytes: usize) -> Self {
        self.max_sow_bytes = Some(bytes);
        self
    }

    /// Sets the size at which a transaction log segment is finished (at least 4 KiB).
    pub fn log_segment_bytes(mut self, bytes: u64) -> Self {
        self.log_segment_bytes = bytes.max(4096);
        self
    }

    /// Sets how much finished log history to keep.
    pub fn retain(mut self, retain: Retention) -> Self {
        self.retain = retain;
        self
    }

    /// Listens on `addr`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Refuses writes to topics matching `topic_regex` with `not entitled` (compiled at start).
    pub fn deny_write(mut self, topic_regex: &str) -> Self {
        self.deny_write.push(topic_regex.to_owned());
        self
    }

    /// Refuses subscriptions and SOW queries whose topic matches `topic_regex` with
    /// `not entitled`, and never delivers messages on matching topics (so a regex subscription
    /// such as `.*` does not see them either). Compiled at start.
    pub fn deny_read(mut self, topic_regex: &str) -> Self {
        self.deny_read.push(topic_regex.to_owned());
        self
    }

    /// Declares a SOW topic: topics matching `topic_regex`, keyed by `key_fields` of the body.
    pub fn sow(mut self, topic_regex: &str, key_fields: &[&str]) -> Self {
        self.sow.push((
            topic_regex.to_owned(),
            key_fields.iter().map(|k| (*k).to_owned()).collect(),
        ));
        self
    }

    /// Adds a user; once any user exists, logons must carry a matching `user_id` and `pw`.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_owned(), Password::new(password)));
        self
    }

    /// Serves TLS only, with the certificate chain (leaf first) and the private key in these
    /// PEM files (read when the server starts; a bad file is [`ServerError::Tls`]). Plaintext
    /// clients then fail the handshake: nothing is ever served in clear.
    ///
    /// [`ServerError::Tls`]: crate::error::ServerError::Tls
    pub fn tls(mut self, cert_pem: impl Into<PathBuf>, key_pem: impl Into<PathBuf>) -> Self {
        self.tls = Some(TlsIdentity::Files {
            cert: cert_pem.into(),
            key: key_pem.into(),
        });
        self
    }

    /// Like [`ServerConfig::tls`], with the PEM text in memory.
    pub fn tls_pem(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.tls = Some(TlsIdentity::Pem {
            cert: cert_pem.into(),
            key: key_pem.into(),
        });
        self
    }

    /// Sets how long a TLS handshake may take (a silent peer is closed after it).
    pub fn tls_handshake_timeout(mut self, d: Duration) -> Self {
        self.tls_handshake_timeout = d;
        self
    }

    /// Sets the default conflated persisted-ack interval.
    pub fn ack_conflation(mut self, d: Duration) -> Self {
        self.ack_conflation = d;
        self
    }

    /// Sets the fsync policy.
    pub fn fsync(mut self, p: LogFsyncPolicy) -> Self {
        self.fsync = p;
        self
    }

    /// Sets the largest accepted message body in bytes.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the most connections open at once (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets the most unsent output bytes per connection before it is disconnected (at least 1).
    pub fn max_unsent_bytes(mut self, bytes: usize) -> Self {
        self.max_unsent_bytes = bytes;
        self
    }

    /// Sets how long a new connection may take to deliver its logon.
    pub fn logon_timeout(mut self, d: Duration) -> Self {
        self.logon_timeout = d;
        self
    }

    /// Sets the largest frame accepted before logon (at least 1 KiB).
    pub fn max_logon_frame(mut self, bytes: usize) -> Self {
        self.max_logon_frame = bytes;
        self
    }

    /// Sets the most connections waiting to log on at once (at least 1, at most
    /// `max_connections`).
    pub fn max_pending_logons(mut self, n: usize) -> Self {
        self.max_pending_logons = n;
        self
    }

    /// Sets how long a frame may take to arrive once begun.
    pub fn frame_timeout(mut self, d: Duration) -> Self {
        self.frame_timeout = d;
        self
    }

    /// Sets the server-wide budget for buffered input and output, in bytes.
    ///
    /// ```
    /// use actix_amps::server::ServerConfig;
    /// use std::time::Duration;
    /// // A shared CI server: 2 s to log on, 64 waiting at most, 128 MiB of buffers in all.
    /// let config = ServerConfig::new("/tmp/amps")
    ///     .logon_timeout(Duration::from_secs(2))
    ///     .max_pending_logons(64)
    ///     .max_buffered_bytes(128 << 20);
    /// assert_eq!(config.max_logon_frame, 64 << 10);
    /// ```
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }
}
