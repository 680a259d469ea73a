//! Snapshots: the SOW, every client name's last sequence and its unread failures as of one
//! LSN, so that start-up replays only the log after it, and finished segments before it can be
//! removed.
//!
//! ```text
//! snapshot-<lsn, 20 digits>.snap:
//!   header (28 bytes): magic "AMPSSNP1" | lsn u64 | timestamp_us u64 | crc u32 of the 24 before
//!   entries: len u32 | crc u32 = CRC-32 of (len bytes ++ payload) | payload
//!     payload: 1 | client (u16 len + bytes) | seq u64            a client name's last sequence
//!              2 | topic (u16 len + bytes) | key (u32 len + bytes) | body (the rest)   a record
//!              3 | client (u16 len + bytes) | seq u64 | reason (the rest)      an unread failure
//!              0xff | entries u64                                the end: how many came before
//! ```
//!
//! A snapshot is written to `<name>.tmp`, fsynced, renamed into place and the directory
//! fsynced, only once the log is durable up to its LSN; so a snapshot never gets ahead of the
//! log, and a crash while writing leaves only a temporary file (ignored and removed). The two
//! newest snapshots are kept: if the newest is damaged, the older one plus the log still
//! rebuilds everything (retention keeps the log back to the older one).
//!
//! Loading refuses any damage ([`ServerError::SnapshotDamaged`]); [`check_snapshot`] finds every
//! damaged range and counts the intact entries on both sides, for `journal --verify` and repair.

use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};

use super::files::{io_err, sync_dir};
use super::format::{record_crc, split_prefix, MAX_PAYLOAD, PREFIX_LEN};
use super::scan::Window;
use crate::error::ServerError;

const MAGIC: &[u8; 8] = b"AMPSSNP1";
const HEADER_LEN: u64 = 28;
const TAG_LAST_SEQ: u8 = 1;
const TAG_RECORD: u8 = 2;
const TAG_UNREAD: u8 = 3;
const TAG_END: u8 = 0xff;
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";

