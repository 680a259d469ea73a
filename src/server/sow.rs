//! The State-of-the-World store of the embedded server: the latest record per key, per topic.
//!
//! # Model
//!
//! The server is configured with a list of [`SowTopicConfig`]s, each a topic regular expression
//! and the record's key fields. A topic is a *SOW topic* when one of those regexes matches it;
//! the first matching config (in declaration order) decides its key fields. The regex is used
//! as given ([`Regex::is_match`]), so a config meant for one exact topic should be anchored
//! (`^orders$`). Every concrete topic has its own record map: a config `^orders\..*` keeps
//! `orders.eu` and `orders.us` apart.
//!
//! A record's key follows the project rule of PROTOCOL.md section 5: the `k` header of the
//! publish when it has one, otherwise the values of the topic's key fields in the JSON body, in
//! declaration order, joined with `|` (strings without quotes, numbers in their JSON form,
//! booleans as `true`/`false`). A key field that is missing, `null`, an array or an object, a
//! body that is not a JSON object, an empty `k`, or a topic declared without key fields and
//! published without `k`, is [`Reason::BadSowKey`]. Keys are not escaped, so `|` in a value and
//! `,` in a key (which `sow_keys` cannot name) are the caller's concern.
//!
//! - [`Sow::publish`] replaces the record under its key with the body bytes, untouched.
//! - [`Sow::delta_publish`] merges the body's top-level fields into the stored record (a
//!   field in the delta replaces the stored field whole, nested objects included) or inserts
//!   the delta when there is no record; the result is stored re-serialized as compact JSON (with
//!   serde_json's key order, sorted unless its `preserve_order` feature is on).
//! - `sow_delete` has three selectors: [`Sow::delete_by_filter`] (a [`Filter`] evaluated on each
//!   parsed record; a record that is not JSON is evaluated as `null`, so only literal-only
//!   comparisons like `1=1` can match it), [`Sow::delete_by_keys`] (a comma list of keys) and
//!   [`Sow::delete_by_data`] (the key the body would have if published without `k`). Each
//!   returns [`DeleteStats`]. A sow_delete on a topic that is not a SOW topic is
//!   [`Reason::InvalidTopic`].
//!
//! Publishing to a topic that is not a SOW topic is a no-op. Which config a topic uses is cached
//! per topic (bounded: the cache is cleared when it reaches [`TOPIC_CACHE_LIMIT`] entries), so a
//! stream of publishes to one topic runs the regexes once and then costs a hash lookup.
//!
//! Every operation is deterministic: the same configs and the same sequence of operations
//! always give the same records, so the server can rebuild the store by replaying its
//! transaction log. Records of a topic are kept in key order ([`Sow::records`]).
//!
//! # Memory bound
//!
//! [`Sow::bytes`] counts what the records hold: per record its key and body plus
//! [`RECORD_OVERHEAD`] bytes (map node, handles), per topic its name plus [`TOPIC_OVERHEAD`].
//! With a limit ([`Sow::set_limit`]; the server's `--max-sow-bytes`), a publish or delta that
//! would grow the count past it fails with [`SOW_FULL`] and changes nothing; writes that
//! replace a record with one no larger, and deletes, always work. Replaying the log at start
//! applies everything (it was accepted once) whatever the limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use regex::Regex;
use serde_json::{Map, Value};

use super::filter::Filter;
use crate::protocol::Reason;

/// How many topics the topic → config cache holds before it is cleared (so publishes to many
/// distinct topics cannot grow it without bound).
pub const TOPIC_CACHE_LIMIT: usize = 65_536;

/// The start of the reason a publish fails with when the SOW is at its memory limit.
pub const SOW_FULL: &str = "sow store full";

/// Bytes counted per record on top of its key and body.
pub const RECORD_OVERHEAD: usize = 64;

/// Bytes counted per topic on top of its name.
pub const TOPIC_OVERHEAD: usize = 96;

/// The reason a `delta_publish` fails with when its body (or the record it would merge into)
/// is not a JSON object.
pub const INVALID_DELTA: &str = "invalid delta";

/// One SOW topic declaration.
#[derive(Debug, Clone)]
pub struct SowTopicConfig {
    /// The topics this declaration covers (matched with [`Regex::is_match`]; anchor it for an
    /// exact topic).
    pub topic: Regex,
    /// The key fields, as paths into the JSON body: `"/id"`, `"/a/b"`. A leading `/` is
    /// optional; segments are separated by `/` and taken literally.
    pub key_fields: Vec<String>,
}

/// The counters of one sow_delete, as reported in the `stats` ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteStats {
    /// Records the selector matched.
    pub matches: u64,
    /// Records removed (equal to `matches`).
    pub records_deleted: u64,
    /// Records in the topic before the delete.
    pub topic_matches: u64,
}

/// What the server knows about the write that stored a record, for SOW query results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// The correlation id (`x`) of the write, when it had one.
    pub correlation_id: Option<Box<str>>,
    /// When it was written, in microseconds since the Unix epoch (0 when unknown).
    pub ts: u64,
}

/// What a publish or delta_publish did to a SOW topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The record's key.
    pub key: String,
    /// The record before the write, if there was one.
    pub prev: Option<Bytes>,
    /// The record after it (for a delta, the merged record).
    pub now: Bytes,
    /// The top-level names of the topic's key fields (`/venue/code` gives `venue`).
    pub key_fields: Arc<[String]>,
}

/// A record removed by a sow_delete: its key and its last body.
pub type Removed = (String, Bytes);

/// A stored record.
#[derive(Debug, Clone)]
struct Stored {
    body: Bytes,
    meta: RecordMeta,
}

