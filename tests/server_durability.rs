//! Durability: restart recovers sequences and the SOW, duplicates after a restart, torn tails,
//! the data directory lock, and the journal.

mod common;

use std::time::Duration;

use actix_amps::protocol::{AckType, AckTypes, Command, Header, Reason, Status};
use actix_amps::server::txlog::{files::segment_name, LogReader, StartAt};
use actix_amps::server::{Journal, Server, ServerConfig, ServerError};
use common::*;

async fn publish_and_flush(
    c: &mut Conn,
    topic: &str,
    seqs: impl IntoIterator<Item = u64>,
    body: &[u8],
) {
    for seq in seqs {
        c.send(&publish(topic, seq), body).await;
    }
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    c.recv_until(|f| is_cid(f, "f")).await;
}

#[tokio::test]
async fn restart_recovers_last_sequences_and_refuses_duplicates() {
    let (_dir, server) = start(|c| c.ack_conflation(Duration::from_millis(1)));
    let addr = server.addr();
    let mut c = Conn::connect(addr).await;
    c.logon("durable").await;
    publish_and_flush(&mut c, "orders", 1..=20, b"{}").await;
    server.restart().expect("restart");
    assert_eq!(server.addr(), addr);
    c.expect_closed(WAIT).await;
    assert_eq!(server.last_sequence("durable"), Some(20));

    let mut c = Conn::connect(addr).await;
    let ack = c.logon("durable").await;
    assert_eq!(ack.header.seq, Some(20));
    assert_eq!(
        ack.header.bookmark,
        Some(format!("{}|20|", fnv1a("durable")))
    );
    c.send(&publish("orders", 20), b"{}").await;
    c.send(&publish("orders", 21), b"{}").await;
    let frames = c.recv_until(|f| f.header.seq == Some(21)).await;
    assert_eq!(frames[0].header.status, Some(Status::Failure));
    assert_eq!(frames[0].header.reason, Some(Reason::Duplicate));
    assert_eq!(frames[0].header.seq, Some(20));
    assert_eq!(frames.last().unwrap().header.status, Some(Status::Success));
}

#[tokio::test]
async fn restart_recovers_the_sow() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sow-durable").await;
    for id in 1..=6u64 {
        let h = Header {
            command: Some(Command::Publish),
            topic: Some("orders".into()),
            ..Header::default()
        };
        c.send(&h, format!("{{\"id\":{id}}}").as_bytes()).await;
    }
    let del = Header {
        command: Some(Command::SowDelete),
        topic: Some("orders".into()),
        cid: Some("d".into()),
        sow_keys: Some("6".into()),
        ack_type: AckTypes::PROCESSED,
        ..Header::default()
    };
    c.send(&del, b"").await;
    c.recv().await;
    server.restart().expect("restart");
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sow-durable").await;
    let count = Header {
        cid: Some("all".into()),
        sow_keys: None,
        filter: Some("1 = 1".into()),
        ack_type: AckTypes::STATS,
        ..del
    };
    c.send(&count, b"").await;
    let s = c.recv().await;
    assert!(s.is_ack_of(AckType::Stats));
    assert_eq!(s.header.topic_matches, Some(5));
    assert_eq!(s.header.records_deleted, Some(5));
}

#[tokio::test]
async fn a_torn_or_corrupt_tail_is_cut_off_and_writing_continues() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("torn").await;
    publish_and_flush(&mut c, "orders", 1..=5, b"{\"pad\":\"xxxxxxxxxxxxxxxx\"}").await;
    server.stop();
    // The end of the last record, and of the log's data.
    let end_of_data = |dir: &std::path::Path| {
        let mut r = LogReader::open(dir, StartAt::Beginning).unwrap();
        while r.next_entry().unwrap().is_some() {}
        let p = r.position().unwrap();
        (dir.join(segment_name(p.segment)), p.offset)
    };
    let (log, end) = end_of_data(server.data_dir());

    // Cut the last record in half (reserved space reads as zeros): sequence 5 is gone.
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 10], end - 10).unwrap();
    drop(file);
    server.restart().expect("restart");
    assert_eq!(server.last_sequence("torn"), Some(4));
    let mut c = Conn::connect(server.addr()).await;
    assert_eq!(c.logon("torn").await.header.seq, Some(4));
    publish_and_flush(&mut c, "orders", 5..=6, b"{}").await;
    server.stop();

    // Garbage written after good records: cut off too.
    let (log, end) = end_of_data(server.data_dir());
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[7u8; 37], end).unwrap();
    drop(file);
    let journal = Journal::read(server.data_dir()).unwrap();
    assert!(journal.torn_tail());
    server.restart().expect("restart");
    assert_eq!(server.last_sequence("torn"), Some(6));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("torn").await;
    publish_and_flush(&mut c, "orders", 7..=7, b"{}").await;
    server.stop();
    let journal = Journal::read(server.data_dir()).unwrap();
    assert!(!journal.torn_tail());
    let j = journal.client("torn").unwrap();
    assert_eq!(j.sequences, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!((j.count, j.first, j.last), (7, Some(1), Some(7)));
    assert!(j.duplicates.is_empty() && j.missing.is_empty());
}

#[tokio::test]
async fn the_data_directory_is_locked_while_a_server_runs() {
    let (dir, server) = start(|c| c);
    match Server::start(ServerConfig::new(dir.path())) {
        Err(ServerError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(matches!(
        Journal::read(dir.path()),
        Err(ServerError::Locked { .. })
    ));
    server.stop();
    server.stop(); // idempotent
    assert!(Journal::read(dir.path()).is_ok());
    let second = Server::start(ServerConfig::new(dir.path())).expect("lock released on stop");
    drop(second);
    assert!(Journal::read(dir.path()).is_ok(), "lock released on drop");
}

#[tokio::test]
async fn bad_regexes_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Server::start(ServerConfig::new(dir.path()).deny_write("(")),
        Err(ServerError::BadRegex { .. })
    ));
}

#[tokio::test]
async fn journal_reports_gaps() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("gappy").await;
    publish_and_flush(&mut c, "orders", [10, 11, 14, 20], b"{}").await;
    server.stop();
    let journal = Journal::read(server.data_dir()).unwrap();
    let j = journal.client("gappy").unwrap();
    assert_eq!(j.missing, [(12, 13), (15, 19)]);
    assert_eq!(journal.clients().count(), 1);
}

#[tokio::test]
async fn logon_reports_only_durable_sequences_even_while_writes_are_in_flight() {
    let (_dir, server) = start(|c| c.ack_conflation(Duration::from_millis(1)));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("racer").await;
    let mut bytes = bytes::BytesMut::new();
    for seq in 1..=20_000u64 {
        actix_amps::protocol::encode_parts(&publish("orders", seq), b"{}", &mut bytes);
    }
    c.send_raw(&bytes).await;
    // Take the name over mid-stream: whatever it reports must replay without false duplicates.
    let mut c2 = Conn::connect(server.addr()).await;
    let last = c2.logon("racer").await.header.seq.unwrap();
    // `None` when the takeover won the race before any write was accepted: then `last` is 0.
    assert!(last <= server.last_sequence("racer").unwrap_or(0));
    c2.send(&publish("orders", last + 1), b"{}").await;
    let f = c2.recv().await;
    assert!(is_persisted(&f));
    // Either it is new, or the older connection's write got there first and it is a duplicate
    // of something durable: never a duplicate of something not yet reported.
    if f.header.status == Some(Status::Failure) {
        assert_eq!(f.header.reason, Some(Reason::Duplicate));
    }
}
