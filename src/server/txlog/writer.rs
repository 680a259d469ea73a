//! The segment writer: positional writes into reserved space, fsync, rotation.
//!
//! The active segment's space is reserved ahead of the data (`posix_fallocate` on Linux) in
//! steps of [`LogWriter::reserve_ahead`] bytes, so a write never runs out of disk in the middle:
//! when the disk is full it is the *reservation* that fails, before anything is accepted into
//! the space it would need. The server's write path turns "reservation failed and the room
//! left is used up" into a prompt failure ack (see `core.rs`).
//!
//! Writes are positional at the end of the data: a write that fails half-way is simply
//! written again at the same offset. A segment is finished once it holds at least
//! `segment_bytes`: the next segment is created (header written, space reserved, file and
//! directory fsynced) and only then is the finished one cut to its data (the reservation given
//! back) and fsynced. A crash between the two leaves zeros after a finished segment's data,
//! which the checker accepts when the next segment starts at the next LSN.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::files::{reserve, segment_name, sync_dir, write_all_at};
use super::format::{now_us, SegmentHeader, SEGMENT_HEADER_LEN};
use super::retention::{SegmentInfo, SegmentTable};
use crate::error::ServerError;
use crate::server::LogFsyncPolicy;

/// Faults injected by tests (the [`ServerHandle`](crate::server::ServerHandle) hooks).
#[derive(Debug, Default)]
pub struct Faults {
    /// Every space reservation fails with `ENOSPC`, as on a full disk.
    pub out_of_space: AtomicBool,
}

/// Why a write did not happen.
#[derive(Debug)]
pub enum WriteFailure {
    /// No room could be reserved for it.
    OutOfSpace(io::Error),
    /// The write or the fsync failed.
    Io(io::Error),
}

struct Active {
    first_lsn: u64,
    path: PathBuf,
    file: File,
    /// End of the data: the next write goes here.
    pos: u64,
    /// Bytes reserved (the file's length).
    allocated: u64,
}

/// Writes batches of encoded records to the log's segments.
pub struct LogWriter {
    dir: PathBuf,
    segment_bytes: u64,
    reserve_ahead: u64,
    fsync: LogFsyncPolicy,
    active: Active,
    table: Arc<SegmentTable>,
    faults: Arc<Faults>,
    /// Why space could not be reserved at start, if it could not.
    start_error: Option<io::Error>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("segment", &self.active.path)
            .field("pos", &self.active.pos)
            .field("allocated", &self.active.allocated)
            .finish()
    }
}

