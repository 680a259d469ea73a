//! The embedded AMPS-protocol server (placeholder).

pub mod filter;
pub mod sow;
