//! `SubscriptionActor`: the client's subscription side. It owns every subscription and query
//! of the client (the registry), their queues and flow control, the bookmark store, and their
//! lives across reconnects; it moves events between them and the sockets and mailboxes, and
//! decides nothing the pure parts (`registry.rs`, `flow.rs`, `bookmark_book.rs`,
//! `resubscribe.rs`) do not.
//!
//! ```text
//! ClientActor ──Subscribe/SowQuery/...──► SubscriptionActor ──SendFrames──► ConnectionActor
//! ConnectionActor ──InboundBatch (raw frames)──► SubscriptionActor ──Deliveries──► subscribers
//! ConnectionActor ──SubsLoggedOn/ConnectionLost──► SubscriptionActor
//! SubscriptionActor ──Unexpected──► HandlerRegistry (frames nobody claims: last chance)
//! ```
//!
//! It runs on the same arbiter as the connection actor, which lets the two share the
//! [`ReadGate`] (flow control holds reading through it).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::bookmark_book::{parse_bookmark, SubscriptionBook};
use super::bookmark_store::BookmarkStore;
use super::delivery::{scan_delivery, split_sow_batch, Delivery, Inbound};
use super::errors::{CancelError, PingError, QueryError, SubscribeError};
use super::flow::{BehindPolicy, Level, Outbox};
use super::frames::{encode_ping, encode_unsubscribe, join_options, CommandKind, CommandSpec};
use super::messages::{
    BookmarkStart, CancelAllSubscriptions, CancelSubscription, Deliveries, DiscardBookmarks,
    DiscardMode, Ping, PingReply, QueryParts, QueryStats, SowAndSubscribe, SowCollect, SowQuery,
    Subscribe, SubscriptionEnd, SubscriptionEvent,
};
use super::registry::{Key, Registry, Route};
use super::resubscribe::{Acked, Lifecycle, Phase, Refused};
use crate::client::connection::ConnectionActor;
use crate::client::handlers::HandlerRegistry;
use crate::client::inbound::{ReadGate, SUBSCRIPTION_CID_PREFIX};
use crate::client::internal::{
    ConnectionLost, ProtocolViolation, SendFrames, StopActor, Unexpected,
};
use crate::client::messages::{UnexpectedKind, UnexpectedMessage};
use crate::error::ProtocolError;
use crate::protocol::{decode_frame, AckType, Command, Frame, Reason, Status};

/// Raw frames for the subscription side, from connection `epoch`, in arrival order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct InboundBatch {
    pub epoch: u64,
    pub frames: Vec<Bytes>,
}

/// Connection `epoch` logged on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubsLoggedOn {
    pub epoch: u64,
    pub server_version: Option<String>,
    /// The server, password masked.
    pub server: String,
}

/// Resolve once every bookmark change so far is in the store's file (at once in memory).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
#[non_exhaustive]
pub struct SyncBookmarks {
    /// How long to wait.
    pub timeout: Duration,
}

impl SyncBookmarks {
    /// Waits at most `timeout`.
    pub fn new(timeout: Duration) -> SyncBookmarks {
        SyncBookmarks { timeout }
    }
}

/// Counters of the subscription side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Message)]
#[rtype(result = "SubscriptionStats")]
pub struct GetSubscriptionStats;

/// What [`GetSubscriptionStats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, MessageResponse)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// Subscriptions and queries currently registered.
    pub active: usize,
    /// Deliveries handed to subscribers' queues.
    pub delivered: u64,
    /// Redelivered messages dropped because the subscription had them already.
    pub duplicates_dropped: u64,
    /// Frames sent to last chance (unknown sub ids or query ids).
    pub unrouted: u64,
    /// Times reading the connection was held for a subscriber that fell behind.
    pub read_pauses: u64,
    /// Deliveries queued for subscribers right now (all subscriptions).
    pub queued: usize,
    /// The most ever queued for one subscription at once.
    pub max_queued: usize,
}

/// How the caller of a placement is answered.
enum Reply {
    Subscribe(oneshot::Sender<Result<String, SubscribeError>>),
    Query(oneshot::Sender<Result<String, QueryError>>),
    Collect(oneshot::Sender<Result<Vec<Delivery>, QueryError>>),
}

/// Why a placement failed, before it is typed for its caller.
enum Failure {
    Refused(Reason),
    Timeout(Duration),
    Disconnected,
    Cancelled,
    Stopped,
    TooMany(usize),
}

impl Reply {
    fn fail(self, f: Failure) {
        match self {
            Reply::Subscribe(tx) => {
                let _ = tx.send(Err(match f {
                    Failure::Refused(reason) => SubscribeError::Refused { reason },
                    Failure::Timeout(timeout) => SubscribeError::Timeout { timeout },
                    Failure::Cancelled => SubscribeError::Cancelled,
                    Failure::Disconnected | Failure::Stopped | Failure::TooMany(_) => {
                        SubscribeError::Stopped
                    }
                }));
            }
            Reply::Query(tx) => {
                let _ = tx.send(Err(query_error(f)));
            }
            Reply::Collect(tx) => {
                let _ = tx.send(Err(query_error(f)));
            }
        }
    }
}

fn query_error(f: Failure) -> QueryError {
    match f {
        Failure::Refused(reason) => QueryError::Refused { reason },
        Failure::Timeout(timeout) => QueryError::Timeout { timeout },
        Failure::Disconnected => QueryError::Disconnected,
        Failure::TooMany(limit) => QueryError::TooManyRecords { limit },
        Failure::Cancelled | Failure::Stopped => QueryError::Stopped,
    }
}

