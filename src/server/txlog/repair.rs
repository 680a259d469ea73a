//! Repair: quarantine damaged bytes, keep every intact record, say what was lost.
//!
//! For each segment with damage, [`repair_log`] copies every damaged range into
//! `DIR/quarantine/<segment>.<start>-<end>.bad` (fsynced), then rewrites the segment with only
//! its intact records, in order, and a *repair gap* record
//! ([`RecordKind::RepairGap`]) wherever LSNs were lost, so the log reads as continuous and the
//! loss stays on record. The new segment is written to a temporary file, fsynced and renamed
//! over the old one (then the directory is fsynced), so a crash during repair leaves either the
//! old segment or the new one. The report ([`RepairReport`]) lists each damaged range with the
//! LSNs lost, the records before and after, the records still readable in the damaged bytes and,
//! per client name, the sequences missing across the damage.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::BytesMut;

use super::check::check_log;
use super::files::{io_err, list_segments, sync_dir};
use super::format::{encode_record, split_prefix, Record, RecordKind, SegmentHeader, PREFIX_LEN};
use super::loss::{describe_losses, index_record, LossReport, SequenceIndex};
use super::scan::{scan_segment, DamagedRange};
use super::snapshot::{
    check_snapshot, list_snapshots, write_snapshot, Entry, SnapshotCheck, SnapshotData,
};
use crate::error::ServerError;

/// The quarantine directory's name inside the data directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A damaged snapshot and what repair did with it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SnapshotRepair {
    /// What was found.
    pub check: SnapshotCheck,
    /// Where the damaged file went.
    pub quarantined: PathBuf,
    /// `Some(entries)` when no other snapshot could replace it (the log before it is no longer
    /// retained): a new snapshot was written from its intact entries, and the rest are lost.
    /// `None`: the older snapshot and the log rebuild everything; nothing is lost.
    pub salvaged: Option<u64>,
}

/// What [`repair_log`] did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RepairReport {
    /// Damaged snapshots.
    pub snapshots: Vec<SnapshotRepair>,
    /// Each damaged range of the log and what it cost.
    pub losses: Vec<LossReport>,
    /// The quarantine files written.
    pub quarantined: Vec<PathBuf>,
    /// The segments rewritten.
    pub rewritten: Vec<PathBuf>,
}

/// Repairs the log in `dir` (module docs). The caller holds the directory's lock. A healthy
/// log is left untouched (an empty report).
pub fn repair_log(dir: &Path) -> Result<RepairReport, ServerError> {
    let snapshots = repair_snapshots(dir)?;
    let mut index = SequenceIndex::new();
    let check = check_log(dir, 0, |d, _| index_record(&mut index, d))?;
    let mut report = RepairReport {
        snapshots,
        losses: describe_losses(&check, &index)?,
        ..RepairReport::default()
    };
    if check.damage.is_empty() {
        return Ok(report);
    }
    // The log's own damage comes second (the snapshots are settled).
    let qdir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir).map_err(|e| io_err(&qdir, e))?;
    let segments = list_segments(dir)?;
    for (first_lsn, path) in segments {
        let ranges: Vec<&DamagedRange> = check.damage.iter().filter(|d| d.path == path).collect();
        if ranges.is_empty() {
            continue;
        }
        rewrite_segment(&path, first_lsn, &ranges, &qdir, &mut report)?;
    }
    sync_dir(&qdir)?;
    sync_dir(dir)?;
    let after = check_log(dir, 0, |_, _| {})?;
    if let Some(err) = after.to_error() {
        return Err(err);
    }
    Ok(report)
}

