//! A delivered message: the frame's bytes, and where each of its fields lies in them.
//!
//! Deliveries are the client's hot path (millions a second), so a [`Delivery`] is not a parsed
//! header of owned strings. It keeps the frame it came in (`Bytes`, shared with the read buffer,
//! never copied) and, for each field a subscriber may ask for, the byte range of its value in
//! that frame, found by one scan of the header ([`scan_delivery`]). Accessors return `&str`
//! slices of the frame. Values the server escaped (`\"`, `\u00e9`, ...), which no field of a real
//! delivery needs, are unescaped once at scan time and kept beside the ranges.
//!
//! What arrives, and what becomes of it:
//!
//! | frame | becomes |
//! |---|---|
//! | `{"c":"p" or "publish","t":T,"sids":S,"bm":B,...}` + body | one [`Delivery`] of kind [`DeliveryKind::Publish`] per listed subscription |
//! | `{"c":"delta_publish",...}` + body | [`DeliveryKind::DeltaPublish`] |
//! | `{"c":"oof",...,"k":K,"reason":R}` + body | [`DeliveryKind::Oof`] |
//! | `{"c":"sow","query_id":Q,...}` + records | one [`DeliveryKind::SowRecord`] per record ([`split_sow_batch`]) |
//! | `{"c":"group_begin"/"group_end","query_id":Q}` | a boundary event of the query |
//!
//! A SOW record's own header (`k`, `l`, `x`, `ts`, `bm`, `s`) overrides the `sow` frame's
//! fields, which it otherwise inherits (what the official client does). The record reader is as
//! strict as [`crate::protocol::sow_records`]: every record needs `l`, `l` must fit in the
//! frame, and nothing may follow the last record.

use bytes::Bytes;

use crate::error::ProtocolError;
use crate::protocol::header::{scan_fields, ScannedValue};

/// What a delivered message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryKind {
    /// A publish (`"c":"p"`, or `"publish"`).
    Publish,
    /// A delta to a delta subscription: the key fields and the changed fields only.
    DeltaPublish,
    /// Out of focus: the record no longer matches (`reason` `match`), was deleted (`deleted`)
    /// or expired (`expired`). The body is the last known record (or the update that left the
    /// filter, for `match`).
    Oof,
    /// One record of a SOW query's result.
    SowRecord,
}

impl DeliveryKind {
    /// The command as the CLI prints it: `p`, `delta_publish`, `oof` or `sow`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryKind::Publish => "p",
            DeliveryKind::DeltaPublish => "delta_publish",
            DeliveryKind::Oof => "oof",
            DeliveryKind::SowRecord => "sow",
        }
    }
}

/// Why a record went out of focus (the `reason` of an `oof` delivery).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OofReason {
    /// It no longer matches the subscription's filter.
    Match,
    /// It was deleted (sow_delete).
    Deleted,
    /// It expired.
    Expired,
    /// The subscriber is no longer entitled to it.
    Entitlement,
    /// Any other reason; [`Delivery::reason`] has the text.
    Other,
}

/// A byte range of the frame; `NONE` when the field is absent, `ESCAPED` when its unescaped
/// text is kept in [`Escaped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    const NONE: Span = Span {
        start: u32::MAX,
        len: 0,
    };
    const ESCAPED: Span = Span {
        start: u32::MAX,
        len: 1,
    };

    fn is_none(self) -> bool {
        self == Span::NONE
    }
}

/// Indexes of the string fields of a delivery.
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
enum F {
    Topic = 0,
    SubIds,
    SubId,
    Bookmark,
    SowKey,
    CorrelationId,
    Timestamp,
    Reason,
    QueryId,
}

const FIELDS: usize = 9;

type Escaped = [Option<Box<str>>; FIELDS];

