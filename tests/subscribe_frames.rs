//! The official AMPS Python client's subscription frames, byte for byte as captured from it
//! (length prefix included), and the server replies it accepted: each decodes with our codec
//! into the fields the client meant, the SOW batch splits into exactly its records, and the
//! client's own requests, sent to the embedded server as they are, get the replies the client
//! needs.

mod common;

use actix_amps::protocol::{sow_records, AckType, AmpsCodec, Command, Frame, Reason, Status};
use bytes::BytesMut;
use common::*;
use tokio_util::codec::Decoder;

/// `{"c":"subscribe","t":"orders","cid":"auto1","filter":"/id > 1","a":"processed","sub_id":"a`...
const SUBSCRIBE: &str = concat!(
    "000000607b2263223a22737562736372696265222c2274223a226f7264657273222c22636964223a22617574",
    "6f31222c2266696c746572223a222f6964203e2031222c2261223a2270726f636573736564222c227375625f",
    "6964223a226175746f31227d",
);

/// `{"c":"ack","cid":"auto1","a":"processed","status":"success"}`
const PROCESSED_ACK: &str = concat!(
    "0000003c7b2263223a2261636b222c22636964223a226175746f31222c2261223a2270726f63657373656422",
    "2c22737461747573223a2273756363657373227d",
);

/// `{"c":"p","t":"orders","sids":"auto1","bm":"12345|1|","s":7,"k":"k-1","lp":10,"x":"corr-1",`...
const DELIVERY_FULL: &str = concat!(
    "000000917b2263223a2270222c2274223a226f7264657273222c2273696473223a226175746f31222c22626d",
    "223a2231323334357c317c222c2273223a372c226b223a226b2d31222c226c70223a31302c2278223a22636f",
    "72722d31222c227473223a223230323631313234543132303030302e3132333435365a222c22757365725f69",
    "64223a22626f62227d7b226964223a317d",
);

/// `{"c":"unsubscribe","cid":"auto3","sub_id":"S1"}`
const UNSUBSCRIBE_ONE: &str = concat!(
    "0000002f7b2263223a22756e737562736372696265222c22636964223a226175746f33222c227375625f6964",
    "223a225331227d",
);

/// `{"c":"unsubscribe","cid":"auto4","sub_id":"all"}`
const UNSUBSCRIBE_ALL: &str = concat!(
    "000000307b2263223a22756e737562736372696265222c22636964223a226175746f34222c227375625f6964",
    "223a22616c6c227d",
);

/// `{"c":"sow","t":"orders","cid":"auto1","filter":"/id > 0","a":"processed,completed","query_`...
const SOW: &str = concat!(
    "000000767b2263223a22736f77222c2274223a226f7264657273222c22636964223a226175746f31222c2266",
    "696c746572223a222f6964203e2030222c2261223a2270726f6365737365642c636f6d706c65746564222c22",
    "71756572795f6964223a226175746f31222c2262617463685f73697a65223a31307d",
);

/// `{"c":"group_begin","t":"orders","query_id":"auto1"}`
const GROUP_BEGIN: &str = concat!(
    "000000337b2263223a2267726f75705f626567696e222c2274223a226f7264657273222c2271756572795f69",
    "64223a226175746f31227d",
);

/// `{"c":"sow","t":"orders","query_id":"auto1","bs":3}{"k":"k1","x":"x1","l":8}{"id":1}{"k":"k`...
const SOW_BATCH: &str = concat!(
    "000000957b2263223a22736f77222c2274223a226f7264657273222c2271756572795f6964223a226175746f",
    "31222c226273223a337d7b226b223a226b31222c2278223a227831222c226c223a387d7b226964223a317d7b",
    "226b223a226b32222c2278223a227832222c226c223a387d7b226964223a327d7b226b223a226b33222c2278",
    "223a227833222c226c223a387d7b226964223a337d",
);

/// `{"c":"group_end","t":"orders","query_id":"auto1"}`
const GROUP_END: &str = concat!(
    "000000317b2263223a2267726f75705f656e64222c2274223a226f7264657273222c2271756572795f696422",
    "3a226175746f31227d",
);

/// `{"c":"ack","cid":"auto1","a":"completed","status":"success","query_id":"auto1","records_re`...
const COMPLETED_ACK: &str = concat!(
    "000000827b2263223a2261636b222c22636964223a226175746f31222c2261223a22636f6d706c6574656422",
    "2c22737461747573223a2273756363657373222c2271756572795f6964223a226175746f31222c227265636f",
    "7264735f72657475726e6564223a332c22746f7069635f6d617463686573223a332c226d617463686573223a",
    "337d",
);

