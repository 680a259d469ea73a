//! `actix-amps serve`: run the embedded server until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix_amps::server::{
    txlog, FsyncPolicy, Server, ServerConfig, DEFAULT_FRAME_TIMEOUT, DEFAULT_LOGON_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_LOGON_FRAME,
    DEFAULT_MAX_PENDING_LOGONS, DEFAULT_MAX_UNSENT_BYTES,
};
use clap::Args;

/// What the embedded server answers, printed in `serve --help` and at start-up.
pub const SUPPORTED: &str = "\
Commands served: logon, publish (p), delta_publish, sow_delete (filter, sow_keys, data), flush, \
heartbeat, subscribe, delta_subscribe, sow, sow_and_subscribe, sow_and_delta_subscribe, \
unsubscribe (one id, a list, all). Subscriptions: regex topics, content filters, oof, \
no_empties, replace, timestamp, bookmark replay (0, 0|1|, <hash>|<seq>|, lists, timestamps). \
Queries: filter, top_n, orderby, batch_size, stats. Not served: queues, views, joins, \
aggregation, conflation, pause/resume, historical SOW queries, replication (see README).";

/// Arguments of `serve`.
#[derive(Args, Debug)]
#[command(after_help = SUPPORTED)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9007")]
    listen: SocketAddr,
    /// Data directory (transaction log and lock file).
    #[arg(long = "data")]
    data: PathBuf,
    /// Refuse writes to topics matching this regex (`not entitled`); repeatable.
    #[arg(long = "deny-write", value_name = "REGEX")]
    deny_write: Vec<String>,
    /// Refuse subscriptions and queries on topics matching this regex (`not entitled`), and
    /// never deliver messages on them; repeatable.
    #[arg(long = "deny-read", value_name = "REGEX")]
    deny_read: Vec<String>,
    /// Declare a SOW topic: `TOPIC_REGEX=/key[,/key2]`; repeatable.
    #[arg(long = "sow", value_name = "TOPIC_REGEX=/key[,/key2]")]
    sow: Vec<String>,
    /// Require logons as NAME with PASSWORD; repeatable. None means no authentication.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    user: Vec<String>,
    /// Default interval between conflated persisted acks, in milliseconds.
    #[arg(long = "ack-conflation", value_name = "MS", default_value_t = 5)]
    ack_conflation: u64,
    /// When to fsync the transaction log: `batch` (every group commit) or `never`.
    #[arg(long, default_value = "batch")]
    fsync: FsyncPolicy,
    /// Largest accepted message body in bytes.
    #[arg(long = "max-message-size", value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Most connections open at once; more are closed as soon as they are accepted.
    #[arg(long = "max-connections", value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Most unsent output bytes per connection; a client that stops reading is disconnected.
    #[arg(long = "max-unsent-bytes", value_name = "BYTES", default_value_t = DEFAULT_MAX_UNSENT_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_unsent_bytes: usize,
    /// Milliseconds a new connection has to deliver its logon before it is closed.
    #[arg(long = "logon-timeout", value_name = "MS", default_value_t = DEFAULT_LOGON_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    logon_timeout: u64,
    /// Largest frame accepted before logon, in bytes.
    #[arg(long = "max-logon-frame", value_name = "BYTES", default_value_t = DEFAULT_MAX_LOGON_FRAME,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..))]
    max_logon_frame: usize,
    /// Most connections waiting to log on; one more closes the oldest of them.
    #[arg(long = "max-pending-logons", value_name = "N", default_value_t = DEFAULT_MAX_PENDING_LOGONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_pending_logons: usize,
    /// Milliseconds a begun frame may take to arrive before the connection is closed.
    #[arg(long = "frame-timeout", value_name = "MS", default_value_t = DEFAULT_FRAME_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    frame_timeout: u64,
    /// Server-wide budget for buffered input and output; past it the largest consumers are
    /// disconnected.
    #[arg(long = "max-buffered-bytes", value_name = "BYTES", default_value_t = DEFAULT_MAX_BUFFERED_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_buffered_bytes: usize,
    /// Serve TLS only (tcps://) with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Before starting, repair a damaged transaction log: move the damaged bytes to
    /// DATA/quarantine/, keep every intact record, and print what was lost.
    #[arg(long)]
    repair: bool,
    /// Finish a transaction log segment (start a new file) once it holds this many bytes
    /// (e.g. 64MiB; at least 4 KiB).
    #[arg(long = "log-segment-bytes", value_name = "BYTES", default_value = "64MiB",
          value_parser = txlog::parse_bytes)]
    log_segment_bytes: u64,
    /// How much finished log history to keep: BYTES (e.g. 512MiB), an age (e.g. 7d, 12h) or
    /// `all`. Segments still needed (by the snapshots or a reader) are kept regardless.
    #[arg(long, value_name = "BYTES|DURATION|all", default_value = "1GiB")]
    retain: txlog::Retention,
    /// Write a snapshot of the SOW and the last sequences each time this many bytes were
    /// logged (start-up replays at most about this much of the log).
    #[arg(long = "snapshot-every", value_name = "BYTES", default_value = "256MiB",
          value_parser = txlog::parse_bytes)]
    snapshot_every: u64,
    /// Bound the SOW's memory: writes that would grow it past BYTES fail (`sow store full`).
    #[arg(long = "max-sow-bytes", value_name = "BYTES", value_parser = txlog::parse_bytes)]
    max_sow_bytes: Option<u64>,
}

