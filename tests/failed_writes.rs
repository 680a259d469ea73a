//! Failed-write detection and routing (PROTOCOL.md section 8), against the embedded server.

mod support;

use std::time::Duration;

use actix_amps::client::{
    DeltaPublish, FullPolicy, Operation, Publish, PublishFlush, SowDelete, SowDeleteSelector,
    UnexpectedKind, Unsubscribe,
};
use actix_amps::protocol::{AckType, Command, Reason, Status};
use support::{config, Events, TestServer, WAIT};

const FLUSH: PublishFlush = PublishFlush { timeout: WAIT };

fn server() -> TestServer {
    TestServer::start(|c| c.deny_write("^denied").sow("^orders$", &["/id"]))
}

#[actix_rt::test]
async fn every_failed_write_subscriber_gets_the_enriched_failure() {
    let server = server();
    let client = config("fw-all", &server).start().unwrap();
    let mut a = Events::new();
    let mut b = Events::new();
    a.subscribe_failed(&client).await;
    b.subscribe_failed(&client).await;
    let mut last_chance = Events::new();
    last_chance.subscribe_unexpected(&client).await;

    let ok1 = client
        .send(Publish::new("orders", r#"{"id":1}"#))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let bad = client
        .send(
            Publish::new("denied.x", r#"{"id":2}"#)
                .correlation_id("corr-7")
                .expiration(30)
                .sow_key("k2"),
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ok2 = client
        .send(Publish::new("orders", r#"{"id":3}"#))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ok1 < bad && bad < ok2, "sequences increase");
    client.send(FLUSH).await.unwrap().unwrap();

    for events in [&mut a, &mut b] {
        let f = events.next_failed().await;
        assert_eq!(f.sequence, bad);
        assert_eq!(f.reason, Reason::NotEntitled);
        assert_eq!(f.status, Status::Failure);
        let m = f.message.as_ref().expect("the stored message");
        assert_eq!(m.seq, bad);
        assert_eq!(m.operation, Operation::Publish);
        assert_eq!(&*m.topic, "denied.x");
        assert_eq!(&m.data[..], br#"{"id":2}"#);
        assert_eq!(f.correlation_id(), Some("corr-7"));
        assert_eq!(m.opts().expiration, Some(30));
        assert_eq!(m.opts().sow_key.as_deref(), Some("k2"));
        assert_eq!(f.ack.command, Some(Command::Ack));
        assert!(f.ack.ack_type.is_only(AckType::Persisted));
        assert_eq!(f.ack.seq, Some(bad));
    }
    // The failure went to the failed-write subscribers, not to last chance; nothing else came.
    a.assert_quiet(Duration::from_millis(100)).await;
    last_chance.assert_quiet(Duration::from_millis(100)).await;

    let stats = support::stats(&client).await;
    assert_eq!(
        (
            stats.published,
            stats.persisted,
            stats.failed,
            stats.unacknowledged
        ),
        (3, 2, 1, 0)
    );
    assert_eq!(server.persisted("fw-all"), vec![ok1, ok2]);
}

#[actix_rt::test]
async fn without_failed_write_subscribers_the_raw_ack_goes_to_last_chance() {
    let server = server();
    let client = config("fw-lastchance", &server).start().unwrap();
    let mut lc1 = Events::new();
    let mut lc2 = Events::new();
    lc1.subscribe_unexpected(&client).await;
    lc2.subscribe_unexpected(&client).await;

    let bad = client
        .send(Publish::new("denied", "x"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    client.send(FLUSH).await.unwrap().unwrap();
    for lc in [&mut lc1, &mut lc2] {
        let u = lc.next_unexpected().await;
        assert_eq!(u.kind, UnexpectedKind::UnhandledFailedWrite);
        assert_eq!(u.frame.header.seq, Some(bad));
        assert_eq!(u.frame.header.reason, Some(Reason::NotEntitled));
        assert!(
            u.frame.body.is_empty(),
            "only the ack: no store information"
        );
    }
    assert_eq!(support::stats(&client).await.failed, 1);
}

#[actix_rt::test]
async fn with_no_subscriber_at_all_the_failure_is_counted_and_logged() {
    let server = server();
    let client = config("fw-none", &server).start().unwrap();
    client
        .send(Publish::new("denied", "x"))
        .await
        .unwrap()
        .unwrap();
    client.send(FLUSH).await.unwrap().unwrap();
    let stats = support::stats(&client).await;
    assert_eq!((stats.failed, stats.unacknowledged), (1, 0));
}

#[actix_rt::test]
async fn a_stopped_subscriber_does_not_disturb_the_others_and_unsubscribe_falls_through() {
    let server = server();
    let client = config("fw-stopped", &server).start().unwrap();
    let dead = Events::new();
    dead.subscribe_failed(&client).await;
    let mut live = Events::new();
    let live_id = live.subscribe_failed(&client).await;
    let mut lc = Events::new();
    lc.subscribe_unexpected(&client).await;

    // Stop the first subscriber's actor.
    use actix::prelude::*;
    struct Stop;
    impl Message for Stop {
        type Result = ();
    }
    impl Handler<Stop> for support::Collector {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }
    dead.addr.send(Stop).await.unwrap();

    let s1 = client
        .send(Publish::new("denied", "1"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    client.send(FLUSH).await.unwrap().unwrap();
    assert_eq!(live.next_failed().await.sequence, s1);

    // Once the last live subscriber unsubscribes, failures fall through to last chance.
    assert!(client
        .send(Unsubscribe(live_id))
        .await
        .unwrap()
        .expect("client running"));
    assert!(
        !client
            .send(Unsubscribe(live_id))
            .await
            .unwrap()
            .expect("client running"),
        "already gone"
    );
    let s2 = client
        .send(Publish::new("denied", "2"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    client.send(FLUSH).await.unwrap().unwrap();
    let u = lc.next_unexpected().await;
    assert_eq!(
        (u.kind, u.frame.header.seq),
        (UnexpectedKind::UnhandledFailedWrite, Some(s2))
    );
    live.assert_quiet(Duration::from_millis(100)).await;
}

#[actix_rt::test]
async fn delta_publish_and_sow_delete_failures_are_enriched() {
    let server = server();
    let client = config("fw-ops", &server).start().unwrap();
    let mut fw = Events::new();
    fw.subscribe_failed(&client).await;

    let d = client
        .send(DeltaPublish(
            Publish::new("denied.delta", r#"{"id":1,"qty":2}"#).correlation_id("c1"),
        ))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let f = fw.next_failed_after_flush(&client).await;
    assert_eq!(f.sequence, d);
    assert_eq!(f.operation(), Some(Operation::DeltaPublish));
    assert_eq!(f.topic(), Some("denied.delta"));
    assert_eq!(f.data().map(|b| &b[..]), Some(&br#"{"id":1,"qty":2}"#[..]));
    assert_eq!(f.correlation_id(), Some("c1"));
    assert_eq!(f.reason, Reason::NotEntitled);

    let sd = client
        .send(SowDelete {
            topic: "orders".into(),
            selector: SowDeleteSelector::Filter("/id = = 1".into()),
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let f = fw.next_failed_after_flush(&client).await;
    assert_eq!(f.sequence, sd);
    assert_eq!(f.operation(), Some(Operation::SowDelete));
    assert_eq!(f.topic(), Some("orders"));
    assert_eq!(f.reason, Reason::BadFilter);
    let m = f.message.as_ref().unwrap();
    assert_eq!(m.opts().filter.as_deref(), Some("/id = = 1"));

    let sdk = client
        .send(SowDelete {
            topic: "denied.sow".into(),
            selector: SowDeleteSelector::Keys("a,b".into()),
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let f = fw.next_failed_after_flush(&client).await;
    assert_eq!(f.sequence, sdk);
    assert_eq!(
        f.message.as_ref().unwrap().opts().sow_keys.as_deref(),
        Some("a,b")
    );
    assert_eq!(f.reason, Reason::NotEntitled);

    let sdd = client
        .send(SowDelete {
            topic: "denied.sow".into(),
            selector: SowDeleteSelector::Data(r#"{"id":5}"#.into()),
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let f = fw.next_failed_after_flush(&client).await;
    assert_eq!(f.sequence, sdd);
    assert_eq!(f.data().map(|b| &b[..]), Some(&br#"{"id":5}"#[..]));
}

#[actix_rt::test]
async fn store_full_error_mode_still_reports_failures() {
    let server = server();
    let client = config("fw-full", &server)
        .capacity(2, 1 << 20)
        .when_full(FullPolicy::Error)
        .start()
        .unwrap();
    let mut fw = Events::new();
    fw.subscribe_failed(&client).await;
    client
        .send(Publish::new("denied", "a"))
        .await
        .unwrap()
        .unwrap();
    let f = fw.next_failed_after_flush(&client).await;
    assert_eq!(f.reason, Reason::NotEntitled);
}

trait AfterFlush {
    async fn next_failed_after_flush(
        &mut self,
        client: &actix::Addr<actix_amps::client::ClientActor>,
    ) -> actix_amps::client::FailedWrite;
}

impl AfterFlush for Events {
    async fn next_failed_after_flush(
        &mut self,
        client: &actix::Addr<actix_amps::client::ClientActor>,
    ) -> actix_amps::client::FailedWrite {
        client.send(FLUSH).await.unwrap().unwrap();
        self.next_failed().await
    }
}

#[actix_rt::test]
async fn a_failure_ack_lost_with_its_connection_is_still_reported_once_and_enriched() {
    let server = server();
    let client = config("fw-lost-ack", &server).start().unwrap();
    let mut fw = Events::new();
    fw.subscribe_failed(&client).await;
    client.send(FLUSH).await.unwrap().unwrap(); // logged on

    // The denied write's failure ack is held back, the write after it is persisted, and the
    // connection drops before any ack goes out.
    server.handle.stall_acks();
    let denied = client
        .send(Publish::new("denied.lost", "payload").correlation_id("c-lost"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let after = client
        .send(Publish::new("orders", r#"{"id":9}"#))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.handle.last_sequence("fw-lost-ack") != Some(after) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never persisted {after}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.handle.drop_connections();
    server.handle.resume_acks();

    // The logon reports `after` as the last sequence, which covers the denied write; the server
    // re-sends the undelivered failure and the client still has the message to report.
    client.send(FLUSH).await.unwrap().unwrap();
    let f = fw.next_failed().await;
    assert_eq!(
        (f.sequence, f.reason.clone()),
        (denied, Reason::NotEntitled)
    );
    assert_eq!(f.topic(), Some("denied.lost"));
    assert_eq!(f.correlation_id(), Some("c-lost"));
    fw.assert_quiet(Duration::from_millis(100)).await;
    let stats = support::stats(&client).await;
    assert_eq!(
        (
            stats.published,
            stats.persisted,
            stats.failed,
            stats.unacknowledged
        ),
        (2, 1, 1, 0)
    );
}
