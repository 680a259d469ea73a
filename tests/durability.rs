//! Durability under faults, 100,000 messages each: a dropped connection and a server restart
//! mid-stream, with the memory store and the file store. Every message is persisted exactly
//! once, checked with the server's journal.

mod support;

use actix::Addr;
use actix_amps::client::{ClientActor, StoreKind};
use support::{config, wait_stats, TestServer, WAIT};

const N: u64 = 100_000;
const BATCH: u64 = 1_000;

/// Publishes `[from, to)` in batches; returns the first and last sequence.
async fn publish(client: &Addr<ClientActor>, from: u64, to: u64) -> (u64, u64) {
    support::publish_range(client, "durable", from, to, BATCH).await
}

async fn finish(
    client: &Addr<ClientActor>,
    server: &TestServer,
    name: &str,
    first: u64,
    last: u64,
) {
    support::flush(client).await;
    let stats = support::stats(client).await;
    assert_eq!(
        (stats.published, stats.failed, stats.unacknowledged),
        (N, 0, 0),
        "{stats:?}"
    );
    assert!(stats.reconnects >= 1, "{stats:?}");
    let persisted = server.persisted(name);
    assert_eq!(persisted.len() as u64, N, "exactly N persisted");
    assert_eq!(
        persisted,
        (first..=last).collect::<Vec<_>>(),
        "each once, in order"
    );
}

async fn dropped_connection(name: &str, store: StoreKind) {
    let server = TestServer::start(|c| c);
    let client = config(name, &server).store(store).start().unwrap();
    let (first, _) = publish(&client, 0, N / 3).await;
    wait_stats(&client, |s| s.persisted > 0).await;
    server.handle.drop_connections();
    publish(&client, N / 3, 2 * N / 3).await;
    server.handle.drop_connections();
    let (_, last) = publish(&client, 2 * N / 3, N).await;
    finish(&client, &server, name, first, last).await;
}

async fn server_restart(name: &str, store: StoreKind) {
    let server = TestServer::start(|c| c);
    let client = config(name, &server).store(store).start().unwrap();
    let (first, _) = publish(&client, 0, N / 2).await;
    wait_stats(&client, |s| s.persisted > 0).await;
    server.handle.stop();
    let rest = actix_rt::spawn({
        let client = client.clone();
        async move { publish(&client, N / 2, N).await }
    });
    server.handle.restart().unwrap();
    let (_, last) = tokio::time::timeout(WAIT, rest).await.unwrap().unwrap();
    finish(&client, &server, name, first, last).await;
}

#[actix_rt::test]
async fn dropped_connection_memory_store() {
    dropped_connection("dur-drop-mem", StoreKind::Memory).await;
}

#[actix_rt::test]
async fn dropped_connection_file_store() {
    let dir = tempfile::tempdir().unwrap();
    dropped_connection("dur-drop-file", StoreKind::file(dir.path())).await;
}

#[actix_rt::test]
async fn server_restart_memory_store() {
    server_restart("dur-restart-mem", StoreKind::Memory).await;
}

#[actix_rt::test]
async fn server_restart_file_store() {
    let dir = tempfile::tempdir().unwrap();
    server_restart("dur-restart-file", StoreKind::file(dir.path())).await;
}
