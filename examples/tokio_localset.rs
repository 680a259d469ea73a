//! Using the client from a plain tokio runtime, without `actix::main`.
//!
//! actix actors run on the current thread, so they need a `tokio::task::LocalSet` (or an actix
//! `System`). Everything else is the same as in an actix application: start the client, send it
//! messages, await the answers.
//!
//! ```text
//! cargo run --example tokio_localset              # embedded server
//! AMPS_URI=tcp://host:9007/amps/json cargo run --example tokio_localset
//! ```

use std::time::Duration;

use actix_amps::client::{ClientConfig, GetStats, Publish, PublishFlush};
use actix_amps::server::{Server, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (uri, _server) = match std::env::var("AMPS_URI") {
        Ok(uri) => (uri, None),
        Err(_) => {
            let server = Server::start(ServerConfig::new(dir.path()))?;
            (server.uri(), Some(server))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let client = ClientConfig::new("localset-publisher").uri(&uri)?.start()?;
        for i in 0..100 {
            client
                .send(Publish::new("ticks", format!(r#"{{"i":{i}}}"#)))
                .await??;
        }
        client
            .send(PublishFlush {
                timeout: Duration::from_secs(10),
            })
            .await??;
        let stats = client.send(GetStats).await??;
        println!(
            "published={} persisted={}",
            stats.published, stats.persisted
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