/// One delivered message, owned and cheap to move: the frame's bytes and ranges into them.
///
/// ```
/// # use actix_amps::client::subscriptions::{Delivery, DeliveryKind};
/// fn show(d: &Delivery) {
///     if d.kind() == DeliveryKind::Oof {
///         println!("{:?} left: {:?}", d.sow_key(), d.reason());
///     } else {
///         println!("{} {:?} {}", d.sub_id(), d.topic(), String::from_utf8_lossy(d.data_slice()));
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Delivery {
    raw: Bytes,
    kind: DeliveryKind,
    fields: [Span; FIELDS],
    data: Span,
    sequence: Option<u64>,
    escaped: Option<Box<Escaped>>,
    /// The subscription's own count of deliveries (1, 2, ...), for explicit discards.
    pub(crate) local_seq: u64,
}

impl Delivery {
    /// Publish, delta, out-of-focus or SOW record.
    pub fn kind(&self) -> DeliveryKind {
        self.kind
    }

    fn field(&self, f: F) -> Option<&str> {
        let span = self.fields[f as usize];
        if span.is_none() {
            return None;
        }
        if span == Span::ESCAPED {
            return self.escaped.as_ref().and_then(|e| e[f as usize].as_deref());
        }
        let bytes = self
            .raw
            .get(span.start as usize..(span.start as usize + span.len as usize))?;
        // Checked at scan time; a failure here would only hide the field.
        std::str::from_utf8(bytes).ok()
    }

    /// The message's topic (`t`); `None` when the server sent none.
    pub fn topic(&self) -> Option<&str> {
        self.field(F::Topic)
    }

    /// The message body (for a SOW record, the record's data), sharing the frame's memory.
    pub fn data(&self) -> Bytes {
        let (s, e) = (
            self.data.start as usize,
            self.data.start as usize + self.data.len as usize,
        );
        if s <= e && e <= self.raw.len() {
            self.raw.slice(s..e)
        } else {
            Bytes::new()
        }
    }

    /// The message body as a slice (no reference count touched).
    pub fn data_slice(&self) -> &[u8] {
        self.raw
            .get(self.data.start as usize..(self.data.start as usize + self.data.len as usize))
            .unwrap_or(&[])
    }

    /// The bookmark (`bm`): `<publisher>|<sequence>|` for messages from the transaction log.
    pub fn bookmark(&self) -> Option<&str> {
        self.field(F::Bookmark)
    }

    /// The SOW key (`k`).
    pub fn sow_key(&self) -> Option<&str> {
        self.field(F::SowKey)
    }

    /// The publisher's correlation id (`x`).
    pub fn correlation_id(&self) -> Option<&str> {
        self.field(F::CorrelationId)
    }

    /// The server's timestamp (`ts`), when it sent one.
    pub fn timestamp(&self) -> Option<&str> {
        self.field(F::Timestamp)
    }

    /// The `reason` of an out-of-focus delivery, verbatim.
    pub fn reason(&self) -> Option<&str> {
        self.field(F::Reason)
    }

    /// The `reason` of an out-of-focus delivery, typed.
    pub fn oof_reason(&self) -> Option<OofReason> {
        self.reason().map(|r| match r {
            "match" => OofReason::Match,
            "deleted" => OofReason::Deleted,
            "expired" => OofReason::Expired,
            "entitlement" => OofReason::Entitlement,
            _ => OofReason::Other,
        })
    }

    /// The server's sequence (`s`): for the embedded server, the message's position in its
    /// transaction log.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// The subscription this copy was delivered to: the matching entry of `sids` (for a SOW
    /// record, the query id).
    pub fn sub_id(&self) -> &str {
        self.field(F::SubId)
            .or_else(|| self.field(F::QueryId))
            .unwrap_or("")
    }

    /// The whole `sids` list as the server sent it (one frame may serve several
    /// subscriptions of this connection).
    pub fn sub_ids(&self) -> Option<&str> {
        self.field(F::SubIds)
    }

    /// The query id of a SOW record.
    pub fn query_id(&self) -> Option<&str> {
        self.field(F::QueryId)
    }

    /// The subscription's own count of this delivery (1, 2, ...; 0 when the subscription does
    /// not count, as for queries). [`crate::client::subscriptions::DiscardBookmarks`] names
    /// deliveries by it.
    pub fn local_seq(&self) -> u64 {
        self.local_seq
    }

