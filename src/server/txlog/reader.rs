//! [`LogReader`]: every record in log order, across segments, from the beginning or from a
//! saved place, streamed from disk.
//!
//! A plain blocking reader: use it on a dedicated thread or in `spawn_blocking`, never on an
//! async worker. Memory is bounded by its read window (about 1 MiB, or one record if larger).
//!
//! Reading a log a server is writing: give the reader the server's durable LSN
//! ([`LogReader::with_limit`], or [`LogReader::follow`] to track it as it moves). It then never
//! reads past what is durable; [`LogReader::next_entry`] returns `Ok(None)` when it has caught
//! up and carries on from the same place when called again. Without a limit it reads to the end
//! of the data (a torn tail of the last segment is the end, as recovery would cut it).
//!
//! To keep history from being removed while reading it, take a
//! [`LogHold`](super::LogHold) first ([`LogHolds::hold_from`](super::LogHolds::hold_from));
//! a start older than the retained log is [`ServerError::NotRetained`].

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::watch;

use super::check::check_log;
use super::files::{io_err, list_segments};
use super::format::{decode_payload, Decoded, Record, RecordKind, SEGMENT_HEADER_LEN};
use super::scan::{first_lsn_of, probe, resync, LogPosition, Probe, Window};
use crate::error::ServerError;

/// Where a [`LogReader`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained record.
    Beginning,
    /// The record with this LSN (or the first after it, if it is the end of the log).
    Lsn(u64),
    /// The record at this position (as given by [`LogEntry::position`] or
    /// [`LogReader::position`]).
    Position(LogPosition),
    /// The first record whose timestamp is at or after this many µs since the Unix epoch
    /// (in log order; timestamps follow the server's clock).
    Timestamp(u64),
}

/// One record read from the log, borrowing the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// Its LSN.
    pub lsn: u64,
    /// When the server accepted the write (µs since the Unix epoch).
    pub timestamp_us: u64,
    /// Where it lies.
    pub position: LogPosition,
    /// Its content.
    pub record: Record<'a>,
}

impl LogEntry<'_> {
    /// An owned copy.
    pub fn to_owned_entry(&self) -> OwnedLogEntry {
        OwnedLogEntry {
            lsn: self.lsn,
            timestamp_us: self.timestamp_us,
            position: self.position,
            kind: self.record.kind,
            seq: self.record.seq,
            client: self.record.client.to_owned(),
            topic: self.record.topic.to_owned(),
            arg: self.record.arg.map(str::to_owned),
            body: Bytes::copy_from_slice(self.record.body),
        }
    }
}

/// An owned [`LogEntry`] (what the [`Iterator`] impl of [`LogReader`] yields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedLogEntry {
    /// Its LSN.
    pub lsn: u64,
    /// When the server accepted the write (µs since the Unix epoch).
    pub timestamp_us: u64,
    /// Where it lies.
    pub position: LogPosition,
    /// What it does.
    pub kind: RecordKind,
    /// The publisher's sequence number, if any.
    pub seq: Option<u64>,
    /// The client name that wrote it.
    pub client: String,
    /// The topic.
    pub topic: String,
    /// Key, filter or sow_keys, depending on the kind.
    pub arg: Option<String>,
    /// The body.
    pub body: Bytes,
}

enum Limit {
    None,
    Fixed(u64),
    Follow(watch::Receiver<u64>),
}

struct Cursor {
    first_lsn: u64,
    path: PathBuf,
    win: Window,
    off: u64,
}

/// Reads the log record by record (module docs).
pub struct LogReader {
    dir: PathBuf,
    cur: Option<Cursor>,
    /// LSN of the next record (0: take whatever the start position holds).
    expected: u64,
    skip_below_lsn: u64,
    skip_before_us: u64,
    limit: Limit,
    /// The iterator stops after its first error.
    failed: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.dir)
            .field("next_lsn", &self.expected)
            .field("position", &self.position())
            .finish()
    }
}

fn open_cursor(first_lsn: u64, path: PathBuf, off: u64) -> Result<Cursor, ServerError> {
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ServerError::NotRetained {
                requested: first_lsn,
                first_retained: 0,
            })
        }
        Err(e) => return Err(io_err(&path, e)),
    };
    let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
    Ok(Cursor {
        first_lsn,
        path,
        win: Window::new(file, len),
        off,
    })
}

