//! Reading segments record by record, and telling a torn tail from damage.
//!
//! [`scan_segment`] walks one segment from its header. At each offset it *probes* a record:
//! the length must be plausible, the checksum (over length and payload) must match, and the
//! payload must decode. A good record must also carry the next LSN. When a probe fails, the
//! scanner *resynchronises*: it looks at every later offset for a good record whose LSN could
//! follow (at least the expected one, and no more than the bytes left could have held), skipping
//! zero bytes quickly. What it finds decides what the bad bytes were:
//!
//! - a good record further on: the bytes in between are a [`DamagedRange`] (corruption: data
//!   the log promised, with intact records after it);
//! - nothing but zeros to the end of the file: the end of the data (preallocated space);
//! - non-zero bytes and then nothing good: a *bad tail* ([`Tail::Garbage`]). In the last
//!   segment that is a torn write, cut quietly; in a finished segment it is damage.
//!
//! Memory stays bounded: the file is read through a window of about 1 MiB (or one record, if
//! a record is larger).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::files::{io_err, read_at};
use super::format::{
    decode_payload, peek_lsn, record_crc, split_prefix, DecodeError, Decoded, RecordKind,
    SegmentHeader, MAX_PAYLOAD, MIN_PAYLOAD, PREFIX_LEN, SEGMENT_HEADER_LEN,
};
use crate::error::ServerError;

const WINDOW: usize = 1 << 20;

/// A read window over a file: sequential reads hit the buffer, any offset can be asked for.
pub(crate) struct Window {
    file: File,
    len: u64,
    buf: Vec<u8>,
    start: u64,
}

impl Window {
    pub fn new(file: File, len: u64) -> Window {
        Window {
            file,
            len,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Up to `n` bytes at `off` (fewer only at the end of the file).
    pub fn get(&mut self, off: u64, n: usize) -> io::Result<&[u8]> {
        if off >= self.len {
            return Ok(&[]);
        }
        let end = off.saturating_add(n as u64).min(self.len);
        let have = off >= self.start && end <= self.start + self.buf.len() as u64;
        if !have {
            let read = ((end - off) as usize)
                .max(WINDOW)
                .min((self.len - off) as usize);
            self.buf.resize(read, 0);
            let got = read_at(&self.file, &mut self.buf, off)?;
            self.buf.truncate(got);
            self.start = off;
            if self.buf.capacity() > 4 * WINDOW && read <= WINDOW {
                self.buf.shrink_to(WINDOW);
            }
        }
        // The file may be shorter than `len` (cut after it was opened): short reads.
        let from = ((off - self.start) as usize).min(self.buf.len());
        let to = ((end - self.start) as usize).min(self.buf.len()).max(from);
        Ok(&self.buf[from..to])
    }
}

/// Where a record lies in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// The segment: the LSN its file name carries (its first record's).
    pub segment: u64,
    /// Byte offset of the record's prefix inside the segment file.
    pub offset: u64,
}

/// The outcome of probing one offset.
pub(crate) enum Probe<'a> {
    /// A good record of `size` bytes (prefix included).
    Good { size: u64, decoded: Decoded<'a> },
    /// Checksum matched but the kind must be understood and is not known.
    Unsupported { kind: u8 },
    /// Not a record.
    Bad,
}

/// Probes a record at `off`.
pub(crate) fn probe(win: &mut Window, off: u64) -> io::Result<Probe<'_>> {
    let len_file = win.len();
    if len_file.saturating_sub(off) < PREFIX_LEN + MIN_PAYLOAD {
        return Ok(Probe::Bad);
    }
    let prefix: [u8; 8] = match win.get(off, 8)?.try_into() {
        Ok(p) => p,
        Err(_) => return Ok(Probe::Bad),
    };
    let (len, crc) = split_prefix(&prefix);
    let len = u64::from(len);
    if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) || off + PREFIX_LEN + len > len_file {
        return Ok(Probe::Bad);
    }
    let bytes = win.get(off, (PREFIX_LEN + len) as usize)?;
    if bytes.len() as u64 != PREFIX_LEN + len || record_crc(&bytes[..4], &bytes[8..]) != crc {
        return Ok(Probe::Bad);
    }
    let payload = &bytes[8..];
    match decode_payload(payload) {
        Ok(decoded) => Ok(Probe::Good {
            size: PREFIX_LEN + len,
            decoded,
        }),
        Err(DecodeError::UnknownKind(kind)) => Ok(Probe::Unsupported { kind }),
        Err(DecodeError::Malformed(_)) => Ok(Probe::Bad),
    }
}

/// The LSN the record after `d` must carry (a repair gap record stands for a range).
pub(crate) fn next_expected(d: &Decoded<'_>) -> u64 {
    d.lsn().saturating_add(1)
}

/// The LSN `d` must follow: for a repair gap, the first LSN it stands for.
pub(crate) fn first_lsn_of(d: &Decoded<'_>) -> u64 {
    match d {
        Decoded::Record { record, lsn, .. } if record.kind == RecordKind::RepairGap => {
            record.seq.unwrap_or(*lsn).min(*lsn)
        }
        other => other.lsn(),
    }
}

