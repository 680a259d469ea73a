//! Logon, reconnect and replay: dropped connections and server restarts lose nothing and
//! duplicate nothing (checked against the server's journal).

mod support;

use actix_amps::client::Publish;
use support::{config, wait_stats, TestServer, WAIT};

const N: u64 = 20_000;
const BATCH: u64 = 500;

async fn publish_range(
    client: &actix::Addr<actix_amps::client::ClientActor>,
    from: u64,
    to: u64,
) -> (u64, u64) {
    support::publish_range(client, "replay", from, to, BATCH).await
}

#[actix_rt::test]
async fn dropped_connections_mid_stream_lose_and_duplicate_nothing() {
    let server = TestServer::start(|c| c);
    let client = config("replay-drop", &server).start().unwrap();
    let (first, _) = publish_range(&client, 0, N / 4).await;
    // Publishing never waits for the server: make sure the stream is flowing before cutting it.
    wait_stats(&client, |s| s.persisted > 0).await;
    server.handle.drop_connections();
    publish_range(&client, N / 4, N / 2).await;
    wait_stats(&client, |s| s.reconnects >= 1).await;
    server.handle.drop_connections();
    let (_, last) = publish_range(&client, N / 2, N).await;
    support::flush(&client).await;
    let stats = support::stats(&client).await;
    assert_eq!(
        (
            stats.published,
            stats.persisted,
            stats.failed,
            stats.unacknowledged
        ),
        (N, N, 0, 0)
    );
    assert!(stats.reconnects >= 2, "{stats:?}");
    assert_eq!(
        server.persisted("replay-drop"),
        (first..=last).collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn server_restart_mid_stream_and_logon_reports_the_last_sequence() {
    let server = TestServer::start(|c| c);
    let client = config("replay-restart", &server).start().unwrap();
    let (first, mid) = publish_range(&client, 0, N / 2).await;
    wait_stats(&client, |s| s.persisted > 0).await;
    server.handle.stop();
    let pending = tokio::spawn(publish_range_owned(client.clone(), N / 2, N));
    server.handle.restart().unwrap();
    let (_, last) = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(last > mid);
    support::flush(&client).await;
    wait_stats(&client, |s| s.unacknowledged == 0 && s.reconnects >= 1).await;
    assert_eq!(server.handle.last_sequence("replay-restart"), Some(last));
    assert_eq!(
        server.persisted("replay-restart"),
        (first..=last).collect::<Vec<_>>()
    );
}

async fn publish_range_owned(
    client: actix::Addr<actix_amps::client::ClientActor>,
    from: u64,
    to: u64,
) -> (u64, u64) {
    publish_range(&client, from, to).await
}

#[actix_rt::test]
async fn a_restarted_client_continues_after_the_servers_last_sequence() {
    let server = TestServer::start(|c| c);
    let client = config("replay-renumber", &server).start().unwrap();
    let s1 = client
        .send(Publish::new("t", "1"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    support::flush(&client).await;
    client.send(actix_amps::client::Shutdown).await.unwrap();

    // A new client process with the same name and a fresh memory store continues numbering
    // above everything the server has for that name.
    let again = config("replay-renumber", &server).start().unwrap();
    assert_eq!(server.handle.last_sequence("replay-renumber"), Some(s1));
    let s2 = again
        .send(Publish::new("t", "2"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(s2 > s1);
    support::flush(&again).await;
    assert_eq!(support::stats(&again).await.failed, 0);
    assert_eq!(server.persisted("replay-renumber"), vec![s1, s2]);
}

#[actix_rt::test]
async fn connection_events_follow_a_drop_in_order() {
    use actix_amps::client::ConnectionEvent;
    use support::{Event, Events};
    let server = TestServer::start(|c| c);
    let client = config("replay-events", &server).start().unwrap();
    support::flush(&client).await;
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    server.handle.stall_acks();
    let (first, last) = publish_range(&client, 0, 10).await;
    server.handle.drop_connections();
    server.handle.resume_acks();
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(ConnectionEvent::Replayed { .. })) {
        if let Event::Connection(e) = events.next().await {
            seen.push(e);
        }
    }
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            ConnectionEvent::Connected { .. } => "connected",
            ConnectionEvent::LoggedOn { .. } => "logged on",
            ConnectionEvent::Replayed { .. } => "replayed",
            ConnectionEvent::Disconnected { .. } => "disconnected",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["disconnected", "connected", "logged on", "replayed"]
    );
    // The server had persisted all ten before the drop (only the acks were held back), so the
    // logon reports the last one and nothing needs replaying.
    match (&seen[2], &seen[3]) {
        (
            ConnectionEvent::LoggedOn {
                server_last_sequence,
            },
            ConnectionEvent::Replayed { messages },
        ) => {
            assert!(*server_last_sequence <= last);
            assert_eq!(
                *messages as u64,
                last - (*server_last_sequence).max(first - 1)
            );
        }
        other => panic!("{other:?}"),
    }
    support::flush(&client).await;
    assert_eq!(
        server.persisted("replay-events"),
        (first..=last).collect::<Vec<_>>()
    );
}