/// `{"c":"sow_and_subscribe","t":"orders","cid":"auto1","filter":"/id > 0","a":"processed","su`...
const SOW_AND_SUBSCRIBE_OOF: &str = concat!(
    "000000957b2263223a22736f775f616e645f737562736372696265222c2274223a226f7264657273222c2263",
    "6964223a226175746f31222c2266696c746572223a222f6964203e2030222c2261223a2270726f6365737365",
    "64222c227375625f6964223a226175746f31222c2271756572795f6964223a226175746f31222c2262617463",
    "685f73697a65223a31302c226f223a226f6f66227d",
);

/// `{"c":"oof","t":"orders","sids":"auto1","k":"k1","reason":"deleted"}{"id":1,"gone":true}`
const OOF_DELETED: &str = concat!(
    "000000577b2263223a226f6f66222c2274223a226f7264657273222c2273696473223a226175746f31222c22",
    "6b223a226b31222c22726561736f6e223a2264656c65746564227d7b226964223a312c22676f6e65223a7472",
    "75657d",
);

/// `{"c":"subscribe","t":"orders","cid":"auto1","a":"processed,persisted","sub_id":"B1","bookm`...
const BOOKMARK_SUBSCRIBE: &str = concat!(
    "000000637b2263223a22737562736372696265222c2274223a226f7264657273222c22636964223a22617574",
    "6f31222c2261223a2270726f6365737365642c706572736973746564222c227375625f6964223a224231222c",
    "22626f6f6b6d61726b223a2230227d",
);

/// `{"c":"subscribe","t":"orders","cid":"auto3","a":"processed,persisted","sub_id":"B1","bookm`...
const HA_RESUBSCRIBE: &str = concat!(
    "000000787b2263223a22737562736372696265222c2274223a226f7264657273222c22636964223a22617574",
    "6f33222c2261223a2270726f6365737365642c706572736973746564222c227375625f6964223a224231222c",
    "22626f6f6b6d61726b223a22373037353738383431393133383231383233347c337c227d",
);

/// `{"c":"sow_delete","t":"orders","cid":"AMPS-queue-ack","bookmark":"7075788419138218234|1|"}`
const QUEUE_ACK: &str = concat!(
    "0000005a7b2263223a22736f775f64656c657465222c2274223a226f7264657273222c22636964223a22414d",
    "50532d71756575652d61636b222c22626f6f6b6d61726b223a22373037353738383431393133383231383233",
    "347c317c227d",
);

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Decodes exactly one frame and checks nothing is left over.
fn decode(hex: &str) -> Frame {
    let mut buf = BytesMut::from(&bytes(hex)[..]);
    let f = AmpsCodec::default()
        .decode(&mut buf)
        .expect("decodes")
        .expect("a whole frame");
    assert!(buf.is_empty(), "one frame, nothing after it");
    f
}

#[test]
fn client_requests_decode_into_what_the_client_meant() {
    let f = decode(SUBSCRIBE);
    assert_eq!(f.header.command, Some(Command::Subscribe));
    assert_eq!(f.header.topic.as_deref(), Some("orders"));
    assert_eq!(f.header.filter.as_deref(), Some("/id > 1"));
    assert_eq!(f.header.sub_id.as_deref(), Some("auto1"));
    assert!(f.header.ack_type.is_only(AckType::Processed));

    let f = decode(UNSUBSCRIBE_ONE);
    assert_eq!(f.header.command, Some(Command::Unsubscribe));
    assert_eq!(f.header.sub_id.as_deref(), Some("S1"));
    assert_eq!(
        decode(UNSUBSCRIBE_ALL).header.sub_id.as_deref(),
        Some("all")
    );

    let f = decode(SOW);
    assert_eq!(f.header.command, Some(Command::Sow));
    assert_eq!(f.header.query_id.as_deref(), Some("auto1"));
    assert_eq!(f.header.batch_size, Some(10), "batch_size is a bare number");
    assert!(f.header.ack_type.contains(AckType::Completed));

    let f = decode(SOW_AND_SUBSCRIBE_OOF);
    assert_eq!(f.header.command, Some(Command::SowAndSubscribe));
    assert_eq!(f.header.options.as_deref(), Some("oof"));

    let f = decode(BOOKMARK_SUBSCRIBE);
    assert_eq!(
        f.header.bookmark.as_deref(),
        Some("0"),
        "the long key bookmark"
    );
    assert!(f.header.ack_type.contains(AckType::Persisted));
    let f = decode(HA_RESUBSCRIBE);
    assert_eq!(f.header.bookmark.as_deref(), Some("7075788419138218234|3|"));
    assert_eq!(f.header.cid.as_deref(), Some("auto3"));

    let f = decode(QUEUE_ACK);
    assert_eq!(f.header.command, Some(Command::SowDelete));
    assert_eq!(f.header.cid.as_deref(), Some("AMPS-queue-ack"));
}

