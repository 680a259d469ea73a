//! Error types, one enum per area, each variant carrying what a caller needs to act on it.

use thiserror::Error;

/// Bytes from a peer that are not a valid AMPS frame.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame's length prefix is above the configured maximum; the connection must be closed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced frame length (header + body).
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The header is not a flat JSON object of strings and numbers.
    #[error("malformed header at byte {offset}: {what}")]
    MalformedHeader {
        /// What was wrong.
        what: &'static str,
        /// Byte offset inside the header where it was noticed.
        offset: usize,
    },
    /// The connection ended in the middle of a frame: `have` of the `need` bytes (length prefix
    /// included) had arrived.
    #[error("connection closed mid-frame: {have} of {need} bytes received")]
    Truncated {
        /// Bytes of the unfinished frame received (length prefix included).
        have: usize,
        /// Bytes the frame needed (length prefix included; 4 when the prefix itself is cut).
        need: usize,
    },
    /// A persisted ack names a sequence above the highest the client ever assigned (or learned
    /// from a logon): obeying it would discard messages the server never received.
    #[error("persisted ack for sequence {seq}, above the highest assigned sequence {highest}")]
    AckBeyondAssigned {
        /// The ack's sequence.
        seq: u64,
        /// The highest sequence the client has assigned (or learned at logon).
        highest: u64,
    },
    /// A persisted ack went backwards: below an earlier cumulative ack on the same connection.
    /// (A new logon legitimately starts over; only acks on one connection are compared.)
    #[error("persisted ack for sequence {seq} after an ack for {previous} on the same connection")]
    AckWentBackwards {
        /// The ack's sequence.
        seq: u64,
        /// The highest sequence acknowledged earlier on this connection.
        previous: u64,
    },
    /// A logon ack reports a last sequence so close to `u64::MAX` that no sequence could follow.
    #[error("logon ack reports last sequence {last}, leaving no room for further sequences")]
    LastSequenceOutOfRange {
        /// The reported last sequence.
        last: u64,
    },
    /// The body of a `sow` batch frame is not a sequence of record headers each followed by
    /// exactly `l` bytes (a record header without `l`, an `l` past the end of the frame, or
    /// bytes after the last record).
    #[error("malformed sow batch at body byte {offset}: {what}")]
    MalformedSowBatch {
        /// What was wrong.
        what: &'static str,
        /// Byte offset inside the frame body where it was noticed.
        offset: usize,
    },
    /// The underlying socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// Whether this is the peer going away (connection reset or aborted, broken pipe, end of
    /// stream reported as an error) rather than bytes that break the protocol: a disconnect,
    /// to be reported and retried as one.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, ProtocolError::Io(e) if is_disconnect(e))
    }
}

/// Whether an I/O error means the peer went away (reset, aborted, broken pipe, early end).
pub(crate) fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
    )
}

/// A server URI that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriError {
    /// No URI was given.
    #[error("empty URI")]
    Empty,
    /// The URI has no `scheme://`. Holds the input with any password masked.
    #[error("URI {0:?} has no scheme (expected tcp:// or tcps://)")]
    MissingScheme(String),
    /// The scheme is not `tcp` or `tcps`.
    #[error("unsupported URI scheme {0:?} (expected tcp or tcps)")]
    UnsupportedScheme(String),
    /// `user:password@` with an empty user.
    #[error("URI has credentials but an empty user name")]
    EmptyUser,
    /// No host.
    #[error("URI has no host")]
    MissingHost,
    /// The host has characters no host name or address has (`[`, `]`, `@`, `/`, whitespace),
    /// or is an IPv6 address without brackets.
    #[error("URI host {0:?} is not a valid host name or address")]
    BadHost(String),
    /// No `:port`.
    #[error("URI has no port")]
    MissingPort,
    /// The port is not a number in 1..=65535.
    #[error("URI port {0:?} is not a number in 1..=65535")]
    BadPort(String),
    /// The message type (last path segment) has characters other than letters, digits, `_`, `-`.
    #[error("URI message type {0:?} is not valid")]
    BadMessageType(String),
    /// A `%XX` escape in the user or password is malformed.
    #[error("bad percent-encoding in the URI's credentials")]
    BadPercentEncoding,
    /// An `@` comes after the host: a user name or password holding `/`, `?` or `#`, which
    /// must be percent-encoded (`%2F`, `%3F`, `%23`).
    #[error("URI has an '@' after its host: percent-encode '/', '?' and '#' in the user name or password (%2F, %3F, %23)")]
    UnescapedCredentials,
}

