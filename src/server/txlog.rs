//! The transaction log: the on-disk record format, appending, and recovery.
//!
//! The log is one append-only file, `txlog.amps`, in the data directory. Every accepted write
//! (publish, delta_publish, sow_delete) is one record:
//!
//! ```text
//! [u32 LE payload length][u32 LE CRC32 of the payload][payload]
//! payload = kind u8 | flags u8 | seq u64 LE (0 = none) | client name (u16 LE len + bytes)
//!         | topic (u16 LE len + bytes) | arg (u32 LE len + bytes; key, filter or sow_keys)
//!         | body (the rest)
//! ```
//!
//! Two more kinds keep failure accounting durable (`failures.rs`): a refusal (kind 6: the
//! refused sequence in `seq`, the reason in `arg`) and failures read (kind 7: their sequences
//! in the body, u64 LE each).
//!
//! Records are encoded by the session that accepts the write, straight into the shared log
//! buffer, and written by the group-commit writer (see `core.rs`). On start,
//! [`recover`] reads the file front to back; the first record that is short (a torn write) or
//! whose checksum does not match ends the log: the file is truncated there and the record is
//! never replayed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};

use crate::error::ServerError;

/// The log file's name inside the data directory.
pub const LOG_FILE: &str = "txlog.amps";

/// Largest payload a record may announce; anything above is treated as corruption.
const MAX_RECORD: usize = 1 << 30;

/// Bytes of the record prefix (length + checksum).
const PREFIX: usize = 8;

/// What a record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A publish (arg = explicit SOW key, when given).
    Publish = 1,
    /// A delta_publish (arg = explicit SOW key, when given).
    DeltaPublish = 2,
    /// A sow_delete by filter (arg = the filter).
    DeleteByFilter = 3,
    /// A sow_delete by keys (arg = the comma list).
    DeleteByKeys = 4,
    /// A sow_delete by data (the body).
    DeleteByData = 5,
    /// A refused write (seq = the refused sequence, arg = the reason): its failure ack is
    /// re-sent after later logons until it is read (see `failures.rs`). Not a write.
    Refusal = 6,
    /// Failures that were read (body = their sequences, u64 LE each). Not a write.
    FailuresRead = 7,
}

impl RecordKind {
    fn from_u8(b: u8) -> Option<RecordKind> {
        Some(match b {
            1 => RecordKind::Publish,
            2 => RecordKind::DeltaPublish,
            3 => RecordKind::DeleteByFilter,
            4 => RecordKind::DeleteByKeys,
            5 => RecordKind::DeleteByData,
            6 => RecordKind::Refusal,
            7 => RecordKind::FailuresRead,
            _ => return None,
        })
    }

    /// Whether the record is an accepted write (not failure bookkeeping).
    pub fn is_write(self) -> bool {
        !matches!(self, RecordKind::Refusal | RecordKind::FailuresRead)
    }
}

/// The sequences of a [`RecordKind::FailuresRead`] body.
pub fn read_sequences(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    body.chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
}

/// One decoded record, borrowing from the read buffer.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// What the record does.
    pub kind: RecordKind,
    /// The publisher's sequence number, when the write carried one.
    pub seq: Option<u64>,
    /// The client name of the connection that wrote it.
    pub client: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// Key, filter or sow_keys, depending on the kind.
    pub arg: Option<&'a str>,
    /// The message body.
    pub body: &'a [u8],
}

