//! sow_delete through the client: stats for all three selectors, failures, and the stored form.

mod support;

use actix_amps::client::{
    DeltaPublish, Publish, PublishBatch, SowDelete, SowDeleteAndWait, SowDeleteSelector,
};
use actix_amps::error::SowDeleteError;
use actix_amps::protocol::Reason;
use support::{config, TestServer, WAIT};

fn wait(topic: &str, selector: SowDeleteSelector) -> SowDeleteAndWait {
    SowDeleteAndWait::new(topic, selector, WAIT)
}

#[actix_rt::test]
async fn stats_for_filter_keys_and_data() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let client = config("sowdel", &server).start().unwrap();
    let batch = (0..10)
        .map(|i| Publish::new("orders", format!(r#"{{"id":{i},"qty":{}}}"#, i * 10)))
        .collect();
    client
        .send(PublishBatch::new(batch))
        .await
        .unwrap()
        .unwrap();
    // A delta publish merges into the stored record (qty of id 9 becomes 0).
    client
        .send(DeltaPublish::new("orders", r#"{"id":9,"qty":0}"#))
        .await
        .unwrap()
        .unwrap();

    let s = client
        .send(wait(
            "orders",
            SowDeleteSelector::Filter("/qty < 25".into()),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (s.matches, s.records_deleted, s.topic_matches),
        (4, 4, 10),
        "ids 0,1,2 and 9"
    );
    let s = client
        .send(wait("orders", SowDeleteSelector::Keys("3,4,99".into())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.matches, s.records_deleted, s.topic_matches), (2, 2, 6));
    let s = client
        .send(wait(
            "orders",
            SowDeleteSelector::Data(r#"{"id":5,"qty":1}"#.into()),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.matches, s.records_deleted, s.topic_matches), (1, 1, 4));

    // A fire-and-forget sow_delete is stored and sequenced like a publish.
    let seq = client
        .send(SowDelete {
            topic: "orders".into(),
            selector: SowDeleteSelector::Filter("1=1".into()),
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    support::flush(&client).await;
    let s = client
        .send(wait("orders", SowDeleteSelector::Filter("1=1".into())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.topic_matches, 0,
        "the stored sow_delete emptied the topic"
    );
    assert!(server.persisted("sowdel").contains(&seq));
}

#[actix_rt::test]
async fn a_bad_filter_is_a_typed_failure() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let client = config("sowdel-bad", &server).start().unwrap();
    match client
        .send(wait(
            "orders",
            SowDeleteSelector::Filter("/id LIKE 'x'".into()),
        ))
        .await
        .unwrap()
    {
        Err(SowDeleteError::Failed {
            reason: Reason::BadFilter,
        }) => {}
        other => panic!("expected bad filter, got {other:?}"),
    }
    match client
        .send(wait("not-a-sow-topic", SowDeleteSelector::Keys("1".into())))
        .await
        .unwrap()
    {
        Err(SowDeleteError::Failed { reason }) => assert_eq!(reason, Reason::InvalidTopic),
        other => panic!("expected a failure, got {other:?}"),
    }
}
