//! Which segments exist, which are still needed, and removing the rest.
//!
//! A finished segment may be removed only when nothing needs it any more:
//!
//! - **recovery**: every record in it is covered by the *older* of the two kept snapshots
//!   (so that a damaged newest snapshot can still be replaced by the older one plus the log);
//! - **holds**: no [`LogHold`] is at or below its last LSN. Anything that reads history (the
//!   bookmark replay of subscriptions) takes a hold for the oldest LSN it still needs, moves it
//!   forward as it goes, and drops it when done;
//! - **the policy** ([`Retention`]) wants it gone: the log is over its byte budget, or the
//!   segment's newest record is older than the retention age.
//!
//! The active segment is never removed. Retained history defines how far back a bookmark can
//! go: [`LogHolds::hold_from`] refuses an LSN older than the first retained one with
//! [`ServerError::NotRetained`], and a subscription asking for it is refused with the reason
//! AMPS gives for a bookmark it does not hold (`bookmark not found in the transaction log`,
//! `server/bookmark.rs`), never silently started later.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::files::sync_dir;
use crate::error::ServerError;

/// What one segment holds, as far as retention cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// LSN of its first record (the one its name carries).
    pub first_lsn: u64,
    /// LSN of its last record (`first_lsn - 1` while empty).
    pub last_lsn: u64,
    /// Bytes of data (header included).
    pub bytes: u64,
    /// Timestamp of its newest record (µs since the Unix epoch; 0 while empty).
    pub last_timestamp_us: u64,
    /// The file.
    pub path: PathBuf,
}

impl SegmentInfo {
    /// An empty segment starting at `first_lsn`.
    pub fn new(first_lsn: u64, path: PathBuf) -> SegmentInfo {
        SegmentInfo {
            first_lsn,
            last_lsn: first_lsn.saturating_sub(1),
            bytes: super::format::SEGMENT_HEADER_LEN,
            last_timestamp_us: 0,
            path,
        }
    }
}

/// The live list of segments, shared by the writer (which adds and grows them) and the
/// maintenance thread (which removes them).
#[derive(Debug, Default)]
pub struct SegmentTable {
    inner: Mutex<Vec<SegmentInfo>>,
    /// Bytes written since the table was made (what triggers snapshots).
    written: std::sync::atomic::AtomicU64,
}

impl SegmentTable {
    fn lock(&self) -> MutexGuard<'_, Vec<SegmentInfo>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A table holding `segments` (oldest first).
    pub fn with(segments: Vec<SegmentInfo>) -> SegmentTable {
        SegmentTable {
            inner: Mutex::new(segments),
            written: Default::default(),
        }
    }

    /// Adds the new active segment.
    pub fn push(&self, info: SegmentInfo) {
        self.lock().push(info);
    }

    /// Records a write to the active segment.
    pub fn update_active(&self, last_lsn: u64, last_ts: u64, bytes: u64) {
        if let Some(s) = self.lock().last_mut() {
            s.last_lsn = last_lsn;
            s.last_timestamp_us = last_ts;
            let grew = bytes.saturating_sub(s.bytes);
            self.written
                .fetch_add(grew, std::sync::atomic::Ordering::Relaxed);
            s.bytes = bytes;
        }
    }

    /// Bytes written to the log since the table was made.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A copy of the list.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.lock().clone()
    }

    /// Bytes of data in all segments.
    pub fn total_bytes(&self) -> u64 {
        self.lock().iter().map(|s| s.bytes).sum()
    }

    fn remove_front(&self, first_lsn: u64) {
        let mut l = self.lock();
        if l.first().is_some_and(|s| s.first_lsn == first_lsn) {
            l.remove(0);
        }
    }
}

/// How much history the log keeps beyond what recovery and holds need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retention {
    /// Remove the oldest finished segments while the log is above this many bytes.
    Bytes(u64),
    /// Remove finished segments whose newest record is older than this.
    Age(Duration),
    /// Keep everything.
    All,
}

/// Parses a byte size: a number with an optional unit `B`, `KiB`, `MiB`, `GiB`, `TiB` (also
/// `K`/`KB`, `M`/`MB`, ... as powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    match s.parse::<Retention>() {
        Ok(Retention::Bytes(b)) => Ok(b),
        _ => Err(format!(
            "{s:?} is not a byte size (e.g. 4096, 512KiB, 64MiB)"
        )),
    }
}

/// The default: 1 GiB of log.
pub const DEFAULT_RETENTION: Retention = Retention::Bytes(1 << 30);

