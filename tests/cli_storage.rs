//! The storage commands and real full disks: `journal --verify` and `serve --repair` on a
//! damaged directory; `serve` against a file size limit (`RLIMIT_FSIZE`, always run) and a
//! small tmpfs (run where mounting works, skipped with a reason otherwise), both with the
//! space freed again while the server runs.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_amps::protocol::{AckTypes, Status};
use actix_amps::server::Journal;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_actix-amps");
const BODY: &[u8] = b"{\"id\":1,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}";

/// A `serve` child; killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(mut cmd: Command) -> Result<Serve, (i32, String)> {
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("actix-amps: listening on ") {
                let _ = tx.send(Ok(rest.split_whitespace().next().unwrap_or("").to_string()));
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(Err(all));
    });
    match rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve starts or exits")
    {
        Ok(addr) => Ok(Serve {
            child,
            addr: addr.parse().unwrap(),
            stdout: Some(stdout),
        }),
        Err(stderr) => {
            let status = child.wait().unwrap();
            Err((status.code().unwrap_or(-1), stderr))
        }
    }
}

fn serve_cmd(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ack-conflation",
        "2",
        "--data",
    ])
    .arg(dir)
    .args(extra);
    cmd
}

/// Publishes `seqs` as fast as the socket takes them, flushes, and counts (persisted, failed).
async fn publish(c: &mut Conn, seqs: std::ops::RangeInclusive<u64>) -> (Vec<u64>, Vec<String>) {
    let mut bytes = bytes::BytesMut::new();
    for seq in seqs.clone() {
        actix_amps::protocol::encode_parts(&common::publish("orders", seq), BODY, &mut bytes);
    }
    c.send_raw(&bytes).await;
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    let frames = c.recv_until(|f| is_cid(f, "f")).await;
    let mut failed = Vec::new();
    let mut failed_seqs = Vec::new();
    let mut max_ok = 0;
    for f in frames.iter().filter(|f| is_persisted(f)) {
        if f.header.status == Some(Status::Failure) {
            failed_seqs.push(f.header.seq.unwrap());
            failed.push(f.header.reason.clone().unwrap().as_str().to_owned());
        } else {
            max_ok = max_ok.max(f.header.seq.unwrap());
        }
    }
    let ok = seqs
        .filter(|s| *s <= max_ok && !failed_seqs.contains(s))
        .collect();
    (ok, failed)
}

fn journal(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("journal")
        .args(args)
        .arg("--data")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn verify_and_repair_a_damaged_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = spawn_serve(serve_cmd(&data, &["--log-segment-bytes", "16384"])).unwrap();
    let mut c = Conn::connect(server.addr).await;
    c.logon("pub").await;
    for chunk in 0..10u64 {
        let (ok, _) = publish(&mut c, chunk * 40 + 1..=chunk * 40 + 40).await;
        assert_eq!(ok.len(), 40);
    }
    drop(c);
    drop(server);
    assert_eq!(journal(&data, &["--verify"]).0, 0);

    // Damage the body of seq 200's record.
    let (path, offset) = {
        let r = actix_amps::server::txlog::LogReader::open(
            &data,
            actix_amps::server::txlog::StartAt::Beginning,
        )
        .unwrap();
        let e = r.map(Result::unwrap).find(|e| e.seq == Some(200)).unwrap();
        (
            data.join(actix_amps::server::txlog::files::segment_name(
                e.position.segment,
            )),
            e.position.offset,
        )
    };
    let mut b = std::fs::read(&path).unwrap();
    b[offset as usize + 90] ^= 1;
    std::fs::write(&path, b).unwrap();

    let (code, text) = journal(&data, &["--verify"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("DAMAGED: 1 range(s)"), "{text}");
    assert!(text.contains(&format!("bytes {offset}..")), "{text}");
    assert!(
        text.contains("LSNs 200..=200 lost (1 records); 199 intact records before, 200 after"),
        "{text}"
    );
    assert!(text.contains("pub seq 200 (1 records)"), "{text}");

    match spawn_serve(serve_cmd(&data, &[])) {
        Err((1, stderr)) => {
            assert!(stderr.contains("is damaged at offset"), "{stderr}");
            assert!(
                stderr.contains("200 intact records lie beyond it"),
                "{stderr}"
            );
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a damaged log must not serve"),
    }

    let server = spawn_serve(serve_cmd(&data, &["--repair"])).unwrap();
    let mut c = Conn::connect(server.addr).await;
    assert_eq!(c.logon("pub").await.header.seq, Some(400));
    drop(c);
    let report = stop(server);
    assert!(
        report.contains("1 damaged range(s) quarantined"),
        "{report}"
    );
    assert!(report.contains("LSNs 200..=200 lost"), "{report}");
    let (code, text) = journal(&data, &["--verify"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("earlier repair: LSNs 200..=200 lost"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(data.join("quarantine")).unwrap().count(),
        1
    );
}

/// Fills the log until writes fail, checks the failure is prompt and clear, frees space with
/// `free`, and checks writes resume by themselves. Returns the persisted sequences.
async fn fill_then_free(addr: SocketAddr, free: impl FnOnce()) -> Vec<u64> {
    let mut c = Conn::connect(addr).await;
    c.logon("filler").await;
    let mut all_ok = Vec::new();
    let mut next = 1u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t0 = Instant::now();
        let (ok, failed) = publish(&mut c, next..=next + 999).await;
        next += 1000;
        all_ok.extend(ok);
        if let Some(reason) = failed.first() {
            assert!(reason.contains("disk is full"), "{reason}");
            assert!(
                all_ok.len() > 1000,
                "only {} writes fit before the disk was full",
                all_ok.len()
            );
            assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
            break;
        }
        assert!(Instant::now() < deadline, "the disk never filled");
    }
    // Logons still work while full.
    let mut other = Conn::connect(addr).await;
    other.logon("other").await;
    drop(other);
    free();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, _) = publish(&mut c, next..=next).await;
        next += 1;
        if !ok.is_empty() {
            all_ok.extend(ok);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, failed) = publish(&mut c, next..=next + 199).await;
    assert_eq!((ok.len(), failed.len()), (200, 0), "{failed:?}");
    all_ok.extend(ok);
    all_ok
}

/// Stops `serve` with SIGTERM (a clean stop) and returns what it printed on stdout.
fn stop(mut server: Serve) -> String {
    // SAFETY: a signal to a child we own.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while server.child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stdout.take().unwrap().join().unwrap()
}

#[tokio::test]
async fn a_file_size_limit_fails_writes_and_raising_it_resumes_them() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    const LIMIT: u64 = 6 << 20;
    // 16 MiB segments reserve 4 MiB ahead: the reservation hits the limit after ~2 MiB.
    let mut cmd = serve_cmd(&data, &["--log-segment-bytes", "16MiB"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT as libc::rlim_t,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A write past the limit then fails with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let server = spawn_serve(cmd).unwrap();
    let pid = server.child.id() as libc::pid_t;
    let ok = fill_then_free(server.addr, || {
        let lim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain syscall on a child we own.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    })
    .await;
    stop(server);
    let j = Journal::read(&data).unwrap();
    assert_eq!(j.client("filler").unwrap().sequences, ok);
    assert!(j.damage().is_empty());
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_tmpfs_fails_writes_and_freeing_space_resumes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::piped())
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "SKIPPED a_full_tmpfs_fails_writes_and_freeing_space_resumes_them: cannot mount a tmpfs here ({}); the RLIMIT_FSIZE test covers a full disk",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED a_full_tmpfs_fails_writes_and_freeing_space_resumes_them: no mount command ({e})");
            return;
        }
    }
    let _guard = Tmpfs(mnt.clone());
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![1u8; 3 << 20]).unwrap();
    let data = mnt.join("data");
    let server = spawn_serve(serve_cmd(&data, &["--log-segment-bytes", "4MiB"])).unwrap();
    let ok = fill_then_free(server.addr, || std::fs::remove_file(&filler).unwrap()).await;
    stop(server);
    let j = Journal::read(&data).unwrap();
    assert_eq!(j.client("filler").unwrap().sequences, ok);
}

