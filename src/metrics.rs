//! Counters and gauges through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, off by default).
//!
//! The crate records; the application chooses where the numbers go, by installing any
//! `metrics` recorder (a Prometheus exporter, StatsD, a test recorder) before starting clients
//! or servers. Without the feature every call below compiles to nothing; with it and no
//! recorder installed, each is a no-op lookup.
//!
//! **Client** (label `client` = the client name). Each running client samples what it already
//! counts ([`GetStats`](crate::client::GetStats),
//! [`GetSubscriptionStats`](crate::client::GetSubscriptionStats)) every
//! [`CLIENT_SAMPLE_INTERVAL`] and publishes it: counters as absolute values (they only grow),
//! gauges as the current value. Sampling keeps the publish path free of metric calls and the
//! figures exactly those the client reports itself; the cost is that a counter can be up to
//! one interval behind.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `actix_amps_client_published_total` | counter | writes stored (publish, delta_publish, sow_delete) |
//! | `actix_amps_client_persisted_total` | counter | writes acknowledged as persisted |
//! | `actix_amps_client_failed_total` | counter | writes reported failed (this process's and predecessors') |
//! | `actix_amps_client_unacknowledged` | gauge | writes in the store, not acknowledged yet (the publish lag) |
//! | `actix_amps_client_reconnects_total` | counter | logons after the first |
//! | `actix_amps_client_deliveries_total` | counter | subscription messages handed to subscribers |
//! | `actix_amps_client_deliveries_queued` | gauge | deliveries waiting for their subscribers (the subscription lag) |
//!
//! **Embedded server** (no labels), counted where each event happens:
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `actix_amps_server_writes_total` | counter | writes accepted into the transaction log |
//! | `actix_amps_server_refused_total` | counter | writes refused with a failure ack |
//! | `actix_amps_server_durable_lsn` | counter | the log position known durable (fsynced per the policy) |
//! | `actix_amps_server_deliveries_total` | counter | delivery frames queued for subscribers (one per connection and write) |
//!
//! `durable_lsn` is a log position (it continues across restarts; writes, refusals and
//! bookkeeping records each take one), so its rate is the rate of durable records.

use std::time::Duration;

/// How often a client publishes its counters.
pub const CLIENT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The metric names (stable; listed with their meaning in the module docs).
pub mod names {
    /// Writes stored by the client.
    pub const CLIENT_PUBLISHED: &str = "actix_amps_client_published_total";
    /// Writes acknowledged as persisted.
    pub const CLIENT_PERSISTED: &str = "actix_amps_client_persisted_total";
    /// Writes reported failed.
    pub const CLIENT_FAILED: &str = "actix_amps_client_failed_total";
    /// Writes not yet acknowledged (gauge).
    pub const CLIENT_UNACKNOWLEDGED: &str = "actix_amps_client_unacknowledged";
    /// Logons after the first.
    pub const CLIENT_RECONNECTS: &str = "actix_amps_client_reconnects_total";
    /// Subscription messages delivered.
    pub const CLIENT_DELIVERIES: &str = "actix_amps_client_deliveries_total";
    /// Deliveries waiting for their subscribers (gauge).
    pub const CLIENT_DELIVERIES_QUEUED: &str = "actix_amps_client_deliveries_queued";
    /// Writes the server accepted into its log.
    pub const SERVER_WRITES: &str = "actix_amps_server_writes_total";
    /// Writes the server refused.
    pub const SERVER_REFUSED: &str = "actix_amps_server_refused_total";
    /// The server's durable log position.
    pub const SERVER_DURABLE_LSN: &str = "actix_amps_server_durable_lsn";
    /// Delivery frames the server queued.
    pub const SERVER_DELIVERIES: &str = "actix_amps_server_deliveries_total";
}

/// The embedded server's events: one call where each happens.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) mod server {
    /// A write was accepted into the log.
    #[inline]
    pub(crate) fn write_accepted() {
        #[cfg(feature = "metrics")]
        metrics::counter!(super::names::SERVER_WRITES).increment(1);
    }

    /// A write was refused.
    #[inline]
    pub(crate) fn write_refused() {
        #[cfg(feature = "metrics")]
        metrics::counter!(super::names::SERVER_REFUSED).increment(1);
    }

    /// The log is durable up to `lsn` (a group commit).
    #[inline]
    pub(crate) fn durable(lsn: u64) {
        #[cfg(feature = "metrics")]
        metrics::counter!(super::names::SERVER_DURABLE_LSN).absolute(lsn);
        #[cfg(not(feature = "metrics"))]
        let _ = lsn;
    }

    /// A delivery frame was queued for a connection.
    #[inline]
    pub(crate) fn delivered() {
        #[cfg(feature = "metrics")]
        metrics::counter!(super::names::SERVER_DELIVERIES).increment(1);
    }
}

/// Starts publishing `client`'s counters under `client_name` (module docs); stops with it.
pub(crate) fn watch_client(client: &actix::Addr<crate::client::ClientActor>, client_name: &str) {
    #[cfg(feature = "metrics")]
    sampler::start(client.clone(), client_name.to_owned());
    #[cfg(not(feature = "metrics"))]
    let _ = (client, client_name);
}

#[cfg(feature = "metrics")]
mod sampler {
    use actix::prelude::*;
    use actix::WeakAddr;

    use super::names::*;
    use crate::client::{
        ClientActor, ClientStats, GetStats, GetSubscriptionStats, SubscriptionStats,
    };

    /// Samples one client every interval; stops when the client has stopped. A weak address:
    /// the sampler never keeps a client alive.
    struct Sampler {
        client: WeakAddr<ClientActor>,
        name: String,
    }

    impl Actor for Sampler {
        type Context = Context<Self>;

        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.run_interval(super::CLIENT_SAMPLE_INTERVAL, |this, ctx| {
                let Some(client) = this.client.upgrade().filter(Addr::connected) else {
                    ctx.stop();
                    return;
                };
                let stats = client.send(GetStats);
                let subs = client.send(GetSubscriptionStats);
                let name = this.name.clone();
                ctx.spawn(
                    async move {
                        if let Ok(Ok(s)) = stats.await {
                            record(&name, &s);
                        }
                        if let Ok(s) = subs.await {
                            record_subscriptions(&name, &s);
                        }
                    }
                    .into_actor(this),
                );
            });
        }
    }

    fn record(name: &str, s: &ClientStats) {
        let label = [("client", name.to_owned())];
        metrics::counter!(CLIENT_PUBLISHED, &label).absolute(s.published);
        metrics::counter!(CLIENT_PERSISTED, &label).absolute(s.persisted);
        metrics::counter!(CLIENT_FAILED, &label).absolute(s.failed + s.predecessor_failed);
        metrics::counter!(CLIENT_RECONNECTS, &label).absolute(s.reconnects);
        metrics::gauge!(CLIENT_UNACKNOWLEDGED, &label).set(s.unacknowledged as f64);
    }

    fn record_subscriptions(name: &str, s: &SubscriptionStats) {
        let label = [("client", name.to_owned())];
        metrics::counter!(CLIENT_DELIVERIES, &label).absolute(s.delivered);
        metrics::gauge!(CLIENT_DELIVERIES_QUEUED, &label).set(s.queued as f64);
    }

    pub(super) fn start(client: Addr<ClientActor>, name: String) {
        Sampler {
            client: client.downgrade(),
            name,
        }
        .start();
    }
}
