//! What `subscribe`, `sow-and-subscribe`, `sow` and `ping` share: building the client, the
//! printer actor that turns delivered messages into JSON lines, and the command's deadline.
//!
//! The printer writes each batch to stdout through tokio's stdout (on a blocking-pool thread,
//! never on the actor's), flushes it, and only then counts the batch as handled; for a
//! bookmark subscription it then discards exactly the messages it printed, so a later run with
//! `--bookmark recent` starts after the last printed line (a crash between printing and
//! recording can repeat a line or two; nothing is ever skipped).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    BookmarkStoreKind, ClientActor, ClientConfig, ConnectionEvent, Deliveries, Delivery,
    DeliveryKind, DiscardBookmarks, SubscribeConnectionEvents, SubscriptionEnd, SubscriptionEvent,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Builds a client for the command's servers (`connect.rs`), with a bookmark store
/// (`--bookmark-store FILE`, else in memory).
pub fn client_config(
    name: &str,
    conn: &crate::connect::ConnectArgs,
    bookmark_store: Option<&std::path::Path>,
) -> Result<ClientConfig, String> {
    let mut config = conn.config(name)?;
    if let Some(path) = bookmark_store {
        config = config.bookmark_store(BookmarkStoreKind::file(path));
    }
    Ok(config)
}

/// A default client name unique to this process (a server refuses a name already logged on).
pub fn default_name(command: &str) -> String {
    format!("actix-amps-{command}-{}", std::process::id())
}

/// Starts the client of a one-shot command (`ping`, `sow`: no bookmark store) named
/// `client_name` or the command's default, and waits up to `connect` for its logon; returns it
/// with the slot that keeps its last connection error.
pub async fn start_logged_on(
    command: &str,
    client_name: Option<String>,
    conn: &crate::connect::ConnectArgs,
    connect: Duration,
) -> Result<(Addr<ClientActor>, Arc<std::sync::Mutex<Option<String>>>), String> {
    let name = client_name.unwrap_or_else(|| default_name(command));
    let client = client_config(&name, conn, None)?
        .start()
        .map_err(|e| e.to_string())?;
    let errors = watch_errors(&client).await;
    crate::connect::logged_on(&client, connect).await?;
    Ok((client, errors))
}

/// Parses `--timeout SECS` (fractions allowed).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds: {s:?}"))
}

/// How the printer writes a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `subscribe` and `sow-and-subscribe`: every field.
    Subscription,
    /// `sow`: the record's key and data.
    Record,
}