/// Quarantines damaged snapshots; salvages the intact entries of the newest damaged one when
/// nothing else can replace it.
fn repair_snapshots(dir: &Path) -> Result<Vec<SnapshotRepair>, ServerError> {
    let mut out: Vec<SnapshotRepair> = Vec::new();
    let qdir = dir.join(QUARANTINE_DIR);
    for (_, path) in list_snapshots(dir)? {
        let (check, _) = check_snapshot(&path, |_| {})?;
        if check.is_intact() {
            continue;
        }
        fs::create_dir_all(&qdir).map_err(|e| io_err(&qdir, e))?;
        let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let qpath = qdir.join(name);
        fs::rename(&path, &qpath).map_err(|e| io_err(&path, e))?;
        out.push(SnapshotRepair {
            check,
            quarantined: qpath,
            salvaged: None,
        });
    }
    if out.is_empty() {
        return Ok(out);
    }
    sync_dir(&qdir)?;
    sync_dir(dir)?;
    // Can the log rebuild what the quarantined snapshots held?
    let newest_intact = list_snapshots(dir)?.last().map_or(0, |s| s.0);
    let log_start = list_segments(dir)?.first().map_or(1, |s| s.0);
    if log_start <= newest_intact + 1 {
        return Ok(out);
    }
    // No: the newest damaged snapshot that covers the log's start gives what it still has.
    if let Some(r) = out
        .iter_mut()
        .filter(|r| r.check.lsn + 1 >= log_start)
        .min_by_key(|r| r.check.lsn)
    {
        let mut data = SnapshotData {
            lsn: r.check.lsn,
            ..SnapshotData::default()
        };
        let (check, ts) = check_snapshot(&r.quarantined, |e| match e {
            Entry::LastSeq(c, s) => data.last_seq.push((c.to_owned(), s)),
            Entry::Unread(c, s, r) => data.unread.push((c.to_owned(), s, r.to_owned())),
            Entry::Record(t, k, b) => {
                data.records
                    .push((t.to_owned(), k.to_owned(), bytes::Bytes::copy_from_slice(b)))
            }
        })?;
        data.timestamp_us = ts;
        write_snapshot(dir, &data)?;
        r.salvaged = Some(check.entries);
    }
    Ok(out)
}

/// One thing to put into the rewritten segment, by offset in the old one.
enum Item<'a> {
    Damage(&'a DamagedRange),
    Good { offset: u64, size: u64 },
}

fn rewrite_segment(
    path: &Path,
    first_lsn: u64,
    ranges: &[&DamagedRange],
    qdir: &Path,
    report: &mut RepairReport,
) -> Result<(), ServerError> {
    // An offline tool: a segment (at most its configured size plus one batch) fits in memory.
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let mut items: Vec<(u64, u8, Item<'_>)> = Vec::new();
    scan_segment(path, first_lsn, 0, |_, pos| {
        let prefix: [u8; 8] = bytes[pos.offset as usize..pos.offset as usize + 8]
            .try_into()
            .unwrap_or([0; 8]);
        let size = PREFIX_LEN + u64::from(split_prefix(&prefix).0);
        items.push((
            pos.offset,
            1,
            Item::Good {
                offset: pos.offset,
                size,
            },
        ));
    })?;
    for d in ranges {
        items.push((d.start, 0, Item::Damage(d)));
    }
    items.sort_by_key(|(off, order, _)| (*off, *order));

    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment")
        .to_owned();
    let mut out = BytesMut::with_capacity(bytes.len());
    out.extend_from_slice(
        &SegmentHeader {
            first_lsn,
            created_us: super::format::now_us(),
        }
        .encode(),
    );
    for (_, _, item) in items {
        match item {
            Item::Good { offset, size } => {
                out.extend_from_slice(&bytes[offset as usize..(offset + size) as usize]);
            }
            Item::Damage(d) => {
                let start = (d.start as usize).min(bytes.len());
                let end = (d.end as usize).min(bytes.len());
                let damaged = &bytes[start..end];
                let mut qname = String::new();
                if damaged.iter().any(|b| *b != 0) {
                    qname = format!("{name}.{}-{}.bad", d.start, d.end);
                    let qpath = qdir.join(&qname);
                    let mut f = File::create(&qpath).map_err(|e| io_err(&qpath, e))?;
                    f.write_all(damaged).map_err(|e| io_err(&qpath, e))?;
                    f.sync_all().map_err(|e| io_err(&qpath, e))?;
                    report.quarantined.push(qpath);
                }
                if let Some((lo, hi)) = d.lost_lsns() {
                    encode_record(
                        &mut out,
                        hi,
                        super::format::now_us(),
                        &Record {
                            kind: RecordKind::RepairGap,
                            seq: Some(lo),
                            client: "",
                            topic: "",
                            arg: None,
                            body: qname.as_bytes(),
                        },
                    );
                }
            }
        }
    }
    let tmp = path.with_extension("seg.repair");
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(&out).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    report.rewritten.push(path.to_owned());
    Ok(())
}
