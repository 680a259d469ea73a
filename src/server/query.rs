//! SOW queries: which stored records a `sow` (or the first part of a `sow_and_subscribe`)
//! returns, and in what order. Pure logic over a snapshot of the SOW.
//!
//! # Model
//!
//! A query names a topic (or a topic regular expression, which covers every SOW topic it
//! matches), an optional content filter, an optional `orderby` and an optional `top_n`. The
//! session takes a snapshot of the matching topics' records under the server's state lock (so
//! the snapshot is exactly the SOW after some log position) and [`evaluate`] does the rest
//! outside it:
//!
//! 1. keep the records whose (latest, delta-merged) body matches the filter; their count is the
//!    query's `topic_matches`;
//! 2. sort them by the `orderby` fields, if any; otherwise they stay in topic order, then key
//!    order (the SOW keeps keys sorted);
//! 3. keep the first `top_n`; their count is `records_returned`.
//!
//! # orderby
//!
//! `orderby` is a comma list of `/field [ASC|DESC]` (direction case-insensitive, `ASC` by
//! default), fields being paths like filter paths (`/a/b`). Values compare as numbers when both
//! are numbers, as strings when both are strings; across kinds numbers come before strings,
//! which come before booleans and other JSON; a missing field or `null` sorts last whatever the
//! direction. Records that compare equal keep their key order. Anything else in the clause is
//! `invalid order by`.

use std::cmp::Ordering;

use bytes::Bytes;
use serde_json::Value;

use crate::protocol::Reason;
use crate::server::filter::Filter;
use crate::server::sow::Sow;
use crate::server::subscriptions::matching::TopicPattern;

/// The most fields an `orderby` may name.
pub(crate) const MAX_ORDER_FIELDS: usize = 16;

/// One `orderby` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderKey {
    /// Path segments (`/a/b` → `["a", "b"]`).
    pub path: Vec<String>,
    /// `DESC`.
    pub descending: bool,
}

/// Parses an `orderby` clause (module docs); `invalid order by` for anything else.
pub(crate) fn parse_order_by(text: &str) -> Result<Vec<OrderKey>, Reason> {
    let mut keys = Vec::new();
    for part in text.split(',') {
        let mut words = part.split_whitespace();
        let Some(field) = words.next() else {
            return Err(Reason::InvalidOrderBy);
        };
        let descending = match words.next() {
            None => false,
            Some(d) if d.eq_ignore_ascii_case("asc") => false,
            Some(d) if d.eq_ignore_ascii_case("desc") => true,
            Some(_) => return Err(Reason::InvalidOrderBy),
        };
        if words.next().is_some() {
            return Err(Reason::InvalidOrderBy);
        }
        let Some(path) = field.strip_prefix('/') else {
            return Err(Reason::InvalidOrderBy);
        };
        let path: Vec<String> = path.split('/').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(Reason::InvalidOrderBy);
        }
        keys.push(OrderKey { path, descending });
    }
    if keys.len() > MAX_ORDER_FIELDS {
        return Err(Reason::OrderbyTooLarge);
    }
    Ok(keys)
}

/// One stored record in a query's snapshot.
#[derive(Clone, Debug)]
pub(crate) struct QueryRecord {
    /// Its topic.
    pub topic: String,
    /// Its SOW key.
    pub key: String,
    /// The record.
    pub body: Bytes,
    /// The correlation id of the write that stored it, when known.
    pub correlation_id: Option<String>,
    /// When it was written (microseconds since the epoch; 0 when unknown).
    pub ts: u64,
}

/// What a query returns.
#[derive(Debug, Default)]
pub(crate) struct QueryResult {
    /// The records to send, in order.
    pub records: Vec<QueryRecord>,
    /// How many records matched the filter (before `top_n`).
    pub topic_matches: u64,
}

