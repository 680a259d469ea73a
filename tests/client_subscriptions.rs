//! The actor client's subscriptions, queries and bookmarks, against the embedded server over
//! loopback (and, for routing corner cases the server never produces, a scripted peer).

mod common;
mod sub_support;
mod support;

use std::time::Duration;

use actix::Addr;
use actix_amps::client::SubscriptionStream;
use actix_amps::client::{
    BehindPolicy, BookmarkStart, CancelAllSubscriptions, CancelSubscription, ClientActor,
    ClientConfig, DeliveryKind, DiscardBookmarks, DiscardMode, FlowControl, GetSubscriptionStats,
    OofReason, Ping, PingError, Publish, PublishBatch, QueryError, ReconnectPolicy,
    SowAndSubscribe, SowCollect, SowDelete, SowDeleteSelector, SowQuery, Subscribe, SubscribeError,
    SubscriptionEnd, SubscriptionEvent, UnexpectedKind, WaitLoggedOn,
};
use actix_amps::protocol::Reason;
use futures_util::StreamExt;
use sub_support::{body, id_of, Sub};
use support::{Events, TestServer, WAIT};

fn client(name: &str, server: &TestServer) -> Addr<ClientActor> {
    support::config(name, server)
        .start()
        .expect("client starts")
}

async fn publish(client: &Addr<ClientActor>, topic: &str, ids: std::ops::Range<u64>) {
    let batch = ids.map(|i| Publish::new(topic, body(i))).collect();
    client
        .send(PublishBatch::new(batch))
        .await
        .expect("alive")
        .expect("stored");
}

async fn subscribe(client: &Addr<ClientActor>, m: Subscribe) -> String {
    client.send(m).await.expect("alive").expect("subscribed")
}

#[actix_rt::test]
async fn a_subscriber_receives_what_it_publishes_with_every_field() {
    let server = TestServer::start(|c| c);
    let client = client("sub-own", &server);
    let mut sub = Sub::new();
    // Placed before the logon: sent once logged on, resolved by the processed ack.
    let id = subscribe(&client, Subscribe::new("orders", sub.recipient())).await;
    assert!(
        id.starts_with("sub-"),
        "the default sub id is the first cid: {id}"
    );
    client
        .send(Publish::new("orders", body(0)).correlation_id("c-0"))
        .await
        .unwrap()
        .unwrap();
    publish(&client, "orders", 1..300).await;
    let got = sub.messages(300).await;
    for (i, d) in got.iter().enumerate() {
        assert_eq!(id_of(d), i as u64, "in order");
        assert_eq!(d.kind(), DeliveryKind::Publish);
        assert_eq!(d.topic(), Some("orders"));
        assert_eq!(d.sub_id(), id);
        let bm = d.bookmark().expect("a bookmark");
        let parts: Vec<&str> = bm.split('|').collect();
        assert!(
            parts.len() == 3 && parts[0].parse::<u64>().is_ok() && parts[1].parse::<u64>().is_ok(),
            "bookmark form: {bm}"
        );
        assert!(d.sequence().is_some());
    }
    assert_eq!(got[0].correlation_id(), Some("c-0"));
    assert_eq!(&got[1].data()[..], body(1).as_bytes());
    let stats = client.send(GetSubscriptionStats).await.unwrap();
    assert_eq!(stats.delivered, 300);
    assert!(
        sub.batches.load(std::sync::atomic::Ordering::SeqCst) < 300,
        "deliveries arrive in batches"
    );
}