    /// The bytes of the whole frame this delivery came in (header and body).
    pub fn frame_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// Size in bytes that this delivery holds on to (for flow control).
    pub(crate) fn weight(&self) -> usize {
        // A frame shared by several subscriptions or SOW records is counted by each: an upper
        // bound, which is what a memory limit wants.
        (self.data.len as usize).max(1) + 64
    }

    /// Sets which entry of `sids` this copy is for.
    pub(crate) fn set_sub_id_range(&mut self, start: usize, len: usize) {
        self.fields[F::SubId as usize] = Span {
            start: start as u32,
            len: len as u32,
        };
    }

    /// The raw `sids` value's position in the frame, for routing; `None` when absent or
    /// escaped.
    pub(crate) fn sub_ids_range(&self) -> Option<(usize, usize)> {
        let s = self.fields[F::SubIds as usize];
        (!s.is_none() && s != Span::ESCAPED).then_some((s.start as usize, s.len as usize))
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("kind", &self.kind)
            .field("sub_id", &self.sub_id())
            .field("topic", &self.topic())
            .field("bookmark", &self.bookmark())
            .field("sow_key", &self.sow_key())
            .field("correlation_id", &self.correlation_id())
            .field("reason", &self.reason())
            .field("sequence", &self.sequence)
            .field("data_len", &self.data.len)
            .finish()
    }
}

/// What an inbound frame for the subscription side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A live message (publish, delta, oof): route by `sids`.
    Live(DeliveryKind),
    /// A SOW result batch: route by `query_id`, split into records.
    SowBatch,
    /// Start of a query's result.
    GroupBegin,
    /// End of a query's result.
    GroupEnd,
    /// Anything else (acks are parsed as headers elsewhere).
    Other,
}

/// A frame's command as the subscription side classifies it.
pub(crate) fn inbound_kind(command: &[u8]) -> Inbound {
    match command {
        b"p" | b"publish" => Inbound::Live(DeliveryKind::Publish),
        b"delta_publish" => Inbound::Live(DeliveryKind::DeltaPublish),
        b"oof" => Inbound::Live(DeliveryKind::Oof),
        b"sow" => Inbound::SowBatch,
        b"group_begin" => Inbound::GroupBegin,
        b"group_end" => Inbound::GroupEnd,
        _ => Inbound::Other,
    }
}

/// A frame scanned once: its kind and a delivery template whose ranges point into it.
pub(crate) struct Scanned {
    pub inbound: Inbound,
    pub delivery: Delivery,
    /// Where the body starts.
    pub body_start: usize,
}

fn parse_u64(raw: &[u8]) -> Option<u64> {
    let digits = raw.trim_ascii();
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// What one header scan found, relative to the start of the scanned slice.
struct Fields {
    command: Option<Inbound>,
    spans: [Span; FIELDS],
    sequence: Option<u64>,
    length: Option<u64>,
    escaped: Option<Box<Escaped>>,
    bad: Option<&'static str>,
}

impl Fields {
    fn new() -> Fields {
        Fields {
            command: None,
            spans: [Span::NONE; FIELDS],
            sequence: None,
            length: None,
            escaped: None,
            bad: None,
        }
    }

    /// Records one key's value: `raw` found at `start` (absolute), `unescaped` when it held
    /// escapes. `check_utf8`: whether string values still need checking (the fast path has
    /// checked the whole header already).
    fn assign(
        &mut self,
        key: &[u8],
        start: usize,
        raw: &[u8],
        unescaped: Option<&str>,
        check_utf8: bool,
    ) {
        let text = unescaped.map_or(raw, str::as_bytes);
        // Dispatch on the key's length first: every delivery has five or more keys, and a
        // chain of slice comparisons costs more than the rest of the scan.
        let f = match (key.len(), key) {
            (1, b"c") | (3, b"cmd") => {
                self.command = Some(inbound_kind(text));
                return;
            }
            (1, b"s") | (3, b"seq") => {
                self.sequence = parse_u64(text);
                if self.sequence.is_none() {
                    self.bad = Some("s is not an unsigned integer");
                }
                return;
            }
            (1, b"l") => {
                self.length = parse_u64(text);
                if self.length.is_none() {
                    self.bad = Some("l is not an unsigned integer");
                }
                return;
            }
            (1, b"t") | (5, b"topic") => F::Topic,
            (4, b"sids") | (7, b"sub_ids") => F::SubIds,
            (2, b"bm") | (8, b"bookmark") => F::Bookmark,
            (1, b"k") | (7, b"sow_key") => F::SowKey,
            (1, b"x") | (14, b"correlation_id") => F::CorrelationId,
            (2, b"ts") | (9, b"timestamp") => F::Timestamp,
            (6, b"reason") => F::Reason,
            (8, b"query_id") => F::QueryId,
            _ => return,
        };
        self.spans[f as usize] = if let Some(text) = unescaped {
            self.escaped.get_or_insert_with(Default::default)[f as usize] = Some(text.into());
            Span::ESCAPED
        } else if check_utf8 && std::str::from_utf8(raw).is_err() {
            self.bad = Some("string is not UTF-8");
            Span::NONE
        } else {
            Span {
                start: start as u32,
                len: raw.len() as u32,
            }
        };
    }
}

/// The index of the first `"` or `\\` in `b` at or after `from`, eight bytes at a time.
#[inline]
fn quote_or_backslash(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = ONES * b'"' as u64;
    const SLASH: u64 = ONES * b'\\' as u64;
    while i + 8 <= b.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        let x = u64::from_le_bytes(w);
        let q = x ^ QUOTE;
        let s = x ^ SLASH;
        // A zero byte in q or s marks a match (the classic "has zero byte" test).
        let hit = (q.wrapping_sub(ONES) & !q | s.wrapping_sub(ONES) & !s) & HIGH;
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|c| *c == b'"' || *c == b'\\')
        .map(|p| i + p)
}

