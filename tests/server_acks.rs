//! Writes and their acks: conflation, the failure split, duplicates, flush, failure reasons,
//! stalls, and robustness against bad frames.

mod common;

use std::time::Duration;

use actix_amps::protocol::{AckType, AckTypes, Command, Header, Reason, Status};
use common::*;

#[tokio::test]
async fn many_publishes_get_few_cumulative_acks_ending_at_the_last_sequence() {
    let (_dir, server) = start(|c| c.ack_conflation(Duration::from_millis(20)));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("conflate").await;
    let mut bytes = bytes::BytesMut::new();
    for seq in 1..=5000u64 {
        actix_amps::protocol::encode_parts(&publish("orders", seq), b"{\"id\":1}", &mut bytes);
    }
    c.send_raw(&bytes).await;
    let acks = c.recv_until(|f| f.header.seq == Some(5000)).await;
    assert!(acks.iter().all(is_persisted), "{acks:?}");
    assert!(acks
        .iter()
        .all(|f| f.header.status == Some(Status::Success)));
    assert!(acks.len() < 100, "{} acks for 5000 publishes", acks.len());
    let seqs: Vec<u64> = acks.iter().filter_map(|f| f.header.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "cumulative acks increase: {seqs:?}"
    );
    c.expect_silence(Duration::from_millis(60)).await;
    assert_eq!(server.last_sequence("conflate"), Some(5000));
}

#[tokio::test]
async fn logon_option_sets_the_conflation_interval() {
    let (_dir, server) = start(|c| c.ack_conflation(Duration::from_secs(30)));
    let mut c = Conn::connect(server.addr()).await;
    let mut h = logon("opt");
    h.options = Some("ack_conflation=10ms".into());
    c.logon_with(h).await;
    c.send(&publish("orders", 1), b"{}").await;
    let f = c
        .recv_within(Duration::from_secs(2))
        .await
        .expect("ack well before 30 s")
        .expect("open");
    assert!(is_persisted(&f));
    assert_eq!(f.header.seq, Some(1));
}

#[tokio::test]
async fn a_failure_splits_the_run_of_successes() {
    let (_dir, server) = start(|c| {
        c.deny_write("^secret$")
            .ack_conflation(Duration::from_millis(50))
    });
    let mut c = Conn::connect(server.addr()).await;
    c.logon("split").await;
    let mut bytes = bytes::BytesMut::new();
    for seq in 1..=5u64 {
        let topic = if seq == 3 { "secret" } else { "orders" };
        actix_amps::protocol::encode_parts(&publish(topic, seq), b"{}", &mut bytes);
    }
    c.send_raw(&bytes).await;
    let acks = c.recv_until(|f| f.header.seq == Some(5)).await;
    let got: Vec<(Status, u64, Option<Reason>)> = acks
        .iter()
        .map(|f| {
            (
                f.header.status.clone().unwrap(),
                f.header.seq.unwrap(),
                f.header.reason.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Status::Success, 2, None),
            (Status::Failure, 3, Some(Reason::NotEntitled)),
            (Status::Success, 5, None),
        ]
    );
}

#[tokio::test]
async fn pipelined_duplicates_are_refused_and_not_written() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("dups").await;
    let mut bytes = bytes::BytesMut::new();
    for seq in [1u64, 2, 2, 3, 1] {
        actix_amps::protocol::encode_parts(&publish("orders", seq), b"{}", &mut bytes);
    }
    c.send_raw(&bytes).await;
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    let frames = c.recv_until(|f| is_cid(f, "f")).await;
    let failures: Vec<_> = frames
        .iter()
        .filter(|f| f.header.status == Some(Status::Failure))
        .map(|f| (f.header.seq.unwrap(), f.header.reason.clone().unwrap()))
        .collect();
    assert_eq!(failures, [(2, Reason::Duplicate), (1, Reason::Duplicate)]);
    let last_success = frames
        .iter()
        .filter(|f| is_persisted(f) && f.header.status == Some(Status::Success))
        .last();
    assert_eq!(last_success.and_then(|f| f.header.seq), Some(3));
    server.stop();
    let journal = actix_amps::server::Journal::read(server.data_dir()).unwrap();
    assert_eq!(journal.client("dups").unwrap().sequences, [1, 2, 3]);
}

