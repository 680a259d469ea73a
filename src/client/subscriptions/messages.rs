//! The subscription messages users send to the [`ClientActor`](crate::client::ClientActor),
//! and the events their subscriber actors receive.
//!
//! | message | answer |
//! |---|---|
//! | [`Subscribe`] (`.delta()` for delta_subscribe) | `Result<String, SubscribeError>`: the sub id, once the server's processed ack arrived |
//! | [`SowAndSubscribe`] (`.delta()`, `.oof()`) | the same |
//! | [`SowQuery`] | `Result<String, QueryError>`: the query id, once processed; records and completion follow as events |
//! | [`SowCollect`] | `Result<Vec<Delivery>, QueryError>`: every record, once the query completed |
//! | [`CancelSubscription`], [`CancelAllSubscriptions`] | `Result<(), CancelError>` / how many were cancelled |
//! | [`DiscardBookmarks`] | `()`: mark deliveries processed (for [`DiscardMode::Explicit`]) |
//! | [`Ping`] | `Result<PingReply, PingError>`: the server's version and a round trip |
//!
//! Events come in [`Deliveries`]: one mailbox message holding a batch of
//! [`SubscriptionEvent`]s for one subscription, in the order they happened.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::delivery::Delivery;
use super::errors::{CancelError, PingError, QueryError, SubscribeError};
use super::flow::FlowControl;
use crate::protocol::Reason;

/// The timeout of a subscribe or query when none is given.
pub const DEFAULT_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A batch of events for one subscription: the unit of delivery to a subscriber actor (one
/// mailbox message, one actor turn, however many messages). The next batch is sent when the
/// handler for this one has returned.
///
/// ```
/// use actix::prelude::*;
/// use actix_amps::client::subscriptions::{Deliveries, SubscriptionEvent};
///
/// struct Printer;
/// impl Actor for Printer { type Context = Context<Self>; }
/// impl Handler<Deliveries> for Printer {
///     type Result = ();
///     fn handle(&mut self, batch: Deliveries, _: &mut Context<Self>) {
///         for event in batch.events {
///             match event {
///                 SubscriptionEvent::Message(m) => println!("{:?}: {} bytes", m.topic(), m.data_slice().len()),
///                 other => println!("{}: {other:?}", batch.sub_id),
///             }
///         }
///     }
/// }
/// ```
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct Deliveries {
    /// The subscription (or query) these events are for.
    pub sub_id: Arc<str>,
    /// The events, oldest first.
    pub events: Vec<SubscriptionEvent>,
}

/// One thing that happened to a subscription or query.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// A message: publish, delta, out-of-focus notice or SOW record.
    Message(Delivery),
    /// A SOW result starts (`group_begin`).
    GroupBegin,
    /// A SOW result is complete (`group_end`); for a sow_and_subscribe, live messages follow.
    GroupEnd,
    /// A [`SowQuery`] completed (the server's `completed` ack, with its counts). The last
    /// event of a query.
    Completed(QueryStats),
    /// The connection dropped. The subscription will be placed again after the next logon;
    /// until then nothing arrives.
    Disconnected,
    /// The subscription was placed again after a reconnect and the server acknowledged it.
    /// `may_have_missed` is true when messages published during the outage may never arrive
    /// (a subscription without a bookmark, or a NOW bookmark subscription that had processed
    /// nothing); false when it resumed from its bookmark store.
    Resumed {
        /// Whether messages of the outage may be missing.
        may_have_missed: bool,
    },
    /// The subscription is over; nothing follows.
    Ended(SubscriptionEnd),
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEnd {
    /// [`CancelSubscription`] or [`CancelAllSubscriptions`].
    Unsubscribed,
    /// The server refused to place it again after a reconnect (`not entitled`, `bookmark not
    /// found in the transaction log` after failover to a server without that history, ...).
    Refused(Reason),
    /// Its subscriber fell behind under [`BehindPolicy::EndSubscription`]: the client
    /// unsubscribed and dropped this many queued deliveries.
    ///
    /// [`BehindPolicy::EndSubscription`]: super::BehindPolicy::EndSubscription
    FellBehind {
        /// Deliveries dropped.
        dropped: usize,
    },
    /// The connection dropped during a query (queries are not re-sent).
    Disconnected,
    /// The client stopped.
    ClientStopped,
}

/// The counts of a completed query (from its `completed` or `stats` ack).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryStats {
    /// Records returned.
    pub records_returned: Option<u64>,
    /// Records in the topic considered.
    pub topic_matches: Option<u64>,
    /// Records that matched.
    pub matches: Option<u64>,
}

