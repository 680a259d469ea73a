//! `AmpsCodec` on arbitrary bytes.
//!
//! Input layout: byte 0 picks the codec's maximum frame size (`16 * (b + 1)`, so 16..=4096
//! bytes), bytes 1..3 seed the chunk splitter, the rest is the byte stream. Checks:
//! - decoding never panics;
//! - feeding the stream in one piece and in random small chunks gives the same frames, the same
//!   outcome (error or not) and the same leftover bytes, so partial-frame handling is exercised;
//! - every decoded frame re-encodes and decodes to an equal frame, and re-encoding is a fixed
//!   point (encode(decode(encode(f))) is byte-identical to encode(f)).

#![no_main]

use actix_amps::protocol::{AmpsCodec, Frame, DEFAULT_MAX_FRAME};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

/// What one pass of the decoder produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    /// `Some(error text)` when decoding stopped on an error.
    error: Option<String>,
    /// Bytes still buffered when the input ran out (only meaningful without an error).
    leftover: Vec<u8>,
}

/// Decodes until the buffer holds no complete frame; `false` on an error.
fn drain(codec: &mut AmpsCodec, buf: &mut BytesMut, out: &mut Outcome) -> bool {
    loop {
        match codec.decode(buf) {
            Ok(Some(frame)) => out.frames.push(frame),
            Ok(None) => return true,
            Err(e) => {
                out.error = Some(e.to_string());
                return false;
            }
        }
    }
}

fn decode_whole(max: usize, stream: &[u8]) -> Outcome {
    let mut codec = AmpsCodec::new(max);
    let mut buf = BytesMut::from(stream);
    let mut out = Outcome {
        frames: Vec::new(),
        error: None,
        leftover: Vec::new(),
    };
    if drain(&mut codec, &mut buf, &mut out) {
        out.leftover = buf.to_vec();
    }
    out
}

fn decode_chunked(max: usize, stream: &[u8], mut seed: u32) -> Outcome {
    let mut codec = AmpsCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Outcome {
        frames: Vec::new(),
        error: None,
        leftover: Vec::new(),
    };
    let mut rest = stream;
    while !rest.is_empty() {
        // xorshift32; seed 0 would stay 0, so force a bit on.
        seed |= 1;
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        // Mostly tiny chunks (1..=8 bytes, splitting length prefixes and headers), sometimes big.
        let n = if seed.is_multiple_of(8) {
            1 + (seed >> 8) as usize % 512
        } else {
            1 + (seed >> 8) as usize % 8
        };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        if !drain(&mut codec, &mut buf, &mut out) {
            return out;
        }
    }
    out.leftover = buf.to_vec();
    out
}

fn encode(frame: &Frame) -> BytesMut {
    // The re-encoded header may be longer than the original (escapes, numbers written as
    // strings), so it is checked against the default maximum, not the small one.
    let mut codec = AmpsCodec::default();
    let mut buf = BytesMut::new();
    codec
        .encode(frame, &mut buf)
        .expect("a decoded frame re-encodes");
    buf
}

fn check_roundtrip(frame: &Frame) {
    let wire = encode(frame);
    let mut codec = AmpsCodec::new(DEFAULT_MAX_FRAME);
    let mut buf = wire.clone();
    let again = codec
        .decode(&mut buf)
        .expect("a re-encoded frame decodes")
        .expect("a re-encoded frame is complete");
    assert!(buf.is_empty(), "re-encoded frame left {} bytes", buf.len());
    assert_eq!(&again, frame, "decode(encode(frame)) != frame");
    assert_eq!(encode(&again), wire, "encoding is not a fixed point");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = 16 * (data[0] as usize + 1);
    let seed = u32::from(u16::from_le_bytes([data[1], data[2]]));
    let stream = &data[3..];

    let whole = decode_whole(max, stream);
    let chunked = decode_chunked(max, stream, seed);
    assert_eq!(
        whole, chunked,
        "chunked decoding differs from decoding in one piece"
    );
    for frame in &whole.frames {
        check_roundtrip(frame);
    }
});
