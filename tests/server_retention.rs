//! Log rotation, snapshots and retention under a stream of writes with restarts in the middle;
//! holds keep history; damaged snapshots are refused, verified and repaired without loss.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use actix_amps::protocol::{AckTypes, Header};
use actix_amps::server::txlog::snapshot::list_snapshots;
use actix_amps::server::txlog::{files::list_segments, LogReader, Retention, StartAt};
use actix_amps::server::{repair, Journal, ServerConfig, ServerError, ServerHandle};
use common::*;

/// Publishes `seqs` to the SOW topic (id = seq % 50, so the SOW stays small) and flushes.
async fn publish_flushed(c: &mut Conn, seqs: std::ops::RangeInclusive<u64>) {
    let mut bytes = bytes::BytesMut::new();
    for seq in seqs {
        let body = format!(
            "{{\"id\":{},\"seq\":{seq},\"pad\":\"{}\"}}",
            seq % 50,
            "x".repeat(200)
        );
        actix_amps::protocol::encode_parts(&publish("orders", seq), body.as_bytes(), &mut bytes);
    }
    c.send_raw(&bytes).await;
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    let frames = c.recv_until(|f| is_cid(f, "f")).await;
    assert!(frames
        .iter()
        .all(|f| f.header.status.as_ref().map(|s| s.as_str()) != Some("failure")));
}

fn log_bytes(dir: &Path) -> u64 {
    list_segments(dir)
        .unwrap()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

fn config(c: ServerConfig) -> ServerConfig {
    c.sow("^orders$", &["/id"])
        .log_segment_bytes(32 << 10)
        .snapshot_every(64 << 10)
        .retain(Retention::Bytes(256 << 10))
}

/// Waits (bounded) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the maintenance thread has written a snapshot above LSN `after` by itself.
fn auto_snapshot_after(dir: &Path, after: u64) {
    wait_until(&format!("a snapshot above LSN {after}"), || {
        list_snapshots(dir)
            .unwrap()
            .last()
            .is_some_and(|s| s.0 > after)
    });
}

async fn sow_count(server: &ServerHandle) -> u64 {
    let mut c = Conn::connect(server.addr()).await;
    c.logon("counter").await;
    let del = Header {
        command: Some(actix_amps::protocol::Command::SowDelete),
        topic: Some("orders".into()),
        cid: Some("count".into()),
        // Matches nothing, reports how many records the topic has.
        filter: Some("/id < 0".into()),
        ack_type: AckTypes::STATS,
        ..Header::default()
    };
    c.send(&del, b"").await;
    let frames = c.recv_until(|f| is_cid(f, "count")).await;
    frames.last().unwrap().header.topic_matches.unwrap()
}

#[tokio::test]
async fn retention_keeps_the_log_bounded_across_restarts_and_recovery_uses_snapshots() {
    let (_dir, server) = start(config);
    let dir = server.data_dir().to_owned();
    let mut next = 1u64;
    let mut peak = 0;
    for round in 0..3 {
        let mut c = Conn::connect(server.addr()).await;
        let logon = c.logon("pub").await;
        assert_eq!(logon.header.seq, Some(next - 1), "round {round}");
        let mut half_start = server.durable_lsn().unwrap();
        for batch in 0..20 {
            publish_flushed(&mut c, next..=next + 99).await;
            next += 100;
            peak = peak.max(log_bytes(&dir));
            if batch % 10 == 9 {
                // ~330 KB logged, over 64 KiB since any earlier snapshot: a tick writes one.
                auto_snapshot_after(&dir, half_start);
                half_start = server.durable_lsn().unwrap();
            }
        }
        // Retention runs every quarter second: let it catch up, then restart mid-stream.
        wait_until("retention", || log_bytes(&dir) < 600 << 10);
        drop(c);
        server.restart().expect("restart");
        assert_eq!(server.last_sequence("pub"), Some(next - 1));
        assert_eq!(sow_count(&server).await, 50);
    }
    // 6,000 writes of ~330 bytes logged ~2 MB; the log stayed near its 256 KiB budget plus
    // what the snapshots and the active segment pin.
    assert!(peak < 1 << 20, "log peaked at {peak} bytes");
    assert!(
        list_segments(&dir).unwrap()[0].0 > 1,
        "old segments were removed"
    );
    assert_eq!(list_snapshots(&dir).unwrap().len(), 2);
    // History older than the retained log is refused to readers.
    let holds = server.log_holds().unwrap();
    let first = holds.first_retained_lsn();
    assert!(first > 1);
    match holds.hold_from(1) {
        Err(ServerError::NotRetained { first_retained, .. }) => assert_eq!(first_retained, first),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        LogReader::open(&dir, StartAt::Lsn(1)),
        Err(ServerError::NotRetained { .. })
    ));
    server.stop();
    let j = Journal::read(&dir).unwrap();
    assert!(j.is_intact());
    assert_eq!(j.client("pub").unwrap().last, Some(next - 1));
}