/// The records a query on `topic` starts from: one topic's records, or for a regular
/// expression those of every matching SOW topic (in topic order), skipping topics `denied`
/// says the reader may not see. Call under the state lock; everything else happens outside.
pub(crate) fn snapshot(
    sow: &Sow,
    topic: &TopicPattern,
    denied: &dyn Fn(&str) -> bool,
) -> Vec<QueryRecord> {
    let mut topics: Vec<&str> = match topic {
        TopicPattern::Exact(t) => vec![t.as_str()],
        TopicPattern::Regex(_) => sow.topic_names().filter(|t| topic.matches(t)).collect(),
    };
    topics.retain(|t| !denied(t));
    topics.sort_unstable();
    let mut records = Vec::new();
    for t in topics {
        records.extend(
            sow.records_with_meta(t)
                .map(|(key, body, meta)| QueryRecord {
                    topic: t.to_owned(),
                    key: key.to_owned(),
                    body: body.clone(),
                    correlation_id: meta.correlation_id.as_deref().map(str::to_owned),
                    ts: meta.ts,
                }),
        );
    }
    records
}

/// Filters, orders and cuts a snapshot (module docs). `snapshot` is in topic, then key order.
pub(crate) fn evaluate(
    snapshot: Vec<QueryRecord>,
    filter: Option<&Filter>,
    order: &[OrderKey],
    top_n: Option<usize>,
) -> QueryResult {
    let needs_json = filter.is_some() || !order.is_empty();
    let mut kept: Vec<(QueryRecord, Option<Value>)> = Vec::with_capacity(snapshot.len());
    for r in snapshot {
        let json = needs_json.then(|| serde_json::from_slice(&r.body).unwrap_or(Value::Null));
        if let (Some(f), Some(j)) = (filter, &json) {
            if !f.matches(j) {
                continue;
            }
        }
        kept.push((r, json));
    }
    let topic_matches = kept.len() as u64;
    if !order.is_empty() {
        // Stable: equal records keep their key order.
        kept.sort_by(|a, b| compare(order, a.1.as_ref(), b.1.as_ref()));
    }
    if let Some(n) = top_n {
        kept.truncate(n);
    }
    QueryResult {
        records: kept.into_iter().map(|(r, _)| r).collect(),
        topic_matches,
    }
}

fn resolve<'a>(v: Option<&'a Value>, path: &[String]) -> Option<&'a Value> {
    let mut v = v?;
    for seg in path {
        v = v.as_object()?.get(seg)?;
    }
    (!v.is_null()).then_some(v)
}

