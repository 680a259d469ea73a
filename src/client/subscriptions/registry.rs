//! Who gets an inbound frame: subscriptions by `sub_id`, queries by `query_id`, commands by
//! `cid`.
//!
//! A live delivery names its subscriptions in `sids`, a comma list: one frame serves every
//! subscription of the connection that it matches. [`Registry::route_sids`] resolves the list
//! to entries, each listed subscription **once** (a repeated id is not a second delivery), in
//! the order listed, and counts the ids it does not know (their frame goes to last chance).
//! SOW results carry only `query_id` ([`Registry::by_query_id`]); acks carry the `cid` of the
//! command they answer ([`Registry::by_cid`]). Nothing is routed by `sub_id` or `cid` on a
//! delivery, as in the official client (PROTOCOL.md section 12.2).
//!
//! Entries are kept in registration order ([`Key`]s increase), which is the order
//! subscriptions are re-sent after a reconnect.

use std::collections::{BTreeMap, HashMap};

/// An entry's registration number: increasing, never reused.
pub(crate) type Key = u64;

/// Where one entry of a `sids` list routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub key: Key,
    /// Offset and length of the id inside the `sids` value.
    pub start: usize,
    pub len: usize,
}

/// Entries of type `T`, by key, sub id, query id and command id.
#[derive(Debug)]
pub(crate) struct Registry<T> {
    entries: BTreeMap<Key, T>,
    next: Key,
    sub_ids: HashMap<Box<[u8]>, Key>,
    query_ids: HashMap<Box<[u8]>, Key>,
    cids: HashMap<Box<str>, Key>,
    /// Bumped on every change of the id maps (for callers caching routes).
    generation: u64,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            entries: BTreeMap::new(),
            next: 1,
            sub_ids: HashMap::new(),
            query_ids: HashMap::new(),
            cids: HashMap::new(),
            generation: 0,
        }
    }
}

impl<T> Registry<T> {
    /// Adds an entry; `Err` (with the entry back) when its sub id or query id is taken.
    pub fn insert(
        &mut self,
        sub_id: Option<&str>,
        query_id: Option<&str>,
        entry: T,
    ) -> Result<Key, T> {
        let taken = |m: &HashMap<Box<[u8]>, Key>, id: Option<&str>| {
            id.is_some_and(|id| m.contains_key(id.as_bytes()))
        };
        if taken(&self.sub_ids, sub_id) || taken(&self.query_ids, query_id) {
            return Err(entry);
        }
        let key = self.next;
        self.next += 1;
        if let Some(id) = sub_id {
            self.sub_ids.insert(id.as_bytes().into(), key);
        }
        if let Some(id) = query_id {
            self.query_ids.insert(id.as_bytes().into(), key);
        }
        self.entries.insert(key, entry);
        self.generation += 1;
        Ok(key)
    }

