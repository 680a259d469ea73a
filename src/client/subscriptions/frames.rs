//! The frames the client sends for subscriptions and queries, byte for byte.
//!
//! Every frame is compact JSON with the keys in the official client's order
//! (`docs/PROTOCOL.md` section 12.1; the reference frames are in section 12.4):
//!
//! ```text
//! c, t, cid, filter, a, sub_id, query_id, batch_size, top_n, orderby, bookmark, x, o
//! ```
//!
//! with `batch_size` and `top_n` as bare numbers and everything else as strings:
//!
//! ```text
//! subscribe    {"c":"subscribe","t":T,"cid":C[,"filter":F],"a":"processed","sub_id":S[,"bookmark":B][,"x":X][,"o":O]}
//! sow          {"c":"sow","t":T,"cid":C[,"filter":F],"a":"processed,completed","query_id":Q,"batch_size":N[,"top_n":K][,"orderby":X][,"o":O]}
//! sow_and_subscribe
//!              {"c":"sow_and_subscribe","t":T,"cid":C[,"filter":F],"a":"processed","sub_id":S,"query_id":Q,"batch_size":N[,"top_n":K][,"orderby":X][,"bookmark":B][,"o":O]}
//! unsubscribe  {"c":"unsubscribe","cid":C,"sub_id":S}        (S may be "all"; no ack asked)
//! ping         {"c":"flush","cid":C,"a":"processed"}
//! ```
//!
//! A bookmark subscription asks for `processed` only, even with a bookmark store: PROTOCOL.md
//! section 12.2 (a `persisted` ack on a bookmark subscription corrupts the official client's
//! store, so servers are told not to send one, and nothing would use it here).

use bytes::{BufMut, BytesMut};

use crate::protocol::header::JsonObjectWriter;
use crate::protocol::{AckType, AckTypes};

/// Which command a subscription or query is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CommandKind {
    Subscribe,
    DeltaSubscribe,
    Sow,
    SowAndSubscribe,
    SowAndDeltaSubscribe,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Subscribe => "subscribe",
            CommandKind::DeltaSubscribe => "delta_subscribe",
            CommandKind::Sow => "sow",
            CommandKind::SowAndSubscribe => "sow_and_subscribe",
            CommandKind::SowAndDeltaSubscribe => "sow_and_delta_subscribe",
        }
    }

    /// Whether the command has a live part (routed by `sids`).
    pub fn is_subscription(self) -> bool {
        !matches!(self, CommandKind::Sow)
    }

    /// Whether the command has a SOW part (routed by `query_id`).
    pub fn has_query(self) -> bool {
        matches!(
            self,
            CommandKind::Sow | CommandKind::SowAndSubscribe | CommandKind::SowAndDeltaSubscribe
        )
    }
}

/// Everything a subscription or query frame carries except its `cid` (which is new on every
/// send): what the frame builder needs, resolved from the user's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommandSpec {
    pub kind: CommandKind,
    pub topic: String,
    pub filter: Option<String>,
    /// Resolved: the user's, or the first cid.
    pub sub_id: Option<String>,
    /// Resolved: the user's, or the first cid.
    pub query_id: Option<String>,
    pub batch_size: Option<u64>,
    pub top_n: Option<u64>,
    pub order_by: Option<String>,
    pub correlation_id: Option<String>,
    /// The comma-joined `o`.
    pub options: Option<String>,
    /// Ask for a `stats` ack too (queries).
    pub stats: bool,
}

impl CommandSpec {
    /// The `a` this command asks for.
    pub fn acks(&self) -> AckTypes {
        let a = AckTypes::NONE.with(AckType::Processed);
        let a = if self.kind == CommandKind::Sow {
            a.with(AckType::Completed)
        } else {
            a
        };
        if self.stats {
            a.with(AckType::Stats)
        } else {
            a
        }
    }

