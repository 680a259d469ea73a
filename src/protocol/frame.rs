//! A frame: a parsed header and the body bytes that follow it.
//!
//! On the wire a frame is `[u32 big-endian N][header JSON][body]`, where `N` counts header and
//! body (PROTOCOL.md section 1). [`Frame::encode_into`] writes exactly that; decoding lives in
//! [`super::codec::AmpsCodec`].

use bytes::{BufMut, Bytes, BytesMut};

use super::ack::AckType;
use super::header::{Command, Header};

/// One AMPS message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The typed header.
    pub header: Header,
    /// The body (may be empty); shared, never copied on the way to the socket.
    pub body: Bytes,
}

impl Frame {
    /// A frame from a header and a body.
    pub fn new(header: Header, body: impl Into<Bytes>) -> Frame {
        Frame {
            header,
            body: body.into(),
        }
    }

    /// A frame with an empty body.
    pub fn header_only(header: Header) -> Frame {
        Frame {
            header,
            body: Bytes::new(),
        }
    }

    /// Appends the length prefix, header and body to `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        encode_parts(&self.header, &self.body, dst);
    }

    /// The frame's wire bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64 + self.body.len());
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Whether this is an ack frame whose `a` is exactly `t`.
    pub fn is_ack_of(&self, t: AckType) -> bool {
        self.header.command == Some(Command::Ack) && self.header.ack_type.is_only(t)
    }
}

/// Appends `[len][header][body]` to `dst` without building a [`Frame`].
pub fn encode_parts(header: &Header, body: &[u8], dst: &mut BytesMut) {
    let start = dst.len();
    dst.reserve(4 + 96 + body.len());
    dst.put_u32(0);
    header.write_to(dst);
    dst.put_slice(body);
    // Frames are bounded far below 4 GiB by the codec's maximum; saturate rather than wrap.
    let len = u32::try_from(dst.len() - start - 4).unwrap_or(u32::MAX);
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}
