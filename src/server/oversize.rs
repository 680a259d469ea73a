//! Frames over the size limit: refused with a failure ack, not a closed connection.
//!
//! A frame whose length prefix is over the session's frame limit is never buffered. The
//! decoder reads its header (which must end within [`HEADER_SCAN`] bytes of the frame's start),
//! then discards the rest of the frame as it arrives, however large, and hands the header back
//! so the session answers it like any refused write: a `message too large` failure ack for its
//! sequence, durable like every refusal. The connection stays up, so a client that replays its
//! store after a reconnect is not sent into a loop by one message it can never deliver.
//!
//! Frames within the limit go to [`AmpsCodec`] as before; a header that does not parse within
//! the scan window is a protocol error (the connection closes).

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use crate::error::ProtocolError;
use crate::protocol::{AmpsCodec, Frame, Header};

/// An oversized frame's header must end within this many bytes.
pub(crate) const HEADER_SCAN: usize = 64 * 1024;

/// The skip in progress.
#[derive(Debug)]
struct Skip {
    /// Bytes of the frame (prefix included) still to discard.
    remaining: usize,
    header: Header,
}

/// One thing decoded.
#[derive(Debug)]
pub(crate) enum Item {
    /// A whole frame within the limit.
    Frame(Frame),
    /// The header of an oversized frame, whose bytes have all been discarded.
    Oversized(Header),
}

/// Decoding state across reads: the oversized frame being skipped, if any.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    skipping: Option<Skip>,
}

impl FrameReader {
    /// Whether an oversized frame is being discarded (a frame has begun and not ended).
    pub fn is_skipping(&self) -> bool {
        self.skipping.is_some()
    }

    /// The next frame in `inbuf` of at most `limit` bytes (header + body), or the header of
    /// an oversized one once all of it has been discarded; `None` when more input is needed.
    /// With `skip` false (before logon) an oversized frame is an error, as for the plain
    /// codec: a peer that has not logged on gets no such patience (a TLS hello sent to a
    /// plaintext listener, for one, looks like a huge frame and must be closed at once).
    pub fn next(
        &mut self,
        inbuf: &mut BytesMut,
        limit: usize,
        skip: bool,
    ) -> Result<Option<Item>, ProtocolError> {
        loop {
            if let Some(s) = &mut self.skipping {
                let n = s.remaining.min(inbuf.len());
                inbuf.advance(n);
                s.remaining -= n;
                if s.remaining > 0 {
                    return Ok(None);
                }
                return Ok(self.skipping.take().map(|s| Item::Oversized(s.header)));
            }
            if skip && inbuf.len() >= 4 {
                let len = u32::from_be_bytes([inbuf[0], inbuf[1], inbuf[2], inbuf[3]]) as usize;
                if len > limit {
                    let want = 4 + len.min(HEADER_SCAN);
                    let avail = inbuf.len().min(want);
                    match Header::parse(&inbuf[4..avail]) {
                        Ok((header, _)) => {
                            self.skipping = Some(Skip {
                                remaining: 4 + len,
                                header,
                            });
                            continue;
                        }
                        // The header is not all here yet.
                        Err(_) if avail < want => {
                            inbuf.reserve(want - inbuf.len());
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            return Ok(AmpsCodec::new(limit).decode(inbuf)?.map(Item::Frame));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_parts;
    use crate::protocol::Command;

    fn frame(seq: u64, body: &[u8]) -> BytesMut {
        let h = Header {
            command: Some(Command::Publish),
            topic: Some("t".into()),
            seq: Some(seq),
            ..Header::default()
        };
        let mut b = BytesMut::new();
        encode_parts(&h, body, &mut b);
        b
    }

    #[test]
    fn an_oversized_frame_is_skipped_in_pieces_and_the_next_decodes() {
        let mut r = FrameReader::default();
        let mut wire = frame(1, b"small");
        wire.extend_from_slice(&frame(2, &vec![b'x'; 50_000]));
        wire.extend_from_slice(&frame(3, b"after"));
        let mut inbuf = BytesMut::new();
        let mut seen = Vec::new();
        let mut oversized = Vec::new();
        // Fed 4 KiB at a time, as a socket would; the buffer never holds the big body.
        for chunk in wire.chunks(4096) {
            inbuf.extend_from_slice(chunk);
            while let Some(item) = r.next(&mut inbuf, 1000, true).unwrap() {
                match item {
                    Item::Frame(f) => seen.push(f.header.seq.unwrap()),
                    Item::Oversized(h) => oversized.push(h.seq.unwrap()),
                }
            }
            assert!(inbuf.len() <= 8192, "buffered {}", inbuf.len());
        }
        assert_eq!(seen, [1, 3]);
        assert_eq!(oversized, [2]);
    }

    #[test]
    fn a_header_that_never_ends_is_an_error() {
        let mut r = FrameReader::default();
        let mut inbuf = BytesMut::new();
        inbuf.extend_from_slice(&(1_000_000u32).to_be_bytes());
        inbuf.extend_from_slice(&vec![b'{'; HEADER_SCAN + 10]);
        assert!(r.next(&mut inbuf, 1000, true).is_err());
    }

    #[test]
    fn before_logon_an_oversized_frame_is_an_error() {
        let mut r = FrameReader::default();
        let mut inbuf = frame(1, &vec![b'x'; 5000]);
        assert!(r.next(&mut inbuf, 1000, false).is_err());
    }
}
