//! Authentication: users and passwords from the URI or the builder, `auth failure` as a typed
//! error, giving up (the default) or backing off on a refused password, and passwords that never
//! appear in `Debug`, `Display`, errors or logs.

mod support;

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_amps::client::{
    Backoff, ClientConfig, ConnectionEvent, Publish, PublishFlush, ReconnectPolicy,
};
use actix_amps::error::{ConnectError, FlushError, GiveUpReason, ProtocolError, TlsError};
use actix_amps::protocol::{parse_uri, Command, Header, Password, Reason};
use actix_amps::server::ServerConfig;
use support::{Event, Events, TestServer, WAIT};

const USER: &str = "alice";
const GOOD: &str = "Good-Pw-41d7";

fn with_user(c: ServerConfig) -> ServerConfig {
    c.user(USER, GOOD)
}

/// `tcp://alice:<password>@127.0.0.1:PORT/amps/json` for `server`.
fn uri_with(server: &TestServer, password: &str) -> String {
    server
        .uri()
        .replacen("tcp://", &format!("tcp://{USER}:{password}@"), 1)
}

fn client(name: &str, uri: &str) -> ClientConfig {
    ClientConfig::new(name)
        .uri(uri)
        .unwrap()
        .heartbeat(None)
        .ack_conflation(Duration::from_millis(2))
}

