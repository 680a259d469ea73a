//! Running without a publish store: no sequence numbers, no acks, nothing replayed.

mod support;

use std::time::Duration;

use actix_amps::client::{Publish, SowDeleteAndWait, SowDeleteSelector, StoreKind, WaitLoggedOn};
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
    assert!(client.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    let first = client
        .send(Publish::new("orders", r#"{"id":0}"#))
        .await
        .unwrap();
    assert!(matches!(first, Ok(None)), "{first:?}");
    for i in 1..10 {
        let r = client
            .send(Publish::new("orders", format!("{{\"id\":{i}}}")))
            .await
            .unwrap();
        assert!(matches!(r, Ok(None)), "no sequence without a store: {r:?}");
    }
    support::flush(&client).await;
    let stats = client
        .send(SowDeleteAndWait::new(
            "orders",
            SowDeleteSelector::Filter("1=1".into()),
            WAIT,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stats.matches, stats.records_deleted, stats.topic_matches),
        (10, 10, 10)
    );
    let s = support::stats(&client).await;
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
    support::flush(&client).await;
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

#[actix_rt::test]
async fn wait_logged_on_times_out_without_a_server_and_resolves_with_one() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = actix_amps::client::ClientConfig::new("nostore-wait")
        .uri(&format!("tcp://127.0.0.1:{port}/amps/json"))
        .unwrap()
        .store(StoreKind::None)
        .start()
        .unwrap();
    let started = tokio::time::Instant::now();
    assert!(!client
        .send(WaitLoggedOn::new(Duration::from_millis(200)))
        .await
        .unwrap());
    assert!(started.elapsed() >= Duration::from_millis(200));

    let server = TestServer::start(|c| c);
    let client = config("nostore-wait-2", &server)
        .store(StoreKind::None)
        .start()
        .unwrap();
    assert!(client.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    // Already logged on: answered from the current state.
    assert!(client
        .send(WaitLoggedOn::new(Duration::from_secs(1)))
        .await
        .unwrap());
}
