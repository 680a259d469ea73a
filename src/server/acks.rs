//! Per-connection ordered queue of ack events waiting for durability, and the conflation rule.
//!
//! Every write that asked for a `persisted` ack leaves one event, tagged with the log sequence
//! number (LSN) it must wait for: a success (its own record's LSN), a failure (its refusal
//! record's LSN, so it comes out after the successes before it and only once durable), or a
//! flush (the LSN of everything the connection sent before it). [`AckQueue::drain`] pops the durable
//! prefix in order and writes it out conflated: consecutive successes become one
//! `{"c":"ack","a":"persisted","status":"success","s":<highest>}`; a failure first closes the
//! run of successes before it, then goes out on its own; a flush closes the run and then sends
//! its own acks, so a client that sees the flush ack has already seen every persisted ack
//! before it.

use std::collections::VecDeque;

use bytes::BytesMut;

use super::failures::ReadProof;
use crate::protocol::{encode_parts, AckType, AckTypes, Command, Header, Reason, Status};

/// One event waiting for the durable LSN to reach `lsn`.
#[derive(Debug)]
enum Pending {
    Success {
        lsn: u64,
        seq: u64,
    },
    Failure {
        lsn: u64,
        seq: u64,
        reason: Reason,
    },
    Flush {
        lsn: u64,
        cid: Option<String>,
        acks: AckTypes,
    },
}

impl Pending {
    fn lsn(&self) -> u64 {
        match self {
            Pending::Success { lsn, .. }
            | Pending::Failure { lsn, .. }
            | Pending::Flush { lsn, .. } => *lsn,
        }
    }
}

/// The queue (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct AckQueue {
    q: VecDeque<Pending>,
    /// LSNs of the waiting flushes, oldest first.
    flushes: VecDeque<u64>,
    /// The failure acks and flush acks written, for the read rule (`failures.rs`).
    pub proof: ReadProof,
}

impl AckQueue {
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Whether a flush is waiting (flushes are answered as soon as they are durable, without
    /// waiting for the conflation interval).
    pub fn has_flush(&self) -> bool {
        !self.flushes.is_empty()
    }

    /// Whether the oldest waiting flush is durable at `durable`.
    pub fn flush_ready(&self, durable: u64) -> bool {
        self.flushes.front().is_some_and(|lsn| *lsn <= durable)
    }

    pub fn success(&mut self, lsn: u64, seq: u64) {
        self.q.push_back(Pending::Success { lsn, seq });
    }

    pub fn failure(&mut self, lsn: u64, seq: u64, reason: Reason) {
        self.q.push_back(Pending::Failure { lsn, seq, reason });
    }

    pub fn flush(&mut self, lsn: u64, cid: Option<String>, acks: AckTypes) {
        self.flushes.push_back(lsn);
        self.q.push_back(Pending::Flush { lsn, cid, acks });
    }

    /// Writes out every event whose LSN is durable, conflated; returns whether anything was
    /// written.
    pub fn drain(&mut self, durable: u64, out: &mut BytesMut) -> bool {
        let start = out.len();
        let mut run: Option<u64> = None;
        while self.q.front().is_some_and(|p| p.lsn() <= durable) {
            let Some(p) = self.q.pop_front() else { break };
            match p {
                Pending::Success { seq, .. } => run = Some(run.map_or(seq, |r| r.max(seq))),
                Pending::Failure { seq, reason, .. } => {
                    if let Some(s) = run.take() {
                        persisted(out, Status::Success, s, None);
                    }
                    persisted(out, Status::Failure, seq, Some(reason));
                    self.proof.failure_written(seq);
                }
                Pending::Flush { cid, acks, .. } => {
                    self.flushes.pop_front();
                    if let Some(s) = run.take() {
                        persisted(out, Status::Success, s, None);
                    }
                    for t in acks.iter() {
                        let h = Header {
                            command: Some(Command::Ack),
                            cid: cid.clone(),
                            ack_type: AckTypes::only(t),
                            status: Some(Status::Success),
                            ..Header::default()
                        };
                        encode_parts(&h, b"", out);
                    }
                    self.proof.flush_ack_written();
                }
            }
        }
        if let Some(s) = run {
            persisted(out, Status::Success, s, None);
        }
        out.len() > start
    }
}

fn persisted(out: &mut BytesMut, status: Status, seq: u64, reason: Option<Reason>) {
    let h = Header {
        command: Some(Command::Ack),
        ack_type: AckTypes::only(AckType::Persisted),
        status: Some(status),
        reason,
        seq: Some(seq),
        ..Header::default()
    };
    encode_parts(&h, b"", out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AmpsCodec;
    use tokio_util::codec::Decoder;

    fn frames(mut out: BytesMut) -> Vec<String> {
        let mut codec = AmpsCodec::default();
        let mut v = Vec::new();
        while let Some(f) = codec.decode(&mut out).unwrap() {
            v.push(f.header.to_json());
        }
        v
    }

    #[test]
    fn failure_splits_the_run() {
        let mut q = AckQueue::default();
        q.success(1, 1);
        q.success(2, 2);
        q.failure(2, 3, Reason::NotEntitled);
        q.success(3, 4);
        q.success(4, 5);
        let mut out = BytesMut::new();
        assert!(q.drain(4, &mut out));
        assert_eq!(
            frames(out),
            [
                r#"{"c":"ack","a":"persisted","status":"success","s":2}"#,
                r#"{"c":"ack","a":"persisted","status":"failure","reason":"not entitled","s":3}"#,
                r#"{"c":"ack","a":"persisted","status":"success","s":5}"#,
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn only_the_durable_prefix_goes_out() {
        let mut q = AckQueue::default();
        q.success(1, 10);
        q.success(2, 11);
        q.flush(2, Some("f".into()), AckTypes::PERSISTED);
        let mut out = BytesMut::new();
        q.drain(1, &mut out);
        assert_eq!(
            frames(out),
            [r#"{"c":"ack","a":"persisted","status":"success","s":10}"#]
        );
        assert!(q.has_flush());
        let mut out = BytesMut::new();
        q.drain(2, &mut out);
        assert_eq!(
            frames(out),
            [
                r#"{"c":"ack","a":"persisted","status":"success","s":11}"#,
                r#"{"c":"ack","cid":"f","a":"persisted","status":"success"}"#,
            ]
        );
        assert!(!q.has_flush());
    }
}
