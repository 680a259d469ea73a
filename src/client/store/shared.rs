//! `SharedStore`: the publish state machine behind one short lock, shared by the store actor
//! and every publisher handle, so that a write is one lock and no actor hop.
//!
//! # The model
//!
//! [`PublishState`] is a plain struct; this file keeps it in a `Mutex` and decides who may
//! drive it:
//!
//! - **writes** come from anywhere (the [`ClientActor`](crate::client::ClientActor)'s handlers
//!   and [`Publisher`](crate::client::Publisher) handles on any thread): validation, room,
//!   the sequence and the encoded frame happen in one critical section
//!   ([`SharedStore::submit`], [`SharedStore::try_submit`]);
//! - **every other event** (acks, logons, losses, flushes, timers) comes from the store actor;
//! - **effects** are carried out by the store actor only, in the order the state machine
//!   produced them. A write that left effects (an answer that waits for a group commit, a
//!   refusal to report) wakes the actor with one `Wake` message, unless a wake is already on
//!   its way: one mailbox message per burst, not per write;
//! - **frames** go straight to the socket: the connection's write task takes the outbound
//!   buffer itself ([`SharedStore::take_outbound`]). The first frame after a take wakes the
//!   writer (a [`Notify`], no actor hop); frames written while it is busy on the socket pile
//!   up in the buffer and go out in its next write. So a burst becomes one socket write when
//!   it ends, and a lone write goes out at once: no timer is involved.
//!
//! Order, bounds and the exactly-once rules are the state machine's and unchanged: the lock
//! makes every event atomic, and effects keep their order because one actor runs them all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use super::actor::PublishStoreActor;
use super::state::{Outcome, PublishState, WriteMode, WriteResult};
use crate::client::internal::NewWrite;
use crate::client::messages::FlushReport;
use crate::error::FlushError;

/// How a waiting write caller is answered: straight into the channel its caller awaits, so no
/// task is spawned to translate the answer.
pub(crate) enum Reply {
    /// The whole answer (first and last sequence).
    Range(oneshot::Sender<WriteResult>),
    /// Anything else (an actor message's own answer channel, with its conversion).
    Mapped(Box<dyn FnOnce(WriteResult) + Send>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reply::Range(_) => "Reply::Range",
            Reply::Mapped(_) => "Reply::Mapped",
        })
    }
}

impl Reply {
    /// Answers the caller (gone callers are ignored: nobody is left to tell).
    pub(crate) fn send(self, result: WriteResult) {
        match self {
            Reply::Range(tx) => {
                let _ = tx.send(result);
            }
            Reply::Mapped(answer) => answer(result),
        }
    }
}

/// The reply of a flush request.
pub(crate) type FlushTx = oneshot::Sender<Result<FlushReport, FlushError>>;

/// The state machine as the shells drive it.
pub(crate) type State = PublishState<Reply, FlushTx>;

/// What a write call did.
pub(crate) struct Submitted<R> {
    /// The answer and the waiter, when the answer is known now; `None`: the reply was
    /// attached and answers later.
    pub answered: Option<(WriteResult, R)>,
    /// Bytes encoded for the connection and not yet handed to it (a producer on the actor's
    /// own thread yields when this grows, so the burst goes out).
    pub outbound: usize,
}

/// See the module docs.
pub(crate) struct SharedStore {
    state: Mutex<State>,
    /// A `Wake` is queued for the store actor and has not run yet.
    wake_pending: AtomicBool,
    actor: Addr<PublishStoreActor>,
    /// Wakes the write task of the newest connection (see [`SharedStore::open_writer`]).
    writer: Mutex<Option<Arc<Notify>>>,
}

impl SharedStore {
    pub(crate) fn new(mut state: State, actor: Addr<PublishStoreActor>) -> SharedStore {
        let synced = actor.clone();
        state.set_sync_waker(std::sync::Arc::new(move || synced.do_send(Synced)));
        SharedStore {
            state: Mutex::new(state),
            wake_pending: AtomicBool::new(false),
            actor,
            writer: Mutex::new(None),
        }
    }

