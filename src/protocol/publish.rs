//! The publish path's header, borrowed: encoding a stored message must not allocate.
//!
//! [`Header`](super::Header) owns its strings, which suits parsing and rare commands. A publish
//! store encodes every message it sends (and again on replay), so [`PublishHeader`] borrows the
//! topic and options from the stored message and writes the same compact JSON through the same
//! writer, in the official client's field order: `c, t, a, e, x, s, k` for a publish or
//! delta_publish (`cid` after `c` when one is set), and `c, t, cid, sow_keys | filter, a, s,
//! sub_id, query_id` for a sow_delete. Field order means nothing to a JSON parser; it is kept
//! so that frames compare byte for byte with the official client's in captures.

use bytes::{BufMut, BytesMut};

use super::ack::AckTypes;
use super::header::{Command, JsonObjectWriter};

/// The header of a publish, delta_publish or sow_delete, borrowing its strings.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublishHeader<'a> {
    /// The command (`Command::Publish` is written `p`).
    pub command: Option<&'a Command>,
    /// `cid`, for commands whose processed/stats acks someone waits for.
    pub cid: Option<&'a str>,
    /// `t`
    pub topic: &'a str,
    /// `a`
    pub ack_type: AckTypes,
    /// `e`
    pub expiration: Option<u64>,
    /// `x`
    pub correlation_id: Option<&'a str>,
    /// `s`
    pub seq: Option<u64>,
    /// `k`
    pub sow_key: Option<&'a str>,
    /// `sow_keys`
    pub sow_keys: Option<&'a str>,
    /// `filter`
    pub filter: Option<&'a str>,
}

impl PublishHeader<'_> {
    /// Appends `[len][header][body]` to `dst`. For a sow_delete with a `cid`, `sub_id` and
    /// `query_id` repeat the cid, as the official client writes them.
    pub fn encode(&self, body: &[u8], dst: &mut BytesMut) {
        let start = dst.len();
        dst.reserve(4 + 96 + self.topic.len() + body.len());
        dst.put_u32(0);
        let mut w = JsonObjectWriter::new(dst);
        if let Some(c) = self.command {
            w.str("c", c.as_str());
        }
        if self.command == Some(&Command::SowDelete) {
            // The official client's sow_delete order: the selector before `a`.
            w.str("t", self.topic);
            w.opt_str("cid", &self.cid);
            w.opt_str("sow_keys", &self.sow_keys);
            w.opt_str("filter", &self.filter);
            self.write_acks_to_key(&mut w);
            w.opt_str("sub_id", &self.cid);
            w.opt_str("query_id", &self.cid);
        } else {
            w.opt_str("cid", &self.cid);
            w.str("t", self.topic);
            self.write_acks_to_key(&mut w);
            w.opt_str("sow_keys", &self.sow_keys);
            w.opt_str("filter", &self.filter);
        }
        w.finish();
        dst.put_slice(body);
        let len = u32::try_from(dst.len() - start - 4).unwrap_or(u32::MAX);
        dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// `a, e, x, s, k`: the run every command writes in this order.
    fn write_acks_to_key(&self, w: &mut JsonObjectWriter<'_>) {
        w.acks("a", self.ack_type);
        w.opt_num_as_str("e", self.expiration);
        w.opt_str("x", &self.correlation_id);
        w.opt_num("s", self.seq);
        w.opt_str("k", &self.sow_key);
    }
}

