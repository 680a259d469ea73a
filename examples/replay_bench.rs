//! How long a reconnect takes to replay 100,000 unacknowledged messages.
//!
//! The embedded server (fsync `never`) withholds acks while the client stores 100,000 messages
//! of 128 bytes; the server then drops the connection and resumes acks. Measured: from the
//! `LoggedOn` event of the new connection to the store being empty (every replayed message
//! persisted), and separately until the `Replayed` event (the replay handed to the socket).
//!
//! ```text
//! cargo run --release --example replay_bench [-- --count 100000 --runs 5 --store memory|file]
//! ```

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_amps::client::{
    ClientConfig, ConnectionEvent, GetStats, Publish, PublishBatch, PublishFlush, StoreKind,
    SubscribeConnectionEvents,
};
use actix_amps::server::{FsyncPolicy, Server, ServerConfig};
use tokio::sync::mpsc;

struct Forward(mpsc::UnboundedSender<(Instant, ConnectionEvent)>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for Forward {
    type Result = ();
    fn handle(&mut self, e: ConnectionEvent, _: &mut Context<Self>) {
        let _ = self.0.send((Instant::now(), e));
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn run_once(
    count: u64,
    file: bool,
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let server =
        Server::start(ServerConfig::new(dir.path().join("server")).fsync(FsyncPolicy::Never))?;
    let store = if file {
        StoreKind::file(dir.path().join("store"))
    } else {
        StoreKind::Memory
    };
    let client = ClientConfig::new("replay-bench")
        .uri(&server.uri())?
        .store(store)
        .heartbeat(None)
        .start()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    client
        .send(SubscribeConnectionEvents(Forward(tx).start().recipient()))
        .await??;
    client
        .send(PublishFlush {
            timeout: Duration::from_secs(30),
        })
        .await??;
    server.stall_acks();
    let body = bytes::Bytes::from(vec![b'x'; 128]);
    for start in (0..count).step_by(1000) {
        let n = 1000.min(count - start);
        let batch = (0..n)
            .map(|_| Publish::new("replay", body.clone()))
            .collect();
        client.send(PublishBatch::new(batch)).await??;
    }
    // Everything is on the server (durable) but unacknowledged at the client.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.last_sequence("replay-bench").unwrap_or(0) == 0
        || client.send(GetStats).await??.unacknowledged < count
    {
        if Instant::now() > deadline {
            return Err("messages never reached the server".into());
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    // Make the server forget nothing but drop the connection; with acks stalled the client
    // still holds all `count` messages. Restarting on the same data would make the server report
    // them as persisted (and the client discard them unsent), so this uses a fresh data dir:
    // every message must really be re-sent.
    while rx.try_recv().is_ok() {} // events of the first logon
    server.stop();
    let fresh = tempfile::tempdir()?;
    let server2 = Server::start(
        ServerConfig::new(fresh.path())
            .listen(server.addr())
            .fsync(FsyncPolicy::Never),
    )?;
    let mut logged_on = None;
    let mut replayed = None;
    while replayed.is_none() {
        let (at, e) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await?
            .ok_or("no event")?;
        match e {
            ConnectionEvent::LoggedOn { .. } => logged_on = Some(at),
            ConnectionEvent::Replayed { messages } if logged_on.is_some() => {
                assert_eq!(messages as u64, count);
                replayed = Some(at);
            }
            _ => {}
        }
    }
    let start = logged_on.ok_or("no logon")?;
    client
        .send(PublishFlush {
            timeout: Duration::from_secs(60),
        })
        .await??;
    let persisted = start.elapsed();
    let handed = replayed.ok_or("no replay")? - start;
    drop(server2);
    Ok((handed, persisted))
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: u64 = arg("--count").map_or(Ok(100_000), |s| s.parse())?;
    let runs: usize = arg("--runs").map_or(Ok(5), |s| s.parse())?;
    let file = arg("--store").as_deref() == Some("file");
    let mut results = Vec::new();
    for _ in 0..runs {
        results.push(run_once(count, file).await?);
    }
    let mut persisted: Vec<f64> = results.iter().map(|r| r.1.as_secs_f64() * 1e3).collect();
    let mut handed: Vec<f64> = results.iter().map(|r| r.0.as_secs_f64() * 1e3).collect();
    persisted.sort_by(f64::total_cmp);
    handed.sort_by(f64::total_cmp);
    let mid = runs / 2;
    println!(
        "replay of {count} unacknowledged messages ({} store), {runs} runs:",
        if file { "file" } else { "memory" }
    );
    println!(
        "  logon -> replay handed to the socket: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        handed[0],
        handed[mid],
        handed[runs - 1]
    );
    println!(
        "  logon -> all replayed messages persisted (flush returned): min {:.1} ms, median {:.1} ms, max {:.1} ms",
        persisted[0], persisted[mid], persisted[runs - 1]
    );
    System::current().stop();
    Ok(())
}