/// A declaration with its key paths split into segments.
#[derive(Debug)]
struct Declared {
    topic: Regex,
    key_paths: Vec<Vec<String>>,
    /// The first segment of each key path, without repeats.
    top_fields: Arc<[String]>,
}

/// The State-of-the-World store: per SOW topic, the latest record per key (module docs).
#[derive(Debug)]
pub struct Sow {
    declared: Vec<Declared>,
    /// topic → index into `declared`, or `None` for a topic that is not a SOW topic.
    lookup: HashMap<String, Option<usize>>,
    /// topic → key → record. Topics without records are absent.
    topics: HashMap<String, BTreeMap<String, Stored>>,
    /// What the records hold (module docs).
    bytes: usize,
    /// Growth past this fails.
    limit: Option<usize>,
}

impl Sow {
    /// An empty store for these declarations (earlier ones win when several match a topic).
    pub fn new(configs: Vec<SowTopicConfig>) -> Sow {
        let declared = configs
            .into_iter()
            .map(|c| {
                let key_paths: Vec<Vec<String>> =
                    c.key_fields.iter().map(|f| split_path(f)).collect();
                let mut top: Vec<String> = Vec::new();
                for first in key_paths.iter().filter_map(|p| p.first()) {
                    if !first.is_empty() && !top.contains(first) {
                        top.push(first.clone());
                    }
                }
                Declared {
                    topic: c.topic,
                    key_paths,
                    top_fields: top.into(),
                }
            })
            .collect();
        Sow {
            declared,
            lookup: HashMap::new(),
            topics: HashMap::new(),
            bytes: 0,
            limit: None,
        }
    }

    #[cfg(test)] // used by the unit tests only
    /// Bytes the records hold, as counted for the limit (module docs).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Sets (or with `None` lifts) the memory limit; what is stored already stays.
    pub fn set_limit(&mut self, limit: Option<usize>) {
        self.limit = limit;
    }

