//! The fan-out: durable writes to every matching subscription, in log order.
//!
//! One thread (`amps-fanout`) waits until the log's durable position moves, takes the durable
//! events from the feed, and delivers them under the registry lock ([`deliver_into`]). For each
//! write and each connection it sends one frame per kind of delivery, whose `sids` lists every
//! subscription of that connection that receives it: the full message (`p`), a delta
//! (`delta_publish`), an oof `match`, and for each record a sow_delete removed an oof
//! `deleted`. Subscriptions that asked for `timestamp` get frames of their own (with `ts`).
//! Topics matching a `deny_read` pattern are never delivered, whatever a regex subscription
//! matches. Frames go to the connections' outboxes (or a pending subscription's buffer), never
//! to a socket, so a slow subscriber can hold up neither the fan-out nor any writer.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use regex::RegexSet;
use serde_json::Value;

use super::delivery::{self, Encoded, Message};
use super::feed::Committed;
use super::matching::{decide, oof_on_delete, Outcome, WriteView};
use super::registry::{Inner, SubState};
use super::Wait;
use crate::server::bookmark::format_timestamp;
use crate::server::core::Shared;
use crate::server::txlog::RecordKind;

/// The fan-out thread's loop, from the durable position `start` (the recovered end of the
/// log, read before any session could accept a write); returns when the hub stops.
pub(crate) fn run(shared: Arc<Shared>, start: u64) {
    let hub = &shared.subs;
    let mut done = start;
    // Buffers kept from batch to batch, so their memory is reused.
    let mut scratch = Scratch::default();
    loop {
        let durable = match hub.wait_durable_above(done, None) {
            Wait::Durable(d) => d,
            Wait::Stopped => return,
            Wait::TimedOut => continue,
        };
        let events = shared.lock().feed.take_durable(durable);
        {
            let mut inner = hub.registry.lock();
            deliver_into(
                &mut inner,
                &events,
                shared.settings.deny_read.as_ref(),
                &mut scratch,
            );
            inner.fanned = inner.fanned.max(durable);
        }
        done = durable;
        hub.fanned.send_replace(durable);
    }
}

/// Which frame a subscription's delivery goes into: the outcome, with or without `ts`.
fn group_of(outcome: Outcome, timestamp: bool) -> Option<usize> {
    let base = match outcome {
        Outcome::Nothing => return None,
        Outcome::Full => 0,
        Outcome::Delta => 1,
        Outcome::OofMatch => 2,
    };
    Some(base * 2 + usize::from(timestamp))
}

const GROUP_OUTCOMES: [Outcome; 3] = [Outcome::Full, Outcome::Delta, Outcome::OofMatch];

/// Buffers the fan-out reuses from batch to batch.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Frames per connection, moved to its outbox at the end of a batch.
    out: HashMap<u64, BytesMut>,
    /// One write's encoded messages, per frame group.
    cache: [Slot; 6],
}

/// A message encoded for one frame group of the current write.
#[derive(Default)]
struct Slot {
    encoded: Encoded,
    /// Whether `encoded` holds the current write.
    filled: bool,
}

/// Delivers `events` (durable, in log order) to the subscriptions in `inner` (module docs).
#[cfg(test)]
pub(crate) fn deliver(inner: &mut Inner, events: &[Committed], deny_read: Option<&RegexSet>) {
    deliver_into(inner, events, deny_read, &mut Scratch::default());
}

/// Delivers `events` (module docs), with buffers kept by the caller.
pub(crate) fn deliver_into(
    inner: &mut Inner,
    events: &[Committed],
    deny_read: Option<&RegexSet>,
    scratch: &mut Scratch,
) {
    let Scratch { out, cache } = scratch;
    if inner.conns.is_empty() {
        out.clear();
        return;
    }
    out.retain(|conn, _| inner.conns.contains_key(conn));
    for ev in events {
        if deny_read.is_some_and(|d| d.is_match(&ev.topic)) {
            continue;
        }
        match ev.kind {
            RecordKind::Publish | RecordKind::DeltaPublish => deliver_write(inner, ev, out, cache),
            RecordKind::DeleteByFilter | RecordKind::DeleteByKeys | RecordKind::DeleteByData => {
                deliver_removals(inner, ev, out)
            }
            // Never in the feed: not writes.
            RecordKind::RepairGap | RecordKind::Refusal | RecordKind::FailuresRead => {}
        }
    }
    for (conn, frames) in out.iter_mut() {
        if let Some(cs) = inner.conns.get(conn) {
            cs.outbox.push_buf(frames);
        }
        frames.clear();
    }
}

