//! `AckRouter`, the ack actor: every frame the server sends (after logon) passes here once.
//!
//! Classification, in order:
//! - an ack whose `a` is exactly `persisted` and that answers a write (no command id, or a
//!   command id with a sequence that is not the store's own flush) is the publish store's
//!   business: `AckReceived` to the store actor (which discards, or enriches a failure and
//!   reports it);
//! - an ack with a `cid` someone registered with `ExpectAck` (a flush, a sow_delete awaiting its
//!   stats) completes that waiter; intermediate acks of a registered command are consumed. The
//!   store's own flush acks go back to the store through its mailbox, so it sees them in order
//!   with the persisted acks (the read proof depends on that order);
//! - anything else (an ack for a command id nobody waits for, an unknown command) is unclaimed
//!   and goes to the registry's last-chance subscribers. An unknown command from the server is
//!   not a protocol violation (servers add commands; an old client must not drop a connection
//!   over one): it is delivered as [`UnexpectedKind::Unclaimed`] and the connection stays up.
//!
//! When the connection is lost, waiters for commands that will not be answered on the next
//! connection (a flush, re-sent under a new id) are dropped; a stored sow_delete is replayed
//! under its original id, so its waiter stays.

use std::collections::HashMap;

use actix::prelude::*;

use crate::client::handlers::HandlerRegistry;
use crate::client::internal::{
    AckReceived, AckWaiter, ConnectionLost, ExpectAck, FlushAckReceived, Inbound, NameLost,
    StopActor, Unexpected,
};
use crate::client::messages::{UnexpectedKind, UnexpectedMessage};
use crate::client::store::actor::PublishStoreActor;
use crate::protocol::{AckType, Command, Header, Status};

struct Waiter {
    completes_on: AckType,
    survives_reconnect: bool,
    tx: AckWaiter,
}

impl Waiter {
    fn is_closed(&self) -> bool {
        match &self.tx {
            AckWaiter::Channel(tx) => tx.is_closed(),
            AckWaiter::Store => false,
        }
    }
}

/// The ack actor.
pub struct AckRouter {
    store: Addr<PublishStoreActor>,
    registry: Addr<HandlerRegistry>,
    waiters: HashMap<String, Waiter>,
}

impl AckRouter {
    pub(crate) fn new(store: Addr<PublishStoreActor>, registry: Addr<HandlerRegistry>) -> Self {
        AckRouter {
            store,
            registry,
            waiters: HashMap::new(),
        }
    }

    fn unclaimed(&self, kind: UnexpectedKind, frame: crate::protocol::Frame) {
        self.registry
            .do_send(Unexpected(UnexpectedMessage { kind, frame }));
    }
}

impl Actor for AckRouter {
    type Context = Context<Self>;
}

impl Handler<Inbound> for AckRouter {
    type Result = ();

    fn handle(&mut self, msg: Inbound, _: &mut Context<Self>) {
        let Inbound {
            epoch,
            frame,
            received_at,
        } = msg;
        let h = &frame.header;
        if h.command != Some(Command::Ack) {
            self.unclaimed(UnexpectedKind::Unclaimed, frame);
            return;
        }
        if h.ack_type.is_only(AckType::Persisted) && self.is_write_ack(h) {
            // A write's persisted ack belongs to the store even when it carries a command id
            // (AMPS echoes the `cid` a sow_delete was sent with): routing it to a waiter alone
            // would lose a failure. A waiter on that id hears about a failure as well.
            if let (Some(cid), Some(Status::Failure)) = (h.cid.as_deref(), &h.status) {
                if let Some(Waiter {
                    tx: AckWaiter::Channel(tx),
                    ..
                }) = self.waiters.remove(cid)
                {
                    let _ = tx.send(frame.header.clone());
                }
            }
            self.store.do_send(AckReceived {
                epoch,
                ack: frame.header,
                received_at,
            });
            return;
        }
        let Some(cid) = h.cid.as_deref() else {
            self.unclaimed(UnexpectedKind::Unclaimed, frame);
            return;
        };
        let Some(waiter) = self.waiters.get(cid) else {
            self.unclaimed(UnexpectedKind::UnknownCommandId, frame);
            return;
        };
        let failed = matches!(h.status, Some(Status::Failure));
        if failed || h.ack_type.is_only(waiter.completes_on) {
            if let Some(waiter) = self.waiters.remove(cid) {
                match waiter.tx {
                    // The waiter may have timed out and gone; nothing to tell then.
                    AckWaiter::Channel(tx) => {
                        let _ = tx.send(frame.header);
                    }
                    AckWaiter::Store => self.store.do_send(FlushAckReceived {
                        cid: cid.to_owned(),
                        ack: frame.header,
                    }),
                }
            }
        }
    }
}

impl AckRouter {
    /// Whether a persisted ack answers a stored write (and not the store's own flush, whose
    /// persisted ack carries the flush's command id and no sequence).
    fn is_write_ack(&self, h: &Header) -> bool {
        let Some(cid) = h.cid.as_deref() else {
            return true;
        };
        let is_flush = self
            .waiters
            .get(cid)
            .is_some_and(|w| matches!(w.tx, AckWaiter::Store));
        !is_flush && h.seq.is_some()
    }
}

impl Handler<ExpectAck> for AckRouter {
    type Result = ();

    fn handle(&mut self, msg: ExpectAck, _: &mut Context<Self>) {
        // Forget waiters whose callers gave up, so the map cannot grow without bound.
        if self.waiters.len() >= 64 {
            self.waiters.retain(|_, w| !w.is_closed());
        }
        self.waiters.insert(
            msg.cid,
            Waiter {
                completes_on: msg.completes_on,
                survives_reconnect: msg.survives_reconnect,
                tx: msg.tx,
            },
        );
    }
}

impl Handler<ConnectionLost> for AckRouter {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, _: &mut Context<Self>) {
        self.waiters
            .retain(|_, w| w.survives_reconnect && !w.is_closed());
    }
}

impl Handler<NameLost> for AckRouter {
    type Result = ();

    fn handle(&mut self, msg: NameLost, _: &mut Context<Self>) {
        // After every ack of the lost connection already forwarded.
        self.store.do_send(msg);
    }
}

impl Handler<StopActor> for AckRouter {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