/// Where a bookmark subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BookmarkStart {
    /// Everything the server's transaction log holds (sent as `0`).
    Epoch,
    /// Only messages from now on (sent as `0|1|`).
    Now,
    /// Where this sub id's subscriber got to, from the client's bookmark store; EPOCH when the
    /// store knows nothing of it. The sub id must be given (it names the history).
    MostRecent,
    /// A literal bookmark, a comma list of them, or a timestamp `YYYYMMDDTHHMMSSZ`.
    Literal(String),
}

impl BookmarkStart {
    /// The CLI's forms: `epoch`, `now`, `recent`, or anything else verbatim.
    pub fn parse(s: &str) -> BookmarkStart {
        match s {
            "epoch" | "0" => BookmarkStart::Epoch,
            "now" | "0|1|" => BookmarkStart::Now,
            "recent" | "most_recent" => BookmarkStart::MostRecent,
            other => BookmarkStart::Literal(other.to_owned()),
        }
    }

    /// The wire value of an explicit start (`None` for [`BookmarkStart::MostRecent`]).
    pub(crate) fn wire(&self) -> Option<&str> {
        match self {
            BookmarkStart::Epoch => Some("0"),
            BookmarkStart::Now => Some("0|1|"),
            BookmarkStart::MostRecent => None,
            BookmarkStart::Literal(s) => Some(s),
        }
    }
}

/// When a bookmark subscription's deliveries count as processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DiscardMode {
    /// When the subscriber's handler for the batch holding it has returned (the default).
    #[default]
    WhenHandled,
    /// Only when the subscriber says so with [`DiscardBookmarks`] (for handlers that hand the
    /// work on). At most `max_outstanding` deliveries may be undiscarded; past that the
    /// subscription's [`BehindPolicy`](super::BehindPolicy) applies.
    Explicit {
        /// Undiscarded deliveries allowed.
        max_outstanding: usize,
    },
}

/// Subscribe to a topic (or a topic regex), optionally filtered, optionally from a bookmark.
/// Resolves with the sub id once the server's processed ack arrives; deliveries go to the
/// recipient as [`Deliveries`].
///
/// Here the subscriber is a [`SubscriptionStream`](super::SubscriptionStream) (any actor's `Recipient<Deliveries>` will
/// do); `.bookmark(BookmarkStart::MostRecent)` would make it resume where it left off.
///
/// ```
/// # use std::time::Duration;
/// # use actix_amps::client::{ClientConfig, Publish, PublishFlush};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let server = actix_amps::server::Server::start(
/// #     actix_amps::server::ServerConfig::new(dir.path()).sow("orders", &["/id"]),
/// # )?;
/// # actix::System::new().block_on(async {
/// # let client = ClientConfig::new("subscribe-doc").uri(&server.uri())?.start()?;
/// use actix_amps::client::subscriptions::{Subscribe, SubscriptionEvent, SubscriptionStream};
/// use futures_util::StreamExt;
///
/// let (me, mut events) = SubscriptionStream::channel(16);
/// let sub_id = client
///     .send(Subscribe::new("orders", me).filter("/qty > 10").sub_id("big-orders"))
///     .await??;
/// assert_eq!(sub_id, "big-orders");
/// client.send(Publish::new("orders", r#"{"id":1,"qty":5}"#)).await??;
/// client.send(Publish::new("orders", r#"{"id":2,"qty":50}"#)).await??;
/// // Only the second matches the filter.
/// match tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
///     Some(SubscriptionEvent::Message(m)) => assert_eq!(m.data_slice(), br#"{"id":2,"qty":50}"#),
///     other => panic!("expected a message, got {other:?}"),
/// }
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok(()) }
/// ```
#[derive(Message)]
#[rtype(result = "Result<String, SubscribeError>")]
pub struct Subscribe {
    pub(crate) topic: String,
    pub(crate) filter: Option<String>,
    pub(crate) sub_id: Option<String>,
    pub(crate) bookmark: Option<BookmarkStart>,
    pub(crate) delta: bool,
    pub(crate) options: Vec<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) flow: FlowControl,
    pub(crate) discard: DiscardMode,
    pub(crate) timeout: Duration,
    pub(crate) recipient: Recipient<Deliveries>,
}