/// A publish store that cannot do what was asked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A sequence was appended that is not above the last one assigned (a bug in the caller).
    #[error("sequence {seq} is not above the last assigned {last}")]
    SequenceNotIncreasing {
        /// The offending sequence.
        seq: u64,
        /// The last one assigned.
        last: u64,
    },
    /// The store is full and the full-store policy is to fail.
    #[error("publish store full: {messages} messages, {bytes} bytes held (limits {max_messages} messages, {max_bytes} bytes)")]
    Full {
        /// Messages held.
        messages: usize,
        /// Bytes held.
        bytes: usize,
        /// Message limit.
        max_messages: usize,
        /// Byte limit.
        max_bytes: usize,
    },
    /// A single message is larger than the store's byte capacity, so it could never fit.
    #[error("message of {size} bytes exceeds the store's byte capacity of {max_bytes}")]
    TooLarge {
        /// The message's weight.
        size: usize,
        /// The byte capacity.
        max_bytes: usize,
    },
    /// Another client holds the file store's lock.
    #[error("publish store at {path} is locked by another client (pid {holder:?})")]
    Locked {
        /// The store directory.
        path: std::path::PathBuf,
        /// The pid recorded by the holder, when readable.
        holder: Option<u32>,
    },
    /// The file store's files could not be read or written.
    #[error("publish store i/o error at {path}: {source}")]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file store record is damaged somewhere other than a torn tail (bad bytes with intact
    /// records after them, or in a finished segment). Nothing was cut.
    #[error("publish store file {path} is corrupt at offset {offset}: {what}; {records_beyond} intact records lie beyond it; nothing was cut (`actix-amps store --dir DIR --verify` lists the damage, `--repair` quarantines it)")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong.
        what: String,
        /// Intact records after the damage, in this segment and the later ones.
        records_beyond: u64,
    },
    /// The file store's disk (or the process's file size limit) has no room for the write: it
    /// was not stored, and so not sent. Writes work again once space is freed.
    #[error("publish store {path} has no disk space for the write ({source}); it was not stored or sent; free space and writes resume")]
    DiskFull {
        /// The segment file that could not grow.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl StoreError {
    /// A copy of this error to report to several callers (the I/O source is carried as its
    /// kind and text, so the message stays the same and is not nested).
    pub fn duplicate(&self) -> StoreError {
        let copy_io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            StoreError::SequenceNotIncreasing { seq, last } => StoreError::SequenceNotIncreasing {
                seq: *seq,
                last: *last,
            },
            StoreError::Full {
                messages,
                bytes,
                max_messages,
                max_bytes,
            } => StoreError::Full {
                messages: *messages,
                bytes: *bytes,
                max_messages: *max_messages,
                max_bytes: *max_bytes,
            },
            StoreError::TooLarge { size, max_bytes } => StoreError::TooLarge {
                size: *size,
                max_bytes: *max_bytes,
            },
            StoreError::Locked { path, holder } => StoreError::Locked {
                path: path.clone(),
                holder: *holder,
            },
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: copy_io(source),
            },
            StoreError::Corrupt {
                path,
                offset,
                what,
                records_beyond,
            } => StoreError::Corrupt {
                path: path.clone(),
                offset: *offset,
                what: what.clone(),
                records_beyond: *records_beyond,
            },
            StoreError::DiskFull { path, source } => StoreError::DiskFull {
                path: path.clone(),
                source: copy_io(source),
            },
        }
    }
}

