//! A stopped client answers with errors, never with made-up values; `start_in` works with any
//! arbiter, the current one included.

mod support;

use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    ClientActor, FailedWrite, GetStats, Publish, PublishFlush, Shutdown, SubscribeFailedWrites,
    Unsubscribe,
};
use actix_amps::error::StartError;
use support::{config, wait_stats, TestServer, WAIT};

struct Ignore;

impl Actor for Ignore {
    type Context = Context<Self>;
}

impl Handler<FailedWrite> for Ignore {
    type Result = ();

    fn handle(&mut self, _: FailedWrite, _: &mut Context<Self>) {}
}

/// Publishes `n` messages and waits until the server acknowledged them all.
async fn publish_persisted(client: &Addr<ClientActor>, n: u64) {
    for i in 0..n {
        client
            .send(Publish::new("t", format!("{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    support::flush(client).await;
    wait_stats(client, |s| s.persisted == n).await;
}

#[actix_rt::test]
async fn a_stopped_client_answers_every_request_with_an_error() {
    let server = TestServer::start(|c| c);
    let client = config("stopped-1", &server).start().unwrap();
    publish_persisted(&client, 3).await;
    let ignore = Ignore.start();
    let id = client
        .send(SubscribeFailedWrites(ignore.clone().recipient()))
        .await
        .unwrap()
        .expect("client running");
    // Requests sent while the shutdown runs are answered with the real state or an error;
    // requests after it with an error.
    let shutdown = client.send(Shutdown);
    let during = client.send(GetStats);
    let subscribe_during = client.send(SubscribeFailedWrites(ignore.clone().recipient()));
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown in time")
        .unwrap();
    // Either the real counters or an error: never zeros.
    if let Ok(Ok(stats)) = tokio::time::timeout(WAIT, during).await.expect("an answer") {
        assert_eq!(stats.persisted, 3, "real counters: {stats:?}");
    }
    // Either a real, new id or an error: never a made-up one.
    let answer = tokio::time::timeout(WAIT, subscribe_during);
    if let Ok(Ok(new_id)) = answer.await.expect("an answer") {
        assert_ne!(new_id, id, "a real, new subscription id");
    }
    let stats = tokio::time::timeout(WAIT, client.send(GetStats))
        .await
        .expect("an answer");
    assert!(
        !matches!(stats, Ok(Ok(_))),
        "stats of a stopped client: {stats:?}"
    );
    let sub = tokio::time::timeout(WAIT, client.send(SubscribeFailedWrites(ignore.recipient())))
        .await
        .expect("an answer");
    assert!(
        !matches!(sub, Ok(Ok(_))),
        "subscribed to a stopped client: {sub:?}"
    );
    let unsub = tokio::time::timeout(WAIT, client.send(Unsubscribe(id)))
        .await
        .expect("an answer");
    assert!(
        !matches!(unsub, Ok(Ok(_))),
        "unsubscribed from a stopped client: {unsub:?}"
    );
    let publish = tokio::time::timeout(WAIT, client.send(Publish::new("t", "late")))
        .await
        .expect("an answer");
    assert!(
        !matches!(publish, Ok(Ok(_))),
        "stored by a stopped client: {publish:?}"
    );
    assert_eq!(server.persisted("stopped-1").len(), 3);
}

#[actix_rt::test]
async fn start_in_the_current_arbiter_does_not_deadlock() {
    let server = TestServer::start(|c| c);
    let current = Arbiter::current();
    let client = config("start-in-current", &server)
        .start_in(&current)
        .expect("started");
    publish_persisted(&client, 5).await;
    assert_eq!(server.persisted("start-in-current").len(), 5);
}

#[actix_rt::test]
async fn start_in_another_arbiter_runs_the_client_there() {
    let server = TestServer::start(|c| c);
    let arbiter = Arbiter::new();
    let client = config("start-in-other", &server)
        .start_in(&arbiter.handle())
        .expect("started");
    publish_persisted(&client, 5).await;
    let flushed = client
        .send(PublishFlush {
            timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
    assert!(flushed.is_ok(), "{flushed:?}");
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
}

#[actix_rt::test]
async fn start_in_a_stopped_arbiter_is_an_error() {
    let server = TestServer::start(|c| c);
    let arbiter = Arbiter::new();
    let handle = arbiter.handle();
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
    match config("start-in-stopped", &server).start_in(&handle) {
        Err(StartError::ArbiterStopped) => {}
        other => panic!(
            "expected ArbiterStopped, got {:?}",
            other.map(|_| "a client")
        ),
    }
}

#[actix_rt::test]
async fn start_in_reports_store_errors_at_once() {
    let server = TestServer::start(|c| c);
    let dir = tempfile::tempdir().unwrap();
    let first = config("start-in-locked", &server)
        .store(actix_amps::client::StoreKind::file(dir.path()))
        .start()
        .unwrap();
    let arbiter = Arbiter::new();
    let second = config("start-in-locked", &server)
        .store(actix_amps::client::StoreKind::file(dir.path()))
        .start_in(&arbiter.handle());
    assert!(
        matches!(second, Err(StartError::Store(_))),
        "{:?}",
        second.map(|_| "a client")
    );
    first.send(Shutdown).await.unwrap();
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
}
