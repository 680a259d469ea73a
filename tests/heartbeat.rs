//! Heartbeats detect a server that stops answering without closing the socket.

mod support;

use std::time::Duration;

use actix_amps::client::{ConnectionEvent, Publish};
use support::{config, wait_stats, Events, TestServer};

#[actix_rt::test]
async fn a_stalled_server_is_detected_within_two_intervals_and_the_client_reconnects() {
    let server = TestServer::start(|c| c);
    let client = config("hb-stall", &server)
        .heartbeat(Some(Duration::from_secs(1)))
        .logon_timeout(Duration::from_secs(1))
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    support::flush(&client).await;

    server.handle.freeze();
    let frozen_at = tokio::time::Instant::now();
    let s = client
        .send(Publish::new("t", "during the stall"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event = events
        .until_connection(|e| matches!(e, ConnectionEvent::Disconnected { .. }))
        .await;
    let detected = frozen_at.elapsed();
    let ConnectionEvent::Disconnected { reason, .. } = event else {
        unreachable!()
    };
    assert!(reason.contains("heartbeat"), "{reason}");
    // 2 x interval, checked every interval/4, plus scheduling slack on a busy machine.
    assert!(
        detected <= Duration::from_millis(2_750),
        "detected after {detected:?}"
    );
    assert!(
        detected >= Duration::from_millis(1_500),
        "not before silence was long enough: {detected:?}"
    );

    server.handle.thaw();
    support::flush(&client).await;
    let stats = wait_stats(&client, |s| s.reconnects >= 1).await;
    assert_eq!(stats.unacknowledged, 0);
    assert!(server.persisted("hb-stall").contains(&s));
}