impl Subscribe {
    /// A subscription to `topic` (a topic name or a regex) delivering to `recipient`.
    pub fn new(topic: impl Into<String>, recipient: Recipient<Deliveries>) -> Subscribe {
        Subscribe {
            topic: topic.into(),
            filter: None,
            sub_id: None,
            bookmark: None,
            delta: false,
            options: Vec::new(),
            correlation_id: None,
            flow: FlowControl::default(),
            discard: DiscardMode::default(),
            timeout: DEFAULT_SUBSCRIBE_TIMEOUT,
            recipient,
        }
    }

    /// A content filter, e.g. `/qty > 10`.
    pub fn filter(mut self, f: impl Into<String>) -> Self {
        self.filter = Some(f.into());
        self
    }

    /// The sub id (default: the command id of the first subscribe frame).
    pub fn sub_id(mut self, id: impl Into<String>) -> Self {
        self.sub_id = Some(id.into());
        self
    }

    /// Subscribe from a bookmark (tracked in the client's bookmark store).
    pub fn bookmark(mut self, b: BookmarkStart) -> Self {
        self.bookmark = Some(b);
        self
    }

    /// A delta subscription (`delta_subscribe`).
    pub fn delta(mut self) -> Self {
        self.delta = true;
        self
    }

    /// Adds an option (`oof`, `replace`, `no_empties`, ...; comma lists allowed).
    pub fn option(mut self, o: impl Into<String>) -> Self {
        self.options.push(o.into());
        self
    }

    /// A correlation id (`x`) on the subscribe frame.
    pub fn correlation_id(mut self, x: impl Into<String>) -> Self {
        self.correlation_id = Some(x.into());
        self
    }

    /// Flow control for this subscription.
    pub fn flow(mut self, f: FlowControl) -> Self {
        self.flow = f;
        self
    }

    /// When deliveries count as processed (bookmark subscriptions).
    pub fn discard(mut self, d: DiscardMode) -> Self {
        self.discard = d;
        self
    }

    /// How long to wait for the processed ack (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// A SOW query: records go to the recipient as [`SubscriptionEvent::Message`]s between
/// [`SubscriptionEvent::GroupBegin`] and [`SubscriptionEvent::GroupEnd`], then
/// [`SubscriptionEvent::Completed`]. Resolves with the query id once processed.
#[derive(Message)]
#[rtype(result = "Result<String, QueryError>")]
pub struct SowQuery {
    pub(crate) query: QueryParts,
    pub(crate) flow: FlowControl,
    pub(crate) recipient: Recipient<Deliveries>,
}

/// The parts of a query (shared by [`SowQuery`], [`SowCollect`] and [`SowAndSubscribe`]).
#[derive(Debug, Clone)]
pub(crate) struct QueryParts {
    pub topic: String,
    pub filter: Option<String>,
    pub query_id: Option<String>,
    pub top_n: Option<u64>,
    pub order_by: Option<String>,
    pub batch_size: Option<u64>,
    pub options: Vec<String>,
    pub stats: bool,
    pub timeout: Duration,
}

impl QueryParts {
    fn new(topic: String) -> QueryParts {
        QueryParts {
            topic,
            filter: None,
            query_id: None,
            top_n: None,
            order_by: None,
            batch_size: None,
            options: Vec::new(),
            stats: false,
            timeout: DEFAULT_SUBSCRIBE_TIMEOUT,
        }
    }
}

/// The builder methods every query form shares.
macro_rules! query_setters {
    () => {
        /// A content filter.
        pub fn filter(mut self, f: impl Into<String>) -> Self {
            self.query.filter = Some(f.into());
            self
        }

        /// The query id (default: the command id).
        pub fn query_id(mut self, id: impl Into<String>) -> Self {
            self.query.query_id = Some(id.into());
            self
        }

        /// At most `n` records.
        pub fn top_n(mut self, n: u64) -> Self {
            self.query.top_n = Some(n);
            self
        }

        /// Order by these fields, e.g. `/id DESC`.
        pub fn order_by(mut self, o: impl Into<String>) -> Self {
            self.query.order_by = Some(o.into());
            self
        }

        /// Records per `sow` frame (default 10, as the official client sends).
        pub fn batch_size(mut self, n: u64) -> Self {
            self.query.batch_size = Some(n);
            self
        }

        /// Adds an option (comma lists allowed).
        pub fn option(mut self, o: impl Into<String>) -> Self {
            self.query.options.push(o.into());
            self
        }

        /// How long to wait (default 10 s).
        pub fn timeout(mut self, t: Duration) -> Self {
            self.query.timeout = t;
            self
        }
    };
}

impl SowQuery {
    /// A query of `topic`'s SOW delivering to `recipient`.
    pub fn new(topic: impl Into<String>, recipient: Recipient<Deliveries>) -> SowQuery {
        SowQuery {
            query: QueryParts::new(topic.into()),
            flow: FlowControl::default(),
            recipient,
        }
    }

