//! sow_delete by filter, keys and data, with stats acks; selector and filter errors.

mod common;

use actix_amps::protocol::{AckType, AckTypes, Command, Frame, Header, Reason, Status};
use common::*;

async fn seed(c: &mut Conn, n: u64) {
    for id in 1..=n {
        let h = Header {
            command: Some(Command::Publish),
            topic: Some("orders".into()),
            ..Header::default()
        };
        let body = format!(
            "{{\"id\":{id},\"region\":\"{}\"}}",
            if id % 2 == 0 { "eu" } else { "us" }
        );
        c.send(&h, body.as_bytes()).await;
    }
}

fn delete(cid: &str) -> Header {
    Header {
        command: Some(Command::SowDelete),
        topic: Some("orders".into()),
        cid: Some(cid.into()),
        ack_type: AckTypes::PROCESSED.with(AckType::Stats),
        ..Header::default()
    }
}

async fn answer(c: &mut Conn, h: &Header, body: &[u8]) -> (Frame, Frame) {
    c.send(h, body).await;
    let a = c.recv().await;
    let b = c.recv().await;
    assert!(a.is_ack_of(AckType::Processed), "{a:?}");
    assert!(b.is_ack_of(AckType::Stats), "{b:?}");
    assert_eq!(a.header.cid, h.cid);
    assert_eq!(b.header.cid, h.cid);
    (a, b)
}

fn stats(f: &Frame) -> (u64, u64, u64) {
    (
        f.header.matches.unwrap(),
        f.header.records_deleted.unwrap(),
        f.header.topic_matches.unwrap(),
    )
}

#[tokio::test]
async fn sow_delete_by_filter_keys_and_data_report_stats() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sow").await;
    seed(&mut c, 10).await;

    let mut h = delete("f");
    h.filter = Some("/region = 'eu'".into());
    let (p, s) = answer(&mut c, &h, b"").await;
    assert_eq!(p.header.status, Some(Status::Success));
    assert_eq!(stats(&s), (5, 5, 10));

    let mut h = delete("k");
    h.sow_keys = Some("1,3,99".into());
    let (_, s) = answer(&mut c, &h, b"").await;
    assert_eq!(stats(&s), (2, 2, 5));

    let (_, s) = answer(&mut c, &delete("d"), br#"{"id":5,"region":"us"}"#).await;
    assert_eq!(stats(&s), (1, 1, 3));
}

#[tokio::test]
async fn more_than_one_selector_and_bad_filters_are_refused() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sow-bad").await;
    seed(&mut c, 2).await;

    let mut h = delete("two");
    h.filter = Some("/id = 1".into());
    h.sow_keys = Some("1".into());
    let (p, s) = answer(&mut c, &h, b"").await;
    assert_eq!(p.header.status, Some(Status::Failure));
    assert_eq!(p.header.reason, Some(Reason::SowDeleteOneSelector));
    assert_eq!(s.header.status, Some(Status::Failure));

    let mut h = delete("bad");
    h.filter = Some("/id = = (".into());
    let (p, _) = answer(&mut c, &h, b"").await;
    assert_eq!(p.header.reason, Some(Reason::BadFilter));

    let mut h = delete("nosow");
    h.topic = Some("other".into());
    h.filter = Some("/id = 1".into());
    let (p, _) = answer(&mut c, &h, b"").await;
    assert_eq!(p.header.reason, Some(Reason::InvalidTopic));

    // Nothing was deleted by the refused commands.
    let mut h = delete("all");
    h.filter = Some("1 = 1".into());
    let (_, s) = answer(&mut c, &h, b"").await;
    assert_eq!(stats(&s), (2, 2, 2));
}

#[tokio::test]
async fn sequenced_sow_delete_is_in_the_persisted_stream() {
    let (_dir, server) = start(|c| {
        c.sow("^orders$", &["/id"])
            .ack_conflation(std::time::Duration::from_millis(1))
    });
    let mut c = Conn::connect(server.addr()).await;
    c.logon("sow-seq").await;
    c.send(&publish("orders", 1), br#"{"id":1}"#).await;
    let mut h = delete("d");
    h.sow_keys = Some("1".into());
    h.seq = Some(2);
    h.ack_type = AckTypes::PROCESSED
        .with(AckType::Persisted)
        .with(AckType::Stats);
    c.send(&h, b"").await;
    let frames = c
        .recv_until(|f| is_persisted(f) && f.header.seq == Some(2))
        .await;
    let s = frames
        .iter()
        .find(|f| f.is_ack_of(AckType::Stats))
        .expect("stats ack");
    assert_eq!(stats(s), (1, 1, 1));
    assert!(frames.iter().any(|f| f.is_ack_of(AckType::Processed)));
}
