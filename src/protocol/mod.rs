//! Bytes to typed frames and back; no I/O and no actors.
//!
//! The AMPS wire format (PROTOCOL.md) is a 4-byte big-endian length, a flat JSON header and a
//! body. [`Header`] holds every header key as a typed field and writes compact JSON;
//! [`AmpsCodec`] frames a byte stream for tokio-util; [`ack`] holds the ack vocabulary
//! ([`AckTypes`], [`Status`], [`Reason`]); [`uri`] parses `tcp://` and `tcps://` server URIs
//! and masks credentials; [`notice`] is how the embedded server says why it closes a
//! connection; [`sow_batch`] reads and writes the records inside a SOW query's `sow` frames.

pub mod ack;
pub mod codec;
pub mod frame;
pub mod header;
pub mod notice;
pub mod publish;
pub mod sow_batch;
pub mod uri;

pub use ack::{AckType, AckTypes, Reason, Status};
pub use codec::{decode_frame, AmpsCodec, DEFAULT_MAX_FRAME};
pub use frame::{encode_parts, Frame};
pub use header::{Command, Header};
pub use notice::{closing_notice, closing_reason};
pub use publish::{PublishHeader, SeqTemplate};
pub use sow_batch::{sow_records, write_sow_record, SowRecord};
pub use uri::{mask_credentials, parse_uri, parse_uri_list, redact_uri, AmpsUri, Password};
