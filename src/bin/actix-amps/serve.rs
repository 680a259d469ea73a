//! `actix-amps serve`: run the embedded server until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix_amps::server::{
    FsyncPolicy, Server, ServerConfig, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_UNSENT_BYTES,
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
    /// Serve TLS only (tcps://) with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Runs the server until a termination signal, then stops it cleanly.
pub fn run(args: ServeArgs) -> Result<(), String> {
    super::init_logging();
    let mut config = ServerConfig::new(&args.data)
        .listen(args.listen)
        .ack_conflation(Duration::from_millis(args.ack_conflation))
        .fsync(args.fsync)
        .max_connections(args.max_connections)
        .max_unsent_bytes(args.max_unsent_bytes);
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
