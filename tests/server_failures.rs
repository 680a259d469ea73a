//! The embedded server's failure accounting, frame by frame: refusals are durable (they survive
//! a kill and a clean restart, and are re-sent after the next logon), a failure counts as read
//! only by the read rule (a later flush), and a takeover answers the old connection fully
//! before telling it `name in use`.

mod common;

use std::time::Duration;

use actix_amps::protocol::{AckTypes, Frame, Reason, Status};
use actix_amps::server::Journal;
use common::*;

/// Waits (bounded) until the server has logged `seq` as the last sequence of `name`.
async fn until_logged(server: &actix_amps::server::ServerHandle, name: &str, seq: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.last_sequence(name) != Some(seq) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never logged {seq}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn failure_of(f: &Frame) -> Option<u64> {
    (is_persisted(f) && f.header.status == Some(Status::Failure))
        .then_some(f.header.seq)
        .flatten()
}

/// Publishes 1 (accepted), 2 (refused), 3 (accepted) while acks are stalled, and waits until
/// the log has all three (the refusal's ack never left the server).
async fn refusal_covered_by_a_later_success(server: &actix_amps::server::ServerHandle) {
    let mut c = Conn::connect(server.addr()).await;
    c.logon("r").await;
    server.stall_acks();
    c.send(&publish("t", 1), b"a").await;
    c.send(&publish("denied.t", 2), b"b").await;
    c.send(&publish("t", 3), b"c").await;
    until_logged(server, "r", 3).await;
}

/// After the restart, the logon's last sequence covers the refused write; its failure ack
/// still comes, right after the logon ack.
async fn expect_refusal_resent(server: &actix_amps::server::ServerHandle) -> Conn {
    let mut c = Conn::connect(server.addr()).await;
    let ack = c.logon("r").await;
    assert_eq!(ack.header.seq, Some(3));
    let f = c.recv().await;
    assert_eq!(failure_of(&f), Some(2), "{f:?}");
    assert_eq!(f.header.reason, Some(Reason::NotEntitled));
    c
}

#[tokio::test]
async fn a_refusal_survives_a_kill_before_its_ack() {
    let (_dir, server) = start(|c| c.deny_write("^denied"));
    refusal_covered_by_a_later_success(&server).await;
    server.kill();
    server.restart().unwrap();
    expect_refusal_resent(&server).await;
}

#[tokio::test]
async fn a_refusal_survives_a_clean_restart_before_its_ack() {
    let (_dir, server) = start(|c| c.deny_write("^denied"));
    refusal_covered_by_a_later_success(&server).await;
    server.restart().unwrap();
    expect_refusal_resent(&server).await;
}

#[tokio::test]
async fn a_second_flush_proves_the_failure_read_and_it_is_not_resent() {
    let (dir, server) = start(|c| c.deny_write("^denied"));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("p").await;
    c.send(&publish("denied.t", 1), b"x").await;
    let f = c.recv().await;
    assert_eq!(failure_of(&f), Some(1));
    // One flush after reading it proves nothing yet (the server cannot know it was sent
    // after the failure was read)...
    c.send(&flush("f1", AckTypes::PERSISTED), b"").await;
    c.recv_until(|f| is_cid(f, "f1")).await;
    drop(c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("p").await;
    let again = c.recv().await;
    assert_eq!(failure_of(&again), Some(1), "unproven: re-sent");
    // ... the second one, after the first one's ack, does.
    c.send(&flush("f2", AckTypes::PERSISTED), b"").await;
    c.recv_until(|f| is_cid(f, "f2")).await;
    c.send(&flush("f3", AckTypes::PERSISTED), b"").await;
    c.recv_until(|f| is_cid(f, "f3")).await;
    drop(c);
    // Across a kill too: the read record was durable before f3 was answered.
    server.kill();
    server.restart().unwrap();
    let mut c = Conn::connect(server.addr()).await;
    c.logon("p").await;
    c.expect_silence(Duration::from_millis(200)).await;
    drop(c);
    server.stop();
    let journal = Journal::read(dir.path()).unwrap();
    let p = journal.client("p").expect("the refusal is in the journal");
    assert_eq!(
        p.refused,
        [1],
        "refused once; a re-sent ack is not a refusal"
    );
    assert!(p.unread.is_empty());
    assert_eq!(p.count, 0, "nothing persisted");
}

#[tokio::test]
async fn the_journal_lists_unread_refusals() {
    let (dir, server) = start(|c| c.deny_write("^denied"));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("j").await;
    c.send(&publish("t", 1), b"a").await;
    c.send(&publish("denied.t", 2), b"b").await;
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    c.recv_until(|f| is_cid(f, "f")).await;
    drop(c);
    server.stop();
    let journal = Journal::read(dir.path()).unwrap();
    let j = journal.client("j").unwrap();
    assert_eq!(j.sequences, [1]);
    assert_eq!(j.refused, [2]);
    assert_eq!(j.unread, [2]);
}

#[tokio::test]
async fn a_takeover_answers_the_old_connection_then_says_name_in_use() {
    let (_dir, server) = start(|c| c.deny_write("^denied"));
    let mut old = Conn::connect(server.addr()).await;
    old.logon("shared").await;
    server.stall_acks();
    old.send(&publish("t", 1), b"a").await;
    old.send(&publish("denied.t", 2), b"b").await;
    old.send(&publish("t", 3), b"c").await;
    until_logged(&server, "shared", 3).await;

    let mut new = Conn::connect(server.addr()).await;
    let logon_ack = tokio::spawn(async move {
        let ack = new.logon("shared").await;
        (new, ack)
    });
    // Everything it processed, even while acks are stalled, then `name in use` with the
    // logon's command id, then the close.
    let frames = old.expect_closed(WAIT).await;
    let persisted: Vec<(Option<u64>, Option<Status>)> = frames
        .iter()
        .filter(|f| is_persisted(f))
        .map(|f| (f.header.seq, f.header.status.clone()))
        .collect();
    assert_eq!(
        persisted,
        [
            (Some(1), Some(Status::Success)),
            (Some(2), Some(Status::Failure)),
            (Some(3), Some(Status::Success)),
        ]
    );
    let last = frames.last().expect("a final frame");
    assert_eq!(last.header.reason, Some(Reason::NameInUse));
    assert_eq!(last.header.cid.as_deref(), Some("auto0"));
    drop(old);
    let (mut new, ack) = logon_ack.await.unwrap();
    assert_eq!(
        ack.header.seq,
        Some(3),
        "the new logon covers the old one's writes"
    );
    // Nothing proved the old connection read the failure: the new one hears it (a client
    // flags it as a predecessor's).
    let f = new.recv().await;
    assert_eq!(failure_of(&f), Some(2), "{f:?}");
}
