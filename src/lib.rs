//! # actix-amps
//!
//! An [actix](https://docs.rs/actix) actor client for AMPS (60East's publish/subscribe message
//! server) whose centre is reliable publishing, and an embedded AMPS-protocol server.
//!
//! See the README for the model; [`protocol`] is the wire layer, `server` the embedded server,
//! [`tls`] the `tcps://` support shared by both.

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod tls;
