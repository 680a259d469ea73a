//! What every client command shares about reaching a server: the `--uri` (or `AMPS_URI`),
//! `--tls-ca` and `--connect-timeout` flags, the checks on a configuration before anything is
//! sent, and the **logon gate** every command passes before it does its work.
//!
//! The gate waits for the first logon, for at most the connect deadline (10 s by default, or
//! the command's own deadline when that is shorter), and fails at once, with the server's
//! words, when waiting cannot help: credentials refused (`auth failure`), a logon without a
//! client name, a `tcps://` URI without `--tls-ca`, a publish gap with
//! `--error-on-publish-gap`, or any other reason the client gives up for. A server that does
//! not answer (nothing listening, a firewall) costs the deadline and no more, and the error
//! says what the last attempt met. Commands therefore never sit out their whole timeout on a
//! configuration error, and a script sees the cause in one line.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    ClientActor, ClientConfig, ConnectionEvent, SubscribeConnectionEvents, WaitLoggedOn,
};
use actix_amps::error::ConnectError;
use actix_amps::protocol::{parse_uri, redact_uri, Reason};
use actix_amps::tls::TlsClientConfig;
use clap::Args;
use tokio::sync::oneshot;

use crate::sub_common::parse_secs;

/// `--uri`, `--tls-ca` and `--connect-timeout`, flattened into every client command.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Server URI, e.g. tcp://127.0.0.1:9007/amps/json; repeat for failover. Default: the
    /// AMPS_URI environment variable.
    #[arg(long, env = "AMPS_URI", hide_env_values = true, required = true)]
    pub uri: Vec<String>,
    /// Give up when not logged on within this many seconds (fractions allowed): connect,
    /// TLS and logon, every --uri included.
    #[arg(long, value_parser = parse_secs, default_value = "10", value_name = "SECS")]
    pub connect_timeout: Duration,
    /// Trust the certificate authorities in this PEM file for tcps:// URIs; repeatable.
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub tls_ca: Vec<PathBuf>,
}

impl ConnectArgs {
    /// A client configuration for these servers, after checking what a server would refuse.
    pub fn config(&self, client_name: &str) -> Result<ClientConfig, String> {
        check_client_name(client_name)?;
        let mut config = self
            .uri
            .iter()
            .try_fold(ClientConfig::new(client_name), |cfg, u| {
                parse_uri(u)
                    .map(|uri| cfg.parsed_uri(uri))
                    .map_err(|e| format!("--uri {:?}: {e}", redact_uri(u)))
            })?;
        if !self.tls_ca.is_empty() {
            let tls = TlsClientConfig::from_pem_files(&self.tls_ca)
                .map_err(|e| format!("--tls-ca: {e}"))?;
            config = config.tls(tls);
        } else if let Some(u) = self.uri.iter().find(|u| u.starts_with("tcps://")) {
            return Err(format!(
                "--uri {:?} asks for TLS: give --tls-ca FILE (the CA that signed the server's \
                 certificate); there is no plaintext fallback",
                redact_uri(u)
            ));
        }
        Ok(config.connect_timeout(self.connect_timeout.min(Duration::from_secs(5))))
    }
}

/// A client name the server would refuse, refused here instead of after a round trip.
pub fn check_client_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("--client-name must not be empty".into());
    }
    if name.chars().any(char::is_control) {
        return Err(format!("--client-name {name:?} holds a control character"));
    }
    Ok(())
}

/// Watches the connection from the start: the last error, and the first fatal one.
struct Gate {
    last: Arc<Mutex<Option<String>>>,
    fatal: Option<oneshot::Sender<String>>,
}

impl Actor for Gate {
    type Context = Context<Self>;
}

impl Gate {
    fn fail(&mut self, why: String) {
        if let Some(tx) = self.fatal.take() {
            let _ = tx.send(why);
        }
    }
}

/// Refusals that no retry can turn into a logon.
fn is_fatal(error: &ConnectError) -> bool {
    match error {
        ConnectError::LogonRefused { reason, .. } => {
            matches!(reason, Reason::AuthFailure | Reason::NoClientName)
        }
        ConnectError::TlsUnavailable { .. } | ConnectError::PublishGap { .. } => true,
        _ => false,
    }
}

impl Handler<ConnectionEvent> for Gate {
    type Result = ();

    fn handle(&mut self, e: ConnectionEvent, _: &mut Context<Self>) {
        match e {
            ConnectionEvent::AttemptFailed { error } => {
                let text = error.to_string();
                if let Ok(mut last) = self.last.lock() {
                    *last = Some(text.clone());
                }
                if is_fatal(&error) {
                    self.fail(text);
                }
            }
            ConnectionEvent::Disconnected { reason, .. } => {
                if let Ok(mut last) = self.last.lock() {
                    *last = Some(reason);
                }
            }
            ConnectionEvent::GaveUp { reason } => {
                let reason = reason.to_string();
                let last = self.last.lock().ok().and_then(|l| l.clone());
                self.fail(match last {
                    Some(last) if !reason.contains(&last) => format!("{reason} ({last})"),
                    _ => reason,
                });
            }
            ConnectionEvent::NameInUse { client_name } => self.fail(format!(
                "client name {client_name:?} taken over by another connection"
            )),
            _ => {}
        }
    }
}

/// Waits until `client` is logged on (module docs). `deadline` is the connect timeout, or the
/// command's own deadline when that is shorter.
pub async fn logged_on(client: &Addr<ClientActor>, deadline: Duration) -> Result<(), String> {
    let last = Arc::new(Mutex::new(None));
    let (tx, fatal) = oneshot::channel();
    let gate = Gate {
        last: last.clone(),
        fatal: Some(tx),
    }
    .start();
    client
        .send(SubscribeConnectionEvents(gate.recipient()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // An answer from an already logged-on connection comes at once (no event is missed).
    let on = client.send(WaitLoggedOn::new(deadline));
    tokio::select! {
        on = on => match on {
            Ok(true) => Ok(()),
            Ok(false) => {
                let last = last.lock().ok().and_then(|l| l.clone());
                Err(match last {
                    Some(e) => format!("not logged on within {}: {e}", secs(deadline)),
                    None => format!("not logged on within {}", secs(deadline)),
                })
            }
            Err(e) => Err(e.to_string()),
        },
        Ok(why) = fatal => Err(why),
    }
}

/// `1.5 s`, `10 s`.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_control_client_names_are_refused() {
        assert!(check_client_name("").is_err());
        assert!(check_client_name("  ").is_err());
        assert!(check_client_name("a\nb").is_err());
        assert!(check_client_name("pub-1").is_ok());
    }

    #[test]
    fn only_refusals_no_retry_can_fix_are_fatal() {
        let refused = |reason| ConnectError::LogonRefused {
            uri: "tcp://h:1/amps/json".into(),
            reason,
        };
        assert!(is_fatal(&refused(Reason::AuthFailure)));
        assert!(is_fatal(&refused(Reason::NoClientName)));
        assert!(!is_fatal(&refused(Reason::Other(
            "too many connections".into()
        ))));
        assert!(!is_fatal(&ConnectError::ConnectTimeout {
            uri: "tcp://h:1/amps/json".into()
        }));
    }
}