#[test]
fn server_replies_the_client_accepted_decode() {
    let f = decode(PROCESSED_ACK);
    assert!(f.is_ack_of(AckType::Processed));
    assert_eq!(f.header.status, Some(Status::Success));

    let f = decode(DELIVERY_FULL);
    assert_eq!(f.header.command, Some(Command::Publish));
    assert_eq!(f.header.sub_ids.as_deref(), Some("auto1"));
    assert_eq!(f.header.bookmark.as_deref(), Some("12345|1|"));
    assert_eq!(f.header.seq, Some(7));
    assert_eq!(f.header.sow_key.as_deref(), Some("k-1"));
    assert_eq!(f.header.lp, Some(10));
    assert_eq!(f.header.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(
        f.header.timestamp.as_deref(),
        Some("20261124T120000.123456Z")
    );
    assert_eq!(f.header.user_id.as_deref(), Some("bob"));
    assert_eq!(&f.body[..], br#"{"id":1}"#);

    assert_eq!(
        decode(GROUP_BEGIN).header.command,
        Some(Command::GroupBegin)
    );
    assert_eq!(decode(GROUP_END).header.command, Some(Command::GroupEnd));
    let batch = decode(SOW_BATCH);
    assert_eq!(batch.header.batch_size, Some(3));
    let records = sow_records(&batch.body).expect("exactly the records");
    let got: Vec<(&str, &str, &[u8])> = records
        .iter()
        .map(|r| {
            (
                r.header.sow_key.as_deref().unwrap(),
                r.header.correlation_id.as_deref().unwrap(),
                &r.data[..],
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("k1", "x1", &br#"{"id":1}"#[..]),
            ("k2", "x2", &br#"{"id":2}"#[..]),
            ("k3", "x3", &br#"{"id":3}"#[..]),
        ]
    );
    let done = decode(COMPLETED_ACK);
    assert!(done.is_ack_of(AckType::Completed));
    assert_eq!(
        (
            done.header.records_returned,
            done.header.topic_matches,
            done.header.matches
        ),
        (Some(3), Some(3), Some(3))
    );
    let oof = decode(OOF_DELETED);
    assert_eq!(oof.header.command, Some(Command::Oof));
    assert_eq!(oof.header.reason, Some(Reason::Other("deleted".into())));
    assert_eq!(&oof.body[..], br#"{"id":1,"gone":true}"#);
}

#[tokio::test]
async fn the_clients_own_bytes_get_the_replies_it_needs() {
    let (_dir, server) = start(|c| c.sow("^orders$", &["/id"]));
    let mut p = Conn::connect(server.addr()).await;
    p.logon("pub").await;
    for id in 0..3u64 {
        p.send(
            &publish("orders", id + 1),
            format!(r#"{{"id":{id}}}"#).as_bytes(),
        )
        .await;
    }
    p.recv_until(|f| is_persisted(f) && f.header.seq == Some(3))
        .await;
    let mut c = Conn::connect(server.addr()).await;
    c.logon("python").await;
    // sow: processed, group_begin, records (ids 1 and 2 match /id > 0), group_end, completed.
    c.send_raw(&bytes(SOW)).await;
    let processed = c.recv().await;
    assert!(processed.is_ack_of(AckType::Processed) && is_cid(&processed, "auto1"));
    assert_eq!(c.recv().await.header.command, Some(Command::GroupBegin));
    let batch = c.recv().await;
    assert_eq!(sow_records(&batch.body).unwrap().len(), 2);
    assert_eq!(c.recv().await.header.command, Some(Command::GroupEnd));
    let done = c.recv().await;
    assert!(done.is_ack_of(AckType::Completed));
    assert_eq!(done.header.query_id.as_deref(), Some("auto1"));
    // subscribe (filter /id > 1), then a delivery routed by sids.
    c.send_raw(&bytes(SUBSCRIBE)).await;
    assert_eq!(c.recv().await.header.status, Some(Status::Success));
    p.send(&publish("orders", 4), br#"{"id":5}"#).await;
    let d = c.recv().await;
    assert_eq!(d.header.sub_ids.as_deref(), Some("auto1"));
    // The HA client's resubscription with its most recent bookmark (unknown here) fails with
    // a reason, never silently.
    c.send_raw(&bytes(HA_RESUBSCRIBE)).await;
    let ack = c.recv().await;
    assert_eq!(ack.header.status, Some(Status::Failure));
    assert_eq!(
        ack.header.reason,
        Some(Reason::Other(
            "bookmark not found in the transaction log".into()
        ))
    );
    // unsubscribe all: nothing more for auto1.
    c.send_raw(&bytes(UNSUBSCRIBE_ALL)).await;
    c.send_raw(&bytes(BOOKMARK_SUBSCRIBE)).await;
    let ack = c.recv().await;
    assert!(
        ack.is_ack_of(AckType::Processed),
        "no persisted ack for a subscription: {ack:?}"
    );
    // B1 replays from EPOCH: the four writes, and nothing for the unsubscribed auto1.
    for _ in 0..4 {
        assert_eq!(c.recv().await.header.sub_ids.as_deref(), Some("B1"));
    }
}
