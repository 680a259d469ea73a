//! One measurement each: a client or raw-writer throughput run, failure-notification latency,
//! flush latency, and the memory of a stalled store (run in a child process so that earlier
//! runs' heap does not blur its RSS figures).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_amps::client::{
    ClientActor, ClientConfig, FailedWrite, GetPublisher, GetStats, Publish, PublishBatch,
    PublishFlush, Shutdown, StoreKind, SubscribeFailedWrites, Topic,
};
use actix_amps::server::RawWriter;
use bytes::Bytes;
use tokio::sync::mpsc;

/// The topic every benchmark publishes to.
pub const TOPIC: &str = "bench";

/// How the client is driven.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `PublishBatch` of this many messages, a few batches in flight.
    Batch(usize),
    /// `Publish` with `send().await` per message: one round trip through the mailboxes each.
    SendAwait,
    /// `Publish` with `do_send`, and `send().await` on every 1000th as a sync point.
    DoSend,
    /// `Publisher::publish(..).await` per message (the handle, no mailbox hop).
    PublisherAwait,
    /// `Publisher::try_publish` per message (never waits).
    TryPublish,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Starts a client and waits until it is logged on (one published and flushed message).
pub async fn start_client(
    uri: &str,
    name: &str,
    store: StoreKind,
    capacity: usize,
) -> Result<Addr<ClientActor>, String> {
    let client = ClientConfig::new(name)
        .uri(uri)
        .map_err(err)?
        .store(store)
        .capacity(capacity, 8 << 30)
        .start()
        .map_err(err)?;
    client
        .send(Publish::new(TOPIC, Bytes::from_static(b"{}")))
        .await
        .map_err(err)?
        .map_err(err)?;
    flush(&client).await?;
    Ok(client)
}

/// `PublishFlush` with a generous deadline.
pub async fn flush(client: &Addr<ClientActor>) -> Result<(), String> {
    client
        .send(PublishFlush {
            timeout: Duration::from_secs(120),
        })
        .await
        .map_err(err)?
        .map(drop)
        .map_err(err)
}

