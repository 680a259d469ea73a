//! The actor client (in progress).

pub mod store;