/// The file name of the snapshot at `lsn`.
pub fn snapshot_name(lsn: u64) -> String {
    format!("{PREFIX}{lsn:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The snapshots in `dir` as (LSN, path), oldest first.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, ServerError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        if let Some(lsn) = entry.file_name().to_str().and_then(parse_name) {
            out.push((lsn, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(l, _)| *l);
    Ok(out)
}

/// What a snapshot holds, ready to write.
#[derive(Clone, Debug, Default)]
pub struct SnapshotData {
    /// The LSN it covers: the state after every record up to it.
    pub lsn: u64,
    /// That record's timestamp.
    pub timestamp_us: u64,
    /// Every client name's last sequence.
    pub last_seq: Vec<(String, u64)>,
    /// Every SOW record as (topic, key, body).
    pub records: Vec<(String, String, Bytes)>,
    /// Every refusal no connection has demonstrably read yet, as (client, seq, reason): the
    /// refusal records that held them may be gone with retention (`server/failures.rs`).
    pub unread: Vec<(String, u64, String)>,
}

/// One entry read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A client name's last sequence.
    LastSeq(&'a str, u64),
    /// A SOW record: topic, key, body.
    Record(&'a str, &'a str, &'a [u8]),
    /// An unread failure: client name, sequence, reason.
    Unread(&'a str, u64, &'a str),
}

fn put_entry(buf: &mut BytesMut, payload: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u64_le(0);
    payload(buf);
    let len = (buf.len() - start - 8) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = record_crc(&buf[start..start + 4], &buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_str16(buf: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    buf.put_u16_le(b.len() as u16);
    buf.put_slice(b);
}

/// Writes `data` as `dir/snapshot-<lsn>.snap` (module docs); returns the path.
pub fn write_snapshot(dir: &Path, data: &SnapshotData) -> Result<PathBuf, ServerError> {
    let path = dir.join(snapshot_name(data.lsn));
    let tmp = path.with_extension("snap.tmp");
    let io = |e| io_err(&tmp, e);
    let file = File::create(&tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut head = Vec::with_capacity(HEADER_LEN as usize);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&data.lsn.to_le_bytes());
    head.extend_from_slice(&data.timestamp_us.to_le_bytes());
    let crc = crc32fast::hash(&head);
    head.extend_from_slice(&crc.to_le_bytes());
    w.write_all(&head).map_err(io)?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut count = 0u64;
    for (client, seq) in &data.last_seq {
        put_entry(&mut buf, |b| {
            b.put_u8(TAG_LAST_SEQ);
            put_str16(b, client);
            b.put_u64_le(*seq);
        });
        count += 1;
        if buf.len() > 60 * 1024 {
            w.write_all(&buf).map_err(io)?;
            buf.clear();
        }
    }
    for (client, seq, reason) in &data.unread {
        put_entry(&mut buf, |b| {
            b.put_u8(TAG_UNREAD);
            put_str16(b, client);
            b.put_u64_le(*seq);
            b.put_slice(reason.as_bytes());
        });
        count += 1;
        if buf.len() > 60 * 1024 {
            w.write_all(&buf).map_err(io)?;
            buf.clear();
        }
    }
    for (topic, key, body) in &data.records {
        put_entry(&mut buf, |b| {
            b.put_u8(TAG_RECORD);
            put_str16(b, topic);
            b.put_u32_le(key.len() as u32);
            b.put_slice(key.as_bytes());
            b.put_slice(body);
        });
        count += 1;
        if buf.len() > 60 * 1024 {
            w.write_all(&buf).map_err(io)?;
            buf.clear();
        }
    }
    put_entry(&mut buf, |b| {
        b.put_u8(TAG_END);
        b.put_u64_le(count);
    });
    w.write_all(&buf).map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Removes all but the `keep` newest snapshots, and any leftover temporary file.
pub fn prune_snapshots(dir: &Path, keep: usize) -> Result<(), ServerError> {
    let snaps = list_snapshots(dir)?;
    let n = snaps.len().saturating_sub(keep);
    for (_, path) in &snaps[..n] {
        fs::remove_file(path).map_err(|e| io_err(path, e))?;
    }
    if n > 0 {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Removes temporary files of snapshots a crash interrupted.
pub fn remove_leftovers(dir: &Path) -> Result<(), ServerError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".snap.tmp"))
            {
                fs::remove_file(e.path()).map_err(|err| io_err(&e.path(), err))?;
            }
        }
    }
    Ok(())
}

/// Damage found in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDamage {
    /// First bad byte.
    pub start: u64,
    /// First byte of the next intact entry (or the end of the file).
    pub end: u64,
    /// What was wrong.
    pub what: String,
    /// Intact entries before it.
    pub entries_before: u64,
}

/// A snapshot's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotCheck {
    /// The file.
    pub path: PathBuf,
    /// The LSN its name carries.
    pub lsn: u64,
    /// Intact entries (the end marker not counted).
    pub entries: u64,
    /// The entries the end marker says were written (`None` if it is missing or damaged).
    pub written: Option<u64>,
    /// Every damaged range.
    pub damage: Vec<SnapshotDamage>,
}

impl SnapshotCheck {
    /// Whether the snapshot can be loaded as it is.
    pub fn is_intact(&self) -> bool {
        self.damage.is_empty() && self.written == Some(self.entries)
    }

    /// As the error that refuses to load it.
    pub fn to_error(&self) -> Option<ServerError> {
        if self.is_intact() {
            return None;
        }
        let (offset, what) = match self.damage.first() {
            Some(d) => (d.start, d.what.clone()),
            None => (
                0,
                match self.written {
                    None => "the snapshot is incomplete (no end marker)".to_owned(),
                    Some(w) => format!("{w} entries were written, {} are intact", self.entries),
                },
            ),
        };
        Some(ServerError::SnapshotDamaged {
            path: self.path.clone(),
            offset,
            what,
        })
    }
}

enum Frame<'a> {
    Good(u64, Entry<'a>),
    End(u64, u64),
    Bad,
}

fn probe<'a>(win: &'a mut Window, off: u64) -> std::io::Result<Frame<'a>> {
    let head = win.get(off, 8)?;
    let Ok(prefix) = <[u8; 8]>::try_from(head) else {
        return Ok(Frame::Bad);
    };
    let (len, crc) = split_prefix(&prefix);
    let len = u64::from(len);
    if len == 0 || len > MAX_PAYLOAD || off + PREFIX_LEN + len > win.len() {
        return Ok(Frame::Bad);
    }
    let b = win.get(off, (PREFIX_LEN + len) as usize)?;
    if record_crc(&b[..4], &b[8..]) != crc {
        return Ok(Frame::Bad);
    }
    let size = PREFIX_LEN + len;
    Ok(match decode_entry(&b[8..]) {
        Some(Ok(e)) => Frame::Good(size, e),
        Some(Err(n)) => Frame::End(size, n),
        None => Frame::Bad,
    })
}