#[actix_rt::test]
async fn each_refusal_is_typed_with_the_servers_reason() {
    let server = TestServer::start(|c| c.deny_read("^secret").sow("^orders$", &["/id"]));
    let client = client("sub-refusals", &server);
    let sub = Sub::new();
    let refused = |r: Result<String, SubscribeError>| match r {
        Err(SubscribeError::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let cases = [
        (
            Subscribe::new("orders", sub.recipient()).filter("/id >"),
            Reason::BadFilter,
        ),
        (
            Subscribe::new("secret.x", sub.recipient()),
            Reason::NotEntitled,
        ),
        (
            Subscribe::new("bad topic", sub.recipient()),
            Reason::InvalidTopic,
        ),
        (
            Subscribe::new("orders(", sub.recipient()),
            Reason::BadRegexTopic,
        ),
    ];
    for (m, want) in cases {
        assert_eq!(refused(client.send(m).await.unwrap()), want);
    }
    let e = client
        .send(
            Subscribe::new("orders", sub.recipient())
                .bookmark(BookmarkStart::Literal("nope".into())),
        )
        .await
        .unwrap();
    assert_eq!(refused(e), Reason::InvalidBookmark);
    match client
        .send(SowCollect::new("orders").order_by("/id SIDEWAYS"))
        .await
        .unwrap()
    {
        Err(QueryError::Refused { reason }) => assert_eq!(reason, Reason::InvalidOrderBy),
        other => panic!("expected invalid order by, got {other:?}"),
    }
    // Local refusals, before anything is sent.
    subscribe(
        &client,
        Subscribe::new("orders", sub.recipient()).sub_id("dup"),
    )
    .await;
    assert_eq!(
        client
            .send(Subscribe::new("orders", sub.recipient()).sub_id("dup"))
            .await
            .unwrap(),
        Err(SubscribeError::SubIdInUse {
            sub_id: "dup".into()
        })
    );
    assert!(matches!(
        client
            .send(Subscribe::new("", sub.recipient()))
            .await
            .unwrap(),
        Err(SubscribeError::Invalid { .. })
    ));
    assert!(matches!(
        client
            .send(Subscribe::new("orders", sub.recipient()).bookmark(BookmarkStart::MostRecent))
            .await
            .unwrap(),
        Err(SubscribeError::Invalid { .. })
    ));
    // The refused ones left nothing behind: their ids are free again.
    subscribe(
        &client,
        Subscribe::new("orders", sub.recipient()).sub_id("free"),
    )
    .await;
}

#[actix_rt::test]
async fn a_subscribe_without_an_answer_times_out_and_is_forgotten() {
    let server = TestServer::start(|c| c);
    let client = client("sub-timeout", &server);
    assert!(client.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    server.handle.freeze();
    let sub = Sub::new();
    let r = client
        .send(
            Subscribe::new("orders", sub.recipient())
                .sub_id("slow")
                .timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        Err(SubscribeError::Timeout {
            timeout: Duration::from_millis(300)
        })
    );
    server.handle.thaw();
    // Forgotten: the id can be used again.
    subscribe(
        &client,
        Subscribe::new("orders", sub.recipient()).sub_id("slow"),
    )
    .await;
}

#[actix_rt::test]
async fn sow_queries_deliver_records_then_complete() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let client = client("sub-sow", &server);
    publish(&client, "orders", 0..25).await;
    support::flush(&client).await;

    let mut sub = Sub::new();
    let qid = client
        .send(
            SowQuery::new("orders", sub.recipient())
                .filter("/id >= 5")
                .batch_size(4)
                .stats(),
        )
        .await
        .unwrap()
        .expect("query placed");
    let (records, end) = sub
        .until(|e| matches!(e, SubscriptionEvent::Completed(_)))
        .await;
    assert!(matches!(
        records.first(),
        Some(SubscriptionEvent::GroupBegin)
    ));
    assert!(matches!(records.last(), Some(SubscriptionEvent::GroupEnd)));
    let ids: Vec<u64> = records
        .iter()
        .filter_map(|e| match e {
            SubscriptionEvent::Message(d) => {
                assert_eq!(d.kind(), DeliveryKind::SowRecord);
                assert_eq!(d.sub_id(), qid);
                assert!(d.sow_key().is_some());
                Some(id_of(d))
            }
            _ => None,
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (5..25).collect::<Vec<_>>());
    let SubscriptionEvent::Completed(stats) = end else {
        unreachable!()
    };
    assert_eq!(stats.records_returned, Some(20));

    let top = client
        .send(SowCollect::new("orders").order_by("/id DESC").top_n(3))
        .await
        .unwrap()
        .expect("collected");
    assert_eq!(top.iter().map(id_of).collect::<Vec<_>>(), vec![24, 23, 22]);
    assert_eq!(
        client
            .send(SowCollect::new("orders").max_records(10))
            .await
            .unwrap()
            .map(|v| v.len()),
        Err(QueryError::TooManyRecords { limit: 10 })
    );
    let empty = client
        .send(SowCollect::new("orders").filter("/id > 1000"))
        .await
        .unwrap()
        .expect("an empty result");
    assert!(empty.is_empty());
}

#[actix_rt::test]
async fn sow_and_subscribe_gives_records_then_live_messages_and_oof() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let client = client("sub-sas", &server);
    let batch = (0..3)
        .map(|i| Publish::new("orders", format!(r#"{{"id":{i},"qty":20}}"#)))
        .collect();
    client
        .send(PublishBatch::new(batch))
        .await
        .unwrap()
        .unwrap();
    support::flush(&client).await;
    let mut sub = Sub::new();
    subscribe_sas(
        &client,
        SowAndSubscribe::new("orders", sub.recipient())
            .filter("/qty > 10")
            .oof(),
    )
    .await;
    let (sow, _) = sub
        .until(|e| matches!(e, SubscriptionEvent::GroupEnd))
        .await;
    assert_eq!(
        sow.iter()
            .filter(|e| matches!(e, SubscriptionEvent::Message(_)))
            .count(),
        3
    );
    // An update that leaves the filter, then a delete: two oofs.
    client
        .send(Publish::new("orders", r#"{"id":1,"qty":5}"#))
        .await
        .unwrap()
        .unwrap();
    let oof = sub.message().await;
    assert_eq!(oof.kind(), DeliveryKind::Oof);
    assert_eq!(oof.oof_reason(), Some(OofReason::Match));
    client
        .send(SowDelete {
            topic: "orders".into(),
            selector: SowDeleteSelector::Filter("/id = 2".into()),
        })
        .await
        .unwrap()
        .unwrap();
    let gone = sub.message().await;
    assert_eq!(gone.kind(), DeliveryKind::Oof);
    assert_eq!(gone.reason(), Some("deleted"));
    assert!(gone.sow_key().is_some());
    client
        .send(Publish::new("orders", r#"{"id":7,"qty":50}"#))
        .await
        .unwrap()
        .unwrap();
    let live = sub.message().await;
    assert_eq!((live.kind(), id_of(&live)), (DeliveryKind::Publish, 7));
}

async fn subscribe_sas(client: &Addr<ClientActor>, m: SowAndSubscribe) -> String {
    client.send(m).await.expect("alive").expect("subscribed")
}

#[actix_rt::test]
async fn delta_subscriptions_get_delta_publishes() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let client = client("sub-delta", &server);
    let mut sub = Sub::new();
    subscribe(&client, Subscribe::new("orders", sub.recipient()).delta()).await;
    let mut sads = Sub::new();
    subscribe_sas(
        &client,
        SowAndSubscribe::new("orders", sads.recipient()).delta(),
    )
    .await;
    sads.until(|e| matches!(e, SubscriptionEvent::GroupEnd))
        .await;
    client
        .send(Publish::new("orders", r#"{"id":1,"a":1,"b":2}"#))
        .await
        .unwrap()
        .unwrap();
    client
        .send(Publish::new("orders", r#"{"id":1,"a":1,"b":3}"#))
        .await
        .unwrap()
        .unwrap();
    for s in [&mut sub, &mut sads] {
        let first = s.message().await;
        let second = s.message().await;
        assert_eq!(first.kind(), DeliveryKind::Publish);
        assert_eq!(second.kind(), DeliveryKind::DeltaPublish);
        let text = String::from_utf8_lossy(second.data_slice()).into_owned();
        assert!(
            text.contains("\"b\":3") && !text.contains("\"a\""),
            "{text}"
        );
    }
}

#[actix_rt::test]
async fn one_frame_for_two_subscriptions_reaches_each_once() {
    let server = TestServer::start(|c| c);
    let client = client("sub-sids", &server);
    let mut a = Sub::new();
    let mut b = Sub::new();
    subscribe(&client, Subscribe::new("t", a.recipient()).sub_id("A")).await;
    subscribe(&client, Subscribe::new("t", b.recipient()).sub_id("B")).await;
    publish(&client, "t", 0..20).await;
    for (s, id) in [(&mut a, "A"), (&mut b, "B")] {
        let got = s.messages(20).await;
        assert!(got.iter().all(|d| d.sub_id() == id));
        assert_eq!(
            got.iter().map(id_of).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        assert!(
            got[0].sub_ids().is_some_and(|l| l.contains(',')),
            "one frame, both sids"
        );
    }
    assert!(a.next_within(Duration::from_millis(100)).await.is_none());
}

#[actix_rt::test]
async fn cancelled_subscriptions_end_and_get_nothing_more() {
    let server = TestServer::start(|c| c);
    let client = client("sub-cancel", &server);
    let mut a = Sub::new();
    let mut b = Sub::new();
    let mut c = Sub::new();
    subscribe(&client, Subscribe::new("t", a.recipient()).sub_id("A")).await;
    subscribe(&client, Subscribe::new("t", b.recipient()).sub_id("B")).await;
    publish(&client, "t", 0..5).await;
    a.messages(5).await;
    b.messages(5).await;
    client
        .send(CancelSubscription("A".into()))
        .await
        .unwrap()
        .expect("known");
    assert!(matches!(
        a.next().await.1,
        SubscriptionEvent::Ended(SubscriptionEnd::Unsubscribed)
    ));
    assert!(client
        .send(CancelSubscription("A".into()))
        .await
        .unwrap()
        .is_err());
    publish(&client, "t", 5..10).await;
    // B proves the later messages were delivered; A got none of them.
    assert_eq!(
        b.messages(5).await.iter().map(id_of).collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 9]
    );
    assert!(a.next_within(Duration::from_millis(100)).await.is_none());

    subscribe(&client, Subscribe::new("t", c.recipient()).sub_id("C")).await;
    assert_eq!(client.send(CancelAllSubscriptions).await.unwrap(), 2);
    for s in [&mut b, &mut c] {
        assert!(matches!(
            s.next().await.1,
            SubscriptionEvent::Ended(SubscriptionEnd::Unsubscribed)
        ));
    }
    // The server forgot them too: a new subscription with the same id is accepted.
    let mut again = Sub::new();
    subscribe(&client, Subscribe::new("t", again.recipient()).sub_id("B")).await;
    publish(&client, "t", 10..11).await;
    assert_eq!(id_of(&again.message().await), 10);
    assert!(b.next_within(Duration::from_millis(100)).await.is_none());
}

#[actix_rt::test]
async fn ping_reports_the_version_and_a_round_trip() {
    let server = TestServer::start(|c| c);
    let client = client("sub-ping", &server);
    assert!(client.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    let reply = client.send(Ping::new(WAIT)).await.unwrap().expect("pong");
    assert!(reply.server_version.is_some());
    assert!(reply.round_trip < WAIT);
    server.handle.stop();
    // Down: either refused at once or cut off; never a hang.
    let r = client
        .send(Ping::new(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            Err(PingError::NotConnected | PingError::Disconnected | PingError::Timeout { .. })
        ),
        "{r:?}"
    );
}

/// A slow subscriber under PauseReading: the queue stays bounded, reading pauses, nothing is
/// lost, and once the subscriber catches up publish acks flow again.
#[actix_rt::test]
async fn a_slow_subscriber_pauses_reading_with_bounded_memory() {
    let server = TestServer::start(|c| c);
    let publisher = client("sub-slow-pub", &server);
    let client = client("sub-slow", &server);
    let mut sub = Sub::gated();
    let flow = FlowControl::default()
        .max_queued(200)
        .max_batch(50)
        .when_behind(BehindPolicy::PauseReading);
    subscribe(&client, Subscribe::new("t", sub.recipient()).flow(flow)).await;
    publish(&publisher, "t", 0..3000).await;
    support::flush(&publisher).await;
    // Let one batch through at a time until reading has been paused at least once.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let s = client.send(GetSubscriptionStats).await.unwrap();
        if s.read_pauses > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never paused: {s:?}"
        );
        sub.release(1);
        got.extend(sub.messages(1).await);
    }
    let stats = client.send(GetSubscriptionStats).await.unwrap();
    // The bound: the queue, plus what the connection read before the pause took hold (a read
    // buffer of 256 KiB per batch, at most a few batches; here ~40 bytes a message).
    assert!(stats.max_queued <= 200 + 5 * 256 * 1024 / 40, "{stats:?}");
    sub.open();
    while got.len() < 3000 {
        got.push(sub.message().await);
    }
    assert_eq!(
        got.iter().map(id_of).collect::<Vec<_>>(),
        (0..3000).collect::<Vec<_>>()
    );
    let after = client.send(GetSubscriptionStats).await.unwrap();
    assert_eq!(after.queued, 0);
}

/// A slow subscriber under EndSubscription: its subscription ends with the count dropped;
/// another subscription of the same client gets everything.
#[actix_rt::test]
async fn a_slow_subscriber_can_end_its_subscription_instead() {
    let server = TestServer::start(|c| c);
    let client = client("sub-end", &server);
    let mut slow = Sub::gated();
    let mut fast = Sub::new();
    let flow = FlowControl::default()
        .max_queued(100)
        .max_batch(10)
        .when_behind(BehindPolicy::EndSubscription);
    subscribe(
        &client,
        Subscribe::new("t", slow.recipient())
            .sub_id("slow")
            .flow(flow),
    )
    .await;
    subscribe(
        &client,
        Subscribe::new("t", fast.recipient()).sub_id("fast"),
    )
    .await;
    publish(&client, "t", 0..2000).await;
    let all = fast.messages(2000).await;
    assert_eq!(
        all.iter().map(id_of).collect::<Vec<_>>(),
        (0..2000).collect::<Vec<_>>()
    );
    slow.open();
    let (before, end) = slow
        .until(|e| matches!(e, SubscriptionEvent::Ended(_)))
        .await;
    let SubscriptionEvent::Ended(SubscriptionEnd::FellBehind { dropped }) = end else {
        panic!("expected FellBehind, got {end:?}");
    };
    let received = before
        .iter()
        .filter(|e| matches!(e, SubscriptionEvent::Message(_)))
        .count();
    assert!(dropped > 0);
    assert!(received + dropped <= 2000);
    let stats = client.send(GetSubscriptionStats).await.unwrap();
    assert_eq!(stats.read_pauses, 0, "the connection never paused");
    publish(&client, "t", 2000..2001).await;
    assert_eq!(id_of(&fast.message().await), 2000);
    assert!(slow.next_within(Duration::from_millis(100)).await.is_none());
}

/// A plain subscription loses what was published while its connection was down and says
/// so; a bookmark subscription gets everything exactly once.
#[actix_rt::test]
async fn after_a_drop_plain_subscriptions_warn_and_bookmark_ones_resume() {
    let server = TestServer::start(|c| c);
    let publisher = client("sub-drop-pub", &server);
    let client = support::config("sub-drop", &server)
        .reconnect(
            ReconnectPolicy::new().backoff(actix_amps::client::Backoff::Fixed(
                Duration::from_millis(300),
            )),
        )
        .start()
        .unwrap();
    let mut plain = Sub::new();
    let mut book = Sub::new();
    subscribe(
        &client,
        Subscribe::new("t", plain.recipient()).sub_id("plain"),
    )
    .await;
    subscribe(
        &client,
        Subscribe::new("t", book.recipient())
            .sub_id("book")
            .bookmark(BookmarkStart::Epoch),
    )
    .await;
    publish(&publisher, "t", 0..10).await;
    plain.messages(10).await;
    book.messages(10).await;
    assert!(server.handle.drop_connection("sub-drop"));
    assert!(matches!(
        plain.next().await.1,
        SubscriptionEvent::Disconnected
    ));
    assert!(matches!(
        book.next().await.1,
        SubscriptionEvent::Disconnected
    ));
    // Published while the subscriber is away (the reconnect waits 300 ms at most once more).
    publish(&publisher, "t", 10..20).await;
    support::flush(&publisher).await;
    let (_, resumed) = plain
        .until(|e| matches!(e, SubscriptionEvent::Resumed { .. }))
        .await;
    assert!(matches!(
        resumed,
        SubscriptionEvent::Resumed {
            may_have_missed: true
        }
    ));
    let (before, resumed) = book
        .until(|e| matches!(e, SubscriptionEvent::Resumed { .. }))
        .await;
    assert!(matches!(
        resumed,
        SubscriptionEvent::Resumed {
            may_have_missed: false
        }
    ));
    let mut ids: Vec<u64> = before
        .iter()
        .filter_map(|e| match e {
            SubscriptionEvent::Message(d) => Some(id_of(d)),
            _ => None,
        })
        .collect();
    publish(&publisher, "t", 20..21).await;
    while ids.last() != Some(&20) {
        ids.push(id_of(&book.message().await));
    }
    assert_eq!(
        ids,
        (10..21).collect::<Vec<_>>(),
        "nothing missed, nothing repeated"
    );
    // The plain one continues live.
    let (_, e) = plain
        .until(|e| matches!(e, SubscriptionEvent::Message(d) if id_of(d) == 20))
        .await;
    assert!(matches!(e, SubscriptionEvent::Message(_)));
}

/// The server restarts (same data): a bookmark subscription resumes from the client's store
/// with nothing missed or repeated, across messages published before and after.
#[actix_rt::test]
async fn a_bookmark_subscription_survives_a_server_restart() {
    let server = TestServer::start(|c| c);
    let client = support::config("sub-restart", &server)
        .reconnect(
            ReconnectPolicy::new().backoff(actix_amps::client::Backoff::Fixed(
                Duration::from_millis(50),
            )),
        )
        .start()
        .unwrap();
    let mut sub = Sub::new();
    subscribe(
        &client,
        Subscribe::new("t", sub.recipient())
            .sub_id("durable")
            .bookmark(BookmarkStart::Epoch),
    )
    .await;
    publish(&client, "t", 0..100).await;
    let mut ids: Vec<u64> = sub.messages(100).await.iter().map(id_of).collect();
    server.handle.restart().expect("restarts");
    publish(&client, "t", 100..200).await;
    support::flush(&client).await;
    while ids.len() < 200 {
        match sub.next().await.1 {
            SubscriptionEvent::Message(d) => ids.push(id_of(&d)),
            SubscriptionEvent::Disconnected => {}
            SubscriptionEvent::Resumed { may_have_missed } => assert!(!may_have_missed),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
    assert!(sub.next_within(Duration::from_millis(100)).await.is_none());
}

/// Failover between two servers with different histories: the plain subscription is placed
/// on the second server and warns of a possible gap; the bookmark subscription's history is
/// not on the second server, which refuses it: reported with the reason.
#[actix_rt::test]
async fn failover_resubscribes_on_the_other_server() {
    let a = TestServer::start(|c| c);
    let b = TestServer::start(|c| c);
    let client = ClientConfig::new("sub-failover")
        .uri(&a.uri())
        .unwrap()
        .uri(&b.uri())
        .unwrap()
        .heartbeat(None)
        .start()
        .unwrap();
    let mut plain = Sub::new();
    let mut book = Sub::new();
    subscribe(&client, Subscribe::new("t", plain.recipient()).sub_id("p")).await;
    subscribe(
        &client,
        Subscribe::new("t", book.recipient())
            .sub_id("b")
            .bookmark(BookmarkStart::Epoch),
    )
    .await;
    publish(&client, "t", 0..5).await;
    support::flush(&client).await;
    plain.messages(5).await;
    book.messages(5).await;
    a.handle.stop();
    let (_, r) = plain
        .until(|e| matches!(e, SubscriptionEvent::Resumed { .. }))
        .await;
    assert!(matches!(
        r,
        SubscriptionEvent::Resumed {
            may_have_missed: true
        }
    ));
    let (_, end) = book
        .until(|e| matches!(e, SubscriptionEvent::Ended(_)))
        .await;
    match end {
        SubscriptionEvent::Ended(SubscriptionEnd::Refused(reason)) => {
            assert!(reason.as_str().contains("bookmark"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    publish(&client, "t", 5..6).await;
    let d = plain.message().await;
    assert_eq!(id_of(&d), 5);
    support::flush(&client).await;
    assert!(
        !b.persisted("sub-failover").is_empty(),
        "the second server took over"
    );
}

/// Explicit discards: after a reconnect the subscription resumes from the oldest message the
/// subscriber has not discarded, and the server's redelivery of what it still holds or has
/// discarded out of order is dropped: the subscriber sees each message once.
#[actix_rt::test]
async fn explicit_discards_decide_what_a_resume_repeats() {
    let server = TestServer::start(|c| c);
    let client = client("sub-explicit", &server);
    let mut sub = Sub::new();
    subscribe(
        &client,
        Subscribe::new("t", sub.recipient())
            .sub_id("x")
            .bookmark(BookmarkStart::Epoch)
            .discard(DiscardMode::Explicit {
                max_outstanding: 1000,
            }),
    )
    .await;
    publish(&client, "t", 0..10).await;
    let got = sub.messages(10).await;
    // Processed: 0..=3 and, out of order, 6 and 8.
    let done: Vec<u64> = got
        .iter()
        .filter(|d| matches!(id_of(d), 0..=3 | 6 | 8))
        .map(|d| d.local_seq())
        .collect();
    client.send(DiscardBookmarks::new("x", done)).await.unwrap();
    // A round trip through the client proves the discards were applied before the drop.
    client.send(GetSubscriptionStats).await.unwrap();
    assert!(server.handle.drop_connection("sub-explicit"));
    let (before, _) = sub
        .until(|e| matches!(e, SubscriptionEvent::Resumed { .. }))
        .await;
    assert!(before
        .iter()
        .all(|e| matches!(e, SubscriptionEvent::Disconnected)));
    publish(&client, "t", 10..12).await;
    let next: Vec<u64> = sub.messages(2).await.iter().map(id_of).collect();
    assert_eq!(
        next,
        vec![10, 11],
        "4, 5, 7 and 9 are still the subscriber's: not again"
    );
    let stats = client.send(GetSubscriptionStats).await.unwrap();
    assert_eq!(
        stats.duplicates_dropped, 6,
        "the server replayed 4..=9 after the mark (3)"
    );
}

/// Frames the embedded server never sends, from a scripted peer: a `sids` list with an
/// unknown id, an unknown id alone, a delivery keyed by `sub_id` only, an ack for an unknown
/// command. Known ids get their copy; everything else reaches last chance.
#[actix_rt::test]
async fn unknown_ids_reach_last_chance() {
    use common::Conn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Conn::from_stream(stream);
        let logon = conn.recv().await;
        let cid = logon.header.cid.clone().unwrap();
        conn.send_json(
            &format!(r#"{{"c":"ack","cid":"{cid}","a":"processed","status":"success","version":"scripted"}}"#),
            b"",
        )
        .await;
        let sub = conn.recv().await;
        let scid = sub.header.cid.clone().unwrap();
        assert_eq!(sub.header.sub_id.as_deref(), Some("A"));
        conn.send_json(
            &format!(r#"{{"c":"ack","cid":"{scid}","a":"processed"}}"#),
            b"",
        )
        .await;
        conn.send_json(r#"{"c":"p","t":"t","sids":"A,nope"}"#, b"one")
            .await;
        conn.send_json(r#"{"c":"p","t":"t","sids":"nope"}"#, b"two")
            .await;
        conn.send_json(r#"{"c":"p","t":"t","sub_id":"A"}"#, b"three")
            .await;
        conn.send_json(r#"{"c":"ack","cid":"sub-999","a":"processed"}"#, b"")
            .await;
        conn.send_json(r#"{"c":"p","sids":"A"}"#, b"four").await;
        // Keep the connection until the test is done.
        let _ = conn.recv_within(WAIT).await;
    });
    let client = ClientConfig::new("scripted")
        .uri(&format!("tcp://{addr}/amps/json"))
        .unwrap()
        .heartbeat(None)
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_unexpected(&client).await;
    let mut sub = Sub::new();
    subscribe(&client, Subscribe::new("t", sub.recipient()).sub_id("A")).await;
    let one = sub.message().await;
    assert_eq!((one.data_slice(), one.sub_id()), (&b"one"[..], "A"));
    let four = sub.message().await;
    assert_eq!(four.data_slice(), b"four");
    assert_eq!(four.topic(), None);
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let u = events.next_unexpected().await;
        bodies.push((u.kind.clone(), u.frame.body.clone()));
    }
    assert_eq!(bodies[0].1, &b"one"[..]);
    assert_eq!(bodies[1].1, &b"two"[..]);
    assert_eq!(bodies[2].1, &b"three"[..]);
    assert_eq!(bodies[3].0, UnexpectedKind::UnknownCommandId);
    peer.abort();
}

/// The stream form: events in order; dropping the stream ends the subscription (the client
/// unsubscribes and forgets it, so its id is free again).
#[actix_rt::test]
async fn a_subscription_as_a_stream() {
    let server = TestServer::start(|c| c);
    let client = client("sub-stream", &server);
    let (recipient, mut events) = SubscriptionStream::channel(2);
    subscribe(&client, Subscribe::new("t", recipient).sub_id("st")).await;
    publish(&client, "t", 0..50).await;
    let mut ids = Vec::new();
    while ids.len() < 50 {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("in time")
        {
            Some(SubscriptionEvent::Message(d)) => ids.push(id_of(&d)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
    drop(events);
    publish(&client, "t", 50..52).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (recipient, _events) = SubscriptionStream::channel(2);
        match client
            .send(Subscribe::new("t", recipient).sub_id("st"))
            .await
            .unwrap()
        {
            Ok(_) => break,
            Err(SubscribeError::SubIdInUse { .. }) => {
                assert!(tokio::time::Instant::now() < deadline, "never released");
                publish(&client, "t", 0..1).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A delivery that breaks the protocol (`s` not a number) closes the connection with a typed
/// error; the client reconnects, places the subscription again (same sub id, new cid) and
/// goes on. Nothing panics, nothing is delivered from the bad frame.
#[actix_rt::test]
async fn a_broken_delivery_closes_the_connection_and_the_subscription_resumes() {
    use actix_amps::client::{ConnectionEvent, SubscribeConnectionEvents};
    use actix_amps::error::{ConnectError, ProtocolError};
    use common::Conn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut cids = Vec::new();
        for round in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Conn::from_stream(stream);
            let logon = conn.recv().await;
            let cid = logon.header.cid.clone().unwrap();
            conn.send_json(
                &format!(r#"{{"c":"ack","cid":"{cid}","a":"processed","status":"success"}}"#),
                b"",
            )
            .await;
            let sub = conn.recv().await;
            assert_eq!(sub.header.sub_id.as_deref(), Some("A"));
            let scid = sub.header.cid.clone().unwrap();
            cids.push(scid.clone());
            conn.send_json(
                &format!(r#"{{"c":"ack","cid":"{scid}","a":"processed"}}"#),
                b"",
            )
            .await;
            if round == 0 {
                conn.send_json(r#"{"c":"p","sids":"A","s":"x"}"#, b"bad")
                    .await;
                let _ = conn.expect_closed(WAIT).await;
            } else {
                conn.send_json(r#"{"c":"p","sids":"A","s":1}"#, b"good")
                    .await;
                let _ = conn.recv_within(WAIT).await;
            }
        }
        cids
    });
    let client = ClientConfig::new("broken-delivery")
        .uri(&format!("tcp://{addr}/amps/json"))
        .unwrap()
        .heartbeat(None)
        .start()
        .unwrap();
    let mut events = Events::new();
    client
        .send(SubscribeConnectionEvents(events.addr.clone().recipient()))
        .await
        .unwrap()
        .expect("client running");
    let mut sub = Sub::new();
    subscribe(&client, Subscribe::new("t", sub.recipient()).sub_id("A")).await;
    let e = events
        .until_connection(|e| matches!(e, ConnectionEvent::Disconnected { .. }))
        .await;
    let ConnectionEvent::Disconnected {
        error: Some(error), ..
    } = e
    else {
        panic!("expected a typed error, got {e:?}");
    };
    assert!(
        matches!(
            &*error,
            ConnectError::Protocol {
                source: ProtocolError::MalformedHeader { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(matches!(
        sub.next().await.1,
        SubscriptionEvent::Disconnected
    ));
    assert!(matches!(
        sub.next().await.1,
        SubscriptionEvent::Resumed {
            may_have_missed: true
        }
    ));
    assert_eq!(sub.message().await.data_slice(), b"good");
    client.do_send(actix_amps::client::Shutdown);
    let cids = tokio::time::timeout(WAIT, peer).await.unwrap().unwrap();
    assert_ne!(cids[0], cids[1], "a new cid for the resubscription");
}