enum Sink {
    Actor(Recipient<Deliveries>),
    Collect { records: Vec<Delivery>, max: usize },
}

#[derive(Default)]
struct QueryState {
    completed: bool,
    stats_wanted: bool,
    stats_seen: bool,
    stats: QueryStats,
}

/// One subscription or query.
struct Entry {
    spec: CommandSpec,
    /// The name its events carry: the sub id, or the query id of a pure query.
    name: Arc<str>,
    /// The cid of the first send (the default sub id and query id are this).
    first_cid: Option<String>,
    start: Option<BookmarkStart>,
    /// The bookmark of the first placement, resent while nothing has been processed.
    placed_bookmark: Option<String>,
    book: Option<SubscriptionBook>,
    lifecycle: Lifecycle,
    outbox: Outbox<SubscriptionEvent>,
    sink: Sink,
    discard: DiscardMode,
    reply: Option<Reply>,
    /// Over its bounds and holding reading (PauseReading).
    over: bool,
    /// The local numbers of the deliveries in the batch the subscriber holds.
    in_flight: Option<(u64, u64)>,
    /// Unrouted; its last events are being delivered.
    ending: bool,
    touched: bool,
    query: QueryState,
}

impl Entry {
    fn kind(&self) -> CommandKind {
        self.spec.kind
    }

    /// The wire bookmark for a (re)send: the store's most recent, else the first placement's.
    fn resume_bookmark(&self) -> Option<String> {
        self.book
            .as_ref()
            .and_then(SubscriptionBook::most_recent)
            .or_else(|| self.placed_bookmark.clone())
    }
}

impl super::flow::Weigh for SubscriptionEvent {
    fn weight(&self) -> Option<usize> {
        match self {
            SubscriptionEvent::Message(d) => Some(d.weight()),
            _ => None,
        }
    }
}

/// Caches the route of the last `sids` value (a stream usually repeats it).
#[derive(Default)]
struct RouteCache {
    generation: u64,
    sids: Vec<u8>,
    routes: Vec<Route>,
    unknown: usize,
    valid: bool,
}

/// The subscription side's actor (module docs).
pub struct SubscriptionActor {
    registry: Registry<Entry>,
    store: BookmarkStore,
    connection: Addr<ConnectionActor>,
    handlers: Addr<HandlerRegistry>,
    gate: Rc<ReadGate>,
    epoch: u64,
    up: bool,
    server: String,
    server_version: Option<String>,
    next_cid: u64,
    paused_by: usize,
    pings: HashMap<String, (Instant, oneshot::Sender<Result<PingReply, PingError>>)>,
    cache: RouteCache,
    touched: Vec<Key>,
    stats: SubscriptionStats,
    /// Deliveries gathered for one subscription during an inbound batch (`stage`).
    staged: Vec<SubscriptionEvent>,
    staged_key: Option<Key>,
    /// Frames left in the batch being routed: the size to reserve for `staged`.
    staged_hint: usize,
    /// Command ids of queries refused at placement: the server may follow the refused
    /// `processed` ack with a refused `completed` one, which is absorbed (bounded list).
    refused_cids: std::collections::VecDeque<String>,
}

/// How many refused query cids are remembered.
const REFUSED_CIDS: usize = 64;

impl Actor for SubscriptionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        for key in self.registry.keys() {
            if let Some(mut e) = self.registry.remove(key) {
                if let Some(r) = e.reply.take() {
                    r.fail(Failure::Stopped);
                }
                if let (Sink::Actor(r), false) = (&e.sink, e.ending) {
                    r.do_send(Deliveries {
                        sub_id: e.name.clone(),
                        events: vec![SubscriptionEvent::Ended(SubscriptionEnd::ClientStopped)],
                    });
                }
            }
        }
        // Joining the writer thread (it writes what is pending first) is left to a thread
        // of its own: never block the actor's thread.
        let store = std::mem::take(&mut self.store);
        let _ = std::thread::Builder::new()
            .name("bookmark-store-close".into())
            .spawn(move || drop(store));
    }
}

/// A placement, resolved from one of the public messages.
struct Placement {
    kind: CommandKind,
    topic: String,
    filter: Option<String>,
    sub_id: Option<String>,
    query_id: Option<String>,
    query: Option<QueryParts>,
    options: Option<String>,
    correlation_id: Option<String>,
    start: Option<BookmarkStart>,
    flow: super::flow::FlowControl,
    discard: DiscardMode,
    timeout: Duration,
    sink: Sink,
    reply: Reply,
}

impl SubscriptionActor {
    pub(crate) fn new(
        store: BookmarkStore,
        connection: Addr<ConnectionActor>,
        handlers: Addr<HandlerRegistry>,
        gate: Rc<ReadGate>,
    ) -> SubscriptionActor {
        SubscriptionActor {
            registry: Registry::default(),
            store,
            connection,
            handlers,
            gate,
            epoch: 0,
            up: false,
            server: String::new(),
            server_version: None,
            next_cid: 0,
            paused_by: 0,
            pings: HashMap::new(),
            cache: RouteCache::default(),
            touched: Vec::new(),
            stats: SubscriptionStats::default(),
            refused_cids: std::collections::VecDeque::new(),
            staged: Vec::new(),
            staged_key: None,
            staged_hint: 0,
        }
    }

    fn new_cid(&mut self) -> String {
        self.next_cid += 1;
        format!("{SUBSCRIPTION_CID_PREFIX}{}", self.next_cid)
    }