/// A write the client could not accept into its store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The store is at capacity and the full-store policy is to fail.
    #[error("publish store full: {messages} messages and {bytes} bytes unacknowledged (limits {max_messages} messages, {max_bytes} bytes)")]
    StoreFull {
        /// Messages held.
        messages: usize,
        /// Bytes held.
        bytes: usize,
        /// Message limit.
        max_messages: usize,
        /// Byte limit.
        max_bytes: usize,
    },
    /// The message alone is larger than the maximum frame size or the store's byte capacity:
    /// it could never be sent or stored. Nothing was stored.
    #[error("message of {size} bytes exceeds the {limit} of {max} bytes")]
    TooLarge {
        /// Which limit it exceeds.
        limit: SizeLimit,
        /// The message's size as counted for that limit: for [`SizeLimit::MaxFrame`] the
        /// topic, body and options plus an allowance for the header; for
        /// [`SizeLimit::StoreBytes`] its weight in the store (topic, body and options).
        size: usize,
        /// The limit's value.
        max: usize,
    },
    /// The topic is empty.
    #[error("empty topic")]
    EmptyTopic,
    /// The store failed (a file store's disk, for example). The message was not stored.
    #[error("publish store error: {0}")]
    Store(#[from] StoreError),
    /// The client runs without a store and is not connected: the write cannot be kept.
    #[error("not connected, and the client has no publish store to keep the write")]
    NotConnected,
    /// The client gave up reconnecting; a write waiting for room can no longer be stored.
    #[error("client gave up reconnecting: {reason}")]
    GaveUp {
        /// Why it gave up.
        reason: GiveUpReason,
    },
    /// The client has stopped (or is stopping) and takes no more writes.
    #[error("client is stopped")]
    Stopped,
    /// A batch holds more messages or bytes than the whole store may: it could never be stored
    /// at once, and a batch is stored whole or not at all. Nothing of it was stored.
    #[error("batch of {messages} messages and {bytes} bytes exceeds the store's capacity of {max_messages} messages and {max_bytes} bytes")]
    BatchOverCapacity {
        /// Messages in the batch.
        messages: usize,
        /// Bytes the batch weighs.
        bytes: usize,
        /// Message limit.
        max_messages: usize,
        /// Byte limit.
        max_bytes: usize,
    },
    /// Another connection logged on with this client name and the client stopped (see
    /// `ConnectionEvent::NameInUse`).
    #[error("the client name was taken over by another connection; the client has stopped")]
    NameInUse,
}

/// Which size limit a [`PublishError::TooLarge`] message exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizeLimit {
    /// The largest frame the client sends
    /// ([`ClientConfig::max_frame`](crate::client::ClientConfig::max_frame)).
    MaxFrame,
    /// The publish store's byte capacity
    /// ([`ClientConfig::max_bytes`](crate::client::ClientConfig::max_bytes)).
    StoreBytes,
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SizeLimit::MaxFrame => "maximum frame size (ClientConfig::max_frame)",
            SizeLimit::StoreBytes => "publish store's byte capacity (ClientConfig::max_bytes)",
        })
    }
}

