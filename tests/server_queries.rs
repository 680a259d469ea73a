//! SOW queries and sow_and_subscribe over raw frames: the reply order the official client
//! needs, strict record framing, filter / top_n / orderby / batch_size / stats, regex topics,
//! pacing by the socket, and no gap and no duplicate between the query and the live part
//! under concurrent writes.

mod common;

use std::collections::BTreeMap;

use actix_amps::protocol::{sow_records, AckType, AckTypes, Command, Frame, Header};
use common::*;

async fn seed(
    server: &actix_amps::server::ServerHandle,
    topic: &str,
    ids: std::ops::RangeInclusive<u64>,
) {
    let mut p = Conn::connect(server.addr()).await;
    p.logon(&format!("seed-{topic}")).await;
    let last = *ids.end();
    for id in ids {
        let mut h = publish(topic, id);
        h.correlation_id = Some(format!("x{id}"));
        p.send(&h, format!(r#"{{"id":{id},"qty":{}}}"#, id * 10).as_bytes())
            .await;
    }
    p.recv_until(|f| is_persisted(f) && f.header.seq == Some(last))
        .await;
}

/// The frames of one query up to and including `last` (a predicate on the frame).
async fn until(c: &mut Conn, last: impl FnMut(&Frame) -> bool) -> Vec<(Frame, String)> {
    let mut v = Vec::new();
    let mut last = last;
    loop {
        let f = c.recv().await;
        let done = last(&f);
        v.push((f, c.last_header.clone()));
        if done {
            return v;
        }
    }
}

fn records(f: &Frame) -> Vec<(String, String)> {
    sow_records(&f.body)
        .expect("strict record framing")
        .into_iter()
        .map(|r| {
            (
                r.header.sow_key.unwrap(),
                String::from_utf8(r.data.to_vec()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_query_replies_in_the_order_the_official_client_needs() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    seed(&server, "orders", 1..=25).await;
    let mut c = Conn::connect(server.addr()).await;
    c.logon("q").await;
    c.send_json(
        r#"{"c":"sow","t":"orders","cid":"auto1","filter":"/id > 0","a":"processed,completed","query_id":"auto1","batch_size":10}"#,
        b"",
    )
    .await;
    let frames = until(&mut c, |f| f.is_ack_of(AckType::Completed)).await;
    let headers: Vec<&str> = frames.iter().map(|(_, h)| h.as_str()).collect();
    assert_eq!(
        headers[0],
        r#"{"c":"ack","cid":"auto1","a":"processed","status":"success"}"#
    );
    assert_eq!(
        headers[1],
        r#"{"c":"group_begin","t":"orders","query_id":"auto1"}"#
    );
    assert_eq!(
        headers[2],
        r#"{"c":"sow","t":"orders","query_id":"auto1","bs":10}"#
    );
    assert_eq!(
        headers[3],
        r#"{"c":"sow","t":"orders","query_id":"auto1","bs":10}"#
    );
    assert_eq!(
        headers[4],
        r#"{"c":"sow","t":"orders","query_id":"auto1","bs":5}"#
    );
    assert_eq!(
        headers[5],
        r#"{"c":"group_end","t":"orders","query_id":"auto1"}"#
    );
    assert_eq!(
        headers[6],
        r#"{"c":"ack","cid":"auto1","a":"completed","status":"success","query_id":"auto1","records_returned":25,"topic_matches":25}"#
    );
    assert_eq!(frames.len(), 7);
    let mut keys = Vec::new();
    for (f, _) in &frames[2..5] {
        let recs = records(f);
        assert_eq!(
            recs.len() as u64,
            f.header.batch_size.unwrap(),
            "bs is the record count"
        );
        keys.extend(recs.into_iter().map(|(k, _)| k));
    }
    let mut expected: Vec<String> = (1..=25).map(|i| i.to_string()).collect();
    expected.sort();
    assert_eq!(keys, expected, "key order");
    // Per-record headers carry k, l, then x and ts where known.
    let first = sow_records(&frames[2].0.body).unwrap().remove(0);
    assert_eq!(first.header.correlation_id.as_deref(), Some("x1"));
    assert!(first
        .header
        .timestamp
        .as_deref()
        .is_some_and(|t| t.len() == 23 && t.ends_with('Z')));
    assert_eq!(&first.data[..], br#"{"id":1,"qty":10}"#);
    // Nothing follows the completed ack.
    c.send(&flush("f", AckTypes::PROCESSED), b"").await;
    assert!(is_cid(&c.recv().await, "f"));
}

#[tokio::test]
async fn filter_top_n_orderby_and_stats_after_completed() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    seed(&server, "orders", 1..=25).await;
    let mut c = Conn::connect(server.addr()).await;
    c.logon("q").await;
    c.send_json(
        r#"{"c":"sow","t":"orders","cid":"auto6","filter":"/id > 5","a":"processed,completed,stats","query_id":"auto6","batch_size":2,"top_n":3,"orderby":"/qty DESC"}"#,
        b"",
    )
    .await;
    let frames = until(&mut c, |f| f.is_ack_of(AckType::Stats)).await;
    let recs: Vec<String> = frames
        .iter()
        .filter(|(f, _)| f.header.command == Some(Command::Sow))
        .flat_map(|(f, _)| records(f))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(recs, ["25", "24", "23"]);
    let n = frames.len();
    assert!(
        frames[n - 2].0.is_ack_of(AckType::Completed),
        "completed, then stats"
    );
    assert_eq!(
        frames[n - 1].1,
        r#"{"c":"ack","cid":"auto6","a":"stats","status":"success","query_id":"auto6","records_returned":3,"topic_matches":20}"#
    );
    // Only processed asked for: no completed, no stats.
    c.send_json(
        r#"{"c":"sow","t":"orders","cid":"a","a":"processed","query_id":"a","top_n":1}"#,
        b"",
    )
    .await;
    let frames = until(&mut c, |f| f.header.command == Some(Command::GroupEnd)).await;
    assert_eq!(frames.len(), 4);
    c.send(&flush("f", AckTypes::PROCESSED), b"").await;
    assert!(is_cid(&c.recv().await, "f"));
}

#[tokio::test]
async fn regex_queries_cover_every_sow_topic_one_topic_per_frame() {
    let (_dir, server) = start(|c| c.sow(r"^orders\.", &["/id"]));
    seed(&server, "orders.us", 1..=1).await;
    seed(&server, "orders.eu", 1..=2).await;
    let mut c = Conn::connect(server.addr()).await;
    c.logon("q").await;
    c.send_json(
        r#"{"c":"sow","t":"^orders\\..*","cid":"r","a":"processed,completed","query_id":"r","batch_size":10}"#,
        b"",
    )
    .await;
    let frames = until(&mut c, |f| f.is_ack_of(AckType::Completed)).await;
    let batches: Vec<(String, usize)> = frames
        .iter()
        .filter(|(f, _)| f.header.command == Some(Command::Sow))
        .map(|(f, _)| (f.header.topic.clone().unwrap(), records(f).len()))
        .collect();
    assert_eq!(batches, [("orders.eu".into(), 2), ("orders.us".into(), 1)]);
    assert_eq!(frames[1].0.header.topic.as_deref(), Some(r"^orders\..*"));
    // An empty result: group_begin, group_end, completed.
    c.send_json(
        r#"{"c":"sow","t":"orders.none","cid":"e","a":"processed,completed","query_id":"e"}"#,
        b"",
    )
    .await;
    let frames = until(&mut c, |f| f.is_ack_of(AckType::Completed)).await;
    let cmds: Vec<String> = frames
        .iter()
        .map(|(f, _)| f.header.command.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(cmds, ["ack", "group_begin", "group_end", "ack"]);
    assert_eq!(frames[3].0.header.records_returned, Some(0));
}

#[tokio::test]
async fn a_large_query_is_paced_by_the_socket_not_held_whole() {
    // 4 MB of records through a connection allowed 256 KiB of unsent output.
    let (_dir, server) = start(|c| c.sow("^big$", &["/id"]).max_unsent_bytes(256 * 1024));
    let mut p = Conn::connect(server.addr()).await;
    p.logon("big-pub").await;
    let pad = "y".repeat(1000);
    for id in 1..=4000u64 {
        p.send(
            &publish("big", id),
            format!(r#"{{"id":{id},"pad":"{pad}"}}"#).as_bytes(),
        )
        .await;
    }
    p.recv_until(|f| is_persisted(f) && f.header.seq == Some(4000))
        .await;
    let mut c = Conn::connect(server.addr()).await;
    c.logon("q").await;
    c.send_json(
        r#"{"c":"sow","t":"big","cid":"b","a":"processed,completed","query_id":"b","batch_size":100}"#,
        b"",
    )
    .await;
    // Read slowly at first: the server must wait for the socket, not disconnect.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let frames = until(&mut c, |f| f.is_ack_of(AckType::Completed)).await;
    let n: usize = frames
        .iter()
        .filter(|(f, _)| f.header.command == Some(Command::Sow))
        .map(|(f, _)| records(f).len())
        .sum();
    assert_eq!(n, 4000);
    assert_eq!(server.stats().slow_consumer_disconnects, 0);
}

/// Per key, the versions a subscriber saw: the query's, then the live ones.
type Seen = BTreeMap<u64, Vec<u64>>;

fn version(body: &[u8]) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    (v["id"].as_u64().unwrap(), v["v"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sow_and_subscribe_has_no_gap_and_no_duplicate_under_concurrent_writes() {
    const KEYS: u64 = 20;
    const VERSIONS: u64 = 150;
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    let mut p = Conn::connect(server.addr()).await;
    p.logon("writer").await;
    // Writes run on their own task: round v writes version v of every key.
    let writer = tokio::spawn(async move {
        let mut seq = 0;
        for v in 1..=VERSIONS {
            for id in 0..KEYS {
                seq += 1;
                p.send(
                    &publish("orders", seq),
                    format!(r#"{{"id":{id},"v":{v}}}"#).as_bytes(),
                )
                .await;
            }
            if v == 10 {
                // Let the subscriber in while writes are in full flow.
                p.recv_until(|f| is_persisted(f) && f.header.seq >= Some(seq))
                    .await;
            }
        }
        p.recv_until(|f| is_persisted(f) && f.header.seq == Some(seq))
            .await;
    });
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sas").await;
    // Wait until some history exists, then subscribe mid-stream.
    let mut probe = Conn::connect(server.addr()).await;
    probe.logon("probe").await;
    loop {
        probe.send_json(r#"{"c":"sow","t":"orders","cid":"p","a":"processed,completed","query_id":"p","top_n":1,"filter":"/v >= 5"}"#, b"").await;
        let fr = until(&mut probe, |f| f.is_ack_of(AckType::Completed)).await;
        if fr.last().unwrap().0.header.records_returned > Some(0) {
            break;
        }
    }
    c.send_json(
        r#"{"c":"sow_and_subscribe","t":"orders","cid":"auto7","a":"processed","sub_id":"auto7","query_id":"auto7","batch_size":7}"#,
        b"",
    )
    .await;
    let ack = c.recv().await;
    assert!(ack.is_ack_of(AckType::Processed));
    let mut seen: Seen = BTreeMap::new();
    let mut in_query = false;
    let mut query_done = false;
    let mut finished = 0;
    while finished < KEYS {
        let f = c.recv().await;
        match f.header.command.as_ref().unwrap() {
            Command::GroupBegin => in_query = true,
            Command::GroupEnd => {
                in_query = false;
                query_done = true;
            }
            Command::Sow => {
                assert!(in_query);
                for r in sow_records(&f.body).unwrap() {
                    let (id, v) = version(&r.data);
                    seen.entry(id).or_default().push(v);
                    finished += u64::from(v == VERSIONS);
                }
            }
            Command::Publish => {
                assert!(query_done, "a live message before group_end: {f:?}");
                assert_eq!(f.header.sub_ids.as_deref(), Some("auto7"));
                let (id, v) = version(&f.body);
                seen.entry(id).or_default().push(v);
                finished += u64::from(v == VERSIONS);
            }
            other => panic!("unexpected {other}: {f:?}"),
        }
    }
    writer.await.unwrap();
    assert_eq!(seen.len() as u64, KEYS);
    let mut from_query = 0;
    for (id, versions) in &seen {
        let first = versions[0];
        from_query += u64::from(first > 1);
        let expected: Vec<u64> = (first..=VERSIONS).collect();
        assert_eq!(versions, &expected, "key {id}: a gap or a duplicate");
    }
    assert!(from_query > 0, "the query part covered some history");
}

#[tokio::test]
async fn sow_and_subscribe_with_oof_completed_and_deltas() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    seed(&server, "orders", 1..=3).await;
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sas").await;
    c.send_json(
        r#"{"c":"sow_and_subscribe","t":"orders","cid":"auto9","filter":"/qty > 15","a":"processed,completed","sub_id":"auto9","query_id":"auto9","batch_size":4,"o":"oof,replace"}"#,
        b"",
    )
    .await;
    let frames = until(&mut c, |f| f.is_ack_of(AckType::Completed)).await;
    let cmds: Vec<String> = frames
        .iter()
        .map(|(f, _)| f.header.command.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(cmds, ["ack", "group_begin", "sow", "group_end", "ack"]);
    assert_eq!(records(&frames[2].0).len(), 2, "ids 2 and 3 match");
    let mut p = Conn::connect(server.addr()).await;
    p.logon("upd").await;
    p.send(&publish("orders", 1), br#"{"id":2,"qty":1}"#).await;
    let oof = c.recv().await;
    assert_eq!(oof.header.command, Some(Command::Oof));
    assert_eq!(
        oof.header.reason.as_ref().map(|r| r.as_str()),
        Some("match")
    );
    assert_eq!(oof.header.sub_ids.as_deref(), Some("auto9"));

    // sow_and_delta_subscribe as the official client sends it (default no_empties).
    c.send_json(
        r#"{"c":"sow_and_delta_subscribe","t":"orders","cid":"auto15","a":"processed","sub_id":"auto15","query_id":"auto15","batch_size":10,"o":"no_empties"}"#,
        b"",
    )
    .await;
    until(&mut c, |f| f.header.command == Some(Command::GroupEnd)).await;
    let delta = Header {
        command: Some(Command::DeltaPublish),
        ..publish("orders", 2)
    };
    p.send(&delta, br#"{"id":3,"qty":31}"#).await;
    // auto9 (plain, still matching) gets the merged record, auto15 the delta.
    let (full, d) = (c.recv().await, c.recv().await);
    assert_eq!(full.header.command, Some(Command::Publish));
    assert_eq!(full.header.sub_ids.as_deref(), Some("auto9"));
    assert_eq!(&full.body[..], br#"{"id":3,"qty":31}"#);
    assert_eq!(d.header.command, Some(Command::DeltaPublish));
    assert_eq!(d.header.sub_ids.as_deref(), Some("auto15"));
    assert_eq!(&d.body[..], br#"{"id":3,"qty":31}"#);
}

#[tokio::test]
async fn queries_in_progress_per_connection_are_bounded() {
    // Each query here outlasts the batch of commands: 2 MB of records to a client that
    // reads nothing until it has sent them all.
    let (_dir, server) = start(|c| c.sow("^big$", &["/id"]));
    let mut p = Conn::connect(server.addr()).await;
    p.logon("big-pub").await;
    let pad = "q".repeat(1000);
    for id in 1..=2000u64 {
        p.send(
            &publish("big", id),
            format!(r#"{{"id":{id},"pad":"{pad}"}}"#).as_bytes(),
        )
        .await;
    }
    p.recv_until(|f| is_persisted(f) && f.header.seq == Some(2000))
        .await;
    // A small receive buffer: no query can finish while the commands are read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = tokio::time::timeout(WAIT, socket.connect(server.addr()))
        .await
        .unwrap()
        .unwrap();
    let mut c = Conn::from_stream(stream);
    c.logon("greedy").await;
    let mut all = Vec::new();
    for i in 0..70 {
        let h =
            format!(r#"{{"c":"sow","t":"big","cid":"q{i}","a":"processed","query_id":"q{i}"}}"#);
        all.extend_from_slice(&(h.len() as u32).to_be_bytes());
        all.extend_from_slice(h.as_bytes());
    }
    c.send_raw(&all).await;
    let mut refused = Vec::new();
    let mut accepted = 0;
    while accepted + refused.len() < 70 {
        let f = c.recv().await;
        if f.is_ack_of(AckType::Processed) {
            match f.header.reason.as_ref() {
                None => accepted += 1,
                Some(r) => {
                    assert_eq!(
                        r.as_str(),
                        "too many subscriptions or queries on this connection"
                    );
                    refused.push(f.header.cid.clone().unwrap());
                }
            }
        }
    }
    assert_eq!(accepted, 64);
    assert_eq!(
        refused,
        (64..70).map(|i| format!("q{i}")).collect::<Vec<_>>()
    );
}
