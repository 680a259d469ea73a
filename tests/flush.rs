//! `PublishFlush`: success, timeout with the count still unacknowledged, and flush while
//! disconnected.

mod support;

use std::time::Duration;

use actix_amps::client::{Publish, PublishBatch, PublishFlush, StoreKind};
use actix_amps::error::FlushError;
use support::{config, wait_stats, TestServer, WAIT};

#[actix_rt::test]
async fn flush_resolves_once_everything_before_it_is_persisted() {
    let server = TestServer::start(|c| c);
    let client = config("flush-ok", &server).start().unwrap();
    let batch: Vec<Publish> = (0..5_000)
        .map(|i| Publish::new("t", format!("{{\"i\":{i}}}")))
        .collect();
    let (first, last) = client
        .send(PublishBatch::new(batch))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(last - first + 1, 5_000);
    support::flush(&client).await;
    // The flush resolved, so the store is already empty: no polling needed.
    let stats = support::stats(&client).await;
    assert_eq!(
        (stats.published, stats.persisted, stats.unacknowledged),
        (5_000, 5_000, 0)
    );
    assert_eq!(
        server.persisted("flush-ok"),
        (first..=last).collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn flush_with_an_empty_store_needs_only_the_flush_ack() {
    let server = TestServer::start(|c| c);
    let client = config("flush-empty", &server).start().unwrap();
    support::flush(&client).await;
    let none = config("flush-nostore", &server)
        .store(StoreKind::None)
        .start()
        .unwrap();
    support::flush(&none).await;
}

#[actix_rt::test]
async fn flush_timeout_reports_how_many_are_unacknowledged() {
    let server = TestServer::start(|c| c);
    let client = config("flush-timeout", &server).start().unwrap();
    support::flush(&client).await; // logged on
    server.handle.stall_acks();
    for i in 0..7 {
        client
            .send(Publish::new("t", format!("{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    let started = tokio::time::Instant::now();
    let err = client
        .send(PublishFlush {
            timeout: Duration::from_millis(300),
        })
        .await
        .unwrap();
    let waited = started.elapsed();
    match err {
        Err(FlushError::Timeout {
            unacknowledged: 7,
            connected: true,
            waited_ms,
        }) => {
            assert!(waited_ms >= 300)
        }
        other => panic!("expected a timeout with 7 unacknowledged, got {other:?}"),
    }
    assert!(
        waited < Duration::from_secs(2),
        "one deadline for the whole call: {waited:?}"
    );
    let text = FlushError::Timeout {
        unacknowledged: 7,
        waited_ms: 300,
        connected: true,
    }
    .to_string();
    assert!(text.contains("7 message(s) still unacknowledged"), "{text}");

    server.handle.resume_acks();
    support::flush(&client).await;
    assert_eq!(support::stats(&client).await.unacknowledged, 0);
}

#[actix_rt::test]
async fn flush_while_disconnected_times_out_then_succeeds_after_reconnect() {
    let server = TestServer::start(|c| c);
    let client = config("flush-down", &server).start().unwrap();
    let s1 = client
        .send(Publish::new("t", "before"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    support::flush(&client).await;

    server.handle.stop();
    // Writes made while the server is down are stored...
    let s2 = client
        .send(Publish::new("t", "during-1"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let s3 = client
        .send(Publish::new("t", "during-2"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let err = client
        .send(PublishFlush {
            timeout: Duration::from_millis(300),
        })
        .await
        .unwrap();
    assert!(
        matches!(
            err,
            Err(FlushError::Timeout {
                unacknowledged: 2,
                connected: false,
                ..
            })
        ),
        "{err:?}"
    );

    // ...and go out after the reconnect and replay; a flush started while down completes.
    let pending = client.send(PublishFlush { timeout: WAIT });
    server.handle.restart().unwrap();
    pending.await.unwrap().unwrap();
    let stats = wait_stats(&client, |s| s.reconnects >= 1).await;
    assert_eq!(stats.unacknowledged, 0);
    assert_eq!(server.persisted("flush-down"), vec![s1, s2, s3]);
}