    /// A new connection's write task registers here: from now on it is the one woken when
    /// frames wait. Each connection gets its own `Notify`, so a write task of an older
    /// connection still winding down can never swallow the wake meant for the new one.
    pub(crate) fn open_writer(&self) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(notify.clone());
        notify
    }

    /// Moves what waits for connection `epoch` into `into` (see
    /// [`PublishState::take_outbound`]).
    pub(crate) fn take_outbound(&self, epoch: u64, into: &mut Vec<Bytes>) {
        self.lock().take_outbound(epoch, into);
    }

    /// Wakes the writer if the events just applied left frames for it (call after the lock
    /// is released, with what [`PublishState::take_out_signal`] returned).
    pub(crate) fn wake_writer(&self, signalled: bool) {
        if signalled {
            if let Some(w) = &*self.writer.lock().unwrap_or_else(|p| p.into_inner()) {
                w.notify_one();
            }
        }
    }

    /// The state (a panic while it was held leaves it usable: every event is applied whole or
    /// its effects are not taken, and the alternative is a client that can never answer).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the store actor before it takes the effects of a wake: a write that leaves
    /// effects after this sends a new wake.
    pub(crate) fn woken(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.actor.do_send(Wake);
        }
    }

    /// A write request. `waiter` is whatever answers the caller; `attach` turns it into the
    /// reply the state machine keeps when an awaited request cannot be answered now (so a
    /// write answered at once allocates no channel). An answer known now comes back with the
    /// waiter, for the caller to deliver outside the lock.
    pub(crate) fn submit<R>(
        &self,
        writes: Writes,
        cid: Option<String>,
        mode: WriteMode,
        waiter: R,
        attach: impl FnOnce(R) -> Reply,
    ) -> Submitted<R> {
        let (answered, outbound, left) = {
            let mut state = self.lock();
            // The clock is read only where an event needs it: not for the common single write.
            let outcome = match writes {
                Writes::One(w) if cid.is_none() => {
                    match state.write_one_at_once(w, mode, Instant::now) {
                        Ok(outcome) => outcome,
                        Err(w) => state.write(vec![w], None, mode, Instant::now()),
                    }
                }
                Writes::One(w) => state.write(vec![w], cid, mode, Instant::now()),
                Writes::Many(ws) => state.write(ws, cid, mode, Instant::now()),
            };
            let answered = match outcome {
                Outcome::Done(r) => Some((r, waiter)),
                Outcome::Pending if mode == WriteMode::Reported => Some((Ok(None), waiter)),
                Outcome::Pending => {
                    state.attach(attach(waiter));
                    None
                }
            };
            (answered, state.outbound_len(), Left::read(&mut state))
        };
        self.carry_out(left);
        Submitted { answered, outbound }
    }

    /// A write that never waits (see [`PublishState::try_write_one`]).
    pub(crate) fn try_submit(&self, w: NewWrite) -> (WriteResult, usize) {
        let (result, outbound, left) = {
            let mut state = self.lock();
            let r = state.try_write_one(w, Instant::now);
            (r, state.outbound_len(), Left::read(&mut state))
        };
        self.carry_out(left);
        (result, outbound)
    }

    /// Wakes whoever must act on what a write left (outside the lock).
    fn carry_out(&self, left: Left) {
        self.wake_writer(left.frames);
        if left.effects {
            self.wake();
        }
    }
}

/// What a write left behind, read under the lock.
struct Left {
    /// Effects for the store actor.
    effects: bool,
    /// Frames for the connection's writer, which was not told yet.
    frames: bool,
}

impl Left {
    fn read(state: &mut State) -> Left {
        Left {
            effects: state.has_effects(),
            frames: state.take_out_signal(),
        }
    }
}

/// One write or many (a single write builds no `Vec`).
pub(crate) enum Writes {
    One(NewWrite),
    Many(Vec<NewWrite>),
}

/// A sync the store started completed (sent by the store's I/O thread).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Synced;

/// Carry out the effects writes left (sent by [`SharedStore`], at most one queued at a time).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake;
