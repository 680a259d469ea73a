//! TLS (`tcps://`): publish, flush and a failed write end to end over TLS with a throwaway CA;
//! every way it can go wrong fails with a typed error and never falls back to plaintext.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_amps::client::{ConnectionEvent, Publish, ReconnectPolicy};
use actix_amps::error::{ConnectError, ServerError, TlsError};
use actix_amps::protocol::Reason;
use actix_amps::server::{Server, ServerConfig};
use actix_amps::tls::{RootCertStore, TlsClientConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use support::{Event, Events, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A throwaway certificate authority and a server certificate it signed, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    /// A CA and a server certificate for `names` (DNS names or IP addresses).
    fn new(names: &[&str]) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A distinct name per CA: two CAs of one name make a "bad signature", not an
        // "unknown issuer".
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name
            .push(DnType::CommonName, format!("actix-amps test CA {n}"));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "actix-amps test server");
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki {
            dir,
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(pki.ca(), &pki.ca_pem).unwrap();
        std::fs::write(pki.cert(), &pki.cert_pem).unwrap();
        std::fs::write(pki.key(), &pki.key_pem).unwrap();
        pki
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    fn trust(&self) -> TlsClientConfig {
        TlsClientConfig::from_pem_file(self.ca()).unwrap()
    }
}

fn tls_server(pki: &Pki, more: impl FnOnce(ServerConfig) -> ServerConfig) -> TestServer {
    let (cert, key) = (pki.cert(), pki.key());
    TestServer::start(move |c| more(c.tls(cert, key)))
}

/// Quick retries so failures repeat within a test, and never give up on their own.
fn fast_retry() -> ReconnectPolicy {
    ReconnectPolicy::new().backoff(actix_amps::client::Backoff::Fixed(Duration::from_millis(
        50,
    )))
}

/// The next `AttemptFailed` error (skipping other connection events); panics on a logon.
async fn next_attempt_failure(events: &mut Events) -> Arc<ConnectError> {
    loop {
        match events.next().await {
            Event::Connection(ConnectionEvent::AttemptFailed { error }) => return error,
            Event::Connection(ConnectionEvent::LoggedOn { .. }) => {
                panic!("logged on where it must not")
            }
            _ => {}
        }
    }
}

/// Waits until `pred` holds for the server's stats.
async fn wait_server(server: &TestServer, pred: impl Fn(&actix_amps::server::ServerStats) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = server.handle.stats();
        if pred(&s) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server stats never matched: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn tls_publish_flush_and_failed_write_end_to_end() {
    let pki = Pki::new(&["127.0.0.1", "localhost"]);
    let server = tls_server(&pki, |c| c.deny_write("^secret"));
    assert!(
        server.uri().starts_with("tcps://127.0.0.1:"),
        "{}",
        server.uri()
    );
    let client = support::config("tls-e2e", &server)
        .tls(pki.trust())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_failed(&client).await;
    events.subscribe_connection(&client).await;
    let mut seqs = Vec::new();
    for i in 0..200 {
        let topic = if i == 100 { "secret" } else { "orders" };
        let seq = client
            .send(Publish::new(topic, format!("{{\"id\":{i}}}")))
            .await
            .unwrap()
            .unwrap();
        seqs.push(seq);
    }
    support::flush(&client).await;
    let failed = events.next_failed().await;
    assert_eq!(Some(failed.sequence), seqs[100]);
    assert_eq!(failed.reason, Reason::NotEntitled);
    let stats = server.handle.stats();
    assert_eq!(
        (stats.logons_accepted, stats.tls_handshake_failures),
        (1, 0)
    );
    let persisted = server.persisted("tls-e2e");
    assert_eq!(persisted.len(), 199);
    assert!(!persisted.contains(&seqs[100].unwrap()));
}

#[actix_rt::test]
async fn dns_names_are_checked_too() {
    let pki = Pki::new(&["localhost"]);
    let server = tls_server(&pki, |c| c);
    let port = server.handle.addr().port();
    let ok = actix_amps::client::ClientConfig::new("tls-dns")
        .uri(&format!("tcps://localhost:{port}/amps/json"))
        .unwrap()
        .heartbeat(None)
        .tls(pki.trust())
        .start()
        .unwrap();
    support::flush(&ok).await;
    // The certificate names localhost only: 127.0.0.1 does not match it.
    let wrong = actix_amps::client::ClientConfig::new("tls-wrong-name")
        .uri(&format!("tcps://127.0.0.1:{port}/amps/json"))
        .unwrap()
        .heartbeat(None)
        .reconnect(fast_retry())
        .tls(pki.trust())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&wrong).await;
    let err = next_attempt_failure(&mut events).await;
    match &*err {
        ConnectError::Tls {
            source: TlsError::Handshake(e),
            ..
        } => {
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            assert!(
                matches!(inner, Some(rustls::Error::InvalidCertificate(_))),
                "{e:?}"
            );
        }
        other => panic!("expected a TLS handshake error, got {other:?}"),
    }
    assert_eq!(
        server.handle.stats().logons_accepted,
        1,
        "only the right name logged on"
    );
}

#[actix_rt::test]
async fn unknown_ca_is_a_typed_error_and_never_falls_back_to_plaintext() {
    let pki = Pki::new(&["127.0.0.1"]);
    let other = Pki::new(&["127.0.0.1"]);
    let server = tls_server(&pki, |c| c);
    let client = support::config("tls-wrong-ca", &server)
        .reconnect(fast_retry())
        .tls(other.trust())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    for _ in 0..3 {
        let err = next_attempt_failure(&mut events).await;
        let ConnectError::Tls {
            source: TlsError::Handshake(e),
            uri,
        } = &*err
        else {
            panic!("expected a TLS handshake error, got {err:?}");
        };
        assert!(uri.starts_with("tcps://"), "{uri}");
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        assert!(
            matches!(
                inner,
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{e:?}"
        );
        assert!(err.to_string().contains("TLS"), "{err}");
    }
    // Retried (with backoff), and not one logon reached the server, in clear or otherwise.
    let stats = server.handle.stats();
    assert!(stats.connections_accepted >= 3, "{stats:?}");
    assert_eq!(stats.logons_accepted + stats.logons_refused, 0, "{stats:?}");
}

#[actix_rt::test]
async fn plaintext_client_to_a_tls_server_is_never_served() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = tls_server(&pki, |c| c.tls_handshake_timeout(Duration::from_secs(5)));
    let plain_uri = server.uri().replacen("tcps://", "tcp://", 1);
    let client = actix_amps::client::ClientConfig::new("tls-plain-client")
        .uri(&plain_uri)
        .unwrap()
        .heartbeat(None)
        .logon_timeout(Duration::from_secs(2))
        .reconnect(fast_retry())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    let err = next_attempt_failure(&mut events).await;
    assert!(
        matches!(
            &*err,
            ConnectError::ClosedDuringLogon { .. }
                | ConnectError::Protocol { .. }
                | ConnectError::LogonTimeout { .. }
        ),
        "{err:?}"
    );
    wait_server(&server, |s| s.tls_handshake_failures >= 1).await;

    // A raw plaintext logon gets no AMPS answer: only a TLS alert, then the close.
    let mut raw = tokio::net::TcpStream::connect(server.handle.addr())
        .await
        .unwrap();
    let logon = br#"{"c":"logon","cid":"1","client_name":"raw","a":"processed"}"#;
    let mut frame = (logon.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(logon);
    raw.write_all(&frame).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, raw.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server must close a plaintext connection");
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("\"c\":\"ack\""), "served in clear: {text}");
    let stats = server.handle.stats();
    assert_eq!(stats.logons_accepted + stats.logons_refused, 0, "{stats:?}");
}

#[actix_rt::test]
async fn tls_client_to_a_plaintext_server_fails_cleanly() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = TestServer::start(|c| c);
    let tls_uri = server.uri().replacen("tcp://", "tcps://", 1);
    let client = actix_amps::client::ClientConfig::new("tls-to-plain")
        .uri(&tls_uri)
        .unwrap()
        .heartbeat(None)
        .reconnect(fast_retry())
        .tls(pki.trust())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    let err = next_attempt_failure(&mut events).await;
    assert!(
        matches!(
            &*err,
            ConnectError::Tls {
                source: TlsError::Handshake(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.handle.stats().logons_accepted, 0);
}

#[actix_rt::test]
async fn tcps_without_a_tls_configuration_is_refused_before_connecting() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = tls_server(&pki, |c| c);
    let client = support::config("tls-unconfigured", &server)
        .reconnect(fast_retry())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    let err = next_attempt_failure(&mut events).await;
    assert!(
        matches!(&*err, ConnectError::TlsUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ClientConfig::tls"), "{err}");
    assert_eq!(
        server.handle.stats().connections_accepted,
        0,
        "no socket was even opened"
    );
}

#[actix_rt::test]
async fn a_silent_peer_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = tls_server(&pki, |c| {
        c.tls_handshake_timeout(Duration::from_millis(200))
    });
    let mut raw = tokio::net::TcpStream::connect(server.handle.addr())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, raw.read_to_end(&mut buf))
        .await
        .expect("closed within the deadline")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(buf.is_empty());
    wait_server(&server, |s| s.tls_handshake_failures == 1).await;
}

#[test]
fn bad_tls_files_are_typed_errors() {
    let pki = Pki::new(&["127.0.0.1"]);
    let data = tempfile::tempdir().unwrap();
    let missing = pki.dir.path().join("missing.pem");
    let err = Server::start(ServerConfig::new(data.path()).tls(pki.cert(), &missing)).unwrap_err();
    assert!(
        matches!(err, ServerError::Tls(TlsError::Io { ref path, .. }) if path == &missing),
        "{err:?}"
    );
    // The certificate file holds no key.
    let err =
        Server::start(ServerConfig::new(data.path()).tls(pki.cert(), pki.cert())).unwrap_err();
    assert!(
        matches!(err, ServerError::Tls(TlsError::NoPrivateKey { .. })),
        "{err:?}"
    );
    // A key that does not belong to the certificate.
    let other = Pki::new(&["127.0.0.1"]);
    let err = Server::start(
        ServerConfig::new(data.path()).tls_pem(pki.cert_pem.clone(), other.key_pem.clone()),
    )
    .unwrap_err();
    assert!(
        matches!(err, ServerError::Tls(TlsError::Rustls(_))),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(&other.key_pem[40..80]));
    // Client side: no certificates, an empty store.
    assert!(matches!(
        TlsClientConfig::from_pem(b"nothing here"),
        Err(TlsError::NoCertificates { .. })
    ));
    assert!(matches!(
        TlsClientConfig::from_root_store(RootCertStore::empty()),
        Err(TlsError::NoCertificates { .. })
    ));
    assert!(matches!(
        TlsClientConfig::from_pem_file(&missing),
        Err(TlsError::Io { .. })
    ));
    let from_bytes = TlsClientConfig::from_pem(pki.ca_pem.as_bytes()).unwrap();
    assert!(format!("{from_bytes:?}").contains("TlsClientConfig"));
    // The key never shows in a Debug of the server configuration.
    let cfg = ServerConfig::new(data.path()).tls_pem(pki.cert_pem.clone(), pki.key_pem.clone());
    assert!(!format!("{cfg:?}").contains(&pki.key_pem[40..80]));
    let _ = Path::new(".");
}

const BIN: &str = env!("CARGO_BIN_EXE_actix-amps");

#[actix_rt::test]
async fn cli_serve_speaks_tls_and_cli_publish_trusts_a_ca() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let pki = Pki::new(&["127.0.0.1"]);
    let data = tempfile::tempdir().unwrap();
    let mut serve = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ack-conflation",
            "2",
            "--data",
        ])
        .arg(data.path())
        .arg("--tls-cert")
        .arg(pki.cert())
        .arg("--tls-key")
        .arg(pki.key())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let stderr = serve.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("actix-amps: listening on ") {
                let uri = rest.split(['(', ')']).nth(1).unwrap_or("").to_string();
                let _ = tx.send(uri);
            }
        }
    });
    let uri = rx.recv_timeout(WAIT).expect("serve prints its URI");
    assert!(uri.starts_with("tcps://127.0.0.1:"), "{uri}");
    let publish = |extra: &[&std::ffi::OsStr]| {
        let mut child = Command::new(BIN)
            .args([
                "publish",
                "--uri",
                &uri,
                "--topic",
                "t",
                "--client-name",
                "cli-tls",
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn publish");
        // A publish that fails at once may exit before reading its input (a broken pipe).
        if let Err(e) = child.stdin.take().unwrap().write_all(b"a\nb\n") {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
        child.wait_with_output().expect("publish exits")
    };
    let ca = pki.ca();
    let ok = publish(&[
        "--flush-timeout".as_ref(),
        "10000".as_ref(),
        "--tls-ca".as_ref(),
        ca.as_os_str(),
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Without the CA flag the tcps:// URI cannot be used: a clean failure, not plaintext.
    let refused = publish(&["--flush-timeout".as_ref(), "500".as_ref()]);
    assert_ne!(refused.status.code(), Some(0));
    let _ = serve.kill();
    let _ = serve.wait();
}

#[actix_rt::test]
async fn tls_reconnects_and_replays_after_the_server_drops_the_connection() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = tls_server(&pki, |c| c);
    let client = support::config("tls-drop", &server)
        .reconnect(fast_retry())
        .tls(pki.trust())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    for i in 0..50 {
        client
            .send(Publish::new("t", format!("{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    support::flush(&client).await;
    server.handle.drop_connections();
    let reason = match events
        .until_connection(|e| matches!(e, ConnectionEvent::Disconnected { .. }))
        .await
    {
        ConnectionEvent::Disconnected { reason, .. } => reason,
        _ => unreachable!(),
    };
    // The server closes TLS cleanly (close_notify): an end of stream, not a truncation.
    assert!(!reason.contains("close_notify"), "{reason}");
    for i in 50..100 {
        client
            .send(Publish::new("t", format!("{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    support::flush(&client).await;
    assert_eq!(server.handle.stats().logons_accepted, 2);
    assert_eq!(server.persisted("tls-drop").len(), 100);
}
