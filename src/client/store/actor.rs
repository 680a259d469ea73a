//! `PublishStoreActor`: the thin shell around the `PublishState` state machine (`state.rs`).
//!
//! Every handler turns its message into one event of the state machine, then carries out the
//! effects the state machine produced, in order:
//!
//! | effect | done by the shell |
//! |---|---|
//! | `OutboundReady` | a self-notification that hands the outbound buffer to the connection once the mailbox is drained, so a burst of writes becomes one socket write |
//! | `Send` | `SendFrames` to the connection at once (replay chunks) |
//! | `Answer` | the write caller's channel |
//! | `Failed`, `Unexpected` | the handler registry |
//! | `FlushDone` | the registry, which answers after the failures queued before it |
//! | `ExpectFlushAck` | registers the flush's command id with the ack actor, which routes its ack back through this mailbox |
//! | `FlushTimer` | a timer that calls back with the deadline |
//! | `Violation` | the connection, which closes and reconnects |
//! | `ResumeLater`, `CommitLater` | self-notifications (later turns) |
//! | `Closed` | the callers of a graceful close |
//!
//! Time enters here (`Instant::now()` for each event that needs it) and nowhere in the state
//! machine. The file store's I/O runs where the state machine calls it (a group commit), on
//! this actor's thread.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::state::{Effect, FlushAck, Limits, Outcome, PublishState, WriteResult};
use super::Store;
use crate::client::ack_router::AckRouter;
use crate::client::connection::ConnectionActor;
use crate::client::handlers::HandlerRegistry;
use crate::client::internal::{
    AckReceived, AckWaiter, Closing, ConnectionLost, ExpectAck, FlushAckReceived, FlushResolved,
    GaveUp, LoggedOn, NameLost, ProtocolViolation, SendFrames, StartFlush, StopActor, StoreStats,
    StoreWrites, Unexpected, WriteFailed,
};
use crate::client::messages::FlushReport;
use crate::error::{ConnectError, FlushError, PublishError};
use crate::protocol::Status;

type WriteTx = oneshot::Sender<WriteResult>;
type FlushTx = oneshot::Sender<Result<FlushReport, FlushError>>;

/// The publish-store actor (see the module docs).
pub struct PublishStoreActor {
    state: PublishState<WriteTx, FlushTx>,
    conn: Addr<ConnectionActor>,
    router: Addr<AckRouter>,
    registry: Addr<HandlerRegistry>,
    /// Reused between handlers.
    effects: Vec<Effect<WriteTx, FlushTx>>,
    /// Callers of a graceful close.
    closing: Vec<oneshot::Sender<()>>,
}

impl PublishStoreActor {
    pub(crate) fn new(
        store: Option<Box<dyn Store>>,
        limits: Limits,
        conn: Addr<ConnectionActor>,
        router: Addr<AckRouter>,
        registry: Addr<HandlerRegistry>,
    ) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        PublishStoreActor {
            state: PublishState::new(store, limits, now_ms.saturating_mul(1_000_000) + 1),
            conn,
            router,
            registry,
            effects: Vec::new(),
            closing: Vec::new(),
        }
    }

    /// Carries out the effects the last event produced.
    fn run_effects(&mut self, ctx: &mut Context<Self>) {
        self.state.take_effects(&mut self.effects);
        for effect in self.effects.drain(..) {
            match effect {
                Effect::OutboundReady => ctx.notify(FlushOutbound),
                Effect::Send { epoch, bytes } => self.conn.do_send(SendFrames { epoch, bytes }),
                Effect::Answer { reply, result } => {
                    let _ = reply.send(result);
                }
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
                        act.state.flush_expired(id, Instant::now());
                        act.run_effects(ctx);
                    });
                }
                Effect::Violation { epoch, error } => {
                    self.conn.do_send(ProtocolViolation { epoch, error })
                }
                Effect::ResumeLater => ctx.notify(ResumeAdmission),
                Effect::CommitLater => ctx.notify(Commit),
                Effect::Closed => {
                    // A graceful close ends with everything stored (and every discard) on disk,
                    // so the next process does not replay what this one settled.
                    self.state.stop(Instant::now());
                    for tx in self.closing.drain(..) {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }
}

impl Actor for PublishStoreActor {
    type Context = Context<Self>;
}

/// Hands the outbound buffer to the connection (self-notification, after the mailbox drains).
#[derive(Message)]
#[rtype(result = "()")]
struct FlushOutbound;

impl Handler<FlushOutbound> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: FlushOutbound, _: &mut Context<Self>) {
        if let Some((epoch, bytes)) = self.state.take_outbound() {
            self.conn.do_send(SendFrames { epoch, bytes });
        }
    }
}

/// Group commit (self-notification).
#[derive(Message)]
#[rtype(result = "()")]
struct Commit;

impl Handler<Commit> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: Commit, ctx: &mut Context<Self>) {
        self.state.commit(Instant::now());
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
        self.state.resume(Instant::now());
        self.run_effects(ctx);
    }
}

impl Handler<StoreWrites> for PublishStoreActor {
    type Result = Response<WriteResult>;

    fn handle(&mut self, msg: StoreWrites, ctx: &mut Context<Self>) -> Self::Result {
        let mode = msg.mode;
        let outcome = self.state.write(msg.writes, msg.cid, mode, Instant::now());
        let response = match outcome {
            Outcome::Done(result) => Response::reply(result),
            Outcome::Pending if mode == super::state::WriteMode::Reported => {
                Response::reply(Ok(None))
            }
            Outcome::Pending => {
                let (tx, rx) = oneshot::channel();
                self.state.attach(tx);
                Response::fut(async move { rx.await.unwrap_or(Err(PublishError::Stopped)) })
            }
        };
        self.run_effects(ctx);
        response
    }
}

impl Handler<AckReceived> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: AckReceived, ctx: &mut Context<Self>) {
        self.state.ack(msg.epoch, msg.ack, msg.received_at);
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
        self.state.flush_ack(&msg.cid, ack);
        self.run_effects(ctx);
    }
}

impl Handler<LoggedOn> for PublishStoreActor {
    type Result = Result<usize, ConnectError>;

    fn handle(&mut self, msg: LoggedOn, ctx: &mut Context<Self>) -> Self::Result {
        let result = self
            .state
            .logged_on(msg.epoch, msg.server_last, Instant::now());
        self.run_effects(ctx);
        result
    }
}

impl Handler<ConnectionLost> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Context<Self>) {
        self.state.connection_lost(msg.epoch);
        self.run_effects(ctx);
    }
}

impl Handler<GaveUp> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: GaveUp, ctx: &mut Context<Self>) {
        self.state.gave_up(msg.reason, Instant::now());
        self.run_effects(ctx);
    }
}

impl Handler<NameLost> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: NameLost, ctx: &mut Context<Self>) {
        self.state.name_lost(msg.on_live_connection, Instant::now());
        self.run_effects(ctx);
    }
}

impl Handler<StartFlush> for PublishStoreActor {
    type Result = Response<Result<FlushReport, FlushError>>;

    fn handle(&mut self, msg: StartFlush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.state
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
        self.state.close();
        self.run_effects(ctx);
        Response::fut(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<StoreStats> for PublishStoreActor {
    type Result = MessageResult<StoreStats>;

    fn handle(&mut self, _: StoreStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.stats())
    }
}

impl Handler<StopActor> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        self.state.stop(Instant::now());
        self.run_effects(ctx);
        ctx.stop();
    }
}