/// `Some(Ok)` an entry, `Some(Err(n))` the end marker, `None` undecodable.
fn decode_entry(p: &[u8]) -> Option<Result<Entry<'_>, u64>> {
    let (&tag, rest) = p.split_first()?;
    let u16_at = |b: &[u8]| {
        b.get(..2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]) as usize)
    };
    match tag {
        TAG_LAST_SEQ => {
            let n = u16_at(rest)?;
            let name = std::str::from_utf8(rest.get(2..2 + n)?).ok()?;
            let seq = u64::from_le_bytes(rest.get(2 + n..10 + n)?.try_into().ok()?);
            (rest.len() == 10 + n).then_some(Ok(Entry::LastSeq(name, seq)))
        }
        TAG_RECORD => {
            let n = u16_at(rest)?;
            let topic = std::str::from_utf8(rest.get(2..2 + n)?).ok()?;
            let k = u32::from_le_bytes(rest.get(2 + n..6 + n)?.try_into().ok()?) as usize;
            let key = std::str::from_utf8(rest.get(6 + n..6 + n + k)?).ok()?;
            Some(Ok(Entry::Record(topic, key, rest.get(6 + n + k..)?)))
        }
        TAG_UNREAD => {
            let n = u16_at(rest)?;
            let name = std::str::from_utf8(rest.get(2..2 + n)?).ok()?;
            let seq = u64::from_le_bytes(rest.get(2 + n..10 + n)?.try_into().ok()?);
            let reason = std::str::from_utf8(rest.get(10 + n..)?).ok()?;
            Some(Ok(Entry::Unread(name, seq, reason)))
        }
        TAG_END => Some(Err(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?))),
        _ => None,
    }
}

/// Reads the snapshot at `path`, handing every intact entry to `each`, and reports its health
/// (damaged ranges are skipped by resynchronising on the next intact entry).
pub fn check_snapshot(
    path: &Path,
    mut each: impl FnMut(Entry<'_>),
) -> Result<(SnapshotCheck, u64), ServerError> {
    let io = |e| io_err(path, e);
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut win = Window::new(file, len);
    let name_lsn = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_name)
        .unwrap_or(0);
    let mut check = SnapshotCheck {
        path: path.to_owned(),
        lsn: name_lsn,
        entries: 0,
        written: None,
        damage: Vec::new(),
    };
    let head = win.get(0, HEADER_LEN as usize).map_err(io)?.to_vec();
    let mut timestamp = 0;
    let header_ok = head.len() == HEADER_LEN as usize
        && &head[..8] == MAGIC
        && crc32fast::hash(&head[..24]).to_le_bytes() == head[24..28]
        && u64::from_le_bytes(head[8..16].try_into().unwrap_or_default()) == name_lsn;
    if header_ok {
        timestamp = u64::from_le_bytes(head[16..24].try_into().unwrap_or_default());
    } else {
        check.damage.push(SnapshotDamage {
            start: 0,
            end: HEADER_LEN.min(len),
            what: "snapshot header is damaged".into(),
            entries_before: 0,
        });
    }
    let mut off = HEADER_LEN;
    while off < len {
        match probe(&mut win, off).map_err(io)? {
            Frame::Good(size, e) => {
                each(e);
                check.entries += 1;
                off += size;
            }
            Frame::End(size, n) => {
                check.written = Some(n);
                off += size;
                if off < len {
                    check.damage.push(SnapshotDamage {
                        start: off,
                        end: len,
                        what: "bytes after the end marker".into(),
                        entries_before: check.entries,
                    });
                }
                break;
            }
            Frame::Bad => {
                let mut next = off + 1;
                while next < len && matches!(probe(&mut win, next).map_err(io)?, Frame::Bad) {
                    next += 1;
                }
                check.damage.push(SnapshotDamage {
                    start: off,
                    end: next,
                    what: "snapshot entry checksum mismatch".into(),
                    entries_before: check.entries,
                });
                off = next;
            }
        }
    }
    Ok((check, timestamp))
}

