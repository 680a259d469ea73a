//! The bytes of the transaction log: segment headers and records.
//!
//! ```text
//! segment header (32 bytes):
//!   magic "AMPSTXL2" | first_lsn u64 | created_us u64 | flags u32 (0) | crc u32 of the 28 before
//! record:
//!   len u32 LE (payload bytes) | crc u32 LE = CRC-32 of (len bytes ++ payload) | payload
//! payload:
//!   lsn u64 | timestamp_us u64 | kind u8 | flags u8 | seq u64 (0 = none)
//!   | client (u16 len + bytes) | topic (u16 len + bytes) | arg (u32 len + bytes) | body (the rest)
//! ```
//!
//! All integers are little-endian. The LSN (log sequence number) is 1 for the first record
//! ever written and exactly one more for each record after it, across segments; the timestamp
//! is microseconds since the Unix epoch, taken when the server accepted the write. A record's
//! checksum covers its length too, so a damaged length is caught like damaged data.
//!
//! # Record kinds and extension
//!
//! The kind byte says what a record does ([`RecordKind`]). Kinds `0x01..=0x7f` must be
//! understood: a reader that meets an unknown one in a record whose checksum matches stops with
//! [`DecodeError::UnknownKind`] (the log was written by a newer version; it is *not* treated as
//! damage, and repair never touches it). Kinds `0x80..=0xff` are optional: a reader that does
//! not know one skips the record ([`Decoded::Skipped`]); it still takes its LSN. A new kind
//! plugs in as a variant of [`RecordKind`] plus its arm in [`RecordKind::from_u8`]; the server's
//! replay (`State::replay` in `core.rs`) and the journal decide what it means to them.

use bytes::{BufMut, BytesMut};

/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Bytes of a record's prefix (length + checksum).
pub const PREFIX_LEN: u64 = 8;
/// Bytes of the smallest possible payload (every fixed field, empty strings and body).
pub const MIN_PAYLOAD: u64 = 8 + 8 + 1 + 1 + 8 + 2 + 2 + 4;
/// Largest payload a record may announce; a length above is damage.
pub const MAX_PAYLOAD: u64 = 1 << 30;

const SEGMENT_MAGIC: &[u8; 8] = b"AMPSTXL2";

/// First kind value a reader may skip without understanding it.
pub const FIRST_OPTIONAL_KIND: u8 = 0x80;

/// What a record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// re-sent after later logons until it is read (`server/failures.rs`). Not a write; a
    /// required kind, since a reader that skipped it would lose a failure report.
    Refusal = 6,
    /// Failures that were read (client = the name, body = their sequences, u64 LE each). Not
    /// a write; required, since skipping it would report those failures again.
    FailuresRead = 7,
    /// Written by repair in place of damaged bytes: the LSNs `seq..=lsn` were lost (this
    /// record takes the last of them), `body` is the quarantine file's name. Optional kind, so
    /// older readers skip it.
    RepairGap = 0x80,
}

impl RecordKind {
    /// The kind for a kind byte; `None` for a byte this version does not know.
    pub fn from_u8(b: u8) -> Option<RecordKind> {
        Some(match b {
            1 => RecordKind::Publish,
            2 => RecordKind::DeltaPublish,
            3 => RecordKind::DeleteByFilter,
            4 => RecordKind::DeleteByKeys,
            5 => RecordKind::DeleteByData,
            6 => RecordKind::Refusal,
            7 => RecordKind::FailuresRead,
            0x80 => RecordKind::RepairGap,
            _ => return None,
        })
    }

    /// Whether a record of this kind is a client's write (publish, delta or delete); readers
    /// of writes (replay, bookmarks, the journal's sequences) skip the others.
    pub fn is_write(self) -> bool {
        !matches!(
            self,
            RecordKind::RepairGap | RecordKind::Refusal | RecordKind::FailuresRead
        )
    }
}

/// The sequences of a [`RecordKind::FailuresRead`] body (a trailing partial one is ignored).
pub fn read_sequences(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    body.chunks_exact(8).map(|c| {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        u64::from_le_bytes(b)
    })
}