    /// Removes an entry and every id pointing at it.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let entry = self.entries.remove(&key)?;
        self.sub_ids.retain(|_, k| *k != key);
        self.query_ids.retain(|_, k| *k != key);
        self.cids.retain(|_, k| *k != key);
        self.generation += 1;
        Some(entry)
    }

    /// Stops routing anything to `key` (it is ending: its last events are still being
    /// delivered); the entry stays until [`Registry::remove`].
    pub fn unroute(&mut self, key: Key) {
        self.sub_ids.retain(|_, k| *k != key);
        self.query_ids.retain(|_, k| *k != key);
        self.cids.retain(|_, k| *k != key);
        self.generation += 1;
    }

    /// Forgets every command id (the connection they were sent on is gone).
    pub fn clear_cids(&mut self) {
        self.cids.clear();
    }

    /// Routes acks with `cid` to `key` (a command sent for it).
    pub fn add_cid(&mut self, cid: &str, key: Key) {
        self.cids.insert(cid.into(), key);
    }

    /// Stops routing acks with `cid`.
    pub fn remove_cid(&mut self, cid: &str) -> Option<Key> {
        self.cids.remove(cid)
    }

    pub fn by_cid(&self, cid: &str) -> Option<Key> {
        self.cids.get(cid).copied()
    }

    pub fn by_sub_id(&self, id: &[u8]) -> Option<Key> {
        self.sub_ids.get(id).copied()
    }

    pub fn by_query_id(&self, id: &[u8]) -> Option<Key> {
        self.query_ids.get(id).copied()
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        self.entries.get(&key)
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.entries.get_mut(&key)
    }

    /// Keys in registration order.
    pub fn keys(&self) -> Vec<Key> {
        self.entries.keys().copied().collect()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        self.entries.iter_mut().map(|(k, v)| (*k, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Resolves a `sids` value into `out` (cleared first): each known id once, in the order
    /// listed, with its position in `sids`. Returns how many listed ids are unknown.
    pub fn route_sids(&self, sids: &[u8], out: &mut Vec<Route>) -> usize {
        out.clear();
        let mut unknown = 0;
        let mut start = 0;
        for part in sids.split(|b| *b == b',') {
            let lead = part.len() - part.trim_ascii_start().len();
            let id = part.trim_ascii();
            let at = start + lead;
            start += part.len() + 1;
            if id.is_empty() {
                continue;
            }
            match self.sub_ids.get(id) {
                Some(&key) if !out.iter().any(|r| r.key == key) => out.push(Route {
                    key,
                    start: at,
                    len: id.len(),
                }),
                Some(_) => {}
                None => unknown += 1,
            }
        }
        unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_unique_and_removal_forgets_them() {
        let mut r: Registry<&str> = Registry::default();
        let a = r.insert(Some("A"), None, "a").expect("a");
        assert!(r.insert(Some("A"), None, "dup").is_err());
        let q = r.insert(None, Some("Q"), "q").expect("q");
        assert!(r.insert(Some("X"), Some("Q"), "dup q").is_err());
        r.add_cid("c1", a);
        assert_eq!(r.by_cid("c1"), Some(a));
        assert_eq!(r.by_query_id(b"Q"), Some(q));
        assert_eq!(r.remove(a), Some("a"));
        assert_eq!(r.by_cid("c1"), None);
        assert_eq!(r.by_sub_id(b"A"), None);
        assert!(r.insert(Some("A"), None, "again").is_ok());
        assert_eq!(r.keys().len(), 2);
    }

    #[test]
    fn a_comma_list_reaches_each_subscription_once() {
        let mut r: Registry<()> = Registry::default();
        let a = r.insert(Some("A"), None, ()).expect("a");
        let b = r.insert(Some("B"), None, ()).expect("b");
        let mut out = Vec::new();
        let unknown = r.route_sids(b"B, A,nope,A,,B", &mut out);
        assert_eq!(unknown, 1);
        assert_eq!(
            out,
            vec![
                Route {
                    key: b,
                    start: 0,
                    len: 1
                },
                Route {
                    key: a,
                    start: 3,
                    len: 1
                }
            ]
        );
        assert_eq!(r.route_sids(b"", &mut out), 0);
        assert!(out.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
        ))]

        /// Every known id listed is routed exactly once, at the right place; unknown ones are
        /// counted (each occurrence); nothing else is routed.
        #[test]
        fn routing_matches_a_naive_model(
            known in proptest::collection::btree_set("[a-d]{1,2}", 0..6),
            listed in proptest::collection::vec("[a-d]{1,2}", 0..8),
            spaces in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let mut r: Registry<String> = Registry::default();
            for id in &known {
                r.insert(Some(id), None, id.clone()).expect("unique");
            }
            let sids: String = listed.iter().enumerate()
                .map(|(i, id)| if spaces[i] { format!(" {id}") } else { id.clone() })
                .collect::<Vec<_>>().join(",");
            let mut out = Vec::new();
            let unknown = r.route_sids(sids.as_bytes(), &mut out);
            let mut expect: Vec<&String> = Vec::new();
            for id in &listed {
                if known.contains(id) && !expect.contains(&id) {
                    expect.push(id);
                }
            }
            prop_assert_eq!(unknown, listed.iter().filter(|id| !known.contains(*id)).count());
            prop_assert_eq!(out.len(), expect.len());
            for (route, id) in out.iter().zip(expect) {
                prop_assert_eq!(r.get(route.key), Some(id));
                prop_assert_eq!(&sids.as_bytes()[route.start..route.start + route.len], id.as_bytes());
            }
        }
    }
}