    fn send_bytes(&self, bytes: BytesMut) {
        if self.up && !bytes.is_empty() {
            self.connection.do_send(SendFrames {
                epoch: self.epoch,
                bytes: bytes.freeze(),
            });
        }
    }

    fn last_chance(&mut self, kind: UnexpectedKind, raw: Bytes) {
        self.stats.unrouted += 1;
        match decode_frame(raw) {
            Ok(frame) => self.last_chance_frame(kind, frame),
            Err(e) => tracing::warn!(error = %e, "an unroutable frame does not parse"),
        }
    }

    fn last_chance_frame(&self, kind: UnexpectedKind, frame: Frame) {
        self.handlers
            .do_send(Unexpected(UnexpectedMessage { kind, frame }));
    }

    /// Registers a placement and sends it when logged on; the reply comes later.
    fn place(&mut self, p: Placement, ctx: &mut Context<Self>) {
        if p.topic.is_empty() {
            return p.reply.fail_invalid("the topic is empty");
        }
        if p.query.as_ref().is_some_and(|q| q.batch_size == Some(0)) {
            return p.reply.fail_invalid("batch_size must be at least 1");
        }
        if p.start == Some(BookmarkStart::MostRecent) && p.sub_id.is_none() {
            return p
                .reply
                .fail_invalid("a most-recent bookmark needs a sub id (it names the history)");
        }
        let cid = self.new_cid();
        let subscription = p.kind.is_subscription();
        let sub_id = subscription.then(|| p.sub_id.clone().unwrap_or_else(|| cid.clone()));
        let query_id = p
            .kind
            .has_query()
            .then(|| p.query_id.clone().unwrap_or_else(|| cid.clone()));
        let name: Arc<str> = sub_id
            .as_deref()
            .or(query_id.as_deref())
            .unwrap_or(&cid)
            .into();
        let q = p.query.clone();
        let spec = CommandSpec {
            kind: p.kind,
            topic: p.topic,
            filter: p.filter,
            sub_id: sub_id.clone(),
            query_id: query_id.clone(),
            batch_size: q.as_ref().and_then(|q| q.batch_size),
            top_n: q.as_ref().and_then(|q| q.top_n),
            order_by: q.as_ref().and_then(|q| q.order_by.clone()),
            correlation_id: p.correlation_id,
            options: p.options,
            stats: q.as_ref().is_some_and(|q| q.stats),
        };
        let (book, placed_bookmark) = match (&p.start, &sub_id) {
            (Some(BookmarkStart::MostRecent), Some(id)) => {
                (Some(self.store.take_book(id)), Some("0".to_owned()))
            }
            (Some(start), Some(id)) => {
                self.store.reset(id);
                (
                    Some(SubscriptionBook::default()),
                    start.wire().map(str::to_owned),
                )
            }
            _ => (None, None),
        };
        let entry = Entry {
            spec,
            name: name.clone(),
            first_cid: Some(cid),
            start: p.start,
            placed_bookmark,
            book,
            lifecycle: Lifecycle::default(),
            outbox: Outbox::new(p.flow),
            sink: p.sink,
            discard: p.discard,
            reply: Some(p.reply),
            over: false,
            in_flight: None,
            ending: false,
            touched: false,
            query: QueryState {
                stats_wanted: q.as_ref().is_some_and(|q| q.stats) && !subscription,
                ..QueryState::default()
            },
        };
        let key = match self
            .registry
            .insert(sub_id.as_deref(), query_id.as_deref(), entry)
        {
            Ok(key) => key,
            Err(mut entry) => {
                if let (Some(id), Some(book)) = (&sub_id, entry.book.take()) {
                    if entry.start == Some(BookmarkStart::MostRecent) {
                        self.store.put_book(id, &book);
                    }
                }
                if let Some(r) = entry.reply.take() {
                    r.fail_in_use(name.to_string());
                }
                return;
            }
        };
        self.stats.active = self.registry.len();
        if self.up {
            let mut bytes = BytesMut::new();
            self.send_entry(key, &mut bytes);
            self.send_bytes(bytes);
        }
        let timeout = p.timeout;
        ctx.run_later(timeout, move |act, ctx| act.timed_out(key, timeout, ctx));
    }

    /// Encodes entry `key` under a new cid (the first cid for its first send).
    fn send_entry(&mut self, key: Key, dst: &mut BytesMut) {
        let fresh = self.new_cid();
        let Some(e) = self.registry.get_mut(key) else {
            return;
        };
        let cid = e.first_cid.take().unwrap_or(fresh);
        let bookmark = e.resume_bookmark();
        e.spec.encode(&cid, bookmark.as_deref(), dst);
        e.lifecycle.sent(cid.clone());
        self.registry.add_cid(&cid, key);
    }

    fn timed_out(&mut self, key: Key, timeout: Duration, ctx: &mut Context<Self>) {
        let Some(e) = self.registry.get_mut(key) else {
            return;
        };
        let pending = match &e.reply {
            Some(Reply::Collect(_)) => true,
            Some(_) => !e.lifecycle.established(),
            None => false,
        };
        if !pending || e.ending {
            return;
        }
        if let Some(r) = e.reply.take() {
            r.fail(Failure::Timeout(timeout));
        }
        // As the official client does: tell the server to forget it.
        if !matches!(e.lifecycle.phase(), Phase::Waiting) {
            let id = e.spec.sub_id.clone().or_else(|| e.spec.query_id.clone());
            if let Some(id) = id {
                self.unsubscribe(&id);
            }
        }
        self.remove_entry(key);
        let _ = ctx;
    }

