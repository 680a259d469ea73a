//! Failover across a list of servers, publish-gap detection, and the maximum retry time.

mod support;

use std::time::Duration;

use actix_amps::client::{
    ClientConfig, ConnectionEvent, Publish, PublishBatch, PublishFlush, ReconnectPolicy,
};
use actix_amps::error::{FlushError, GiveUpReason};
use support::{wait_stats, Events, TestServer, WAIT};

fn two_server_config(name: &str, a: &TestServer, b: &TestServer) -> ClientConfig {
    ClientConfig::new(name)
        .uri(&a.uri())
        .unwrap()
        .uri(&b.uri())
        .unwrap()
        .heartbeat(None)
        .ack_conflation(Duration::from_millis(2))
}

async fn publish_n(client: &actix::Addr<actix_amps::client::ClientActor>, n: usize) -> (u64, u64) {
    let batch = (0..n).map(|i| Publish::new("fo", format!("{i}"))).collect();
    client
        .send(PublishBatch::new(batch))
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[actix_rt::test]
async fn the_client_moves_to_the_second_server_and_continues() {
    let a = TestServer::start(|c| c);
    let b = TestServer::start(|c| c);
    let client = two_server_config("failover", &a, &b).start().unwrap();
    let (first, _) = publish_n(&client, 5_000).await;
    wait_stats(&client, |s| s.persisted > 0).await;
    a.handle.stop();
    let (_, last) = publish_n(&client, 5_000).await;
    support::flush(&client).await;
    let stats = support::stats(&client).await;
    assert_eq!((stats.unacknowledged, stats.failed), (0, 0));
    assert!(stats.reconnects >= 1);
    let on_a = a.persisted("failover");
    let on_b = b.persisted("failover");
    assert!(!on_b.is_empty(), "the second server took over");
    let mut all: Vec<u64> = on_a.iter().chain(&on_b).copied().collect();
    all.sort_unstable();
    all.dedup();
    // Without replication between the two servers, a message persisted on A whose ack was lost
    // when A stopped is replayed to B: at least once across servers, exactly once on each.
    assert_eq!(all, (first..=last).collect::<Vec<_>>());
    assert!(on_b.windows(2).all(|w| w[0] < w[1]) && on_a.windows(2).all(|w| w[0] < w[1]));
}

#[actix_rt::test]
async fn publish_gap_is_a_typed_logon_error_when_enabled() {
    let a = TestServer::start(|c| c);
    let b = TestServer::start(|c| c); // knows nothing of this client: its last sequence is 0
    let client = two_server_config("gap-on", &a, &b)
        .error_on_publish_gap(true)
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    let (_, last) = publish_n(&client, 100).await;
    support::flush(&client).await;
    a.handle.stop();
    let gave_up = events
        .until_connection(|e| matches!(e, ConnectionEvent::GaveUp { .. }))
        .await;
    let ConnectionEvent::GaveUp { reason } = gave_up else {
        unreachable!()
    };
    assert_eq!(
        reason,
        GiveUpReason::PublishGap {
            server_last: 0,
            discarded: last
        },
        "names both numbers: {reason}"
    );
    let text = reason.to_string();
    assert!(text.contains("publish gap"), "{text}");
    assert!(text.contains("server's last sequence is 0"), "{text}");
    let err = client.send(PublishFlush { timeout: WAIT }).await.unwrap();
    assert!(matches!(err, Err(FlushError::GaveUp { .. })), "{err:?}");
}

#[actix_rt::test]
async fn publish_gap_is_ignored_by_default() {
    let a = TestServer::start(|c| c);
    let b = TestServer::start(|c| c);
    let client = two_server_config("gap-off", &a, &b).start().unwrap();
    publish_n(&client, 100).await;
    support::flush(&client).await;
    a.handle.stop();
    let (s, _) = publish_n(&client, 10).await;
    support::flush(&client).await;
    assert_eq!(b.persisted("gap-off").first(), Some(&s));
}

#[actix_rt::test]
async fn after_the_maximum_retry_time_pending_flushes_fail() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ClientConfig::new("no-server")
        .uri(&format!("tcp://127.0.0.1:{port}/amps/json"))
        .unwrap()
        .reconnect(ReconnectPolicy::new().max_retry_time(Some(Duration::from_millis(300))))
        .start()
        .unwrap();
    client.send(Publish::new("t", "x")).await.unwrap().unwrap();
    let started = tokio::time::Instant::now();
    match client.send(PublishFlush { timeout: WAIT }).await.unwrap() {
        Err(FlushError::GaveUp {
            unacknowledged: 1,
            reason,
        }) => {
            assert!(
                matches!(reason, GiveUpReason::MaxRetryTime { max, .. } if max == Duration::from_millis(300)),
                "{reason:?}"
            );
            assert!(
                reason.to_string().contains("maximum retry time"),
                "{reason}"
            )
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}