#[tokio::test]
async fn flush_acks_come_after_every_persisted_ack_before_them() {
    let (_dir, server) = start(|c| c.ack_conflation(Duration::from_secs(10)));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("flusher").await;
    for seq in 1..=10u64 {
        c.send(&publish("orders", seq), b"{}").await;
    }
    c.send(&flush("f1", AckTypes::PERSISTED), b"").await;
    let frames = c.recv_until(|f| is_cid(f, "f1")).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(is_persisted(&frames[0]));
    assert_eq!(frames[0].header.seq, Some(10));
    assert!(frames[1].is_ack_of(AckType::Persisted));
    assert_eq!(frames[1].header.status, Some(Status::Success));

    c.send(&publish("orders", 11), b"{}").await;
    c.send(&flush("f2", AckTypes::PROCESSED), b"").await;
    let frames = c.recv_until(|f| is_cid(f, "f2")).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].header.seq, Some(11));
    assert!(frames[1].is_ack_of(AckType::Processed));

    // A flush with nothing outstanding is answered at once.
    c.send(&flush("f3", AckTypes::PROCESSED), b"").await;
    let f = c.recv().await;
    assert!(is_cid(&f, "f3"));
}

#[tokio::test]
async fn failures_carry_real_reasons_on_processed_and_persisted_acks() {
    let (_dir, server) = start(|c| {
        c.max_message_size(16)
            .ack_conflation(Duration::from_millis(1))
    });
    let mut c = Conn::connect(server.addr()).await;
    c.logon("reasons").await;
    let cases: [(&str, &[u8], Reason); 5] = [
        ("", b"{}", Reason::NoTopic),
        ("has space", b"{}", Reason::InvalidTopic),
        ("ctl\u{1}", b"{}", Reason::InvalidTopic),
        ("big", &[b'x'; 17], Reason::MessageTooLarge),
        ("ok", b"{}", Reason::Other("-".into())),
    ];
    for (i, (topic, body, reason)) in cases.iter().enumerate() {
        let seq = i as u64 + 1;
        let mut h = publish(topic, seq);
        if topic.is_empty() {
            h.topic = None;
        }
        h.cid = Some(format!("c{seq}"));
        h.ack_type = AckTypes::PROCESSED.with(AckType::Persisted);
        c.send(&h, body).await;
        let processed = c.recv().await;
        assert!(processed.is_ack_of(AckType::Processed));
        assert_eq!(processed.header.cid, h.cid);
        let persisted = c.recv().await;
        assert!(is_persisted(&persisted));
        assert_eq!(persisted.header.seq, Some(seq));
        if matches!(reason, Reason::Other(_)) {
            assert_eq!(processed.header.status, Some(Status::Success));
            assert_eq!(persisted.header.status, Some(Status::Success));
        } else {
            assert_eq!(processed.header.status, Some(Status::Failure));
            assert_eq!(processed.header.reason.as_ref(), Some(reason));
            assert_eq!(persisted.header.status, Some(Status::Failure));
            assert_eq!(persisted.header.reason.as_ref(), Some(reason));
        }
    }
}

#[tokio::test]
async fn no_ack_requested_means_no_ack() {
    let (_dir, server) = start(|c| c.ack_conflation(Duration::from_millis(1)));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("quiet").await;
    let h = Header {
        command: Some(Command::Publish),
        topic: Some("orders".into()),
        ..Header::default()
    };
    c.send(&h, b"{}").await;
    let mut h2 = publish("orders", 5);
    h2.ack_type = AckTypes::NONE;
    c.send(&h2, b"{}").await;
    c.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(server.last_sequence("quiet"), Some(5));
}

