//! The transaction log: segments of checksummed records, recovery that never hides damage,
//! reading history, space reserved ahead of writes, and retention.
//!
//! # The model
//!
//! Every accepted write (publish, delta_publish, sow_delete) is one **record** with a log
//! sequence number (**LSN**: 1, 2, 3, ... across the log's whole life) and the time the server
//! accepted it. Two more kinds keep failure accounting durable: a *refusal* (a write refused
//! with a failure ack the client name must still read) and *failures read* (the proof it did;
//! see `server/failures.rs`); they are not writes, so replay, bookmarks and the journal's
//! sequences skip them. Records live in **segment** files in the data directory, named after the LSN of
//! their first record (`txlog-00000000000000000001.seg`, ...); the newest is the *active*
//! segment, the only one written to. [`format`](mod@format) has the bytes.
//!
//! **Writing** ([`writer`]): the group-commit writer thread writes whole batches of records
//! at the end of the active segment's data and fsyncs them (per
//! [`LogFsyncPolicy`](crate::server::LogFsyncPolicy)) before any of them is acknowledged. Disk space
//! is reserved ahead of the data, so a full disk is noticed when reserving, while the room
//! already reserved still takes writes; the server then refuses the writes that do not fit with
//! a failure ack ("tx store failure: server disk full ...") instead of accepting what it cannot
//! store, and takes writes again by itself once a reservation succeeds. Once the active segment
//! holds `segment_bytes`, a new one is started.
//!
//! **Reading and recovery** ([`scan`], [`check`], [`recover`]): a record is good when its length
//! is plausible, its checksum matches and it carries the next LSN. Bad bytes are classified by
//! what follows them:
//!
//! - *a torn tail*: bad bytes at the end of the last segment with nothing good after them. A
//!   crash in the middle of an append leaves this; the write was never acknowledged, so
//!   recovery cuts it quietly (zeroes it) and appending continues there;
//! - *damage*: anything else — bad bytes with a good record after them, bad bytes in a finished
//!   segment, records missing between segments. That is data the log promised, so the server
//!   refuses to start with [`ServerError::LogDamaged`] (naming the file, the offset and how many
//!   intact records lie beyond), and nothing is changed on disk.
//!
//! A way out that loses nothing silently: `actix-amps journal --data DIR --verify` lists every
//! damaged range; `actix-amps serve --repair` moves the damaged bytes into
//! `DIR/quarantine/`, keeps every intact record on both sides, puts a gap record where the
//! damage was, and prints what was lost ([`repair`]).
//!
//! One limit of the rule: with fsync policy `batch`, a power failure (not a process crash) on
//! a file system that writes pages back out of order can leave a hole inside the last,
//! unacknowledged batch with good records after it. That is reported as damage too: refusing
//! is the safe side, and `--repair` reports exactly which (never acknowledged) LSNs it drops.
//!
//! **History** ([`reader`]): [`LogReader`] streams records in LSN order from the beginning, an
//! LSN, a saved [`LogPosition`] or a timestamp, bounded in memory, on a thread of its own.
//!
//! **Retention** ([`retention`]): finished segments are removed once nothing needs them — the
//! older of the two kept snapshots covers them, no [`LogHold`] is on them, and the
//! [`Retention`] policy wants them gone.
//!
//! # Extending the record kinds
//!
//! A new kind is a variant of [`RecordKind`] and its arm in [`RecordKind::from_u8`]
//! (`format.rs`); [`RecordKind::is_write`] says whether readers of client writes (replay,
//! [`LogReader`]) see it; the server's replay is `State::replay` in `core.rs`. Kinds below
//! `0x80` must be understood: an older version stops with [`ServerError::UnsupportedRecord`]
//! rather than guess. Kinds from `0x80` are skipped by versions that do not know them.

pub mod check;
pub mod files;
pub mod format;
pub mod loss;
pub mod reader;
pub mod recover;
pub mod repair;
pub mod retention;
pub mod scan;
pub mod snapshot;
pub mod writer;

pub use self::check::{check_log, LogCheck};
pub use self::format::{Decoded, Record, RecordKind};
pub use self::loss::{ClientRange, LossReport};
pub use self::reader::{LogEntry, LogReader, OwnedLogEntry, StartAt};
pub use self::repair::{RepairReport, QUARANTINE_DIR};
pub use self::retention::{parse_bytes, LogHold, LogHolds, Retention, DEFAULT_RETENTION};
pub use self::scan::{DamagedRange, LogPosition};

#[allow(unused_imports)]
use crate::error::ServerError;

/// The single-file log of earlier versions; a data directory that still has it is refused
/// with [`ServerError::OldLogFormat`].
pub const OLD_LOG_FILE: &str = "txlog.amps";

/// Default bytes logged between two snapshots: 256 MiB.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 256 << 20;

/// Default size at which a segment is finished: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

#[cfg(test)]
mod tests;
