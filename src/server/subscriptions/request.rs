//! Subscription and query commands as the server reads them: one validated [`Request`] per
//! `subscribe`, `delta_subscribe`, `sow`, `sow_and_subscribe` or `sow_and_delta_subscribe`
//! frame, or the reason AMPS would refuse it with.
//!
//! The checks, in order (the first failure is the command's reason):
//!
//! | what | reason |
//! |---|---|
//! | no `sub_id` and no `cid` on a subscription, no `query_id` and no `cid` on a query | `invalid subid` |
//! | topic missing / with whitespace / a regex that does not compile | `no topic` / `invalid topic` / `bad regex topic` |
//! | topic matching a `deny_read` pattern | `not entitled` |
//! | `filter` outside the filter language | `bad filter` |
//! | `orderby` clause | `invalid order by` (`orderby too large` above 16 fields) |
//! | `bookmark` syntax | `invalid bookmark` |
//! | a bookmark on a query (historical SOW queries) | `not supported` |
//! | an option the server does not implement | `not supported` |
//!
//! Options honoured: `oof`, `no_empties`, `replace`, `timestamp`; accepted and without effect
//! here: `send_keys` (deltas always carry the key fields), `live` and `fully_durable` (the
//! server only ever delivers what is in the log), `no_sowkey` (every SOW record keeps its `k`:
//! its record header is needed anyway). `batch_size` defaults to
//! 10 and is capped at [`MAX_BATCH_SIZE`]; `persisted` in `a` is ignored (subscriptions are
//! never acked `persisted`).

use regex::RegexSet;

use super::matching::{Spec, TopicPattern};
use crate::protocol::{AckTypes, Command, Header, Reason};
use crate::server::bookmark::BookmarkSpec;
use crate::server::filter::Filter;
use crate::server::query::{parse_order_by, OrderKey};

/// The default `batch_size` of a query.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 10;

/// The largest `batch_size` honoured (larger values are cut to it).
pub(crate) const MAX_BATCH_SIZE: usize = 10_000;

/// Which command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `subscribe`
    Subscribe,
    /// `delta_subscribe`
    DeltaSubscribe,
    /// `sow`
    Sow,
    /// `sow_and_subscribe`
    SowAndSubscribe,
    /// `sow_and_delta_subscribe`
    SowAndDeltaSubscribe,
}

impl Kind {
    /// The kind of a command, `None` for anything that is not a subscription or query.
    pub fn of(c: &Command) -> Option<Kind> {
        Some(match c {
            Command::Subscribe => Kind::Subscribe,
            Command::DeltaSubscribe => Kind::DeltaSubscribe,
            Command::Sow => Kind::Sow,
            Command::SowAndSubscribe => Kind::SowAndSubscribe,
            Command::SowAndDeltaSubscribe => Kind::SowAndDeltaSubscribe,
            _ => return None,
        })
    }

    /// Whether it queries the SOW first.
    pub fn queries(self) -> bool {
        matches!(
            self,
            Kind::Sow | Kind::SowAndSubscribe | Kind::SowAndDeltaSubscribe
        )
    }

    /// Whether it places a subscription.
    pub fn subscribes(self) -> bool {
        self != Kind::Sow
    }

    /// Whether the subscription receives deltas.
    pub fn delta(self) -> bool {
        matches!(self, Kind::DeltaSubscribe | Kind::SowAndDeltaSubscribe)
    }
}

/// A validated command (module docs).
#[derive(Debug)]
pub(crate) struct Request {
    /// The command.
    pub kind: Kind,
    /// The command id, echoed on acks.
    pub cid: Option<String>,
    /// Ack types asked for (`persisted` removed).
    pub acks: AckTypes,
    /// The subscription id (subscriptions only; defaults to the cid).
    pub sub_id: Option<String>,
    /// The query id (queries only; defaults to the cid).
    pub query_id: Option<String>,
    /// What the subscription (or query) matches.
    pub spec: Spec,
    /// Option `replace`: replace a subscription with the same id.
    pub replace: bool,
    /// Records per `sow` frame.
    pub batch_size: usize,
    /// At most this many records.
    pub top_n: Option<usize>,
    /// Sort order of the query.
    pub order_by: Vec<OrderKey>,
    /// Where a subscription's replay starts (subscriptions only).
    pub bookmark: Option<BookmarkSpec>,
}

/// What a refused command still needs for its failure acks.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The command id.
    pub cid: Option<String>,
    /// The ack types asked for.
    pub acks: AckTypes,
    /// Why.
    pub reason: Reason,
}