/// Loads the snapshot at `path` into `apply`, refusing any damage.
pub fn load_snapshot(path: &Path, apply: impl FnMut(Entry<'_>)) -> Result<u64, ServerError> {
    let (check, _) = check_snapshot(path, apply)?;
    match check.to_error() {
        Some(e) => Err(e),
        None => Ok(check.lsn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> SnapshotData {
        SnapshotData {
            lsn: 42,
            timestamp_us: 7,
            last_seq: vec![("a".into(), 5), ("b".into(), 9)],
            records: (0..100)
                .map(|i| {
                    (
                        "orders".into(),
                        format!("k{i}"),
                        Bytes::from(format!("{{\"id\":{i}}}")),
                    )
                })
                .collect(),
            unread: vec![("a".into(), 7, "not entitled".into())],
        }
    }

    fn read(path: &Path) -> (SnapshotCheck, Vec<String>) {
        let mut seen = Vec::new();
        let (c, _) = check_snapshot(path, |e| seen.push(format!("{e:?}"))).unwrap();
        (c, seen)
    }

    #[test]
    fn snapshots_round_trip_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_snapshot(dir.path(), &data()).unwrap();
        let (c, seen) = read(&path);
        assert!(c.is_intact(), "{c:?}");
        assert_eq!((c.lsn, c.entries, seen.len()), (42, 103, 103));
        assert!(seen[0].contains("LastSeq(\"a\", 5)"));
        assert!(
            seen[2].contains("Unread(\"a\", 7, \"not entitled\")"),
            "{}",
            seen[2]
        );
        for lsn in [50, 60] {
            write_snapshot(dir.path(), &SnapshotData { lsn, ..data() }).unwrap();
        }
        prune_snapshots(dir.path(), 2).unwrap();
        let lsns: Vec<u64> = list_snapshots(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(lsns, [50, 60]);
    }

    #[test]
    fn damage_and_truncation_are_found_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_snapshot(dir.path(), &data()).unwrap();
        let full = fs::read(&path).unwrap();
        for (at, what) in [
            (10usize, "header"),
            (full.len() / 2, "middle"),
            (full.len() - 3, "end"),
        ] {
            let mut b = full.clone();
            b[at] ^= 0x10;
            fs::write(&path, &b).unwrap();
            let (c, _) = read(&path);
            assert!(!c.is_intact(), "{what}");
            assert!(load_snapshot(&path, |_| {}).is_err(), "{what}");
            if what == "middle" {
                assert_eq!(c.entries, 102, "{c:?}");
                assert_eq!(c.damage.len(), 1);
                assert_eq!(c.written, Some(103));
            }
        }
        fs::write(&path, &full[..full.len() - 20]).unwrap();
        let (c, _) = read(&path);
        assert_eq!(c.written, None);
        assert!(matches!(
            c.to_error(),
            Some(ServerError::SnapshotDamaged { .. })
        ));
    }
}
