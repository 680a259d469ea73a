//! A subscriber actor with a file bookmark store that survives a server restart and its own
//! restart without missing or repeating a message.
//!
//! ```text
//! cargo run --release --example subscribe
//! ```
//!
//! 1. Starts the embedded server in-process (127.0.0.1, a random port) and a client whose
//!    bookmark store is a file; the `Tally` actor subscribes to `ticks` with
//!    `BookmarkStart::MostRecent` under the sub id `tally` (EPOCH the first time).
//! 2. Publishes 50 ticks, restarts the server (same port, same data), publishes 50 more: the
//!    client reconnects, resubscribes from the store's most recent bookmark, and the tally
//!    gets every tick once (it prints the `Disconnected` and `Resumed` events it sees).
//! 3. Stops the client, publishes 25 ticks with another client, and starts a new client with
//!    the same bookmark file: the new subscription resumes after the last tick the old one
//!    processed, so the tally sees exactly the 25 new ones.

use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    BookmarkStart, BookmarkStoreError, BookmarkStoreKind, ClientActor, ClientConfig, Deliveries,
    Publish, PublishBatch, PublishFlush, Shutdown, Subscribe, SubscriptionEvent, SyncBookmarks,
};
use actix_amps::error::StartError;
use actix_amps::server::{Server, ServerConfig};

/// Counts ticks and checks they come in order, once each.
#[derive(Default)]
struct Tally {
    ids: Vec<u64>,
}

impl Actor for Tally {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Tally {
    type Result = ();

    fn handle(&mut self, batch: Deliveries, _: &mut Context<Self>) {
        for event in batch.events {
            match event {
                SubscriptionEvent::Message(m) => {
                    let text = String::from_utf8_lossy(m.data_slice()).into_owned();
                    if let Ok(id) = text
                        .trim_start_matches("{\"tick\":")
                        .trim_end_matches('}')
                        .parse::<u64>()
                    {
                        self.ids.push(id);
                    }
                }
                SubscriptionEvent::Disconnected => println!("  [{}] disconnected", batch.sub_id),
                SubscriptionEvent::Resumed { may_have_missed } => println!(
                    "  [{}] resumed from the bookmark store (may have missed: {may_have_missed})",
                    batch.sub_id
                ),
                other => println!("  [{}] {other:?}", batch.sub_id),
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "Vec<u64>")]
struct Ids;

impl Handler<Ids> for Tally {
    type Result = Vec<u64>;

    fn handle(&mut self, _: Ids, _: &mut Context<Self>) -> Vec<u64> {
        self.ids.clone()
    }
}

async fn publish(
    client: &Addr<ClientActor>,
    ticks: std::ops::Range<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let batch = ticks
        .map(|i| Publish::new("ticks", format!("{{\"tick\":{i}}}")))
        .collect();
    client.send(PublishBatch::new(batch)).await??;
    client
        .send(PublishFlush {
            timeout: Duration::from_secs(30),
        })
        .await??;
    Ok(())
}

/// Waits (bounded) until the tally has `n` ticks.
async fn until(tally: &Addr<Tally>, n: usize) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ids = tally.send(Ids).await?;
        if ids.len() >= n {
            return Ok(ids);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("only {} of {n} ticks arrived", ids.len()).into());
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn subscriber(
    uri: &str,
    bookmarks: &std::path::Path,
) -> Result<(Addr<ClientActor>, Addr<Tally>), Box<dyn std::error::Error>> {
    // A client that just stopped releases the file from a thread of its own: until it has,
    // opening it fails with `Locked`; try again for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let client = loop {
        let started = ClientConfig::new("tally-client")
            .uri(uri)?
            .bookmark_store(BookmarkStoreKind::file(bookmarks))
            .start();
        match started {
            Err(StartError::BookmarkStore(BookmarkStoreError::Locked { .. }))
                if std::time::Instant::now() < deadline =>
            {
                actix_rt::time::sleep(Duration::from_millis(10)).await
            }
            other => break other?,
        }
    };
    let tally = Tally::default().start();
    let sub_id = client
        .send(
            Subscribe::new("ticks", tally.clone().recipient())
                .sub_id("tally")
                .bookmark(BookmarkStart::MostRecent),
        )
        .await??;
    println!("subscribed as {sub_id}");
    Ok((client, tally))
}

#[actix::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("subscribe example failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(ServerConfig::new(dir.path().join("server")))?;
    let uri = server.uri();
    let bookmarks = dir.path().join("tally.bookmarks");
    let publisher = ClientConfig::new("tick-publisher").uri(&uri)?.start()?;

    println!("1. subscribe, publish 50, restart the server, publish 50 more");
    let (client, tally) = subscriber(&uri, &bookmarks).await?;
    publish(&publisher, 0..50).await?;
    until(&tally, 50).await?;
    server.restart()?;
    println!("  server restarted on {}", server.addr());
    publish(&publisher, 50..100).await?;
    let ids = until(&tally, 100).await?;
    assert_eq!(
        ids,
        (0..100).collect::<Vec<_>>(),
        "every tick once, in order"
    );
    println!("  the tally has ticks 0..100, each once");

    println!(
        "2. stop the subscriber, publish 25, start a new subscriber on the same bookmark file"
    );
    client
        .send(SyncBookmarks::new(Duration::from_secs(5)))
        .await?;
    client.send(Shutdown).await?;
    publish(&publisher, 100..125).await?;
    let (_client, tally) = subscriber(&uri, &bookmarks).await?;
    let ids = until(&tally, 25).await?;
    assert_eq!(ids, (100..125).collect::<Vec<_>>(), "exactly the new ticks");
    println!("  the new subscriber got ticks 100..125: nothing missed, nothing repeated");
    System::current().stop();
    Ok(())
}