    /// Every record of every topic as `(topic, key, body)` (topics in no particular order,
    /// keys in order).
    pub fn all_records(&self) -> impl Iterator<Item = (&str, &str, &Bytes)> + '_ {
        self.topics.iter().flat_map(|(t, records)| {
            records
                .iter()
                .map(move |(k, r)| (t.as_str(), k.as_str(), &r.body))
        })
    }

    /// Stores a record as it was (a snapshot being loaded): no key derivation, no limit.
    pub fn restore(&mut self, topic: &str, key: String, body: Bytes) {
        self.insert(topic, key, body, RecordMeta::default());
    }

    /// Fails with [`SOW_FULL`] if storing `new_len` bytes under `key` would grow the store
    /// past its limit.
    fn check_room(&self, topic: &str, key: &str, new_len: usize) -> Result<(), Reason> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let grows_by = match self.topics.get(topic) {
            None => topic.len() + TOPIC_OVERHEAD + key.len() + RECORD_OVERHEAD + new_len,
            Some(records) => match records.get(key) {
                Some(old) => new_len.saturating_sub(old.body.len()),
                None => key.len() + RECORD_OVERHEAD + new_len,
            },
        };
        if grows_by > 0 && self.bytes + grows_by > limit {
            return Err(Reason::Other(format!(
                "{SOW_FULL}: the SOW holds {} of its {limit} bytes (--max-sow-bytes); delete records or raise the limit",
                self.bytes
            )));
        }
        Ok(())
    }

    /// Whether `topic` is a SOW topic (some declaration's regex matches it).
    pub fn is_sow_topic(&self, topic: &str) -> bool {
        self.config_of(topic).is_some()
    }

    /// The key a publish to `topic` would store its record under: `explicit` (the `k` header)
    /// if given, else the declared key fields' values from the JSON body in declaration order
    /// joined with `|`. `Ok(None)` if `topic` is not a SOW topic; [`Reason::BadSowKey`] if the
    /// key cannot be derived (module docs).
    pub fn key_for(
        &self,
        topic: &str,
        explicit: Option<&str>,
        body: &[u8],
    ) -> Result<Option<String>, Reason> {
        match self.config_of(topic) {
            None => Ok(None),
            Some(idx) => self.key_from_body(idx, explicit, body).map(Some),
        }
    }

    #[cfg(test)] // used by the unit tests only
    /// Stores `body` as the record of its key (replacing any previous one). A no-op for a topic
    /// that is not a SOW topic; [`Reason::BadSowKey`] if the key cannot be derived, in which
    /// case nothing changes.
    pub fn publish(
        &mut self,
        topic: &str,
        explicit_key: Option<&str>,
        body: Bytes,
    ) -> Result<(), Reason> {
        self.publish_tracked(topic, explicit_key, body, RecordMeta::default())
            .map(drop)
    }

    /// [`Sow::publish`] that keeps `meta` with the record and reports the [`Change`]
    /// (`Ok(None)` for a topic that is not a SOW topic).
    pub fn publish_tracked(
        &mut self,
        topic: &str,
        explicit_key: Option<&str>,
        body: Bytes,
        meta: RecordMeta,
    ) -> Result<Option<Change>, Reason> {
        let Some(idx) = self.config_cached(topic) else {
            return Ok(None);
        };
        let key = self.key_from_body(idx, explicit_key, &body)?;
        self.check_room(topic, &key, body.len())?;
        let prev = self.insert(topic, key.clone(), body.clone(), meta);
        Ok(Some(Change {
            key,
            prev,
            now: body,
            key_fields: self.declared[idx].top_fields.clone(),
        }))
    }

    #[cfg(test)] // used by the unit tests only
    /// Merges the body's top-level JSON fields into the record of its key, or inserts the body
    /// when there is none; the result is stored as compact JSON. A no-op for a topic that is
    /// not a SOW topic. Fails, changing nothing, with [`Reason::Other`]`("invalid delta")`
    /// ([`INVALID_DELTA`]) when the body or the stored record is not a JSON object, and with
    /// [`Reason::BadSowKey`] when the key cannot be derived.
    pub fn delta_publish(
        &mut self,
        topic: &str,
        explicit_key: Option<&str>,
        body: &[u8],
    ) -> Result<(), Reason> {
        self.delta_publish_tracked(topic, explicit_key, body, RecordMeta::default())
            .map(drop)
    }

    /// [`Sow::delta_publish`] that keeps `meta` with the merged record and reports the
    /// [`Change`] (`Ok(None)` for a topic that is not a SOW topic).
    pub fn delta_publish_tracked(
        &mut self,
        topic: &str,
        explicit_key: Option<&str>,
        body: &[u8],
        meta: RecordMeta,
    ) -> Result<Option<Change>, Reason> {
        let Some(idx) = self.config_cached(topic) else {
            return Ok(None);
        };
        let Ok(Value::Object(delta)) = serde_json::from_slice::<Value>(body) else {
            return Err(invalid_delta());
        };
        let key = match explicit_key {
            Some(k) => explicit(k)?,
            None => self.derive_key(idx, &delta)?,
        };
        let merged = match self.record(topic, &key) {
            None => delta,
            Some(existing) => {
                let Ok(Value::Object(mut stored)) = serde_json::from_slice::<Value>(existing)
                else {
                    return Err(invalid_delta());
                };
                stored.extend(delta);
                stored
            }
        };
        let bytes = Bytes::from(
            serde_json::to_vec(&Value::Object(merged)).map_err(|_| Reason::SowStoreFailed)?,
        );
        self.check_room(topic, &key, bytes.len())?;
        let prev = self.insert(topic, key.clone(), bytes.clone(), meta);
        Ok(Some(Change {
            key,
            prev,
            now: bytes,
            key_fields: self.declared[idx].top_fields.clone(),
        }))
    }

    /// Deletes the records of `topic` that match `filter`. [`Reason::InvalidTopic`] if `topic`
    /// is not a SOW topic, [`Reason::BadFilter`] if the filter does not parse.
    pub fn delete_by_filter(&mut self, topic: &str, filter: &str) -> Result<DeleteStats, Reason> {
        self.delete_by_filter_tracked(topic, filter).map(|(s, _)| s)
    }

    /// [`Sow::delete_by_filter`] that also returns the removed records, in key order.
    pub fn delete_by_filter_tracked(
        &mut self,
        topic: &str,
        filter: &str,
    ) -> Result<(DeleteStats, Vec<Removed>), Reason> {
        if self.config_cached(topic).is_none() {
            return Err(Reason::InvalidTopic);
        }
        let filter = Filter::parse(filter)?;
        Ok(self.delete_where(topic, |records| {
            let doomed: Vec<String> = records
                .iter()
                .filter(|(_, r)| {
                    let record = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
                    filter.matches(&record)
                })
                .map(|(k, _)| k.clone())
                .collect();
            doomed
                .into_iter()
                .filter_map(|k| records.remove(&k).map(|r| (k, r.body)))
                .collect()
        }))
    }

    /// Deletes the records whose keys are in `sow_keys`, a comma list (empty entries are
    /// ignored; a key listed twice counts once). [`Reason::InvalidTopic`] if `topic` is not a
    /// SOW topic.
    pub fn delete_by_keys(&mut self, topic: &str, sow_keys: &str) -> Result<DeleteStats, Reason> {
        self.delete_by_keys_tracked(topic, sow_keys).map(|(s, _)| s)
    }

    /// [`Sow::delete_by_keys`] that also returns the removed records, in list order.
    pub fn delete_by_keys_tracked(
        &mut self,
        topic: &str,
        sow_keys: &str,
    ) -> Result<(DeleteStats, Vec<Removed>), Reason> {
        if self.config_cached(topic).is_none() {
            return Err(Reason::InvalidTopic);
        }
        Ok(self.delete_where(topic, |records| {
            sow_keys
                .split(',')
                .filter(|k| !k.is_empty())
                .filter_map(|k| records.remove(k).map(|r| (k.to_owned(), r.body)))
                .collect()
        }))
    }

    /// Deletes the record `body` would update if published without `k` (its key derived from
    /// the declared key fields). [`Reason::InvalidTopic`] if `topic` is not a SOW topic,
    /// [`Reason::BadSowKey`] if the key cannot be derived.
    pub fn delete_by_data(&mut self, topic: &str, body: &[u8]) -> Result<DeleteStats, Reason> {
        self.delete_by_data_tracked(topic, body).map(|(s, _)| s)
    }

    /// [`Sow::delete_by_data`] that also returns the removed record.
    pub fn delete_by_data_tracked(
        &mut self,
        topic: &str,
        body: &[u8],
    ) -> Result<(DeleteStats, Vec<Removed>), Reason> {
        let Some(idx) = self.config_cached(topic) else {
            return Err(Reason::InvalidTopic);
        };
        let key = self.key_from_body(idx, None, body)?;
        Ok(self.delete_where(topic, |records| {
            records
                .remove(&key)
                .map(|r| (key.clone(), r.body))
                .into_iter()
                .collect()
        }))
    }

    /// The stored body of a record (after any delta merges).
    pub fn record(&self, topic: &str, key: &str) -> Option<&Bytes> {
        self.topics.get(topic)?.get(key).map(|r| &r.body)
    }

    /// The topics that hold records (in no particular order).
    pub fn topic_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.topics.keys().map(String::as_str)
    }

    /// The records of `topic` as `(key, body, meta)`, in key order.
    pub fn records_with_meta(
        &self,
        topic: &str,
    ) -> impl Iterator<Item = (&str, &Bytes, &RecordMeta)> + '_ {
        self.topics
            .get(topic)
            .into_iter()
            .flat_map(|records| records.iter().map(|(k, r)| (k.as_str(), &r.body, &r.meta)))
    }

    #[cfg(test)] // used by the unit tests only
    /// How many records `topic` holds (0 for a topic that is not a SOW topic).
    pub fn topic_len(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(0, BTreeMap::len)
    }

    #[cfg(test)] // used by the unit tests only
    /// The records of `topic` as `(key, body)`, in key order (empty for a topic that is not a
    /// SOW topic).
    pub fn records(&self, topic: &str) -> impl Iterator<Item = (&str, &Bytes)> + '_ {
        self.topics
            .get(topic)
            .into_iter()
            .flat_map(|records| records.iter().map(|(k, r)| (k.as_str(), &r.body)))
    }

    // -- internals ---------------------------------------------------------------------------

    /// The declaration of `topic`, from the cache when it is there.
    fn config_of(&self, topic: &str) -> Option<usize> {
        match self.lookup.get(topic) {
            Some(cached) => *cached,
            None => self.declared.iter().position(|d| d.topic.is_match(topic)),
        }
    }

    /// The declaration of `topic`, caching the answer.
    fn config_cached(&mut self, topic: &str) -> Option<usize> {
        if let Some(cached) = self.lookup.get(topic) {
            return *cached;
        }
        let found = self.declared.iter().position(|d| d.topic.is_match(topic));
        if self.lookup.len() >= TOPIC_CACHE_LIMIT {
            self.lookup.clear();
        }
        self.lookup.insert(topic.to_owned(), found);
        found
    }

    fn key_from_body(
        &self,
        idx: usize,
        explicit_key: Option<&str>,
        body: &[u8],
    ) -> Result<String, Reason> {
        if let Some(k) = explicit_key {
            return explicit(k);
        }
        if self
            .declared
            .get(idx)
            .is_none_or(|d| d.key_paths.is_empty())
        {
            return Err(Reason::BadSowKey);
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => self.derive_key(idx, &fields),
            _ => Err(Reason::BadSowKey),
        }
    }

    /// The key from the declared key fields of a JSON object.
    fn derive_key(&self, idx: usize, fields: &Map<String, Value>) -> Result<String, Reason> {
        let paths = match self.declared.get(idx) {
            Some(d) if !d.key_paths.is_empty() => &d.key_paths,
            _ => return Err(Reason::BadSowKey),
        };
        let mut key = String::new();
        for (i, path) in paths.iter().enumerate() {
            if i > 0 {
                key.push('|');
            }
            match resolve(fields, path) {
                Some(Value::String(s)) => key.push_str(s),
                Some(Value::Number(n)) => key.push_str(&n.to_string()),
                Some(Value::Bool(b)) => key.push_str(if *b { "true" } else { "false" }),
                _ => return Err(Reason::BadSowKey),
            }
        }
        Ok(key)
    }

    /// Stores a record; returns the body it replaced.
    fn insert(&mut self, topic: &str, key: String, body: Bytes, meta: RecordMeta) -> Option<Bytes> {
        let (key_len, new_len) = (key.len(), body.len());
        let record = Stored { body, meta };
        match self.topics.get_mut(topic) {
            Some(records) => match records.insert(key, record) {
                Some(old) => {
                    self.bytes = self.bytes - old.body.len() + new_len;
                    Some(old.body)
                }
                None => {
                    self.bytes += key_len + RECORD_OVERHEAD + new_len;
                    None
                }
            },
            None => {
                self.topics
                    .insert(topic.to_owned(), BTreeMap::from([(key, record)]));
                self.bytes += topic.len() + TOPIC_OVERHEAD + key_len + RECORD_OVERHEAD + new_len;
                None
            }
        }
    }

    /// Runs `delete` (which returns the records it removed) on the records of `topic` and
    /// builds the stats; drops the topic's map when it becomes empty.
    fn delete_where(
        &mut self,
        topic: &str,
        delete: impl FnOnce(&mut BTreeMap<String, Stored>) -> Vec<Removed>,
    ) -> (DeleteStats, Vec<Removed>) {
        let Some(records) = self.topics.get_mut(topic) else {
            return (DeleteStats::default(), Vec::new());
        };
        let before = records.len() as u64;
        let removed = delete(records);
        let freed: usize = removed
            .iter()
            .map(|(k, b)| k.len() + b.len() + RECORD_OVERHEAD)
            .sum();
        self.bytes = self.bytes.saturating_sub(freed);
        if records.is_empty() {
            self.topics.remove(topic);
            self.bytes = self.bytes.saturating_sub(topic.len() + TOPIC_OVERHEAD);
        }
        let n = removed.len() as u64;
        (
            DeleteStats {
                matches: n,
                records_deleted: n,
                topic_matches: before,
            },
            removed,
        )
    }
}