/// The common case, fast: a compact header (no whitespace, no escapes, only string and
/// unsigned integer values), as every AMPS server writes it. Anything else returns `None`
/// and takes the general scanner, which accepts or refuses it by the full rules; what this
/// accepts, the general scanner reads the same way (a property test checks it).
fn scan_compact(b: &[u8], base: usize) -> Option<(Fields, usize)> {
    let mut out = Fields::new();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut i = 1;
    if b.get(1) == Some(&b'}') {
        return Some((out, 2));
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        let ks = i;
        i = quote_or_backslash(b, i)?;
        if b[i] != b'"' {
            return None;
        }
        let ke = i;
        i += 1;
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        match *b.get(i)? {
            b'"' => {
                i += 1;
                let vs = i;
                i = quote_or_backslash(b, i)?;
                if b[i] != b'"' {
                    return None;
                }
                out.assign(&b[ks..ke], base + vs, &b[vs..i], None, false);
                i += 1;
            }
            b'0'..=b'9' => {
                let vs = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                out.assign(&b[ks..ke], base + vs, &b[vs..i], None, false);
            }
            _ => return None,
        }
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => {
                i += 1;
                break;
            }
            _ => return None,
        }
    }
    // One check for the whole header instead of one per field.
    std::str::from_utf8(&b[..i]).ok()?;
    Some((out, i))
}

fn scan_into(input: &[u8], base: usize) -> Result<(Fields, usize), ProtocolError> {
    if let Some(found) = scan_compact(input, base) {
        return Ok(found);
    }
    let mut out = Fields::new();
    let used = scan_fields(input, |key, v: ScannedValue<'_>| {
        out.assign(key, base + v.start, v.raw, v.unescaped.as_deref(), true);
    })?;
    Ok((out, used))
}

/// Scans a frame (its bytes without the length prefix) for the subscription side.
pub(crate) fn scan_delivery(raw: Bytes) -> Result<Scanned, ProtocolError> {
    let (fields, used) = scan_into(&raw, 0)?;
    if let Some(what) = fields.bad {
        return Err(ProtocolError::MalformedHeader { what, offset: 0 });
    }
    let inbound = fields.command.unwrap_or(Inbound::Other);
    let kind = match inbound {
        Inbound::Live(k) => k,
        _ => DeliveryKind::SowRecord,
    };
    Ok(Scanned {
        inbound,
        delivery: Delivery {
            data: Span {
                start: used as u32,
                len: (raw.len() - used) as u32,
            },
            raw,
            kind,
            fields: fields.spans,
            sequence: fields.sequence,
            escaped: fields.escaped,
            local_seq: 0,
        },
        body_start: used,
    })
}

