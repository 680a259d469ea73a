//! Bookmark subscriptions over raw frames: replay from the transaction log (EPOCH, NOW, one
//! bookmark, a list, a timestamp), the hand-off to live with no gap and no duplicate (also
//! under concurrent writes and across a server restart), pacing by the socket, and bookmarks
//! the log does not hold.

mod common;

use actix_amps::protocol::{AckType, Command, Frame, Reason, Status};
use actix_amps::server::ServerHandle;
use common::*;

async fn publisher(server: &ServerHandle, name: &str) -> Conn {
    let mut p = Conn::connect(server.addr()).await;
    p.logon(name).await;
    p
}

/// Publishes `seqs` to `topic` as `{"n":seq}` and waits until they are persisted.
async fn publish_all(p: &mut Conn, topic: &str, seqs: std::ops::RangeInclusive<u64>) {
    let last = *seqs.end();
    for s in seqs {
        p.send(&publish(topic, s), format!(r#"{{"n":{s}}}"#).as_bytes())
            .await;
    }
    p.recv_until(|f| is_persisted(f) && f.header.seq >= Some(last))
        .await;
}

async fn bookmark_subscribe(c: &mut Conn, sub_id: &str, bookmark: &str, extra: &str) {
    c.send_json(
        &format!(
            r#"{{"c":"subscribe","t":"orders","cid":"c-{sub_id}","a":"processed","sub_id":"{sub_id}","bookmark":"{bookmark}"{extra}}}"#
        ),
        b"",
    )
    .await;
    let ack = c.recv().await;
    assert!(ack.is_ack_of(AckType::Processed), "{ack:?}");
    assert_eq!(ack.header.status, Some(Status::Success), "{ack:?}");
}

fn n(f: &Frame) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
    v["n"].as_u64().unwrap()
}

/// Receives `count` deliveries and returns their `n`s.
async fn take(c: &mut Conn, count: usize) -> Vec<u64> {
    let mut v = Vec::with_capacity(count);
    while v.len() < count {
        let f = c.recv().await;
        assert_eq!(f.header.command, Some(Command::Publish), "{f:?}");
        v.push(n(&f));
    }
    v
}

#[tokio::test]
async fn epoch_replays_everything_then_goes_live_with_completed_between() {
    let (_dir, server) = start(|c| c);
    let mut p = publisher(&server, "pub").await;
    publish_all(&mut p, "orders", 1..=100).await;
    publish_all(&mut p, "other", 101..=105).await;
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    s.send_json(
        r#"{"c":"subscribe","t":"orders","cid":"auto1","a":"processed,completed","sub_id":"B1","bookmark":"0"}"#,
        b"",
    )
    .await;
    assert!(s.recv().await.is_ack_of(AckType::Processed));
    let hash = fnv1a("pub");
    let mut replayed = Vec::new();
    loop {
        let f = s.recv().await;
        if f.is_ack_of(AckType::Completed) {
            assert_eq!(f.header.sub_id.as_deref(), Some("B1"));
            break;
        }
        assert_eq!(f.header.sub_ids.as_deref(), Some("B1"));
        assert_eq!(
            f.header.bookmark.as_deref(),
            Some(&*format!("{hash}|{}|", n(&f)))
        );
        replayed.push(n(&f));
    }
    assert_eq!(replayed, (1..=100).collect::<Vec<_>>());
    publish_all(&mut p, "orders", 106..=110).await;
    assert_eq!(take(&mut s, 5).await, (106..=110).collect::<Vec<_>>());
}

#[tokio::test]
async fn now_a_bookmark_a_list_and_a_timestamp() {
    let (_dir, server) = start(|c| c);
    let mut a = publisher(&server, "pub-a").await;
    let mut b = publisher(&server, "pub-b").await;
    publish_all(&mut a, "orders", 1..=50).await;
    publish_all(&mut b, "orders", 1001..=1050).await;
    publish_all(&mut a, "orders", 51..=60).await;
    let (ha, hb) = (fnv1a("pub-a"), fnv1a("pub-b"));
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;

    // One bookmark: everything after that message, whoever published it.
    bookmark_subscribe(&mut s, "one", &format!("{ha}|40|"), "").await;
    let got = take(&mut s, 70).await;
    let expected: Vec<u64> = (41..=50).chain(1001..=1050).chain(51..=60).collect();
    assert_eq!(got, expected);
    s.send_json(r#"{"c":"unsubscribe","cid":"u1","sub_id":"one"}"#, b"")
        .await;

    // A list: per publisher, nothing at or below its sequence.
    bookmark_subscribe(&mut s, "list", &format!("{hb}|1040|,{ha}|45|"), "").await;
    let got = take(&mut s, 25).await;
    let expected: Vec<u64> = (46..=50).chain(1041..=1050).chain(51..=60).collect();
    assert_eq!(got, expected);
    s.send_json(r#"{"c":"unsubscribe","cid":"u2","sub_id":"list"}"#, b"")
        .await;

    // A timestamp: from the first message written at or after it.
    bookmark_subscribe(&mut s, "ts", "0", r#","o":"timestamp""#).await;
    let mut stamps = Vec::new();
    for _ in 0..110 {
        let f = s.recv().await;
        stamps.push((
            n(&f),
            f.header.timestamp.clone().expect("ts when asked for"),
        ));
    }
    s.send_json(r#"{"c":"unsubscribe","cid":"u3","sub_id":"ts"}"#, b"")
        .await;
    let cut = stamps[70].1.clone();
    let expected: Vec<u64> = stamps
        .iter()
        .filter(|(_, t)| *t >= cut)
        .map(|(n, _)| *n)
        .collect();
    bookmark_subscribe(&mut s, "since", &cut, "").await;
    assert_eq!(take(&mut s, expected.len()).await, expected);
    s.send_json(r#"{"c":"unsubscribe","cid":"u4","sub_id":"since"}"#, b"")
        .await;

    // NOW: only what comes next.
    bookmark_subscribe(&mut s, "now", "0|1|", "").await;
    publish_all(&mut a, "orders", 61..=61).await;
    assert_eq!(take(&mut s, 1).await, [61]);
}

#[tokio::test]
async fn bookmarks_the_log_does_not_hold_fail_clearly() {
    let (_dir, server) = start(|c| c);
    let mut p = publisher(&server, "pub").await;
    publish_all(&mut p, "orders", 10..=20).await;
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    let hash = fnv1a("pub");
    for bm in [
        format!("{hash}|5|"),
        "77|1|".to_owned(),
        format!("{hash}|15|,77|1|"),
    ] {
        s.send_json(
            &format!(r#"{{"c":"subscribe","t":"orders","cid":"x","a":"processed","sub_id":"x","bookmark":"{bm}"}}"#),
            b"",
        )
        .await;
        let ack = s.recv().await;
        assert_eq!(ack.header.status, Some(Status::Failure), "{bm}");
        assert_eq!(
            ack.header.reason,
            Some(Reason::Other(
                "bookmark not found in the transaction log".into()
            )),
            "{bm}"
        );
    }
    // Past the publisher's last message: resume after its last one (nothing to replay).
    bookmark_subscribe(&mut s, "ahead", &format!("{hash}|99|"), "").await;
    publish_all(&mut p, "orders", 21..=21).await;
    assert_eq!(take(&mut s, 1).await, [21]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_joins_live_with_no_gap_and_no_duplicate_under_concurrent_writes() {
    const N: u64 = 6000;
    let (_dir, server) = start(|c| c);
    let mut p = publisher(&server, "writer").await;
    publish_all(&mut p, "orders", 1..=500).await;
    let writer = tokio::spawn(async move {
        for s in 501..=N {
            p.send(&publish("orders", s), format!(r#"{{"n":{s}}}"#).as_bytes())
                .await;
        }
        p.recv_until(|f| is_persisted(f) && f.header.seq == Some(N))
            .await;
    });
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    bookmark_subscribe(&mut s, "B", "0", "").await;
    let got = take(&mut s, N as usize).await;
    writer.await.unwrap();
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_replay_resumes_across_a_server_restart() {
    let (_dir, server) = start(|c| c);
    let mut p = publisher(&server, "pub").await;
    publish_all(&mut p, "orders", 1..=50).await;
    let hash = fnv1a("pub");
    // Note the bookmark of message 20 from a live replay before the restart.
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    bookmark_subscribe(&mut s, "B", "0", "").await;
    let mut bm20 = None;
    for _ in 0..20 {
        let f = s.recv().await;
        bm20 = f.header.bookmark.clone();
    }
    assert_eq!(bm20.as_deref(), Some(&*format!("{hash}|20|")));
    drop(s);
    drop(p);
    // A snapshot covers messages 1..=50: recovery replays nothing from the log, yet the
    // bookmarks of those messages are still found in the retained log.
    assert!(server.snapshot().expect("snapshot").is_some());
    server.restart().expect("restart");
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    bookmark_subscribe(&mut s, "B", bm20.as_deref().unwrap(), "").await;
    let mut p = publisher(&server, "pub").await;
    publish_all(&mut p, "orders", 51..=55).await;
    assert_eq!(take(&mut s, 35).await, (21..=55).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_long_replay_is_paced_by_the_socket() {
    // 3 MB of history through a connection allowed 128 KiB of unsent output.
    let (_dir, server) = start(|c| c.max_unsent_bytes(128 * 1024));
    let mut p = publisher(&server, "pub").await;
    let pad = "z".repeat(300);
    for s in 1..=10_000u64 {
        p.send(
            &publish("orders", s),
            format!(r#"{{"n":{s},"pad":"{pad}"}}"#).as_bytes(),
        )
        .await;
    }
    p.recv_until(|f| is_persisted(f) && f.header.seq == Some(10_000))
        .await;
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    bookmark_subscribe(&mut s, "B", "0", "").await;
    // Do not read for a while: the reader must wait for the socket, not overflow it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(take(&mut s, 10_000).await, (1..=10_000).collect::<Vec<_>>());
    assert_eq!(server.stats().slow_consumer_disconnects, 0);
}
