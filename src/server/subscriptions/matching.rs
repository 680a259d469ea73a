//! What a subscription receives for one write: topic patterns, content filters, deltas and
//! out-of-focus (`oof`) decisions. Pure logic: no locks, no I/O.
//!
//! # Topics
//!
//! A subscription's topic is either a literal topic or a regular expression. Like AMPS, the
//! server decides by looking at the text: a topic containing any of `^ $ * + ? ( ) [ ] { } | \`
//! is a regular expression (`^orders\..*`), anything else is literal (`orders.eu` is the one
//! topic `orders.eu`; a `.` alone does not make a regex). A regular expression matches a topic
//! when it matches anywhere in it ([`regex::Regex::is_match`]), so anchor it (`^...$`) to mean
//! a whole topic. Patterns are compiled with a size limit so a hostile pattern cannot make the
//! server allocate without bound.
//!
//! # What one write delivers
//!
//! For a publish or delta_publish, [`decide`] gives each subscription one [`Outcome`]:
//!
//! - the new record matches the filter (or there is no filter): the message, in full
//!   ([`Outcome::Full`]), or for a delta subscription updating a record it already had, the key
//!   fields plus the fields whose value changed ([`Outcome::Delta`]; with `no_empties` a delta
//!   with no changed field is not sent at all);
//! - it does not match, but the previous record did, and the subscription asked for `oof`:
//!   an out-of-focus notice with reason `match` whose body is the update ([`Outcome::OofMatch`]);
//! - otherwise nothing.
//!
//! For a sow_delete, every removed record that matched the filter gives an oof with reason
//! `deleted` (the body is the removed record) to subscriptions that asked for `oof`.
//! "The new record" is the SOW record after the write (a delta merged into what was stored);
//! on a topic without a SOW there is no previous record, so there are no deltas and no oofs.

use bytes::Bytes;
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::protocol::Reason;
use crate::server::filter::Filter;

/// The most memory one compiled topic regex may use.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Characters that make a topic a regular expression (module docs).
const REGEX_CHARS: &[char] = &[
    '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
];

/// A subscription's or query's topic: one topic, or a regular expression over topics.
#[derive(Clone, Debug)]
pub(crate) enum TopicPattern {
    /// Exactly this topic.
    Exact(String),
    /// Every topic the expression matches.
    Regex(Regex),
}

impl TopicPattern {
    /// Reads a topic as a command gives it: `no topic` when empty, `invalid topic` with
    /// whitespace or control characters, `bad regex topic` for a regex that does not compile.
    pub fn parse(text: &str) -> Result<TopicPattern, Reason> {
        if text.is_empty() {
            return Err(Reason::NoTopic);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Reason::InvalidTopic);
        }
        if !text.contains(REGEX_CHARS) {
            return Ok(TopicPattern::Exact(text.to_owned()));
        }
        RegexBuilder::new(text)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(TopicPattern::Regex)
            .map_err(|_| Reason::BadRegexTopic)
    }

    /// Whether a message on `topic` is for this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(t) => t == topic,
            TopicPattern::Regex(re) => re.is_match(topic),
        }
    }

    /// The pattern as the client wrote it.
    pub fn as_str(&self) -> &str {
        match self {
            TopicPattern::Exact(t) => t,
            TopicPattern::Regex(re) => re.as_str(),
        }
    }
}

/// What a subscription wants, fixed when it is placed.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The topic or topics.
    pub topic: TopicPattern,
    /// The content filter, if any.
    pub filter: Option<Filter>,
    /// A delta subscription (`delta_subscribe`, `sow_and_delta_subscribe`).
    pub delta: bool,
    /// Option `oof`: out-of-focus notices.
    pub oof: bool,
    /// Option `no_empties` (delta subscriptions): no delta without changed fields.
    pub no_empties: bool,
    /// Option `timestamp`: deliveries carry `ts`.
    pub timestamp: bool,
}

/// What one subscription receives for one publish or delta_publish (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing.
    Nothing,
    /// The whole (merged) record, as `p`.
    Full,
    /// The key fields and the changed fields, as `delta_publish`.
    Delta,
    /// An `oof` with reason `match`; the body is the update.
    OofMatch,
}

/// One write as the matching sees it, with its JSON parsed lazily and at most once however many
/// subscriptions look at it.
pub(crate) struct WriteView<'a> {
    /// The record after the write (for a topic without a SOW, the body as published).
    pub new: &'a Bytes,
    /// The record before the write, on a SOW topic that had one.
    pub prev: Option<&'a Bytes>,
    /// Top-level names of the topic's key fields (they always travel in a delta).
    pub key_fields: &'a [String],
    new_json: Option<Value>,
    prev_json: Option<Value>,
    delta: Option<Option<Delta>>,
}

impl<'a> WriteView<'a> {
    /// A view of one write.
    pub fn new(new: &'a Bytes, prev: Option<&'a Bytes>, key_fields: &'a [String]) -> Self {
        WriteView {
            new,
            prev,
            key_fields,
            new_json: None,
            prev_json: None,
            delta: None,
        }
    }

