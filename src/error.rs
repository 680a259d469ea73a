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