impl LogReader {
    /// A reader of the log in the data directory `dir`, starting at `start`.
    ///
    /// Fails with [`ServerError::NotRetained`] when `start` is older than the oldest retained
    /// record (or names a segment that is gone).
    pub fn open(dir: &Path, start: StartAt) -> Result<LogReader, ServerError> {
        let segments = list_segments(dir)?;
        let mut r = LogReader {
            dir: dir.to_owned(),
            cur: None,
            expected: 0,
            skip_below_lsn: 0,
            skip_before_us: 0,
            limit: Limit::None,
            failed: false,
        };
        let Some((oldest, _)) = segments.first().cloned() else {
            r.expected = match start {
                StartAt::Lsn(l) => l.max(1),
                _ => 1,
            };
            return Ok(r);
        };
        match start {
            StartAt::Beginning => {
                let (lsn, path) = segments[0].clone();
                r.cur = Some(open_cursor(lsn, path, SEGMENT_HEADER_LEN)?);
                r.expected = lsn;
            }
            StartAt::Lsn(l) => {
                let l = l.max(1);
                if l < oldest {
                    return Err(ServerError::NotRetained {
                        requested: l,
                        first_retained: oldest,
                    });
                }
                let (lsn, path) = segments
                    .iter()
                    .rev()
                    .find(|(f, _)| *f <= l)
                    .cloned()
                    .unwrap_or_else(|| segments[0].clone());
                r.cur = Some(open_cursor(lsn, path, SEGMENT_HEADER_LEN)?);
                r.expected = lsn;
                r.skip_below_lsn = l;
            }
            StartAt::Position(p) => {
                let path = dir.join(super::files::segment_name(p.segment));
                let mut c = open_cursor(p.segment, path, p.offset).map_err(|e| match e {
                    ServerError::NotRetained { .. } => ServerError::NotRetained {
                        requested: p.segment,
                        first_retained: oldest,
                    },
                    other => other,
                })?;
                let lsn = match probe(&mut c.win, p.offset).map_err(|e| io_err(&c.path, e))? {
                    Probe::Good { decoded, .. } => Some(first_lsn_of(&decoded)),
                    _ => None,
                };
                match lsn {
                    Some(l) => r.expected = l,
                    None if p.offset >= c.win.len() || p.offset == SEGMENT_HEADER_LEN => {
                        // The end of the data: the next record will be written here.
                        r.expected = 0;
                    }
                    None => {
                        return Err(ServerError::Corrupt {
                            path: c.path.clone(),
                            offset: p.offset,
                            what: "no record starts at this log position".into(),
                        })
                    }
                }
                r.cur = Some(c);
            }
            StartAt::Timestamp(t) => {
                // The last segment whose first record is at or before `t`.
                let mut pick = segments[0].clone();
                for (lsn, path) in &segments {
                    let mut c = open_cursor(*lsn, path.clone(), SEGMENT_HEADER_LEN)?;
                    let first_ts =
                        match probe(&mut c.win, SEGMENT_HEADER_LEN).map_err(|e| io_err(path, e))? {
                            Probe::Good { decoded, .. } => decoded.timestamp_us(),
                            _ => u64::MAX,
                        };
                    if first_ts > t {
                        break;
                    }
                    pick = (*lsn, path.clone());
                }
                r.cur = Some(open_cursor(pick.0, pick.1, SEGMENT_HEADER_LEN)?);
                r.expected = pick.0;
                r.skip_before_us = t;
            }
        }
        Ok(r)
    }

    /// Never reads records above `max_lsn` (a server's durable LSN).
    pub fn with_limit(mut self, max_lsn: u64) -> LogReader {
        self.limit = Limit::Fixed(max_lsn);
        self
    }

    /// Never reads records above the LSN `durable` holds, read again at every call (for a log
    /// that a server in this process is writing).
    pub fn follow(mut self, durable: watch::Receiver<u64>) -> LogReader {
        self.limit = Limit::Follow(durable);
        self
    }

    /// The position of the next record (where it is or will be written); save it to resume
    /// with [`StartAt::Position`]. `None` before the first segment exists.
    pub fn position(&self) -> Option<LogPosition> {
        self.cur.as_ref().map(|c| LogPosition {
            segment: c.first_lsn,
            offset: c.off,
        })
    }

    /// The LSN the next record will have (0 when started at an end position not yet known).
    pub fn next_lsn(&self) -> u64 {
        self.expected
    }

    fn limit(&self) -> u64 {
        match &self.limit {
            Limit::None => u64::MAX,
            Limit::Fixed(l) => *l,
            Limit::Follow(rx) => *rx.borrow(),
        }
    }