    fn new_json(&mut self) -> &Value {
        self.new_json.get_or_insert_with(|| parse_json(self.new))
    }

    fn prev_matches(&mut self, filter: &Filter) -> bool {
        let Some(prev) = self.prev else {
            return false;
        };
        filter.matches(self.prev_json.get_or_insert_with(|| parse_json(prev)))
    }

    /// The delta of this write (key fields and changed fields); `None` without a previous
    /// record or when either side is not a JSON object.
    pub fn delta(&mut self) -> Option<&Delta> {
        if self.delta.is_none() {
            let computed = self
                .prev
                .and_then(|prev| delta_body(self.key_fields, prev, self.new));
            self.delta = Some(computed);
        }
        self.delta.as_ref().and_then(Option::as_ref)
    }
}

fn parse_json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

/// What `spec` receives for the write in `view` (module docs).
pub(crate) fn decide(spec: &Spec, view: &mut WriteView<'_>) -> Outcome {
    let matches_now = match &spec.filter {
        None => true,
        Some(f) => f.matches(view.new_json()),
    };
    if matches_now {
        if spec.delta {
            if let Some(d) = view.delta() {
                return if d.changed || !spec.no_empties {
                    Outcome::Delta
                } else {
                    Outcome::Nothing
                };
            }
        }
        return Outcome::Full;
    }
    match &spec.filter {
        Some(f) if spec.oof && view.prev_matches(f) => Outcome::OofMatch,
        _ => Outcome::Nothing,
    }
}

/// Whether a removed record gives `spec` an oof `deleted`: it asked for oof and the record
/// matched its filter.
pub(crate) fn oof_on_delete(spec: &Spec, removed: &Value) -> bool {
    spec.oof && spec.filter.as_ref().is_none_or(|f| f.matches(removed))
}

/// A delta delivery's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Delta {
    /// The key fields and the changed fields, as compact JSON.
    pub body: Bytes,
    /// Whether any field other than the key changed (`no_empties` drops deltas without).
    pub changed: bool,
}

