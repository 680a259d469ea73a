//! Closing a connection for a reason: the log line, the counter, the closing notice
//! (`protocol::notice`) and, for a peer that does not read, cutting the output it will never
//! read down to a frame boundary so the notice can follow.
//!
//! A session's output buffer holds whole encoded frames, of which the socket may have taken a
//! part of the first. [`OutFrames`] follows where that first frame ends as bytes are written,
//! so [`OutFrames::cut`] can drop every frame not yet begun without ever cutting one in two
//! (a cut frame would make the rest of the stream garbage to the client).

use bytes::{Buf, BytesMut};

use crate::protocol::{closing_notice, encode_parts, Reason};

/// Tracks the frame boundary at the front of a session's output buffer.
#[derive(Debug, Default)]
pub(crate) struct OutFrames {
    /// Bytes of the partly written frame still at the front of the buffer (0: the buffer
    /// starts on a frame boundary).
    head_left: usize,
}

impl OutFrames {
    /// `n` bytes of `out` were written: drops them and follows the frame boundary.
    pub fn advance(&mut self, out: &mut BytesMut, n: usize) {
        let mut boundary = self.head_left;
        while boundary < n {
            // `out` holds whole frames, so a length prefix starts at every boundary below its
            // end; a buffer that does not (never built by this server) ends the walk.
            let Some(prefix) = out.get(boundary..boundary + 4) else {
                boundary = n;
                break;
            };
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            boundary += 4 + len;
        }
        self.head_left = boundary - n;
        out.advance(n);
    }

    /// Drops every frame of `out` the socket has not begun to take, keeping the rest of the
    /// one it has.
    pub fn cut(&mut self, out: &mut BytesMut) {
        out.truncate(self.head_left.min(out.len()));
    }
}

/// Appends the closing notice for `reason` to `out`.
pub(crate) fn notice(out: &mut BytesMut, reason: Reason) {
    encode_parts(&closing_notice(reason), b"", out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AmpsCodec, Command, Header};
    use proptest::prelude::*;
    use tokio_util::codec::Decoder;

    fn frames(n: usize, body: usize) -> BytesMut {
        let mut out = BytesMut::new();
        for i in 0..n {
            let h = Header {
                command: Some(Command::Ack),
                seq: Some(i as u64),
                ..Header::default()
            };
            encode_parts(&h, &vec![b'x'; body + i], &mut out);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the socket took, in whatever pieces, what it took plus what is left after
        /// a cut and a notice decodes as whole frames ending in the notice.
        #[test]
        fn a_cut_never_splits_a_frame(
            n in 1usize..20,
            body in 0usize..50,
            writes in proptest::collection::vec(0usize..120, 0..8),
        ) {
            let mut out = frames(n, body);
            let mut sent = BytesMut::new();
            let mut track = OutFrames::default();
            for w in writes {
                let w = w.min(out.len());
                sent.extend_from_slice(&out[..w]);
                track.advance(&mut out, w);
            }
            track.cut(&mut out);
            notice(&mut out, Reason::SlowConsumer);
            sent.extend_from_slice(&out);
            let mut codec = AmpsCodec::default();
            let mut last = None;
            while let Some(f) = codec.decode(&mut sent).expect("whole frames") {
                last = Some(f);
            }
            prop_assert!(sent.is_empty(), "{} bytes left over", sent.len());
            let last = last.expect("at least the notice");
            prop_assert_eq!(
                crate::protocol::closing_reason(&last.header),
                Some(&Reason::SlowConsumer)
            );
        }
    }

    #[test]
    fn cut_keeps_only_the_rest_of_the_frame_begun() {
        let mut out = frames(3, 10);
        let first = out.len() / 3;
        let mut track = OutFrames::default();
        track.advance(&mut out, 5);
        track.cut(&mut out);
        assert!(out.len() < first && !out.is_empty());
        let mut out = frames(3, 10);
        let mut track = OutFrames::default();
        let whole_first = 4 + u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        track.advance(&mut out, whole_first);
        track.cut(&mut out);
        assert!(out.is_empty(), "on a boundary nothing is kept");
    }
}
