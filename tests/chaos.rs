//! A seeded, reproducible chaos test: publishes, delta publishes, sow_deletes and denied writes
//! mixed with dropped connections, server restarts and stalled acks, through a file store.
//!
//! The one invariant, checked at the end against the server's journal: every write that resolved
//! `Ok` is exactly once either persisted or reported as a failed write, never both, never
//! neither. CI runs a few fixed seeds; `CHAOS_SEEDS=50` runs seeds 1..=50, `CHAOS_SEED=7` one
//! seed. Run with `--nocapture` to see the figures; `CHAOS_TRACE=1 RUST_LOG=actix_amps=debug`
//! adds the client's and the server's logs, and a lost write is printed with what it was.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    DeltaPublish, GetStats, Publish, PublishBatch, SowDelete, SowDeleteSelector, StoreKind,
};
use support::{config, Event, Events, TestServer};

/// xorshift64*: small, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default, Debug)]
struct Figures {
    writes: u64,
    persisted: u64,
    failed: u64,
    drops: u64,
    restarts: u64,
    stalls: u64,
    lost: u64,
    both: u64,
}

const STEPS: u64 = 600;

async fn run_seed(seed: u64) -> Figures {
    let mut rng = Rng::new(seed);
    let server = TestServer::start(|c| c.deny_write("^denied").sow("^orders$", &["/id"]));
    let store_dir = tempfile::tempdir().unwrap();
    let name = format!("chaos-{seed}");
    let client = config(&name, &server)
        .store(StoreKind::file(store_dir.path()))
        .capacity(50_000, 64 << 20)
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_failed(&client).await;

    let mut ok: Vec<u64> = Vec::new();
    // What each write was, to say what kind of write went missing if one ever does.
    let mut kinds: HashMap<u64, String> = HashMap::new();
    let mut f = Figures::default();
    let mut stalled = false;
    for step in 0..STEPS {
        let id = rng.below(200);
        match rng.below(100) {
            0..=54 => {
                let n = 1 + rng.below(50);
                let batch = (0..n)
                    .map(|k| {
                        Publish::new(
                            "orders",
                            format!(r#"{{"id":{},"step":{step},"k":{k}}}"#, (id + k) % 200),
                        )
                    })
                    .collect();
                let (a, b) = client
                    .send(PublishBatch::new(batch))
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                ok.extend(a..=b);
                kinds.extend((a..=b).map(|s| (s, format!("publish step {step}"))));
            }
            55..=69 => {
                let s = client
                    .send(DeltaPublish::new(
                        "orders",
                        format!(r#"{{"id":{id},"qty":{step}}}"#),
                    ))
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                ok.push(s);
                kinds.insert(s, format!("delta step {step}"));
            }
            70..=76 => {
                let selector = match rng.below(3) {
                    0 => SowDeleteSelector::Filter(format!("/id = {id}")),
                    1 => SowDeleteSelector::Keys(format!("{id},{}", (id + 1) % 200)),
                    _ => SowDeleteSelector::Data(format!(r#"{{"id":{id}}}"#).into()),
                };
                let s = client
                    .send(SowDelete {
                        topic: "orders".into(),
                        selector,
                    })
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                ok.push(s);
                kinds.insert(s, format!("sow_delete step {step}"));
            }
            77..=86 => {
                let topic = if rng.below(2) == 0 {
                    "denied.a"
                } else {
                    "denied.b"
                };
                let s = client
                    .send(
                        Publish::new(topic, format!(r#"{{"id":{id}}}"#))
                            .correlation_id(format!("c{step}")),
                    )
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                ok.push(s);
                kinds.insert(s, format!("denied step {step}"));
            }
            87..=91 => {
                server.handle.drop_connections();
                f.drops += 1;
            }
            92..=93 => {
                server.handle.stop();
                server.handle.restart().expect("restart");
                f.restarts += 1;
            }
            94..=96 => {
                if stalled {
                    server.handle.resume_acks();
                } else {
                    server.handle.stall_acks();
                    f.stalls += 1;
                }
                stalled = !stalled;
            }
            _ => {
                // Let the system breathe for a moment: acks and reconnects interleave differently.
                tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
            }
        }
    }
    if stalled {
        server.handle.resume_acks();
    }
    support::flush(&client).await;
    let stats = client.send(GetStats).await.unwrap();
    assert_eq!(stats.unacknowledged, 0);

    // Every failure event the client reported (the flush proved they were all sent; drain them).
    let mut failed: HashMap<u64, u32> = HashMap::new();
    while (failed.values().sum::<u32>() as u64) < stats.failed {
        match events.next().await {
            Event::Failed(fw) => *failed.entry(fw.sequence).or_default() += 1,
            other => panic!("unexpected event {other:?}"),
        }
    }
    events.assert_quiet(Duration::from_millis(50)).await;
    assert!(
        failed.values().all(|n| *n == 1),
        "a failure was reported twice: seed {seed}"
    );

    let persisted_list = server.persisted(&name);
    let persisted: HashSet<u64> = persisted_list.iter().copied().collect();
    assert_eq!(
        persisted.len(),
        persisted_list.len(),
        "a sequence was persisted twice: seed {seed}"
    );

    f.writes = ok.len() as u64;
    for seq in &ok {
        match (persisted.contains(seq), failed.contains_key(seq)) {
            (true, false) => f.persisted += 1,
            (false, true) => f.failed += 1,
            (true, true) => f.both += 1,
            (false, false) => {
                eprintln!(
                    "seed {seed}: write {seq} ({}) neither persisted nor reported failed",
                    kinds.get(seq).map_or("?", String::as_str)
                );
                f.lost += 1
            }
        }
    }
    System::current().stop_with_code(0);
    f
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("CHAOS_SEED") {
        return vec![s.parse().expect("CHAOS_SEED is a number")];
    }
    match std::env::var("CHAOS_SEEDS") {
        Ok(n) => (1..=n.parse::<u64>().expect("CHAOS_SEEDS is a number")).collect(),
        Err(_) => vec![1, 2, 3],
    }
}

#[test]
fn every_ok_write_is_persisted_or_failed_exactly_once() {
    if std::env::var("CHAOS_TRACE").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut total = Figures::default();
    for seed in seeds() {
        let f = System::new().block_on(run_seed(seed));
        eprintln!(
            "chaos seed {seed}: writes={} persisted={} failed={} drops={} restarts={} stalls={} lost={} both={}",
            f.writes, f.persisted, f.failed, f.drops, f.restarts, f.stalls, f.lost, f.both
        );
        assert_eq!((f.lost, f.both), (0, 0), "seed {seed}: {f:?}");
        assert!(
            f.failed > 0 && f.persisted > 0,
            "seed {seed} exercised both outcomes: {f:?}"
        );
        total.writes += f.writes;
        total.persisted += f.persisted;
        total.failed += f.failed;
        total.drops += f.drops;
        total.restarts += f.restarts;
        total.stalls += f.stalls;
    }
    eprintln!(
        "chaos total: writes={} persisted={} failed={} faults={} (drops={} restarts={} stalls={}) lost=0",
        total.writes,
        total.persisted,
        total.failed,
        total.drops + total.restarts + total.stalls,
        total.drops,
        total.restarts,
        total.stalls
    );
}