impl std::str::FromStr for Retention {
    type Err = String;

    /// `all`, a byte size (`500000`, `512KiB`, `64MiB`, `10GiB`, also `K`/`M`/`G`/`KB`/`MB`/`GB`
    /// as powers of 1024), or an age (`90s`, `30m`, `12h`, `7d`).
    fn from_str(s: &str) -> Result<Retention, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(Retention::All);
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("retention {s:?}: expected all, BYTES (e.g. 512MiB) or an age (e.g. 7d)")
        })?;
        let bytes = |mult: u64| {
            n.checked_mul(mult)
                .map(Retention::Bytes)
                .ok_or_else(|| format!("retention {s:?} is too large"))
        };
        let age = |secs: u64| {
            n.checked_mul(secs)
                .map(|s| Retention::Age(Duration::from_secs(s)))
                .ok_or_else(|| format!("retention {s:?} is too large"))
        };
        match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => bytes(1),
            "k" | "kb" | "kib" => bytes(1 << 10),
            "m" | "mb" | "mib" => bytes(1 << 20),
            "g" | "gb" | "gib" => bytes(1 << 30),
            "t" | "tb" | "tib" => bytes(1 << 40),
            "s" => age(1),
            "min" => age(60),
            "h" => age(3600),
            "d" => age(86_400),
            other => Err(format!(
                "retention {s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, s, min, h or d)"
            )),
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retention::Bytes(b) => write!(f, "{b} bytes"),
            Retention::Age(d) => write!(f, "{} s", d.as_secs()),
            Retention::All => f.write_str("all"),
        }
    }
}

#[derive(Debug, Default)]
struct HoldsInner {
    next_id: u64,
    /// id → oldest LSN still needed.
    held: BTreeMap<u64, u64>,
    /// The oldest LSN still in the log (1 until anything was removed).
    first_retained: u64,
}

/// The registry of "oldest LSN still in use" (module docs). Cheap to clone; all clones share
/// one registry.
#[derive(Clone, Debug, Default)]
pub struct LogHolds {
    inner: Arc<Mutex<HoldsInner>>,
}

impl LogHolds {
    fn lock(&self) -> MutexGuard<'_, HoldsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A registry for a log whose oldest retained record is `first_retained`.
    pub fn new(first_retained: u64) -> LogHolds {
        let h = LogHolds::default();
        h.lock().first_retained = first_retained.max(1);
        h
    }

    /// Holds the log from `lsn` on (that record and every later one) until the hold is dropped
    /// or advanced. Fails with [`ServerError::NotRetained`] when `lsn` is older than the first
    /// retained record: that history is gone and no reader can start there.
    pub fn hold_from(&self, lsn: u64) -> Result<LogHold, ServerError> {
        let mut g = self.lock();
        let lsn = lsn.max(1);
        if lsn < g.first_retained {
            return Err(ServerError::NotRetained {
                requested: lsn,
                first_retained: g.first_retained,
            });
        }
        g.next_id += 1;
        let id = g.next_id;
        g.held.insert(id, lsn);
        Ok(LogHold {
            holds: self.clone(),
            id,
        })
    }

    /// The oldest LSN still in the log.
    pub fn first_retained_lsn(&self) -> u64 {
        self.lock().first_retained.max(1)
    }

    /// The oldest LSN any hold needs.
    pub fn oldest_held(&self) -> Option<u64> {
        self.lock().held.values().min().copied()
    }
}

/// A hold on the log from some LSN on; released when dropped. See [`LogHolds`].
#[derive(Debug)]
pub struct LogHold {
    holds: LogHolds,
    id: u64,
}

impl LogHold {
    /// Moves the hold forward: records below `lsn` are no longer needed. Never moves back.
    pub fn advance(&self, lsn: u64) {
        if let Some(v) = self.holds.lock().held.get_mut(&self.id) {
            *v = (*v).max(lsn);
        }
    }

    /// The oldest LSN this hold keeps.
    pub fn lsn(&self) -> u64 {
        self.holds.lock().held.get(&self.id).copied().unwrap_or(0)
    }
}

impl Drop for LogHold {
    fn drop(&mut self) {
        self.holds.lock().held.remove(&self.id);
    }
}

