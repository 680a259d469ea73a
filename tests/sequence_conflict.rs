//! A message stored but never sent whose number the server already has for this client name
//! (another publisher used the name, or the clock went back) is reported as a failed write,
//! never discarded silently.

mod common;
mod support;

use std::time::Duration;

use actix_amps::client::Publish;
use actix_amps::protocol::Reason;
use support::{config, Events, TestServer};

#[actix_rt::test]
async fn never_sent_messages_covered_by_the_servers_last_sequence_are_reported() {
    let server = TestServer::start(|c| c);
    // Another publisher with the same client name pushed the server's last sequence far ahead.
    let far_ahead = 9_000_000_000_000_000_000u64;
    {
        let mut raw = common::Conn::connect(server.handle.addr()).await;
        raw.logon("conflict").await;
        raw.send(&common::publish("t", far_ahead), b"other").await;
        raw.recv_until(|f| common::is_persisted(f) && f.header.seq == Some(far_ahead))
            .await;
    }
    // Our client stores three messages before it can log on (the server is frozen), so their
    // clock-based numbers are below `far_ahead` and were never sent.
    server.handle.freeze();
    let client = config("conflict", &server)
        .logon_timeout(Duration::from_secs(2))
        .start()
        .unwrap();
    let mut fw = Events::new();
    fw.subscribe_failed(&client).await;
    let mut stored = Vec::new();
    for i in 0..3 {
        stored.push(
            client
                .send(Publish::new("t", format!("m{i}")))
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    assert!(stored.iter().all(|s| *s < far_ahead));
    server.handle.thaw();
    for expected in &stored {
        let f = fw.next_failed().await;
        assert_eq!(f.sequence, *expected);
        assert!(
            matches!(&f.reason, Reason::Other(r) if r.contains("sequence conflict")),
            "{:?}",
            f.reason
        );
        assert_eq!(f.topic(), Some("t"));
    }
    // Numbering continues above the server's last sequence, and new writes are persisted.
    let next = client
        .send(Publish::new("t", "after"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(next > far_ahead);
    support::flush(&client).await;
    fw.assert_quiet(Duration::from_millis(50)).await;
    assert_eq!(server.persisted("conflict"), vec![far_ahead, next]);
}
