//! `PublishStoreActor`: the thin shell around the `PublishState` state machine (`state.rs`).
//!
//! Every handler turns its message into one event of the state machine, then carries out the
//! effects the state machine produced, in order:
//!
//! | effect | done by the shell |
//! |---|---|
//! | `Answer` | the write caller's channel |
//! | `Failed`, `Unexpected` | the handler registry |
//! | `FlushDone` | the registry, which answers after the failures queued before it |
//! | `ExpectFlushAck` | registers the flush's command id with the ack actor, which routes its ack back through this mailbox |
//! | `FlushTimer` | a timer that calls back with the deadline |
//! | `Violation` | the connection, which closes and reconnects |
//! | `ResumeLater`, `SendLater` | admission (sending a durable batch) continued after a real yield of this actor's task, so every other actor of the arbiter runs between two slices |
//! | `CommitLater` | a self-notification (a later turn) |
//! | `Closed` | the callers of a graceful close |
//!
//! Time enters here (`Instant::now()` for each event that needs it) and nowhere in the state
//! machine. The file store's disk I/O runs on its own thread (`file/writer.rs`): a group
//! commit hands the batch over and returns; the thread's `Synced` message brings the outcome
//! back as `PublishState::synced`. Only losing the client name and stopping wait for a sync
//! in flight.
//!
//! The state machine lives in a `SharedStore` (`shared.rs`): writes enter it directly from
//! the client actor and from publisher handles, under its lock, and wake this actor (one
//! `Wake` per burst) to carry out what they left; every other event comes through here.
//! Frames are not an effect: the connection's write task takes them from the `SharedStore`
//! when woken (after a handler here, or after a write, left some).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::sync::oneshot;

use std::sync::Arc;

use super::shared::{FlushTx, SharedStore, State, Synced, Wake};
use super::state::{Effect, FlushAck, Limits, PublishState};
use super::Store;
use crate::client::ack_router::AckRouter;
use crate::client::connection::ConnectionActor;
use crate::client::handlers::HandlerRegistry;
use crate::client::internal::{
    AckReceived, AckWaiter, Closing, ConnectionLost, ExpectAck, FlushAckReceived, FlushResolved,
    GaveUp, LoggedOn, NameLost, ProtocolViolation, StartFlush, StopActor, StoreStats, Unexpected,
    WriteFailed,
};
use crate::client::messages::FlushReport;
use crate::error::{ConnectError, FlushError};
use crate::protocol::Status;

/// The publish-store actor (see the module docs).
pub struct PublishStoreActor {
    shared: Arc<SharedStore>,
    conn: Addr<ConnectionActor>,
    router: Addr<AckRouter>,
    registry: Addr<HandlerRegistry>,
    /// Reused between handlers.
    effects: Vec<Effect<super::shared::Reply, FlushTx>>,
    /// Callers of a graceful close.
    closing: Vec<oneshot::Sender<()>>,
}

impl PublishStoreActor {
    /// The state machine over `store`, numbering a fresh store from the clock.
    pub(crate) fn initial_state(store: Option<Box<dyn Store>>, limits: Limits) -> State {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        PublishState::new(store, limits, now_ms.saturating_mul(1_000_000) + 1)
    }

    pub(crate) fn new(
        shared: Arc<SharedStore>,
        conn: Addr<ConnectionActor>,
        router: Addr<AckRouter>,
        registry: Addr<HandlerRegistry>,
    ) -> Self {
        PublishStoreActor {
            shared,
            conn,
            router,
            registry,
            effects: Vec::new(),
            closing: Vec::new(),
        }
    }

