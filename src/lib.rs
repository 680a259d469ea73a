//! # actix-amps
//!
//! An [actix](https://docs.rs/actix) actor client for AMPS (60East's publish/subscribe message
//! server) whose centre is reliable publishing, and an embedded AMPS-protocol server.
//!
//! ## The model in a page
//!
//! A publisher must know, for every message, whether it was durably written or why not. The
//! client gives that guarantee in three steps:
//!
//! 1. **Store.** A [`client::Publish`] (or `DeltaPublish`, `PublishBatch`, `SowDelete`) sent to
//!    the [`client::ClientActor`] resolves with a sequence number as soon as the message is in
//!    the client's publish store; it never waits for the server. The store (memory, or a file
//!    store that survives a crash) keeps every message until the server acknowledges it.
//! 2. **Acknowledge.** The server's cumulative, conflated `persisted` acks discard stored
//!    messages. A failure ack is enriched with the stored message and delivered as a
//!    [`client::FailedWrite`] to every failed-write subscriber; with none, the raw ack goes to
//!    the last-chance subscribers; with neither, it is logged. Nothing is dropped silently.
//! 3. **Recover.** After every (re)connect the store replays what the server does not have, in
//!    order, before new messages; a [`client::PublishFlush`] waits until everything before it
//!    is accounted for.
//!
//! Behind the facade, separate actors own the store, the connection, ack classification and
//! subscriber routing; see [`client`]. [`protocol`] is the wire layer (bytes to typed frames,
//! no I/O), [`tls`] the `tcps://` support shared by client and server, and `server` (feature
//! `server`, on by default) is the embedded server used by the examples, tests and benchmarks.
//! The README has a runnable walk-through; in the repository, `docs/PROTOCOL.md` has the wire
//! rules (source comments cite its sections) and `docs/ARCHITECTURE.md` the actors, threads and
//! layout.

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod metrics;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod tls;