    fn unsubscribe(&mut self, sub_id: &str) {
        if !self.up {
            return;
        }
        let cid = self.new_cid();
        let mut b = BytesMut::new();
        encode_unsubscribe(&cid, sub_id, &mut b);
        self.send_bytes(b);
    }

    fn remove_entry(&mut self, key: Key) {
        if let Some(e) = self.registry.remove(key) {
            if e.over {
                self.paused_by -= 1;
                if self.paused_by == 0 {
                    self.gate.set_paused(false);
                }
            }
            if let (Some(book), Some(id)) = (&e.book, &e.spec.sub_id) {
                self.store.put_book(id, book);
            }
        }
        self.stats.active = self.registry.len();
    }

    /// Ends `key` after its queued events: nothing more is routed to it.
    fn end(&mut self, key: Key, why: SubscriptionEnd) {
        self.flush_staged();
        self.registry.unroute(key);
        if let Some(e) = self.registry.get_mut(key) {
            e.ending = true;
            e.outbox.push_control(SubscriptionEvent::Ended(why));
        }
        self.touch(key);
    }

    /// Drops the queued deliveries of `key` (and forgets them in its book: the server will
    /// send them again if the subscription resumes); returns how many.
    fn drop_queued(e: &mut Entry) -> usize {
        let mut first: Option<u64> = None;
        let dropped = e.outbox.drop_deliveries(|ev| {
            if let SubscriptionEvent::Message(d) = ev {
                first = Some(first.map_or(d.local_seq, |f: u64| f.min(d.local_seq)));
            }
            true
        });
        if let (Some(book), Some(first)) = (&mut e.book, first) {
            book.forget_from(first);
        }
        dropped
    }

    fn touch(&mut self, key: Key) {
        if let Some(e) = self.registry.get_mut(key) {
            if !e.touched {
                e.touched = true;
                self.touched.push(key);
            }
        }
    }

    fn flush_touched(&mut self, ctx: &mut Context<Self>) {
        let mut touched = std::mem::take(&mut self.touched);
        for key in touched.drain(..) {
            if let Some(e) = self.registry.get_mut(key) {
                e.touched = false;
            }
            self.pump(key, ctx);
        }
        self.touched = touched;
    }

    /// Sends the next batch of `key` if none is in flight; applies flow control.
    fn pump(&mut self, key: Key, ctx: &mut Context<Self>) {
        let Some(e) = self.registry.get_mut(key) else {
            return;
        };
        self.stats.max_queued = self.stats.max_queued.max(e.outbox.queued());
        match &mut e.sink {
            Sink::Collect { records, max } => {
                let mut failed = false;
                while let Some(batch) = e.outbox.take_batch() {
                    e.outbox.completed();
                    for ev in batch {
                        if let SubscriptionEvent::Message(d) = ev {
                            if records.len() == *max {
                                failed = true;
                                break;
                            }
                            records.push(d);
                        }
                    }
                }
                if failed {
                    let max = *max;
                    if let Some(r) = e.reply.take() {
                        r.fail(Failure::TooMany(max));
                    }
                    let id = e.spec.query_id.clone();
                    if let Some(id) = id {
                        self.unsubscribe(&id);
                    }
                    self.remove_entry(key);
                    return;
                }
                if e.ending {
                    let records = std::mem::take(records);
                    if let Some(Reply::Collect(tx)) = e.reply.take() {
                        let _ = tx.send(Ok(records));
                    }
                    self.remove_entry(key);
                }
                return;
            }
            Sink::Actor(recipient) => {
                if let Some(batch) = e.outbox.take_batch() {
                    let range = e.book.as_ref().and_then(|_| local_range(&batch));
                    e.in_flight = range;
                    let fut = recipient.send(Deliveries {
                        sub_id: e.name.clone(),
                        events: batch,
                    });
                    ctx.spawn(
                        fut::wrap_future::<_, Self>(fut)
                            .map(move |res, act, ctx| act.batch_done(key, res.is_ok(), ctx)),
                    );
                } else if e.ending && !e.outbox.in_flight() {
                    self.remove_entry(key);
                    return;
                }
            }
        }
        self.check_level(key);
    }

    fn batch_done(&mut self, key: Key, ok: bool, ctx: &mut Context<Self>) {
        let Some(e) = self.registry.get_mut(key) else {
            return;
        };
        e.outbox.completed();
        let range = e.in_flight.take();
        if !ok {
            tracing::warn!(sub_id = %e.name, "the subscriber actor stopped; unsubscribing");
            let id = e.spec.sub_id.clone();
            let live = !matches!(e.lifecycle.phase(), Phase::Waiting);
            self.remove_entry(key);
            if let (Some(id), true) = (id, live) {
                self.unsubscribe(&id);
            }
            return;
        }
        if let (Some(book), Some((first, last)), DiscardMode::WhenHandled) =
            (&mut e.book, range, e.discard)
        {
            let mut changes = Vec::new();
            book.discard_range(first, last, &mut changes);
            if let Some(id) = &e.spec.sub_id {
                self.store.persist(id, &changes);
            }
        }
        self.pump(key, ctx);
    }