/// One record's content, borrowing its strings and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The encoded size (prefix included) of `rec`.
pub fn encoded_len(rec: &Record<'_>) -> u64 {
    let client = rec.client.len().min(u16::MAX as usize);
    let topic = rec.topic.len().min(u16::MAX as usize);
    let arg = rec.arg.map_or(0, str::len);
    PREFIX_LEN + MIN_PAYLOAD + (client + topic + arg + rec.body.len()) as u64
}

/// Appends `rec` with its `lsn` and `timestamp_us` to `dst` in the on-disk format.
pub fn encode_record(dst: &mut BytesMut, lsn: u64, timestamp_us: u64, rec: &Record<'_>) {
    let start = dst.len();
    let client = &rec.client.as_bytes()[..rec.client.len().min(u16::MAX as usize)];
    let topic = &rec.topic.as_bytes()[..rec.topic.len().min(u16::MAX as usize)];
    let arg = rec.arg.map(str::as_bytes).unwrap_or(b"");
    dst.reserve(encoded_len(rec) as usize);
    dst.put_u64_le(0); // length and checksum, filled in below
    dst.put_u64_le(lsn);
    dst.put_u64_le(timestamp_us);
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
    let payload_len = (dst.len() - start - PREFIX_LEN as usize) as u32;
    dst[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    let crc = record_crc(&dst[start..start + 4], &dst[start + PREFIX_LEN as usize..]);
    dst[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum of a record: CRC-32 of its length bytes followed by its payload.
pub fn record_crc(len_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(payload);
    h.finalize()
}

/// The length and checksum of a record prefix.
pub fn split_prefix(prefix: &[u8; 8]) -> (u32, u32) {
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *prefix;
    (
        u32::from_le_bytes([l0, l1, l2, l3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
    )
}

/// The LSN of a payload (its first 8 bytes), without checking anything else.
pub fn peek_lsn(payload: &[u8]) -> Option<u64> {
    payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// A payload whose checksum matched, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A record this version understands.
    Record {
        /// Its LSN.
        lsn: u64,
        /// When the server accepted it (µs since the Unix epoch).
        timestamp_us: u64,
        /// The content.
        record: Record<'a>,
    },
    /// A record of an optional kind this version does not know: skipped, LSN still taken.
    Skipped {
        /// Its LSN.
        lsn: u64,
        /// When it was written.
        timestamp_us: u64,
        /// The unknown kind byte (`0x80..=0xff`).
        kind: u8,
    },
}

impl Decoded<'_> {
    /// The record's LSN.
    pub fn lsn(&self) -> u64 {
        match self {
            Decoded::Record { lsn, .. } | Decoded::Skipped { lsn, .. } => *lsn,
        }
    }

    /// The record's timestamp (µs since the Unix epoch).
    pub fn timestamp_us(&self) -> u64 {
        match self {
            Decoded::Record { timestamp_us, .. } | Decoded::Skipped { timestamp_us, .. } => {
                *timestamp_us
            }
        }
    }
}

/// Why a payload whose checksum matched does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A must-understand kind (`0x01..=0x7f`, or 0) this version does not know.
    UnknownKind(u8),
    /// The fields do not fit the payload, or a string is not UTF-8.
    Malformed(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownKind(k) => write!(
                f,
                "record kind {k} is unknown to this version (written by a newer one?)"
            ),
            DecodeError::Malformed(what) => f.write_str(what),
        }
    }
}

/// Decodes a payload whose checksum already matched.
pub fn decode_payload(p: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let mut r = Cursor { p, pos: 0 };
    let lsn = r.u64()?;
    let timestamp_us = r.u64()?;
    let kind_byte = r.u8()?;
    let Some(kind) = RecordKind::from_u8(kind_byte) else {
        if kind_byte >= FIRST_OPTIONAL_KIND {
            return Ok(Decoded::Skipped {
                lsn,
                timestamp_us,
                kind: kind_byte,
            });
        }
        return Err(DecodeError::UnknownKind(kind_byte));
    };
    let flags = r.u8()?;
    let seq = r.u64()?;
    let client_len = r.u16()? as usize;
    let client = r.str(client_len)?;
    let topic_len = r.u16()? as usize;
    let topic = r.str(topic_len)?;
    let arg_len = r.u32()? as usize;
    let arg = r.str(arg_len)?;
    let body = &p[r.pos..];
    Ok(Decoded::Record {
        lsn,
        timestamp_us,
        record: Record {
            kind,
            seq: (seq != 0).then_some(seq),
            client,
            topic,
            arg: (flags & 1 != 0).then_some(arg),
            body,
        },
    })
}

struct Cursor<'a> {
    p: &'a [u8],
    pos: usize,
}

const SHORT: DecodeError = DecodeError::Malformed("field runs past the end of the record");

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(SHORT)?;
        let s = self.p.get(self.pos..end).ok_or(SHORT)?;
        self.pos = end;
        Ok(s)
    }
    fn str(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| DecodeError::Malformed("string field is not UTF-8"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| SHORT)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// A segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the segment's first record.
    pub first_lsn: u64,
    /// When the segment was created (µs since the Unix epoch).
    pub created_us: u64,
}