/// Frees large buffers back to the system. glibc raises its mmap threshold each time a large
/// block is freed, so later blocks of that size come from its arenas and stay resident after
/// they are freed: under a stream of large (hostile) frames the process's RSS grew to about
/// three times the server's buffer budget (measured by `tests/hostile_clients.rs`). A fixed
/// threshold keeps every block of 256 KiB or more in its own mapping, returned when freed.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tuning; it is called once, before the server
        // (or any other thread of this process) allocates.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
        if ok != 1 {
            tracing::warn!("could not set the allocator's mmap threshold");
        }
    }
}

/// Runs the server until a termination signal, then stops it cleanly.
pub fn run(args: ServeArgs) -> Result<(), String> {
    super::init_logging();
    return_large_buffers_to_the_system();
    let mut config = ServerConfig::new(&args.data)
        .listen(args.listen)
        .ack_conflation(Duration::from_millis(args.ack_conflation))
        .fsync(args.fsync)
        .max_connections(args.max_connections)
        .max_unsent_bytes(args.max_unsent_bytes)
        .logon_timeout(Duration::from_millis(args.logon_timeout))
        .max_logon_frame(args.max_logon_frame)
        .max_pending_logons(args.max_pending_logons)
        .frame_timeout(Duration::from_millis(args.frame_timeout))
        .max_buffered_bytes(args.max_buffered_bytes)
        .log_segment_bytes(args.log_segment_bytes)
        .retain(args.retain)
        .snapshot_every(args.snapshot_every);
    if let Some(max) = args.max_sow_bytes {
        config = config.max_sow_bytes(usize::try_from(max).unwrap_or(usize::MAX));
    }
    for re in &args.deny_write {
        config = config.deny_write(re);
    }
    for re in &args.deny_read {
        config = config.deny_read(re);
    }
    for spec in &args.sow {
        let (topic, keys) = spec
            .split_once('=')
            .ok_or_else(|| format!("--sow {spec:?}: expected TOPIC_REGEX=/key[,/key2]"))?;
        let keys: Vec<&str> = keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if topic.is_empty() || keys.is_empty() {
            return Err(format!("--sow {spec:?}: expected TOPIC_REGEX=/key[,/key2]"));
        }
        config = config.sow(topic, &keys);
    }
    for spec in &args.user {
        let (name, password) = spec
            .split_once(':')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| "--user: expected NAME:PASSWORD".to_string())?;
        config = config.user(name, password);
    }
    if let Some(max) = args.max_message_size {
        config = config.max_message_size(max);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config = config.tls(cert, key);
    }
    if args.repair {
        let report = actix_amps::server::repair(&args.data).map_err(|e| e.to_string())?;
        for snap in &report.snapshots {
            match snap.salvaged {
                None => println!(
                    "repair: damaged snapshot moved to {}; the older snapshot and the log rebuild it, nothing lost",
                    snap.quarantined.display()
                ),
                Some(kept) => println!(
                    "repair: damaged snapshot moved to {}; rewritten from its {kept} intact entries ({} lost: the log before it is no longer retained)",
                    snap.quarantined.display(),
                    snap.check.written.map_or_else(|| "an unknown number".to_owned(), |w| w.saturating_sub(kept).to_string())
                ),
            }
        }
        if report.losses.is_empty() && report.snapshots.is_empty() {
            println!(
                "repair: {}: no damage, nothing changed",
                args.data.display()
            );
        } else if !report.losses.is_empty() {
            println!(
                "repair: {}: {} damaged range(s) quarantined in {}",
                args.data.display(),
                report.losses.len(),
                args.data.join(txlog::QUARANTINE_DIR).display()
            );
            for loss in &report.losses {
                print!("{}", super::journal::loss_text(loss));
            }
        }
    }
    let server = Server::start(config).map_err(|e| e.to_string())?;
    eprintln!(
        "actix-amps: listening on {} ({})",
        server.addr(),
        server.uri()
    );
    eprintln!("actix-amps: {SUPPORTED}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot create the signal runtime: {e}"))?;
    let signal = runtime
        .block_on(wait_for_signal())
        .map_err(|e| format!("signal handling: {e}"))?;
    tracing::info!(signal, "stopping");
    server.stop();
    eprintln!("actix-amps: stopped");
    Ok(())
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM; returns which.
async fn wait_for_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