/// Encodes one delivery of `ev` into `dst`; messages are encoded once per write and kind
/// (`cache`), then addressed per connection.
fn encode(
    dst: &mut BytesMut,
    ev: &Committed,
    view: &mut WriteView<'_>,
    outcome: Outcome,
    ts: Option<&str>,
    sids: &str,
    slot: &mut Slot,
) {
    let (command, body): (&str, &[u8]) = match outcome {
        Outcome::Nothing => return,
        Outcome::OofMatch => {
            delivery::oof(
                dst,
                &ev.topic,
                sids,
                ev.key.as_deref().unwrap_or(""),
                "match",
                &ev.body,
            );
            return;
        }
        _ if slot.filled => ("", &[]),
        Outcome::Full => ("p", &ev.body),
        Outcome::Delta => match view.delta() {
            Some(d) => ("delta_publish", &d.body),
            None => ("p", &ev.body),
        },
    };
    if !slot.filled {
        slot.encoded.fill(&Message {
            command,
            topic: &ev.topic,
            bookmark: ev.bookmark,
            key: ev.key.as_deref(),
            correlation_id: ev.correlation_id.as_deref(),
            lsn: ev.lsn,
            timestamp: ts,
            body,
        });
        slot.filled = true;
    }
    slot.encoded.write(dst, sids);
}

fn deliver_write(
    inner: &mut Inner,
    ev: &Committed,
    out: &mut HashMap<u64, BytesMut>,
    cache: &mut [Slot; 6],
) {
    let mut view = WriteView::new(&ev.body, ev.prev.as_ref(), &ev.key_fields);
    let mut ts_text: Option<String> = None;
    let mut groups: [String; 6] = Default::default();
    for slot in cache.iter_mut() {
        slot.filled = false;
    }
    for (conn, cs) in inner.conns.iter_mut() {
        for g in groups.iter_mut() {
            g.clear();
        }
        for sub in cs.subs.iter_mut() {
            if !sub.spec.topic.matches(&ev.topic) {
                continue;
            }
            let pending = match &mut sub.state {
                SubState::Replaying { .. } => continue,
                SubState::Live { after } if ev.lsn <= *after => continue,
                SubState::Pending { after, .. } if ev.lsn <= *after => continue,
                SubState::Live { .. } => None,
                SubState::Pending { buf, .. } => Some(buf),
            };
            let outcome = decide(&sub.spec, &mut view);
            let Some(g) = group_of(outcome, sub.spec.timestamp) else {
                continue;
            };
            match pending {
                Some(buf) => {
                    let ts = sub.spec.timestamp.then(|| {
                        ts_text
                            .get_or_insert_with(|| format_timestamp(ev.ts))
                            .clone()
                    });
                    crate::metrics::server::delivered();
                    encode(
                        buf,
                        ev,
                        &mut view,
                        outcome,
                        ts.as_deref(),
                        &sub.id,
                        &mut cache[g],
                    );
                    if buf.len() > cs.outbox.limit() {
                        cs.outbox.overflow();
                    }
                }
                None => {
                    let sids = &mut groups[g];
                    if !sids.is_empty() {
                        sids.push(',');
                    }
                    sids.push_str(&sub.id);
                }
            }
        }
        for (g, sids) in groups.iter().enumerate() {
            if sids.is_empty() {
                continue;
            }
            let outcome = GROUP_OUTCOMES[g / 2];
            let ts = (g % 2 == 1).then(|| {
                ts_text
                    .get_or_insert_with(|| format_timestamp(ev.ts))
                    .clone()
            });
            crate::metrics::server::delivered();
            let dst = out.entry(*conn).or_default();
            encode(
                dst,
                ev,
                &mut view,
                outcome,
                ts.as_deref(),
                sids,
                &mut cache[g],
            );
        }
    }
}

