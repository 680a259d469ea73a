//! A session's subscription side: the commands, and the streams it writes in order.
//!
//! The session hands every `subscribe`, `delta_subscribe`, `sow`, `sow_and_subscribe`,
//! `sow_and_delta_subscribe` and `unsubscribe` frame to [`SubscriberSide::command`] while it
//! holds the state lock, so a query's snapshot, a subscription's starting position and the
//! feed agree. The command is answered at once (its `processed` ack, or failure acks with the
//! reason); what takes longer becomes a stream, and streams are written one after the other in
//! command order, only while the connection's unsent output is small (so they are paced by the
//! socket, never held whole in memory beyond the snapshot a query already took):
//!
//! - a **query** waits until the log is durable up to its snapshot, then writes
//!   `group_begin`, `sow` frames of up to `batch_size` records, `group_end`, the `completed`
//!   and `stats` acks when asked for, and for `sow_and_subscribe` the live deliveries the
//!   subscription collected meanwhile, after which it is live;
//! - a **replay** (a subscription with a bookmark) forwards the frames its reader thread
//!   encodes from the log, and at each point where the reader caught up with the durable end of
//!   the log tries to hand the subscription over to the live stream (see `registry`); a
//!   `completed` ack, when asked for, follows the hand-over.
//!
//! Live deliveries arrive in the connection's outbox; [`SubscriberSide::move_outbox`] moves
//! them to the session's output.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::{mpsc, watch};

use super::delivery::{self, SowRecordRef};
use super::matching::{Spec, TopicPattern};
use super::registry::{HandOff, Outbox, Sub, SubState};
use super::replay::{self, ReplayJob, ReplayMsg};
use super::request::{self, Kind, Refusal, Request};
use crate::protocol::{AckType, AckTypes, Command, Header, Reason};
use crate::server::bookmark::{format_timestamp, BOOKMARK_NOT_FOUND};
use crate::server::core::{Shared, State};
use crate::server::query::{self, OrderKey, QueryRecord, QueryResult};

/// The most subscriptions one connection may hold.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 10_000;

/// The most queries and replays one connection may have in progress (each query holds a
/// snapshot of its records, each replay a reader thread).
pub(crate) const MAX_STREAMS: usize = 64;

/// The reason a command gets past either limit.
pub(crate) const TOO_MANY: &str = "too many subscriptions or queries on this connection";

/// Streams write only while the session's unsent output is below this (or a quarter of the
/// connection's unsent-bytes limit, if smaller).
const STREAM_LOW_WATER: usize = 256 * 1024;

/// A query writes batches until the unsent output reaches this (or half the limit).
const STREAM_HIGH_WATER: usize = 512 * 1024;

/// A `sow` frame is closed at this many bytes of records (or a quarter of the limit); it
/// always holds at least one.
const BATCH_BYTES: usize = 1 << 20;

/// How much unsent output streams work with, scaled to the connection's limit so that a
/// query paced by the socket never looks like a slow consumer.
#[derive(Clone, Copy, Debug)]
struct Water {
    low: usize,
    high: usize,
    batch: usize,
}

impl Water {
    fn for_limit(max_unsent: usize) -> Water {
        Water {
            low: STREAM_LOW_WATER.min(max_unsent / 4).max(1),
            high: STREAM_HIGH_WATER.min(max_unsent / 2).max(1),
            batch: BATCH_BYTES.min(max_unsent / 4).max(1),
        }
    }
}

/// What a stream needs next, from [`SubscriberSide::next_step`].
#[derive(Debug)]
pub(crate) enum Step {
    /// The front query's snapshot is durable: write some of it.
    Query,
    /// A message from the front replay's reader.
    Replay(ReplayMsg),
    /// The front replay's reader ended.
    ReplayEnded,
}

/// A query's snapshot and what to do with it, until it is evaluated.
struct QueryInput {
    snapshot: Vec<QueryRecord>,
    spec: Arc<Spec>,
    order_by: Vec<OrderKey>,
    top_n: Option<usize>,
}

struct QueryStream {
    ready_lsn: u64,
    cid: Option<String>,
    acks: AckTypes,
    query_id: String,
    label: String,
    /// `sow_and_subscribe`: the subscription to make live at the end.
    sub_id: Option<String>,
    /// The snapshot until it is evaluated.
    input: Option<QueryInput>,
    result: QueryResult,
    pos: usize,
    begun: bool,
    batch_size: usize,
}

struct ReplayStream {
    sub_id: String,
    cid: Option<String>,
    acks: AckTypes,
    rx: mpsc::Receiver<ReplayMsg>,
}

enum Stream {
    Query(Box<QueryStream>),
    Replay(ReplayStream),
}