    /// Appends `[len][header]` for this command under `cid`, with `bookmark` as the wire
    /// bookmark of this send (a resubscription sends the store's most recent one).
    pub fn encode(&self, cid: &str, bookmark: Option<&str>, dst: &mut BytesMut) {
        frame(dst, |w| {
            w.str("c", self.kind.as_str());
            w.str("t", &self.topic);
            w.str("cid", cid);
            w.opt_str("filter", &self.filter);
            w.acks("a", self.acks());
            if self.kind.is_subscription() {
                w.opt_str("sub_id", &self.sub_id);
            }
            if self.kind.has_query() {
                w.opt_str("query_id", &self.query_id);
                w.num("batch_size", self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE));
                w.opt_num("top_n", self.top_n);
                w.opt_str("orderby", &self.order_by);
            }
            w.opt_str("bookmark", &bookmark);
            w.opt_str("x", &self.correlation_id);
            w.opt_str("o", &self.options);
        });
    }
}

/// The `batch_size` the official client sends when none is given.
pub(crate) const DEFAULT_BATCH_SIZE: u64 = 10;

fn frame(dst: &mut BytesMut, fields: impl FnOnce(&mut JsonObjectWriter<'_>)) {
    let start = dst.len();
    dst.reserve(160);
    dst.put_u32(0);
    let mut w = JsonObjectWriter::new(dst);
    fields(&mut w);
    w.finish();
    let len = u32::try_from(dst.len() - start - 4).unwrap_or(u32::MAX);
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends an unsubscribe for `sub_id` (a comma list, or `all`).
pub(crate) fn encode_unsubscribe(cid: &str, sub_id: &str, dst: &mut BytesMut) {
    frame(dst, |w| {
        w.str("c", "unsubscribe");
        w.str("cid", cid);
        w.str("sub_id", sub_id);
    });
}

/// Appends the ping: a flush asking for `processed`, which the server answers at once when
/// nothing of this connection is waiting to be persisted.
pub(crate) fn encode_ping(cid: &str, dst: &mut BytesMut) {
    frame(dst, |w| {
        w.str("c", "flush");
        w.str("cid", cid);
        w.acks("a", AckTypes::PROCESSED);
    });
}

/// Joins options in the official order: `oof` first, then the caller's, then `no_empties`
/// (sow_and_delta_subscribe unless empties are wanted). Empty pieces and repeats are left out.
pub(crate) fn join_options(oof: bool, user: &[String], no_empties: bool) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    let pieces = oof
        .then_some("oof")
        .into_iter()
        .chain(user.iter().flat_map(|u| u.split(',')))
        .chain(no_empties.then_some("no_empties"));
    for p in pieces {
        let p = p.trim();
        if !p.is_empty() && !parts.contains(&p) {
            parts.push(p);
        }
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: CommandKind, topic: &str) -> CommandSpec {
        CommandSpec {
            kind,
            topic: topic.into(),
            filter: None,
            sub_id: None,
            query_id: None,
            batch_size: None,
            top_n: None,
            order_by: None,
            correlation_id: None,
            options: None,
            stats: false,
        }
    }

    fn json(spec: &CommandSpec, cid: &str, bookmark: Option<&str>) -> String {
        let mut b = BytesMut::new();
        spec.encode(cid, bookmark, &mut b);
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        assert_eq!(len, b.len() - 4);
        String::from_utf8(b[4..].to_vec()).expect("utf8")
    }

    /// The official client's frames (`docs/PROTOCOL.md` section 12.4), byte for byte.
    #[test]
    fn the_official_clients_frames() {
        let mut s = spec(CommandKind::Subscribe, "orders");
        s.filter = Some("/id > 1".into());
        s.sub_id = Some("auto1".into());
        assert_eq!(
            json(&s, "auto1", None),
            r#"{"c":"subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed","sub_id":"auto1"}"#
        );
        s.sub_id = Some("my-sub-1".into());
        s.options = join_options(false, &["oof,replace".into()], false);
        assert_eq!(
            json(&s, "auto1", None),
            r#"{"c":"subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed","sub_id":"my-sub-1","o":"oof,replace"}"#
        );
        let mut d = spec(CommandKind::DeltaSubscribe, "orders");
        d.filter = Some("/id > 1".into());
        d.sub_id = Some("auto1".into());
        d.options = Some("no_empties".into());
        assert_eq!(
            json(&d, "auto1", None),
            r#"{"c":"delta_subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed","sub_id":"auto1","o":"no_empties"}"#
        );
        let mut b = spec(CommandKind::Subscribe, "orders");
        b.filter = Some("/id > 1".into());
        b.sub_id = Some("auto1".into());
        assert_eq!(
            json(&b, "auto1", Some("0")),
            r#"{"c":"subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed","sub_id":"auto1","bookmark":"0"}"#
        );
        let mut q = spec(CommandKind::Sow, "orders");
        q.query_id = Some("auto1".into());
        assert_eq!(
            json(&q, "auto1", None),
            r#"{"c":"sow","t":"orders","cid":"auto1","a":"processed,completed","query_id":"auto1","batch_size":10}"#
        );
        q.filter = Some("/id > 1".into());
        q.query_id = Some("auto2".into());
        q.batch_size = Some(5);
        q.top_n = Some(3);
        q.order_by = Some("/id DESC".into());
        q.options = Some("no_sowkey".into());
        assert_eq!(
            json(&q, "auto2", None),
            r#"{"c":"sow","t":"orders","cid":"auto2","filter":"/id > 1","a":"processed,completed","query_id":"auto2","batch_size":5,"top_n":3,"orderby":"/id DESC","o":"no_sowkey"}"#
        );
        let mut sas = spec(CommandKind::SowAndSubscribe, "orders");
        sas.filter = Some("/id > 1".into());
        sas.sub_id = Some("auto9".into());
        sas.query_id = Some("auto9".into());
        sas.batch_size = Some(4);
        sas.top_n = Some(2);
        sas.order_by = Some("/id".into());
        sas.options = join_options(true, &["replace".into()], false);
        assert_eq!(
            json(&sas, "auto9", Some("0")),
            r#"{"c":"sow_and_subscribe","t":"orders","cid":"auto9","filter":"/id > 1","a":"processed","sub_id":"auto9","query_id":"auto9","batch_size":4,"top_n":2,"orderby":"/id","bookmark":"0","o":"oof,replace"}"#
        );
        let mut sads = spec(CommandKind::SowAndDeltaSubscribe, "orders");
        sads.sub_id = Some("auto15".into());
        sads.query_id = Some("auto15".into());
        sads.options = join_options(false, &[], true);
        assert_eq!(
            json(&sads, "auto15", None),
            r#"{"c":"sow_and_delta_subscribe","t":"orders","cid":"auto15","a":"processed","sub_id":"auto15","query_id":"auto15","batch_size":10,"o":"no_empties"}"#
        );
        assert_eq!(
            join_options(true, &[], true).as_deref(),
            Some("oof,no_empties")
        );
        let mut stats = spec(CommandKind::Sow, "orders");
        stats.query_id = Some("auto6".into());
        stats.stats = true;
        assert!(json(&stats, "auto6", None).contains(r#""a":"processed,completed,stats""#));
    }

    #[test]
    fn unsubscribe_and_ping() {
        let mut b = BytesMut::new();
        encode_unsubscribe("auto3", "S1", &mut b);
        assert_eq!(
            &b[..],
            &b"\x00\x00\x00\x2f{\"c\":\"unsubscribe\",\"cid\":\"auto3\",\"sub_id\":\"S1\"}"[..]
        );
        let mut p = BytesMut::new();
        encode_ping("p1", &mut p);
        assert_eq!(&p[4..], &br#"{"c":"flush","cid":"p1","a":"processed"}"#[..]);
    }

    #[test]
    fn options_are_joined_without_repeats_or_blanks() {
        assert_eq!(join_options(false, &[], false), None);
        assert_eq!(
            join_options(true, &["oof, replace".into(), "".into()], false).as_deref(),
            Some("oof,replace")
        );
    }
}