    query_setters!();

    /// Ask for a `stats` ack too (its counts go into [`SubscriptionEvent::Completed`]).
    pub fn stats(mut self) -> Self {
        self.query.stats = true;
        self
    }

    /// Flow control for the records.
    pub fn flow(mut self, f: FlowControl) -> Self {
        self.flow = f;
        self
    }
}

/// A SOW query whose records are collected and returned once it completes: for small results.
/// More than `max_records` (default 100,000) fails with [`QueryError::TooManyRecords`]; the
/// timeout covers the whole query.
///
/// ```
/// # use std::time::Duration;
/// # use actix_amps::client::{ClientConfig, Publish, PublishFlush};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let server = actix_amps::server::Server::start(
/// #     actix_amps::server::ServerConfig::new(dir.path()).sow("orders", &["/id"]),
/// # )?;
/// # actix::System::new().block_on(async {
/// # let client = ClientConfig::new("sow-collect-doc").uri(&server.uri())?.start()?;
/// use actix_amps::client::subscriptions::SowCollect;
///
/// for (id, qty) in [(1, 5), (2, 50), (3, 20)] {
///     client.send(Publish::new("orders", format!(r#"{{"id":{id},"qty":{qty}}}"#))).await??;
/// }
/// // The SOW holds what the server persisted: wait for that first.
/// client.send(PublishFlush { timeout: Duration::from_secs(10) }).await??;
/// let records = client
///     .send(SowCollect::new("orders").filter("/qty > 10").order_by("/qty DESC"))
///     .await??;
/// let bodies: Vec<&[u8]> = records.iter().map(|r| r.data_slice()).collect();
/// assert_eq!(bodies, [&br#"{"id":2,"qty":50}"#[..], br#"{"id":3,"qty":20}"#]);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok(()) }
/// ```
#[derive(Message)]
#[rtype(result = "Result<Vec<Delivery>, QueryError>")]
pub struct SowCollect {
    pub(crate) query: QueryParts,
    pub(crate) max_records: usize,
}

impl SowCollect {
    /// A query of `topic`'s SOW.
    pub fn new(topic: impl Into<String>) -> SowCollect {
        SowCollect {
            query: QueryParts::new(topic.into()),
            max_records: 100_000,
        }
    }

    query_setters!();

    /// At most this many records.
    pub fn max_records(mut self, n: usize) -> Self {
        self.max_records = n;
        self
    }
}

/// A SOW query followed by a subscription on the same topic and filter
/// (`sow_and_subscribe`, or `sow_and_delta_subscribe` with `.delta()`): the records, then
/// live messages, all to the recipient. Resolves with the sub id once processed.
///
/// ```
/// # use std::time::Duration;
/// # use actix_amps::client::{ClientConfig, Publish, PublishFlush};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let server = actix_amps::server::Server::start(
/// #     actix_amps::server::ServerConfig::new(dir.path()).sow("orders", &["/id"]),
/// # )?;
/// # actix::System::new().block_on(async {
/// # let client = ClientConfig::new("sow-and-subscribe-doc").uri(&server.uri())?.start()?;
/// use actix_amps::client::subscriptions::{SowAndSubscribe, SubscriptionEvent, SubscriptionStream};
/// use futures_util::StreamExt;
///
/// client.send(Publish::new("orders", r#"{"id":1,"qty":5}"#)).await??;
/// client.send(PublishFlush { timeout: Duration::from_secs(10) }).await??;
/// let (me, mut events) = SubscriptionStream::channel(16);
/// client.send(SowAndSubscribe::new("orders", me)).await??;
/// client.send(Publish::new("orders", r#"{"id":2,"qty":7}"#)).await??;
/// // The record that was there, between the group markers, then the live message.
/// let mut bodies = Vec::new();
/// while bodies.len() < 2 {
///     match tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
///         Some(SubscriptionEvent::Message(m)) => bodies.push(m.data_slice().to_vec()),
///         Some(SubscriptionEvent::GroupBegin | SubscriptionEvent::GroupEnd) => {}
///         other => panic!("unexpected {other:?}"),
///     }
/// }
/// assert_eq!(bodies, [br#"{"id":1,"qty":5}"#.to_vec(), br#"{"id":2,"qty":7}"#.to_vec()]);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok(()) }
/// ```
#[derive(Message)]
#[rtype(result = "Result<String, SubscribeError>")]
pub struct SowAndSubscribe {
    pub(crate) query: QueryParts,
    pub(crate) sub_id: Option<String>,
    pub(crate) delta: bool,
    pub(crate) oof: bool,
    pub(crate) send_empties: bool,
    pub(crate) bookmark: Option<BookmarkStart>,
    pub(crate) flow: FlowControl,
    pub(crate) discard: DiscardMode,
    pub(crate) recipient: Recipient<Deliveries>,
}

impl SowAndSubscribe {
    /// Query then subscribe to `topic`, delivering to `recipient`.
    pub fn new(topic: impl Into<String>, recipient: Recipient<Deliveries>) -> SowAndSubscribe {
        SowAndSubscribe {
            query: QueryParts::new(topic.into()),
            sub_id: None,
            delta: false,
            oof: false,
            send_empties: false,
            bookmark: None,
            flow: FlowControl::default(),
            discard: DiscardMode::default(),
            recipient,
        }
    }