    /// Applies the subscription's policy to its queue's level (flow.rs).
    fn check_level(&mut self, key: Key) {
        let Some(e) = self.registry.get_mut(key) else {
            return;
        };
        if e.ending {
            return;
        }
        let mut level = e.outbox.level();
        if let (DiscardMode::Explicit { max_outstanding }, Some(book)) = (e.discard, &e.book) {
            let n = book.outstanding();
            if n > max_outstanding {
                level = Level::Over;
            } else if n > max_outstanding / 2 && level == Level::Low {
                level = Level::Normal;
            }
        }
        match (level, e.outbox.limits().when_behind) {
            (Level::Over, BehindPolicy::PauseReading) if !e.over => {
                e.over = true;
                self.paused_by += 1;
                tracing::debug!(sub_id = %e.name, queued = e.outbox.queued(), "subscriber behind: holding reads");
                self.gate.set_paused(true);
            }
            (Level::Over, BehindPolicy::EndSubscription) => {
                let dropped = Self::drop_queued(e);
                tracing::warn!(sub_id = %e.name, dropped, "subscriber fell behind: ending the subscription");
                let id = e.spec.sub_id.clone();
                self.end(key, SubscriptionEnd::FellBehind { dropped });
                if let Some(id) = id {
                    self.unsubscribe(&id);
                }
            }
            (Level::Low, _) if e.over => {
                e.over = false;
                self.paused_by -= 1;
                if self.paused_by == 0 {
                    self.gate.set_paused(false);
                }
            }
            _ => {}
        }
    }

    /// Queues a delivery for `key`. Deliveries for the same subscription in a row are
    /// gathered and handed to it in one piece (`flush_staged`): one registry lookup and no
    /// copying per delivery.
    #[inline]
    fn stage(&mut self, key: Key, d: Delivery) {
        if self.staged_key != Some(key) {
            self.flush_staged();
            self.staged_key = Some(key);
        }
        if self.staged.capacity() == 0 {
            self.staged.reserve(self.staged_hint.max(16));
        }
        self.staged.push(SubscriptionEvent::Message(d));
    }

    /// Hands the gathered deliveries to their subscription: its book numbers them (and drops
    /// what it already had), its outbox queues them.
    fn flush_staged(&mut self) {
        let Some(key) = self.staged_key.take() else {
            return;
        };
        let mut events = std::mem::take(&mut self.staged);
        let Some(e) = self.registry.get_mut(key) else {
            return;
        };
        if e.ending {
            return;
        }
        if let Some(book) = &mut e.book {
            let before = events.len();
            events.retain_mut(|ev| {
                let SubscriptionEvent::Message(d) = ev else {
                    return true;
                };
                match book.delivered(d.bookmark().and_then(parse_bookmark)) {
                    Ok(local) => {
                        d.local_seq = local;
                        true
                    }
                    Err(_) => false,
                }
            });
            self.stats.duplicates_dropped += (before - events.len()) as u64;
        }
        self.stats.delivered += events.len() as u64;
        e.outbox.append(events);
        if !e.touched {
            e.touched = true;
            self.touched.push(key);
        }
    }

    fn push_control(&mut self, key: Key, ev: SubscriptionEvent) {
        self.flush_staged();
        if let Some(e) = self.registry.get_mut(key) {
            if !e.ending {
                e.outbox.push_control(ev);
            }
        }
        self.touch(key);
    }

    fn query_key(&self, d: &Delivery) -> Option<Key> {
        d.query_id()
            .and_then(|q| self.registry.by_query_id(q.as_bytes()))
    }

    /// One frame of an inbound batch.
    fn inbound(&mut self, raw: Bytes) -> Result<(), ProtocolError> {
        if raw.starts_with(br#"{"c":"ack""#) {
            let frame = decode_frame(raw)?;
            self.ack(frame);
            return Ok(());
        }
        let scanned = scan_delivery(raw)?;
        match scanned.inbound {
            Inbound::Live(_) => {
                let Some((start, len)) = scanned.delivery.sub_ids_range() else {
                    let raw = scanned.delivery.frame_bytes().clone();
                    self.last_chance(UnexpectedKind::Unclaimed, raw);
                    return Ok(());
                };
                let sids = &scanned.delivery.frame_bytes()[start..start + len];
                let c = &mut self.cache;
                if !(c.valid && c.generation == self.registry.generation() && c.sids == sids) {
                    c.unknown = self.registry.route_sids(sids, &mut c.routes);
                    c.sids.clear();
                    c.sids.extend_from_slice(sids);
                    c.generation = self.registry.generation();
                    c.valid = true;
                }
                if self.cache.unknown > 0 {
                    let raw = scanned.delivery.frame_bytes().clone();
                    self.last_chance(UnexpectedKind::Unclaimed, raw);
                }
                if let [r] = self.cache.routes[..] {
                    // The common case: one subscription; the scanned delivery itself goes.
                    let mut d = scanned.delivery;
                    d.set_sub_id_range(start + r.start, r.len);
                    self.stage(r.key, d);
                    return Ok(());
                }
                let routes = std::mem::take(&mut self.cache.routes);
                for r in &routes {
                    let mut d = scanned.delivery.clone();
                    d.set_sub_id_range(start + r.start, r.len);
                    self.stage(r.key, d);
                }
                self.cache.routes = routes;
            }
            Inbound::SowBatch => {
                let Some(key) = self.query_key(&scanned.delivery) else {
                    let raw = scanned.delivery.frame_bytes().clone();
                    self.last_chance(UnexpectedKind::Unclaimed, raw);
                    return Ok(());
                };
                for d in split_sow_batch(&scanned)? {
                    self.stage(key, d);
                }
            }
            Inbound::GroupBegin | Inbound::GroupEnd => {
                let Some(key) = self.query_key(&scanned.delivery) else {
                    let raw = scanned.delivery.frame_bytes().clone();
                    self.last_chance(UnexpectedKind::Unclaimed, raw);
                    return Ok(());
                };
                let ev = if scanned.inbound == Inbound::GroupBegin {
                    SubscriptionEvent::GroupBegin
                } else {
                    SubscriptionEvent::GroupEnd
                };
                self.push_control(key, ev);
            }
            Inbound::Other => {
                let frame = decode_frame(scanned.delivery.frame_bytes().clone())?;
                if frame.header.command == Some(Command::Ack) {
                    self.ack(frame);
                } else {
                    self.last_chance_frame(UnexpectedKind::Unclaimed, frame);
                }
            }
        }
        Ok(())
    }