/// Appends `rec` to `dst` in the on-disk format.
pub fn encode_record(dst: &mut BytesMut, rec: &Record<'_>) {
    let start = dst.len();
    let client = &rec.client.as_bytes()[..rec.client.len().min(u16::MAX as usize)];
    let topic = &rec.topic.as_bytes()[..rec.topic.len().min(u16::MAX as usize)];
    let arg = rec.arg.map(str::as_bytes).unwrap_or(b"");
    dst.reserve(PREFIX + 20 + client.len() + topic.len() + arg.len() + rec.body.len());
    dst.put_u64_le(0); // length and checksum, filled in below
    dst.put_u8(rec.kind as u8);
    dst.put_u8(u8::from(rec.arg.is_some()));
    dst.put_u64_le(rec.seq.unwrap_or(0));
    dst.put_u16_le(client.len() as u16);
    dst.put_slice(client);
    dst.put_u16_le(topic.len() as u16);
    dst.put_slice(topic);
    dst.put_u32_le(u32::try_from(arg.len()).unwrap_or(u32::MAX));
    dst.put_slice(arg);
    dst.put_slice(rec.body);
    let payload_len = dst.len() - start - PREFIX;
    let crc = crc32fast::hash(&dst[start + PREFIX..]);
    dst[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    dst[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a payload whose checksum already matched.
pub fn decode_payload(p: &[u8]) -> Option<Record<'_>> {
    let mut r = Cursor { p, pos: 0 };
    let kind = RecordKind::from_u8(r.u8()?)?;
    let flags = r.u8()?;
    let seq = r.u64()?;
    let client_len = r.u16()? as usize;
    let client = std::str::from_utf8(r.take(client_len)?).ok()?;
    let topic_len = r.u16()? as usize;
    let topic = std::str::from_utf8(r.take(topic_len)?).ok()?;
    let arg_len = r.u32()? as usize;
    let arg = std::str::from_utf8(r.take(arg_len)?).ok()?;
    let body = &p[r.pos..];
    Some(Record {
        kind,
        seq: (seq != 0).then_some(seq),
        client,
        topic,
        arg: (flags & 1 != 0).then_some(arg),
        body,
    })
}

struct Cursor<'a> {
    p: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.p.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
}

/// How a log read ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Offset just past the last good record.
    pub good_len: u64,
    /// Total file length seen; `> good_len` means a torn or corrupt tail.
    pub file_len: u64,
    /// Number of good records.
    pub records: u64,
}

/// Reads every good record of the log at `path` (missing file = empty log), calling `f` for
/// each, and stops at the first torn or corrupt record. Does not modify the file.
pub fn scan(path: &Path, mut f: impl FnMut(&Record<'_>)) -> Result<ScanEnd, ServerError> {
    let io_err = |source: io::Error| ServerError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ScanEnd::default()),
        Err(e) => return Err(io_err(e)),
    };
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut rd = BufReader::with_capacity(1 << 20, file);
    let mut end = ScanEnd {
        good_len: 0,
        file_len,
        records: 0,
    };
    let mut payload = Vec::new();
    loop {
        let mut prefix = [0u8; PREFIX];
        if !read_full(&mut rd, &mut prefix).map_err(io_err)? {
            break;
        }
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        if len > MAX_RECORD || end.good_len + (PREFIX + len) as u64 > file_len {
            break;
        }
        payload.resize(len, 0);
        if !read_full(&mut rd, &mut payload).map_err(io_err)? {
            break;
        }
        if crc32fast::hash(&payload) != crc {
            break;
        }
        let Some(rec) = decode_payload(&payload) else {
            return Err(ServerError::Corrupt {
                path: path.to_owned(),
                offset: end.good_len,
                what: "record with a valid checksum does not decode".into(),
            });
        };
        f(&rec);
        end.good_len += (PREFIX + len) as u64;
        end.records += 1;
    }
    Ok(end)
}

/// Fills `buf`; `false` if the stream ended first (cleanly or mid-way).
fn read_full(rd: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match rd.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Scans the log like [`scan`], cuts off a torn or corrupt tail, and opens the file for
/// appending.
pub fn recover(
    data_dir: &Path,
    f: impl FnMut(&Record<'_>),
) -> Result<(File, ScanEnd), ServerError> {
    let path: PathBuf = data_dir.join(LOG_FILE);
    let end = scan(&path, f)?;
    let io_err = |source: io::Error| ServerError::Io {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err)?;
    if end.file_len > end.good_len {
        tracing::warn!(
            path = %path.display(),
            good = end.good_len,
            cut = end.file_len - end.good_len,
            "transaction log has a torn or corrupt tail; truncating it"
        );
        file.set_len(end.good_len).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
    }
    Ok((file, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut buf = BytesMut::new();
        let rec = Record {
            kind: RecordKind::Publish,
            seq: Some(42),
            client: "pub-1",
            topic: "orders",
            arg: Some("k1"),
            body: b"{\"id\":1}",
        };
        encode_record(&mut buf, &rec);
        let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(len + PREFIX, buf.len());
        let back = decode_payload(&buf[PREFIX..]).unwrap();
        assert_eq!(back.seq, Some(42));
        assert_eq!(back.client, "pub-1");
        assert_eq!(back.topic, "orders");
        assert_eq!(back.arg, Some("k1"));
        assert_eq!(back.body, b"{\"id\":1}");
    }
}
