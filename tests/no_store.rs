//! Running without a publish store: no sequence numbers, no acks, nothing replayed.

mod support;

use std::time::Duration;

use actix_amps::client::{
    GetStats, Publish, PublishFlush, SowDeleteAndWait, SowDeleteSelector, StoreKind,
};
use actix_amps::error::PublishError;
use support::{config, wait_stats, TestServer, WAIT};

#[actix_rt::test]
async fn publishes_go_out_unsequenced_and_reach_the_server() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let client = config("nostore", &server)
        .store(StoreKind::None)
        .start()
        .unwrap();
    // Wait until logged on: a store-less publish while disconnected is refused, not kept.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client
            .send(Publish::new("orders", r#"{"id":0}"#))
            .await
            .unwrap()
        {
            Ok(None) => break,
            Err(PublishError::NotConnected) => {
                assert!(tokio::time::Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    for i in 1..10 {
        let r = client
            .send(Publish::new("orders", format!("{{\"id\":{i}}}")))
            .await
            .unwrap();
        assert!(matches!(r, Ok(None)), "no sequence without a store: {r:?}");
    }
    client
        .send(PublishFlush { timeout: WAIT })
        .await
        .unwrap()
        .unwrap();
    let stats = client
        .send(SowDeleteAndWait {
            topic: "orders".into(),
            selector: SowDeleteSelector::Filter("1=1".into()),
            timeout: WAIT,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stats.matches, stats.records_deleted, stats.topic_matches),
        (10, 10, 10)
    );
    let s = client.send(GetStats).await.unwrap();
    assert_eq!((s.published, s.unacknowledged), (11, 0));
    // Store-less writes carry no sequence, so the journal has none for this client.
    assert!(server.persisted("nostore").is_empty());
}

#[actix_rt::test]
async fn without_a_store_a_disconnected_publish_is_an_error_not_a_silent_drop() {
    let server = TestServer::start(|c| c);
    let client = config("nostore-down", &server)
        .store(StoreKind::None)
        .start()
        .unwrap();
    wait_stats(&client, |_| true).await;
    client
        .send(PublishFlush { timeout: WAIT })
        .await
        .unwrap()
        .unwrap();
    server.handle.stop();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.send(Publish::new("t", "x")).await.unwrap() {
            Err(PublishError::NotConnected) => break,
            Ok(None) => {
                // The close may not have been noticed yet.
                assert!(tokio::time::Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("{other:?}"),
        }
    }
}