impl Stream {
    /// Whether unsubscribing `id` ends this stream.
    fn is_for(&self, id: &str) -> bool {
        match self {
            Stream::Query(q) => q.query_id == id || q.sub_id.as_deref() == Some(id),
            Stream::Replay(r) => r.sub_id == id,
        }
    }
}

/// One session's subscriptions and streams (module docs). Dropping it removes the
/// connection's subscriptions.
pub(crate) struct SubscriberSide {
    shared: Arc<Shared>,
    conn_id: u64,
    outbox: Arc<Outbox>,
    streams: VecDeque<Stream>,
    water: Water,
    /// The outbox was pushed to since it was last moved to the output.
    outbox_waiting: bool,
}

impl Drop for SubscriberSide {
    fn drop(&mut self) {
        self.shared.subs.registry.remove(self.conn_id, None);
    }
}

/// Failure acks: one of each type asked for among `processed` and `completed` (a `processed`
/// one when neither was asked for, so a failure is never silent).
fn refuse(out: &mut BytesMut, r: &Refusal) {
    let mut sent = false;
    for t in [AckType::Processed, AckType::Completed] {
        if r.acks.contains(t) {
            delivery::command_ack(out, t, r.cid.as_deref(), Err(&r.reason), None);
            sent = true;
        }
    }
    if !sent {
        delivery::command_ack(
            out,
            AckType::Processed,
            r.cid.as_deref(),
            Err(&r.reason),
            None,
        );
    }
}

impl SubscriberSide {
    /// The side of connection `conn_id`, whose outbox is bounded by the unsent-bytes limit.
    pub fn new(shared: Arc<Shared>, conn_id: u64) -> SubscriberSide {
        let limit = shared.settings.max_unsent_bytes;
        SubscriberSide {
            shared,
            conn_id,
            outbox: Arc::new(Outbox::new(limit)),
            streams: VecDeque::new(),
            water: Water::for_limit(limit),
            outbox_waiting: false,
        }
    }

    /// The connection's outbox (the session waits on [`Outbox::ready`]).
    pub fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// Whether a stream has something to write and the output, holding `unsent` bytes, has
    /// room for it (streams are paced by the socket).
    pub fn wants_to_write(&self, unsent: usize) -> bool {
        !self.streams.is_empty() && unsent < self.water.low
    }

    /// The outbox has news: live deliveries move to `out` if it has room (see
    /// [`SubscriberSide::move_outbox`]). Fails, with the bytes waiting, when the outbox
    /// overflowed (a slow subscriber).
    pub fn outbox_ready(&mut self, out: &mut BytesMut) -> Result<(), usize> {
        self.outbox_waiting = true;
        self.move_outbox(out)
    }

    /// Bytes of live deliveries waiting in the outbox (for the server's memory budget).
    pub fn buffered(&self) -> usize {
        self.outbox.len()
    }

    /// Whether live deliveries wait in the outbox for the output to empty.
    pub fn outbox_waiting(&self) -> bool {
        self.outbox_waiting
    }

    /// Moves waiting live deliveries to `out`, but only once the socket has taken everything
    /// already in `out`: deliveries wait in the outbox, whose bound is the connection's
    /// unsent-bytes limit, and move by swapping buffers, never copying. The session calls this
    /// once per turn.
    pub fn move_outbox(&mut self, out: &mut BytesMut) -> Result<(), usize> {
        if self.outbox.overflowed() {
            return Err(self.outbox.len());
        }
        if self.outbox_waiting && out.is_empty() {
            self.outbox_waiting = false;
            self.outbox.take_into(out)?;
        }
        Ok(())
    }

    /// Answers a subscription, query or unsubscribe command (module docs). `st` is the
    /// locked server state.
    pub fn command(&mut self, st: &mut State, h: &Header, out: &mut BytesMut) {
        let Some(command) = h.command.as_ref() else {
            return;
        };
        if *command == Command::Unsubscribe {
            self.unsubscribe(h, out);
            return;
        }
        let Some(kind) = Kind::of(command) else {
            return;
        };
        let settings = self.shared.settings.clone();
        let result = request::parse(kind, h, settings.deny_read.as_ref())
            .and_then(|req| self.place(st, req, out));
        if let Err(r) = result {
            tracing::debug!(conn = self.conn_id, command = %command, reason = %r.reason, "subscription refused");
            refuse(out, &r);
        }
    }