    /// Carries out the effects the last event produced.
    fn run_effects(&mut self, ctx: &mut Context<Self>) {
        let signalled = {
            let mut state = self.shared.lock();
            state.take_effects(&mut self.effects);
            state.take_out_signal()
        };
        // The write task runs on this arbiter too, so it takes the frames only after this turn,
        // when every effect below (a flush's expected ack, say) has been carried out.
        self.shared.wake_writer(signalled);
        for effect in self.effects.drain(..) {
            match effect {
                Effect::Answer { reply, result } => reply.send(result),
                Effect::Failed(fw) => self.registry.do_send(WriteFailed(fw)),
                Effect::Unexpected(u) => self.registry.do_send(Unexpected(u)),
                Effect::FlushDone { reply, result } => {
                    self.registry.do_send(FlushResolved { tx: reply, result })
                }
                Effect::ExpectFlushAck { cid, ack } => self.router.do_send(ExpectAck {
                    cid,
                    completes_on: ack,
                    survives_reconnect: false,
                    tx: AckWaiter::Store,
                }),
                Effect::FlushTimer { id, deadline } => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    ctx.run_later(wait, move |act, ctx| {
                        act.shared.lock().flush_expired(id, Instant::now());
                        act.run_effects(ctx);
                    });
                }
                Effect::Violation { epoch, error } => {
                    self.conn.do_send(ProtocolViolation { epoch, error })
                }
                // After a real yield: a notification (or a message to itself) runs in the same
                // poll of this actor, so the other actors of the arbiter, the ack path among
                // them, would wait until every slice of a big backlog was admitted.
                Effect::ResumeLater => after_yield(ctx, ResumeAdmission),
                Effect::CommitLater => ctx.notify(Commit),
                Effect::SendLater => after_yield(ctx, SendMore),
                Effect::Closed => {
                    // A graceful close ends with everything stored (and every discard) on disk,
                    // so the next process does not replay what this one settled.
                    self.shared.lock().stop(Instant::now());
                    for tx in self.closing.drain(..) {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }
}

/// Handles `msg` once this actor's task has really given the thread up, so every other actor
/// of the arbiter (acks, failure delivery, the user's) runs first. `ctx.notify` would not do:
/// actix handles notifications and the whole mailbox in the same poll.
fn after_yield<M>(ctx: &mut Context<PublishStoreActor>, msg: M)
where
    M: Message<Result = ()> + 'static,
    PublishStoreActor: Handler<M, Result = ()>,
{
    ctx.spawn(
        fut::wrap_future::<_, PublishStoreActor>(tokio::task::yield_now())
            .map(move |(), act, ctx| act.handle(msg, ctx)),
    );
}

impl Actor for PublishStoreActor {
    type Context = Context<Self>;
}

/// Group commit (self-notification).
#[derive(Message)]
#[rtype(result = "()")]
struct Commit;

impl Handler<Commit> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: Commit, ctx: &mut Context<Self>) {
        self.shared.lock().commit(Instant::now());
        self.run_effects(ctx);
    }
}

/// Send the next slice of a durable batch (self-notification).
#[derive(Message)]
#[rtype(result = "()")]
struct SendMore;

impl Handler<SendMore> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: SendMore, ctx: &mut Context<Self>) {
        self.shared.lock().send_more();
        self.run_effects(ctx);
    }
}

/// Continue admitting waiting writes (self-notification).
#[derive(Message)]
#[rtype(result = "()")]
struct ResumeAdmission;

impl Handler<ResumeAdmission> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: ResumeAdmission, ctx: &mut Context<Self>) {
        self.shared.lock().resume(Instant::now());
        self.run_effects(ctx);
    }
}

impl Handler<Synced> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: Synced, ctx: &mut Context<Self>) {
        self.shared.lock().synced(Instant::now());
        self.run_effects(ctx);
    }
}

impl Handler<Wake> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.shared.woken();
        self.run_effects(ctx);
    }
}

impl Handler<AckReceived> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: AckReceived, ctx: &mut Context<Self>) {
        self.shared.lock().ack(msg.epoch, msg.ack, msg.received_at);
        self.run_effects(ctx);
    }
}

impl Handler<FlushAckReceived> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: FlushAckReceived, ctx: &mut Context<Self>) {
        let ack = if msg.ack.status == Some(Status::Failure) {
            FlushAck::Refused(msg.ack.reason)
        } else {
            FlushAck::Done
        };
        self.shared.lock().flush_ack(&msg.cid, ack);
        self.run_effects(ctx);
    }
}

impl Handler<LoggedOn> for PublishStoreActor {
    type Result = Result<usize, ConnectError>;

    fn handle(&mut self, msg: LoggedOn, ctx: &mut Context<Self>) -> Self::Result {
        let result = self
            .shared
            .lock()
            .logged_on(msg.epoch, msg.server_last, Instant::now());
        self.run_effects(ctx);
        result
    }
}

impl Handler<ConnectionLost> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Context<Self>) {
        self.shared.lock().connection_lost(msg.epoch);
        self.run_effects(ctx);
    }
}

impl Handler<GaveUp> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: GaveUp, ctx: &mut Context<Self>) {
        self.shared.lock().gave_up(msg.reason, Instant::now());
        self.run_effects(ctx);
    }
}

impl Handler<NameLost> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: NameLost, ctx: &mut Context<Self>) {
        self.shared
            .lock()
            .name_lost(msg.on_live_connection, Instant::now());
        self.run_effects(ctx);
    }
}

impl Handler<StartFlush> for PublishStoreActor {
    type Result = Response<Result<FlushReport, FlushError>>;

    fn handle(&mut self, msg: StartFlush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.shared
            .lock()
            .start_flush(tx, msg.deadline.into_std(), Instant::now());
        self.run_effects(ctx);
        Response::fut(async move { rx.await.unwrap_or(Err(FlushError::Stopped)) })
    }
}

impl Handler<Closing> for PublishStoreActor {
    type Result = Response<()>;

    fn handle(&mut self, _: Closing, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.closing.push(tx);
        self.shared.lock().close();
        self.run_effects(ctx);
        Response::fut(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<StoreStats> for PublishStoreActor {
    type Result = MessageResult<StoreStats>;

    fn handle(&mut self, _: StoreStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.shared.lock().stats())
    }
}

impl Handler<StopActor> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        self.shared.lock().stop(Instant::now());
        self.run_effects(ctx);
        ctx.stop();
    }
}