/// Reads a subscription or query command (module docs). `kind` comes from [`Kind::of`].
pub(crate) fn parse(
    kind: Kind,
    h: &Header,
    deny_read: Option<&RegexSet>,
) -> Result<Request, Refusal> {
    let acks = h
        .ack_type
        .iter()
        .filter(|t| *t != crate::protocol::AckType::Persisted)
        .fold(AckTypes::NONE, AckTypes::with);
    let refuse = |reason: Reason| Refusal {
        cid: h.cid.clone(),
        acks,
        reason,
    };
    let sub_id = if kind.subscribes() {
        match h.sub_id.clone().or_else(|| h.cid.clone()) {
            Some(id) if !id.is_empty() && !id.contains(',') => Some(id),
            _ => return Err(refuse(Reason::InvalidSubid)),
        }
    } else {
        None
    };
    let query_id = if kind.queries() {
        match h
            .query_id
            .clone()
            .or_else(|| h.cid.clone())
            .or_else(|| sub_id.clone())
        {
            Some(id) if !id.is_empty() => Some(id),
            _ => return Err(refuse(Reason::InvalidSubid)),
        }
    } else {
        None
    };
    let topic = TopicPattern::parse(h.topic.as_deref().unwrap_or("")).map_err(refuse)?;
    if deny_read.is_some_and(|d| d.is_match(topic.as_str())) {
        return Err(refuse(Reason::NotEntitled));
    }
    let filter = match h.filter.as_deref() {
        None => None,
        Some(text) => Some(Filter::parse(text).map_err(|_| refuse(Reason::BadFilter))?),
    };
    let order_by = match h.order_by.as_deref() {
        None => Vec::new(),
        Some(text) => parse_order_by(text).map_err(refuse)?,
    };
    let bookmark = match h.bookmark.as_deref() {
        None | Some("") => None,
        Some(text) => Some(BookmarkSpec::parse(text).map_err(refuse)?),
    };
    if bookmark.is_some() && kind.queries() && bookmark != Some(BookmarkSpec::Now) {
        return Err(refuse(Reason::NotSupported));
    }
    let mut opts = Options::default();
    if let Some(o) = h.options.as_deref() {
        for opt in o.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match opt {
                "oof" => opts.oof = true,
                "no_empties" => opts.no_empties = true,
                "replace" => opts.replace = true,
                "timestamp" => opts.timestamp = true,
                "send_keys" | "live" | "fully_durable" | "no_sowkey" => {}
                _ => return Err(refuse(Reason::NotSupported)),
            }
        }
    }
    let batch_size = h
        .batch_size
        .map_or(DEFAULT_BATCH_SIZE, |b| {
            usize::try_from(b).unwrap_or(MAX_BATCH_SIZE)
        })
        .clamp(1, MAX_BATCH_SIZE);
    let top_n = h.top_n.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    Ok(Request {
        kind,
        cid: h.cid.clone(),
        acks,
        sub_id,
        query_id,
        spec: Spec {
            topic,
            filter,
            delta: kind.delta(),
            oof: opts.oof,
            no_empties: opts.no_empties,
            timestamp: opts.timestamp,
        },
        replace: opts.replace,
        batch_size,
        top_n,
        order_by,
        bookmark: bookmark.filter(|b| *b != BookmarkSpec::Now),
    })
}

#[derive(Default)]
struct Options {
    oof: bool,
    no_empties: bool,
    replace: bool,
    timestamp: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AckType;

    fn header(json: &str) -> Header {
        Header::parse(json.as_bytes()).unwrap().0
    }

    fn req(json: &str) -> Result<Request, Reason> {
        let h = header(json);
        let kind = Kind::of(h.command.as_ref().unwrap()).unwrap();
        parse(kind, &h, None).map_err(|r| r.reason)
    }

