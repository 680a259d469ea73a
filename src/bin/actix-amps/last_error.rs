//! The last connection error, to say why a command failed when the failure itself (a flush
//! timeout, "not logged on in time") does not: the server's refusal or closing reason, a
//! connection refused, a TLS failure.

use actix::prelude::*;
use actix_amps::client::{ClientActor, ConnectionEvent, SubscribeConnectionEvents};

/// Remembers the last failed attempt or disconnect since the last logon.
pub struct ConnectionWatch {
    last: Option<String>,
}

impl Actor for ConnectionWatch {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for ConnectionWatch {
    type Result = ();

    fn handle(&mut self, e: ConnectionEvent, _: &mut Context<Self>) {
        match e {
            ConnectionEvent::AttemptFailed { error } => self.last = Some(error.to_string()),
            ConnectionEvent::Disconnected { reason, .. } => self.last = Some(reason),
            ConnectionEvent::LoggedOn { .. } => self.last = None,
            _ => {}
        }
    }
}

#[derive(Message)]
#[rtype(result = "Option<String>")]
struct Last;

impl Handler<Last> for ConnectionWatch {
    type Result = Option<String>;

    fn handle(&mut self, _: Last, _: &mut Context<Self>) -> Option<String> {
        self.last.clone()
    }
}

/// A watch subscribed to `client`'s connection events.
pub async fn watch(client: &Addr<ClientActor>) -> Result<Addr<ConnectionWatch>, String> {
    let watch = ConnectionWatch { last: None }.start();
    client
        .send(SubscribeConnectionEvents(watch.clone().recipient()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(watch)
}

/// `error`, followed by the last connection error when there is one it does not already say.
pub async fn explain(watch: &Addr<ConnectionWatch>, error: String) -> String {
    match watch.send(Last).await.ok().flatten() {
        Some(last) if !error.contains(&last) => format!("{error} (last connection error: {last})"),
        _ => error,
    }
}
