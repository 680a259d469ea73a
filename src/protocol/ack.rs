//! Ack vocabulary: the ack types a command can ask for, an ack's status, and its reason.
//!
//! AMPS acks are ordinary frames with `"c":"ack"`. On a command, `a` lists the ack types wanted
//! (a comma list); on an ack frame, `a` names the single type it is. [`AckTypes`] is a small bit
//! set that writes itself in the canonical order
//! `received,parsed,processed,persisted,completed,stats`. [`Reason`] knows every reason string
//! AMPS is documented or observed to send (PROTOCOL.md section 7) and keeps anything else
//! verbatim, so no information from the server is lost.

use std::fmt;

/// One ack type. The discriminant is the bit in [`AckTypes`]; declaration order is the wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum AckType {
    /// The server received the command.
    Received = 1,
    /// The server parsed the command.
    Parsed = 2,
    /// The server processed the command (logon, sow_delete and flush results, command errors).
    Processed = 4,
    /// The write is durable (the publish store's ack).
    Persisted = 8,
    /// A query or subscription completed.
    Completed = 16,
    /// Counters of a query or a sow_delete.
    Stats = 32,
}

impl AckType {
    /// Every ack type, in wire order.
    pub const ALL: [AckType; 6] = [
        AckType::Received,
        AckType::Parsed,
        AckType::Processed,
        AckType::Persisted,
        AckType::Completed,
        AckType::Stats,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AckType::Received => "received",
            AckType::Parsed => "parsed",
            AckType::Processed => "processed",
            AckType::Persisted => "persisted",
            AckType::Completed => "completed",
            AckType::Stats => "stats",
        }
    }

    /// Parses one wire name; `None` for anything else.
    pub fn from_bytes(name: &[u8]) -> Option<AckType> {
        Some(match name {
            b"received" => AckType::Received,
            b"parsed" => AckType::Parsed,
            b"processed" => AckType::Processed,
            b"persisted" => AckType::Persisted,
            b"completed" => AckType::Completed,
            b"stats" => AckType::Stats,
            _ => return None,
        })
    }
}

impl fmt::Display for AckType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of ack types, as carried by the `a` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AckTypes(u8);

impl AckTypes {
    /// The empty set.
    pub const NONE: AckTypes = AckTypes(0);
    /// `processed` alone.
    pub const PROCESSED: AckTypes = AckTypes(AckType::Processed as u8);
    /// `persisted` alone.
    pub const PERSISTED: AckTypes = AckTypes(AckType::Persisted as u8);
    /// `stats` alone.
    pub const STATS: AckTypes = AckTypes(AckType::Stats as u8);

    /// A set holding only `t`.
    pub const fn only(t: AckType) -> AckTypes {
        AckTypes(t as u8)
    }

    /// This set with `t` added.
    pub const fn with(self, t: AckType) -> AckTypes {
        AckTypes(self.0 | t as u8)
    }

    /// Whether `t` is in the set.
    pub const fn contains(self, t: AckType) -> bool {
        self.0 & t as u8 != 0
    }

    /// Whether the set is exactly `{t}`.
    pub const fn is_only(self, t: AckType) -> bool {
        self.0 == t as u8
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in wire order.
    pub fn iter(self) -> impl Iterator<Item = AckType> {
        AckType::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    /// Parses a comma list. Unknown names are ignored (a tolerant reader), so the set may be
    /// smaller than the list.
    pub fn parse(list: &[u8]) -> AckTypes {
        list.split(|b| *b == b',')
            .filter_map(|name| AckType::from_bytes(name.trim_ascii()))
            .fold(AckTypes::NONE, AckTypes::with)
    }
}

impl From<AckType> for AckTypes {
    fn from(t: AckType) -> AckTypes {
        AckTypes::only(t)
    }
}

impl fmt::Display for AckTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(t.as_str())?;
        }
        Ok(())
    }
}

/// The `status` of an ack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// The command succeeded (also the meaning of an ack without `status`).
    #[default]
    Success,
    /// The command failed; `reason` says why.
    Failure,
    /// Logon only: the server asks the client to authenticate again.
    Retry,
    /// Any other status string, verbatim.
    Other(String),
}

impl Status {
    /// The wire form.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Retry => "retry",
            Status::Other(s) => s,
        }
    }

    /// Parses the wire form; unknown strings are kept.
    pub fn from_str_lossless(s: &str) -> Status {
        match s {
            "success" => Status::Success,
            "failure" => Status::Failure,
            "retry" => Status::Retry,
            other => Status::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident => $text:literal, )*) => {
        /// The `reason` of a failure ack: the strings AMPS sends as variants, anything else
        /// kept verbatim in [`Reason::Other`].
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
            /// A reason this crate does not know, exactly as the server sent it.
            Other(String),
        }

        impl Reason {
            /// The wire form, exactly as AMPS writes it.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Reason::$variant => $text, )*
                    Reason::Other(s) => s,
                }
            }

            /// Parses a reason without allocating for the known strings.
            pub fn from_str_lossless(s: &str) -> Reason {
                match s {
                    $( $text => Reason::$variant, )*
                    // The official Python client's constant spells it out in full.
                    "authentication failure" => Reason::AuthFailure,
                    other => Reason::Other(other.to_owned()),
                }
            }
        }
    };
}

