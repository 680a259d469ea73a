//! `AmpsCodec`: length-prefixed AMPS frames for tokio-util's `Framed`.
//!
//! Decoding reads the 4-byte big-endian length, refuses anything above the configured maximum
//! with [`ProtocolError::FrameTooLarge`] (before buffering it), waits for the whole frame, then
//! parses the header in place; the body is a zero-copy slice of the read buffer. Zero-length frames
//! are legal and skipped. A stream that ends inside a frame is [`ProtocolError::Truncated`].
//! Encoding accepts a [`Frame`], or `Bytes` that already hold complete
//! encoded frames (the client encodes batches itself and hands them over in one piece).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::Frame;
use super::header::Header;
use crate::error::ProtocolError;

/// Default maximum frame size: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// The frame codec.
#[derive(Clone, Copy, Debug)]
pub struct AmpsCodec {
    max_frame: usize,
}

impl Default for AmpsCodec {
    fn default() -> AmpsCodec {
        AmpsCodec {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl AmpsCodec {
    /// A codec refusing frames (header + body) above `max_frame` bytes.
    pub fn new(max_frame: usize) -> AmpsCodec {
        AmpsCodec { max_frame }
    }

    /// The configured maximum.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Decoder for AmpsCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        match split_frame(src, self.max_frame)? {
            Some(bytes) => decode_frame(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// At end of stream, a partial frame is [`ProtocolError::Truncated`], not a silent loss.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
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

/// Splits the next length-prefixed frame off `src`: `None` until a whole one has arrived
/// (room for it is reserved), a frame over `max_frame` is refused before it is buffered, and
/// empty frames (heartbeat padding) are skipped.
pub(crate) fn split_frame(
    src: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<Bytes>, ProtocolError> {
    loop {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len == 0 {
            src.advance(4);
            continue;
        }
        if len > max_frame {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: max_frame,
            });
        }
        if src.len() < 4 + len {
            if src.capacity() < 4 + len {
                src.reserve(4 + len - src.len());
            }
            return Ok(None);
        }
        src.advance(4);
        return Ok(Some(src.split_to(len).freeze()));
    }
}

/// Parses one frame's bytes (without the length prefix).
pub fn decode_frame(bytes: Bytes) -> Result<Frame, ProtocolError> {
    let (header, used) = Header::parse(&bytes)?;
    Ok(Frame {
        header,
        body: bytes.slice(used..),
    })
}

impl Encoder<Frame> for AmpsCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        Encoder::<&Frame>::encode(self, &frame, dst)
    }
}

impl Encoder<&Frame> for AmpsCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let start = dst.len();
        frame.encode_into(dst);
        let len = dst.len() - start - 4;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(())
    }
}

impl Encoder<Bytes> for AmpsCodec {
    type Error = ProtocolError;

    /// Appends bytes that already hold whole encoded frames.
    fn encode(&mut self, frames: Bytes, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        dst.extend_from_slice(&frames);
        Ok(())
    }
}
