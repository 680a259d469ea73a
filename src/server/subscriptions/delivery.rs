//! The frames the server sends for subscriptions and queries, byte for byte.
//!
//! Every header here is written field by field in the order PROTOCOL.md section 12.2 gives,
//! compact, with numbers bare (`s`, `bs`, `l`, the counters) and everything else as strings:
//!
//! ```text
//! delivery     {"c":"p","t":T,"sids":S,"bm":B[,"k":K][,"x":X][,"s":N][,"ts":TS]}  + body
//!              ("c":"delta_publish" for a delta to a delta subscription)
//! out of focus {"c":"oof","t":T,"sids":S,"k":K,"reason":R}                         + body
//! query        {"c":"group_begin","t":T,"query_id":Q}
//!              {"c":"sow","t":T,"query_id":Q,"bs":n} + n x ({"k":K,"l":L[,"x":X][,"ts":TS]} + L bytes)
//!              {"c":"group_end","t":T,"query_id":Q}
//! query acks   {"c":"ack","cid":C,"a":"completed","status":"success","query_id":Q,"records_returned":R,"topic_matches":M}
//!              (the same with "a":"stats")
//! ```
//!
//! `sids` is the comma list of the connection's subscription ids the frame is for (the official
//! client routes by it and by nothing else). `bm` is always `<publisher hash>|<sequence>|`,
//! with both separators: the official client's bookmark store drops deliveries whose `bm` lacks
//! them. `s` is the message's position in the server's transaction log.

use bytes::{BufMut, BytesMut};

use crate::protocol::header::{itoa_digits, write_json_string, JsonObjectWriter};
use crate::protocol::{write_sow_record, AckType, Reason};

/// A message's bookmark: the publisher's hash and its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Bookmark {
    /// Hash of the publishing client's name (see `bookmark::publisher_of`).
    pub publisher: u64,
    /// The publisher's sequence number of the message.
    pub seq: u64,
}

impl Bookmark {
    /// Writes `<publisher>|<seq>|`.
    pub fn write(&self, dst: &mut String) {
        let mut digits = itoa_digits();
        dst.push_str(digits.format(self.publisher));
        dst.push('|');
        dst.push_str(digits.format(self.seq));
        dst.push('|');
    }
}

impl std::fmt::Display for Bookmark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}|", self.publisher, self.seq)
    }
}

