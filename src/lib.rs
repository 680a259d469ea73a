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
//! Every operation has its own error type in [`error`], with typed causes.
//!
//! ## A first program
//!
//! The embedded server on a free port of `127.0.0.1`, a client that publishes, waits until the
//! server has persisted everything, and reads the record back from the server's SOW:
//!
//! ```
//! use std::time::Duration;
//! use actix_amps::client::{ClientConfig, GetStats, Publish, PublishFlush, SowCollect};
//! use actix_amps::server::{Server, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let server = Server::start(ServerConfig::new(dir.path()).sow("orders", &["/id"]))?;
//!
//! actix::System::new().block_on(async {
//!     let client = ClientConfig::new("first-program").uri(&server.uri())?.start()?;
//!     // Resolves once the client's publish store holds the message.
//!     let seq = client.send(Publish::new("orders", r#"{"id":1,"qty":5}"#)).await??;
//!     // Resolves once every earlier write is persisted by the server (or reported failed).
//!     let report = client
//!         .send(PublishFlush { timeout: Duration::from_secs(10) })
//!         .await??;
//!     println!("message {seq:?} stored; flush: {report:?}");
//!     let stats = client.send(GetStats).await??;
//!     assert_eq!((stats.persisted, stats.unacknowledged), (1, 0));
//!
//!     let records = client.send(SowCollect::new("orders")).await??;
//!     assert_eq!(records[0].data_slice(), br#"{"id":1,"qty":5}"#);
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! ## Logging
//!
//! The crate logs through [`tracing`](https://docs.rs/tracing) and installs no subscriber: the
//! application chooses where logs go. With `tracing-subscriber` (feature `env-filter`) the
//! usual `RUST_LOG` filter applies:
//!
//! ```
//! # fn main() {
//! let _ = tracing_subscriber::fmt()
//!     .with_env_filter(
//!         tracing_subscriber::EnvFilter::try_from_default_env()
//!             .unwrap_or_else(|_| "actix_amps=info".into()),
//!     )
//!     .try_init();
//! # }
//! ```
//!
//! `RUST_LOG=actix_amps=debug` adds each connection attempt and its backoff;
//! `RUST_LOG=actix_amps::server=warn,actix_amps=info` keeps an embedded server quiet. The
//! levels mean:
//!
//! - `error`: something the application must act on: the client gave up reconnecting, its
//!   name was taken over, a failed write nobody subscribed to, a server's log that cannot be
//!   written;
//! - `warn`: a recoverable fault: a connection attempt failed, a connection dropped, a torn
//!   tail cut off a store or log at start-up, a peer closed for breaking a limit;
//! - `info`: the life of a connection and a server: `starting client` (with the client name),
//!   `connected` and `logged on` (with the server), `logged on; replayed the publish store`
//!   (with `server_last`, the server's last sequence for this client name, and `replayed`, how
//!   many stored messages were sent at logon because the server did not have them yet: after
//!   a reconnect those lost with the connection, on a first logon every write made before the
//!   connection was up), `listening`,
//!   `server stopped`;
//! - `debug`: per-attempt and per-connection detail.
//!
//! Passwords never appear (URIs are logged with the password masked). Apart from a failed
//! write nobody subscribed to (`error`), nothing is logged per message at `info` or above.
//!
//! ## Further reading
//!
//! In the repository: `README.md` (a runnable walk-through and the command-line tool),
//! `docs/PROTOCOL.md` (the wire rules; source comments cite its sections),
//! `docs/ARCHITECTURE.md` (actors, threads and layout), `docs/ACCOUNTING.md` (what is
//! guaranteed about every write, end to end), `docs/STORAGE.md` (the publish store and the
//! server's log on disk), `docs/SUBSCRIPTIONS.md` and `docs/CLIENT_SUBSCRIPTIONS.md`
//! (subscriptions on both sides), `docs/HOSTILE_PEERS.md` (the server's limits).

#![warn(missing_docs)]

/// The `bytes` crate, whose [`Bytes`] carries message bodies without copying.
pub use bytes;
pub use bytes::Bytes;

pub mod client;
pub mod error;
pub mod metrics;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod tls;