#[test]
fn a_client_store_out_of_space_refuses_the_write_cleanly_and_sends_nothing_refused() {
    use std::io::Write as _;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let server = actix_amps::server::Server::start(actix_amps::server::ServerConfig::new(
        dir.path().join("server"),
    ))
    .unwrap();
    let store = dir.path().join("store");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "publish",
        "--topic",
        "orders",
        "--client-name",
        "full",
        "--batch",
        "1",
    ])
    .args(["--report-stored", "--uri", &server.uri(), "--store"])
    .arg(format!("file:{}", store.display()))
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(4000));
        for _ in 0..1000 {
            if stdin.write_all(line.as_bytes()).is_err() {
                break; // it stopped reading: the store refused a write
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let err = stderr
        .lines()
        .find(|l| l.starts_with("actix-amps: error:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(err.contains("has no disk space for the write"), "{err}");
    assert!(err.contains(&store.display().to_string()), "{err}");
    assert!(err.contains("os error"), "{err}");
    assert!(!err.contains("at :"), "garbled: {err}");
    let stored: Vec<u64> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("stored "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        stored.len() > 100,
        "{} stored before the limit",
        stored.len()
    );
    // The server has exactly what was reported stored: the refused write was never sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.last_sequence("full") != stored.last().copied() {
        assert!(
            Instant::now() < deadline,
            "server never got every stored write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let j = Journal::read(&dir.path().join("server")).unwrap();
    assert_eq!(j.client("full").unwrap().sequences, stored);
}

#[test]
fn store_verify_and_repair_commands() {
    use actix_amps::client::store::{FileStore, FileStoreConfig, Operation, Store, StoredMessage};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FileStoreConfig::new(dir.path());
    cfg.segment_bytes = 4096;
    let mut store = FileStore::open(cfg).unwrap();
    for seq in 1..=300u64 {
        store
            .append(StoredMessage {
                seq,
                operation: Operation::Publish,
                topic: "orders".into(),
                data: bytes::Bytes::from(format!("{{\"n\":{seq},\"pad\":\"xxxxxxxxxxxxxxxx\"}}")),
                options: None,
            })
            .unwrap();
        if seq % 10 == 0 {
            store.sync().unwrap();
        }
    }
    drop(store);
    let run = |flag: &str| {
        let out = Command::new(BIN)
            .args(["store", flag, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(run("--verify").0, Some(0));
    // A byte in the middle of the first (finished) segment.
    let first = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .min()
        .unwrap();
    let mut b = std::fs::read(&first).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x08;
    std::fs::write(&first, b).unwrap();
    let (code, text) = run("--verify");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("DAMAGED: 1 range(s)"), "{text}");
    assert!(text.contains("unacknowledged messages lost: seq"), "{text}");
    match FileStore::open(FileStoreConfig::new(dir.path())) {
        Err(e) => assert!(
            e.to_string().contains("intact records lie beyond it"),
            "{e}"
        ),
        Ok(_) => panic!("a damaged store must not open"),
    }
    let (code, text) = run("--repair");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("REPAIRED: 1 range(s)") && text.contains("quarantined:"),
        "{text}"
    );
    assert_eq!(run("--verify").0, Some(0));
    let store = FileStore::open(FileStoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.len(), 299);
}