/// Why the client stopped reconnecting for good
/// ([`ConnectionEvent::GaveUp`](crate::client::ConnectionEvent::GaveUp),
/// [`FlushError::GaveUp`], [`PublishError::GaveUp`]). Once it gave up, the client takes no
/// more writes; it must be restarted (with a corrected configuration).
///
/// Errors compare by variant and by their messages (the inner errors carry I/O errors, which
/// have no equality of their own).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// No logon within
    /// [`ReconnectPolicy::max_retry_time`](crate::client::ReconnectPolicy::max_retry_time).
    #[error("no logon within the maximum retry time of {max:?}{}", match last_attempt { Some(e) => format!("; last attempt: {e}"), None => String::new() })]
    MaxRetryTime {
        /// The maximum retry time.
        max: std::time::Duration,
        /// How the last attempt failed, if one failed.
        last_attempt: Option<std::sync::Arc<ConnectError>>,
    },
    /// A server refused the credentials (`auth failure`, a [`ConnectError::LogonRefused`])
    /// and [`ReconnectPolicy::stop_on_auth_failure`](crate::client::ReconnectPolicy::stop_on_auth_failure)
    /// is set.
    #[error("{0}")]
    AuthFailure(std::sync::Arc<ConnectError>),
    /// The server's last sequence for this client name is below what the store already
    /// discarded as persisted, and
    /// [`ClientConfig::error_on_publish_gap`](crate::client::ClientConfig::error_on_publish_gap)
    /// is set: messages were lost server-side (a failover to a replica that was behind).
    #[error("publish gap: the server's last sequence is {server_last} but the store already discarded up to {discarded}")]
    PublishGap {
        /// The server's last persisted sequence for this client name.
        server_last: u64,
        /// The highest sequence the store had discarded as acknowledged.
        discarded: u64,
    },
    /// The publish store refused the logon for another reason.
    #[error("{0}")]
    LogonRejected(std::sync::Arc<ConnectError>),
}

impl GiveUpReason {
    /// The reason for a logon the publish store refused (`error` from its logon check).
    pub(crate) fn store_refused(error: ConnectError) -> GiveUpReason {
        match error {
            ConnectError::PublishGap {
                server_last,
                discarded,
            } => GiveUpReason::PublishGap {
                server_last,
                discarded,
            },
            other => GiveUpReason::LogonRejected(std::sync::Arc::new(other)),
        }
    }
}

impl PartialEq for GiveUpReason {
    fn eq(&self, other: &GiveUpReason) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for GiveUpReason {}

/// The client has stopped (after [`Shutdown`](crate::client::Shutdown), or because one of its
/// actors is gone): a request that needs it running gets this instead of a made-up answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[error("the client has stopped")]
pub struct ClientStopped;

/// A [`PublishFlush`](crate::client::PublishFlush) that did not complete.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushError {
    /// The deadline passed first.
    #[error("flush timed out after {waited_ms} ms with {unacknowledged} message(s) still unacknowledged{}", if *.connected { "" } else { " (not connected)" })]
    Timeout {
        /// Messages stored before the flush that are still unacknowledged.
        unacknowledged: usize,
        /// How long the call waited, in milliseconds.
        waited_ms: u64,
        /// Whether the client was logged on when the deadline passed.
        connected: bool,
    },
    /// The client stopped retrying (maximum retry time, refused credentials, publish gap).
    #[error(
        "client gave up reconnecting ({reason}) with {unacknowledged} message(s) unacknowledged"
    )]
    GaveUp {
        /// Why it gave up.
        reason: GiveUpReason,
        /// Messages still unacknowledged.
        unacknowledged: usize,
    },
    /// The client has stopped.
    #[error("client is stopped")]
    Stopped,
}

