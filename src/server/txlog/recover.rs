//! Opening the log at server start: replay what a snapshot does not cover, refuse damage, cut
//! a torn tail.

use std::path::{Path, PathBuf};

use super::check::check_log;
use super::files::{io_err, list_segments, open_rw, segment_name, write_all_at};
use super::format::{Decoded, SegmentHeader, SEGMENT_HEADER_LEN};
use super::retention::SegmentInfo;
use super::OLD_LOG_FILE;
use crate::error::ServerError;

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// LSN of the last record (0 for an empty log and no snapshot).
    pub last_lsn: u64,
    /// Records replayed (above the snapshot).
    pub replayed: u64,
    /// Every segment, oldest first (the last is the active one).
    pub segments: Vec<SegmentInfo>,
    /// The active segment: first LSN, path, end of its data. `None` when there is no segment.
    pub active: Option<(u64, PathBuf, u64)>,
    /// Bytes of a torn tail that were cut.
    pub cut_bytes: u64,
}

/// Replays every record above `snapshot_lsn` through `replay`, in LSN order. Damage anywhere
/// in what is read is [`ServerError::LogDamaged`] (nothing is changed on disk); a torn tail of
/// the last segment is zeroed and fsynced; a last segment without a header (created just
/// before a crash) gets its header.
pub fn recover(
    dir: &Path,
    snapshot_lsn: u64,
    mut replay: impl FnMut(&Decoded<'_>),
) -> Result<Recovered, ServerError> {
    let old = dir.join(OLD_LOG_FILE);
    if old.exists() {
        return Err(ServerError::OldLogFormat { path: old });
    }
    let mut replayed = 0u64;
    let check = check_log(dir, snapshot_lsn + 1, |d, _| {
        replayed += 1;
        replay(d)
    })?;
    if let Some(err) = check.to_error() {
        return Err(err);
    }
    let replayed_from = check.segments.first().map(|s| s.first_lsn);
    if let Some(first) = replayed_from {
        // The log must go on from the snapshot (or from the beginning) without a hole.
        if first > snapshot_lsn + 1 {
            let path = check.segments[0].path.clone();
            return Err(ServerError::LogDamaged {
                path,
                offset: 0,
                end: 0,
                what: format!(
                    "LSNs {}..={} are neither in the snapshot nor in the log",
                    snapshot_lsn + 1,
                    first - 1
                ),
                records_beyond: check.records,
                ranges: 1,
            });
        }
    }
    let mut cut_bytes = 0;
    if let Some((path, start, end)) = &check.torn_tail {
        let file = open_rw(path)?;
        let zeros = vec![0u8; (*end - *start) as usize];
        write_all_at(&file, &zeros, *start).map_err(|e| io_err(path, e))?;
        file.sync_data().map_err(|e| io_err(path, e))?;
        cut_bytes = end - start;
        tracing::info!(path = %path.display(), offset = start, bytes = cut_bytes,
            "transaction log: cut a torn tail (a write interrupted by a crash, never acknowledged)");
    }
    if let Some(last) = check.segments.last() {
        if last.header != super::scan::HeaderState::Good {
            // Only a header-less empty last segment gets here (anything else is damage).
            let file = open_rw(&last.path)?;
            let h = SegmentHeader {
                first_lsn: last.first_lsn,
                created_us: super::format::now_us(),
            };
            write_all_at(&file, &h.encode(), 0).map_err(|e| io_err(&last.path, e))?;
            file.sync_data().map_err(|e| io_err(&last.path, e))?;
        }
    }
    // Segments below the snapshot were not read: size from the file system, age from mtime.
    let mut segments = Vec::new();
    let all = list_segments(dir)?;
    let scanned_from = replayed_from.unwrap_or(u64::MAX);
    for (i, (first_lsn, path)) in all.iter().enumerate() {
        if *first_lsn >= scanned_from {
            break;
        }
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        let mtime_us = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as u64);
        let next = all.get(i + 1).map_or(*first_lsn, |n| n.0);
        segments.push(SegmentInfo {
            first_lsn: *first_lsn,
            last_lsn: next.saturating_sub(1),
            bytes: meta.len(),
            last_timestamp_us: mtime_us,
            path: path.clone(),
        });
    }
    for s in &check.segments {
        segments.push(SegmentInfo {
            first_lsn: s.first_lsn,
            last_lsn: s.last_lsn,
            bytes: s.data_end.max(SEGMENT_HEADER_LEN),
            last_timestamp_us: if s.records > 0 {
                s.last_timestamp_us
            } else {
                s.created_us
            },
            path: s.path.clone(),
        });
    }
    let active = check.segments.last().map(|s| {
        (
            s.first_lsn,
            s.path.clone(),
            s.data_end.max(SEGMENT_HEADER_LEN),
        )
    });
    let last_lsn = if check.segments.is_empty() {
        snapshot_lsn
    } else {
        check.last_lsn.max(snapshot_lsn)
    };
    debug_assert!(active
        .as_ref()
        .is_none_or(|a| a.1.ends_with(segment_name(a.0))));
    Ok(Recovered {
        last_lsn,
        replayed,
        segments,
        active,
        cut_bytes,
    })
}