    fn place(&mut self, st: &mut State, req: Request, out: &mut BytesMut) -> Result<(), Refusal> {
        let (cid, acks) = (req.cid.clone(), req.acks);
        let refusal = move |reason: Reason| Refusal {
            cid: cid.clone(),
            acks,
            reason,
        };
        if req.kind.queries() {
            if let TopicPattern::Exact(t) = &req.spec.topic {
                if !st.sow.is_sow_topic(t) {
                    return Err(refusal(Reason::InvalidTopic));
                }
            }
        }
        let busy = req.kind.queries() || req.bookmark.is_some();
        if (busy && self.streams.len() >= MAX_STREAMS)
            || (req.sub_id.is_some() && self.subscriptions() >= MAX_SUBSCRIPTIONS)
        {
            return Err(refusal(Reason::Other(TOO_MANY.into())));
        }
        let lsn = st.last_lsn;
        let holds = &self.shared.log_holds;
        let replay = match &req.bookmark {
            Some(spec) => {
                let filter = st
                    .bookmarks
                    .resolve(spec, holds.first_retained_lsn())
                    .map_err(&refusal)?;
                match filter {
                    // Retention cannot take what the replay has yet to read.
                    Some(f) => match holds.hold_from(f.first_lsn) {
                        Ok(hold) => Some((f, hold)),
                        Err(_) => return Err(refusal(Reason::Other(BOOKMARK_NOT_FOUND.into()))),
                    },
                    None => None,
                }
            }
            None => None,
        };
        let spec = Arc::new(req.spec);
        if let Some(id) = &req.sub_id {
            let state = if req.kind.queries() {
                SubState::Pending {
                    after: lsn,
                    buf: BytesMut::new(),
                }
            } else if replay.is_some() {
                SubState::Replaying { must_reach: lsn }
            } else {
                SubState::Live { after: lsn }
            };
            let sub = Sub {
                id: Arc::from(id.as_str()),
                spec: spec.clone(),
                state,
            };
            self.shared
                .subs
                .registry
                .place(self.conn_id, &self.outbox, sub, req.replace)
                .map_err(&refusal)?;
            // A replaced subscription's streams end with it.
            self.streams.retain(|s| !s.is_for(id));
        }
        if req.acks.contains(AckType::Processed) {
            delivery::command_ack(out, AckType::Processed, req.cid.as_deref(), Ok(()), None);
        }
        if req.kind.queries() {
            let denied = |t: &str| {
                self.shared
                    .settings
                    .deny_read
                    .as_ref()
                    .is_some_and(|d| d.is_match(t))
            };
            let snapshot = query::snapshot(&st.sow, &spec.topic, &denied);
            self.streams.push_back(Stream::Query(Box::new(QueryStream {
                ready_lsn: lsn,
                cid: req.cid.clone(),
                acks: req.acks,
                query_id: req.query_id.clone().unwrap_or_default(),
                label: spec.topic.as_str().to_owned(),
                sub_id: req.sub_id.clone(),
                input: Some(QueryInput {
                    snapshot,
                    spec: spec.clone(),
                    order_by: req.order_by,
                    top_n: req.top_n,
                }),
                result: QueryResult::default(),
                pos: 0,
                begun: false,
                batch_size: req.batch_size,
            })));
            return Ok(());
        }
        let id = req.sub_id.clone().unwrap_or_default();
        match replay {
            None => {
                if req.acks.contains(AckType::Completed) {
                    delivery::command_ack(
                        out,
                        AckType::Completed,
                        req.cid.as_deref(),
                        Ok(()),
                        Some(&id),
                    );
                }
            }
            Some((filter, hold)) => {
                let rx = replay::spawn(ReplayJob {
                    shared: self.shared.clone(),
                    sub_id: id.clone(),
                    spec,
                    filter,
                    hold,
                });
                self.streams.push_back(Stream::Replay(ReplayStream {
                    sub_id: id,
                    cid: req.cid.clone(),
                    acks: req.acks,
                    rx,
                }));
            }
        }
        Ok(())
    }

    /// How many subscriptions this connection holds.
    fn subscriptions(&self) -> usize {
        self.shared
            .subs
            .registry
            .lock()
            .conns
            .get(&self.conn_id)
            .map_or(0, |cs| cs.subs.len())
    }

    fn unsubscribe(&mut self, h: &Header, out: &mut BytesMut) {
        let ids = h.sub_id.as_deref().or(h.sub_ids.as_deref()).unwrap_or("");
        let registry = &self.shared.subs.registry;
        if ids.trim() == "all" {
            registry.remove(self.conn_id, None);
            self.streams.clear();
        } else {
            let list: Vec<&str> = ids
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            registry.remove(self.conn_id, Some(&list));
            self.streams.retain(|s| !list.iter().any(|id| s.is_for(id)));
        }
        if h.ack_type.contains(AckType::Processed) {
            delivery::command_ack(out, AckType::Processed, h.cid.as_deref(), Ok(()), None);
        }
    }

