//! Subscriptions over raw frames: acks and failures, deliveries routed by `sids` (one frame
//! per connection), regex topics, unsubscribe, deltas, oof, deny-read and slow subscribers.
//! Frames are sent exactly as the official Python client writes them (`docs/PROTOCOL.md`
//! section 12.4).

mod common;

use actix_amps::protocol::{AckType, AckTypes, Command, Frame, Header, Reason, Status};
use common::*;
use tokio::net::{TcpSocket, TcpStream};

/// Sends a subscription command and returns its processed ack (asserting success).
async fn subscribe(c: &mut Conn, json: &str) -> Frame {
    c.send_json(json, b"").await;
    let ack = c.recv().await;
    assert!(ack.is_ack_of(AckType::Processed), "{ack:?}");
    assert_eq!(ack.header.status, Some(Status::Success), "{ack:?}");
    ack
}

/// A publisher connection, logged on as `name`.
async fn publisher(server: &actix_amps::server::ServerHandle, name: &str) -> Conn {
    let mut p = Conn::connect(server.addr()).await;
    p.logon(name).await;
    p
}

/// Publishes `body` to `topic` with sequence `seq` (a persisted ack is asked for).
async fn pub_seq(p: &mut Conn, topic: &str, seq: u64, body: &str) {
    p.send(&publish(topic, seq), body.as_bytes()).await;
}

fn sids(f: &Frame) -> &str {
    f.header.sub_ids.as_deref().unwrap_or("")
}

fn body(f: &Frame) -> &str {
    std::str::from_utf8(&f.body).unwrap()
}

