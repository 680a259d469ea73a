//! Test support for subscriptions: a subscriber actor that forwards every event into a channel
//! the test awaits with a deadline, optionally holding each batch until the test releases it
//! (a slow subscriber that the test controls exactly).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{Deliveries, Delivery, SubscriptionEvent};
use tokio::sync::{mpsc, Semaphore};

/// Every wait is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// The subscriber actor.
pub struct Inbox {
    tx: mpsc::UnboundedSender<(Arc<str>, SubscriptionEvent)>,
    gate: Option<Arc<Semaphore>>,
    batches: Arc<AtomicUsize>,
}

impl Actor for Inbox {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Inbox {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, batch: Deliveries, _: &mut Context<Self>) -> Self::Result {
        let tx = self.tx.clone();
        let gate = self.gate.clone();
        self.batches.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if let Some(g) = gate {
                if let Ok(p) = g.acquire().await {
                    p.forget();
                }
            }
            for ev in batch.events {
                let _ = tx.send((batch.sub_id.clone(), ev));
            }
        })
    }
}

/// A subscriber and the receiving end of its events.
pub struct Sub {
    pub addr: Addr<Inbox>,
    pub rx: mpsc::UnboundedReceiver<(Arc<str>, SubscriptionEvent)>,
    /// Releases held batches (gated subscribers only).
    pub gate: Option<Arc<Semaphore>>,
    /// Batches handed to the subscriber so far.
    pub batches: Arc<AtomicUsize>,
}

impl Sub {
    /// A subscriber that takes every batch at once.
    pub fn new() -> Sub {
        Sub::build(None)
    }

    /// A subscriber that holds each batch until [`Sub::release`].
    pub fn gated() -> Sub {
        Sub::build(Some(Arc::new(Semaphore::new(0))))
    }

    fn build(gate: Option<Arc<Semaphore>>) -> Sub {
        let (tx, rx) = mpsc::unbounded_channel();
        let batches = Arc::new(AtomicUsize::new(0));
        Sub {
            addr: Inbox {
                tx,
                gate: gate.clone(),
                batches: batches.clone(),
            }
            .start(),
            rx,
            gate,
            batches,
        }
    }

    pub fn recipient(&self) -> Recipient<Deliveries> {
        self.addr.clone().recipient()
    }

    /// Lets `n` more batches through.
    pub fn release(&self, n: usize) {
        if let Some(g) = &self.gate {
            g.add_permits(n);
        }
    }

    /// Lets every batch through from now on.
    pub fn open(&self) {
        self.release(Semaphore::MAX_PERMITS / 2);
    }

    /// The next event, or a panic after [`WAIT`].
    pub async fn next(&mut self) -> (Arc<str>, SubscriptionEvent) {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an event within the deadline")
            .expect("subscriber alive")
    }

    /// The next event, if one comes within `d`.
    pub async fn next_within(&mut self, d: Duration) -> Option<(Arc<str>, SubscriptionEvent)> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }

    /// The next message; panics on any other event.
    pub async fn message(&mut self) -> Delivery {
        match self.next().await {
            (_, SubscriptionEvent::Message(d)) => d,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next `n` messages; panics on any other event.
    pub async fn messages(&mut self, n: usize) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.message().await);
        }
        out
    }

    /// Events until one matches `pred` (returned with everything before it).
    pub async fn until(
        &mut self,
        pred: impl Fn(&SubscriptionEvent) -> bool,
    ) -> (Vec<SubscriptionEvent>, SubscriptionEvent) {
        let mut before = Vec::new();
        loop {
            let (_, e) = self.next().await;
            if pred(&e) {
                return (before, e);
            }
            before.push(e);
        }
    }
}

/// The body of message `i` as the tests publish it.
pub fn body(i: u64) -> String {
    format!(r#"{{"id":{i}}}"#)
}

/// The `id` in a body written by [`body`] (or any `{"id":N,...}`).
pub fn id_of(d: &Delivery) -> u64 {
    let s = std::str::from_utf8(d.data_slice()).expect("utf8");
    let rest = s.split("\"id\":").nth(1).expect("an id");
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}