    fn ack(&mut self, frame: Frame) {
        // Acks come after the deliveries before them.
        self.flush_staged();
        let h = &frame.header;
        let Some(cid) = h.cid.clone() else {
            return self.last_chance_frame(UnexpectedKind::Unclaimed, frame);
        };
        if let Some((sent, tx)) = self.pings.remove(&cid) {
            let reply = if h.status == Some(Status::Failure) {
                Err(PingError::Refused {
                    reason: h.reason.clone().unwrap_or(Reason::Other(String::new())),
                })
            } else {
                Ok(PingReply {
                    server_version: self.server_version.clone(),
                    server: self.server.clone(),
                    round_trip: sent.elapsed(),
                })
            };
            let _ = tx.send(reply);
            return;
        }
        let Some(key) = self.registry.by_cid(&cid) else {
            if self.refused_cids.contains(&cid) {
                return;
            }
            return self.last_chance_frame(UnexpectedKind::UnknownCommandId, frame);
        };
        let failed = h.status == Some(Status::Failure);
        let reason = h.reason.clone().unwrap_or(Reason::Other(String::new()));
        let Some(e) = self.registry.get_mut(key) else {
            return;
        };
        if failed {
            match e.lifecycle.refused(&cid) {
                Refused::Placement => {
                    if let Some(r) = e.reply.take() {
                        r.fail(Failure::Refused(reason));
                    }
                    if e.kind() == CommandKind::Sow {
                        if self.refused_cids.len() == REFUSED_CIDS {
                            self.refused_cids.pop_front();
                        }
                        self.refused_cids.push_back(cid);
                    }
                    self.remove_entry(key);
                }
                Refused::Resumption => {
                    tracing::warn!(sub_id = %e.name, %reason, "the server refused to resubscribe");
                    self.end(key, SubscriptionEnd::Refused(reason));
                }
                Refused::Stale if e.kind() == CommandKind::Sow && e.lifecycle.established() => {
                    // A failure after the processed ack (for example in `completed`).
                    if let Some(r) = e.reply.take() {
                        r.fail(Failure::Refused(reason.clone()));
                    }
                    self.end(key, SubscriptionEnd::Refused(reason));
                }
                Refused::Stale => {}
            }
            return;
        }
        let types = h.ack_type;
        if types.contains(AckType::Processed) {
            match e.lifecycle.acked(&cid) {
                Acked::Placed => {
                    match e.reply.take() {
                        Some(Reply::Subscribe(tx)) => {
                            let _ = tx.send(Ok(e.name.to_string()));
                        }
                        Some(Reply::Query(tx)) => {
                            let _ = tx.send(Ok(e.name.to_string()));
                        }
                        // Resolves at completion.
                        other @ Some(Reply::Collect(_)) => e.reply = other,
                        None => {}
                    }
                    if e.kind() != CommandKind::Sow {
                        self.registry.remove_cid(&cid);
                    }
                }
                Acked::Resumed => {
                    let may_have_missed = match &e.book {
                        None => true,
                        Some(b) => e.start == Some(BookmarkStart::Now) && b.most_recent().is_none(),
                    };
                    self.registry.remove_cid(&cid);
                    self.push_control(key, SubscriptionEvent::Resumed { may_have_missed });
                }
                Acked::Stale => {}
            }
            return;
        }
        if e.kind() != CommandKind::Sow {
            return;
        }
        if types.contains(AckType::Completed) {
            e.query.completed = true;
            merge_stats(&mut e.query.stats, h);
        } else if types.contains(AckType::Stats) {
            e.query.stats_seen = true;
            merge_stats(&mut e.query.stats, h);
        } else {
            return;
        }
        if e.query.completed && (!e.query.stats_wanted || e.query.stats_seen) {
            let stats = e.query.stats;
            e.outbox.push_control(SubscriptionEvent::Completed(stats));
            self.registry.unroute(key);
            if let Some(e) = self.registry.get_mut(key) {
                e.ending = true;
            }
            self.touch(key);
        }
    }
}

fn merge_stats(s: &mut QueryStats, h: &crate::protocol::Header) {
    s.records_returned = h.records_returned.or(s.records_returned);
    s.topic_matches = h.topic_matches.or(s.topic_matches);
    s.matches = h.matches.or(s.matches);
}

/// The lowest and highest local number of the deliveries in a batch.
fn local_range(batch: &[SubscriptionEvent]) -> Option<(u64, u64)> {
    let mut range: Option<(u64, u64)> = None;
    for ev in batch {
        if let SubscriptionEvent::Message(d) = ev {
            let n = d.local_seq;
            range = Some(range.map_or((n, n), |(a, b)| (a.min(n), b.max(n))));
        }
    }
    range
}

