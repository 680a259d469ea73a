//! Test support: an embedded server on 127.0.0.1:0 in a temporary directory, a client builder
//! pointed at it, and a collector actor that turns client events into a channel the test can
//! await with a deadline.
#![allow(dead_code)]

use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    ClientActor, ClientConfig, ConnectionEvent, FailedWrite, GetStats, SubscribeConnectionEvents,
    SubscribeFailedWrites, SubscribeUnexpected, SubscriptionId, UnexpectedMessage,
};
use actix_amps::server::{Server, ServerConfig, ServerHandle};
use tokio::sync::mpsc;

/// Every wait in the tests is bounded by this (generous for a loaded 2-core CI machine).
pub const WAIT: Duration = Duration::from_secs(20);

/// A running embedded server and the directory it writes to (removed on drop).
pub struct TestServer {
    pub handle: ServerHandle,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config =
            configure(ServerConfig::new(dir.path()).ack_conflation(Duration::from_millis(2)));
        let handle = Server::start(config).expect("server starts");
        TestServer { handle, dir }
    }

    pub fn uri(&self) -> String {
        self.handle.uri()
    }

    /// Stops the server and reads its journal: every persisted sequence of `client_name`.
    pub fn persisted(&self, client_name: &str) -> Vec<u64> {
        self.handle.stop();
        let journal = actix_amps::server::Journal::read(self.dir.path()).expect("journal");
        journal
            .client(client_name)
            .map(|c| c.sequences.clone())
            .unwrap_or_default()
    }
}

/// A client config for `server` with quick heartbeats off and short timeouts.
pub fn config(name: &str, server: &TestServer) -> ClientConfig {
    ClientConfig::new(name)
        .uri(&server.uri())
        .expect("valid uri")
        .heartbeat(None)
        .ack_conflation(Duration::from_millis(2))
}

/// Events a collector saw.
#[derive(Debug)]
pub enum Event {
    Failed(FailedWrite),
    Unexpected(UnexpectedMessage),
    Connection(ConnectionEvent),
}

/// Forwards every event it receives into a channel.
pub struct Collector {
    tx: mpsc::UnboundedSender<Event>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<FailedWrite> for Collector {
    type Result = ();
    fn handle(&mut self, msg: FailedWrite, _: &mut Context<Self>) {
        let _ = self.tx.send(Event::Failed(msg));
    }
}

impl Handler<UnexpectedMessage> for Collector {
    type Result = ();
    fn handle(&mut self, msg: UnexpectedMessage, _: &mut Context<Self>) {
        let _ = self.tx.send(Event::Unexpected(msg));
    }
}

impl Handler<ConnectionEvent> for Collector {
    type Result = ();
    fn handle(&mut self, msg: ConnectionEvent, _: &mut Context<Self>) {
        let _ = self.tx.send(Event::Connection(msg));
    }
}

/// Answers once the collector has handled every event queued before it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Barrier;

impl Handler<Barrier> for Collector {
    type Result = ();
    fn handle(&mut self, _: Barrier, _: &mut Context<Self>) {}
}

/// A collector and the receiving end of its channel.
pub struct Events {
    pub addr: Addr<Collector>,
    pub rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    pub fn new() -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        Events {
            addr: Collector { tx }.start(),
            rx,
        }
    }

    pub async fn subscribe_failed(&self, client: &Addr<ClientActor>) -> SubscriptionId {
        client
            .send(SubscribeFailedWrites(self.addr.clone().recipient()))
            .await
            .unwrap()
            .expect("client running")
    }

    pub async fn subscribe_unexpected(&self, client: &Addr<ClientActor>) -> SubscriptionId {
        client
            .send(SubscribeUnexpected(self.addr.clone().recipient()))
            .await
            .unwrap()
            .expect("client running")
    }

    pub async fn subscribe_connection(&self, client: &Addr<ClientActor>) -> SubscriptionId {
        client
            .send(SubscribeConnectionEvents(self.addr.clone().recipient()))
            .await
            .unwrap()
            .expect("client running")
    }

    /// Every failed write already in the collector's mailbox or channel (use after something
    /// that guarantees delivery, such as a resolved `PublishFlush` or `Shutdown`).
    pub async fn take_failed(&mut self) -> Vec<FailedWrite> {
        self.addr.send(Barrier).await.expect("collector alive");
        let mut v = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            if let Event::Failed(f) = e {
                v.push(f);
            }
        }
        v
    }

    /// The next event, or a panic after [`WAIT`].
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an event within the deadline")
            .expect("collector alive")
    }

    /// The next failed write, skipping connection events.
    pub async fn next_failed(&mut self) -> FailedWrite {
        loop {
            match self.next().await {
                Event::Failed(f) => return f,
                Event::Connection(_) => continue,
                other => panic!("expected a failed write, got {other:?}"),
            }
        }
    }

    /// The next unexpected message, skipping connection events.
    pub async fn next_unexpected(&mut self) -> UnexpectedMessage {
        loop {
            match self.next().await {
                Event::Unexpected(u) => return u,
                Event::Connection(_) => continue,
                other => panic!("expected an unexpected message, got {other:?}"),
            }
        }
    }

    /// Waits for a connection event matching `pred`.
    pub async fn until_connection(
        &mut self,
        pred: impl Fn(&ConnectionEvent) -> bool,
    ) -> ConnectionEvent {
        loop {
            if let Event::Connection(e) = self.next().await {
                if pred(&e) {
                    return e;
                }
            }
        }
    }

    /// Asserts nothing but connection events arrive for `d` (used after a flush has proven
    /// every ack was processed, so the quiet period only guards against late duplicates).
    pub async fn assert_quiet(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if !matches!(e, Event::Connection(_)) {
                panic!("unexpected event {e:?}");
            }
        }
    }
}

/// Polls the client's stats until `pred` holds, or panics after [`WAIT`].
pub async fn wait_stats(
    client: &Addr<ClientActor>,
    pred: impl Fn(&actix_amps::client::ClientStats) -> bool,
) -> actix_amps::client::ClientStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = stats(client).await;
        if pred(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never matched: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The client's stats; panics if it has stopped.
pub async fn stats(client: &Addr<ClientActor>) -> actix_amps::client::ClientStats {
    client
        .send(GetStats)
        .await
        .expect("client alive")
        .expect("client running")
}

/// `PublishFlush` with the test deadline, returning its report; panics if it fails.
pub async fn flush_report(client: &Addr<ClientActor>) -> actix_amps::client::FlushReport {
    client
        .send(actix_amps::client::PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes")
}

/// `PublishFlush` with the test deadline; panics if it fails.
pub async fn flush(client: &Addr<ClientActor>) {
    client
        .send(actix_amps::client::PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes");
}

/// Publishes `{"k":from}` .. `{"k":to-1}` to `topic` in batches of `batch`; returns the first
/// and last sequence assigned.
pub async fn publish_range(
    client: &Addr<ClientActor>,
    topic: &str,
    from: u64,
    to: u64,
    batch: u64,
) -> (u64, u64) {
    let (mut first, mut last) = (None, 0);
    for start in (from..to).step_by(batch as usize) {
        let end = (start + batch).min(to);
        let messages = (start..end)
            .map(|k| actix_amps::client::Publish::new(topic, format!(r#"{{"k":{k}}}"#)))
            .collect();
        let (f, l) = client
            .send(actix_amps::client::PublishBatch::new(messages))
            .await
            .expect("client alive")
            .expect("stored")
            .expect("a store assigns sequences");
        first.get_or_insert(f);
        last = l;
    }
    (first.expect("a non-empty range"), last)
}