fn invalid_delta() -> Reason {
    Reason::Other(INVALID_DELTA.to_owned())
}

/// An explicit (`k` header) key; empty is refused.
fn explicit(k: &str) -> Result<String, Reason> {
    if k.is_empty() {
        Err(Reason::BadSowKey)
    } else {
        Ok(k.to_owned())
    }
}

/// `"/a/b"` (or `"a/b"`) → `["a", "b"]`.
fn split_path(path: &str) -> Vec<String> {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split('/').map(str::to_owned).collect()
}

fn resolve<'a>(fields: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = fields.get(first)?;
    for segment in rest {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(topic: &str, keys: &[&str]) -> SowTopicConfig {
        SowTopicConfig {
            topic: Regex::new(topic).unwrap(),
            key_fields: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    /// `orders` keyed by `/id`, `trades.*` keyed by `/sym` and `/venue/code`, `nokeys` without
    /// key fields.
    fn sow() -> Sow {
        Sow::new(vec![
            config("^orders$", &["/id"]),
            config(r"^trades\.", &["/sym", "/venue/code"]),
            config("^nokeys$", &[]),
            config("^orders", &["/other"]),
        ])
    }

    fn json(record: Option<&Bytes>) -> Value {
        serde_json::from_slice(record.expect("record present")).unwrap()
    }

    fn publish(s: &mut Sow, topic: &str, body: &str) {
        s.publish(topic, None, Bytes::copy_from_slice(body.as_bytes()))
            .unwrap();
    }

    fn ten_orders() -> Sow {
        let mut s = sow();
        for id in 1..=10 {
            publish(
                &mut s,
                "orders",
                &format!(r#"{{"id":{id},"qty":{}}}"#, id * 10),
            );
        }
        s
    }

    #[test]
    fn sow_topics_are_found_by_the_first_matching_regex() {
        let s = sow();
        assert!(s.is_sow_topic("orders"));
        assert!(s.is_sow_topic("orders.eu")); // the fourth config
        assert!(s.is_sow_topic("trades.eu"));
        assert!(s.is_sow_topic("nokeys"));
        assert!(!s.is_sow_topic("quotes"));
        assert!(!s.is_sow_topic("trades"));
        assert!(!s.is_sow_topic(""));
        // `orders` uses the first config (key /id), not the fourth (key /other).
        assert_eq!(
            s.key_for("orders", None, br#"{"id":1,"other":2}"#),
            Ok(Some("1".into()))
        );
        assert_eq!(
            s.key_for("orders.eu", None, br#"{"id":1,"other":2}"#),
            Ok(Some("2".into()))
        );
    }

    #[test]
    fn key_for_uses_the_explicit_key_first() {
        let s = sow();
        assert_eq!(
            s.key_for("orders", Some("key-1"), br#"{"id":7}"#),
            Ok(Some("key-1".into()))
        );
        // The body need not be JSON, nor carry the key fields, when `k` is given.
        assert_eq!(
            s.key_for("orders", Some("k"), b"not json"),
            Ok(Some("k".into()))
        );
        assert_eq!(s.key_for("nokeys", Some("k"), b"{}"), Ok(Some("k".into())));
        assert_eq!(
            s.key_for("orders", Some(""), br#"{"id":7}"#),
            Err(Reason::BadSowKey)
        );
    }

    #[test]
    fn key_for_derives_from_key_fields() {
        let s = sow();
        assert_eq!(
            s.key_for("orders", None, br#"{"id":7}"#),
            Ok(Some("7".into()))
        );
        assert_eq!(
            s.key_for("orders", None, br#"{"qty":1,"id":"A-1"}"#),
            Ok(Some("A-1".into()))
        );
        assert_eq!(
            s.key_for("orders", None, br#"{"id":-1.5}"#),
            Ok(Some("-1.5".into()))
        );
        assert_eq!(
            s.key_for("orders", None, br#"{"id":true}"#),
            Ok(Some("true".into()))
        );
        assert_eq!(
            s.key_for("orders", None, br#"{"id":18446744073709551615}"#),
            Ok(Some("18446744073709551615".into()))
        );
        assert_eq!(
            s.key_for("orders", None, br#"{"id":""}"#),
            Ok(Some("".into()))
        );
        // Multiple fields in declaration order, whatever the body's order; nested paths.
        assert_eq!(
            s.key_for("trades.eu", None, br#"{"venue":{"code":"X"},"sym":"IBM"}"#),
            Ok(Some("IBM|X".into()))
        );
        assert_eq!(
            s.key_for("trades.eu", None, br#"{"sym":"IBM","venue":{"code":3}}"#),
            Ok(Some("IBM|3".into()))
        );
    }

    #[test]
    fn key_for_refuses_bodies_without_a_key() {
        let s = sow();
        for body in [
            &br#"{"qty":1}"#[..],
            br#"{"id":null}"#,
            br#"{"id":[1]}"#,
            br#"{"id":{"a":1}}"#,
            b"not json",
            b"",
            b"[1,2]",
            b"7",
            br#"{"id":1"#,
        ] {
            assert_eq!(
                s.key_for("orders", None, body),
                Err(Reason::BadSowKey),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // One of several key fields missing, or a nested one not an object on the way.
        assert_eq!(
            s.key_for("trades.eu", None, br#"{"sym":"IBM"}"#),
            Err(Reason::BadSowKey)
        );
        assert_eq!(
            s.key_for("trades.eu", None, br#"{"sym":"IBM","venue":"X"}"#),
            Err(Reason::BadSowKey)
        );
        // No key fields declared and no `k`.
        assert_eq!(
            s.key_for("nokeys", None, br#"{"id":1}"#),
            Err(Reason::BadSowKey)
        );
    }

    #[test]
    fn key_for_is_none_for_other_topics() {
        let s = sow();
        assert_eq!(s.key_for("quotes", None, b"not json"), Ok(None));
        assert_eq!(s.key_for("quotes", Some("k"), b"{}"), Ok(None));
    }

    #[test]
    fn key_field_paths_without_a_leading_slash() {
        let s = Sow::new(vec![config("^t$", &["a/b", "c"])]);
        assert_eq!(
            s.key_for("t", None, br#"{"a":{"b":1},"c":"x"}"#),
            Ok(Some("1|x".into()))
        );
    }

    #[test]
    fn publish_stores_and_replaces_raw_bodies() {
        let mut s = sow();
        publish(&mut s, "orders", r#"{"id":1, "qty":5}"#);
        publish(&mut s, "orders", r#"{"id":2,"qty":6}"#);
        assert_eq!(s.topic_len("orders"), 2);
        // Raw bytes, whitespace included.
        assert_eq!(
            s.record("orders", "1").unwrap().as_ref(),
            br#"{"id":1, "qty":5}"#
        );
        publish(&mut s, "orders", r#"{"id":1,"qty":9}"#);
        assert_eq!(s.topic_len("orders"), 2);
        assert_eq!(
            s.record("orders", "1").unwrap().as_ref(),
            br#"{"id":1,"qty":9}"#
        );
        // With `k`, any body.
        s.publish("orders", Some("raw"), Bytes::from_static(b"\x00binary"))
            .unwrap();
        assert_eq!(s.record("orders", "raw").unwrap().as_ref(), b"\x00binary");
        assert_eq!(s.topic_len("orders"), 3);
        assert_eq!(s.record("orders", "3"), None);
        assert_eq!(s.record("quotes", "1"), None);
    }

    #[test]
    fn publish_with_a_bad_key_changes_nothing() {
        let mut s = sow();
        publish(&mut s, "orders", r#"{"id":1}"#);
        assert_eq!(
            s.publish("orders", None, Bytes::from_static(br#"{"qty":1}"#)),
            Err(Reason::BadSowKey)
        );
        assert_eq!(
            s.publish("orders", None, Bytes::from_static(b"garbage")),
            Err(Reason::BadSowKey)
        );
        assert_eq!(s.topic_len("orders"), 1);
    }

    #[test]
    fn publish_to_other_topics_is_a_cached_no_op() {
        let mut s = sow();
        for _ in 0..3 {
            s.publish("quotes", None, Bytes::from_static(b"anything"))
                .unwrap();
        }
        assert_eq!(s.topic_len("quotes"), 0);
        assert_eq!(s.records("quotes").count(), 0);
        assert_eq!(s.lookup.get("quotes"), Some(&None));
        publish(&mut s, "orders", r#"{"id":1}"#);
        assert_eq!(s.lookup.get("orders"), Some(&Some(0)));
        assert_eq!(s.lookup.len(), 2);
        assert!(!s.topics.contains_key("quotes"));
        // Deltas too.
        s.delta_publish("quotes", None, b"not even json").unwrap();
        assert_eq!(s.topic_len("quotes"), 0);
    }

    #[test]
    fn the_topic_cache_is_bounded() {
        let mut s = sow();
        for i in 0..TOPIC_CACHE_LIMIT {
            s.publish(&format!("q{i}"), None, Bytes::new()).unwrap();
        }
        assert_eq!(s.lookup.len(), TOPIC_CACHE_LIMIT);
        publish(&mut s, "orders", r#"{"id":1}"#);
        assert_eq!(s.lookup.len(), 1);
        // Answers do not depend on the cache.
        assert!(s.is_sow_topic("orders"));
        assert!(!s.is_sow_topic("q0"));
        assert_eq!(s.topic_len("orders"), 1);
    }

    #[test]
    fn delta_publish_merges_top_level_fields() {
        let mut s = sow();
        publish(
            &mut s,
            "orders",
            r#"{"id":1, "qty":5, "px":{"bid":1,"ask":2}, "s":"a"}"#,
        );
        s.delta_publish(
            "orders",
            None,
            br#"{"id":1,"qty":6,"px":{"bid":3},"new":true}"#,
        )
        .unwrap();
        assert_eq!(
            json(s.record("orders", "1")),
            serde_json::json!({"id":1,"qty":6,"px":{"bid":3},"s":"a","new":true})
        );
        // Compact JSON, re-serialized.
        assert_eq!(
            s.record("orders", "1").unwrap().as_ref(),
            br#"{"id":1,"new":true,"px":{"bid":3},"qty":6,"s":"a"}"#
        );
        // A null in the delta is a value like any other.
        s.delta_publish("orders", None, br#"{"id":1,"s":null}"#)
            .unwrap();
        assert_eq!(json(s.record("orders", "1"))["s"], Value::Null);
        assert_eq!(s.topic_len("orders"), 1);
    }

    #[test]
    fn delta_publish_inserts_when_absent() {
        let mut s = sow();
        s.delta_publish("orders", None, br#"{ "id" : 4, "qty" : 1 }"#)
            .unwrap();
        assert_eq!(
            s.record("orders", "4").unwrap().as_ref(),
            br#"{"id":4,"qty":1}"#
        );
        // With an explicit key.
        s.delta_publish("orders", Some("k"), br#"{"qty":2}"#)
            .unwrap();
        s.delta_publish("orders", Some("k"), br#"{"px":3}"#)
            .unwrap();
        assert_eq!(
            s.record("orders", "k").unwrap().as_ref(),
            br#"{"px":3,"qty":2}"#
        );
        assert_eq!(s.topic_len("orders"), 2);
    }

    #[test]
    fn delta_publish_refuses_non_objects_and_bad_keys() {
        let mut s = sow();
        publish(&mut s, "orders", r#"{"id":1,"qty":5}"#);
        for body in [&b"[1]"[..], b"7", b"not json", b"", br#""s""#] {
            assert_eq!(
                s.delta_publish("orders", None, body),
                Err(Reason::Other(INVALID_DELTA.into()))
            );
            assert_eq!(
                s.delta_publish("orders", Some("1"), body),
                Err(Reason::Other(INVALID_DELTA.into()))
            );
        }
        assert_eq!(
            s.delta_publish("orders", None, br#"{"qty":1}"#),
            Err(Reason::BadSowKey)
        );
        assert_eq!(
            s.delta_publish("orders", Some(""), br#"{"qty":1}"#),
            Err(Reason::BadSowKey)
        );
        // A stored record that is not a JSON object cannot take a delta.
        s.publish("orders", Some("raw"), Bytes::from_static(b"raw bytes"))
            .unwrap();
        assert_eq!(
            s.delta_publish("orders", Some("raw"), br#"{"qty":1}"#),
            Err(Reason::Other(INVALID_DELTA.into()))
        );
        assert_eq!(s.record("orders", "raw").unwrap().as_ref(), b"raw bytes");
        assert_eq!(
            s.record("orders", "1").unwrap().as_ref(),
            br#"{"id":1,"qty":5}"#
        );
    }

    #[test]
    fn delete_by_filter_reports_exact_stats() {
        let mut s = ten_orders();
        let stats = s
            .delete_by_filter("orders", "/id = 1 OR /qty >= 100")
            .unwrap();
        assert_eq!(
            stats,
            DeleteStats {
                matches: 2,
                records_deleted: 2,
                topic_matches: 10
            }
        );
        assert_eq!(s.topic_len("orders"), 8);
        assert!(s.record("orders", "1").is_none());
        assert!(s.record("orders", "10").is_none());
        assert!(s.record("orders", "2").is_some());
        // Nothing matches.
        let stats = s.delete_by_filter("orders", "/id = 99").unwrap();
        assert_eq!(
            stats,
            DeleteStats {
                matches: 0,
                records_deleted: 0,
                topic_matches: 8
            }
        );
        // Everything.
        let stats = s.delete_by_filter("orders", "1=1").unwrap();
        assert_eq!(
            stats,
            DeleteStats {
                matches: 8,
                records_deleted: 8,
                topic_matches: 8
            }
        );
        assert_eq!(s.topic_len("orders"), 0);
        // An empty SOW topic.
        assert_eq!(
            s.delete_by_filter("orders", "1=1"),
            Ok(DeleteStats::default())
        );
        assert_eq!(
            s.delete_by_filter("trades.eu", "1=1"),
            Ok(DeleteStats::default())
        );
    }

    #[test]
    fn delete_by_filter_on_non_json_records() {
        let mut s = ten_orders();
        s.publish("orders", Some("raw"), Bytes::from_static(b"raw bytes"))
            .unwrap();
        // A path comparison never holds on a non-JSON record; its negation does.
        let stats = s.delete_by_filter("orders", "/id > 5").unwrap();
        assert_eq!((stats.matches, stats.topic_matches), (5, 11));
        assert!(s.record("orders", "raw").is_some());
        let stats = s.delete_by_filter("orders", "NOT /id > 5").unwrap();
        assert_eq!((stats.matches, stats.topic_matches), (6, 6));
        assert_eq!(s.topic_len("orders"), 0);
    }

    #[test]
    fn delete_by_filter_errors() {
        let mut s = ten_orders();
        assert_eq!(
            s.delete_by_filter("orders", "/id ="),
            Err(Reason::BadFilter)
        );
        assert_eq!(s.delete_by_filter("orders", ""), Err(Reason::BadFilter));
        assert_eq!(
            s.delete_by_filter("orders", "/id LIKE '1'"),
            Err(Reason::BadFilter)
        );
        assert_eq!(
            s.delete_by_filter("quotes", "1=1"),
            Err(Reason::InvalidTopic)
        );
        // The topic is checked first.
        assert_eq!(
            s.delete_by_filter("quotes", "bad"),
            Err(Reason::InvalidTopic)
        );
        assert_eq!(s.topic_len("orders"), 10);
    }

    #[test]
    fn delete_by_keys_reports_exact_stats() {
        let mut s = ten_orders();
        let stats = s.delete_by_keys("orders", "1,3,missing,1,,3").unwrap();
        assert_eq!(
            stats,
            DeleteStats {
                matches: 2,
                records_deleted: 2,
                topic_matches: 10
            }
        );
        assert_eq!(s.topic_len("orders"), 8);
        assert!(s.record("orders", "1").is_none());
        assert!(s.record("orders", "3").is_none());
        // Keys are exact: no trimming.
        let stats = s.delete_by_keys("orders", " 2").unwrap();
        assert_eq!((stats.matches, stats.topic_matches), (0, 8));
        let stats = s.delete_by_keys("orders", "").unwrap();
        assert_eq!((stats.matches, stats.topic_matches), (0, 8));
        let stats = s.delete_by_keys("orders", "10").unwrap();
        assert_eq!((stats.matches, stats.records_deleted), (1, 1));
        assert_eq!(s.delete_by_keys("quotes", "1"), Err(Reason::InvalidTopic));
        // Explicit keys are deletable by key.
        s.publish("orders", Some("key-1"), Bytes::from_static(b"x"))
            .unwrap();
        assert_eq!(s.delete_by_keys("orders", "key-1").unwrap().matches, 1);
    }

    #[test]
    fn delete_by_data_reports_exact_stats() {
        let mut s = ten_orders();
        let stats = s
            .delete_by_data("orders", br#"{"id":4,"qty":"ignored"}"#)
            .unwrap();
        assert_eq!(
            stats,
            DeleteStats {
                matches: 1,
                records_deleted: 1,
                topic_matches: 10
            }
        );
        assert!(s.record("orders", "4").is_none());
        let stats = s.delete_by_data("orders", br#"{"id":4}"#).unwrap();
        assert_eq!(
            stats,
            DeleteStats {
                matches: 0,
                records_deleted: 0,
                topic_matches: 9
            }
        );
        assert_eq!(
            s.delete_by_data("orders", br#"{"qty":1}"#),
            Err(Reason::BadSowKey)
        );
        assert_eq!(s.delete_by_data("orders", b"junk"), Err(Reason::BadSowKey));
        assert_eq!(
            s.delete_by_data("nokeys", br#"{"id":1}"#),
            Err(Reason::BadSowKey)
        );
        assert_eq!(
            s.delete_by_data("quotes", br#"{"id":1}"#),
            Err(Reason::InvalidTopic)
        );
        assert_eq!(s.topic_len("orders"), 9);
        // Multiple key fields.
        publish(
            &mut s,
            "trades.eu",
            r#"{"sym":"IBM","venue":{"code":"X"},"px":1}"#,
        );
        publish(
            &mut s,
            "trades.eu",
            r#"{"sym":"IBM","venue":{"code":"Y"},"px":2}"#,
        );
        let stats = s
            .delete_by_data("trades.eu", br#"{"venue":{"code":"Y"},"sym":"IBM"}"#)
            .unwrap();
        assert_eq!((stats.matches, stats.topic_matches), (1, 2));
        assert!(s.record("trades.eu", "IBM|X").is_some());
    }

    #[test]
    fn topics_sharing_a_config_are_kept_apart() {
        let mut s = sow();
        publish(&mut s, "trades.eu", r#"{"sym":"IBM","venue":{"code":"X"}}"#);
        publish(
            &mut s,
            "trades.us",
            r#"{"sym":"IBM","venue":{"code":"X"},"us":1}"#,
        );
        assert_eq!(s.topic_len("trades.eu"), 1);
        assert_eq!(s.topic_len("trades.us"), 1);
        assert_eq!(s.delete_by_keys("trades.eu", "IBM|X").unwrap().matches, 1);
        assert_eq!(s.topic_len("trades.eu"), 0);
        assert_eq!(json(s.record("trades.us", "IBM|X"))["us"], 1);
    }

    #[test]
    fn records_iterate_in_key_order() {
        let s = ten_orders();
        let keys: Vec<&str> = s.records("orders").map(|(k, _)| k).collect();
        assert_eq!(keys, ["1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]);
        let (_, first) = s.records("orders").next().unwrap();
        assert_eq!(first.as_ref(), br#"{"id":1,"qty":10}"#);
    }

    #[test]
    fn replaying_the_same_operations_rebuilds_the_same_store() {
        fn run(s: &mut Sow) -> Vec<Result<DeleteStats, Reason>> {
            let mut results = Vec::new();
            for i in 0..50 {
                let body = format!(r#"{{"id":{},"qty":{i}}}"#, i % 7);
                s.publish("orders", None, Bytes::from(body)).unwrap();
                if i % 5 == 0 {
                    let delta = format!(r#"{{"id":{},"seen":{i}}}"#, i % 3);
                    s.delta_publish("orders", None, delta.as_bytes()).unwrap();
                }
                if i % 11 == 0 {
                    results.push(s.delete_by_filter("orders", "/qty < 20 AND /id > 2"));
                    results.push(s.delete_by_keys("orders", "1,5"));
                    results.push(s.delete_by_data("orders", br#"{"id":0}"#));
                }
            }
            results
        }
        let (mut a, mut b) = (sow(), sow());
        assert_eq!(run(&mut a), run(&mut b));
        let dump = |s: &Sow| -> Vec<(String, Bytes)> {
            s.records("orders")
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .collect()
        };
        assert_eq!(dump(&a), dump(&b));
        assert!(!dump(&a).is_empty());
    }

    /// The byte count from scratch: what `bytes()` must always equal.
    fn recount(s: &Sow) -> usize {
        s.topics
            .iter()
            .map(|(t, r)| {
                t.len()
                    + TOPIC_OVERHEAD
                    + r.iter()
                        .map(|(k, v)| k.len() + v.body.len() + RECORD_OVERHEAD)
                        .sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn the_byte_count_follows_every_operation() {
        let mut s = ten_orders();
        assert_eq!(s.bytes(), recount(&s));
        publish(&mut s, "orders", r#"{"id":3,"qty":123456789}"#);
        s.delta_publish("orders", None, br#"{"id":4,"note":"longer than before"}"#)
            .unwrap();
        assert_eq!(s.bytes(), recount(&s));
        s.delete_by_keys("orders", "1,2,2,99").unwrap();
        s.delete_by_data("orders", br#"{"id":5}"#).unwrap();
        s.delete_by_filter("orders", "/id > 7").unwrap();
        assert_eq!(s.bytes(), recount(&s));
        s.delete_by_filter("orders", "1 = 1").unwrap();
        assert_eq!((s.bytes(), recount(&s)), (0, 0));
    }

    #[test]
    fn growth_past_the_limit_fails_and_changes_nothing() {
        let mut s = sow();
        publish(&mut s, "orders", r#"{"id":1,"v":"aaaa"}"#);
        s.set_limit(Some(s.bytes() + 10));
        // A new record does not fit...
        let err = s
            .publish("orders", None, Bytes::from_static(br#"{"id":2}"#))
            .unwrap_err();
        assert!(err.as_str().starts_with(SOW_FULL), "{err}");
        assert!(s.record("orders", "2").is_none());
        // ...a replacement no larger does, and so does one growing within the limit.
        publish(&mut s, "orders", r#"{"id":1,"v":"bbbb"}"#);
        publish(&mut s, "orders", r#"{"id":1,"v":"bbbbbbbbb"}"#);
        assert!(s
            .delta_publish("orders", None, br#"{"id":1,"w":"too much for the limit"}"#)
            .is_err());
        assert_eq!(s.bytes(), recount(&s));
        // Deletes always work and make room.
        s.delete_by_keys("orders", "1").unwrap();
        publish(&mut s, "orders", r#"{"id":2}"#);
    }
}
