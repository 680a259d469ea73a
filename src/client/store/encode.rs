//! How the publish store puts a write on the wire.
//!
//! A stored message is sent (and replayed) with a `persisted` ack request, its sequence and its
//! original fields, byte-identically every time. A live sow_delete whose caller waits for the
//! stats also asks for `processed` and `stats` under its command id. Plain messages (no options,
//! no command id) go through a cached header template of their topic: only the sequence digits
//! change from one message to the next. Without a store a write carries no sequence and asks for
//! no ack unless a caller waits for its stats.

use std::sync::Arc;

use bytes::BytesMut;

use super::{MessageRef, Operation};
use crate::client::internal::NewWrite;
use crate::protocol::{AckType, AckTypes, Command, Frame, Header, PublishHeader, SeqTemplate};

static PUBLISH: Command = Command::Publish;
static DELTA_PUBLISH: Command = Command::DeltaPublish;
static SOW_DELETE: Command = Command::SowDelete;

/// The command of an operation.
pub(super) fn command_of(op: Operation) -> &'static Command {
    match op {
        Operation::Publish => &PUBLISH,
        Operation::DeltaPublish => &DELTA_PUBLISH,
        Operation::SowDelete => &SOW_DELETE,
    }
}

/// The [`SeqTemplate`] of the last plain message encoded, keyed by its topic and operation.
pub(super) type Template = Option<(Arc<str>, Operation, SeqTemplate)>;

/// Encodes a stored message as sent and replayed (see the module docs).
pub(super) fn encode(
    msg: MessageRef<'_>,
    cid: Option<&str>,
    dst: &mut BytesMut,
    template: &mut Template,
) {
    if cid.is_none() && msg.options.is_none() {
        let hit = matches!(template, Some((t, op, _)) if *op == msg.operation
            && (Arc::ptr_eq(t, msg.topic) || **t == **msg.topic));
        if !hit {
            let header = PublishHeader {
                command: Some(command_of(msg.operation)),
                topic: msg.topic,
                ack_type: AckTypes::PERSISTED,
                ..PublishHeader::default()
            };
            *template = Some((
                Arc::clone(msg.topic),
                msg.operation,
                SeqTemplate::new(&header),
            ));
        }
        if let Some((_, _, t)) = template {
            t.encode(msg.seq, msg.data, dst);
            return;
        }
    }
    let o = msg.opts();
    let ack_type = if cid.is_some() {
        AckTypes::PROCESSED
            .with(AckType::Persisted)
            .with(AckType::Stats)
    } else {
        AckTypes::PERSISTED
    };
    PublishHeader {
        command: Some(command_of(msg.operation)),
        cid,
        topic: msg.topic,
        ack_type,
        expiration: o.expiration,
        correlation_id: o.correlation_id.as_deref(),
        seq: Some(msg.seq),
        sow_key: o.sow_key.as_deref(),
        sow_keys: o.sow_keys.as_deref(),
        filter: o.filter.as_deref(),
    }
    .encode(msg.data, dst);
}

/// Encodes a write without a store: no sequence, no ack unless `cid` waits for the stats.
pub(super) fn encode_unstored(w: &NewWrite, cid: Option<&str>, dst: &mut BytesMut) {
    let opts = w.options.as_deref();
    PublishHeader {
        command: Some(command_of(w.operation)),
        cid,
        topic: &w.topic,
        ack_type: if cid.is_some() {
            AckTypes::PROCESSED.with(AckType::Stats)
        } else {
            AckTypes::NONE
        },
        expiration: opts.and_then(|o| o.expiration),
        correlation_id: opts.and_then(|o| o.correlation_id.as_deref()),
        seq: None,
        sow_key: opts.and_then(|o| o.sow_key.as_deref()),
        sow_keys: opts.and_then(|o| o.sow_keys.as_deref()),
        filter: opts.and_then(|o| o.filter.as_deref()),
    }
    .encode(&w.data, dst);
}

/// Encodes a `flush` command asking for `ack`.
pub(super) fn encode_flush(cid: &str, ack: AckType, dst: &mut BytesMut) {
    let header = Header {
        command: Some(Command::Flush),
        cid: Some(cid.to_owned()),
        ack_type: AckTypes::only(ack),
        ..Header::default()
    };
    Frame::header_only(header).encode_into(dst);
}