impl SegmentHeader {
    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..16].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[16..24].copy_from_slice(&self.created_us.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses header bytes; `None` if the magic or checksum is wrong.
    pub fn decode(b: &[u8]) -> Option<SegmentHeader> {
        let b = b.get(..SEGMENT_HEADER_LEN as usize)?;
        if &b[..8] != SEGMENT_MAGIC || b[24..28] != [0; 4] {
            return None;
        }
        if crc32fast::hash(&b[..28]).to_le_bytes() != b[28..32] {
            return None;
        }
        Some(SegmentHeader {
            first_lsn: u64::from_le_bytes(b[8..16].try_into().ok()?),
            created_us: u64::from_le_bytes(b[16..24].try_into().ok()?),
        })
    }
}

/// Microseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record<'static> {
        Record {
            kind: RecordKind::Publish,
            seq: Some(42),
            client: "pub-1",
            topic: "orders",
            arg: Some("k1"),
            body: b"{\"id\":1}",
        }
    }

    #[test]
    fn records_round_trip_with_lsn_and_timestamp() {
        let mut buf = BytesMut::new();
        let rec = sample();
        encode_record(&mut buf, 7, 1_700_000_000_000_000, &rec);
        assert_eq!(buf.len() as u64, encoded_len(&rec));
        let (len, crc) = split_prefix(buf[..8].try_into().unwrap());
        assert_eq!(u64::from(len) + PREFIX_LEN, buf.len() as u64);
        assert_eq!(record_crc(&buf[..4], &buf[8..]), crc);
        assert_eq!(
            decode_payload(&buf[8..]),
            Ok(Decoded::Record {
                lsn: 7,
                timestamp_us: 1_700_000_000_000_000,
                record: rec
            })
        );
    }

    #[test]
    fn unknown_kinds_follow_the_rule() {
        for (kind, optional) in [(0x7fu8, false), (0u8, false), (0x9a, true)] {
            let mut buf = BytesMut::new();
            encode_record(&mut buf, 3, 9, &sample());
            buf[8 + 16] = kind;
            match decode_payload(&buf[8..]) {
                Ok(Decoded::Skipped {
                    lsn: 3, kind: k, ..
                }) if optional => assert_eq!(k, kind),
                Err(DecodeError::UnknownKind(k)) if !optional => assert_eq!(k, kind),
                other => panic!("kind {kind:#x}: {other:?}"),
            }
        }
    }

    #[test]
    fn short_payloads_are_malformed_not_panics() {
        let mut buf = BytesMut::new();
        encode_record(&mut buf, 1, 1, &sample());
        for cut in 0..buf.len() - 8 - 8 {
            let r = decode_payload(&buf[8..8 + cut]);
            assert!(
                matches!(r, Err(DecodeError::Malformed(_))),
                "cut {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn segment_headers_round_trip_and_damage_is_seen() {
        let h = SegmentHeader {
            first_lsn: 1234,
            created_us: 99,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Some(h));
        b[9] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), None);
        assert_eq!(SegmentHeader::decode(&[0u8; 32]), None);
    }
}