/// `bytes` in standard base64 when they are not UTF-8 (then `data` alone, shown lossily,
/// would not give them back); `None` for text.
pub fn base64_unless_utf8(bytes: &[u8]) -> Option<String> {
    if std::str::from_utf8(bytes).is_ok() {
        return None;
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    Some(out)
}

/// One delivered message as a JSON line (without the newline). `data` is the body as text;
/// a body that is not UTF-8 also comes exactly as `data_base64`.
pub fn json_line(d: &Delivery, style: Style) -> String {
    let data = String::from_utf8_lossy(d.data_slice());
    let mut value = match style {
        Style::Record => serde_json::json!({
            "sow_key": d.sow_key(),
            "data": data,
        }),
        Style::Subscription => serde_json::json!({
            "command": d.kind().as_str(),
            "topic": d.topic(),
            "data": data,
            "bookmark": d.bookmark(),
            "sow_key": d.sow_key(),
            "sub_id": d.sub_id(),
            "correlation_id": d.correlation_id(),
            "reason": if d.kind() == DeliveryKind::Oof { d.reason() } else { None },
        }),
    };
    if let (Some(b64), Some(map)) = (base64_unless_utf8(d.data_slice()), value.as_object_mut()) {
        map.insert("data_base64".into(), b64.into());
    }
    value.to_string()
}

/// What the printer tells the command.
#[derive(Debug)]
pub enum Note {
    /// `--count` lines were printed, or the query completed.
    Done,
    /// The subscription ended or failed: exit 1 with this.
    Failed(String),
}

/// Prints deliveries (module docs).
pub struct Printer {
    client: Addr<ClientActor>,
    style: Style,
    /// Lines still to print before `Done` (`None`: no limit).
    left: Option<u64>,
    /// Discard printed messages explicitly (bookmark subscriptions).
    discard: bool,
    notes: mpsc::UnboundedSender<Note>,
    done: bool,
    /// Messages printed so far (for the progress report).
    pub printed: Arc<std::sync::atomic::AtomicU64>,
}

impl Printer {
    pub fn new(
        client: Addr<ClientActor>,
        style: Style,
        count: Option<u64>,
        discard: bool,
        notes: mpsc::UnboundedSender<Note>,
    ) -> Printer {
        Printer {
            client,
            style,
            left: count,
            discard,
            notes,
            done: count == Some(0),
            printed: Arc::default(),
        }
    }
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Printer {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, batch: Deliveries, _: &mut Context<Self>) -> Self::Result {
        let mut out = String::new();
        let mut err = String::new();
        let mut printed = Vec::new();
        let mut notes = Vec::new();
        for ev in batch.events {
            if self.done {
                break;
            }
            match ev {
                SubscriptionEvent::Message(d) => {
                    out.push_str(&json_line(&d, self.style));
                    out.push('\n');
                    printed.push(d.local_seq());
                    if let Some(left) = &mut self.left {
                        *left -= 1;
                        if *left == 0 {
                            self.done = true;
                            notes.push(Note::Done);
                        }
                    }
                }
                SubscriptionEvent::Completed(_) => {
                    self.done = true;
                    notes.push(Note::Done);
                }
                SubscriptionEvent::Disconnected => {
                    err.push_str("actix-amps: disconnected; will subscribe again\n")
                }
                SubscriptionEvent::Resumed { may_have_missed } => err.push_str(if may_have_missed {
                    "actix-amps: subscribed again (messages published meanwhile may be missing)\n"
                } else {
                    "actix-amps: subscribed again from the bookmark store\n"
                }),
                SubscriptionEvent::Ended(end) => {
                    self.done = true;
                    notes.push(Note::Failed(match end {
                        SubscriptionEnd::Refused(reason) => {
                            format!("the server refused to subscribe again: {reason}")
                        }
                        SubscriptionEnd::Disconnected => {
                            "the connection dropped before the query completed".into()
                        }
                        other => format!("the subscription ended: {other:?}"),
                    }));
                }
                _ => {}
            }
        }
        let discard = (self.discard && !printed.is_empty())
            .then(|| DiscardBookmarks::new(batch.sub_id.to_string(), printed));
        let client = self.client.clone();
        let tx = self.notes.clone();
        let printed_count = self.printed.clone();
        let lines = out.bytes().filter(|&b| b == b'\n').count() as u64;
        Box::pin(async move {
            if !err.is_empty() {
                let mut e = tokio::io::stderr();
                let _ = e.write_all(err.as_bytes()).await;
            }
            if !out.is_empty() {
                let mut o = tokio::io::stdout();
                let written = o.write_all(out.as_bytes()).await.and(o.flush().await);
                if let Err(e) = written {
                    let _ = tx.send(Note::Failed(format!("writing stdout: {e}")));
                    return;
                }
            }
            printed_count.fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
            // Printed: now they count as processed.
            if let Some(d) = discard {
                client.do_send(d);
            }
            for n in notes {
                let _ = tx.send(n);
            }
        })
    }
}

/// Remembers the last connection error, for a clearer message when nothing answers.
#[derive(Default)]
pub struct LastError(pub Arc<std::sync::Mutex<Option<String>>>);

impl Actor for LastError {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for LastError {
    type Result = ();

    fn handle(&mut self, e: ConnectionEvent, _: &mut Context<Self>) {
        let text = match e {
            ConnectionEvent::AttemptFailed { error } => error.to_string(),
            ConnectionEvent::GaveUp { reason } => reason.to_string(),
            _ => return,
        };
        if let Ok(mut last) = self.0.lock() {
            *last = Some(text);
        }
    }
}

/// Watches `client`'s connection; the returned slot holds its last error.
pub async fn watch_errors(client: &Addr<ClientActor>) -> Arc<std::sync::Mutex<Option<String>>> {
    let slot = Arc::new(std::sync::Mutex::new(None));
    let watcher = LastError(slot.clone()).start();
    let _ = client
        .send(SubscribeConnectionEvents(watcher.recipient()))
        .await;
    slot
}

/// `msg`, with the last connection error when there was one.
pub fn with_last_error(msg: String, slot: &std::sync::Mutex<Option<String>>) -> String {
    match slot.lock().ok().and_then(|s| s.clone()) {
        Some(e) => format!("{msg} (last connection error: {e})"),
        None => msg,
    }
}

/// Waits for the printer's note, the deadline, or Ctrl-C. `Ok(())` to exit 0.
pub async fn wait_for_end(
    notes: &mut mpsc::UnboundedReceiver<Note>,
    deadline: Option<tokio::time::Instant>,
    timeout_is_failure: bool,
) -> Result<(), String> {
    let until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        n = notes.recv() => match n {
            Some(Note::Done) | None => Ok(()),
            Some(Note::Failed(e)) => Err(e),
        },
        () = until => if timeout_is_failure {
            Err("timed out".into())
        } else {
            Ok(())
        },
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::base64_unless_utf8;

    #[test]
    fn base64_only_for_bytes_that_are_not_text() {
        assert_eq!(base64_unless_utf8(b"plain"), None);
        assert_eq!(base64_unless_utf8(b"\xff").as_deref(), Some("/w=="));
        assert_eq!(base64_unless_utf8(b"\xff\xfe").as_deref(), Some("//4="));
        assert_eq!(base64_unless_utf8(b"\xff\xfe\xfd").as_deref(), Some("//79"));
        assert_eq!(
            base64_unless_utf8(b"a\xffbc\x00").as_deref(),
            Some("Yf9iYwA=")
        );
    }
}
