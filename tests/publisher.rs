//! The `Publisher` handle and the one-hop `Publish` path against the embedded server: call
//! order is sequence order whichever path a write takes, handles work from other threads,
//! `try_publish` never waits and a refused write is never sent, writes after the client
//! stopped are refused, and a file store answers after its group commit. Every run is checked
//! against the server's journal.

mod support;

use actix_amps::client::{
    FullPolicy, GetPublisher, GetStats, Publish, PublishBatch, Shutdown, StoreKind, Topic,
};
use actix_amps::error::PublishError;
use support::{config, wait_stats, TestServer, WAIT};

#[actix_rt::test]
async fn every_path_is_sequenced_in_call_order_and_persisted_once() {
    let server = TestServer::start(|c| c);
    let client = config("pub-order", &server).start().unwrap();
    let publisher = client.send(GetPublisher).await.unwrap();
    let topic = Topic::new("orders");
    let mut seqs = Vec::new();
    for round in 0..50u64 {
        let a = publisher
            .publish(Publish::new(&topic, format!(r#"{{"r":{round},"p":"a"}}"#)))
            .await
            .unwrap()
            .unwrap();
        let b = publisher
            .try_publish(Publish::new(&topic, format!(r#"{{"r":{round},"p":"b"}}"#)))
            .unwrap()
            .unwrap();
        // do_send has no answer: the next awaited write's number says it came in between.
        client.do_send(Publish::new(&topic, b"{}"));
        let (first, last) = client
            .send(PublishBatch::new(vec![
                Publish::new("orders", "{}"),
                Publish::new(String::from("orders"), vec![b'{', b'}']),
            ]))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let d = publisher
            .delta_publish(Publish::new(&topic, &b"{}"[..]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b, a + 1, "try_publish follows publish");
        assert_eq!(first, b + 2, "the do_send between them took one number");
        assert_eq!(last, first + 1);
        assert_eq!(d, last + 1);
        seqs.extend([a, b, b + 1, first, last, d]);
    }
    let report = publisher.flush(WAIT).await.unwrap();
    assert!(report.all_persisted());
    let stats = client.send(GetStats).await.unwrap().unwrap();
    assert_eq!(
        (stats.published, stats.persisted, stats.failed),
        (300, 300, 0)
    );
    assert_eq!(server.persisted("pub-order"), seqs);
}

#[actix_rt::test]
async fn publishers_on_other_threads_share_one_sequence_space() {
    let server = TestServer::start(|c| c);
    let client = config("pub-threads", &server).start().unwrap();
    let publisher = client.send(GetPublisher).await.unwrap();
    support::flush(&client).await;
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let publisher = publisher.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let topic = Topic::new(format!("t{t}"));
                    let mut mine = Vec::new();
                    for i in 0..2_000 {
                        let seq = publisher
                            .publish(Publish::new(&topic, format!(r#"{{"i":{i}}}"#)))
                            .await
                            .unwrap()
                            .unwrap();
                        mine.push(seq);
                    }
                    mine
                })
            })
        })
        .collect();
    // The client's own thread publishes at the same time.
    for i in 0..2_000 {
        client.do_send(Publish::new("local", format!(r#"{{"i":{i}}}"#)));
    }
    let mut all = Vec::new();
    for t in threads {
        let mine = t.join().unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "each thread's own order"
        );
        all.extend(mine);
    }
    publisher.flush(WAIT).await.unwrap();
    let stats = wait_stats(&client, |s| s.persisted == 8_000).await;
    assert_eq!((stats.failed, stats.unacknowledged), (0, 0));
    let persisted = server.persisted("pub-threads");
    assert_eq!(persisted.len(), 8_000, "every write persisted once");
    assert!(persisted.windows(2).all(|w| w[0] < w[1]));
    all.sort_unstable();
    assert!(all.iter().all(|s| persisted.binary_search(s).is_ok()));
}

#[actix_rt::test]
async fn try_publish_never_waits_and_a_refused_write_is_never_sent() {
    let server = TestServer::start(|c| c);
    let client = config("pub-full", &server)
        .capacity(3, 1 << 20)
        .when_full(FullPolicy::Wait)
        .start()
        .unwrap();
    let publisher = client.send(GetPublisher).await.unwrap();
    support::flush(&client).await;
    server.handle.stall_acks();
    let mut stored = Vec::new();
    for i in 0..3 {
        stored.push(
            publisher
                .try_publish(Publish::new("t", format!("{{\"i\":{i}}}")))
                .unwrap()
                .unwrap(),
        );
    }
    let refused = publisher.try_publish(Publish::new("t", r#"{"refused":1}"#));
    assert!(
        matches!(refused, Err(PublishError::StoreFull { messages: 3, .. })),
        "{refused:?}"
    );
    assert!(matches!(
        publisher.try_publish(Publish::new("", "{}")),
        Err(PublishError::EmptyTopic)
    ));
    // The awaited form waits for room (FullPolicy::Wait): stored at call time in order
    // behind the full store, answered once acks make room.
    let waiting = publisher.publish(Publish::new("t", r#"{"waited":1}"#));
    server.handle.resume_acks();
    let waited = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("room comes with the acks")
        .unwrap()
        .unwrap();
    assert_eq!(waited, stored[2] + 1, "the refused write took no number");
    publisher.flush(WAIT).await.unwrap();
    stored.push(waited);
    assert_eq!(server.persisted("pub-full"), stored);
}

#[actix_rt::test]
async fn writes_after_the_client_stopped_are_refused() {
    let server = TestServer::start(|c| c);
    let client = config("pub-stop", &server).start().unwrap();
    let publisher = client.send(GetPublisher).await.unwrap();
    let seq = publisher
        .publish(Publish::new("t", "{}"))
        .await
        .unwrap()
        .unwrap();
    publisher.flush(WAIT).await.unwrap();
    client.send(Shutdown).await.unwrap();
    assert!(matches!(
        publisher.publish(Publish::new("t", "{}")).await,
        Err(PublishError::Stopped)
    ));
    assert!(matches!(
        publisher.try_publish(Publish::new("t", "{}")),
        Err(PublishError::Stopped)
    ));
    assert_eq!(server.persisted("pub-stop"), vec![seq]);
}

#[actix_rt::test]
async fn a_file_store_answers_after_its_group_commit() {
    let server = TestServer::start(|c| c);
    let dir = tempfile::tempdir().unwrap();
    let client = config("pub-file", &server)
        .store(StoreKind::file(dir.path()))
        .start()
        .unwrap();
    let publisher = client.send(GetPublisher).await.unwrap();
    let topic = Topic::new("t");
    let mut seqs = Vec::new();
    // Many awaited writes in flight at once share group commits.
    let pending: Vec<_> = (0..500)
        .map(|i| publisher.publish(Publish::new(&topic, format!("{{\"i\":{i}}}"))))
        .collect();
    for p in pending {
        seqs.push(p.await.unwrap().unwrap());
    }
    for i in 0..100 {
        seqs.push(
            publisher
                .try_publish(Publish::new(&topic, format!("{{\"j\":{i}}}")))
                .unwrap()
                .unwrap(),
        );
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    publisher.flush(WAIT).await.unwrap();
    let stats = client.send(GetStats).await.unwrap().unwrap();
    assert_eq!((stats.persisted, stats.failed), (600, 0));
    client.send(Shutdown).await.unwrap();
    assert_eq!(server.persisted("pub-file"), seqs);
}