/// A [`SowDeleteAndWait`](crate::client::SowDeleteAndWait) that did not produce stats.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SowDeleteError {
    /// The server refused the delete.
    #[error("sow_delete failed: {reason}")]
    Failed {
        /// The server's reason (e.g. `bad filter`).
        reason: crate::protocol::Reason,
    },
    /// The stats ack did not come in time.
    #[error("sow_delete timed out waiting for the stats ack")]
    Timeout,
    /// The connection dropped before the stats ack came (with a store, the delete is replayed).
    #[error("disconnected before the sow_delete's stats ack arrived")]
    Disconnected,
    /// The delete could not be stored.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// A connection or logon attempt that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("connecting to {uri} failed: {source}")]
    Io {
        /// The server (password masked).
        uri: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// TCP connect (and, for `tcps://`, the TLS handshake) did not finish within the connect
    /// timeout.
    #[error("connecting to {uri} timed out")]
    ConnectTimeout {
        /// The server (password masked).
        uri: String,
    },
    /// The logon ack did not come in time.
    #[error("logon to {uri} timed out")]
    LogonTimeout {
        /// The server (password masked).
        uri: String,
    },
    /// The server refused the logon.
    #[error("logon to {uri} refused: {reason}")]
    LogonRefused {
        /// The server (password masked).
        uri: String,
        /// The server's reason (`auth failure`, `name in use`, ...).
        reason: crate::protocol::Reason,
    },
    /// The server's last sequence is below what the store already discarded: messages were lost
    /// server-side (e.g. failover to a replica that was behind).
    #[error("publish gap: the server's last sequence is {server_last} but the store already discarded up to {discarded}")]
    PublishGap {
        /// The server's last persisted sequence for this client name.
        server_last: u64,
        /// The highest sequence the store had discarded as acknowledged.
        discarded: u64,
    },
    /// The server sent bytes that are not AMPS.
    #[error("protocol error from {uri}: {source}")]
    Protocol {
        /// The server (password masked).
        uri: String,
        /// What was wrong.
        source: ProtocolError,
    },
    /// `tcps://` was asked for but the client has no TLS configuration
    /// ([`ClientConfig::tls`](crate::client::ClientConfig::tls)); never falls back to plaintext.
    #[error("{uri} asks for TLS but the client has no TLS configuration (set ClientConfig::tls); no plaintext fallback")]
    TlsUnavailable {
        /// The server (password masked).
        uri: String,
    },
    /// The TLS handshake failed (unknown certificate authority, certificate for another name,
    /// a peer that does not speak TLS) or the URI's host cannot be checked against a
    /// certificate. Retried with backoff like any failed attempt; never falls back to plaintext.
    #[error("TLS with {uri} failed: {source}")]
    Tls {
        /// The server (password masked).
        uri: String,
        /// What went wrong.
        source: TlsError,
    },
    /// The connection closed before the logon ack arrived.
    #[error("{uri} closed the connection during logon")]
    ClosedDuringLogon {
        /// The server (password masked).
        uri: String,
    },
    /// The server closed a logged-on connection and said why in a closing notice
    /// ([`protocol::notice`](crate::protocol::notice)): `slow consumer`,
    /// `memory budget exceeded`, `read timeout`, ...
    #[error("{uri} closed the connection: {reason}")]
    ClosedByServer {
        /// The server (password masked).
        uri: String,
        /// The server's reason.
        reason: crate::protocol::Reason,
    },
}

