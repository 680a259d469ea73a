//! The file store's disk I/O runs on its own thread: a slow disk delays the writes that wait
//! for it (a write still resolves only once it is on disk), never an unrelated actor on the
//! client's arbiter. The slow disk is the test hook that delays every fsync of segment data
//! (process-wide, hence a test binary of its own).

mod support;

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_amps::client::store::file::set_fsync_delay_for_tests;
use actix_amps::client::{Publish, StoreKind};
use support::{config, TestServer, WAIT};

const FSYNC_DELAY: Duration = Duration::from_millis(300);
const WRITES: usize = 4;

/// An actor that answers at once: its latency is the arbiter's.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Ping;

impl Handler<Ping> for Echo {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

#[actix_rt::test]
async fn a_slow_fsync_does_not_stall_an_unrelated_actor_on_the_arbiter() {
    set_fsync_delay_for_tests(FSYNC_DELAY);
    let server = TestServer::start(|c| c);
    let dir = tempfile::tempdir().unwrap();
    let client = config("slow-disk", &server)
        .store(StoreKind::file(dir.path().join("store")))
        .start()
        .unwrap();
    // The same arbiter (this test's single thread) runs the client's actors and this one.
    let echo = Echo.start();

    let publishing = {
        let client = client.clone();
        actix_rt::spawn(async move {
            let mut took = Vec::new();
            for k in 0..WRITES {
                let started = Instant::now();
                client
                    .send(Publish::new("slow", format!("{k}")))
                    .await
                    .expect("client alive")
                    .expect("stored");
                took.push(started.elapsed());
            }
            took
        })
    };

    let deadline = Instant::now() + WAIT;
    let mut pings = 0;
    let mut slowest = Duration::ZERO;
    while !publishing.is_finished() {
        assert!(Instant::now() < deadline, "the writes never resolved");
        let sent = Instant::now();
        tokio::time::timeout(WAIT, echo.send(Ping))
            .await
            .expect("the unrelated actor answers")
            .unwrap();
        slowest = slowest.max(sent.elapsed());
        pings += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = publishing.await.unwrap();

    // Every write waited for its (slow) fsync: resolved only once on disk.
    assert!(
        took.iter().all(|t| *t >= FSYNC_DELAY),
        "each write waits for its fsync: {took:?}"
    );
    // Meanwhile the arbiter kept answering: a disk-bound arbiter would take at least one
    // fsync delay to answer a ping issued during it.
    assert!(pings >= 10, "pinged during the writes ({pings})");
    assert!(
        slowest < FSYNC_DELAY / 3,
        "an unrelated actor waited {slowest:?} while the disk took {FSYNC_DELAY:?} per fsync"
    );
    // Answered `Ok` means on the client's disk and sent; the server's acks come after.
    support::flush(&client).await;
    assert_eq!(
        server.persisted("slow-disk").len(),
        WRITES,
        "every write persisted once"
    );
}