    /// The next record, or `Ok(None)` at the end of the log (or of what is durable).
    ///
    /// Errors: damage in what is read ([`ServerError::LogDamaged`], counted over the whole
    /// log), a record kind this version must understand but does not
    /// ([`ServerError::UnsupportedRecord`]), a segment removed under the reader
    /// ([`ServerError::NotRetained`]), or I/O.
    pub fn next_entry(&mut self) -> Result<Option<LogEntry<'_>>, ServerError> {
        let Some((off, size)) = self.advance()? else {
            return Ok(None);
        };
        let c = self.cur.as_mut().expect("advance leaves a cursor");
        let path = &c.path;
        let bytes = c.win.get(off, size as usize).map_err(|e| io_err(path, e))?;
        match decode_payload(&bytes[8..]) {
            Ok(Decoded::Record {
                lsn,
                timestamp_us,
                record,
            }) => Ok(Some(LogEntry {
                lsn,
                timestamp_us,
                position: LogPosition {
                    segment: c.first_lsn,
                    offset: off,
                },
                record,
            })),
            _ => Err(ServerError::Corrupt {
                path: c.path.clone(),
                offset: off,
                what: "record changed while being read".into(),
            }),
        }
    }

    /// Moves past skipped records to the next one to yield; returns its offset and size.
    fn advance(&mut self) -> Result<Option<(u64, u64)>, ServerError> {
        let mut refreshed = false;
        loop {
            if self.expected != 0 && self.expected > self.limit() {
                return Ok(None);
            }
            if self.cur.is_none() && !self.next_segment()? {
                return Ok(None);
            }
            let c = self.cur.as_mut().expect("cursor present");
            let path = c.path.clone();
            let io = |e| io_err(&path, e);
            let found = match probe(&mut c.win, c.off).map_err(io)? {
                Probe::Good { size, decoded } => Some((
                    size,
                    decoded.lsn(),
                    first_lsn_of(&decoded),
                    skip_kind(&decoded),
                    decoded.timestamp_us(),
                )),
                Probe::Unsupported { kind } => {
                    return Err(ServerError::UnsupportedRecord {
                        path: c.path.clone(),
                        offset: c.off,
                        kind,
                    })
                }
                Probe::Bad => None,
            };
            match found {
                Some((size, lsn, first, skip, ts)) => {
                    refreshed = false;
                    if self.expected != 0 && first != self.expected {
                        return Err(self.damage_error());
                    }
                    let off = c.off;
                    c.off += size;
                    self.expected = lsn + 1;
                    if skip || lsn < self.skip_below_lsn || ts < self.skip_before_us {
                        continue;
                    }
                    // Once past the start, timestamps no longer filter (the clock may step).
                    self.skip_before_us = 0;
                    self.skip_below_lsn = 0;
                    return Ok(Some((off, size)));
                }
                None => {
                    if !refreshed {
                        // The file may have grown or been written since it was buffered.
                        refreshed = true;
                        let file = std::fs::File::open(&c.path).map_err(io)?;
                        let len = file.metadata().map_err(io)?.len();
                        c.win = Window::new(file, len);
                        continue;
                    }
                    let (good_after, _) =
                        resync(&mut c.win, c.off, self.expected.max(1)).map_err(io)?;
                    if good_after.is_some() {
                        return Err(self.damage_error());
                    }
                    // The end of this segment's data: is there a next one?
                    if self.next_segment()? {
                        refreshed = false;
                        continue;
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Moves to the segment starting at the next expected LSN, if it exists. A later
    /// segment that does not start there is damage.
    fn next_segment(&mut self) -> Result<bool, ServerError> {
        let segments = list_segments(&self.dir)?;
        let current = self.cur.as_ref().map(|c| c.first_lsn);
        let next = segments
            .into_iter()
            .find(|(f, _)| current.is_none_or(|c| *f > c));
        let Some((first, path)) = next else {
            return Ok(false);
        };
        if self.expected != 0 && first != self.expected {
            if current.is_none() && first > self.expected {
                return Err(ServerError::NotRetained {
                    requested: self.expected,
                    first_retained: first,
                });
            }
            return Err(self.damage_error());
        }
        self.cur = Some(open_cursor(first, path, SEGMENT_HEADER_LEN)?);
        self.expected = first;
        Ok(true)
    }

    /// The damage as the whole-log check reports it.
    fn damage_error(&self) -> ServerError {
        match check_log(&self.dir, 0, |_, _| {}) {
            Ok(check) => check.to_error().unwrap_or_else(|| ServerError::Corrupt {
                path: self
                    .cur
                    .as_ref()
                    .map_or_else(|| self.dir.clone(), |c| c.path.clone()),
                offset: self.cur.as_ref().map_or(0, |c| c.off),
                what: format!(
                    "the record with LSN {} is not where it should be",
                    self.expected
                ),
            }),
            Err(e) => e,
        }
    }
}

/// Records the reader passes over: optional kinds it does not know, and repair gaps.
fn skip_kind(d: &Decoded<'_>) -> bool {
    match d {
        Decoded::Skipped { .. } => true,
        Decoded::Record { record, .. } => !record.kind.is_write(),
    }
}

impl Iterator for LogReader {
    type Item = Result<OwnedLogEntry, ServerError>;

    /// Owned entries; `None` at the end (call again later to read what was written since);
    /// after an error, `None` for good.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e.to_owned_entry())),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