/// Looks for the next good record at or after `from` that could follow LSN `expected - 1`.
/// Returns its offset, and the end of the last non-zero byte seen before it (or before the
/// end of the file when nothing is found).
pub(crate) fn resync(win: &mut Window, from: u64, expected: u64) -> io::Result<(Option<u64>, u64)> {
    let len = win.len();
    let max_records = (len.saturating_sub(from)) / (PREFIX_LEN + MIN_PAYLOAD) + 1;
    let max_lsn = expected.saturating_add(max_records);
    let mut nonzero_end = from;
    let mut off = from;
    while off + PREFIX_LEN + MIN_PAYLOAD <= len {
        // Skip runs of zeros: a record's length is never zero, so a record cannot start more
        // than 3 bytes before the next non-zero byte.
        let chunk = win.get(off, 4096)?;
        match chunk.iter().position(|b| *b != 0) {
            None => {
                off += chunk.len() as u64;
                continue;
            }
            Some(nz) if nz > 3 => {
                off += (nz - 3) as u64;
                continue;
            }
            Some(_) => {}
        }
        let head = win.get(off, 16)?;
        if head.len() == 16 {
            let lsn = peek_lsn(&head[8..]).unwrap_or(0);
            if (expected..=max_lsn).contains(&lsn) && matches!(probe(win, off)?, Probe::Good { .. })
            {
                return Ok((Some(off), nonzero_end));
            }
        }
        if win.get(off, 1)?.first().is_some_and(|b| *b != 0) {
            nonzero_end = off + 1;
        }
        off += 1;
    }
    // The last few bytes, too short for a record.
    let rest = win.get(off, (len - off.min(len)) as usize)?;
    if let Some(p) = rest.iter().rposition(|b| *b != 0) {
        nonzero_end = off + p as u64 + 1;
    }
    Ok((None, nonzero_end))
}

/// What follows the last good record of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// The file ends right there.
    Clean,
    /// Only zero bytes follow (space reserved for appends).
    Zeros,
    /// Non-zero bytes `start..end` that are no record, with no good record after them.
    Garbage {
        /// First bad byte.
        start: u64,
        /// One past the last non-zero byte.
        end: u64,
    },
}

/// Bad bytes with good records after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRange {
    /// The segment file.
    pub path: PathBuf,
    /// First bad byte.
    pub start: u64,
    /// First byte of the good record after the damage (or of whatever bounds it).
    pub end: u64,
    /// What was wrong.
    pub what: String,
    /// The LSN of the last good record before the damage (0 if none).
    pub lsn_before: u64,
    /// The LSN of the first good record after it (`u64::MAX` if unknown).
    pub lsn_after: u64,
    /// Good records before the damage (in the segment when scanned; in the whole log once
    /// [`check_log`](super::check::check_log) has placed it).
    pub records_before: u64,
}

impl DamagedRange {
    /// The LSNs that the damaged bytes held, as an inclusive range (empty when the records on
    /// both sides are consecutive: the damage was between records, nothing is missing).
    pub fn lost_lsns(&self) -> Option<(u64, u64)> {
        let first = self.lsn_before + 1;
        let last = self.lsn_after.checked_sub(1)?;
        (self.lsn_after != u64::MAX && first <= last).then_some((first, last))
    }
}

/// The state of a segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderState {
    /// Present and valid.
    Good,
    /// The file is shorter than a header, or the header bytes are all zero (a segment created
    /// just before a crash).
    Missing,
    /// Present but not valid, or naming another first LSN than the file name.
    Damaged,
}

/// What one segment holds.
#[derive(Clone, Debug)]
pub struct SegmentScan {
    /// The file.
    pub path: PathBuf,
    /// The first LSN its name carries.
    pub first_lsn: u64,
    /// The header's state.
    pub header: HeaderState,
    /// When it was created, from the header (0 if unknown).
    pub created_us: u64,
    /// Good records.
    pub records: u64,
    /// LSN of the last good record (`first_lsn - 1` if none).
    pub last_lsn: u64,
    /// Timestamp of the first and last good record (0 if none).
    pub first_timestamp_us: u64,
    /// Timestamp of the last good record (0 if none).
    pub last_timestamp_us: u64,
    /// Offset just past the last good record: where appends continue.
    pub data_end: u64,
    /// The file's length.
    pub file_len: u64,
    /// Damage with good records after it, in this segment.
    pub damage: Vec<DamagedRange>,
    /// What follows the last good record.
    pub tail: Tail,
}

