//! Byte-level encode/decode of every frame shown in PROTOCOL.md.

use actix_amps::error::ProtocolError;
use actix_amps::protocol::{
    AckType, AckTypes, AmpsCodec, Command, Frame, Header, Password, PublishHeader, Reason, Status,
};
use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

fn wire(header_json: &str, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32((header_json.len() + body.len()) as u32);
    b.put_slice(header_json.as_bytes());
    b.put_slice(body);
    b
}

fn decode_one(bytes: &mut BytesMut) -> Frame {
    AmpsCodec::default()
        .decode(bytes)
        .expect("decodes")
        .expect("a whole frame")
}

fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    AmpsCodec::default()
        .encode(frame, &mut out)
        .expect("encodes");
    out
}

#[test]
fn logon_official_field_order() {
    let h = Header {
        command: Some(Command::Logon),
        cid: Some("auto0".into()),
        client_name: Some("pub-1".into()),
        user_id: Some("alice".into()),
        message_type: Some("json".into()),
        ack_type: AckTypes::PROCESSED,
        version: Some("0.1.0:rust".into()),
        password: Some(Password::new("secret")),
        options: Some("ack_conflation=10ms".into()),
        ..Header::default()
    };
    let expected = r#"{"c":"logon","cid":"auto0","client_name":"pub-1","user_id":"alice","mt":"json","a":"processed","version":"0.1.0:rust","pw":"secret","o":"ack_conflation=10ms"}"#;
    assert_eq!(encode(&Frame::header_only(h.clone())), wire(expected, b""));
    assert_eq!(decode_one(&mut wire(expected, b"")).header, h);
}

#[test]
fn logon_ack_from_the_server() {
    let json = r#"{"c":"ack","cid":"auto0","a":"processed","status":"success","client_name":"pub-1","version":"5.3.5.0","s":1795489811140000003,"bm":"7094790850998930143|1795489811140000003|"}"#;
    let f = decode_one(&mut wire(json, b""));
    assert_eq!(f.header.command, Some(Command::Ack));
    assert_eq!(f.header.cid.as_deref(), Some("auto0"));
    assert!(f.header.ack_type.is_only(AckType::Processed));
    assert_eq!(f.header.status, Some(Status::Success));
    assert_eq!(f.header.seq, Some(1795489811140000003));
    assert_eq!(
        f.header.bookmark.as_deref(),
        Some("7094790850998930143|1795489811140000003|")
    );
    assert_eq!(f.header.version.as_deref(), Some("5.3.5.0"));
    assert!(f.body.is_empty());
}