impl Reply {
    fn fail_invalid(self, what: &'static str) {
        match self {
            Reply::Subscribe(tx) => {
                let _ = tx.send(Err(SubscribeError::Invalid { what }));
            }
            Reply::Query(tx) => {
                let _ = tx.send(Err(QueryError::Invalid { what }));
            }
            Reply::Collect(tx) => {
                let _ = tx.send(Err(QueryError::Invalid { what }));
            }
        }
    }

    fn fail_in_use(self, id: String) {
        match self {
            Reply::Subscribe(tx) => {
                let _ = tx.send(Err(SubscribeError::SubIdInUse { sub_id: id }));
            }
            Reply::Query(tx) => {
                let _ = tx.send(Err(QueryError::QueryIdInUse { query_id: id }));
            }
            Reply::Collect(tx) => {
                let _ = tx.send(Err(QueryError::QueryIdInUse { query_id: id }));
            }
        }
    }
}

// ---- handlers ---------------------------------------------------------------------------

fn await_reply<T: Send + 'static, E: Send + 'static>(
    rx: oneshot::Receiver<Result<T, E>>,
    stopped: E,
) -> ResponseFuture<Result<T, E>> {
    Box::pin(async move { rx.await.unwrap_or(Err(stopped)) })
}

impl Handler<Subscribe> for SubscriptionActor {
    type Result = ResponseFuture<Result<String, SubscribeError>>;

    fn handle(&mut self, m: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let kind = if m.delta {
            CommandKind::DeltaSubscribe
        } else {
            CommandKind::Subscribe
        };
        self.place(
            Placement {
                kind,
                topic: m.topic,
                filter: m.filter,
                sub_id: m.sub_id,
                query_id: None,
                query: None,
                options: join_options(false, &m.options, false),
                correlation_id: m.correlation_id,
                start: m.bookmark,
                flow: m.flow,
                discard: m.discard,
                timeout: m.timeout,
                sink: Sink::Actor(m.recipient),
                reply: Reply::Subscribe(tx),
            },
            ctx,
        );
        await_reply(rx, SubscribeError::Stopped)
    }
}

impl Handler<SowAndSubscribe> for SubscriptionActor {
    type Result = ResponseFuture<Result<String, SubscribeError>>;

    fn handle(&mut self, m: SowAndSubscribe, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let kind = if m.delta {
            CommandKind::SowAndDeltaSubscribe
        } else {
            CommandKind::SowAndSubscribe
        };
        let options = join_options(m.oof, &m.query.options, m.delta && !m.send_empties);
        self.place(
            Placement {
                kind,
                topic: m.query.topic.clone(),
                filter: m.query.filter.clone(),
                sub_id: m.sub_id,
                query_id: m.query.query_id.clone(),
                timeout: m.query.timeout,
                query: Some(m.query),
                options,
                correlation_id: None,
                start: m.bookmark,
                flow: m.flow,
                discard: m.discard,
                sink: Sink::Actor(m.recipient),
                reply: Reply::Subscribe(tx),
            },
            ctx,
        );
        await_reply(rx, SubscribeError::Stopped)
    }
}

impl SubscriptionActor {
    fn place_query(
        &mut self,
        q: QueryParts,
        flow: super::flow::FlowControl,
        sink: Sink,
        reply: Reply,
        ctx: &mut Context<Self>,
    ) {
        self.place(
            Placement {
                kind: CommandKind::Sow,
                topic: q.topic.clone(),
                filter: q.filter.clone(),
                sub_id: None,
                query_id: q.query_id.clone(),
                options: join_options(false, &q.options, false),
                timeout: q.timeout,
                query: Some(q),
                correlation_id: None,
                start: None,
                flow,
                discard: DiscardMode::WhenHandled,
                sink,
                reply,
            },
            ctx,
        );
    }
}

impl Handler<SowQuery> for SubscriptionActor {
    type Result = ResponseFuture<Result<String, QueryError>>;

    fn handle(&mut self, m: SowQuery, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.place_query(
            m.query,
            m.flow,
            Sink::Actor(m.recipient),
            Reply::Query(tx),
            ctx,
        );
        await_reply(rx, QueryError::Stopped)
    }
}

impl Handler<SowCollect> for SubscriptionActor {
    type Result = ResponseFuture<Result<Vec<Delivery>, QueryError>>;

    fn handle(&mut self, m: SowCollect, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let sink = Sink::Collect {
            records: Vec::new(),
            max: m.max_records,
        };
        let flow = super::flow::FlowControl::default();
        self.place_query(m.query, flow, sink, Reply::Collect(tx), ctx);
        await_reply(rx, QueryError::Stopped)
    }
}

impl Handler<CancelSubscription> for SubscriptionActor {
    type Result = Result<(), CancelError>;

    fn handle(&mut self, m: CancelSubscription, ctx: &mut Context<Self>) -> Self::Result {
        let Some(key) = self.registry.by_sub_id(m.0.as_bytes()) else {
            return Err(CancelError::UnknownSubscription { sub_id: m.0 });
        };
        let sent = self
            .registry
            .get(key)
            .is_some_and(|e| !matches!(e.lifecycle.phase(), Phase::Waiting));
        if sent {
            self.unsubscribe(&m.0);
        }
        self.cancel(key);
        self.flush_touched(ctx);
        Ok(())
    }
}

impl SubscriptionActor {
    fn cancel(&mut self, key: Key) {
        if let Some(e) = self.registry.get_mut(key) {
            Self::drop_queued(e);
            if let Some(r) = e.reply.take() {
                r.fail(Failure::Cancelled);
            }
        }
        self.end(key, SubscriptionEnd::Unsubscribed);
    }
}