/// A publish header encoded once with its sequence number cut out.
///
/// Consecutive publishes to one topic with the same command and no options differ only in `s`,
/// so a store writes them as `head + digits + tail + body`: byte-identical to
/// [`PublishHeader::encode`], without walking the JSON writer per message. The template is
/// built by encoding the header twice, with `s` 0 and 1, and cutting at the one byte that
/// differs, so it holds whatever the writer writes (field order, escaping) by construction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqTemplate {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl SeqTemplate {
    /// The template of `header` (its own `seq` is ignored).
    pub fn new(header: &PublishHeader<'_>) -> SeqTemplate {
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        PublishHeader {
            seq: Some(0),
            ..*header
        }
        .encode(b"", &mut a);
        PublishHeader {
            seq: Some(1),
            ..*header
        }
        .encode(b"", &mut b);
        let cut = a
            .iter()
            .zip(b.iter())
            .position(|(x, y)| x != y)
            .unwrap_or(a.len());
        // Skip the length prefix; `a` and `b` differ only at `cut` (a single digit).
        let start = 4.min(cut);
        SeqTemplate {
            head: a[start..cut].to_vec(),
            tail: a.get(cut + 1..).map_or_else(Vec::new, <[u8]>::to_vec),
        }
    }

    /// Appends `[len][header with s = seq][body]` to `dst`.
    pub fn encode(&self, seq: u64, body: &[u8], dst: &mut BytesMut) {
        let mut buf = super::header::itoa_digits();
        let digits = buf.digits(seq);
        let len = self.head.len() + digits.len() + self.tail.len() + body.len();
        dst.reserve(4 + len);
        dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        dst.put_slice(&self.head);
        dst.put_slice(digits);
        dst.put_slice(&self.tail);
        dst.put_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, AckType};

    #[test]
    fn matches_the_official_publish_form() {
        let mut buf = BytesMut::new();
        PublishHeader {
            command: Some(&Command::Publish),
            topic: "orders",
            ack_type: AckTypes::PERSISTED,
            expiration: Some(30),
            correlation_id: Some("corr-1"),
            seq: Some(1795489793738000001),
            sow_key: Some("key-1"),
            ..PublishHeader::default()
        }
        .encode(br#"{"id":1}"#, &mut buf);
        let expected = br#"{"c":"p","t":"orders","a":"persisted","e":"30","x":"corr-1","s":1795489793738000001,"k":"key-1"}{"id":1}"#;
        assert_eq!(&buf[4..], &expected[..]);
        assert_eq!(
            u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
            expected.len()
        );
    }

    #[test]
    fn template_matches_the_full_encoder() {
        let headers = [
            PublishHeader {
                command: Some(&Command::Publish),
                topic: "orders",
                ack_type: AckTypes::PERSISTED,
                ..PublishHeader::default()
            },
            PublishHeader {
                command: Some(&Command::DeltaPublish),
                topic: "we\"ird\\topic",
                ack_type: AckTypes::PERSISTED,
                sow_key: Some("k1"),
                ..PublishHeader::default()
            },
        ];
        for h in headers {
            let t = SeqTemplate::new(&h);
            for seq in [0, 1, 9, 10, 1795489793738000001, u64::MAX] {
                let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
                PublishHeader {
                    seq: Some(seq),
                    ..h
                }
                .encode(b"body", &mut a);
                t.encode(seq, b"body", &mut b);
                assert_eq!(a, b, "seq {seq}");
            }
        }
    }

    #[test]
    fn sow_delete_form_round_trips() {
        let mut buf = BytesMut::new();
        PublishHeader {
            command: Some(&Command::SowDelete),
            cid: Some("7"),
            topic: "orders",
            ack_type: AckTypes::PROCESSED
                .with(AckType::Persisted)
                .with(AckType::Stats),
            seq: Some(9),
            filter: Some("/id = 1"),
            ..PublishHeader::default()
        }
        .encode(b"", &mut buf);
        assert_eq!(
            &buf[4..],
            &br#"{"c":"sow_delete","t":"orders","cid":"7","filter":"/id = 1","a":"processed,persisted,stats","s":9,"sub_id":"7","query_id":"7"}"#[..]
        );
        let f = decode_frame(buf.split_off(4).freeze()).unwrap();
        assert_eq!(f.header.filter.as_deref(), Some("/id = 1"));
        assert_eq!(f.header.seq, Some(9));
    }
}