/// Every connection event until `until` matches, as Debug strings (for the leak checks).
async fn events_until(
    events: &mut Events,
    until: impl Fn(&ConnectionEvent) -> bool,
) -> Vec<ConnectionEvent> {
    let mut seen = Vec::new();
    loop {
        if let Event::Connection(e) = events.next().await {
            let done = until(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

fn is_auth_failure(e: &ConnectionEvent) -> bool {
    matches!(e, ConnectionEvent::AttemptFailed { error }
        if matches!(&**error, ConnectError::LogonRefused { reason: Reason::AuthFailure, .. }))
}

#[actix_rt::test]
async fn credentials_from_the_uri_or_the_builder_log_on() {
    let server = TestServer::start(with_user);
    let from_uri = client("auth-uri", &uri_with(&server, GOOD))
        .start()
        .unwrap();
    from_uri
        .send(Publish::new("t", "1"))
        .await
        .unwrap()
        .unwrap();
    support::flush(&from_uri).await;
    // The builder's credentials override a wrong password in the URI.
    let from_builder = client("auth-builder", &uri_with(&server, "wrong"))
        .credentials(USER, GOOD)
        .start()
        .unwrap();
    support::flush(&from_builder).await;
    let stats = server.handle.stats();
    assert_eq!((stats.logons_accepted, stats.logons_refused), (2, 0));
    assert_eq!(server.persisted("auth-uri").len(), 1);
}

#[test]
fn the_default_is_to_stop_on_auth_failure() {
    assert!(ReconnectPolicy::default().stop_on_auth_failure);
    assert!(ClientConfig::new("x").reconnect.stop_on_auth_failure);
}

#[actix_rt::test]
async fn auth_failure_with_stop_gives_up_and_fails_pending_flushes() {
    let server = TestServer::start(with_user);
    // Held until the writes are stored: otherwise the refusal can come first, and writes made
    // after the client gave up are refused (a different test).
    server.handle.freeze();
    let client = client("auth-stop", &uri_with(&server, "Wrong-Pw-1"))
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    for i in 0..3 {
        client
            .send(Publish::new("t", format!("{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    server.handle.thaw();
    let flush = client.send(PublishFlush { timeout: WAIT });
    let seen = events_until(&mut events, |e| matches!(e, ConnectionEvent::GaveUp { .. })).await;
    assert!(seen.iter().any(is_auth_failure), "{seen:?}");
    let Some(ConnectionEvent::GaveUp { reason }) = seen.last() else {
        unreachable!()
    };
    let GiveUpReason::AuthFailure(refusal) = reason else {
        panic!("expected an auth failure, got {reason:?}");
    };
    assert!(
        matches!(&**refusal, ConnectError::LogonRefused { reason, .. } if *reason == Reason::AuthFailure),
        "{refusal:?}"
    );
    match flush.await.unwrap() {
        Err(FlushError::GaveUp {
            unacknowledged,
            reason,
        }) => {
            assert_eq!(unacknowledged, 3);
            assert!(matches!(reason, GiveUpReason::AuthFailure(_)), "{reason:?}");
            assert!(reason.to_string().contains("auth failure"), "{reason}");
        }
        other => panic!("expected FlushError::GaveUp, got {other:?}"),
    }
    // A flush after giving up fails the same way, and the server sees no further attempt.
    let again = client.send(PublishFlush { timeout: WAIT }).await.unwrap();
    assert!(matches!(again, Err(FlushError::GaveUp { .. })), "{again:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = server.handle.stats();
    assert_eq!(
        (stats.logons_accepted, stats.logons_refused),
        (0, 1),
        "{stats:?}"
    );
    assert_eq!(stats.connections_accepted, 1);
}

#[actix_rt::test]
async fn auth_failure_with_retry_backs_off_instead_of_hammering() {
    let server = TestServer::start(with_user);
    let policy = ReconnectPolicy::new()
        .backoff(Backoff::Exponential {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(10),
            jitter: 0.0,
        })
        .max_retry_time(None)
        .stop_on_auth_failure(false);
    let client = client("auth-retry", &uri_with(&server, "Wrong-Pw-2"))
        .reconnect(policy)
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    // Attempts at about 0, 50, 150, 350, 750, 1550 ms: six in a 1.6 s window. Without the
    // growing backoff a 50 ms retry would make about 30.
    let window = Duration::from_millis(1600);
    let mut at = Vec::new();
    let first = loop {
        if let Event::Connection(e) = events.next().await {
            if is_auth_failure(&e) {
                break tokio::time::Instant::now();
            }
            assert!(
                !matches!(
                    e,
                    ConnectionEvent::GaveUp { .. } | ConnectionEvent::LoggedOn { .. }
                ),
                "{e:?}"
            );
        }
    };
    at.push(first);
    while let Ok(Some(e)) = tokio::time::timeout_at(first + window, events.rx.recv()).await {
        if let Event::Connection(e) = e {
            assert!(
                !matches!(e, ConnectionEvent::GaveUp { .. }),
                "retry must not give up"
            );
            if is_auth_failure(&e) {
                at.push(tokio::time::Instant::now());
            }
        }
    }
    let refused = server.handle.stats().logons_refused;
    assert!(
        (3..=8).contains(&refused),
        "{refused} refused logons in {window:?}: the backoff does not grow"
    );
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 2, "{gaps:?}");
    assert!(
        *gaps.last().unwrap() >= gaps[0] * 2,
        "delays must grow between refused logons: {gaps:?}"
    );
}

const URI_PW: &str = "Uri-Secret-93kq";
const BUILDER_PW: &str = "Builder-Secret-27xz";

fn assert_clean(what: &str, text: &str) {
    for pw in [URI_PW, BUILDER_PW, GOOD] {
        assert!(!text.contains(pw), "{what} shows a password: {text}");
    }
}

#[test]
fn passwords_never_print_in_debug_display_or_errors() {
    let uri_text = format!("tcp://{USER}:{URI_PW}@127.0.0.1:9007/amps/json");
    let uri = parse_uri(&uri_text).unwrap();
    assert_clean("AmpsUri", &format!("{uri} {uri:?} {:?}", uri.password));
    let config = ClientConfig::new("leak")
        .uri(&uri_text)
        .unwrap()
        .credentials(USER, BUILDER_PW);
    assert_clean("ClientConfig", &format!("{config:?} {:#?}", config));
    let header = Header {
        command: Some(Command::Logon),
        user_id: Some(USER.into()),
        password: Some(Password::new(URI_PW)),
        ..Header::default()
    };
    assert_clean("Header", &format!("{header:?} {header:#?}"));
    let server = ServerConfig::new("/nonexistent").user(USER, GOOD);
    assert_clean("ServerConfig", &format!("{server:?} {server:#?}"));
    let u = || uri.to_string();
    let errors = vec![
        ConnectError::Io {
            uri: u(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        },
        ConnectError::ConnectTimeout { uri: u() },
        ConnectError::LogonTimeout { uri: u() },
        ConnectError::LogonRefused {
            uri: u(),
            reason: Reason::AuthFailure,
        },
        ConnectError::PublishGap {
            server_last: 1,
            discarded: 2,
        },
        ConnectError::Protocol {
            uri: u(),
            source: ProtocolError::FrameTooLarge { len: 9, max: 1 },
        },
        ConnectError::TlsUnavailable { uri: u() },
        ConnectError::Tls {
            uri: u(),
            source: TlsError::InvalidServerName { host: "h".into() },
        },
        ConnectError::ClosedDuringLogon { uri: u() },
    ];
    for e in &errors {
        let text = format!("{e} {e:?}");
        assert!(
            text.contains("***") || matches!(e, ConnectError::PublishGap { .. }),
            "{text}"
        );
        assert_clean("ConnectError", &text);
    }
    let event = ConnectionEvent::AttemptFailed {
        error: Arc::new(ConnectError::LogonTimeout { uri: u() }),
    };
    assert_clean("ConnectionEvent", &format!("{event:?}"));
}

/// The whole test binary's tracing output, at TRACE, from every thread (the server runs on
/// its own threads, so a thread-local subscriber would miss it).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || SharedWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_rt::test]
async fn passwords_never_appear_in_client_or_server_logs() {
    let logs = captured_logs();
    let server = TestServer::start(|c| c.user(USER, GOOD));
    // Accepted: password from the URI.
    let ok = client("log-ok", &uri_with(&server, GOOD)).start().unwrap();
    ok.send(Publish::new("t", "x")).await.unwrap().unwrap();
    support::flush(&ok).await;
    // Refused: a wrong password from the builder (gives up) ...
    let stop = client("log-stop", &server.uri())
        .credentials(USER, BUILDER_PW)
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&stop).await;
    let mut seen = events_until(&mut events, |e| matches!(e, ConnectionEvent::GaveUp { .. })).await;
    // ... and from the URI (retries).
    let retry = client("log-retry", &uri_with(&server, URI_PW))
        .reconnect(
            ReconnectPolicy::new()
                .backoff(Backoff::Fixed(Duration::from_millis(20)))
                .max_retry_time(None)
                .stop_on_auth_failure(false),
        )
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&retry).await;
    for _ in 0..2 {
        seen.extend(events_until(&mut events, is_auth_failure).await);
    }
    server.handle.stop();
    for e in &seen {
        assert_clean("ConnectionEvent", &format!("{e:?}"));
        if let ConnectionEvent::AttemptFailed { error } = e {
            assert_clean("ConnectError", &format!("{error} {error:?}"));
        }
    }
    let _ = std::io::stderr().flush();
    let text =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    // The capture works: client and server both logged the logons, below `info` too (the
    // subscriber is at TRACE, the crate's most verbose events are DEBUG).
    for expected in [
        "logon refused: auth failure",
        "logged on",
        "connection attempt failed",
        "DEBUG",
        "log-retry",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from the captured logs"
        );
    }
    assert_clean("the logs", &text);
}
