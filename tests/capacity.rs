//! The store's capacity bound: wait mode (backpressure, order kept) and error mode.

mod support;

use std::time::Duration;

use actix_amps::client::{FullPolicy, Publish, PublishBatch};
use actix_amps::error::{PublishError, SizeLimit};
use support::{config, TestServer, WAIT};

#[actix_rt::test]
async fn error_mode_refuses_at_capacity_and_accepts_again_after_acks() {
    let server = TestServer::start(|c| c);
    let client = config("cap-error", &server)
        .capacity(5, 1 << 20)
        .when_full(FullPolicy::Error)
        .start()
        .unwrap();
    support::flush(&client).await;
    server.handle.stall_acks();
    for i in 0..5 {
        client
            .send(Publish::new("t", format!("{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    match client.send(Publish::new("t", "6th")).await.unwrap() {
        Err(PublishError::StoreFull {
            messages: 5,
            max_messages: 5,
            ..
        }) => {}
        other => panic!("expected StoreFull, got {other:?}"),
    }
    // A batch that does not fit is refused whole.
    let batch = PublishBatch::new(vec![Publish::new("t", "a"), Publish::new("t", "b")]);
    assert!(matches!(
        client.send(batch).await.unwrap(),
        Err(PublishError::StoreFull { .. })
    ));
    server.handle.resume_acks();
    support::flush(&client).await;
    client
        .send(Publish::new("t", "after"))
        .await
        .unwrap()
        .unwrap();
    support::flush(&client).await;
    assert_eq!(server.persisted("cap-error").len(), 6);
}

#[actix_rt::test]
async fn byte_capacity_and_oversized_messages() {
    let server = TestServer::start(|c| c);
    let client = config("cap-bytes", &server)
        .capacity(1000, 100)
        .when_full(FullPolicy::Error)
        .start()
        .unwrap();
    match client
        .send(Publish::new("t", vec![b'x'; 200]))
        .await
        .unwrap()
    {
        Err(PublishError::TooLarge {
            limit: SizeLimit::StoreBytes,
            size: 201,
            max: 100,
            ..
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    support::flush(&client).await;
    server.handle.stall_acks();
    client
        .send(Publish::new("t", vec![b'x'; 60]))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        client
            .send(Publish::new("t", vec![b'x'; 60]))
            .await
            .unwrap(),
        Err(PublishError::StoreFull {
            bytes: 61,
            max_bytes: 100,
            ..
        })
    ));
    assert!(matches!(
        client.send(Publish::new("", "x")).await.unwrap(),
        Err(PublishError::EmptyTopic)
    ));
    server.handle.resume_acks();
}

#[actix_rt::test]
async fn wait_mode_holds_writes_until_acks_free_room_and_keeps_order() {
    let server = TestServer::start(|c| c);
    let client = config("cap-wait", &server)
        .capacity(3, 1 << 20)
        .start()
        .unwrap();
    support::flush(&client).await;
    server.handle.stall_acks();
    let mut seqs = Vec::new();
    for i in 0..3 {
        seqs.push(
            client
                .send(Publish::new("t", format!("{i}")))
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    // A batch larger than the whole store could never be stored at once: refused, nothing
    // of it stored.
    let too_big = client
        .send(PublishBatch::new(
            (0..4).map(|i| Publish::new("t", format!("x{i}"))).collect(),
        ))
        .await
        .unwrap();
    assert!(
        matches!(
            too_big,
            Err(PublishError::BatchOverCapacity {
                messages: 4,
                max_messages: 3,
                ..
            })
        ),
        "{too_big:?}"
    );
    // The 4th and a batch of 3 wait: the store is full and no ack can come. The batch is
    // stored whole, once all of it fits.
    let fourth = client.send(Publish::new("t", "3"));
    let batch = client.send(PublishBatch::new(
        (4..7).map(|i| Publish::new("t", format!("{i}"))).collect(),
    ));
    let fourth = tokio::spawn(fourth);
    let batch = tokio::spawn(batch);
    // Bounded check that they are really held: the stats see them waiting.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = support::stats(&client).await;
        if s.unacknowledged == 7 {
            assert_eq!(s.published, 3, "only three are in the store");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!fourth.is_finished() && !batch.is_finished());
    server.handle.resume_acks();
    let s4 = tokio::time::timeout(WAIT, fourth)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    let (b1, b2) = tokio::time::timeout(WAIT, batch)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(s4, seqs[2] + 1, "the waiting write kept its place in line");
    assert_eq!((b1, b2), (s4 + 1, s4 + 3));
    support::flush(&client).await;
    let persisted = server.persisted("cap-wait");
    assert_eq!(persisted, (seqs[0]..=b2).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn a_message_over_the_maximum_frame_names_that_limit() {
    let server = TestServer::start(|c| c);
    let client = config("cap-frame", &server)
        .max_frame(4096)
        .start()
        .unwrap();
    let err = client
        .send(Publish::new("t", vec![b'x'; 8192]))
        .await
        .unwrap()
        .expect_err("over the maximum frame");
    let PublishError::TooLarge {
        limit, size, max, ..
    } = &err
    else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert_eq!(*limit, SizeLimit::MaxFrame);
    assert_eq!(*max, 4096);
    assert!(
        *size > 8192,
        "counts the topic and the header allowance: {size}"
    );
    assert!(err.to_string().contains("max_frame"), "{err}");
    // Nothing was stored: the next write is the first sequence.
    let stats = support::stats(&client).await;
    assert_eq!(stats.unacknowledged, 0, "{stats:?}");
}
