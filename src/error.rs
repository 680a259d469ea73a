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
    /// The underlying socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A server URI that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriError {
    /// No URI was given.
    #[error("empty URI")]
    Empty,
    /// The URI has no `scheme://`.
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
    /// A file store record is corrupt somewhere other than the tail.
    #[error("publish store file {path} is corrupt at offset {offset}: {what}")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong.
        what: String,
    },
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
    /// The server runtime could not be created, or the server is not running.
    #[error("server runtime error: {0}")]
    Runtime(String),
}