/// Scans the segment at `path` (whose name says it starts at `first_lsn`), calling `each` for
/// every good record in order with its position. `min_lsn`: records below it are checked but
/// not handed to `each` (they are covered by a snapshot).
pub fn scan_segment(
    path: &Path,
    first_lsn: u64,
    min_lsn: u64,
    mut each: impl FnMut(&Decoded<'_>, LogPosition),
) -> Result<SegmentScan, ServerError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut win = Window::new(file, file_len);
    let io = |e| io_err(path, e);
    let head = win.get(0, SEGMENT_HEADER_LEN as usize).map_err(io)?;
    let (header, created_us) = match SegmentHeader::decode(head) {
        Some(h) if h.first_lsn == first_lsn => (HeaderState::Good, h.created_us),
        Some(_) => (HeaderState::Damaged, 0),
        None if (head.len() as u64) < SEGMENT_HEADER_LEN || head.iter().all(|b| *b == 0) => {
            (HeaderState::Missing, 0)
        }
        None => (HeaderState::Damaged, 0),
    };
    let mut scan = SegmentScan {
        path: path.to_owned(),
        first_lsn,
        header,
        created_us,
        records: 0,
        last_lsn: first_lsn.saturating_sub(1),
        first_timestamp_us: 0,
        last_timestamp_us: 0,
        data_end: SEGMENT_HEADER_LEN.min(file_len),
        file_len,
        damage: Vec::new(),
        tail: Tail::Clean,
    };
    let mut expected = first_lsn;
    let mut off = SEGMENT_HEADER_LEN;
    loop {
        if off >= file_len {
            scan.tail = Tail::Clean;
            break;
        }
        match probe(&mut win, off).map_err(io)? {
            Probe::Good { size, decoded } => {
                let first = first_lsn_of(&decoded);
                if first < expected {
                    // A good record that does not follow: out of order (never written so).
                    scan.damage.push(DamagedRange {
                        path: path.to_owned(),
                        start: off,
                        end: off + size,
                        what: format!(
                            "record with LSN {} where LSN {expected} or later was expected",
                            decoded.lsn()
                        ),
                        lsn_before: expected - 1,
                        lsn_after: u64::MAX,
                        records_before: scan.records,
                    });
                    off += size;
                    continue;
                }
                if first > expected {
                    scan.damage.push(DamagedRange {
                        path: path.to_owned(),
                        start: off,
                        end: off,
                        what: format!("LSNs {expected}..={} are missing", first - 1),
                        lsn_before: expected - 1,
                        lsn_after: first,
                        records_before: scan.records,
                    });
                }
                if decoded.lsn() >= min_lsn {
                    each(
                        &decoded,
                        LogPosition {
                            segment: first_lsn,
                            offset: off,
                        },
                    );
                }
                if scan.records == 0 {
                    scan.first_timestamp_us = decoded.timestamp_us();
                }
                scan.records += 1;
                scan.last_lsn = decoded.lsn();
                scan.last_timestamp_us = decoded.timestamp_us();
                expected = next_expected(&decoded);
                off += size;
                scan.data_end = off;
            }
            Probe::Unsupported { kind } => {
                return Err(ServerError::UnsupportedRecord {
                    path: path.to_owned(),
                    offset: off,
                    kind,
                });
            }
            Probe::Bad => {
                let (found, nonzero_end) = resync(&mut win, off, expected).map_err(io)?;
                match found {
                    Some(next) => {
                        let lsn_after = match probe(&mut win, next).map_err(io)? {
                            Probe::Good { decoded, .. } => first_lsn_of(&decoded),
                            _ => u64::MAX,
                        };
                        scan.damage.push(DamagedRange {
                            path: path.to_owned(),
                            start: off,
                            end: next,
                            what: describe_bad(&mut win, off).map_err(io)?,
                            lsn_before: expected - 1,
                            lsn_after,
                            records_before: scan.records,
                        });
                        off = next;
                        // The record at `next` is taken by the next turn; it follows the
                        // damage, so the gap check there reports nothing more.
                        expected = lsn_after;
                    }
                    None if nonzero_end <= off => {
                        scan.tail = Tail::Zeros;
                        break;
                    }
                    None => {
                        scan.tail = Tail::Garbage {
                            start: off,
                            end: nonzero_end,
                        };
                        break;
                    }
                }
            }
        }
    }
    if header == HeaderState::Damaged {
        scan.damage.insert(
            0,
            DamagedRange {
                path: path.to_owned(),
                start: 0,
                end: SEGMENT_HEADER_LEN,
                what: "segment header is damaged".into(),
                lsn_before: first_lsn.saturating_sub(1),
                lsn_after: first_lsn,
                records_before: 0,
            },
        );
    }
    Ok(scan)
}

/// A short reason for the bad record at `off`.
fn describe_bad(win: &mut Window, off: u64) -> io::Result<String> {
    let head = win.get(off, 8)?;
    let Ok(prefix) = <[u8; 8]>::try_from(head) else {
        return Ok("short record".into());
    };
    let (len, _) = split_prefix(&prefix);
    let len = u64::from(len);
    Ok(if len == 0 {
        "zero bytes where a record was expected".into()
    } else if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) || off + PREFIX_LEN + len > win.len() {
        format!("record length {len} is impossible here")
    } else {
        "record checksum mismatch".into()
    })
}