    query_setters!();

    /// The sub id (default: the command id).
    pub fn sub_id(mut self, id: impl Into<String>) -> Self {
        self.sub_id = Some(id.into());
        self
    }

    /// Deltas for the live part (`sow_and_delta_subscribe`, which sends `no_empties` unless
    /// [`SowAndSubscribe::send_empties`]).
    pub fn delta(mut self) -> Self {
        self.delta = true;
        self
    }

    /// Out-of-focus notices (`oof`).
    pub fn oof(mut self) -> Self {
        self.oof = true;
        self
    }

    /// With `.delta()`: deliver deltas that change nothing too.
    pub fn send_empties(mut self) -> Self {
        self.send_empties = true;
        self
    }

    /// Start the live part from a bookmark.
    pub fn bookmark(mut self, b: BookmarkStart) -> Self {
        self.bookmark = Some(b);
        self
    }

    /// Flow control for this subscription.
    pub fn flow(mut self, f: FlowControl) -> Self {
        self.flow = f;
        self
    }

    /// When deliveries count as processed (bookmark subscriptions).
    pub fn discard(mut self, d: DiscardMode) -> Self {
        self.discard = d;
        self
    }
}

/// End one subscription: the client sends `unsubscribe` (no ack is awaited, as in the official
/// client), drops what is queued for it, and its subscriber gets
/// [`SubscriptionEnd::Unsubscribed`].
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CancelError>")]
pub struct CancelSubscription(pub String);

/// End every subscription (`"sub_id":"all"`); resolves with how many there were.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CancelAllSubscriptions;

/// Mark deliveries processed, by their [`Delivery::local_seq`], for a subscription placed with
/// [`DiscardMode::Explicit`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct DiscardBookmarks {
    /// The subscription.
    pub sub_id: String,
    /// The deliveries' local numbers.
    pub local_seqs: Vec<u64>,
}

impl DiscardBookmarks {
    /// Discards the deliveries numbered `local_seqs` of subscription `sub_id`.
    pub fn new(sub_id: impl Into<String>, local_seqs: Vec<u64>) -> DiscardBookmarks {
        DiscardBookmarks {
            sub_id: sub_id.into(),
            local_seqs,
        }
    }

    /// Discards one delivery.
    pub fn of(d: &Delivery) -> DiscardBookmarks {
        DiscardBookmarks {
            sub_id: d.sub_id().to_owned(),
            local_seqs: vec![d.local_seq()],
        }
    }
}

/// Measure a round trip to the server (a `flush` asking for `processed`, answered at once when
/// nothing is waiting to be persisted) and report its version.
#[derive(Debug, Message)]
#[rtype(result = "Result<PingReply, PingError>")]
#[non_exhaustive]
pub struct Ping {
    /// How long to wait.
    pub timeout: Duration,
}

impl Ping {
    /// Waits at most `timeout` for the round trip.
    pub fn new(timeout: Duration) -> Ping {
        Ping { timeout }
    }
}

/// What [`Ping`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PingReply {
    /// The server's version from its logon ack, if it sent one.
    pub server_version: Option<String>,
    /// The server (password masked).
    pub server: String,
    /// Time from sending the flush to its ack.
    pub round_trip: Duration,
}
