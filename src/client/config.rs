//! Client configuration: what to connect to, how to store, how to behave when things go wrong.
//!
//! Build it with [`ClientConfig::new`] and the chained setters, then start the client with
//! [`ClientConfig::start`] (inside an actix `System` or a tokio `LocalSet`). Defaults are chosen
//! for a publisher that must not lose data: a memory store, wait-when-full backpressure,
//! exponential reconnect backoff with no time limit, giving up on a refused password
//! ([`ReconnectPolicy::stop_on_auth_failure`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::client::store::FsyncPolicy;

use crate::error::UriError;
use crate::protocol::uri::{parse_uri, AmpsUri, Password};
use crate::protocol::DEFAULT_MAX_FRAME;
use crate::tls::TlsClientConfig;

/// Which publish store the client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// No store: publishes carry no sequence and ask for no ack; nothing is replayed and failures
    /// cannot be detected. For fire-and-forget data only.
    None,
    /// Unacknowledged messages in memory: survives reconnects, not the process.
    Memory,
    /// Unacknowledged messages in a directory of segment files: survives the process.
    ///
    /// When a write resolves `Ok`: under `Always` and `Batch` it is already fsynced to disk
    /// (`Always` in the append itself, `Batch` by the group commit the store actor runs before
    /// answering), so a crash afterwards never loses it; under `Never` it has been written to
    /// the operating system (survives the process, not a power loss). See
    /// [`FileStore`](crate::client::store::FileStore).
    File {
        /// The store directory (locked while the client runs).
        dir: PathBuf,
        /// When appended messages reach the disk.
        fsync: FsyncPolicy,
    },
}

impl StoreKind {
    /// A file store in `dir` with the default `batch` fsync policy (group commit).
    pub fn file(dir: impl Into<PathBuf>) -> StoreKind {
        StoreKind::File {
            dir: dir.into(),
            fsync: FsyncPolicy::Batch,
        }
    }
}

/// What a publish does when the store is at capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FullPolicy {
    /// The publish resolves once acknowledgements free room (backpressure); publishes stay in
    /// order.
    #[default]
    Wait,
    /// The publish fails at once with [`PublishError::StoreFull`](crate::error::PublishError).
    Error,
}

/// How the connection waits between attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// First attempt to a server immediately, then `initial` doubling up to `max`, each delay
    /// with up to `jitter` (a fraction, 0.0..=1.0) randomly added or removed.
    Exponential {
        /// First delay after an immediate attempt (AMPS HAClient: 200 ms).
        initial: Duration,
        /// Largest delay (AMPS HAClient: 20 s).
        max: Duration,
        /// Fraction of each delay randomised.
        jitter: f64,
    },
    /// The same delay between every attempt (the first one still immediate).
    Fixed(Duration),
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::Exponential {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(20),
            jitter: 0.2,
        }
    }
}

/// Reconnect behaviour.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Delay schedule.
    pub backoff: Backoff,
    /// Give up after this long without a logged-on connection: pending flushes then fail with
    /// [`FlushError::GaveUp`](crate::error::FlushError::GaveUp). `None`: retry forever.
    pub max_retry_time: Option<Duration>,
    /// What to do when a server refuses the logon with `auth failure`.
    ///
    /// `true` (the default): the client gives up at once: it emits
    /// [`ConnectionEvent::GaveUp`](crate::client::ConnectionEvent::GaveUp) and pending flushes
    /// fail with [`FlushError::GaveUp`](crate::error::FlushError::GaveUp). The credentials
    /// cannot change while the client runs, so retrying them cannot succeed unless the server's
    /// user list changes; retrying a bad password forever hides a configuration error behind a
    /// client that looks merely disconnected, and it can trip the server's lock-out or alerting
    /// for password guessing. Stopping makes the mistake loud and immediate.
    ///
    /// `false`: the refusal counts as a failed attempt on that server and the client retries
    /// with the normal, growing [`Backoff`] (the same credentials are never retried faster than
    /// the backoff allows): for deployments where users are added to the server at run time.
    pub stop_on_auth_failure: bool,
}

impl ReconnectPolicy {
    /// The default policy ([`ReconnectPolicy::default`]), to adjust with the setters.
    ///
    /// ```
    /// use actix_amps::client::{Backoff, ReconnectPolicy};
    /// use std::time::Duration;
    /// let policy = ReconnectPolicy::new()
    ///     .backoff(Backoff::Fixed(Duration::from_millis(100)))
    ///     .max_retry_time(Some(Duration::from_secs(30)))
    ///     .stop_on_auth_failure(false);
    /// assert_eq!(policy.max_retry_time, Some(Duration::from_secs(30)));
    /// ```
    pub fn new() -> ReconnectPolicy {
        ReconnectPolicy::default()
    }

    /// Sets [`ReconnectPolicy::backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets [`ReconnectPolicy::max_retry_time`] (`None`: retry forever).
    pub fn max_retry_time(mut self, max: Option<Duration>) -> Self {
        self.max_retry_time = max;
        self
    }

    /// Sets [`ReconnectPolicy::stop_on_auth_failure`].
    pub fn stop_on_auth_failure(mut self, stop: bool) -> Self {
        self.stop_on_auth_failure = stop;
        self
    }
}

impl Default for ReconnectPolicy {
    /// The default [`Backoff`], no maximum retry time, stop on `auth failure`.
    fn default() -> ReconnectPolicy {
        ReconnectPolicy {
            backoff: Backoff::default(),
            max_retry_time: None,
            stop_on_auth_failure: true,
        }
    }
}

