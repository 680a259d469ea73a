//! Subscriptions, SOW queries and bookmarks.
//!
//! # The model
//!
//! An application actor asks the [`ClientActor`](crate::client::ClientActor) to
//! [`Subscribe`] (or [`SowAndSubscribe`], or run a [`SowQuery`]) with a
//! `Recipient<`[`Deliveries`]`>`: itself. The request resolves once the server's `processed`
//! ack arrives (or fails with the server's reason, typed: [`SubscribeError::Refused`]). From
//! then on the subscriber receives **batches**: one [`Deliveries`] message holds every event
//! of that subscription that arrived since the previous batch was handled, in order:
//! messages ([`Delivery`]: topic, data as `Bytes`, bookmark, SOW key, correlation id,
//! publish / delta / out-of-focus with its reason, SOW record), SOW boundaries, query
//! completion, and the subscription's own life (disconnected, resumed, ended).
//!
//! ```text
//!  socket ─► ConnectionActor ──raw frames, a read at a time──► SubscriptionActor
//!              (acks, logon)                                    │ routes by sids / query_id / cid
//!                                                               │ queue per subscription (flow.rs)
//!                                                               ▼
//!                                         subscriber actor ◄── Deliveries (one batch in flight)
//! ```
//!
//! - **Routing** (`registry.rs`): a delivery goes to every subscription its `sids` list names,
//!   each once; SOW records and group markers by `query_id`; acks by `cid`. A frame naming
//!   an id this client does not know goes to the last-chance subscribers
//!   ([`SubscribeUnexpected`](crate::client::SubscribeUnexpected)); nothing is dropped
//!   silently. Publish acks never pass through here, so a burst of deliveries does not queue
//!   them behind it (the connection hands the two sides their frames separately).
//! - **Flow control** (`flow.rs`): one batch per subscription in flight; a bounded queue
//!   behind it; past the bound, the subscription's [`BehindPolicy`] (pause reading the
//!   connection, or end the subscription with [`SubscriptionEnd::FellBehind`]).
//! - **Bookmarks** (`bookmark_book.rs`, `bookmark_store.rs`): a subscription placed with a
//!   [`BookmarkStart`] is tracked in the client's bookmark store (memory, or a file that
//!   survives a crash: [`BookmarkStoreKind`]). A delivery counts as processed when the
//!   subscriber's handler for its batch returns ([`DiscardMode::WhenHandled`]), or when the
//!   subscriber says so ([`DiscardBookmarks`], [`DiscardMode::Explicit`]). A subscription
//!   resumed with [`BookmarkStart::MostRecent`], or re-placed after a reconnect, starts after
//!   the most recent processed message: nothing unprocessed is skipped, and redelivered
//!   messages it already had are dropped.
//! - **Resubscription** (`resubscribe.rs`): after every logon (a reconnect, a failover to
//!   another server) every live subscription is sent again, in registration order, and its
//!   subscriber is told [`SubscriptionEvent::Resumed`] once the server acknowledged it:
//!   `may_have_missed: false` for a bookmark subscription (it resumed from its store), `true`
//!   for a plain one (messages published during the outage are not recovered). A
//!   subscription the server now refuses ends with [`SubscriptionEnd::Refused`] and the
//!   reason. Queries are not re-sent: one cut off by a disconnect fails
//!   ([`QueryError::Disconnected`]).
//!
//! Code that is not an actor can take a subscription as a `futures::Stream`
//! ([`SubscriptionStream`]), with the same flow control.
//!
//! The wire frames are the official client's, key for key (`frames.rs`).

pub(crate) mod actor;
mod bookmark_book;
pub(crate) mod bookmark_store;
mod client_api;
mod delivery;
mod errors;
mod flow;
mod frames;
mod messages;
mod registry;
mod resubscribe;
mod stream;

pub use actor::{GetSubscriptionStats, SubscriptionStats, SyncBookmarks};
pub use bookmark_store::BookmarkStoreKind;
pub use delivery::{Delivery, DeliveryKind, OofReason};
pub use errors::{BookmarkStoreError, CancelError, PingError, QueryError, SubscribeError};
pub use flow::{BehindPolicy, FlowControl};
pub use messages::*;
pub use stream::SubscriptionStream;

/// Opens the bookmark store a client is configured with (blocking: at start only).
pub(crate) fn bookmark_store_open(
    kind: &BookmarkStoreKind,
) -> Result<bookmark_store::BookmarkStore, BookmarkStoreError> {
    bookmark_store::BookmarkStore::open(kind)
}