#[tokio::test]
async fn subscribe_is_acked_then_gets_durable_writes_routed_by_sids() {
    let (_dir, server) = start(|c| c);
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    let ack = subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed","sub_id":"auto1"}"#,
    )
    .await;
    assert_eq!(
        s.last_header,
        r#"{"c":"ack","cid":"auto1","a":"processed","status":"success"}"#
    );
    assert_eq!(ack.header.cid.as_deref(), Some("auto1"));

    let mut p = publisher(&server, "pub").await;
    pub_seq(&mut p, "orders", 1, r#"{"id":1}"#).await;
    let mut h = publish("orders", 2);
    h.correlation_id = Some("corr-2".into());
    p.send(&h, br#"{"id":2}"#).await;
    pub_seq(&mut p, "orders", 3, r#"{"id":3}"#).await;

    let d = s.recv().await;
    assert_eq!(d.header.command, Some(Command::Publish));
    assert_eq!(body(&d), r#"{"id":2}"#);
    let hash = fnv1a("pub");
    let lsn = d.header.seq.expect("s: the log position");
    assert_eq!(
        s.last_header,
        format!(
            r#"{{"c":"p","t":"orders","sids":"auto1","bm":"{hash}|2|","x":"corr-2","s":{lsn}}}"#
        )
    );
    let d = s.recv().await;
    assert_eq!(body(&d), r#"{"id":3}"#);
    assert_eq!(d.header.bookmark.as_deref(), Some(&*format!("{hash}|3|")));
    assert_eq!(d.header.seq, Some(lsn + 1), "log order");
    // Nothing is acked persisted on a subscription, and the publisher's acks are its own.
    let acks = p
        .recv_until(|f| is_persisted(f) && f.header.seq == Some(3))
        .await;
    assert!(acks.iter().all(is_persisted));
}

#[tokio::test]
async fn unsequenced_writes_get_bookmarks_of_their_own_publisher() {
    let (_dir, server) = start(|c| c);
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"t","cid":"c","a":"processed","sub_id":"S"}"#,
    )
    .await;
    let mut p = publisher(&server, "fire-and-forget").await;
    p.send_json(r#"{"c":"p","t":"t"}"#, b"a").await;
    p.send_json(r#"{"c":"p","t":"t"}"#, b"b").await;
    let (a, b) = (s.recv().await, s.recv().await);
    let (bm_a, bm_b) = (a.header.bookmark.unwrap(), b.header.bookmark.unwrap());
    let (pa, sa) = bm_a.trim_end_matches('|').split_once('|').unwrap();
    let (pb, sb) = bm_b.trim_end_matches('|').split_once('|').unwrap();
    assert!(
        bm_a.ends_with('|') && bm_b.ends_with('|'),
        "always with the separators"
    );
    assert_eq!(pa, pb);
    assert_ne!(
        pa,
        fnv1a("fire-and-forget").to_string(),
        "not the sequenced publisher"
    );
    assert_eq!(
        sa.parse::<u64>().unwrap(),
        a.header.seq.unwrap(),
        "the log position"
    );
    assert!(sb.parse::<u64>().unwrap() > sa.parse::<u64>().unwrap());
}

#[tokio::test]
async fn one_frame_per_connection_names_every_matching_subscription() {
    let (_dir, server) = start(|c| c);
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"orders","cid":"1","a":"processed","sub_id":"A"}"#,
    )
    .await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"orders","cid":"2","filter":"/id > 1","a":"processed","sub_id":"B"}"#,
    )
    .await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"^ord","cid":"3","a":"processed","sub_id":"C"}"#,
    )
    .await;
    let mut other = Conn::connect(server.addr()).await;
    other.logon("other").await;
    subscribe(
        &mut other,
        r#"{"c":"subscribe","t":"orders","cid":"1","a":"processed","sub_id":"A"}"#,
    )
    .await;

    let mut p = publisher(&server, "pub").await;
    pub_seq(&mut p, "orders", 1, r#"{"id":2}"#).await;
    pub_seq(&mut p, "orders", 2, r#"{"id":1}"#).await;
    let (f1, f2) = (s.recv().await, s.recv().await);
    assert_eq!((sids(&f1), body(&f1)), ("A,B,C", r#"{"id":2}"#));
    assert_eq!((sids(&f2), body(&f2)), ("A,C", r#"{"id":1}"#));
    let (g1, g2) = (other.recv().await, other.recv().await);
    assert_eq!(
        (sids(&g1), sids(&g2)),
        ("A", "A"),
        "sub ids belong to their connection"
    );
}

#[tokio::test]
async fn regex_topics_match_every_topic_they_cover() {
    let (_dir, server) = start(|c| c);
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"^orders\\..*","cid":"r","a":"processed","sub_id":"R"}"#,
    )
    .await;
    let mut p = publisher(&server, "pub").await;
    for (seq, topic) in [
        "orders",
        "orders.eu",
        "xorders.eu",
        "orders.us.x",
        "ordersXeu",
        "orders.end",
    ]
    .iter()
    .enumerate()
    {
        pub_seq(&mut p, topic, seq as u64 + 1, "{}").await;
    }
    // Deliveries come in log order, so anything wrongly delivered would show up before the last.
    let got: Vec<String> = s
        .recv_until(|f| f.header.topic.as_deref() == Some("orders.end"))
        .await
        .iter()
        .map(|f| f.header.topic.clone().unwrap())
        .collect();
    assert_eq!(got, ["orders.eu", "orders.us.x", "orders.end"]);
}

#[tokio::test]
async fn refused_commands_carry_amps_reasons_and_the_cid() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]).deny_read("^secret"));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sub").await;
    subscribe(
        &mut c,
        r#"{"c":"subscribe","t":"orders","cid":"ok","a":"processed","sub_id":"S1"}"#,
    )
    .await;
    for (json, reason) in [
        (
            r#"{"c":"subscribe","t":"orders","cid":"f1","filter":"/id LIKE 'x'","a":"processed","sub_id":"f1"}"#,
            "bad filter",
        ),
        (
            r#"{"c":"subscribe","t":"a b","cid":"f2","a":"processed","sub_id":"f2"}"#,
            "invalid topic",
        ),
        (
            r#"{"c":"subscribe","t":"^orders(","cid":"f3","a":"processed","sub_id":"f3"}"#,
            "bad regex topic",
        ),
        (
            r#"{"c":"subscribe","t":"orders","cid":"f4","a":"processed","sub_id":"S1"}"#,
            "subid in use",
        ),
        (
            r#"{"c":"subscribe","t":"secret.x","cid":"f5","a":"processed","sub_id":"f5"}"#,
            "not entitled",
        ),
        (
            r#"{"c":"sow","t":"secret.x","cid":"f6","a":"processed,completed","query_id":"f6","batch_size":10}"#,
            "not entitled",
        ),
        (
            r#"{"c":"sow","t":"orders","cid":"f7","a":"processed,completed","query_id":"f7","batch_size":10,"orderby":"id"}"#,
            "invalid order by",
        ),
        (
            r#"{"c":"sow","t":"quotes","cid":"f8","a":"processed,completed","query_id":"f8","batch_size":10}"#,
            "invalid topic",
        ),
        (
            r#"{"c":"subscribe","t":"orders","cid":"f9","a":"processed","sub_id":"f9","bookmark":"nonsense"}"#,
            "invalid bookmark",
        ),
        (
            r#"{"c":"subscribe","t":"orders","cid":"f10","a":"processed","sub_id":"f10","bookmark":"12345|7|"}"#,
            "bookmark not found in the transaction log",
        ),
        (
            r#"{"c":"subscribe","t":"orders","cid":"f11","a":"processed","sub_id":"f11","o":"conflation=1s"}"#,
            "not supported",
        ),
        (
            r#"{"c":"subscribe","cid":"f12","a":"processed","sub_id":"f12"}"#,
            "no topic",
        ),
    ] {
        c.send_json(json, b"").await;
        let ack = c.recv().await;
        assert!(ack.is_ack_of(AckType::Processed), "{json}: {ack:?}");
        assert_eq!(ack.header.status, Some(Status::Failure), "{json}");
        assert_eq!(
            ack.header.reason.as_ref().map(Reason::as_str),
            Some(reason),
            "{json}"
        );
        let cid = json
            .split(r#""cid":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(ack.header.cid.as_deref(), Some(cid));
        if json.contains("completed") {
            let done = c.recv().await;
            assert!(done.is_ack_of(AckType::Completed), "{json}: {done:?}");
            assert_eq!(done.header.status, Some(Status::Failure));
        }
    }
    // Still usable, and the first subscription is still there.
    subscribe(
        &mut c,
        r#"{"c":"subscribe","t":"orders","cid":"ok2","a":"processed","sub_id":"S2"}"#,
    )
    .await;
    let mut p = publisher(&server, "pub").await;
    pub_seq(&mut p, "orders", 1, r#"{"id":1}"#).await;
    assert_eq!(sids(&c.recv().await), "S1,S2");
}

#[tokio::test]
async fn completed_is_a_separate_ack_and_only_when_asked() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sub").await;
    c.send_json(
        r#"{"c":"subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed,completed","sub_id":"SUBX","x":"xcorr","o":"oof"}"#,
        b"",
    )
    .await;
    let p = c.recv().await;
    assert!(p.is_ack_of(AckType::Processed));
    let done = c.recv().await;
    assert!(done.is_ack_of(AckType::Completed), "{done:?}");
    assert_eq!(
        c.last_header,
        r#"{"c":"ack","cid":"auto1","a":"completed","status":"success","sub_id":"SUBX"}"#
    );
    // persisted in `a` is never answered.
    c.send_json(
        r#"{"c":"subscribe","t":"orders","cid":"auto2","a":"processed,persisted","sub_id":"B1"}"#,
        b"",
    )
    .await;
    assert!(c.recv().await.is_ack_of(AckType::Processed));
    c.send(&flush("f", AckTypes::PROCESSED), b"").await;
    let next = c.recv().await;
    assert!(is_cid(&next, "f"), "no persisted ack came first: {next:?}");
}

