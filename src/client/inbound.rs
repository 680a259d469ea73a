//! The connection's read side: frames in batches, a gate that can hold reading, and the
//! split between the subscription side and everything else.
//!
//! - [`FrameBatchCodec`] cuts the byte stream into frames (4-byte big-endian length, at most
//!   `max_frame`, zero-length frames skipped) and hands over **every complete frame of a read
//!   at once**, as raw `Bytes` slices of the read buffer: one actor turn per read, not per
//!   frame, and no header parsed yet.
//! - [`ReadGate`] lets the subscription actor hold reading while a subscriber is behind
//!   (flow control: see `subscriptions/flow.rs`), and bounds how many batches may wait in the
//!   subscription actor's mailbox. It applies only while logged on, so a logon ack is always
//!   read.
//! - [`for_subscriptions`] tells, from the first bytes of a header, whether a frame is the
//!   subscription side's (deliveries, SOW results, acks of its commands): those go to it in
//!   batches, the rest is parsed and handled by the connection and the ack actor as before.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio_util::codec::Decoder;

use crate::error::ProtocolError;
use crate::protocol::header::scan_fields;

/// Command ids of the subscription side's commands start with this.
pub(crate) const SUBSCRIPTION_CID_PREFIX: &str = "sub-";

/// Batches of subscription frames allowed to wait in the subscription actor's mailbox.
const MAX_BACKLOG: usize = 4;

/// Read buffer size: one read takes up to this much.
pub(crate) const READ_BUFFER: usize = 256 * 1024;

/// Cuts the stream into raw frames, all complete frames of the buffer per item.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameBatchCodec {
    max_frame: usize,
}

impl FrameBatchCodec {
    pub fn new(max_frame: usize) -> FrameBatchCodec {
        FrameBatchCodec { max_frame }
    }

    fn next_frame(&self, src: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        crate::protocol::codec::split_frame(src, self.max_frame)
    }
}

impl Decoder for FrameBatchCodec {
    type Item = Vec<Bytes>;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut frames = Vec::new();
        loop {
            match self.next_frame(src) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                // Hand over what came before the bad frame first; the error repeats next call.
                Err(e) if frames.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok((!frames.is_empty()).then_some(frames))
    }

    /// A stream that ends inside a frame is [`ProtocolError::Truncated`], not a silent loss.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if let Some(frames) = self.decode(src)? {
            return Ok(Some(frames));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let have = src.len();
        let need = if have < 4 {
            4
        } else {
            4 + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
        };
        src.clear();
        Err(ProtocolError::Truncated { have, need })
    }
}

/// Holds reading while a subscriber is behind or the subscription actor has a backlog (module
/// docs). Shared by the connection and subscription actors, which run on one thread.
#[derive(Debug, Default)]
pub(crate) struct ReadGate {
    logged_on: Cell<bool>,
    paused: Cell<bool>,
    backlog: Cell<usize>,
    /// Times reading was held because of a pause (for stats and tests).
    pauses: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

impl ReadGate {
    fn is_open(&self) -> bool {
        !self.logged_on.get() || (!self.paused.get() && self.backlog.get() < MAX_BACKLOG)
    }

