//! Metrics (feature `metrics`): a client and the embedded server report what happened through
//! the `metrics` facade, read here by a small recorder installed for this test binary.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_amps::client::{
    Deliveries, Publish, PublishBatch, PublishFlush, Subscribe, SubscriptionEvent,
};
use actix_amps::metrics::names;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use support::TestServer;

/// Every counter and gauge by name and labels (gauges hold `f64` bits, as `metrics` stores them).
#[derive(Default)]
struct TestRecorder {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

fn key_text(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut v = self.values.lock().expect("lock");
        v.entry(key_text(key)).or_default().clone()
    }

    fn counter(&self, name: &str, labels: &str) -> u64 {
        let v = self.values.lock().expect("lock");
        v.get(&format!("{name}{{{labels}}}"))
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    fn gauge(&self, name: &str, labels: &str) -> Option<f64> {
        let v = self.values.lock().expect("lock");
        v.get(&format!("{name}{{{labels}}}"))
            .map(|a| f64::from_bits(a.load(Ordering::Relaxed)))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The recorder of this test binary (a `metrics` recorder is global to the process).
fn recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let r: &'static TestRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(r).expect("the only recorder");
        r
    })
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + support::WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts deliveries.
struct Count(Arc<AtomicU64>);

impl Actor for Count {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Count {
    type Result = ();

    fn handle(&mut self, d: Deliveries, _: &mut Context<Self>) {
        let n = d
            .events
            .iter()
            .filter(|e| matches!(e, SubscriptionEvent::Message(_)))
            .count();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[actix_rt::test]
async fn client_and_server_counters_reach_the_installed_recorder() {
    let rec = recorder();
    let server = TestServer::start(|c| c.deny_write("^denied"));
    let client = support::config("metrics-1", &server)
        .start()
        .expect("start");
    let received = Arc::new(AtomicU64::new(0));
    let counter = Count(received.clone()).start();
    client
        .send(Subscribe::new("orders", counter.recipient()))
        .await
        .expect("mailbox")
        .expect("subscribed");

    let batch = (0..50)
        .map(|i| Publish::new("orders", format!("{{\"id\":{i}}}")))
        .collect();
    client
        .send(PublishBatch::new(batch))
        .await
        .expect("mailbox")
        .expect("stored");
    client
        .send(Publish::new("denied.x", "{}"))
        .await
        .expect("mailbox")
        .expect("stored");
    client
        .send(PublishFlush {
            timeout: support::WAIT,
        })
        .await
        .expect("mailbox")
        .expect("flushed");
    eventually("50 deliveries", || received.load(Ordering::Relaxed) == 50).await;

    // The client's figures, sampled once a second, are exactly what it counted.
    let label = "client=metrics-1";
    eventually("the client's counters", || {
        rec.counter(names::CLIENT_PUBLISHED, label) == 51
            && rec.counter(names::CLIENT_PERSISTED, label) == 50
            && rec.counter(names::CLIENT_FAILED, label) == 1
            && rec.counter(names::CLIENT_DELIVERIES, label) == 50
    })
    .await;
    assert_eq!(rec.gauge(names::CLIENT_UNACKNOWLEDGED, label), Some(0.0));
    assert_eq!(rec.counter(names::CLIENT_RECONNECTS, label), 0);

    // The server's, counted where they happen (this binary runs one test, so they are all
    // this server's): 50 accepted and delivered, one refused.
    assert_eq!(rec.counter(names::SERVER_WRITES, ""), 50);
    assert_eq!(rec.counter(names::SERVER_REFUSED, ""), 1);
    assert!(rec.counter(names::SERVER_DURABLE_LSN, "") >= 50);
    assert_eq!(rec.counter(names::SERVER_DELIVERIES, ""), 50);

    // A dropped connection shows as a reconnect.
    server.handle.drop_connections();
    client
        .send(Publish::new("orders", "{\"id\":99}"))
        .await
        .expect("mailbox")
        .expect("stored");
    client
        .send(PublishFlush {
            timeout: support::WAIT,
        })
        .await
        .expect("mailbox")
        .expect("flushed after the reconnect");
    eventually("the reconnect", || {
        rec.counter(names::CLIENT_RECONNECTS, label) == 1
            && rec.counter(names::CLIENT_PERSISTED, label) == 51
    })
    .await;
}