#[tokio::test]
async fn unsubscribe_one_a_list_or_all() {
    let (_dir, server) = start(|c| c);
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    for id in ["A", "B", "C", "D"] {
        subscribe(
            &mut s,
            &format!(
                r#"{{"c":"subscribe","t":"orders","cid":"c{id}","a":"processed","sub_id":"{id}"}}"#
            ),
        )
        .await;
    }
    let mut p = publisher(&server, "pub").await;
    // No ack is asked for (as the official client sends it); a flush on the same connection
    // shows it was handled before the next write.
    async fn handled(s: &mut Conn) {
        s.send(&flush("f", AckTypes::PROCESSED), b"").await;
        assert!(is_cid(&s.recv().await, "f"));
    }
    s.send_json(r#"{"c":"unsubscribe","cid":"auto3","sub_id":"A"}"#, b"")
        .await;
    handled(&mut s).await;
    pub_seq(&mut p, "orders", 1, "{}").await;
    assert_eq!(sids(&s.recv().await), "B,C,D");
    s.send_json(
        r#"{"c":"unsubscribe","cid":"auto4","sub_id":"B,C,nope"}"#,
        b"",
    )
    .await;
    handled(&mut s).await;
    pub_seq(&mut p, "orders", 2, "{}").await;
    assert_eq!(sids(&s.recv().await), "D");
    s.send_json(r#"{"c":"unsubscribe","cid":"auto5","sub_id":"all"}"#, b"")
        .await;
    handled(&mut s).await;
    pub_seq(&mut p, "orders", 3, "{}").await;
    // Write 3 is accepted (and durable) before E exists.
    p.recv_until(|f| is_persisted(f) && f.header.seq >= Some(3))
        .await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"orders","cid":"e","a":"processed","sub_id":"E"}"#,
    )
    .await;
    pub_seq(&mut p, "orders", 4, r#"{"last":true}"#).await;
    // Write 3 reached nobody: the next delivery is write 4, to E only.
    let f = s.recv().await;
    assert_eq!((sids(&f), body(&f)), ("E", r#"{"last":true}"#));
    // An unsubscribe that asks for an ack gets one.
    s.send_json(
        r#"{"c":"unsubscribe","cid":"u","sub_id":"E","a":"processed"}"#,
        b"",
    )
    .await;
    let ack = s.recv().await;
    assert!(ack.is_ack_of(AckType::Processed) && is_cid(&ack, "u"));
}

#[tokio::test]
async fn delta_subscriptions_get_key_and_changed_fields_and_no_empties() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    let mut p = publisher(&server, "pub").await;
    pub_seq(&mut p, "orders", 1, r#"{"id":1,"qty":5,"px":10}"#).await;
    // Stored before the subscriptions exist.
    p.recv_until(|f| is_persisted(f) && f.header.seq >= Some(1))
        .await;
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    subscribe(
        &mut s,
        r#"{"c":"delta_subscribe","t":"orders","cid":"auto1","a":"processed","sub_id":"D1","o":"no_empties"}"#,
    )
    .await;
    subscribe(
        &mut s,
        r#"{"c":"delta_subscribe","t":"orders","cid":"auto2","a":"processed","sub_id":"D2"}"#,
    )
    .await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"orders","cid":"auto3","a":"processed","sub_id":"P"}"#,
    )
    .await;
    let delta = |seq| Header {
        command: Some(Command::DeltaPublish),
        ..publish("orders", seq)
    };
    p.send(&delta(2), br#"{"id":1,"qty":6}"#).await;
    p.send(&delta(3), br#"{"id":1,"qty":6}"#).await;
    pub_seq(&mut p, "orders", 4, r#"{"id":2,"qty":1}"#).await;
    let got: Vec<(String, String, String)> = s
        .recv_until(|f| body(f).contains(r#""id":2"#) && sids(f).contains('P'))
        .await
        .iter()
        .map(|f| {
            (
                f.header.command.as_ref().unwrap().to_string(),
                sids(f).to_owned(),
                body(f).to_owned(),
            )
        })
        .collect();
    let row = |c: &str, s: &str, b: &str| (c.to_owned(), s.to_owned(), b.to_owned());
    assert_eq!(
        got,
        [
            row("p", "P", r#"{"id":1,"px":10,"qty":6}"#),
            row("delta_publish", "D1,D2", r#"{"id":1,"qty":6}"#),
            // Nothing changed: D1 (no_empties) gets nothing, D2 the key alone.
            row("p", "P", r#"{"id":1,"px":10,"qty":6}"#),
            row("delta_publish", "D2", r#"{"id":1}"#),
            // A new record goes in full to everyone.
            row("p", "D1,D2,P", r#"{"id":2,"qty":1}"#),
        ]
    );
}

#[tokio::test]
async fn oof_when_an_update_leaves_the_filter_or_a_record_is_deleted() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":"orders","cid":"auto1","filter":"/qty > 5","a":"processed","sub_id":"O","o":"oof"}"#,
    )
    .await;
    let mut p = publisher(&server, "pub").await;
    pub_seq(&mut p, "orders", 1, r#"{"id":1,"qty":9}"#).await;
    pub_seq(&mut p, "orders", 2, r#"{"id":1,"qty":1}"#).await;
    pub_seq(&mut p, "orders", 3, r#"{"id":2,"qty":8}"#).await;
    p.send_json(
        r#"{"c":"sow_delete","t":"orders","cid":"7","sow_keys":"2","a":"processed"}"#,
        b"",
    )
    .await;
    assert_eq!(body(&s.recv().await), r#"{"id":1,"qty":9}"#);
    let oof = s.recv().await;
    assert_eq!(oof.header.command, Some(Command::Oof));
    assert_eq!(
        s.last_header,
        r#"{"c":"oof","t":"orders","sids":"O","k":"1","reason":"match"}"#
    );
    assert_eq!(
        body(&oof),
        r#"{"id":1,"qty":1}"#,
        "the update that left the filter"
    );
    assert_eq!(body(&s.recv().await), r#"{"id":2,"qty":8}"#);
    let gone = s.recv().await;
    assert_eq!(
        gone.header.reason.as_ref().map(Reason::as_str),
        Some("deleted")
    );
    assert_eq!(body(&gone), r#"{"id":2,"qty":8}"#, "the record as it was");
}

#[tokio::test]
async fn deny_read_hides_topics_from_regex_subscriptions() {
    let (_dir, server) = start(|c| c.deny_read("^secret"));
    let mut s = Conn::connect(server.addr()).await;
    s.logon("sub").await;
    subscribe(
        &mut s,
        r#"{"c":"subscribe","t":".*","cid":"a","a":"processed","sub_id":"ALL"}"#,
    )
    .await;
    let mut p = publisher(&server, "pub").await;
    pub_seq(&mut p, "secret.plans", 1, "{}").await;
    pub_seq(&mut p, "open", 2, "{}").await;
    assert_eq!(s.recv().await.header.topic.as_deref(), Some("open"));
}

async fn small_buffer_conn(addr: std::net::SocketAddr) -> Conn {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream: TcpStream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    Conn::from_stream(stream)
}

#[tokio::test]
async fn a_slow_subscriber_is_disconnected_and_nobody_else_notices() {
    let (_dir, server) = start(|c| c.max_unsent_bytes(256 * 1024));
    let mut slow = small_buffer_conn(server.addr()).await;
    slow.logon("slow").await;
    subscribe(
        &mut slow,
        r#"{"c":"subscribe","t":"orders","cid":"s","a":"processed","sub_id":"S"}"#,
    )
    .await;
    let mut fast = Conn::connect(server.addr()).await;
    fast.logon("fast").await;
    subscribe(
        &mut fast,
        r#"{"c":"subscribe","t":"orders","cid":"f","a":"processed","sub_id":"F"}"#,
    )
    .await;

    let mut p = publisher(&server, "pub").await;
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    // Publish until the server gives up on the slow subscriber (bounded: 32 MB, far past what
    // socket buffers and its 256 KiB bound can hold); the fast one keeps up batch by batch.
    let mut n = 0u64;
    while server.stats().slow_consumer_disconnects == 0 {
        assert!(n < 32_000, "the slow subscriber was never disconnected");
        for _ in 0..100 {
            n += 1;
            pub_seq(&mut p, "orders", n, &body).await;
        }
        for _ in 0..100 {
            assert_eq!(sids(&fast.recv().await), "F");
        }
    }
    // The writer's acks never waited for the slow subscriber, and the fast one goes on.
    for _ in 0..100 {
        n += 1;
        pub_seq(&mut p, "orders", n, &body).await;
    }
    for _ in 0..100 {
        assert_eq!(sids(&fast.recv().await), "F");
    }
    p.send(&flush("done", AckTypes::PERSISTED), b"").await;
    let acks = p.recv_until(|f| is_cid(f, "done")).await;
    assert!(
        acks.iter()
            .any(|f| is_persisted(f) && f.header.seq == Some(n)),
        "{acks:?}"
    );
    assert_eq!(
        server.stats().slow_consumer_disconnects,
        1,
        "only the slow one"
    );
    // The slow one reads what its buffers held, then finds the connection closed.
    let seen = slow.expect_closed(WAIT).await;
    assert!(
        (seen.len() as u64) < n,
        "it could not have had everything: {}",
        seen.len()
    );
}