/// The key fields and the top-level fields of `new` whose value differs from `prev` (or that
/// `prev` lacks), as compact JSON; `None` when either side is not a JSON object.
pub(crate) fn delta_body(key_fields: &[String], prev: &[u8], new: &[u8]) -> Option<Delta> {
    let (Ok(Value::Object(prev)), Ok(Value::Object(new))) = (
        serde_json::from_slice::<Value>(prev),
        serde_json::from_slice::<Value>(new),
    ) else {
        return None;
    };
    let mut out = Map::new();
    let mut changed = false;
    for (name, value) in &new {
        let is_key = key_fields.iter().any(|k| k == name);
        let differs = prev.get(name) != Some(value);
        if differs && !is_key {
            changed = true;
        }
        if differs || is_key {
            out.insert(name.clone(), value.clone());
        }
    }
    let body = serde_json::to_vec(&Value::Object(out)).ok()?;
    Some(Delta {
        body: Bytes::from(body),
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(filter: Option<&str>, delta: bool, oof: bool, no_empties: bool) -> Spec {
        Spec {
            topic: TopicPattern::parse("orders").unwrap(),
            filter: filter.map(|f| Filter::parse(f).unwrap()),
            delta,
            oof,
            no_empties,
            timestamp: false,
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn topics_are_literal_unless_they_hold_regex_characters() {
        let lit = TopicPattern::parse("orders.eu").unwrap();
        assert!(matches!(lit, TopicPattern::Exact(_)));
        assert!(lit.matches("orders.eu"));
        assert!(!lit.matches("ordersXeu"));
        let re = TopicPattern::parse(r"^orders\..*").unwrap();
        assert!(matches!(re, TopicPattern::Regex(_)));
        assert!(re.matches("orders.eu") && re.matches("orders.us.east"));
        assert!(!re.matches("orders") && !re.matches("xorders.eu"));
        // Unanchored: matches anywhere.
        assert!(TopicPattern::parse("ord(er)?s")
            .unwrap()
            .matches("my-orders"));
        assert_eq!(re.as_str(), r"^orders\..*");
        assert_eq!(TopicPattern::parse("").unwrap_err(), Reason::NoTopic);
        assert_eq!(
            TopicPattern::parse("a b").unwrap_err(),
            Reason::InvalidTopic
        );
        assert_eq!(
            TopicPattern::parse("^orders(").unwrap_err(),
            Reason::BadRegexTopic
        );
        // A pattern too big to compile within the limit is refused, not built.
        assert_eq!(
            TopicPattern::parse("^(a{1000}){1000}$").unwrap_err(),
            Reason::BadRegexTopic
        );
    }

    #[test]
    fn full_delivery_when_the_filter_matches() {
        let s = spec(Some("/qty > 5"), false, false, false);
        let new = b(r#"{"id":1,"qty":9}"#);
        assert_eq!(
            decide(&s, &mut WriteView::new(&new, None, &[])),
            Outcome::Full
        );
        let low = b(r#"{"id":1,"qty":1}"#);
        assert_eq!(
            decide(&s, &mut WriteView::new(&low, None, &[])),
            Outcome::Nothing
        );
        let none = spec(None, false, false, false);
        assert_eq!(
            decide(&none, &mut WriteView::new(&b("not json"), None, &[])),
            Outcome::Full
        );
    }

    #[test]
    fn oof_match_when_an_update_leaves_the_filter() {
        let s = spec(Some("/qty > 5"), false, true, false);
        let prev = b(r#"{"id":1,"qty":9}"#);
        let new = b(r#"{"id":1,"qty":1}"#);
        assert_eq!(
            decide(&s, &mut WriteView::new(&new, Some(&prev), &[])),
            Outcome::OofMatch
        );
        // Never matched: nothing to take out of focus.
        let prev_low = b(r#"{"id":1,"qty":2}"#);
        assert_eq!(
            decide(&s, &mut WriteView::new(&new, Some(&prev_low), &[])),
            Outcome::Nothing
        );
        // Without the option, nothing.
        let no_oof = spec(Some("/qty > 5"), false, false, false);
        assert_eq!(
            decide(&no_oof, &mut WriteView::new(&new, Some(&prev), &[])),
            Outcome::Nothing
        );
        // Coming into focus is an ordinary delivery.
        assert_eq!(
            decide(&s, &mut WriteView::new(&prev, Some(&new), &[])),
            Outcome::Full
        );
    }

    #[test]
    fn deltas_carry_the_key_and_changed_fields() {
        let keys = vec!["id".to_owned()];
        let prev = b(r#"{"id":1,"qty":5,"px":10,"s":"a"}"#);
        let new = b(r#"{"id":1,"qty":6,"px":10,"s":"a","new":true}"#);
        let s = spec(None, true, false, false);
        let mut view = WriteView::new(&new, Some(&prev), &keys);
        assert_eq!(decide(&s, &mut view), Outcome::Delta);
        assert_eq!(
            view.delta().unwrap().body.as_ref(),
            br#"{"id":1,"new":true,"qty":6}"#
        );
        // Nothing changed: an empty delta (key only) unless no_empties.
        let mut same = WriteView::new(&prev, Some(&prev), &keys);
        assert_eq!(decide(&s, &mut same), Outcome::Delta);
        assert_eq!(same.delta().unwrap().body.as_ref(), br#"{"id":1}"#);
        assert!(!same.delta().unwrap().changed);
        let s_ne = spec(None, true, false, true);
        assert_eq!(
            decide(&s_ne, &mut WriteView::new(&prev, Some(&prev), &keys)),
            Outcome::Nothing
        );
        // A new record goes in full even to a delta subscription, and so does a record that
        // is not JSON.
        assert_eq!(
            decide(&s, &mut WriteView::new(&new, None, &keys)),
            Outcome::Full
        );
        let raw = b("raw");
        assert_eq!(
            decide(&s, &mut WriteView::new(&raw, Some(&prev), &keys)),
            Outcome::Full
        );
    }

    #[test]
    fn oof_on_delete_needs_the_option_and_a_match() {
        let removed: Value = serde_json::from_str(r#"{"id":1,"qty":9}"#).unwrap();
        assert!(oof_on_delete(
            &spec(Some("/qty > 5"), false, true, false),
            &removed
        ));
        assert!(oof_on_delete(&spec(None, false, true, false), &removed));
        assert!(!oof_on_delete(
            &spec(Some("/qty < 5"), false, true, false),
            &removed
        ));
        assert!(!oof_on_delete(&spec(None, false, false, false), &removed));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)))]

        /// Applying a delta to the previous record gives the new record's fields back, and a
        /// delta never holds a field that did not change (key fields aside).
        #[test]
        fn deltas_reconstruct_the_update(
            prev in proptest::collection::btree_map("[a-d]", 0i64..3, 0..5),
            new in proptest::collection::btree_map("[a-d]", 0i64..3, 0..5),
        ) {
            let mut prev_obj: Map<String, Value> = prev.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
            let new_obj: Map<String, Value> = new.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
            prev_obj.insert("id".into(), Value::from(1));
            let mut new_full = new_obj.clone();
            new_full.insert("id".into(), Value::from(1));
            let keys = vec!["id".to_owned()];
            let pb = serde_json::to_vec(&prev_obj).unwrap();
            let nb = serde_json::to_vec(&new_full).unwrap();
            let delta = delta_body(&keys, &pb, &nb).unwrap();
            if !delta.changed {
                for (k, v) in &new_full {
                    prop_assert_eq!(prev_obj.get(k), Some(v));
                }
            }
            let Value::Object(d) = serde_json::from_slice::<Value>(&delta.body).unwrap() else {
                unreachable!("a delta is an object")
            };
            prop_assert_eq!(d.get("id"), Some(&Value::from(1)));
            for (k, v) in &d {
                if k != "id" {
                    prop_assert_ne!(prev_obj.get(k), Some(v));
                }
            }
            let mut merged = prev_obj.clone();
            merged.extend(d);
            for (k, v) in &new_full {
                prop_assert_eq!(merged.get(k), Some(v));
            }
        }
    }
}
