//! The records inside a `sow` batch frame: read them, and write them.
//!
//! A SOW query's results arrive in frames `{"c":"sow","t":T,"query_id":Q,"bs":n}` whose body is
//! not one message but `n` records, each a small header of its own followed by that record's
//! data:
//!
//! ```text
//! {"k":"k1","l":8}{"id":1}{"k":"k2","l":8,"x":"c-2"}{"id":2}
//! ```
//!
//! `l` is the exact byte length of the data that follows the record header. The official AMPS
//! clients trust it blindly: an `l` longer than what is left makes them read past the frame, and
//! any byte after the last record (even one newline) makes them drop the connection. So the
//! writer here ([`write_sow_record`]) always writes `l` as the exact length, and the reader
//! ([`sow_records`]) is strict: a record header without `l`, an `l` past the end of the body or
//! anything after the last record (whitespace included) is a
//! [`ProtocolError::MalformedSowBatch`]. The reader accepts what the official client accepts
//! between records (whitespace), and `l` as a number or a string.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{Header, JsonObjectWriter};
use crate::error::ProtocolError;

/// One record of a `sow` batch frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SowRecord {
    /// The per-record header: `k` (SOW key), `l` (data length) and, where known, `x`
    /// (correlation id) and `ts` (timestamp).
    pub header: Header,
    /// Exactly `l` bytes of record data (a slice of the frame's body, not a copy).
    pub data: Bytes,
}

/// Splits the body of a `sow` batch frame into its records (module docs). Strict: see
/// [`ProtocolError::MalformedSowBatch`].
///
/// ```
/// use actix_amps::protocol::sow_records;
/// let body = bytes::Bytes::from_static(br#"{"k":"k1","l":8}{"id":1}{"k":"k2","l":"8"}{"id":2}"#);
/// let records = sow_records(&body).unwrap();
/// assert_eq!(records.len(), 2);
/// assert_eq!(records[1].header.sow_key.as_deref(), Some("k2"));
/// assert_eq!(&records[1].data[..], br#"{"id":2}"#);
/// ```
pub fn sow_records(body: &Bytes) -> Result<Vec<SowRecord>, ProtocolError> {
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
            return Err(ProtocolError::MalformedSowBatch {
                what: "bytes after the last record that are not a record header",
                offset: record_start,
            });
        }
        let (header, used) =
            Header::parse(&body[pos..]).map_err(|_| ProtocolError::MalformedSowBatch {
                what: "record header does not parse",
                offset: pos,
            })?;
        let Some(len) = header.length else {
            return Err(ProtocolError::MalformedSowBatch {
                what: "record header without l",
                offset: pos,
            });
        };
        let start = pos + used;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|end| *end <= body.len())
            .ok_or(ProtocolError::MalformedSowBatch {
                what: "record length l runs past the end of the frame",
                offset: pos,
            })?;
        records.push(SowRecord {
            header,
            data: body.slice(start..end),
        });
        pos = end;
    }
    Ok(records)
}

/// Appends one record (`{"k":K,"l":L[,"x":X][,"ts":TS]}` then exactly `L` bytes of `data`) to
/// the body of a `sow` batch frame. `l` is written as a bare number.
pub fn write_sow_record(
    dst: &mut BytesMut,
    key: &str,
    correlation_id: Option<&str>,
    timestamp: Option<&str>,
    data: &[u8],
) {
    dst.reserve(32 + key.len() + data.len());
    let mut w = JsonObjectWriter::new(dst);
    w.str("k", key);
    w.num("l", data.len() as u64);
    w.opt_str("x", &correlation_id);
    w.opt_str("ts", &timestamp);
    w.finish();
    dst.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_records_read_back_exactly() {
        let mut body = BytesMut::new();
        write_sow_record(&mut body, "k1", None, None, br#"{"id":1}"#);
        write_sow_record(
            &mut body,
            "a\"b",
            Some("x-2"),
            Some("20261124T120000.123456Z"),
            b"}{\x00binary",
        );
        write_sow_record(&mut body, "empty", None, None, b"");
        assert_eq!(
            &body[..24],
            br#"{"k":"k1","l":8}{"id":1}"#,
            "key order k, l and l as a number"
        );
        let body = body.freeze();
        let records = sow_records(&body).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].header.sow_key.as_deref(), Some("k1"));
        assert_eq!(&records[0].data[..], br#"{"id":1}"#);
        assert_eq!(records[1].header.sow_key.as_deref(), Some("a\"b"));
        assert_eq!(records[1].header.correlation_id.as_deref(), Some("x-2"));
        assert_eq!(
            records[1].header.timestamp.as_deref(),
            Some("20261124T120000.123456Z")
        );
        assert_eq!(&records[1].data[..], b"}{\x00binary");
        assert_eq!(records[2].data.len(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

        /// Arbitrary bytes never panic, and whatever reads back is within the body.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let body = Bytes::from(body);
            if let Ok(records) = sow_records(&body) {
                let total: usize = records.iter().map(|r| r.data.len()).sum();
                proptest::prop_assert!(total <= body.len());
            }
        }

        /// Written records always read back exactly, whatever their keys and data.
        #[test]
        fn records_round_trip(recs in proptest::collection::vec((".{0,8}", proptest::collection::vec(proptest::num::u8::ANY, 0..40)), 0..8)) {
            let mut body = BytesMut::new();
            for (k, d) in &recs {
                write_sow_record(&mut body, k, None, None, d);
            }
            let back = sow_records(&body.freeze()).unwrap();
            proptest::prop_assert_eq!(back.len(), recs.len());
            for (r, (k, d)) in back.iter().zip(&recs) {
                proptest::prop_assert_eq!(r.header.sow_key.as_deref(), Some(k.as_str()));
                proptest::prop_assert_eq!(&r.data[..], &d[..]);
            }
        }
    }

    #[test]
    fn strict_about_what_breaks_the_official_client() {
        for (body, what) in [
            (&br#"{"k":"k1"}{"id":1}"#[..], "record header without l"),
            (br#"{"k":"k1","l":50}{"id":1}"#, "past the end"),
            (br#"{"k":"k1","l":8}{"id":1}xyz"#, "not a record header"),
            (br#"{"k":"k1","l":8}{"id":1}{"k""#, "does not parse"),
        ] {
            let err = sow_records(&Bytes::copy_from_slice(body)).unwrap_err();
            assert!(err.to_string().contains(what), "{err} for {body:?}");
        }
        // Whitespace between records is what the official client skips; after the last one
        // it drops the connection.
        let ok = Bytes::from_static(b"{\"k\":\"a\",\"l\":1}x \n{\"k\":\"b\",\"l\":1}y");
        assert_eq!(sow_records(&ok).unwrap().len(), 2);
        let trailing = Bytes::from_static(b"{\"k\":\"a\",\"l\":1}x\n");
        assert!(sow_records(&trailing).is_err());
        assert!(sow_records(&Bytes::new()).unwrap().is_empty());
    }
}