#[tokio::test]
async fn stalled_acks_are_withheld_then_sent() {
    let (_dir, server) = start(|c| c.ack_conflation(Duration::from_millis(1)));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("staller").await;
    server.stall_acks();
    for seq in 1..=3u64 {
        c.send(&publish("orders", seq), b"{}").await;
    }
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    c.expect_silence(Duration::from_millis(150)).await;
    // Still logged while stalled.
    assert_eq!(server.last_sequence("staller"), Some(3));
    server.resume_acks();
    let frames = c.recv_until(|f| is_cid(f, "f")).await;
    assert_eq!(frames[0].header.seq, Some(3));
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_only_that_connection() {
    let (_dir, server) = start(|c| c.max_message_size(1024));
    let mut good = Conn::connect(server.addr()).await;
    good.logon("good").await;

    let mut bad = Conn::connect(server.addr()).await;
    bad.logon("bad").await;
    let junk = b"{\"c\":\"p\",\"t\":";
    let mut raw = (junk.len() as u32).to_be_bytes().to_vec();
    raw.extend_from_slice(junk);
    bad.send_raw(&raw).await;
    bad.expect_closed(WAIT).await;

    // Over the limit, and no header within the first 64 KiB: not AMPS.
    let mut huge = Conn::connect(server.addr()).await;
    huge.logon("huge").await;
    let mut raw = (512u32 << 20).to_be_bytes().to_vec();
    raw.extend(std::iter::repeat_n(b'x', 64 * 1024 + 16));
    huge.send_raw(&raw).await;
    huge.expect_closed(WAIT).await;

    let mut garbage = Conn::connect(server.addr()).await;
    garbage.send_raw(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd]).await;
    garbage.expect_closed(WAIT).await;

    good.send(&flush("f", AckTypes::PROCESSED), b"").await;
    assert!(is_cid(&good.recv().await, "f"));
}

/// A write over the frame limit is answered `message too large` for its sequence and the
/// connection stays up: the server reads the header and discards the body unbuffered.
#[tokio::test]
async fn an_oversized_write_is_refused_and_the_connection_stays() {
    let (_dir, server) = start(|c| c.max_message_size(1024));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("big").await;
    c.send(&publish("t", 1), b"small").await;
    // 8 MiB: far over the limit (and its 64 KiB allowance for headers).
    c.send(&publish("t", 2), &vec![b'x'; 8 << 20]).await;
    c.send(&publish("t", 3), b"after").await;
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    let frames = c.recv_until(|f| is_cid(f, "f")).await;
    let acks: Vec<(Option<u64>, Option<Status>, Option<Reason>)> = frames
        .iter()
        .filter(|f| is_persisted(f))
        .map(|f| {
            (
                f.header.seq,
                f.header.status.clone(),
                f.header.reason.clone(),
            )
        })
        .collect();
    assert_eq!(
        acks,
        [
            (Some(1), Some(Status::Success), None),
            (
                Some(2),
                Some(Status::Failure),
                Some(Reason::MessageTooLarge)
            ),
            (Some(3), Some(Status::Success), None),
        ]
    );
    assert_eq!(server.last_sequence("big"), Some(3));
    let stats = server.stats();
    assert_eq!(stats.connections, 1, "still connected: {stats:?}");
}

#[tokio::test]
async fn unsupported_commands_are_refused_with_not_supported() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sub").await;
    let h = Header {
        command: Some(Command::Other("queue_thing".into())),
        cid: Some("s1".into()),
        topic: Some("orders".into()),
        ack_type: AckTypes::PROCESSED,
        ..Header::default()
    };
    c.send(&h, b"").await;
    let f = c.recv().await;
    assert_eq!(f.header.reason, Some(Reason::NotSupported));
    assert_eq!(f.header.cid.as_deref(), Some("s1"));
}
