//! Every write accounted for exactly once, at each edge, with the real client against the
//! embedded server: flush reports that come after their failures, `do_send` refusals,
//! refusals across a server kill, a second process with the same name, failures a predecessor
//! left behind (memory and file store), a client name taken over, and oversized bodies.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    ClientActor, ConnectionEvent, FailureSource, LocalReason, Publish, PublishBatch, Shutdown,
    StoreKind, WaitLoggedOn,
};
use actix_amps::error::PublishError;
use actix_amps::protocol::Reason;
use support::{config, flush, Event, Events, TestServer, WAIT};

/// Waits (bounded) until the server has logged `seq` as the last sequence of `name`.
async fn until_logged(server: &TestServer, name: &str, seq: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.handle.last_sequence(name) != Some(seq) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: {seq} never logged"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Publishes one message and returns its sequence (the client is alive and stores it).
async fn publish_ok(client: &Addr<ClientActor>, topic: &str, body: &'static str) -> u64 {
    client
        .send(Publish::new(topic, body))
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// Starts a client named `name` on the file store in `dir`, waiting (bounded) for the previous
/// process's actors to release the store's lock.
async fn start_on_store(
    name: &str,
    server: &TestServer,
    dir: &std::path::Path,
) -> Addr<ClientActor> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match config(name, server).store(StoreKind::file(dir)).start() {
            Ok(c) => break c,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[actix_rt::test]
async fn a_flush_report_names_the_failures_already_in_the_mailbox() {
    let server = TestServer::start(|c| c.deny_write("^denied"));
    let client = config("report", &server).start().unwrap();
    let mut events = Events::new();
    events.subscribe_failed(&client).await;
    let mut denied = Vec::new();
    for i in 0..3 {
        denied.push(
            client
                .send(Publish::new("denied.t", format!("{i}")))
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
        client.send(Publish::new("ok", "x")).await.unwrap().unwrap();
    }
    let report = support::flush_report(&client).await;
    assert_eq!(report.failed, 3);
    assert_eq!(report.sequences, denied);
    assert_eq!(report.predecessor_failed, 0);
    // Already delivered: no waiting, no polling.
    let mut seen = Vec::new();
    while let Ok(e) = events.rx.try_recv() {
        if let Event::Failed(f) = e {
            seen.push(f.sequence);
        }
    }
    assert_eq!(seen, denied);
    // The next report does not repeat them.
    let again = support::flush_report(&client).await;
    assert!(again.all_persisted(), "{again:?}");
}

#[actix_rt::test]
async fn do_send_refusals_are_reported_as_local_failures() {
    let server = TestServer::start(|c| c);
    let client = config("dosend", &server).max_frame(4096).start().unwrap();
    let mut events = Events::new();
    events.subscribe_failed(&client).await;
    client.do_send(Publish::new("", "no topic"));
    client.do_send(Publish::new("t", "x".repeat(10_000)));
    client.do_send(Publish::new("t", "fine"));
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let f = events.next_failed().await;
        assert_eq!(f.sequence, 0, "never stored, never numbered");
        let FailureSource::Local(LocalReason::Rejected(e)) = &f.source else {
            panic!("{f:?}");
        };
        reasons.push(match **e {
            PublishError::EmptyTopic => "empty",
            PublishError::TooLarge { .. } => "large",
            _ => panic!("{e:?}"),
        });
        assert!(f.message.is_some(), "the write itself is in the report");
    }
    assert_eq!(reasons, ["empty", "large"]);
    flush(&client).await;
    assert_eq!(support::stats(&client).await.published, 1);
    assert_eq!(server.persisted("dosend").len(), 1);
}

/// A refusal whose ack had not left the server when it was killed, covered by the logon's
/// last sequence after the restart, is still reported (with the stored message) and counted
/// in the flush report.
#[actix_rt::test]
async fn a_refusal_survives_a_server_kill_before_its_ack() {
    let server = TestServer::start(|c| c.deny_write("^denied"));
    let client = config("killed", &server).start().unwrap();
    let mut events = Events::new();
    events.subscribe_failed(&client).await;
    flush(&client).await;
    server.handle.stall_acks();
    let a = client
        .send(Publish::new("t", "a"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let b = client
        .send(Publish::new("denied.t", "b").correlation_id("c-b"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let c = client
        .send(Publish::new("t", "c"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    until_logged(&server, "killed", c).await;
    server.handle.kill();
    server.handle.restart().unwrap();
    let report = support::flush_report(&client).await;
    assert_eq!(report.sequences, [b]);
    let f = events.next_failed().await;
    assert_eq!(f.sequence, b);
    assert_eq!(f.reason, Reason::NotEntitled);
    assert_eq!(
        f.correlation_id(),
        Some("c-b"),
        "enriched from what the logon discarded"
    );
    assert!(!f.predecessor);
    assert_eq!(server.persisted("killed"), [a, c]);
}

/// A failure read and proven by one process is never told to the next one; a failure no
/// process read is told once, to the next one, flagged as a predecessor's.
#[actix_rt::test]
async fn failures_reach_a_successor_only_when_nobody_read_them() {
    let server = TestServer::start(|c| c.deny_write("^denied"));
    // 1. Read and proven: the successor hears nothing.
    let first = config("heir", &server).start().unwrap();
    let events = Events::new();
    events.subscribe_failed(&first).await;
    first
        .send(Publish::new("denied.t", "1"))
        .await
        .unwrap()
        .unwrap();
    let report = support::flush_report(&first).await;
    assert_eq!(report.failed, 1);
    first.send(Shutdown).await.unwrap();

    // 2. Never read (acks stalled): the process stops without it.
    let second = config("heir", &server).start().unwrap();
    assert!(second.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    server.handle.stall_acks();
    let lost = second
        .send(Publish::new("denied.t", "2"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // A write after it, logged, shows the server processed the refusal.
    let after = second
        .send(Publish::new("t", "3"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    until_logged(&server, "heir", after).await;
    second.send(Shutdown).await.unwrap();
    server.handle.resume_acks();

    // 3. The third process hears the second one's failure, once, flagged; nothing of the first.
    let third = config("heir", &server).start().unwrap();
    let mut events = Events::new();
    events.subscribe_failed(&third).await;
    let report = support::flush_report(&third).await;
    assert_eq!(
        (report.failed, report.predecessor_failed),
        (1, 1),
        "{report:?}"
    );
    let f = events.next_failed().await;
    assert_eq!(f.sequence, lost);
    assert!(f.predecessor);
    assert!(f.message.is_none(), "a memory store never knew it");
    third.send(Shutdown).await.unwrap();
    events.assert_quiet(Duration::from_millis(50)).await;

    let fourth = config("heir", &server).start().unwrap();
    let mut events = Events::new();
    events.subscribe_failed(&fourth).await;
    let report = support::flush_report(&fourth).await;
    assert!(report.all_persisted(), "{report:?}");
    events.assert_quiet(Duration::from_millis(50)).await;
}

/// With a file store, the successor restores the write and reports its failure with the
/// message, flagged as a predecessor's.
#[actix_rt::test]
async fn a_file_store_successor_reports_a_restored_write_with_its_message() {
    let server = TestServer::start(|c| c.deny_write("^denied"));
    let dir = tempfile::tempdir().unwrap();
    let first = start_on_store("restored", &server, dir.path()).await;
    assert!(first.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    server.handle.stall_acks();
    let ok = publish_ok(&first, "t", "ok").await;
    let denied = publish_ok(&first, "denied.t", "kept on disk").await;
    until_logged(&server, "restored", ok).await;
    first.send(Shutdown).await.unwrap();
    let second = start_on_store("restored", &server, dir.path()).await;
    server.handle.resume_acks();
    let mut events = Events::new();
    events.subscribe_failed(&second).await;
    let report = support::flush_report(&second).await;
    assert_eq!(report.sequences, [denied]);
    let f = events.next_failed().await;
    assert!(f.predecessor);
    assert_eq!(f.data().map(|d| &d[..]), Some(&b"kept on disk"[..]));
    assert_eq!(server.persisted("restored"), [ok]);
}

/// Two publishers with one client name: the first loses the name, stops, and reports every
/// write it had not had acknowledged; every write of both is persisted or reported, never
/// both.
#[actix_rt::test]
async fn a_client_that_loses_its_name_reports_every_unacknowledged_write() {
    let server = TestServer::start(|c| c);
    let a = config("twin", &server).start().unwrap();
    let mut a_events = Events::new();
    a_events.subscribe_failed(&a).await;
    a_events.subscribe_connection(&a).await;
    assert!(a.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    let mut a_ok: Vec<u64> = Vec::new();
    for round in 0..20u64 {
        let batch = (0..500)
            .map(|i| Publish::new("t", format!("a{round}-{i}")))
            .collect();
        let (f, l) = a
            .send(PublishBatch::new(batch))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        a_ok.extend(f..=l);
    }
    let b = config("twin", &server).start().unwrap();
    let mut b_events = Events::new();
    b_events.subscribe_failed(&b).await;
    assert!(b.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    a_events
        .until_connection(|e| matches!(e, ConnectionEvent::NameInUse { .. }))
        .await;
    // A takes no more writes; its flush reports what it could not get acknowledged.
    let refused = a.send(Publish::new("t", "late")).await.unwrap();
    assert!(
        matches!(refused, Err(PublishError::NameInUse)),
        "{refused:?}"
    );
    let a_report = support::flush_report(&a).await;
    let mut a_failed = HashSet::new();
    while (a_failed.len() as u64) < a_report.failed {
        let f = a_events.next_failed().await;
        assert_eq!(f.source, FailureSource::Local(LocalReason::NameInUse));
        assert!(a_failed.insert(f.sequence), "reported twice");
    }
    let (bf, bl) = support::publish_range(&b, "t", 0, 100, 50).await;
    let b_report = support::flush_report(&b).await;
    assert!(b_report.all_persisted(), "{b_report:?}");
    b_events.assert_quiet(Duration::from_millis(50)).await;

    let persisted: HashSet<u64> = server.persisted("twin").into_iter().collect();
    for seq in &a_ok {
        assert!(
            persisted.contains(seq) != a_failed.contains(seq),
            "write {seq} of the first publisher: persisted={} failed={}",
            persisted.contains(seq),
            a_failed.contains(seq)
        );
    }
    assert!((bf..=bl).all(|s| persisted.contains(&s)));
    assert!(
        bf > *a_ok.last().unwrap(),
        "the second numbers above the first"
    );
}

#[actix_rt::test]
async fn an_oversized_body_is_a_failed_write_and_the_connection_stays() {
    let server = TestServer::start(|c| c.max_message_size(1024));
    let client = config("huge", &server).start().unwrap();
    let mut events = Events::new();
    events.subscribe_failed(&client).await;
    let big = client
        .send(Publish::new("t", "x".repeat(300_000)))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let after = client
        .send(Publish::new("t", "y"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let report = support::flush_report(&client).await;
    assert_eq!(report.sequences, [big]);
    let f = events.next_failed().await;
    assert_eq!(f.reason, Reason::MessageTooLarge);
    assert_eq!(support::stats(&client).await.reconnects, 0);
    assert_eq!(server.persisted("huge"), [after]);
    System::current().stop();
}

/// A process whose file store only ever logged on (it wrote nothing, and heard only a
/// predecessor's failure) leaves the server's last sequence in the store, so that a successor
/// that publishes before its first logon numbers above it: its writes are persisted, not
/// refused as sequence conflicts (found by the chaos test, seed 21).
#[actix_rt::test]
async fn a_successor_numbers_above_the_last_sequence_its_predecessor_saw() {
    let server = TestServer::start(|c| c.deny_write("^denied"));
    // A memory-store process leaves an unread refusal below its last write.
    let first = config("marked", &server).start().unwrap();
    assert!(first.send(WaitLoggedOn::new(WAIT)).await.unwrap());
    server.handle.stall_acks();
    let refused = publish_ok(&first, "denied.t", "r").await;
    let last = publish_ok(&first, "t", "last").await;
    until_logged(&server, "marked", last).await;
    first.send(Shutdown).await.unwrap();
    server.handle.resume_acks();

    // A file-store process logs on, hears the refusal (its store discards up to it), stops.
    let dir = tempfile::tempdir().unwrap();
    let second = start_on_store("marked", &server, dir.path()).await;
    let report = support::flush_report(&second).await;
    assert_eq!(report.sequences, [refused], "{report:?}");
    second.send(Shutdown).await.unwrap();

    // The successor publishes while the server is down, so it numbers before any logon.
    server.handle.stop();
    let third = start_on_store("marked", &server, dir.path()).await;
    let mut events = Events::new();
    events.subscribe_failed(&third).await;
    let offline = publish_ok(&third, "t", "numbered offline").await;
    assert!(
        offline > last,
        "{offline} is not above the server's last {last}"
    );
    server.handle.restart().unwrap();
    let report = support::flush_report(&third).await;
    assert!(report.all_persisted(), "{report:?}");
    events.assert_quiet(Duration::from_millis(50)).await;
    third.send(Shutdown).await.unwrap();
    assert_eq!(server.persisted("marked"), [last, offline]);
}
