//! Bookmark replay: a reader thread per replaying subscription, streaming the transaction log
//! from disk into frames, paced by the subscriber's socket.
//!
//! The reader ([`spawn`]) opens the log with the storage layer's [`LogReader`] at the first
//! record the bookmark allows (a log position, or a timestamp), holding the log there
//! ([`LogHold`]) so retention cannot remove what it has yet to read. In rounds, it takes the
//! durable position `D`, reads every record up to `D`, encodes those the subscription
//! receives into chunks of frames and sends them down a small bounded channel; the session
//! takes a chunk only when its unsent output is low, so the reader blocks, and memory stays
//! bounded, when the subscriber reads slowly. At the end of a round it sends
//! [`ReplayMsg::CaughtUp`]`(D)`: the session then tries to hand the subscription over to the
//! live stream after `D` (see `registry`). If that succeeds the session drops the channel,
//! which ends the reader (what it read past `D` is discarded: the live stream has it);
//! otherwise the next round reads on.
//!
//! What a replay delivers: publishes and delta_publishes (sow_deletes are not messages), on
//! topics the subscription matches and `deny_read` allows, that pass the bookmark's
//! [`ReplayFilter`] and the content filter, each with its bookmark, SOW key and log position.
//! A delta_publish is replayed as it was logged: `"c":"delta_publish"` with the delta's body
//! (the merged record of that moment is not kept), and the content filter sees that body. The
//! log keeps no correlation ids, so replayed messages have no `x`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tokio::sync::mpsc;

use super::delivery::{self, Message};
use super::matching::Spec;
use super::Wait;
use crate::server::bookmark::{bookmark_of, format_timestamp, ReplayFilter};
use crate::server::core::Shared;
use crate::server::txlog::{LogHold, LogReader, RecordKind, StartAt};

/// A chunk is sent once it holds this many bytes of frames.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks in flight between the reader and the session.
const CHANNEL_CHUNKS: usize = 4;

/// How often a caught-up reader checks whether its subscriber is still there.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// What the reader sends the session.
#[derive(Debug)]
pub(crate) enum ReplayMsg {
    /// Encoded deliveries, in log order.
    Chunk(Bytes),
    /// Everything up to this log position has been read (and sent).
    CaughtUp(u64),
    /// The log could not be read; the replay cannot go on.
    Failed(String),
}

/// One replay to run.
pub(crate) struct ReplayJob {
    /// The server.
    pub shared: Arc<Shared>,
    /// The subscription id (the `sids` of every frame).
    pub sub_id: String,
    /// What it matches.
    pub spec: Arc<Spec>,
    /// Which records the bookmark allows.
    pub filter: ReplayFilter,
    /// Keeps the log from `filter.first_lsn` on.
    pub hold: LogHold,
}

/// Starts the reader thread; the receiver yields its messages.
pub(crate) fn spawn(job: ReplayJob) -> mpsc::Receiver<ReplayMsg> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let name = format!("amps-replay-{}", job.sub_id);
    let spawned = std::thread::Builder::new().name(name).spawn({
        let tx = tx.clone();
        move || run(job, tx)
    });
    if let Err(e) = spawned {
        let _ = tx.try_send(ReplayMsg::Failed(format!(
            "cannot start the reader thread: {e}"
        )));
    }
    rx
}

fn run(job: ReplayJob, tx: mpsc::Sender<ReplayMsg>) {
    let ReplayJob {
        shared,
        sub_id,
        spec,
        filter,
        hold,
    } = job;
    let hub = &shared.subs;
    let start = if filter.min_ts > 0 {
        StartAt::Timestamp(filter.min_ts)
    } else {
        StartAt::Lsn(filter.first_lsn)
    };
    let mut reader = match LogReader::open(&hub.log_dir, start) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.blocking_send(ReplayMsg::Failed(e.to_string()));
            return;
        }
    };
    // Only used to derive SOW keys from bodies, never written to.
    let keys = shared.settings.new_sow();
    let deny = shared.settings.deny_read.as_ref();
    let mut chunk = BytesMut::with_capacity(CHUNK_BYTES * 2);
    let mut read = 0u64;
    loop {
        let durable = hub.durable();
        reader = reader.with_limit(durable);
        loop {
            let entry = match reader.next_entry() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.blocking_send(ReplayMsg::Failed(e.to_string()));
                    return;
                }
            };
            read += 1;
            if read.is_multiple_of(1024) {
                hold.advance(entry.lsn);
            }
            let rec = entry.record;
            let command = match rec.kind {
                RecordKind::Publish => "p",
                RecordKind::DeltaPublish => "delta_publish",
                _ => continue,
            };
            let bm = bookmark_of(rec.client, rec.seq, entry.lsn);
            if !filter.wants(entry.lsn, bm, entry.timestamp_us)
                || !spec.topic.matches(rec.topic)
                || deny.is_some_and(|d| d.is_match(rec.topic))
            {
                continue;
            }
            if let Some(f) = &spec.filter {
                let json = serde_json::from_slice::<Value>(rec.body).unwrap_or(Value::Null);
                if !f.matches(&json) {
                    continue;
                }
            }
            let key = keys.key_for(rec.topic, rec.arg, rec.body).ok().flatten();
            let ts = spec.timestamp.then(|| format_timestamp(entry.timestamp_us));
            delivery::message(
                &mut chunk,
                &sub_id,
                &Message {
                    command,
                    topic: rec.topic,
                    bookmark: bm,
                    key: key.as_deref(),
                    correlation_id: None,
                    lsn: entry.lsn,
                    timestamp: ts.as_deref(),
                    body: rec.body,
                },
            );
            if chunk.len() >= CHUNK_BYTES
                && tx
                    .blocking_send(ReplayMsg::Chunk(chunk.split().freeze()))
                    .is_err()
            {
                return;
            }
        }
        if !chunk.is_empty()
            && tx
                .blocking_send(ReplayMsg::Chunk(chunk.split().freeze()))
                .is_err()
        {
            return;
        }
        if tx.blocking_send(ReplayMsg::CaughtUp(durable)).is_err() {
            return;
        }
        hold.advance(durable);
        loop {
            match hub.wait_durable_above(durable, Some(IDLE_CHECK)) {
                Wait::Durable(_) => break,
                Wait::Stopped => return,
                Wait::TimedOut if tx.is_closed() => return,
                Wait::TimedOut => {}
            }
        }
    }
}
