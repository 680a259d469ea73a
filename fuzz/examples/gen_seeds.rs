//! Writes the seed corpus under `fuzz/seeds/<target>/` from the frames in PROTOCOL.md
//! (sections 4-9) plus a few tolerant-reader variants. The files are committed; rerun with
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds` after changing this list.

use std::fs;
use std::path::Path;

/// Header JSON and body of every frame PROTOCOL.md shows, then reader-only variants.
const FRAMES: &[(&str, &str)] = &[
    (
        r#"{"c":"logon","cid":"auto0","client_name":"pub-1","user_id":"alice","mt":"json","a":"processed","version":"5.3.5.14:python","pw":"secret","o":"ack_conflation=10ms"}"#,
        "",
    ),
    (
        r#"{"c":"ack","cid":"auto0","a":"processed","status":"success","client_name":"pub-1","version":"5.3.5.0","s":1795489811140000003,"bm":"7094790850998930143|1795489811140000003|"}"#,
        "",
    ),
    (r#"{"c":"p","t":"orders"}"#, r#"{"id":1}"#),
    (
        r#"{"c":"p","t":"orders","a":"persisted","e":"30","x":"corr-1","s":1795489793738000001,"k":"key-1"}"#,
        r#"{"id":1}"#,
    ),
    (
        r#"{"c":"delta_publish","t":"orders","a":"persisted","s":1795489793738000002}"#,
        r#"{"id":1,"qty":5}"#,
    ),
    (
        r#"{"c":"sow_delete","t":"orders","cid":"7","filter":"/id = 1","a":"processed,stats","sub_id":"7","query_id":"7"}"#,
        "",
    ),
    (
        r#"{"c":"sow_delete","t":"orders","cid":"8","sow_keys":"k1,k2","a":"processed,persisted,stats","s":1795489793738000003,"sub_id":"8","query_id":"8"}"#,
        "",
    ),
    (
        r#"{"c":"ack","cid":"7","a":"stats","status":"success","matches":2,"records_deleted":2,"topic_matches":10}"#,
        "",
    ),
    (
        r#"{"c":"ack","a":"persisted","status":"success","s":1795489793738000002}"#,
        "",
    ),
    (
        r#"{"c":"ack","a":"persisted","status":"failure","reason":"duplicate","s":3}"#,
        "",
    ),
    (
        r#"{"c":"ack","cid":"auto0","a":"processed","status":"failure","reason":"authentication failure"}"#,
        "",
    ),
    (r#"{"c":"flush","cid":"auto1","a":"processed"}"#, ""),
    (r#"{"c":"heartbeat","o":"start,30"}"#, ""),
    (r#"{"c":"heartbeat","o":"beat"}"#, ""),
    (r#"{"c":"ack","cid":"auto0","a":"processed"}"#, ""),
    (
        r#"{"c":"sow_and_subscribe","cid":"9","t":"orders","filter":"/qty > 1","a":"processed,completed","sub_id":"9","query_id":"9","bs":10,"top_n":100,"orderby":"/id","o":"oof"}"#,
        "",
    ),
    (
        r#"{"c":"sow","t":"orders","sub_id":"9","query_id":"9","k":"key-1","ts":"20240101T000000","l":"8","lp":0,"gseq":"4"}"#,
        r#"{"id":1}"#,
    ),
    // Tolerant reader: aliases, numbers as strings, whitespace, unknown nested keys.
    (
        r#"{ "cmd" : "publish", "cmd_id":7, "topic":"t1", "seq":"18446744073709551615", "ack_type":"processed,stats", "weird":{"x":[1,2,{"y":null}]}, "flag":true, "e":30 }"#,
        "body",
    ),
    (r#"{"t":"a\"b\\c\u000ad\u00e9\ud83d\ude00\/"}"#, ""),
    (r#"{}"#, ""),
];

const URIS: &[&str] = &[
    "tcp://alice:s%40cret@127.0.0.1:9007/amps/json",
    "tcps://[::1]:9443/amps/fix",
    "tcp://h:1",
    "tcp://user@host:9007/amps/nvfix?opt=1#frag",
    "tcp://a:1/amps/json, tcp://b:2/amps/json tcps://c:3/amps/json",
    "TCP://bob:p%3Aw@[fe80::1]:65535/amps/xml",
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).expect("write seed");
}

/// `[len][header][body]`.
fn frame(header: &str, body: &str) -> Vec<u8> {
    let len = (header.len() + body.len()) as u32;
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(body.as_bytes());
    v
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let (header_dir, decoder_dir, uri_dir) =
        (root.join("header"), root.join("decoder"), root.join("uri"));
    for d in [&header_dir, &decoder_dir, &uri_dir] {
        fs::create_dir_all(d).expect("create seed dir");
    }

    // decoder input: [max selector][chunk seed lo][chunk seed hi][stream]; 0x3f gives a
    // 1024-byte maximum, large enough for every frame above.
    let prefix = |seed: u8| vec![0x3f, seed, 0x5a];
    let mut all = prefix(0);
    for (i, (h, b)) in FRAMES.iter().enumerate() {
        let mut with_body = h.as_bytes().to_vec();
        with_body.extend_from_slice(b.as_bytes());
        write(&header_dir, &format!("{i:02}.json"), &with_body);

        let mut one = prefix(i as u8);
        one.extend_from_slice(&frame(h, b));
        write(&decoder_dir, &format!("{i:02}.bin"), &one);
        all.extend_from_slice(&frame(h, b));
    }
    write(&decoder_dir, "all.bin", &all);

    // A zero-length frame between two frames, then a partial frame.
    let mut zero = prefix(7);
    zero.extend_from_slice(&frame(FRAMES[2].0, FRAMES[2].1));
    zero.extend_from_slice(&[0, 0, 0, 0]);
    zero.extend_from_slice(&frame(FRAMES[8].0, ""));
    zero.extend_from_slice(&frame(FRAMES[3].0, FRAMES[3].1)[..20]);
    write(&decoder_dir, "zero_and_partial.bin", &zero);

    // A frame above a 16-byte maximum.
    let mut big = vec![0x00, 1, 0];
    big.extend_from_slice(&frame(FRAMES[2].0, FRAMES[2].1));
    write(&decoder_dir, "too_large.bin", &big);

    for (i, u) in URIS.iter().enumerate() {
        write(&uri_dir, &format!("{i:02}.txt"), u.as_bytes());
    }
    println!("seeds written under {}", root.display());
}