/// Everything the client needs to run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Client name: must be stable across restarts for a durable store (the server tracks the
    /// last sequence per name).
    pub client_name: String,
    /// Servers, tried round robin.
    pub uris: Vec<AmpsUri>,
    /// Credentials that override those in the URIs.
    pub user: Option<String>,
    /// Password that overrides the URIs'.
    pub password: Option<Password>,
    /// The publish store.
    pub store: StoreKind,
    /// Most unacknowledged messages the store holds.
    pub max_messages: usize,
    /// Most unacknowledged bytes (topic + body + options) the store holds.
    pub max_bytes: usize,
    /// Behaviour at capacity.
    pub when_full: FullPolicy,
    /// How long a logon may take before the attempt is abandoned.
    pub logon_timeout: Duration,
    /// Heartbeat interval (whole seconds on the wire); `None` disables heartbeats.
    pub heartbeat: Option<Duration>,
    /// The `ack_conflation` logon option; `None` leaves the server's default.
    pub ack_conflation: Option<Duration>,
    /// Largest frame accepted from or sent to the server.
    pub max_frame: usize,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// Reconnect behaviour.
    pub reconnect: ReconnectPolicy,
    /// Fail the logon when the server's last sequence is below what the store already
    /// discarded (messages lost server-side); the default ignores it, as AMPS clients do.
    pub error_on_publish_gap: bool,
    /// Trust roots for `tcps://` URIs; `None` makes every `tcps://` attempt fail with
    /// [`ConnectError::TlsUnavailable`](crate::error::ConnectError::TlsUnavailable).
    pub tls: Option<TlsClientConfig>,
    /// How long [`Shutdown`](crate::client::Shutdown) waits to prove to the server that the
    /// failures it received were read (`docs/ACCOUNTING.md`); default 2 s.
    pub close_timeout: Duration,
    /// Where bookmark subscriptions keep what their subscribers processed.
    pub bookmark_store: crate::client::subscriptions::BookmarkStoreKind,
}

impl ClientConfig {
    /// A configuration for `client_name` with no servers yet and the defaults: memory store,
    /// 1,000,000 messages / 1 GiB capacity, wait when full, 10 s logon timeout, heartbeats every
    /// 10 s, server-default ack conflation, 64 MiB frames, exponential reconnect forever
    /// except after an `auth failure`, no TLS configuration.
    pub fn new(client_name: impl Into<String>) -> ClientConfig {
        ClientConfig {
            client_name: client_name.into(),
            uris: Vec::new(),
            user: None,
            password: None,
            store: StoreKind::Memory,
            max_messages: 1_000_000,
            max_bytes: 1 << 30,
            when_full: FullPolicy::Wait,
            logon_timeout: Duration::from_secs(10),
            heartbeat: Some(Duration::from_secs(10)),
            ack_conflation: None,
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(5),
            reconnect: ReconnectPolicy::default(),
            error_on_publish_gap: false,
            tls: None,
            close_timeout: Duration::from_secs(2),
            bookmark_store: Default::default(),
        }
    }

    /// Adds a server URI (`tcp://[user[:password]@]host:port/amps/json`, or `tcps://` for TLS,
    /// which needs [`ClientConfig::tls`]).
    pub fn uri(mut self, uri: &str) -> Result<ClientConfig, UriError> {
        self.uris.push(parse_uri(uri)?);
        Ok(self)
    }

    /// Adds an already parsed URI.
    pub fn parsed_uri(mut self, uri: AmpsUri) -> ClientConfig {
        self.uris.push(uri);
        self
    }

    /// The TLS configuration (trust roots) for `tcps://` URIs. `tcp://` URIs stay plaintext.
    pub fn tls(mut self, tls: TlsClientConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Credentials used for every server (override the URIs'). The password is kept in a
    /// [`Password`], which never prints itself.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(Password::new(password));
        self
    }

    /// Sets the bookmark store (default: in memory). A file store lets bookmark
    /// subscriptions resume after the process restarts.
    pub fn bookmark_store(mut self, kind: crate::client::subscriptions::BookmarkStoreKind) -> Self {
        self.bookmark_store = kind;
        self
    }

    /// Sets the publish store.
    pub fn store(mut self, store: StoreKind) -> Self {
        self.store = store;
        self
    }

    /// Sets the capacity bound: most messages and most bytes held unacknowledged.
    pub fn capacity(mut self, max_messages: usize, max_bytes: usize) -> Self {
        self.max_messages = max_messages.max(1);
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Sets the behaviour at capacity.
    pub fn when_full(mut self, policy: FullPolicy) -> Self {
        self.when_full = policy;
        self
    }

    /// Sets how long a graceful [`Shutdown`](crate::client::Shutdown) waits for the read proof.
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }

    /// Sets the logon timeout.
    pub fn logon_timeout(mut self, d: Duration) -> Self {
        self.logon_timeout = d;
        self
    }

    /// Sets (or with `None` disables) heartbeats.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Asks the server for conflated persisted acks at this interval.
    pub fn ack_conflation(mut self, d: Duration) -> Self {
        self.ack_conflation = Some(d);
        self
    }

    /// Sets the largest frame accepted or sent.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Sets the reconnect policy.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Turns publish-gap detection on or off.
    pub fn error_on_publish_gap(mut self, on: bool) -> Self {
        self.error_on_publish_gap = on;
        self
    }

    /// The logon options string (`o`), if any.
    pub(crate) fn logon_options(&self) -> Option<String> {
        self.ack_conflation
            .map(|d| format!("ack_conflation={}ms", d.as_millis().max(1)))
    }
}