fn deliver_removals(inner: &mut Inner, ev: &Committed, out: &mut HashMap<u64, BytesMut>) {
    for (key, body) in &ev.removed {
        let mut json: Option<Value> = None;
        for (conn, cs) in inner.conns.iter_mut() {
            let mut sids = String::new();
            for sub in cs.subs.iter_mut() {
                if !sub.spec.oof || !sub.spec.topic.matches(&ev.topic) {
                    continue;
                }
                let pending = match &mut sub.state {
                    SubState::Replaying { .. } => continue,
                    SubState::Live { after } if ev.lsn <= *after => continue,
                    SubState::Pending { after, .. } if ev.lsn <= *after => continue,
                    SubState::Live { .. } => None,
                    SubState::Pending { buf, .. } => Some(buf),
                };
                let record =
                    json.get_or_insert_with(|| serde_json::from_slice(body).unwrap_or(Value::Null));
                if !oof_on_delete(&sub.spec, record) {
                    continue;
                }
                match pending {
                    Some(buf) => {
                        delivery::oof(buf, &ev.topic, &sub.id, key, "deleted", body);
                        if buf.len() > cs.outbox.limit() {
                            cs.outbox.overflow();
                        }
                    }
                    None => {
                        if !sids.is_empty() {
                            sids.push(',');
                        }
                        sids.push_str(&sub.id);
                    }
                }
            }
            if !sids.is_empty() {
                crate::metrics::server::delivered();
                let dst = out.entry(*conn).or_default();
                delivery::oof(dst, &ev.topic, &sids, key, "deleted", body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, Frame, Header};
    use crate::server::filter::Filter;
    use crate::server::subscriptions::delivery::Bookmark;
    use crate::server::subscriptions::matching::{Spec, TopicPattern};
    use crate::server::subscriptions::registry::{Outbox, Registry, Sub};
    use bytes::Bytes;

    fn spec(topic: &str, filter: Option<&str>, delta: bool, oof: bool) -> Spec {
        Spec {
            topic: TopicPattern::parse(topic).unwrap(),
            filter: filter.map(|f| Filter::parse(f).unwrap()),
            delta,
            oof,
            no_empties: false,
            timestamp: false,
        }
    }

    fn place(r: &Registry, conn: u64, ob: &Arc<Outbox>, id: &str, s: Spec, state: SubState) {
        r.place(
            conn,
            ob,
            Sub {
                id: id.into(),
                spec: Arc::new(s),
                state,
            },
            false,
        )
        .unwrap();
    }

    fn write(lsn: u64, topic: &str, body: &str, prev: Option<&str>) -> Committed {
        Committed {
            lsn,
            kind: RecordKind::Publish,
            topic: topic.into(),
            bookmark: Bookmark {
                publisher: 9,
                seq: lsn + 100,
            },
            ts: 0,
            correlation_id: None,
            key: prev.map(|_| "1".to_owned()),
            body: Bytes::copy_from_slice(body.as_bytes()),
            prev: prev.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            key_fields: Arc::from(vec!["id".to_owned()]),
            removed: Vec::new(),
        }
    }

    fn frames(ob: &Outbox) -> Vec<Frame> {
        let mut out = BytesMut::new();
        ob.take_into(&mut out).unwrap();
        let mut v = Vec::new();
        let mut codec = crate::protocol::AmpsCodec::default();
        while let Some(f) = tokio_util::codec::Decoder::decode(&mut codec, &mut out).unwrap() {
            v.push(f);
        }
        v
    }

    #[test]
    fn one_frame_per_connection_with_every_matching_sid() {
        let r = Registry::default();
        let a = Arc::new(Outbox::new(1 << 20));
        let b = Arc::new(Outbox::new(1 << 20));
        place(
            &r,
            1,
            &a,
            "all",
            spec("orders", None, false, false),
            SubState::Live { after: 0 },
        );
        place(
            &r,
            1,
            &a,
            "big",
            spec("orders", Some("/qty > 5"), false, false),
            SubState::Live { after: 0 },
        );
        place(
            &r,
            1,
            &a,
            "re",
            spec(r"^ord", None, false, false),
            SubState::Live { after: 0 },
        );
        place(
            &r,
            2,
            &b,
            "other",
            spec("quotes", None, false, false),
            SubState::Live { after: 0 },
        );
        place(
            &r,
            2,
            &b,
            "late",
            spec("orders", None, false, false),
            SubState::Live { after: 1 },
        );
        deliver(
            &mut r.lock(),
            &[
                write(1, "orders", r#"{"id":1,"qty":9}"#, None),
                write(2, "orders", r#"{"id":2,"qty":1}"#, None),
            ],
            None,
        );
        let fa = frames(&a);
        assert_eq!(fa.len(), 2);
        assert_eq!(fa[0].header.sub_ids.as_deref(), Some("all,big,re"));
        assert_eq!(fa[0].header.command, Some(Command::Publish));
        assert_eq!(fa[0].header.bookmark.as_deref(), Some("9|101|"));
        assert_eq!(fa[0].header.seq, Some(1));
        assert_eq!(fa[1].header.sub_ids.as_deref(), Some("all,re"));
        let fb = frames(&b);
        assert_eq!(fb.len(), 1, "late only gets what is after its position");
        assert_eq!(fb[0].header.sub_ids.as_deref(), Some("late"));
        assert_eq!(&fb[0].body[..], br#"{"id":2,"qty":1}"#);
    }

    #[test]
    fn deltas_oofs_and_pending_buffers() {
        let r = Registry::default();
        let a = Arc::new(Outbox::new(1 << 20));
        place(
            &r,
            1,
            &a,
            "d",
            spec("orders", None, true, false),
            SubState::Live { after: 0 },
        );
        place(
            &r,
            1,
            &a,
            "o",
            spec("orders", Some("/qty > 5"), false, true),
            SubState::Live { after: 0 },
        );
        place(
            &r,
            1,
            &a,
            "p",
            spec("orders", None, false, true),
            SubState::Pending {
                after: 0,
                buf: BytesMut::new(),
            },
        );
        place(
            &r,
            1,
            &a,
            "r",
            spec("orders", None, false, false),
            SubState::Replaying { must_reach: 0 },
        );
        let mut del = write(2, "orders", "", None);
        del.kind = RecordKind::DeleteByKeys;
        del.removed = vec![("1".into(), Bytes::from_static(br#"{"id":1,"qty":2}"#))];
        deliver(
            &mut r.lock(),
            &[
                write(
                    1,
                    "orders",
                    r#"{"id":1,"qty":2}"#,
                    Some(r#"{"id":1,"qty":9}"#),
                ),
                del,
            ],
            None,
        );
        let f = frames(&a);
        let summary: Vec<(String, String, String)> = f
            .iter()
            .map(|f| {
                (
                    f.header.command.as_ref().unwrap().to_string(),
                    f.header.sub_ids.clone().unwrap(),
                    String::from_utf8_lossy(&f.body).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "delta_publish".into(),
                    "d".into(),
                    r#"{"id":1,"qty":2}"#.into()
                ),
                ("oof".into(), "o".into(), r#"{"id":1,"qty":2}"#.into()),
            ],
            "the deleted record no longer matched o's filter; d and r did not ask for oof"
        );
        assert_eq!(
            f[1].header.reason.as_ref().map(|r| r.as_str()),
            Some("match")
        );
        // The pending subscription collected its own frames: the update and the oof deleted.
        let buf = r.go_live(1, "p").unwrap();
        let mut codec = crate::protocol::AmpsCodec::default();
        let mut buf = buf;
        let first = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
            .unwrap()
            .unwrap();
        let second = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(first.header.command, Some(Command::Publish));
        assert_eq!(second.header.command, Some(Command::Oof));
        assert_eq!(
            second.header.reason.as_ref().map(|r| r.as_str()),
            Some("deleted")
        );
        let _: Header = second.header;
    }

    #[test]
    fn denied_topics_never_reach_regex_subscriptions() {
        let r = Registry::default();
        let a = Arc::new(Outbox::new(1 << 20));
        place(
            &r,
            1,
            &a,
            "any",
            spec(".*", None, false, false),
            SubState::Live { after: 0 },
        );
        let deny = RegexSet::new(["^secret"]).unwrap();
        deliver(
            &mut r.lock(),
            &[
                write(1, "secret.x", "{}", None),
                write(2, "open", "{}", None),
            ],
            Some(&deny),
        );
        let f = frames(&a);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].header.topic.as_deref(), Some("open"));
    }

    #[test]
    fn a_pending_buffer_over_the_limit_overflows_the_connection() {
        let r = Registry::default();
        let a = Arc::new(Outbox::new(64));
        place(
            &r,
            1,
            &a,
            "p",
            spec("orders", None, false, false),
            SubState::Pending {
                after: 0,
                buf: BytesMut::new(),
            },
        );
        deliver(
            &mut r.lock(),
            &[write(1, "orders", &"x".repeat(100), None)],
            None,
        );
        assert!(a.take_into(&mut BytesMut::new()).is_err());
    }
}