    fn wake(&self) {
        if self.is_open() {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// The connection logged on (`true`) or closed (`false`).
    pub fn set_logged_on(&self, on: bool) {
        self.logged_on.set(on);
        self.backlog.set(0);
        self.wake();
    }

    /// A subscriber fell behind (`true`) or caught up (`false`).
    pub fn set_paused(&self, paused: bool) {
        if paused && !self.paused.get() {
            self.pauses.set(self.pauses.get() + 1);
        }
        self.paused.set(paused);
        self.wake();
    }

    pub fn pauses(&self) -> u64 {
        self.pauses.get()
    }

    /// The connection handed a batch to the subscription actor.
    pub fn batch_sent(&self) {
        self.backlog.set(self.backlog.get() + 1);
    }

    /// The subscription actor took a batch from its mailbox.
    pub fn batch_taken(&self) {
        self.backlog.set(self.backlog.get().saturating_sub(1));
        self.wake();
    }
}

/// A stream that yields only while its gate is open.
pub(crate) struct Gated<S> {
    inner: S,
    gate: Rc<ReadGate>,
}

impl<S> Gated<S> {
    pub fn new(inner: S, gate: Rc<ReadGate>) -> Gated<S> {
        Gated { inner, gate }
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if !self.gate.is_open() {
            *self.gate.waker.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Whether a frame belongs to the subscription side: a delivery (`p`, `publish`,
/// `delta_publish`, `oof`), a SOW result part (`sow`, `group_begin`, `group_end`), or an ack
/// whose `cid` is one of its commands'. Looks at the header only as far as it must: `c` comes
/// first in every real frame. A header that does not scan is not claimed (the connection's own
/// parse reports it).
pub(crate) fn for_subscriptions(frame: &[u8]) -> bool {
    if let Some(rest) = frame.strip_prefix(br#"{"c":""#) {
        if let Some(end) = rest.iter().position(|b| *b == b'"') {
            match &rest[..end] {
                b"p" | b"publish" | b"delta_publish" | b"oof" | b"sow" | b"group_begin"
                | b"group_end" => return true,
                b"ack" => {}
                _ => return false,
            }
        }
    }
    let mut command: Option<Vec<u8>> = None;
    let mut ours = false;
    let scanned = scan_fields(frame, |key, v| match key {
        b"c" | b"cmd" => command = Some(v.unescaped.map_or(v.raw.to_vec(), String::into_bytes)),
        b"cid" | b"cmd_id" => {
            let cid = v.unescaped.as_deref().map_or(v.raw, str::as_bytes);
            ours = cid.starts_with(SUBSCRIPTION_CID_PREFIX.as_bytes());
        }
        _ => {}
    });
    if scanned.is_err() {
        return false;
    }
    match command.as_deref() {
        Some(b"ack") => ours,
        Some(
            b"p" | b"publish" | b"delta_publish" | b"oof" | b"sow" | b"group_begin" | b"group_end",
        ) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(parts: &[&[u8]]) -> BytesMut {
        let mut b = BytesMut::new();
        for p in parts {
            b.extend_from_slice(&(p.len() as u32).to_be_bytes());
            b.extend_from_slice(p);
        }
        b
    }

    #[test]
    fn a_batch_is_every_complete_frame() {
        let mut codec = FrameBatchCodec::new(100);
        let mut buf = framed(&[b"one", b"", b"three"]);
        buf.extend_from_slice(&[0, 0, 0, 9, b'x']);
        let batch = codec.decode(&mut buf).expect("ok").expect("frames");
        assert_eq!(batch, vec![Bytes::from("one"), Bytes::from("three")]);
        assert_eq!(
            codec.decode(&mut buf).expect("ok"),
            None,
            "partial frame waits"
        );
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(ProtocolError::Truncated { have: 5, need: 13 })
        ));
    }

    #[test]
    fn an_oversized_frame_comes_after_the_good_ones() {
        let mut codec = FrameBatchCodec::new(4);
        let mut buf = framed(&[b"ok", b"too long"]);
        assert_eq!(
            codec.decode(&mut buf).expect("first the good one"),
            Some(vec![Bytes::from("ok")])
        );
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtocolError::FrameTooLarge { len: 8, max: 4 })
        ));
    }

    #[test]
    fn which_frames_are_the_subscription_sides() {
        for yes in [
            &br#"{"c":"p","sids":"a"}x"#[..],
            br#"{"c":"oof","sids":"a"}"#,
            br#"{"c":"sow","query_id":"q"}"#,
            br#"{"c":"group_end"}"#,
            br#"{"c":"ack","cid":"sub-3","a":"processed"}"#,
            br#"{"a":"processed","cid":"sub-3","c":"ack"}"#,
            br#"{ "c" : "publish" }"#,
        ] {
            assert!(for_subscriptions(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &br#"{"c":"ack","a":"persisted","s":5}"#[..],
            br#"{"c":"ack","cid":"flush-1"}"#,
            br#"{"c":"heartbeat"}"#,
            br#"{"c":"logon"}"#,
            br#"garbage"#,
            br#"{"c":"ack","cid":"sub-1""#,
        ] {
            assert!(!for_subscriptions(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
