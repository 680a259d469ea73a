//! The whole log's health: every segment scanned and the segments checked against each other.
//!
//! Rules (the module docs of [`txlog`](super) explain why):
//!
//! - bad bytes with a good record after them, in any segment, are damage;
//! - bad bytes at the end of a *finished* segment (one with a later segment) are damage;
//!   zeros there are not, as long as the next segment starts at the next LSN;
//! - a next segment that does not start at the next LSN is damage (records missing);
//! - bad bytes at the end of the *last* segment, with nothing good after them, are a torn tail:
//!   a crash in the middle of an append. Never acknowledged, so cut quietly.

use std::path::{Path, PathBuf};

use super::files::list_segments;
use super::format::Decoded;
use super::scan::{scan_segment, DamagedRange, HeaderState, LogPosition, SegmentScan, Tail};
use crate::error::ServerError;

/// The outcome of checking a log.
#[derive(Clone, Debug, Default)]
pub struct LogCheck {
    /// Every scanned segment, oldest first.
    pub segments: Vec<SegmentScan>,
    /// Every damaged range, in log order, with `records_before` counted over the whole log.
    pub damage: Vec<DamagedRange>,
    /// A torn tail of the last segment (file, first bad byte, end of the bad bytes).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Good records in the scanned segments.
    pub records: u64,
    /// LSN of the last good record (0 for an empty log).
    pub last_lsn: u64,
}

impl LogCheck {
    /// Good records after the damaged range `d` (in log order).
    pub fn records_after(&self, d: &DamagedRange) -> u64 {
        self.records.saturating_sub(d.records_before)
    }

    /// The first damaged range as the error that refuses to open the log.
    pub fn to_error(&self) -> Option<ServerError> {
        let d = self.damage.first()?;
        Some(ServerError::LogDamaged {
            path: d.path.clone(),
            offset: d.start,
            end: d.end,
            what: d.what.clone(),
            records_beyond: self.records_after(d),
            ranges: self.damage.len(),
        })
    }
}

/// Scans the segments of `dir` from the first one that may hold LSN `min_lsn` on (every
/// segment for `min_lsn` 0 or 1), calling `each` for every good record at or above `min_lsn`.
/// Segments entirely below `min_lsn` are not read; they are not in the result.
pub fn check_log(
    dir: &Path,
    min_lsn: u64,
    mut each: impl FnMut(&Decoded<'_>, LogPosition),
) -> Result<LogCheck, ServerError> {
    let all = list_segments(dir)?;
    // Skip the segments whose successor starts at or below min_lsn: all their records are.
    let skip = all.windows(2).take_while(|w| w[1].0 <= min_lsn).count();
    let list = &all[skip..];
    let mut out = LogCheck::default();
    for (i, (first_lsn, path)) in list.iter().enumerate() {
        let is_last = i + 1 == list.len();
        let mut scan = scan_segment(path, *first_lsn, min_lsn, &mut each)?;
        let before = out.records;
        for d in &mut scan.damage {
            d.records_before += before;
        }
        out.damage.append(&mut scan.damage.clone());
        if let Some(prev) = out.segments.last() {
            check_continuity(prev, &scan, before, &mut out.damage);
        }
        if scan.header == HeaderState::Missing && (scan.records > 0 || !is_last) {
            out.damage.push(DamagedRange {
                path: path.clone(),
                start: 0,
                end: super::format::SEGMENT_HEADER_LEN.min(scan.file_len),
                what: "segment header is missing".into(),
                lsn_before: first_lsn.saturating_sub(1),
                lsn_after: *first_lsn,
                records_before: before,
            });
        }
        if let Tail::Garbage { start, end } = scan.tail {
            if is_last {
                out.torn_tail = Some((path.clone(), start, end));
            } else {
                let next_first = list[i + 1].0;
                out.damage.push(DamagedRange {
                    path: path.clone(),
                    start,
                    end,
                    what: "bad bytes at the end of a finished segment".into(),
                    lsn_before: scan.last_lsn,
                    lsn_after: next_first,
                    records_before: before + scan.records,
                });
            }
        }
        out.records += scan.records;
        if scan.records > 0 {
            out.last_lsn = scan.last_lsn;
        } else if out.last_lsn == 0 {
            out.last_lsn = first_lsn.saturating_sub(1);
        }
        out.segments.push(scan);
    }
    out.damage.sort_by(|a, b| {
        (a.records_before, &a.path, a.start).cmp(&(b.records_before, &b.path, b.start))
    });
    Ok(out)
}

/// Damage when `next` does not start where `prev` ended.
fn check_continuity(
    prev: &SegmentScan,
    next: &SegmentScan,
    records_before: u64,
    damage: &mut Vec<DamagedRange>,
) {
    let want = prev.last_lsn + 1;
    // Bad bytes at the end of `prev` are reported already, with the LSNs up to `next`.
    let tail_reported = matches!(prev.tail, Tail::Garbage { .. }) && next.first_lsn > want;
    if next.first_lsn == want || tail_reported {
        return;
    }
    damage.push(DamagedRange {
        path: prev.path.clone(),
        start: prev.data_end,
        end: prev.file_len,
        what: if next.first_lsn > want {
            format!(
                "LSNs {want}..={} are missing between this segment and the next",
                next.first_lsn - 1
            )
        } else {
            format!(
                "the next segment starts at LSN {}, inside this one (last LSN {})",
                next.first_lsn, prev.last_lsn
            )
        },
        lsn_before: prev.last_lsn,
        lsn_after: next.first_lsn.max(want),
        records_before,
    });
}
