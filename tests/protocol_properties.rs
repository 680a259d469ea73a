//! Property tests: encode then decode is the identity; arbitrary bytes never panic the decoder
//! or the header reader. The case budget is fixed so `cargo test` stays quick and repeatable;
//! `fuzz/` holds the cargo-fuzz targets for longer runs by hand.

use actix_amps::protocol::{AckType, AckTypes, AmpsCodec, Command, Frame, Header, Status};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn opt_string() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<String>())
}

fn header() -> impl Strategy<Value = Header> {
    (
        proptest::option::of(prop_oneof![
            Just(Command::Publish),
            Just(Command::DeltaPublish),
            Just(Command::SowDelete),
            Just(Command::Ack),
            Just(Command::Flush),
            Just(Command::Logon),
        ]),
        opt_string(),
        opt_string(),
        any::<u8>(),
        proptest::option::of(any::<u64>()),
        opt_string(),
        proptest::option::of(prop_oneof![Just(Status::Success), Just(Status::Failure)]),
        proptest::option::of(any::<u64>()),
        opt_string(),
        opt_string(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(command, cid, topic, acks, seq, corr, status, exp, key, filter, matches)| {
                let ack_type = AckType::ALL
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| acks & (1 << i) != 0)
                    .fold(AckTypes::NONE, |s, (_, t)| s.with(*t));
                Header {
                    command,
                    cid,
                    topic,
                    ack_type,
                    seq,
                    correlation_id: corr,
                    status,
                    expiration: exp,
                    sow_key: key,
                    filter,
                    matches,
                    ..Header::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(h in header(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let frame = Frame::new(h, Bytes::from(body));
        let mut buf = BytesMut::new();
        AmpsCodec::default().encode(&frame, &mut buf).unwrap();
        let back = AmpsCodec::default().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(back, frame);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = AmpsCodec::new(4096);
        let mut buf = BytesMut::from(&bytes[..]);
        // Decode until it asks for more or errors; either is fine, a panic is not.
        for _ in 0..64 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn arbitrary_headers_never_panic_the_reader(s in ".{0,200}") {
        let _ = Header::parse(s.as_bytes());
    }

    #[test]
    fn json_shaped_garbage_never_panics(parts in proptest::collection::vec(
        prop_oneof![Just("{"), Just("}"), Just("\""), Just(":"), Just(","), Just("\\u"), Just("\\"),
                    Just("\"s\""), Just("1"), Just("[") , Just("]"), Just("null"), Just(" "), Just("d83d")],
        0..40)) {
        let s: String = parts.concat();
        let _ = Header::parse(s.as_bytes());
    }
}