fn compare(order: &[OrderKey], a: Option<&Value>, b: Option<&Value>) -> Ordering {
    for k in order {
        let (x, y) = (resolve(a, &k.path), resolve(b, &k.path));
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            // Missing sorts last in either direction.
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(x), Some(y)) => {
                let o = compare_values(x, y);
                if k.descending {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        _ => 2,
    }
}

fn compare_values(x: &Value, y: &Value) -> Ordering {
    match (x, y) {
        (Value::Number(a), Value::Number(b)) => compare_numbers(a, b),
        (Value::String(a), Value::String(b)) => a.cmp(b),
        _ => rank(x)
            .cmp(&rank(y))
            .then_with(|| x.to_string().cmp(&y.to_string())),
    }
}

fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Ordering {
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.total_cmp(&y)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(key: &str, body: &str) -> QueryRecord {
        QueryRecord {
            topic: "orders".into(),
            key: key.into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            correlation_id: None,
            ts: 0,
        }
    }

    fn keys(r: &QueryResult) -> Vec<&str> {
        r.records.iter().map(|r| r.key.as_str()).collect()
    }

    #[test]
    fn order_by_clauses() {
        assert_eq!(
            parse_order_by("/id").unwrap(),
            [OrderKey {
                path: vec!["id".into()],
                descending: false
            }]
        );
        let two = parse_order_by("/a/b DESC, /c asc").unwrap();
        assert_eq!(two.len(), 2);
        assert!(two[0].descending && !two[1].descending);
        assert_eq!(two[0].path, ["a", "b"]);
        for bad in [
            "",
            "id",
            "/id SIDEWAYS",
            "/id DESC x",
            "/",
            "//a",
            "/a,",
            ",/a",
        ] {
            assert_eq!(parse_order_by(bad), Err(Reason::InvalidOrderBy), "{bad:?}");
        }
        let many = vec!["/a"; MAX_ORDER_FIELDS + 1].join(",");
        assert_eq!(parse_order_by(&many), Err(Reason::OrderbyTooLarge));
    }

    #[test]
    fn filter_order_and_top_n() {
        let snap = vec![
            rec("1", r#"{"id":1,"px":30,"s":"b"}"#),
            rec("2", r#"{"id":2,"px":10,"s":"a"}"#),
            rec("3", r#"{"id":3,"px":20}"#),
            rec("4", r#"{"id":4,"px":10,"s":"c"}"#),
            rec("5", "not json"),
        ];
        let f = Filter::parse("/id > 1").unwrap();
        let r = evaluate(snap.clone(), Some(&f), &[], None);
        assert_eq!(keys(&r), ["2", "3", "4"]);
        assert_eq!(r.topic_matches, 3);
        let by_px = parse_order_by("/px DESC").unwrap();
        let r = evaluate(snap.clone(), None, &by_px, Some(3));
        assert_eq!(
            keys(&r),
            ["1", "3", "2"],
            "ties keep key order; missing last"
        );
        assert_eq!(r.topic_matches, 5);
        let by_px_s = parse_order_by("/px, /s DESC").unwrap();
        assert_eq!(
            keys(&evaluate(snap.clone(), None, &by_px_s, None)),
            ["4", "2", "3", "1", "5"]
        );
        let by_s = parse_order_by("/s DESC").unwrap();
        assert_eq!(
            keys(&evaluate(snap.clone(), None, &by_s, None)),
            ["4", "1", "2", "3", "5"]
        );
        assert!(evaluate(snap, None, &[], Some(0)).records.is_empty());
    }

    #[test]
    fn numbers_compare_exactly() {
        let snap = vec![
            rec("a", r#"{"n":9007199254740993}"#),
            rec("b", r#"{"n":9007199254740992}"#),
            rec("c", r#"{"n":-1.5}"#),
            rec("d", r#"{"n":"text"}"#),
        ];
        let r = evaluate(snap, None, &parse_order_by("/n").unwrap(), None);
        assert_eq!(keys(&r), ["c", "b", "a", "d"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)))]

        /// The result is the filtered records, sorted, cut to top_n: a permutation of what the
        /// filter keeps, in non-decreasing order of the key field.
        #[test]
        fn results_are_sorted_filtered_and_cut(
            values in proptest::collection::vec(proptest::option::of(-5i64..5), 0..40),
            desc in any::<bool>(),
            top in proptest::option::of(0usize..50),
        ) {
            let snap: Vec<QueryRecord> = values.iter().enumerate().map(|(i, v)| match v {
                Some(v) => rec(&format!("{i:03}"), &format!(r#"{{"v":{v}}}"#)),
                None => rec(&format!("{i:03}"), "{}"),
            }).collect();
            let f = Filter::parse("/v != 0").unwrap();
            let order = parse_order_by(if desc { "/v DESC" } else { "/v" }).unwrap();
            let r = evaluate(snap, Some(&f), &order, top);
            let expected = values.iter().filter(|v| v.is_some_and(|v| v != 0)).count();
            prop_assert_eq!(r.topic_matches as usize, expected);
            prop_assert_eq!(r.records.len(), top.map_or(expected, |t| t.min(expected)));
            let got: Vec<i64> = r.records.iter().map(|r| {
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                v["v"].as_i64().unwrap()
            }).collect();
            for w in got.windows(2) {
                let ordered = if desc { w[0] >= w[1] } else { w[0] <= w[1] };
                prop_assert!(ordered, "{:?} out of order", w);
            }
        }
    }
}
