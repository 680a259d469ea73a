//! Logon: the ack's fields, authentication, name in use, commands before logon.

mod common;

use std::time::Duration;

use actix_amps::protocol::{Command, Header, Password, Reason, Status};
use actix_amps::server::SERVER_VERSION;
use common::*;

#[tokio::test]
async fn logon_ack_carries_cid_status_name_version_and_sequence_twice() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    let ack = c.logon("pub-1").await;
    let h = &ack.header;
    assert_eq!(h.command, Some(Command::Ack));
    assert_eq!(h.cid.as_deref(), Some("auto0"));
    assert_eq!(h.client_name.as_deref(), Some("pub-1"));
    assert_eq!(h.version.as_deref(), Some(SERVER_VERSION));
    assert_eq!(h.seq, Some(0));
    assert_eq!(h.bookmark, Some(format!("{}|0|", fnv1a("pub-1"))));

    // Persist something, log on again on a new connection: s and bm agree and the hash is stable.
    c.send(&publish("orders", 1_795_489_811_140_000_003), b"{}")
        .await;
    c.send(&flush("f", actix_amps::protocol::AckTypes::PERSISTED), b"")
        .await;
    c.recv_until(|f| is_cid(f, "f")).await;
    let mut c2 = Conn::connect(server.addr()).await;
    let ack = c2.logon("pub-1").await;
    assert_eq!(ack.header.seq, Some(1_795_489_811_140_000_003));
    assert_eq!(
        ack.header.bookmark,
        Some(format!("{}|1795489811140000003|", fnv1a("pub-1")))
    );
    assert_eq!(
        server.last_sequence("pub-1"),
        Some(1_795_489_811_140_000_003)
    );
    assert_eq!(server.last_sequence("nobody"), None);
}

#[tokio::test]
async fn auth_failure_is_refused_and_closed() {
    let (_dir, server) = start(|c| c.user("alice", "secret"));
    let mut c = Conn::connect(server.addr()).await;
    let mut h = logon("pub-1");
    h.user_id = Some("alice".into());
    h.password = Some(Password::new("wrong"));
    c.send(&h, b"").await;
    let frames = c.expect_closed(WAIT).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].header.status, Some(Status::Failure));
    assert_eq!(frames[0].header.reason, Some(Reason::AuthFailure));
    assert_eq!(frames[0].header.cid.as_deref(), Some("auto0"));

    let mut ok = Conn::connect(server.addr()).await;
    h.password = Some(Password::new("secret"));
    let ack = ok.logon_with(h).await;
    assert_eq!(ack.header.status, Some(Status::Success));

    // No credentials at all is refused too.
    let mut none = Conn::connect(server.addr()).await;
    none.send(&logon("pub-2"), b"").await;
    let frames = none.expect_closed(WAIT).await;
    assert_eq!(frames[0].header.reason, Some(Reason::AuthFailure));
}

#[tokio::test]
async fn second_logon_with_the_same_name_disconnects_the_older() {
    let (_dir, server) = start(|c| c);
    let mut old = Conn::connect(server.addr()).await;
    old.logon("dup").await;
    let mut new = Conn::connect(server.addr()).await;
    new.logon("dup").await;
    old.expect_closed(WAIT).await;
    // The new one still works.
    new.send(&flush("f", actix_amps::protocol::AckTypes::PROCESSED), b"")
        .await;
    let f = new.recv().await;
    assert!(is_cid(&f, "f"));
    assert!(server.drop_connection("dup"));
    new.expect_closed(WAIT).await;
}

#[tokio::test]
async fn command_before_logon_is_refused_and_closed() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    let mut h = publish("orders", 1);
    h.cid = Some("p1".into());
    h.ack_type = actix_amps::protocol::AckTypes::PROCESSED;
    c.send(&h, b"{}").await;
    let frames = c.expect_closed(WAIT).await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header.reason, Some(Reason::LogonRequired));
    assert_eq!(frames[0].header.status, Some(Status::Failure));
}

#[tokio::test]
async fn logon_without_client_name_is_refused() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    let h = Header {
        client_name: None,
        ..logon("x")
    };
    c.send(&h, b"").await;
    let frames = c.expect_closed(WAIT).await;
    assert_eq!(frames[0].header.reason, Some(Reason::NoClientName));
}

#[tokio::test]
async fn second_logon_on_one_connection_is_refused_but_kept() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("twice").await;
    c.send(&logon("twice"), b"").await;
    let f = c.recv().await;
    assert_eq!(f.header.reason, Some(Reason::DuplicateLogonAttempt));
    c.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn drop_connections_closes_everyone() {
    let (_dir, server) = start(|c| c);
    let mut a = Conn::connect(server.addr()).await;
    a.logon("a").await;
    let mut b = Conn::connect(server.addr()).await;
    b.logon("b").await;
    server.drop_connections();
    a.expect_closed(WAIT).await;
    b.expect_closed(WAIT).await;
}
