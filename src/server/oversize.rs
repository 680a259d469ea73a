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

/// Decoding state across reads: the codec and the oversized frame being skipped, if any.
#[derive(Debug)]
pub(crate) struct FrameReader {
    codec: AmpsCodec,
    skipping: Option<Skip>,
}

/// What one call of [`FrameReader::decode`] found.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// Whole frames within the limit, in order.
    pub frames: std::collections::VecDeque<Frame>,
    /// The header of an oversized frame that came right after `frames` and has been
    /// discarded: answer it after handling `frames`, then decode again.
    pub oversized: Option<Header>,
}

impl FrameReader {
    /// A reader for frames up to `max_frame` bytes (header + body).
    pub fn new(max_frame: usize) -> FrameReader {
        FrameReader {
            codec: AmpsCodec::new(max_frame),
            skipping: None,
        }
    }

    /// Decodes what `inbuf` holds, up to and including the first oversized frame. With
    /// `skip` false (before logon) an oversized frame is an error, as for the plain codec: a
    /// peer that has not logged on gets no such patience (a TLS hello sent to a plaintext
    /// listener, for one, looks like a huge frame and must be closed at once).
    pub fn decode(&mut self, inbuf: &mut BytesMut, skip: bool) -> Result<Decoded, ProtocolError> {
        let mut out = Decoded::default();
        loop {
            if let Some(skip) = &mut self.skipping {
                let n = skip.remaining.min(inbuf.len());
                inbuf.advance(n);
                skip.remaining -= n;
                if skip.remaining > 0 {
                    return Ok(out);
                }
                out.oversized = self.skipping.take().map(|s| s.header);
                return Ok(out);
            }
            if inbuf.len() >= 4 {
                let len = u32::from_be_bytes([inbuf[0], inbuf[1], inbuf[2], inbuf[3]]) as usize;
                if skip && len > self.codec.max_frame() {
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
                            return Ok(out);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            match self.codec.decode(inbuf)? {
                Some(frame) => out.frames.push_back(frame),
                None => return Ok(out),
            }
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
        let mut r = FrameReader::new(1000);
        let mut wire = frame(1, b"small");
        wire.extend_from_slice(&frame(2, &vec![b'x'; 50_000]));
        wire.extend_from_slice(&frame(3, b"after"));
        let mut inbuf = BytesMut::new();
        let mut seen = Vec::new();
        let mut oversized = Vec::new();
        // Fed 4 KiB at a time, as a socket would; the buffer never holds the big body.
        for chunk in wire.chunks(4096) {
            inbuf.extend_from_slice(chunk);
            loop {
                let d = r.decode(&mut inbuf, true).unwrap();
                seen.extend(d.frames.iter().map(|f| f.header.seq.unwrap()));
                match d.oversized {
                    Some(h) => oversized.push(h.seq.unwrap()),
                    None => break,
                }
            }
            assert!(inbuf.len() <= 8192, "buffered {}", inbuf.len());
        }
        assert_eq!(seen, [1, 3]);
        assert_eq!(oversized, [2]);
    }

    #[test]
    fn a_header_that_never_ends_is_an_error() {
        let mut r = FrameReader::new(1000);
        let mut inbuf = BytesMut::new();
        inbuf.extend_from_slice(&(1_000_000u32).to_be_bytes());
        inbuf.extend_from_slice(&vec![b'{'; HEADER_SCAN + 10]);
        assert!(r.decode(&mut inbuf, true).is_err());
    }

    #[test]
    fn before_logon_an_oversized_frame_is_an_error() {
        let mut r = FrameReader::new(1000);
        let mut inbuf = frame(1, &vec![b'x'; 5000]);
        assert!(r.decode(&mut inbuf, false).is_err());
    }
}
