//! `HandlerRegistry`: who hears about failed writes, unclaimed frames and connection changes.
//!
//! Routing (PROTOCOL.md section 8, the documented AMPS contract plus this project's rule):
//! 1. a failed write goes to **every** failed-write subscriber, enriched with the stored message;
//! 2. with no failed-write subscriber, the raw ack goes to every last-chance subscriber as an
//!    [`UnexpectedMessage`] of kind [`UnexpectedKind::UnhandledFailedWrite`], with no store
//!    information;
//! 3. with neither, a `warn` log line with the sequence and the reason.
//!
//! Nothing is dropped silently. A subscriber whose actor has stopped is removed the first time
//! delivery notices, and does not disturb delivery to the others: if every failed-write
//! subscriber has stopped, the failure falls through to last chance as if there were none.

use actix::prelude::*;

use crate::client::internal::{FlushResolved, RegistrySync, StopActor, Unexpected, WriteFailed};
use crate::client::messages::{
    ConnectionEvent, FailedWrite, SubscribeConnectionEvents, SubscribeFailedWrites,
    SubscribeUnexpected, SubscriptionId, UnexpectedKind, UnexpectedMessage, Unsubscribe,
};
use crate::protocol::Frame;

/// The subscriber lists.
#[derive(Default)]
pub struct HandlerRegistry {
    next_id: u64,
    failed_writes: Vec<(SubscriptionId, Recipient<FailedWrite>)>,
    last_chance: Vec<(SubscriptionId, Recipient<UnexpectedMessage>)>,
    connection_events: Vec<(SubscriptionId, Recipient<ConnectionEvent>)>,
}

impl Actor for HandlerRegistry {
    type Context = Context<Self>;
}

impl HandlerRegistry {
    fn id(&mut self) -> SubscriptionId {
        self.next_id += 1;
        SubscriptionId(self.next_id)
    }

    /// Delivers `event` to every live subscriber in `list`, dropping stopped ones; returns how
    /// many received it.
    fn deliver<M>(list: &mut Vec<(SubscriptionId, Recipient<M>)>, event: &M) -> usize
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
    {
        list.retain(|(_, r)| r.connected());
        for (_, r) in list.iter() {
            r.do_send(event.clone());
        }
        list.len()
    }

    fn last_chance(&mut self, msg: UnexpectedMessage) {
        if Self::deliver(&mut self.last_chance, &msg) == 0 {
            let h = &msg.frame.header;
            tracing::warn!(
                kind = ?msg.kind,
                command = h.command.as_ref().map(|c| c.as_str()),
                cid = h.cid.as_deref(),
                sequence = h.seq,
                status = h.status.as_ref().map(|s| s.as_str()),
                reason = h.reason.as_ref().map(|r| r.as_str()),
                "unexpected message with no last-chance subscriber"
            );
        }
    }
}

impl Handler<WriteFailed> for HandlerRegistry {
    type Result = ();

    fn handle(&mut self, WriteFailed(event): WriteFailed, _: &mut Context<Self>) {
        tracing::info!(
            sequence = event.sequence,
            reason = %event.reason,
            topic = event.topic(),
            "failed write"
        );
        if Self::deliver(&mut self.failed_writes, &event) > 0 {
            return;
        }
        if self.last_chance.iter().any(|(_, r)| r.connected()) {
            let frame = Frame::header_only(event.ack);
            self.last_chance(UnexpectedMessage {
                kind: UnexpectedKind::UnhandledFailedWrite,
                frame,
            });
        } else {
            tracing::warn!(
                sequence = event.sequence,
                reason = %event.reason,
                "failed write with no failed-write or last-chance subscriber"
            );
        }
    }
}

impl Handler<FlushResolved> for HandlerRegistry {
    type Result = ();

    /// Answers a flush here, not in the store, so that every failed write the store reported
    /// before it has been handed to the subscribers' mailboxes first.
    fn handle(&mut self, msg: FlushResolved, _: &mut Context<Self>) {
        let _ = msg.tx.send(msg.result);
    }
}

impl Handler<RegistrySync> for HandlerRegistry {
    type Result = ();

    fn handle(&mut self, _: RegistrySync, _: &mut Context<Self>) {}
}

impl Handler<Unexpected> for HandlerRegistry {
    type Result = ();

    fn handle(&mut self, Unexpected(msg): Unexpected, _: &mut Context<Self>) {
        self.last_chance(msg);
    }
}

impl Handler<ConnectionEvent> for HandlerRegistry {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, _: &mut Context<Self>) {
        Self::deliver(&mut self.connection_events, &event);
    }
}

impl Handler<SubscribeFailedWrites> for HandlerRegistry {
    type Result = MessageResult<SubscribeFailedWrites>;

    fn handle(&mut self, msg: SubscribeFailedWrites, _: &mut Context<Self>) -> Self::Result {
        let id = self.id();
        self.failed_writes.push((id, msg.0));
        MessageResult(Ok(id))
    }
}

impl Handler<SubscribeUnexpected> for HandlerRegistry {
    type Result = MessageResult<SubscribeUnexpected>;

    fn handle(&mut self, msg: SubscribeUnexpected, _: &mut Context<Self>) -> Self::Result {
        let id = self.id();
        self.last_chance.push((id, msg.0));
        MessageResult(Ok(id))
    }
}

impl Handler<SubscribeConnectionEvents> for HandlerRegistry {
    type Result = MessageResult<SubscribeConnectionEvents>;

    fn handle(&mut self, msg: SubscribeConnectionEvents, _: &mut Context<Self>) -> Self::Result {
        let id = self.id();
        self.connection_events.push((id, msg.0));
        MessageResult(Ok(id))
    }
}

impl Handler<Unsubscribe> for HandlerRegistry {
    type Result = Result<bool, crate::error::ClientStopped>;

    fn handle(&mut self, Unsubscribe(id): Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        let before =
            self.failed_writes.len() + self.last_chance.len() + self.connection_events.len();
        self.failed_writes.retain(|(i, _)| *i != id);
        self.last_chance.retain(|(i, _)| *i != id);
        self.connection_events.retain(|(i, _)| *i != id);
        Ok(before
            != self.failed_writes.len() + self.last_chance.len() + self.connection_events.len())
    }
}

impl Handler<StopActor> for HandlerRegistry {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