/// Writes one frame: the length prefix, the header `fields` write, then `body` bytes.
fn frame(dst: &mut BytesMut, fields: impl FnOnce(&mut JsonObjectWriter<'_>), body: &[u8]) {
    let start = dst.len();
    dst.reserve(4 + 128 + body.len());
    dst.put_u32(0);
    let mut w = JsonObjectWriter::new(dst);
    fields(&mut w);
    w.finish();
    dst.put_slice(body);
    patch_len(dst, start);
}

fn patch_len(dst: &mut BytesMut, start: usize) {
    let len = u32::try_from(dst.len() - start - 4).unwrap_or(u32::MAX);
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The fields of one delivered message.
pub(crate) struct Message<'a> {
    /// `p` or `delta_publish`.
    pub command: &'a str,
    /// The message's topic.
    pub topic: &'a str,
    /// Its bookmark.
    pub bookmark: Bookmark,
    /// Its SOW key (SOW topics only).
    pub key: Option<&'a str>,
    /// The publisher's correlation id.
    pub correlation_id: Option<&'a str>,
    /// Its position in the transaction log.
    pub lsn: u64,
    /// Its timestamp, when the subscription asked for it.
    pub timestamp: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// A delivery to the subscriptions `sids` of one connection.
pub(crate) fn message(dst: &mut BytesMut, sids: &str, m: &Message<'_>) {
    Encoded::new(m).write(dst, sids);
}

/// One delivered message encoded once, for any number of connections: the frame without its
/// `sids`, which [`Encoded::write`] puts in its place. [`Encoded::fill`] reuses the buffers.
#[derive(Default)]
pub(crate) struct Encoded {
    /// `{"c":C,"t":T,"sids":`
    head: BytesMut,
    /// `,"bm":B,...}` and the body.
    tail: BytesMut,
}

impl Encoded {
    /// Encodes `m`.
    pub fn new(m: &Message<'_>) -> Encoded {
        let mut e = Encoded::default();
        e.fill(m);
        e
    }

    /// Encodes `m` in place of what this held (keeping the buffers' memory).
    pub fn fill(&mut self, m: &Message<'_>) {
        let Encoded { head, tail } = self;
        head.clear();
        tail.clear();
        let mut w = JsonObjectWriter::new(head);
        w.str("c", m.command);
        w.str("t", m.topic);
        head.put_slice(b",\"sids\":");
        let mut bm = String::with_capacity(44);
        m.bookmark.write(&mut bm);
        tail.reserve(96 + m.body.len());
        let mut w = JsonObjectWriter::new(tail);
        w.str("bm", &bm);
        w.opt_str("k", &m.key);
        w.opt_str("x", &m.correlation_id);
        w.num("s", m.lsn);
        w.opt_str("ts", &m.timestamp);
        w.finish();
        // The writer opened an object; the tail continues the head's instead.
        tail[0] = b',';
        tail.put_slice(m.body);
    }

    /// Appends the frame, addressed to `sids`, to `dst`.
    pub fn write(&self, dst: &mut BytesMut, sids: &str) {
        let start = dst.len();
        dst.reserve(4 + self.head.len() + sids.len() + 2 + self.tail.len());
        dst.put_u32(0);
        dst.put_slice(&self.head);
        write_json_string(dst, sids);
        dst.put_slice(&self.tail);
        patch_len(dst, start);
    }
}

/// An out-of-focus notice: `reason` is `match` or `deleted`.
pub(crate) fn oof(
    dst: &mut BytesMut,
    topic: &str,
    sids: &str,
    key: &str,
    reason: &str,
    body: &[u8],
) {
    frame(
        dst,
        |w| {
            w.str("c", "oof");
            w.str("t", topic);
            w.str("sids", sids);
            w.str("k", key);
            w.str("reason", reason);
        },
        body,
    );
}

/// `group_begin` or `group_end` of a query's results.
pub(crate) fn group(dst: &mut BytesMut, command: &str, topic: &str, query_id: &str) {
    frame(
        dst,
        |w| {
            w.str("c", command);
            w.str("t", topic);
            w.str("query_id", query_id);
        },
        b"",
    );
}

/// One record of a `sow` batch.
pub(crate) struct SowRecordRef<'a> {
    /// The SOW key.
    pub key: &'a str,
    /// The correlation id of the write that stored it, when known.
    pub correlation_id: Option<&'a str>,
    /// Its timestamp, when known.
    pub timestamp: Option<&'a str>,
    /// The record.
    pub data: &'a [u8],
}

/// One `sow` frame holding `records` (its `bs` is their count).
pub(crate) fn sow_batch(
    dst: &mut BytesMut,
    topic: &str,
    query_id: &str,
    records: &[SowRecordRef<'_>],
) {
    let start = dst.len();
    dst.put_u32(0);
    let mut w = JsonObjectWriter::new(dst);
    w.str("c", "sow");
    w.str("t", topic);
    w.str("query_id", query_id);
    w.num("bs", records.len() as u64);
    w.finish();
    for r in records {
        write_sow_record(dst, r.key, r.correlation_id, r.timestamp, r.data);
    }
    patch_len(dst, start);
}

/// The `completed` or `stats` ack of a query.
pub(crate) fn query_ack(
    dst: &mut BytesMut,
    ack: AckType,
    cid: Option<&str>,
    query_id: &str,
    records_returned: u64,
    topic_matches: u64,
) {
    frame(
        dst,
        |w| {
            w.str("c", "ack");
            w.opt_str("cid", &cid);
            w.str("a", ack.as_str());
            w.str("status", "success");
            w.str("query_id", query_id);
            w.num("records_returned", records_returned);
            w.num("topic_matches", topic_matches);
        },
        b"",
    );
}

/// A `processed` or `completed` ack of a subscription or query command:
/// `{"c":"ack","cid":C,"a":A,"status":"success"|"failure"[,"reason":R][,"sub_id":S]}`.
pub(crate) fn command_ack(
    dst: &mut BytesMut,
    ack: AckType,
    cid: Option<&str>,
    result: Result<(), &Reason>,
    sub_id: Option<&str>,
) {
    frame(
        dst,
        |w| {
            w.str("c", "ack");
            w.opt_str("cid", &cid);
            w.str("a", ack.as_str());
            match result {
                Ok(()) => w.str("status", "success"),
                Err(reason) => {
                    w.str("status", "failure");
                    w.str("reason", reason.as_str());
                }
            }
            w.opt_str("sub_id", &sub_id);
        },
        b"",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{sow_records, AmpsCodec};
    use tokio_util::codec::Decoder;

    fn frames(mut out: BytesMut) -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        while out.len() >= 4 {
            let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
            let all = out.split_to(4 + len);
            let text = &all[4..];
            let end = text.iter().position(|b| *b == b'}').unwrap() + 1;
            v.push((
                String::from_utf8(text[..end].to_vec()).unwrap(),
                text[end..].to_vec(),
            ));
        }
        v
    }

    #[test]
    fn deliveries_in_the_documented_key_order() {
        let mut out = BytesMut::new();
        let m = Message {
            command: "p",
            topic: "orders",
            bookmark: Bookmark {
                publisher: 12345,
                seq: 1,
            },
            key: Some("k-1"),
            correlation_id: Some("corr-1"),
            lsn: 7,
            timestamp: Some("20261124T120000.123456Z"),
            body: br#"{"id":1}"#,
        };
        message(&mut out, "auto1,S2", &m);
        let minimal = Message {
            key: None,
            correlation_id: None,
            timestamp: None,
            ..m
        };
        message(&mut out, "auto1", &minimal);
        oof(
            &mut out,
            "orders",
            "auto1",
            "k1",
            "deleted",
            br#"{"id":1,"gone":true}"#,
        );
        let f = frames(out);
        assert_eq!(
            f[0].0,
            r#"{"c":"p","t":"orders","sids":"auto1,S2","bm":"12345|1|","k":"k-1","x":"corr-1","s":7,"ts":"20261124T120000.123456Z"}"#
        );
        assert_eq!(f[0].1, br#"{"id":1}"#);
        assert_eq!(
            f[1].0,
            r#"{"c":"p","t":"orders","sids":"auto1","bm":"12345|1|","s":7}"#
        );
        assert_eq!(
            f[2].0,
            r#"{"c":"oof","t":"orders","sids":"auto1","k":"k1","reason":"deleted"}"#
        );
        assert_eq!(f[2].1, br#"{"id":1,"gone":true}"#);
    }

    #[test]
    fn query_frames_and_acks() {
        let mut out = BytesMut::new();
        group(&mut out, "group_begin", "orders", "auto1");
        sow_batch(
            &mut out,
            "orders",
            "auto1",
            &[
                SowRecordRef {
                    key: "k1",
                    correlation_id: None,
                    timestamp: None,
                    data: br#"{"id":1}"#,
                },
                SowRecordRef {
                    key: "k2",
                    correlation_id: Some("x2"),
                    timestamp: Some("20261124T000000.000000Z"),
                    data: br#"{"id":22}"#,
                },
            ],
        );
        group(&mut out, "group_end", "orders", "auto1");
        query_ack(&mut out, AckType::Completed, Some("auto1"), "auto1", 2, 3);
        command_ack(
            &mut out,
            AckType::Processed,
            Some("c1"),
            Err(&Reason::BadFilter),
            None,
        );
        command_ack(&mut out, AckType::Completed, Some("c2"), Ok(()), Some("S1"));
        let mut codec = AmpsCodec::default();
        let mut decoded = Vec::new();
        let mut copy = out.clone();
        while let Some(f) = codec.decode(&mut copy).unwrap() {
            decoded.push(f);
        }
        let f = frames(out);
        assert_eq!(
            f[0].0,
            r#"{"c":"group_begin","t":"orders","query_id":"auto1"}"#
        );
        assert_eq!(
            f[1].0,
            r#"{"c":"sow","t":"orders","query_id":"auto1","bs":2}"#
        );
        let records = sow_records(&decoded[1].body).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(&records[1].data[..], br#"{"id":22}"#);
        assert_eq!(records[1].header.correlation_id.as_deref(), Some("x2"));
        assert_eq!(
            f[2].0,
            r#"{"c":"group_end","t":"orders","query_id":"auto1"}"#
        );
        assert_eq!(
            f[3].0,
            r#"{"c":"ack","cid":"auto1","a":"completed","status":"success","query_id":"auto1","records_returned":2,"topic_matches":3}"#
        );
        assert_eq!(
            f[4].0,
            r#"{"c":"ack","cid":"c1","a":"processed","status":"failure","reason":"bad filter"}"#
        );
        assert_eq!(
            f[5].0,
            r#"{"c":"ack","cid":"c2","a":"completed","status":"success","sub_id":"S1"}"#
        );
    }
}