fn malformed(what: &'static str, offset: usize) -> ProtocolError {
    ProtocolError::MalformedSowBatch { what, offset }
}

/// Splits a scanned `sow` batch frame into its records, each a [`Delivery`] of kind
/// [`DeliveryKind::SowRecord`] inheriting the frame's fields (module docs). Strict about the
/// record framing.
pub(crate) fn split_sow_batch(frame: &Scanned) -> Result<Vec<Delivery>, ProtocolError> {
    let raw = &frame.delivery.raw;
    let body_start = frame.body_start;
    let body = &raw[body_start..];
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let record_start = pos;
        while body
            .get(pos)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            pos += 1;
        }
        if body.get(pos) != Some(&b'{') {
            return Err(malformed(
                "bytes after the last record that are not a record header",
                record_start,
            ));
        }
        let (fields, used) = scan_into(&body[pos..], body_start + pos)
            .map_err(|_| malformed("record header does not parse", pos))?;
        if fields.bad.is_some() {
            return Err(malformed("record header does not parse", pos));
        }
        let Some(len) = fields.length else {
            return Err(malformed("record header without l", pos));
        };
        let start = pos + used;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|end| *end <= body.len())
            .ok_or(malformed(
                "record length l runs past the end of the frame",
                pos,
            ))?;
        let mut d = frame.delivery.clone();
        d.kind = DeliveryKind::SowRecord;
        for (i, span) in fields.spans.iter().enumerate() {
            if !span.is_none() {
                d.fields[i] = *span;
                if *span == Span::ESCAPED {
                    let text = fields.escaped.as_ref().and_then(|e| e[i].clone());
                    d.escaped.get_or_insert_with(Default::default)[i] = text;
                }
            }
        }
        if fields.sequence.is_some() {
            d.sequence = fields.sequence;
        }
        d.data = Span {
            start: (body_start + start) as u32,
            len: (end - start) as u32,
        };
        records.push(d);
        pos = end;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, sow_records, Header};
    use proptest::prelude::*;

    fn scan(s: &str) -> Scanned {
        scan_delivery(Bytes::copy_from_slice(s.as_bytes())).expect("scans")
    }

    #[test]
    fn every_field_of_a_full_delivery() {
        let s = scan(
            r#"{"c":"p","t":"orders","sids":"auto1","bm":"12345|1|","s":7,"k":"k-1","lp":10,"x":"corr-1","ts":"20261124T120000.123456Z","user_id":"bob"}{"id":1}"#,
        );
        assert_eq!(s.inbound, Inbound::Live(DeliveryKind::Publish));
        let d = &s.delivery;
        assert_eq!(d.topic(), Some("orders"));
        assert_eq!(d.sub_ids(), Some("auto1"));
        assert_eq!(d.bookmark(), Some("12345|1|"));
        assert_eq!(d.sequence(), Some(7));
        assert_eq!(d.sow_key(), Some("k-1"));
        assert_eq!(d.correlation_id(), Some("corr-1"));
        assert_eq!(d.timestamp(), Some("20261124T120000.123456Z"));
        assert_eq!(d.data_slice(), br#"{"id":1}"#);
        assert_eq!(&d.data()[..], br#"{"id":1}"#);
        assert_eq!(d.reason(), None);
    }

    #[test]
    fn commands_and_oof_reason() {
        let s = scan(r#"{"c":"oof","t":"orders","sids":"S","k":"k1","reason":"deleted"}{"id":1}"#);
        assert_eq!(s.inbound, Inbound::Live(DeliveryKind::Oof));
        assert_eq!(s.delivery.oof_reason(), Some(OofReason::Deleted));
        assert_eq!(
            scan(r#"{"c":"publish","sids":"S"}"#).inbound,
            Inbound::Live(DeliveryKind::Publish)
        );
        assert_eq!(
            scan(r#"{"c":"delta_publish","sids":"S"}x"#).inbound,
            Inbound::Live(DeliveryKind::DeltaPublish)
        );
        assert_eq!(
            scan(r#"{"c":"group_begin","query_id":"Q"}"#).inbound,
            Inbound::GroupBegin
        );
        assert_eq!(scan(r#"{"c":"ack","cid":"1"}"#).inbound, Inbound::Other);
        let empty = scan(r#"{"c":"p","sids":"S"}"#);
        assert_eq!(empty.delivery.topic(), None);
        assert!(empty.delivery.data_slice().is_empty());
    }

    #[test]
    fn escaped_values_are_unescaped_once() {
        let s = scan(r#"{"c":"p","t":"a\"b","sids":"S","x":"caf\u00e9"}body"#);
        assert_eq!(s.delivery.topic(), Some("a\"b"));
        assert_eq!(s.delivery.correlation_id(), Some("café"));
        assert_eq!(s.delivery.data_slice(), b"body");
    }

    #[test]
    fn bad_values_are_typed_errors() {
        for bad in [
            r#"{"c":"p","s":"x"}"#,
            r#"{"c":"p","t":"a\q"}"#,
            r#"{"c":"p""#,
            r#"nope"#,
        ] {
            assert!(
                scan_delivery(Bytes::copy_from_slice(bad.as_bytes())).is_err(),
                "{bad}"
            );
        }
        let non_utf8 = Bytes::from_static(b"{\"c\":\"p\",\"t\":\"\xff\"}");
        assert!(scan_delivery(non_utf8).is_err());
    }

    fn records(frame: &str) -> Result<Vec<Delivery>, ProtocolError> {
        split_sow_batch(&scan(frame))
    }

    #[test]
    fn sow_records_inherit_the_outer_fields() {
        let r = records(
            r#"{"c":"sow","t":"orders","query_id":"Q","x":"OX","k":"OUTER","bs":2}{"l":8}{"id":1}{"k":"k2","l":8,"ts":"T"}{"id":2}"#,
        )
        .expect("records");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].sow_key(), Some("OUTER"));
        assert_eq!(r[0].correlation_id(), Some("OX"));
        assert_eq!(r[0].data_slice(), br#"{"id":1}"#);
        assert_eq!(r[1].sow_key(), Some("k2"));
        assert_eq!(r[1].timestamp(), Some("T"));
        assert_eq!(r[1].topic(), Some("orders"));
        assert_eq!(r[1].sub_id(), "Q");
        assert_eq!(r[1].kind(), DeliveryKind::SowRecord);
    }

    #[test]
    fn sow_batch_framing_is_strict() {
        let head = r#"{"c":"sow","query_id":"Q"}"#;
        for (body, ok) in [
            (r#"{"k":"a","l":2}ab {"k":"b","l":"1"}c"#, 2),
            (r#"{"k":"a","l":0}"#, 1),
            ("", 0),
        ] {
            assert_eq!(records(&format!("{head}{body}")).expect(body).len(), ok);
        }
        for body in [
            r#"{"k":"a"}ab"#,
            r#"{"k":"a","l":9}ab"#,
            r#"{"k":"a","l":2}ab "#,
            r#"{"k":"a","l":2}abxyz"#,
            r#"{"k":"a","l":-1}ab"#,
        ] {
            assert!(records(&format!("{head}{body}")).is_err(), "{body}");
        }
    }

    fn json_string() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('a', 'z'),
                1 => Just('"'),
                1 => Just('\\'),
                1 => Just('|'),
                1 => Just('é'),
                1 => Just('\n'),
            ],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
        ))]

        /// The range scan agrees with the full header parser on every field it keeps.
        #[test]
        fn scan_agrees_with_header_parse(
            topic in json_string(), bm in json_string(), key in json_string(),
            x in json_string(), sids in json_string(), seq in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let h = Header {
                command: Some(crate::protocol::Command::Publish),
                topic: Some(topic.clone()), bookmark: Some(bm.clone()), sow_key: Some(key.clone()),
                correlation_id: Some(x.clone()), sub_ids: Some(sids.clone()), seq: Some(seq),
                ..Header::default()
            };
            let mut buf = bytes::BytesMut::new();
            h.write_to(&mut buf);
            buf.extend_from_slice(&body);
            let raw = buf.freeze();
            let frame = decode_frame(raw.clone()).expect("parses");
            let s = scan_delivery(raw.clone()).expect("scans");
            let d = &s.delivery;
            prop_assert_eq!(d.topic(), frame.header.topic.as_deref());
            prop_assert_eq!(d.bookmark(), frame.header.bookmark.as_deref());
            prop_assert_eq!(d.sow_key(), frame.header.sow_key.as_deref());
            prop_assert_eq!(d.correlation_id(), frame.header.correlation_id.as_deref());
            prop_assert_eq!(d.sub_ids(), frame.header.sub_ids.as_deref());
            prop_assert_eq!(d.sequence(), frame.header.seq);
            prop_assert_eq!(d.data_slice(), &frame.body[..]);
        }

        /// Whatever the compact fast path accepts, the general scanner reads the same way.
        #[test]
        fn the_fast_path_agrees_with_the_general_scanner(
            fields in proptest::collection::vec(
                (prop_oneof![Just("c"), Just("t"), Just("sids"), Just("bm"), Just("s"), Just("k"), Just("zz")],
                 prop_oneof![json_string().prop_map(|s| format!("\"{s}\"")), (0u64..1000).prop_map(|n| n.to_string())]),
                0..6),
        ) {
            let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let header = format!("{{{}}}", inner.join(","));
            if let Some((fast, used)) = scan_compact(header.as_bytes(), 3) {
                let mut slow = Fields::new();
                let slow_used = scan_fields(header.as_bytes(), |key, v| {
                    slow.assign(key, 3 + v.start, v.raw, v.unescaped.as_deref(), true);
                }).expect("the general scanner accepts it too");
                prop_assert_eq!(used, slow_used);
                prop_assert_eq!(fast.spans, slow.spans);
                prop_assert_eq!(fast.sequence, slow.sequence);
                prop_assert_eq!(fast.command, slow.command);
                prop_assert_eq!(fast.bad, slow.bad);
            }
        }

        /// The word-at-a-time search finds what a byte loop finds.
        #[test]
        fn the_quote_search_matches_a_byte_loop(
            bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'a'), any::<u8>()], 0..40),
            from in 0usize..40,
        ) {
            let from = from.min(bytes.len());
            let expect = bytes[from..].iter().position(|c| *c == b'"' || *c == b'\\').map(|p| from + p);
            prop_assert_eq!(quote_or_backslash(&bytes, from), expect);
        }

        /// Arbitrary bytes never panic the scanner or the record splitter.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let raw = Bytes::from(bytes);
            if let Ok(s) = scan_delivery(raw) {
                let _ = split_sow_batch(&s);
            }
        }

        /// The record splitter agrees with the protocol's strict record reader.
        #[test]
        fn splitter_agrees_with_sow_records(
            recs in proptest::collection::vec((json_string(), proptest::collection::vec(any::<u8>(), 0..20)), 0..6),
            tail in prop_oneof![Just(Vec::new()), Just(b" ".to_vec()), Just(b"x".to_vec())],
        ) {
            let mut body = bytes::BytesMut::new();
            for (k, data) in &recs {
                crate::protocol::write_sow_record(&mut body, k, None, None, data);
            }
            body.extend_from_slice(&tail);
            let body = body.freeze();
            let head = br#"{"c":"sow","query_id":"Q"}"#;
            let mut raw = head.to_vec();
            raw.extend_from_slice(&body);
            let raw = Bytes::from(raw);
            let mine = split_sow_batch(&scan_delivery(raw).expect("scans"));
            let theirs = sow_records(&body);
            prop_assert_eq!(mine.is_ok(), theirs.is_ok());
            if let (Ok(mine), Ok(theirs)) = (mine, theirs) {
                prop_assert_eq!(mine.len(), theirs.len());
                for (m, t) in mine.iter().zip(&theirs) {
                    prop_assert_eq!(m.sow_key(), t.header.sow_key.as_deref());
                    prop_assert_eq!(m.data_slice(), &t.data[..]);
                }
            }
        }
    }
}