#[tokio::test]
async fn a_hold_keeps_history_until_released() {
    let (_dir, server) = start(config);
    let dir = server.data_dir().to_owned();
    let mut c = Conn::connect(server.addr()).await;
    c.logon("pub").await;
    let hold = server.log_holds().unwrap().hold_from(1).unwrap();
    let mut next = 1;
    for _ in 0..2 {
        for _ in 0..10 {
            publish_flushed(&mut c, next..=next + 99).await;
            next += 100;
        }
        assert!(server.snapshot().unwrap().is_some());
    }
    // Snapshots exist and the log is over budget, but LSN 1 is held.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(list_segments(&dir).unwrap()[0].0, 1);
    let read: Vec<u64> = LogReader::open(&dir, StartAt::Beginning)
        .unwrap()
        .with_limit(server.durable_lsn().unwrap())
        .map(|e| e.unwrap().lsn)
        .collect();
    assert_eq!(read.len() as u64, next - 1);
    hold.advance(1000);
    wait_until("segments below LSN 1000 removed", || {
        let segs = list_segments(&dir).unwrap();
        segs[0].0 > 1 && segs.windows(2).all(|w| w[1].0 > 1000 || w[0].0 > 1)
    });
    let first = list_segments(&dir).unwrap()[0].0;
    assert!(first <= 1000, "a segment holding LSN 1000 stays ({first})");
    drop(hold);
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_verified_and_repaired_without_loss() {
    let (_dir, server) = start(config);
    let dir = server.data_dir().to_owned();
    let mut c = Conn::connect(server.addr()).await;
    c.logon("pub").await;
    let mut next = 1;
    for _ in 0..2 {
        let start = server.durable_lsn().unwrap();
        for _ in 0..10 {
            publish_flushed(&mut c, next..=next + 99).await;
            next += 100;
        }
        auto_snapshot_after(&dir, start);
    }
    drop(c);
    server.stop();
    let (lsn, newest) = list_snapshots(&dir).unwrap().pop().unwrap();
    let mut b = std::fs::read(&newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(&newest, b).unwrap();

    match server.restart() {
        Err(ServerError::SnapshotDamaged { path, .. }) => assert_eq!(path, newest),
        other => panic!("expected SnapshotDamaged, got {other:?}"),
    }
    let j = Journal::read(&dir).unwrap();
    assert!(!j.is_intact());
    let bad: Vec<_> = j.snapshots().iter().filter(|s| !s.is_intact()).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].lsn, lsn);
    assert_eq!(bad[0].damage.len(), 1);

    let report = repair(&dir).unwrap();
    assert_eq!(report.snapshots.len(), 1);
    assert_eq!(
        report.snapshots[0].salvaged, None,
        "the older snapshot and the log cover it"
    );
    assert!(report.losses.is_empty());
    server
        .restart()
        .expect("starts from the older snapshot and the log");
    assert_eq!(server.last_sequence("pub"), Some(next - 1));
    assert_eq!(sow_count(&server).await, 50);
    server.stop();
    assert!(Journal::read(&dir).unwrap().is_intact());
}