    #[test]
    fn official_client_frames_parse() {
        // As the official Python client writes them (`docs/PROTOCOL.md` section 12.4).
        let r = req(r#"{"c":"subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed","sub_id":"auto1"}"#).unwrap();
        assert_eq!(r.kind, Kind::Subscribe);
        assert_eq!(r.sub_id.as_deref(), Some("auto1"));
        assert!(r.spec.filter.is_some());
        let r = req(r#"{"c":"subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed,completed","sub_id":"SUBX","x":"xcorr","o":"oof"}"#).unwrap();
        assert_eq!(r.sub_id.as_deref(), Some("SUBX"));
        assert!(r.spec.oof && r.acks.contains(AckType::Completed));
        let r = req(r#"{"c":"delta_subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed","sub_id":"auto1","o":"no_empties"}"#).unwrap();
        assert!(r.spec.delta && r.spec.no_empties);
        let r = req(r#"{"c":"sow","t":"orders","cid":"auto2","filter":"/id > 1","a":"processed,completed","query_id":"auto2","batch_size":5,"top_n":3,"orderby":"/id DESC","o":"no_sowkey"}"#).unwrap();
        assert_eq!((r.batch_size, r.top_n), (5, Some(3)));
        assert_eq!(r.query_id.as_deref(), Some("auto2"));
        assert!(r.sub_id.is_none() && r.order_by[0].descending);
        let r = req(r#"{"c":"sow_and_subscribe","t":"orders","cid":"auto9","filter":"/id > 1","a":"processed","sub_id":"auto9","query_id":"auto9","batch_size":4,"top_n":2,"orderby":"/id","o":"oof,replace"}"#).unwrap();
        assert!(r.kind.queries() && r.kind.subscribes() && r.replace && r.spec.oof);
        let r = req(r#"{"c":"sow_and_delta_subscribe","t":"orders","cid":"auto15","a":"processed","sub_id":"auto15","query_id":"auto15","batch_size":10,"o":"oof,no_empties"}"#).unwrap();
        assert!(r.spec.delta && r.spec.oof && r.spec.no_empties);
        let r = req(r#"{"c":"subscribe","t":"orders","cid":"auto1","a":"processed,persisted","sub_id":"B1","bookmark":"0"}"#).unwrap();
        assert_eq!(r.bookmark, Some(BookmarkSpec::Epoch));
        assert!(
            !r.acks.contains(AckType::Persisted),
            "subscriptions are never acked persisted"
        );
        // Defaults: the cid is the sub id and the query id; batch size 10.
        let r = req(r#"{"c":"sow_and_subscribe","t":"orders","cid":"c7"}"#).unwrap();
        assert_eq!(r.sub_id.as_deref(), Some("c7"));
        assert_eq!(r.query_id.as_deref(), Some("c7"));
        assert_eq!(r.batch_size, DEFAULT_BATCH_SIZE);
        // NOW is the same as no bookmark.
        let r = req(r#"{"c":"subscribe","t":"orders","cid":"c","bookmark":"0|1|"}"#).unwrap();
        assert_eq!(r.bookmark, None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

        /// Whatever a peer puts in the fields, reading the command answers or refuses; it
        /// never panics.
        #[test]
        fn hostile_fields_never_panic(
            topic in proptest::option::of(".{0,24}"),
            filter in proptest::option::of(".{0,24}"),
            orderby in proptest::option::of("[/a-z ,DESCA]{0,16}"),
            bookmark in proptest::option::of("[0-9|,TZ.a]{0,30}"),
            options in proptest::option::of("[a-z_,=]{0,20}"),
            sub_id in proptest::option::of(".{0,8}"),
            batch in proptest::option::of(proptest::num::u64::ANY),
            top_n in proptest::option::of(proptest::num::u64::ANY),
            kind in 0usize..5,
        ) {
            let kinds = [Kind::Subscribe, Kind::DeltaSubscribe, Kind::Sow, Kind::SowAndSubscribe, Kind::SowAndDeltaSubscribe];
            let h = Header {
                topic, filter, order_by: orderby, bookmark, options, sub_id,
                batch_size: batch, top_n, cid: Some("c".into()),
                ..Header::default()
            };
            match parse(kinds[kind], &h, None) {
                Ok(r) => proptest::prop_assert!((1..=MAX_BATCH_SIZE).contains(&r.batch_size)),
                Err(r) => proptest::prop_assert_eq!(r.cid.as_deref(), Some("c")),
            }
        }
    }

    #[test]
    fn refusals_carry_amps_reasons() {
        for (json, reason) in [
            (r#"{"c":"subscribe","t":"orders"}"#, Reason::InvalidSubid),
            (r#"{"c":"subscribe","cid":"c"}"#, Reason::NoTopic),
            (
                r#"{"c":"subscribe","cid":"c","t":"a b"}"#,
                Reason::InvalidTopic,
            ),
            (
                r#"{"c":"subscribe","cid":"c","t":"^orders("}"#,
                Reason::BadRegexTopic,
            ),
            (
                r#"{"c":"subscribe","cid":"c","t":"orders","filter":"/id LIKE 'x'"}"#,
                Reason::BadFilter,
            ),
            (
                r#"{"c":"sow","cid":"c","t":"orders","orderby":"id"}"#,
                Reason::InvalidOrderBy,
            ),
            (
                r#"{"c":"subscribe","cid":"c","t":"orders","bookmark":"nonsense"}"#,
                Reason::InvalidBookmark,
            ),
            (
                r#"{"c":"sow","cid":"c","t":"orders","bookmark":"0"}"#,
                Reason::NotSupported,
            ),
            (
                r#"{"c":"subscribe","cid":"c","t":"orders","o":"conflation=1s"}"#,
                Reason::NotSupported,
            ),
            (
                r#"{"c":"subscribe","cid":"c","sub_id":"a,b","t":"orders"}"#,
                Reason::InvalidSubid,
            ),
        ] {
            assert_eq!(req(json).unwrap_err(), reason, "{json}");
        }
        let deny = RegexSet::new(["^secret"]).unwrap();
        let h = header(r#"{"c":"subscribe","cid":"c","t":"secret.x","a":"processed"}"#);
        let refusal = parse(Kind::Subscribe, &h, Some(&deny)).unwrap_err();
        assert_eq!(refusal.reason, Reason::NotEntitled);
        assert_eq!(refusal.cid.as_deref(), Some("c"));
        assert!(refusal.acks.contains(AckType::Processed));
    }
}