impl Handler<CancelAllSubscriptions> for SubscriptionActor {
    type Result = usize;

    fn handle(&mut self, _: CancelAllSubscriptions, ctx: &mut Context<Self>) -> usize {
        let keys: Vec<Key> = self
            .registry
            .keys()
            .into_iter()
            .filter(|k| {
                self.registry
                    .get(*k)
                    .is_some_and(|e| !e.ending && e.kind().is_subscription())
            })
            .collect();
        if !keys.is_empty() {
            self.unsubscribe("all");
        }
        for key in &keys {
            self.cancel(*key);
        }
        self.flush_touched(ctx);
        keys.len()
    }
}

impl Handler<DiscardBookmarks> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, m: DiscardBookmarks, ctx: &mut Context<Self>) {
        let key = self.registry.by_sub_id(m.sub_id.as_bytes()).or_else(|| {
            // An ending subscription is no longer routed, but its discards still count.
            self.registry
                .keys()
                .into_iter()
                .find(|k| self.registry.get(*k).is_some_and(|e| *e.name == *m.sub_id))
        });
        let Some(key) = key else {
            return;
        };
        let Some(e) = self.registry.get_mut(key) else {
            return;
        };
        let Some(book) = &mut e.book else {
            return;
        };
        let mut changes = Vec::new();
        for n in m.local_seqs {
            book.discard(n, &mut changes);
        }
        self.store.persist(&m.sub_id, &changes);
        self.check_level(key);
        self.pump(key, ctx);
    }
}

impl Handler<Ping> for SubscriptionActor {
    type Result = ResponseFuture<Result<PingReply, PingError>>;

    fn handle(&mut self, m: Ping, ctx: &mut Context<Self>) -> Self::Result {
        if !self.up {
            return Box::pin(async { Err(PingError::NotConnected) });
        }
        let cid = self.new_cid();
        let (tx, rx) = oneshot::channel();
        let mut b = BytesMut::new();
        encode_ping(&cid, &mut b);
        self.pings.insert(cid.clone(), (Instant::now(), tx));
        self.send_bytes(b);
        let timeout = m.timeout;
        ctx.run_later(timeout, move |act, _| {
            if let Some((_, tx)) = act.pings.remove(&cid) {
                let _ = tx.send(Err(PingError::Timeout { timeout }));
            }
        });
        await_reply(rx, PingError::Stopped)
    }
}

impl Handler<SyncBookmarks> for SubscriptionActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, m: SyncBookmarks, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.store.when_written(tx);
        Box::pin(async move { matches!(tokio::time::timeout(m.timeout, rx).await, Ok(Ok(()))) })
    }
}

impl Handler<GetSubscriptionStats> for SubscriptionActor {
    type Result = SubscriptionStats;

    fn handle(&mut self, _: GetSubscriptionStats, _: &mut Context<Self>) -> SubscriptionStats {
        let mut s = self.stats;
        s.active = self.registry.len();
        s.read_pauses = self.gate.pauses();
        s.queued = self
            .registry
            .iter_mut()
            .map(|(_, e)| e.outbox.queued())
            .sum();
        s
    }
}

impl Handler<InboundBatch> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, m: InboundBatch, ctx: &mut Context<Self>) {
        self.gate.batch_taken();
        if m.epoch != self.epoch || !self.up {
            return;
        }
        let n = m.frames.len();
        for (i, raw) in m.frames.into_iter().enumerate() {
            self.staged_hint = n - i;
            if let Err(error) = self.inbound(raw) {
                self.connection.do_send(ProtocolViolation {
                    epoch: m.epoch,
                    error,
                });
                break;
            }
        }
        self.flush_staged();
        self.flush_touched(ctx);
    }
}

impl Handler<SubsLoggedOn> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, m: SubsLoggedOn, _: &mut Context<Self>) {
        self.epoch = m.epoch;
        self.up = true;
        self.server = m.server;
        self.server_version = m.server_version;
        // Every waiting subscription (and any query placed while down), in registration order.
        let mut bytes = BytesMut::new();
        for key in self.registry.keys() {
            let send = self
                .registry
                .get(key)
                .is_some_and(|e| !e.ending && e.lifecycle.needs_send());
            if send {
                self.send_entry(key, &mut bytes);
            }
        }
        self.send_bytes(bytes);
    }
}

impl Handler<ConnectionLost> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        if !self.up {
            return;
        }
        self.up = false;
        self.registry.clear_cids();
        for (_, (_, tx)) in self.pings.drain() {
            let _ = tx.send(Err(PingError::Disconnected));
        }
        for key in self.registry.keys() {
            let Some(e) = self.registry.get_mut(key) else {
                continue;
            };
            if e.ending {
                continue;
            }
            if e.kind() == CommandKind::Sow {
                // Queries are not re-sent (as in the official client); one placed while down
                // stays waiting for the next logon.
                if matches!(e.lifecycle.phase(), Phase::Waiting) {
                    continue;
                }
                if let Some(r) = e.reply.take() {
                    r.fail(Failure::Disconnected);
                    self.remove_entry(key);
                } else {
                    self.end(key, SubscriptionEnd::Disconnected);
                }
                continue;
            }
            if e.lifecycle.lost() {
                if e.book.is_some() {
                    // The server sends them again when the subscription resumes from its
                    // bookmark; delivering these too would repeat them.
                    Self::drop_queued(e);
                }
                self.push_control(key, SubscriptionEvent::Disconnected);
            }
        }
        self.flush_touched(ctx);
    }
}

impl Handler<StopActor> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