/// Stops a client and lets its actors wind down.
pub async fn stop_client(client: Addr<ClientActor>) {
    client.do_send(Shutdown);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Publishes `count` messages in `mode` (the time the user's loop takes, including building
/// each `Publish`), ending with a `PublishFlush`.
pub async fn publish(
    client: &Addr<ClientActor>,
    body: &Bytes,
    count: u64,
    mode: Mode,
) -> Result<Duration, String> {
    let started = Instant::now();
    match mode {
        Mode::Batch(size) => {
            let mut in_flight = std::collections::VecDeque::new();
            let mut left = count;
            while left > 0 {
                let n = (size as u64).min(left);
                left -= n;
                let messages = (0..n).map(|_| Publish::new(TOPIC, body.clone())).collect();
                in_flight.push_back(client.send(PublishBatch::new(messages)));
                if in_flight.len() >= 4 {
                    if let Some(r) = in_flight.pop_front() {
                        r.await.map_err(err)?.map_err(err)?;
                    }
                }
            }
            for r in in_flight {
                r.await.map_err(err)?.map_err(err)?;
            }
        }
        Mode::SendAwait => {
            for _ in 0..count {
                client
                    .send(Publish::new(TOPIC, body.clone()))
                    .await
                    .map_err(err)?
                    .map_err(err)?;
            }
        }
        Mode::PublisherAwait => {
            let publisher = client.send(GetPublisher).await.map_err(err)?;
            let topic = Topic::new(TOPIC);
            for _ in 0..count {
                publisher
                    .publish(Publish::new(&topic, body.clone()))
                    .await
                    .map_err(err)?;
            }
        }
        Mode::TryPublish => {
            let publisher = client.send(GetPublisher).await.map_err(err)?;
            let topic = Topic::new(TOPIC);
            for i in 1..=count {
                publisher
                    .try_publish(Publish::new(&topic, body.clone()))
                    .map_err(err)?;
                // A producer on the client's own thread lets it send now and then.
                if i % 1000 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
        Mode::DoSend => {
            for i in 1..=count {
                let p = Publish::new(TOPIC, body.clone());
                if i % 1000 == 0 || i == count {
                    client.send(p).await.map_err(err)?.map_err(err)?;
                } else {
                    client.do_send(p);
                }
            }
        }
    }
    flush(client).await?;
    Ok(started.elapsed())
}

/// Client throughput in messages per second.
pub async fn client_rate(
    uri: &str,
    name: &str,
    store: StoreKind,
    body: &Bytes,
    count: u64,
    mode: Mode,
) -> Result<f64, String> {
    let client = start_client(uri, name, store, count as usize + 1000).await?;
    let elapsed = publish(&client, body, count, mode).await?;
    let stats = client.send(GetStats).await.map_err(err)?.map_err(err)?;
    stop_client(client).await;
    if stats.unacknowledged != 0 || stats.failed != 0 {
        return Err(format!("client run ended with {stats:?}"));
    }
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// Raw pipelined writer throughput in messages per second.
pub async fn raw_rate(
    addr: SocketAddr,
    name: &str,
    body: &Bytes,
    count: u64,
) -> Result<f64, String> {
    let run = RawWriter::run(addr, name, TOPIC, body.clone(), count)
        .await
        .map_err(err)?;
    Ok(run.msgs_per_sec())
}

/// Records how long each failed write took from its ack's decode to this handler.
pub struct Recorder {
    latencies: Vec<f64>,
    tx: mpsc::UnboundedSender<()>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<FailedWrite> for Recorder {
    type Result = ();

    fn handle(&mut self, f: FailedWrite, _: &mut Context<Self>) {
        self.latencies
            .push(f.received_at.elapsed().as_secs_f64() * 1e6);
        let _ = self.tx.send(());
    }
}

/// Hands over the recorded latencies (microseconds).
#[derive(Message)]
#[rtype(result = "Vec<f64>")]
pub struct TakeLatencies;

impl Handler<TakeLatencies> for Recorder {
    type Result = MessageResult<TakeLatencies>;

    fn handle(&mut self, _: TakeLatencies, _: &mut Context<Self>) -> Self::Result {
        MessageResult(std::mem::take(&mut self.latencies))
    }
}

/// Failure-notification latencies in µs, sorted. `loaded`: `count` messages in batches while
/// the server refuses some of them (it must refuse about one in ten); otherwise one publish at
/// a time to a server that refuses everything, waiting for each notification.
/// With `own_arbiter`, the client and the subscriber run on a dedicated arbiter (thread), as
/// `ClientConfig::start_in` allows, so the producer's own work does not delay them.
pub async fn failure_latencies(
    uri: &str,
    name: &str,
    body: &Bytes,
    count: u64,
    loaded: bool,
    own_arbiter: Option<&actix::ArbiterHandle>,
) -> Result<Vec<f64>, String> {
    let config = ClientConfig::new(name)
        .uri(uri)
        .map_err(err)?
        .capacity(count as usize + 1000, 8 << 30);
    let client = match own_arbiter {
        Some(arbiter) => config.start_in(arbiter),
        None => config.start(),
    }
    .map_err(err)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let recorder = Recorder {
        latencies: Vec::new(),
        tx,
    };
    let recorder = match own_arbiter {
        Some(arbiter) => Recorder::start_in_arbiter(arbiter, move |_| recorder),
        None => recorder.start(),
    };
    client
        .send(SubscribeFailedWrites(recorder.clone().recipient()))
        .await
        .map_err(err)?
        .map_err(err)?;
    flush(&client).await?;
    if loaded {
        publish(&client, body, count, Mode::Batch(1000)).await?;
    } else {
        for _ in 0..count {
            client
                .send(Publish::new(TOPIC, body.clone()))
                .await
                .map_err(err)?
                .map_err(err)?;
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .map_err(|_| "no failed-write notification within 10 s".to_owned())?;
        }
        flush(&client).await?;
    }
    let mut lat = recorder.send(TakeLatencies).await.map_err(err)?;
    stop_client(client).await;
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// Flush latencies: `rounds` times, publish a batch of `batch` messages and flush; the time
/// from the sink writing the final persisted ack to `PublishFlush` returning, in µs, sorted.
/// The sink must ack only on flush (a long conflation interval).
pub async fn flush_latencies(
    sink: &actix_amps::server::SinkHandle,
    name: &str,
    body: &Bytes,
    rounds: usize,
    batch: usize,
) -> Result<Vec<f64>, String> {
    let client = start_client(&sink.uri(), name, StoreKind::Memory, batch * 2).await?;
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let messages = (0..batch)
            .map(|_| Publish::new(TOPIC, body.clone()))
            .collect();
        client
            .send(PublishBatch::new(messages))
            .await
            .map_err(err)?
            .map_err(err)?;
        flush(&client).await?;
        let returned = Instant::now();
        let acked = sink
            .last_ack_sent()
            .ok_or("the sink sent no persisted ack")?;
        lat.push(returned.saturating_duration_since(acked).as_secs_f64() * 1e6);
    }
    stop_client(client).await;
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// An actor that has nothing to do with the client: it records how long each ping waited in
/// its mailbox.
pub struct Bystander {
    latencies: Vec<f64>,
}

/// Sent from another thread with its send time.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping(Instant);

impl Actor for Bystander {
    type Context = Context<Self>;
}

impl Handler<Ping> for Bystander {
    type Result = ();

    fn handle(&mut self, p: Ping, _: &mut Context<Self>) {
        self.latencies.push(p.0.elapsed().as_secs_f64() * 1e6);
    }
}

impl Handler<TakeLatencies> for Bystander {
    type Result = MessageResult<TakeLatencies>;

    fn handle(&mut self, _: TakeLatencies, _: &mut Context<Self>) -> Self::Result {
        MessageResult(std::mem::take(&mut self.latencies))
    }
}

/// Latencies (µs, sorted) of an unrelated actor on the client's arbiter while the client
/// streams `count` messages (batches of 1000) into `store`: a thread pings it every 200 µs.
pub async fn bystander_latencies(
    uri: &str,
    name: &str,
    store: StoreKind,
    body: &Bytes,
    count: u64,
) -> Result<Vec<f64>, String> {
    let client = start_client(uri, name, store, count as usize + 1000).await?;
    let bystander = Bystander {
        latencies: Vec::new(),
    }
    .start();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let (addr, stop) = (bystander.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                addr.do_send(Ping(Instant::now()));
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let result = publish(&client, body, count, Mode::Batch(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = pinger.join();
    result?;
    let mut lat = bystander.send(TakeLatencies).await.map_err(err)?;
    stop_client(client).await;
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}
