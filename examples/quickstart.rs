//! Quickstart: reliable publishing with failed-write detection, end to end.
//!
//! Starts the embedded AMPS-protocol server in-process on 127.0.0.1:0 (one topic pattern,
//! `^denied`, is write-protected), spawns the client with a memory publish store, a failed-write
//! subscriber actor and a last-chance actor, subscribes an actor to the orders it is about to
//! publish (filter `/qty = 7`), publishes 10,000 messages to `orders` and three to
//! `denied.orders`, deletes part of the SOW, flushes, and prints the counts, every failed
//! write with its enriched fields, and what the subscriber received.
//!
//! ```text
//! cargo run --release --example quickstart
//! AMPS_URI=tcp://user:pw@amps-host:9007/amps/json cargo run --release --example quickstart
//! ```
//! With `AMPS_URI` set it targets that server instead (which decides itself what is denied).
//!
//! The log (stderr; `RUST_LOG` changes the filter, colours only on a terminal) has two lines
//! that say `replayed`. The server's `transaction log recovered ... replayed=0` counts log
//! records read back at its start (none: a new directory). The client's `logged on; replayed
//! the publish store ... replayed=N` counts messages that were in the publish store when the
//! logon completed and were sent right after it: messages stored while no connection was up,
//! sent for the first time, never anything lost or sent twice. It is 0 here because the
//! quickstart subscribes (which waits for the logon) before it publishes; a program that
//! publishes straight after `start()` sees its first messages counted there.

use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    ClientConfig, Deliveries, FailedWrite, GetStats, Publish, PublishBatch, PublishFlush,
    SowDeleteAndWait, SowDeleteSelector, Subscribe, SubscribeFailedWrites, SubscribeUnexpected,
    SubscriptionEvent, UnexpectedMessage,
};
use actix_amps::server::{Server, ServerConfig};

/// Prints every failed write with what the store knew about it.
#[derive(Default)]
struct FailedWriteReporter {
    seen: usize,
}

impl Actor for FailedWriteReporter {
    type Context = Context<Self>;
}

impl Handler<FailedWrite> for FailedWriteReporter {
    type Result = ();