#[test]
fn publish_without_store_and_with_store() {
    let bare = Frame::new(
        Header {
            command: Some(Command::Publish),
            topic: Some("orders".into()),
            ..Header::default()
        },
        &br#"{"id":1}"#[..],
    );
    assert_eq!(
        encode(&bare),
        wire(r#"{"c":"p","t":"orders"}"#, br#"{"id":1}"#)
    );

    let json = r#"{"c":"p","t":"orders","a":"persisted","e":"30","x":"corr-1","s":1795489793738000001,"k":"key-1"}"#;
    let f = decode_one(&mut wire(json, br#"{"id":1}"#));
    assert_eq!(f.header.command, Some(Command::Publish));
    assert_eq!(f.header.expiration, Some(30));
    assert_eq!(f.header.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(f.header.sow_key.as_deref(), Some("key-1"));
    assert_eq!(&f.body[..], br#"{"id":1}"#);
    assert_eq!(encode(&f), wire(json, br#"{"id":1}"#));

    let mut borrowed = BytesMut::new();
    PublishHeader {
        command: Some(&Command::Publish),
        topic: "orders",
        ack_type: AckTypes::PERSISTED,
        expiration: Some(30),
        correlation_id: Some("corr-1"),
        seq: Some(1795489793738000001),
        sow_key: Some("key-1"),
        ..PublishHeader::default()
    }
    .encode(br#"{"id":1}"#, &mut borrowed);
    assert_eq!(borrowed, wire(json, br#"{"id":1}"#));
}

#[test]
fn delta_publish() {
    let json = r#"{"c":"delta_publish","t":"orders","a":"persisted","s":1795489793738000002}"#;
    let f = decode_one(&mut wire(json, br#"{"id":1,"qty":5}"#));
    assert_eq!(f.header.command, Some(Command::DeltaPublish));
    assert_eq!(f.header.seq, Some(1795489793738000002));
    assert_eq!(encode(&f), wire(json, br#"{"id":1,"qty":5}"#));
}

#[test]
fn sow_delete_official_form_and_stats_ack() {
    let json = r#"{"c":"sow_delete","t":"orders","cid":"7","filter":"/id = 1","a":"processed,stats","sub_id":"7","query_id":"7"}"#;
    let f = decode_one(&mut wire(json, b""));
    assert_eq!(f.header.command, Some(Command::SowDelete));
    assert_eq!(f.header.filter.as_deref(), Some("/id = 1"));
    assert!(f.header.ack_type.contains(AckType::Stats));
    // What the client writes is the official form, byte for byte.
    let mut ours = BytesMut::new();
    PublishHeader {
        command: Some(&Command::SowDelete),
        cid: Some("7"),
        topic: "orders",
        ack_type: AckTypes::PROCESSED.with(AckType::Stats),
        filter: Some("/id = 1"),
        ..PublishHeader::default()
    }
    .encode(b"", &mut ours);
    assert_eq!(ours, wire(json, b""));

    let stats = r#"{"c":"ack","cid":"7","a":"stats","status":"success","matches":2,"records_deleted":2,"topic_matches":10}"#;
    let f = decode_one(&mut wire(stats, b""));
    assert_eq!(
        (
            f.header.matches,
            f.header.records_deleted,
            f.header.topic_matches
        ),
        (Some(2), Some(2), Some(10))
    );
    assert_eq!(encode(&f), wire(stats, b""));
}

#[test]
fn persisted_acks_success_and_failure() {
    let ok = r#"{"c":"ack","a":"persisted","status":"success","s":5}"#;
    let f = decode_one(&mut wire(ok, b""));
    assert!(f.is_ack_of(AckType::Persisted));
    assert_eq!(f.header.cid, None);
    assert_eq!(encode(&f), wire(ok, b""));

    let fail = r#"{"c":"ack","a":"persisted","status":"failure","reason":"not entitled","s":3}"#;
    let f = decode_one(&mut wire(fail, b""));
    assert_eq!(f.header.status, Some(Status::Failure));
    assert_eq!(f.header.reason, Some(Reason::NotEntitled));
    assert_eq!(encode(&f), wire(fail, b""));

    // Only c, a and s: status defaults to success.
    let minimal = decode_one(&mut wire(r#"{"c":"ack","a":"persisted","s":9}"#, b""));
    assert_eq!(minimal.header.status, None);
    assert_eq!(minimal.header.seq, Some(9));
}

#[test]
fn flush_and_heartbeats() {
    for (h, json) in [
        (
            Header {
                command: Some(Command::Flush),
                cid: Some("auto3".into()),
                ack_type: AckTypes::PROCESSED,
                ..Header::default()
            },
            r#"{"c":"flush","cid":"auto3","a":"processed"}"#,
        ),
        (
            Header {
                command: Some(Command::Heartbeat),
                options: Some("start,10".into()),
                ..Header::default()
            },
            r#"{"c":"heartbeat","o":"start,10"}"#,
        ),
        (
            Header {
                command: Some(Command::Heartbeat),
                options: Some("beat".into()),
                ..Header::default()
            },
            r#"{"c":"heartbeat","o":"beat"}"#,
        ),
    ] {
        assert_eq!(encode(&Frame::header_only(h.clone())), wire(json, b""));
        assert_eq!(decode_one(&mut wire(json, b"")).header, h);
    }
}

#[test]
fn long_aliases_and_numbers_as_strings() {
    let json = r#"{"cmd":"publish","cmd_id":"1","topic":"t","seq":"42","ack_type":"persisted","opts":"x","bookmark":"b","expiration":"5","sub_ids":"a,b","auth_key":"k"}"#;
    let h = decode_one(&mut wire(json, b"")).header;
    assert_eq!(h.command, Some(Command::Publish));
    assert_eq!(h.cid.as_deref(), Some("1"));
    assert_eq!(h.topic.as_deref(), Some("t"));
    assert_eq!(h.seq, Some(42));
    assert!(h.ack_type.is_only(AckType::Persisted));
    assert_eq!(h.options.as_deref(), Some("x"));
    assert_eq!(h.bookmark.as_deref(), Some("b"));
    assert_eq!(h.expiration, Some(5));
    assert_eq!(h.sub_ids.as_deref(), Some("a,b"));
    assert_eq!(h.password.as_ref().map(Password::expose), Some("k"));
}

#[test]
fn zero_length_frames_are_skipped_and_partial_frames_wait() {
    let mut buf = BytesMut::new();
    buf.put_u32(0);
    buf.extend_from_slice(&wire(r#"{"c":"ack","a":"persisted","s":1}"#, b""));
    let full = buf.clone();
    let mut codec = AmpsCodec::default();
    let mut partial = BytesMut::from(&full[..full.len() - 3]);
    assert!(codec.decode(&mut partial).unwrap().is_none());
    let mut whole = full;
    assert_eq!(
        codec.decode(&mut whole).unwrap().unwrap().header.seq,
        Some(1)
    );
    assert!(whole.is_empty());
}

#[test]
fn oversized_frames_are_a_typed_error_before_buffering() {
    let mut codec = AmpsCodec::new(1024);
    let mut buf = BytesMut::new();
    buf.put_u32(1025);
    buf.put_slice(b"{");
    match codec.decode(&mut buf) {
        Err(ProtocolError::FrameTooLarge {
            len: 1025,
            max: 1024,
        }) => {}
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    let big = Frame::new(Header::default(), vec![b'x'; 2048]);
    let mut out = BytesMut::new();
    assert!(matches!(
        codec.encode(&big, &mut out),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
    assert!(out.is_empty(), "nothing half-written");
}

#[test]
fn every_written_header_is_compact() {
    let h = Header {
        command: Some(Command::SowDelete),
        cid: Some("1".into()),
        topic: Some("a b".into()),
        filter: Some("/x = 'y'".into()),
        ack_type: AckTypes::PROCESSED.with(AckType::Stats),
        ..Header::default()
    };
    let json = h.to_json();
    // Spaces only inside string values, never between tokens.
    let outside: String = json.split('"').step_by(2).collect();
    assert!(!outside.contains(char::is_whitespace), "{json}");
}