/// A TLS configuration that cannot be used, or a TLS handshake that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// PEM data that does not parse.
    #[error("bad PEM in {origin}: {message}")]
    Pem {
        /// The file (or "PEM bytes").
        origin: String,
        /// What was wrong.
        message: String,
    },
    /// PEM data without any `CERTIFICATE` section (or an empty root store).
    #[error("no certificate found in {origin}")]
    NoCertificates {
        /// The file (or "PEM bytes").
        origin: String,
    },
    /// PEM data without a private key section.
    #[error("no private key found in {origin}")]
    NoPrivateKey {
        /// The file (or "PEM bytes").
        origin: String,
    },
    /// A trust root that rustls refuses.
    #[error("unusable certificate in {origin}: {message}")]
    BadCertificate {
        /// The file (or "PEM bytes").
        origin: String,
        /// rustls' reason.
        message: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Rustls(rustls::Error),
    /// The URI's host is neither a DNS name nor an IP address, so no certificate can match it.
    #[error("host {host:?} is not a valid DNS name or IP address for certificate checks")]
    InvalidServerName {
        /// The host as given in the URI.
        host: String,
    },
    /// The handshake failed. The source is usually an `io::Error` wrapping a `rustls::Error`
    /// (`InvalidCertificate(UnknownIssuer)`, `NotValidForName`, ...), or an early end of stream
    /// when the peer does not speak TLS.
    #[error("handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// The client could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration names no server URI.
    #[error("no server URI configured")]
    NoUri,
    /// The publish store could not be opened.
    #[error("cannot open the publish store: {0}")]
    Store(#[from] StoreError),
    /// The arbiter given to `start_in` has stopped.
    #[error("the arbiter to start the client in has stopped")]
    ArbiterStopped,
    /// The bookmark store could not be opened.
    #[error("cannot open the bookmark store: {0}")]
    BookmarkStore(#[from] crate::client::subscriptions::BookmarkStoreError),
}

/// The embedded server (or the journal reader) cannot start or read its data directory.
#[cfg(feature = "server")]
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file or directory under the data directory could not be created, read or written.
    #[error("data directory i/o error at {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another server (or a journal reader) holds the data directory's lock.
    #[error("data directory {path} is in use by another server (LOCK is held)")]
    Locked {
        /// The data directory.
        path: std::path::PathBuf,
    },
    /// A configured topic regular expression does not compile.
    #[error("invalid topic regex {pattern:?}: {message}")]
    BadRegex {
        /// The pattern as given.
        pattern: String,
        /// The regex crate's message.
        message: String,
    },
    /// The transaction log is corrupt before its tail (a torn tail is cut off, not an error).
    #[error("transaction log {path} is corrupt at offset {offset}: {what}")]
    Corrupt {
        /// The log file.
        path: std::path::PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// The transaction log is damaged: bad bytes with intact records after them, or in a
    /// finished segment, or records missing between segments (a torn tail is cut quietly and
    /// is not this). Nothing was changed on disk.
    #[error("transaction log {path} is damaged at offset {offset}..{end} ({what}); {records_beyond} intact records lie beyond it{}; nothing was cut: `actix-amps journal --data DIR --verify` lists the damage, `actix-amps serve --repair` quarantines it", if *.ranges > 1 { format!(" ({ranges} damaged ranges in all)", ranges = .ranges) } else { String::new() })]
    LogDamaged {
        /// The segment file.
        path: std::path::PathBuf,
        /// First damaged byte.
        offset: u64,
        /// End of the damaged bytes.
        end: u64,
        /// What was wrong.
        what: String,
        /// Intact records after the damage, in the whole log.
        records_beyond: u64,
        /// Damaged ranges in the log.
        ranges: usize,
    },
    /// A record with a valid checksum has a kind this version must understand but does not
    /// (the log was written by a newer version).
    #[error("transaction log {path} has a record of unknown kind {kind} at offset {offset} (written by a newer version?)")]
    UnsupportedRecord {
        /// The segment file.
        path: std::path::PathBuf,
        /// Offset of the record.
        offset: u64,
        /// The kind byte.
        kind: u8,
    },
    /// History older than the retained log was asked for (a bookmark older than retention).
    #[error("log position {requested} is older than the retained log, which starts at LSN {first_retained}")]
    NotRetained {
        /// The LSN (or segment) asked for.
        requested: u64,
        /// The oldest LSN still in the log.
        first_retained: u64,
    },
    /// A snapshot of the SOW and the last sequences is damaged or incomplete.
    #[error("snapshot {path} is damaged at offset {offset} ({what}); nothing was changed: `actix-amps journal --data DIR --verify` reports it, `actix-amps serve --repair` quarantines it")]
    SnapshotDamaged {
        /// The snapshot file.
        path: std::path::PathBuf,
        /// First damaged byte.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// The data directory has a transaction log in the single-file format of earlier versions.
    #[error("{path} is a transaction log in the format of an earlier version; move it away to start with an empty log")]
    OldLogFormat {
        /// The old log file.
        path: std::path::PathBuf,
    },
    /// The TLS certificate or key cannot be used.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    /// The server runtime could not be created, or the server is not running.
    #[error("server runtime error: {0}")]
    Runtime(String),
}
