//! Typed errors of the subscription operations, one enum per operation.
//!
//! A server's refusal keeps its reason typed ([`Reason::BadFilter`], [`Reason::NotEntitled`],
//! [`Reason::InvalidTopic`], [`Reason::BadRegexTopic`], [`Reason::SubidInUse`],
//! [`Reason::InvalidOrderBy`], ... and [`Reason::Other`] for any text the client does not know),
//! so code can match on it and a person can read it (`Display` gives the server's words).

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::protocol::Reason;

/// Why a subscribe (`Subscribe`, `SowAndSubscribe`) failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The server refused it (a failure ack); the reason is the server's, typed.
    #[error("the server refused the subscription: {reason}")]
    Refused {
        /// The server's reason (`bad filter`, `not entitled`, ...).
        reason: Reason,
    },
    /// No processed ack within the timeout. The client sent an unsubscribe for it and forgot it.
    #[error("no answer from the server within {timeout:?}")]
    Timeout {
        /// The timeout that passed.
        timeout: Duration,
    },
    /// This client already has a subscription or query with that id.
    #[error("sub id {sub_id:?} is already in use on this client")]
    SubIdInUse {
        /// The id.
        sub_id: String,
    },
    /// The request cannot be sent as it is (an empty topic, a zero batch size, ...).
    #[error("invalid subscription request: {what}")]
    Invalid {
        /// What is wrong.
        what: &'static str,
    },
    /// `CancelSubscription` or `CancelAllSubscriptions` came before the processed ack.
    #[error("cancelled before the server acknowledged it")]
    Cancelled,
    /// The client stopped (or gave up reconnecting) before the subscription was established.
    #[error("the client stopped")]
    Stopped,
}

/// Why a SOW query (`SowQuery`, `SowCollect`) failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// The server refused it (a failure ack); the reason is the server's, typed.
    #[error("the server refused the query: {reason}")]
    Refused {
        /// The server's reason (`bad filter`, `invalid order by`, ...).
        reason: Reason,
    },
    /// No answer (processed ack, or for `SowCollect` the completed ack) within the timeout.
    #[error("the query did not complete within {timeout:?}")]
    Timeout {
        /// The timeout that passed.
        timeout: Duration,
    },
    /// A query or sub id already in use on this client.
    #[error("query id {query_id:?} is already in use on this client")]
    QueryIdInUse {
        /// The id.
        query_id: String,
    },
    /// The request cannot be sent as it is.
    #[error("invalid query: {what}")]
    Invalid {
        /// What is wrong.
        what: &'static str,
    },
    /// The connection dropped before the query completed (queries are not re-sent).
    #[error("the connection dropped before the query completed")]
    Disconnected,
    /// `SowCollect` got more records than its limit.
    #[error("the query returned more than {limit} records")]
    TooManyRecords {
        /// The limit.
        limit: usize,
    },
    /// The client stopped.
    #[error("the client stopped")]
    Stopped,
}

/// Why `CancelSubscription` did nothing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelError {
    /// No subscription with that id.
    #[error("no subscription {sub_id:?}")]
    UnknownSubscription {
        /// The id.
        sub_id: String,
    },
    /// The client stopped.
    #[error("the client stopped")]
    Stopped,
}

/// Why `Ping` failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PingError {
    /// Not logged on right now.
    #[error("not connected")]
    NotConnected,
    /// No answer within the timeout.
    #[error("no answer within {timeout:?}")]
    Timeout {
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The connection dropped while waiting.
    #[error("the connection dropped")]
    Disconnected,
    /// The server answered with a failure.
    #[error("the server refused: {reason}")]
    Refused {
        /// Its reason.
        reason: Reason,
    },
    /// The client stopped.
    #[error("the client stopped")]
    Stopped,
}

/// A bookmark store file that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BookmarkStoreError {
    /// Reading, writing or creating the file failed.
    #[error("bookmark store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another client holds the file.
    #[error("bookmark store {path} is in use by another client")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// A record before the last one is damaged (a torn last record is expected after a crash
    /// and ignored; damage elsewhere means the file cannot be trusted to resume from).
    #[error("bookmark store {path} is damaged at line {line}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
}