reasons! {
    /// The sequence number is not above the last one persisted for this client name.
    Duplicate => "duplicate",
    /// The user may not perform this command on this topic.
    NotEntitled => "not entitled",
    /// The content filter could not be parsed.
    BadFilter => "bad filter",
    /// A SOW key is malformed.
    BadSowKey => "bad sow key",
    /// A topic regular expression is malformed.
    BadRegexTopic => "bad regex topic",
    /// Regular-expression topics are not allowed here.
    RegexTopicNotSupported => "regex topic not supported",
    /// The topic is not valid (or not declared for this command).
    InvalidTopic => "invalid topic",
    /// The topic or the filter is invalid.
    InvalidTopicOrFilter => "invalid topic or filter",
    /// The message type is unknown to the server.
    InvalidMessageType => "invalid message type",
    /// The `o` options are invalid.
    InvalidOptions => "invalid options",
    /// The bookmark is invalid.
    InvalidBookmark => "invalid bookmark",
    /// The subscription id is invalid.
    InvalidSubid => "invalid subid",
    /// The order-by clause is invalid.
    InvalidOrderBy => "invalid order by",
    /// The command needs a topic.
    NoTopic => "no topic",
    /// The command needs a topic or a filter.
    NoTopicOrFilter => "no topic or filter",
    /// The command needs a filter or a bookmark.
    NoFilterOrBookmark => "no filter or bookmark",
    /// The logon carried no client name.
    NoClientName => "no client name",
    /// The command is not supported.
    NotSupported => "not supported",
    /// A command came before a successful logon.
    LogonRequired => "logon required",
    /// A second logon on the same connection.
    DuplicateLogonAttempt => "duplicate logon attempt",
    /// The client name is already connected.
    NameInUse => "name in use",
    /// The user name or password was refused.
    AuthFailure => "auth failure",
    /// The subscription already exists.
    SubscriptionAlreadyExists => "subscription already exists",
    /// The subscription id is in use.
    SubidInUse => "subid in use",
    /// The SOW store failed to write.
    SowStoreFailed => "sow store failed",
    /// The transaction log failed to write.
    TxStoreFailure => "tx store failure",
    /// Transaction log replay failed.
    TxnReplayFailed => "txn replay failed",
    /// The query needs an order-by clause.
    OrderbyRequired => "orderby required",
    /// The order-by clause is too large.
    OrderbyTooLarge => "orderby too large",
    /// The projection clause is too large.
    ProjectionClauseTooLarge => "projection clause too large",
    /// A sow_delete named more than one selector.
    SowDeleteOneSelector => "sow_delete command only supports one of: filter, sow_keys, bookmark, or data",
    /// The message exceeds the server's maximum message size (the embedded server's reason).
    MessageTooLarge => "message too large",
    /// The embedded server has `max_connections` open: the logon is refused.
    TooManyConnections => "too many connections",
    /// The embedded server saw no complete logon within its logon deadline.
    LogonTimeout => "logon timeout",
    /// The embedded server had `max_pending_logons` connections waiting to log on and closed
    /// the oldest to make room for a new one.
    TooManyPendingLogons => "too many pending logons",
    /// A frame began arriving at the embedded server but did not complete within its read
    /// deadline (a stalled or trickling peer).
    ReadTimeout => "read timeout",
    /// The embedded server's output to this connection passed `max_unsent_bytes`: the client
    /// does not read.
    SlowConsumer => "slow consumer",
    /// The embedded server's buffers passed its server-wide memory budget and this connection
    /// held the most.
    MemoryBudgetExceeded => "memory budget exceeded",
    /// The embedded server received bytes that are not an AMPS frame.
    BadFrame => "bad frame",
}

impl Reason {
    /// Whether a persisted ack carrying this reason is a failed write whatever its status
    /// (PROTOCOL.md section 6).
    pub fn marks_failed_write(&self) -> bool {
        matches!(self, Reason::Duplicate | Reason::NotEntitled)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_types_write_in_wire_order() {
        let set = AckTypes::STATS
            .with(AckType::Persisted)
            .with(AckType::Processed);
        assert_eq!(set.to_string(), "processed,persisted,stats");
        assert_eq!(AckTypes::parse(b"stats,processed,persisted"), set);
        assert_eq!(AckTypes::parse(b"persisted, bogus"), AckTypes::PERSISTED);
        assert!(AckTypes::PERSISTED.is_only(AckType::Persisted));
        assert!(!set.is_only(AckType::Persisted));
    }

    #[test]
    fn reasons_round_trip_and_keep_unknowns() {
        for text in [
            "duplicate",
            "not entitled",
            "bad filter",
            "name in use",
            "auth failure",
        ] {
            assert_eq!(Reason::from_str_lossless(text).as_str(), text);
        }
        assert_eq!(
            Reason::from_str_lossless("authentication failure"),
            Reason::AuthFailure
        );
        let odd = Reason::from_str_lossless("disk on fire");
        assert_eq!(odd, Reason::Other("disk on fire".into()));
        assert_eq!(odd.to_string(), "disk on fire");
        assert!(Reason::Duplicate.marks_failed_write());
        assert!(!Reason::BadFilter.marks_failed_write());
    }
}