/// Removes the finished segments that nothing needs (module docs); `covered_lsn` is the LSN
/// the older kept snapshot covers. Returns the removed segments.
pub fn apply_retention(
    table: &SegmentTable,
    holds: &LogHolds,
    policy: Retention,
    covered_lsn: u64,
    now_us: u64,
) -> Result<Vec<SegmentInfo>, ServerError> {
    let mut removed = Vec::new();
    if policy == Retention::All {
        return Ok(removed);
    }
    let segments = table.segments();
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    // Never the last (active) segment.
    for seg in segments.iter().take(segments.len().saturating_sub(1)) {
        let wanted_gone = match policy {
            Retention::Bytes(max) => total > max,
            Retention::Age(age) => {
                let cutoff =
                    now_us.saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
                seg.last_timestamp_us < cutoff
            }
            Retention::All => false,
        };
        if !wanted_gone || seg.last_lsn > covered_lsn {
            break;
        }
        let mut g = holds.lock();
        if g.held.values().any(|h| *h <= seg.last_lsn) {
            break;
        }
        // Under the holds lock: no hold can start inside this segment while it goes.
        g.first_retained = seg.last_lsn + 1;
        match std::fs::remove_file(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                g.first_retained = seg.first_lsn;
                return Err(ServerError::Io {
                    path: seg.path.clone(),
                    source: e,
                });
            }
        }
        drop(g);
        table.remove_front(seg.first_lsn);
        total = total.saturating_sub(seg.bytes);
        removed.push(seg.clone());
    }
    if let Some(seg) = removed.first() {
        if let Some(dir) = seg.path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses() {
        assert_eq!("all".parse(), Ok(Retention::All));
        assert_eq!("4096".parse(), Ok(Retention::Bytes(4096)));
        assert_eq!("64MiB".parse(), Ok(Retention::Bytes(64 << 20)));
        assert_eq!("2G".parse(), Ok(Retention::Bytes(2 << 30)));
        assert_eq!(
            "7d".parse(),
            Ok(Retention::Age(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!("90s".parse(), Ok(Retention::Age(Duration::from_secs(90))));
        assert!("12 parsecs".parse::<Retention>().is_err());
        assert!("".parse::<Retention>().is_err());
        assert!("99999999999999999999T".parse::<Retention>().is_err());
    }

    #[test]
    fn holds_refuse_removed_history_and_release_on_drop() {
        let holds = LogHolds::new(1);
        let h = holds.hold_from(10).unwrap();
        assert_eq!(holds.oldest_held(), Some(10));
        h.advance(20);
        h.advance(15);
        assert_eq!(h.lsn(), 20);
        drop(h);
        assert_eq!(holds.oldest_held(), None);
        holds.lock().first_retained = 100;
        match holds.hold_from(99) {
            Err(ServerError::NotRetained {
                requested: 99,
                first_retained: 100,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(holds.hold_from(100).is_ok());
    }

    fn table(dir: &std::path::Path, n: u64) -> SegmentTable {
        let mut v = Vec::new();
        for i in 0..n {
            let path = dir.join(super::super::files::segment_name(i * 10 + 1));
            std::fs::write(&path, b"x").unwrap();
            v.push(SegmentInfo {
                first_lsn: i * 10 + 1,
                last_lsn: i * 10 + 10,
                bytes: 100,
                last_timestamp_us: (i + 1) * 1_000_000,
                path,
            });
        }
        SegmentTable::with(v)
    }

    #[test]
    fn retention_removes_only_what_nothing_needs() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), 5);
        let holds = LogHolds::new(1);
        // Over budget, but the snapshot covers only up to LSN 20: two segments at most.
        let removed = apply_retention(&t, &holds, Retention::Bytes(100), 20, 0).unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(holds.first_retained_lsn(), 21);
        assert!(!removed[0].path.exists());
        // A hold at LSN 35 keeps the segment 31..=40 and everything after.
        let _h = holds.hold_from(35).unwrap();
        let removed = apply_retention(&t, &holds, Retention::Bytes(100), 1000, 0).unwrap();
        assert_eq!(
            removed.iter().map(|s| s.first_lsn).collect::<Vec<_>>(),
            [21]
        );
        assert_eq!(t.segments().len(), 2);
        // The active segment is never removed.
        drop(_h);
        let removed = apply_retention(&t, &holds, Retention::Bytes(0), 1000, 0).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(t.segments().len(), 1);
    }

    #[test]
    fn age_retention_uses_the_newest_record() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), 4);
        let holds = LogHolds::new(1);
        // now = 3.5 s, age 1.5 s: cutoff 2 s: segments whose newest record is before 2 s go.
        let removed = apply_retention(
            &t,
            &holds,
            Retention::Age(Duration::from_millis(1500)),
            u64::MAX,
            3_500_000,
        )
        .unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].last_timestamp_us, 1_000_000);
    }
}
