//! The embedded AMPS-protocol server (placeholder).