    fn handle(&mut self, f: FailedWrite, _: &mut Context<Self>) {
        self.seen += 1;
        match &f.message {
            Some(m) => println!(
                "failed write: sequence={} reason={:?} operation={} topic={} correlation_id={} data={}",
                f.sequence,
                f.reason.as_str(),
                m.operation,
                m.topic,
                m.opts().correlation_id.as_deref().unwrap_or("-"),
                String::from_utf8_lossy(&m.data),
            ),
            None => println!(
                "failed write: sequence={} reason={:?} (no stored message with that sequence)",
                f.sequence,
                f.reason.as_str()
            ),
        }
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
struct Seen;

impl Handler<Seen> for FailedWriteReporter {
    type Result = usize;

    fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> usize {
        self.seen
    }
}

/// A subscriber: counts the orders it receives and remembers the first one.
#[derive(Default)]
struct OrderWatcher {
    received: usize,
    first: Option<String>,
}

impl Actor for OrderWatcher {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for OrderWatcher {
    type Result = ();

    /// One call per batch: every message that arrived since the last one.
    fn handle(&mut self, batch: Deliveries, _: &mut Context<Self>) {
        for event in batch.events {
            if let SubscriptionEvent::Message(m) = event {
                self.received += 1;
                self.first.get_or_insert_with(|| {
                    format!(
                        "{} (bookmark {})",
                        String::from_utf8_lossy(m.data_slice()),
                        m.bookmark().unwrap_or("-")
                    )
                });
            }
        }
    }
}

impl Handler<Seen> for OrderWatcher {
    type Result = usize;

    fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> usize {
        if let Some(first) = self.first.take() {
            println!("subscriber: first order received: {first}");
        }
        self.received
    }
}

/// The last-chance handler: anything nobody else claimed.
struct LastChance;

impl Actor for LastChance {
    type Context = Context<Self>;
}

impl Handler<UnexpectedMessage> for LastChance {
    type Result = ();

    fn handle(&mut self, u: UnexpectedMessage, _: &mut Context<Self>) {
        println!("last chance: {:?} {}", u.kind, u.frame.header.to_json());
    }
}

#[actix::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,actix_amps=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    if let Err(e) = run().await {
        eprintln!("quickstart failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the server (and its data directory) alive until the end of `run`.
    let (uri, _server, _dir) = match std::env::var("AMPS_URI") {
        Ok(uri) => (uri, None, None),
        Err(_) => {
            let dir = tempfile::tempdir()?;
            let server = Server::start(
                ServerConfig::new(dir.path())
                    .deny_write("^denied")
                    .sow("^orders$", &["/id"]),
            )?;
            eprintln!("embedded AMPS-protocol server on {}", server.addr());
            (server.uri(), Some(server), Some(dir))
        }
    };

    let client = ClientConfig::new("quickstart-publisher")
        .uri(&uri)?
        .start()?;
    let reporter = FailedWriteReporter::default().start();
    client
        .send(SubscribeFailedWrites(reporter.clone().recipient()))
        .await??;
    client
        .send(SubscribeUnexpected(LastChance.start().recipient()))
        .await??;

    // A subscriber to what this client is about to publish: resolves once the server acked it.
    let watcher = OrderWatcher::default().start();
    let sub_id = client
        .send(Subscribe::new("orders", watcher.clone().recipient()).filter("/qty = 7"))
        .await??;
    println!("subscribed to orders with /qty = 7 as {sub_id}");

    // 10,000 orders in batches (one actor message per 1,000), and three denied writes.
    let started = std::time::Instant::now();
    for chunk in 0..10 {
        let batch = (chunk * 1000..(chunk + 1) * 1000)
            .map(|id| Publish::new("orders", format!(r#"{{"id":{id},"qty":{}}}"#, id % 100)))
            .collect();
        client.send(PublishBatch::new(batch)).await??;
    }
    for i in 0..3 {
        client
            .send(
                Publish::new("denied.orders", format!(r#"{{"id":{i}}}"#))
                    .correlation_id(format!("corr-{i}")),
            )
            .await??;
    }
    let deleted = client
        .send(SowDeleteAndWait::new(
            "orders",
            SowDeleteSelector::Filter("/id < 100".into()),
            Duration::from_secs(30),
        ))
        .await?;
    match deleted {
        Ok(s) => println!(
            "sow_delete /id < 100: matches={} records_deleted={} topic_matches={}",
            s.matches, s.records_deleted, s.topic_matches
        ),
        Err(e) => println!("sow_delete failed: {e}"),
    }
    client
        .send(PublishFlush {
            timeout: Duration::from_secs(30),
        })
        .await??;
    let elapsed = started.elapsed();

    let stats = client.send(GetStats).await??;
    // The failure events travel store -> registry -> reporter; wait (bounded) until all arrived.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reporter.send(Seen).await? < stats.failed as usize {
        if std::time::Instant::now() > deadline {
            return Err("failed-write events did not all arrive".into());
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "published={} persisted={} failed={} unacknowledged={} reconnects={} in {:.1} ms",
        stats.published,
        stats.persisted,
        stats.failed,
        stats.unacknowledged,
        stats.reconnects,
        elapsed.as_secs_f64() * 1e3
    );
    if stats.unacknowledged != 0 || stats.published != stats.persisted + stats.failed {
        return Err("not every write was accounted for".into());
    }
    // 100 of the orders have qty 7; deliveries follow the writes' durability, so wait
    // (bounded) for the last of them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let received = loop {
        let n = watcher.send(Seen).await?;
        if n >= 100 || std::time::Instant::now() > deadline {
            break n;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    };
    println!("subscriber received {received} of the 100 orders with qty 7 that were published");
    if received != 100 {
        return Err("the subscriber did not receive what was published".into());
    }
    System::current().stop();
    Ok(())
}