    /// Waits until the front stream can go on (cancel-safe: the session's `select!` may drop
    /// it). Only call with [`SubscriberSide::wants_to_write`] true.
    pub async fn next_step(&mut self, durable: &mut watch::Receiver<u64>) -> Step {
        match self.streams.front_mut() {
            None => std::future::pending().await,
            Some(Stream::Query(q)) => {
                let target = q.ready_lsn;
                if durable.wait_for(|d| *d >= target).await.is_err() {
                    std::future::pending::<()>().await;
                }
                Step::Query
            }
            Some(Stream::Replay(r)) => match r.rx.recv().await {
                Some(msg) => Step::Replay(msg),
                None => Step::ReplayEnded,
            },
        }
    }

    /// Acts on a [`Step`], writing to `out`. `Err` closes the connection (a replay that
    /// could not read the log).
    pub fn apply(&mut self, step: Step, out: &mut BytesMut) -> Result<(), &'static str> {
        match step {
            Step::Query => {
                let Some(Stream::Query(q)) = self.streams.front_mut() else {
                    return Ok(());
                };
                if q.write(out, self.water) {
                    let q = match self.streams.pop_front() {
                        Some(Stream::Query(q)) => q,
                        _ => return Ok(()),
                    };
                    if let Some(id) = &q.sub_id {
                        if let Some(buf) = self.shared.subs.registry.go_live(self.conn_id, id) {
                            out.extend_from_slice(&buf);
                        }
                    }
                }
            }
            Step::Replay(ReplayMsg::Chunk(frames)) => out.extend_from_slice(&frames),
            Step::Replay(ReplayMsg::CaughtUp(read_to)) => {
                let Some(Stream::Replay(r)) = self.streams.front() else {
                    return Ok(());
                };
                match self
                    .shared
                    .subs
                    .registry
                    .hand_off(self.conn_id, &r.sub_id, read_to)
                {
                    HandOff::NotYet => {}
                    HandOff::Gone => {
                        self.streams.pop_front();
                    }
                    HandOff::Live => {
                        tracing::debug!(conn = self.conn_id, sub_id = %r.sub_id, read_to, "replay handed over to live");
                        if r.acks.contains(AckType::Completed) {
                            delivery::command_ack(
                                out,
                                AckType::Completed,
                                r.cid.as_deref(),
                                Ok(()),
                                Some(&r.sub_id),
                            );
                        }
                        // Dropping the receiver stops the reader; anything it read past
                        // `read_to` comes from the live stream instead.
                        self.streams.pop_front();
                    }
                }
            }
            Step::Replay(ReplayMsg::Failed(why)) => {
                let id = match self.streams.pop_front() {
                    Some(Stream::Replay(r)) => r.sub_id,
                    _ => String::new(),
                };
                tracing::error!(conn = self.conn_id, sub_id = %id, error = %why, "bookmark replay failed; closing the connection");
                return Err("bookmark replay failed");
            }
            Step::ReplayEnded => {
                self.streams.pop_front();
            }
        }
        Ok(())
    }
}

impl QueryStream {
    /// Writes as much as the output allows; returns whether the query is complete.
    fn write(&mut self, out: &mut BytesMut, water: Water) -> bool {
        if let Some(q) = self.input.take() {
            self.result = query::evaluate(q.snapshot, q.spec.filter.as_ref(), &q.order_by, q.top_n);
        }
        if !self.begun {
            delivery::group(out, "group_begin", &self.label, &self.query_id);
            self.begun = true;
        }
        let records = &self.result.records;
        while self.pos < records.len() && out.len() < water.high {
            let topic = &records[self.pos].topic;
            let mut end = self.pos;
            let mut bytes = 0;
            while end < records.len()
                && end - self.pos < self.batch_size
                && &records[end].topic == topic
                && (end == self.pos || bytes + records[end].body.len() <= water.batch)
            {
                bytes += records[end].body.len();
                end += 1;
            }
            let stamps: Vec<Option<String>> = records[self.pos..end]
                .iter()
                .map(|r| (r.ts != 0).then(|| format_timestamp(r.ts)))
                .collect();
            let refs: Vec<SowRecordRef<'_>> = records[self.pos..end]
                .iter()
                .zip(&stamps)
                .map(|(r, ts)| SowRecordRef {
                    key: &r.key,
                    correlation_id: r.correlation_id.as_deref(),
                    timestamp: ts.as_deref(),
                    data: &r.body,
                })
                .collect();
            delivery::sow_batch(out, topic, &self.query_id, &refs);
            self.pos = end;
        }
        if self.pos < records.len() {
            return false;
        }
        delivery::group(out, "group_end", &self.label, &self.query_id);
        let returned = records.len() as u64;
        for t in [AckType::Completed, AckType::Stats] {
            if self.acks.contains(t) {
                delivery::query_ack(
                    out,
                    t,
                    self.cid.as_deref(),
                    &self.query_id,
                    returned,
                    self.result.topic_matches,
                );
            }
        }
        true
    }
}