impl LogWriter {
    /// Opens the writer on the recovered active segment (`path`, data ending at `pos`), or,
    /// with `None`, creates the first segment starting at `next_lsn`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: &Path,
        active: Option<(u64, PathBuf, u64)>,
        next_lsn: u64,
        segment_bytes: u64,
        fsync: LogFsyncPolicy,
        table: Arc<SegmentTable>,
        faults: Arc<Faults>,
    ) -> Result<LogWriter, ServerError> {
        let segment_bytes = segment_bytes.max(4096);
        let reserve_ahead = (segment_bytes / 4).clamp(4096, 8 << 20);
        let active = match active {
            Some((first_lsn, path, pos)) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| super::files::io_err(&path, e))?;
                let allocated = file
                    .metadata()
                    .map_err(|e| super::files::io_err(&path, e))?
                    .len();
                Active {
                    first_lsn,
                    path,
                    file,
                    pos,
                    allocated,
                }
            }
            None => {
                // On a full disk the first segment starts without room (writes are refused
                // until space is free) rather than the server not starting.
                let (active, _) = create_segment(dir, next_lsn, reserve_ahead, fsync, &faults)
                    .or_else(|e| {
                        if super::files::is_out_of_space(&e) {
                            create_segment(dir, next_lsn, 0, fsync, &Faults::default())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| super::files::io_err(&dir.join(segment_name(next_lsn)), e))?;
                table.push(SegmentInfo::new(next_lsn, active.path.clone()));
                active
            }
        };
        let mut w = LogWriter {
            dir: dir.to_owned(),
            segment_bytes,
            reserve_ahead,
            fsync,
            active,
            table,
            faults,
            start_error: None,
        };
        if let Err(e) = w.top_up() {
            tracing::error!(error = %e, room = w.room(), "transaction log: cannot reserve space at start; refusing writes that do not fit");
            w.start_error = Some(e);
        }
        Ok(w)
    }

    /// Why space could not be reserved when the writer opened (the disk is full), if so.
    pub fn start_error(&self) -> Option<&io::Error> {
        self.start_error.as_ref()
    }

    /// Bytes reserved ahead of the data at a time.
    pub fn reserve_ahead(&self) -> u64 {
        self.reserve_ahead
    }

    /// Reserved bytes not yet written: what can be written without reserving more.
    pub fn room(&self) -> u64 {
        self.active.allocated.saturating_sub(self.active.pos)
    }

    /// Reserves up to `reserve_ahead` bytes beyond the data, once less than three quarters of
    /// that is left (so a burst accepted between two turns of the writer still finds room).
    pub fn top_up(&mut self) -> io::Result<()> {
        if self.room() >= self.reserve_ahead / 4 * 3 {
            return Ok(());
        }
        let want = self.active.pos + self.reserve_ahead;
        self.reserve_to(want)
    }

    fn reserve_to(&mut self, len: u64) -> io::Result<()> {
        if len <= self.active.allocated {
            return Ok(());
        }
        if self.faults.out_of_space.load(Ordering::Relaxed) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        reserve(&self.active.file, len)?;
        self.active.allocated = len;
        Ok(())
    }

    /// Writes `buf` (whole records, the last with LSN `last_lsn` and timestamp `last_ts`) at
    /// the end of the data and fsyncs per policy. On failure nothing counts as written; the
    /// same batch can be written again.
    pub fn write(&mut self, buf: &[u8], last_lsn: u64, last_ts: u64) -> Result<(), WriteFailure> {
        let end = self.active.pos + buf.len() as u64;
        if end > self.active.allocated {
            // Reserve ahead; failing that, just enough for this batch.
            let ahead = end + self.reserve_ahead;
            if self.reserve_to(ahead).is_err() {
                self.reserve_to(end).map_err(WriteFailure::OutOfSpace)?;
            }
        }
        write_all_at(&self.active.file, buf, self.active.pos).map_err(WriteFailure::Io)?;
        if self.fsync == LogFsyncPolicy::Batch {
            self.active.file.sync_data().map_err(WriteFailure::Io)?;
        }
        self.active.pos = end;
        self.table.update_active(last_lsn, last_ts, self.active.pos);
        Ok(())
    }

    /// Whether the active segment holds at least `segment_bytes`.
    pub fn is_full(&self) -> bool {
        self.active.pos >= self.segment_bytes
    }

    /// Finishes the active segment and starts the next at `next_lsn`. On failure (no space for
    /// the new segment, for one) the active segment stays as it was and writing goes on there.
    pub fn rotate(&mut self, next_lsn: u64) -> io::Result<()> {
        let (next, leftover) = create_segment(
            &self.dir,
            next_lsn,
            self.reserve_ahead,
            self.fsync,
            &self.faults,
        )?;
        if leftover {
            tracing::debug!(
                lsn = next_lsn,
                "replaced an empty segment left by an earlier attempt"
            );
        }
        let old = std::mem::replace(&mut self.active, next);
        // Give back the finished segment's unused reservation.
        old.file.set_len(old.pos)?;
        old.file.sync_all()?;
        self.table
            .push(SegmentInfo::new(next_lsn, self.active.path.clone()));
        tracing::debug!(finished = %old.path.display(), first_lsn = old.first_lsn, bytes = old.pos, "transaction log segment finished");
        Ok(())
    }

    /// fsyncs everything written (at stop).
    pub fn sync_all(&self) -> io::Result<()> {
        self.active.file.sync_all()
    }
}

/// Creates the segment for `first_lsn`: header, `reserve` bytes reserved, file and directory
/// fsynced (unless the policy is `never`). Returns whether an empty leftover was replaced.
fn create_segment(
    dir: &Path,
    first_lsn: u64,
    reserve_bytes: u64,
    fsync: LogFsyncPolicy,
    faults: &Faults,
) -> io::Result<(Active, bool)> {
    let path = dir.join(segment_name(first_lsn));
    let leftover = path.exists();
    let result = (|| {
        if faults.out_of_space.load(Ordering::Relaxed) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        // Truncate: a file with this name can only be an empty leftover of a failed attempt
        // (the writer only rotates past records it has written).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let header = SegmentHeader {
            first_lsn,
            created_us: now_us(),
        };
        reserve(&file, SEGMENT_HEADER_LEN + reserve_bytes)?;
        write_all_at(&file, &header.encode(), 0)?;
        if fsync == LogFsyncPolicy::Batch {
            file.sync_all()?;
            sync_dir(dir).map_err(|e| match e {
                ServerError::Io { source, .. } => source,
                other => io::Error::other(other.to_string()),
            })?;
        }
        Ok(Active {
            first_lsn,
            path: path.clone(),
            file,
            pos: SEGMENT_HEADER_LEN,
            allocated: SEGMENT_HEADER_LEN + reserve_bytes,
        })
    })();
    match result {
        Ok(a) => Ok((a, leftover)),
        Err(e) => {
            // Leave nothing half-made behind (it holds no record).
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}
