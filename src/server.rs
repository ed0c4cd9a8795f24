//! What `standalone` and `run` serve alike: the OTLP receivers, OFREP and the
//! probes with `/metrics`, bound before anything starts, and the ingestor they
//! feed. Each mode adds its store and controller loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::analysis::{Route, Routes, Window, WindowEpoch};
use crate::controller::{self, SpanWindows};
use crate::ingest::{self, ForwardConfig, IngestLimits, Ingestor, ReceiverOptions};
use crate::net::{self, Protocols, ServerLimits, ServerStats, Tokens};
use crate::serve::{self, OfrepConfig, PublishedFlags, Readiness};
use crate::telemetry::metrics::{self, Registry, Sampled};

/// How both run modes serve: where, with which limits and access, how often the
/// controller looks, and where spans go on to.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: ListenAddrs,
    /// Longest time between two reconcile passes (in a cluster: between two looks
    /// for new spans).
    pub tick: Duration,
    pub ingest_limits: IngestLimits,
    /// Private attributes, access and limits of the OFREP endpoints.
    pub ofrep: OfrepConfig,
    /// Where received spans go on to, if anywhere.
    pub forward: Option<ForwardConfig>,
    /// Connection limits and timeouts of every listener, and the shutdown timeout.
    pub server: ServerLimits,
    /// Tokens the OTLP receivers require; empty: none.
    pub otlp_tokens: Tokens,
    /// Links into the trace backend, written into status and events.
    pub trace_links: Option<crate::controller::TraceLinks>,
    /// Webhooks every rollout event is POSTed to (by the leader).
    pub notify: crate::controller::notify::NotifyConfig,
}

/// The addresses actually bound (they differ from the config when it asked for port 0).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundAddrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub ofrep: SocketAddr,
    pub probes: SocketAddr,
}

/// One of the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    OtlpGrpc,
    OtlpHttp,
    Ofrep,
    Probes,
}

impl Listener {
    /// What it serves, for messages.
    pub fn serves(self) -> &'static str {
        match self {
            Listener::OtlpGrpc => "OTLP gRPC",
            Listener::OtlpHttp => "OTLP/HTTP",
            Listener::Ofrep => "OFREP",
            Listener::Probes => "probes and metrics",
        }
    }
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {} on {addr}; is another spangate running?", listener.serves())]
pub struct BindError {
    pub listener: Listener,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

async fn bind(addr: SocketAddr, listener: Listener) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        listener,
        addr,
        source,
    })
}

/// Where the servers listen, as asked.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub ofrep: SocketAddr,
    pub probes: SocketAddr,
}

/// Every listener, bound.
pub struct Listeners {
    grpc: TcpListener,
    http: TcpListener,
    ofrep: TcpListener,
    probes: TcpListener,
    pub addrs: BoundAddrs,
}

impl Listeners {
    /// Binds them all before anything starts, so a taken port fails at once.
    pub async fn bind(addrs: ListenAddrs) -> Result<Self, BindError> {
        let grpc = bind(addrs.otlp_grpc, Listener::OtlpGrpc).await?;
        let http = bind(addrs.otlp_http, Listener::OtlpHttp).await?;
        let ofrep = bind(addrs.ofrep, Listener::Ofrep).await?;
        let probes = bind(addrs.probes, Listener::Probes).await?;
        let local =
            |listener: &TcpListener, asked: SocketAddr| listener.local_addr().unwrap_or(asked);
        let addrs = BoundAddrs {
            otlp_grpc: local(&grpc, addrs.otlp_grpc),
            otlp_http: local(&http, addrs.otlp_http),
            ofrep: local(&ofrep, addrs.ofrep),
            probes: local(&probes, addrs.probes),
        };
        Ok(Self {
            grpc,
            http,
            ofrep,
            probes,
            addrs,
        })
    }

    /// Serves OTLP into the ingestor, OFREP from the flags, and the probes with
    /// `/metrics` on their own port, until `cancel`.
    pub fn serve(
        self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        cancel: &CancellationToken,
        what: Served,
    ) {
        let Served {
            ingestor,
            flags,
            ofrep,
            readiness,
            metrics,
            server,
            otlp_tokens,
            stats,
        } = what;
        let server = server.fitted_to_open_files();
        let receiving = |stats: &Arc<net::ListenerStats>| ReceiverOptions {
            tokens: otlp_tokens.clone(),
            server,
            stats: stats.clone(),
        };
        let stop = cancel.clone();
        tasks.spawn(ingest::serve_grpc(
            self.grpc,
            ingestor.clone(),
            receiving(&stats.otlp_grpc),
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(ingest::serve_http(
            self.http,
            ingestor,
            receiving(&stats.otlp_http),
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(net::serve(
            self.ofrep,
            Protocols::Http1And2,
            server.ofrep_max_connections,
            serve::ofrep_router(flags, ofrep),
            server,
            stats.ofrep.clone(),
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(net::serve(
            self.probes,
            Protocols::Http1And2,
            server.probe_max_connections,
            serve::health_router(readiness).merge(serve::metrics_router(metrics)),
            server,
            stats.probes.clone(),
            async move { stop.cancelled().await },
        ));
    }
}

/// What the listeners serve.
pub struct Served {
    pub ingestor: Arc<Ingestor>,
    pub flags: PublishedFlags,
    /// How OFREP is served (private attributes, access, limits).
    pub ofrep: OfrepConfig,
    pub readiness: Readiness,
    /// What `GET /metrics` shows.
    pub metrics: Arc<Registry>,
    /// Connection limits and timeouts, fitted to the open-files limit when served.
    pub server: ServerLimits,
    pub otlp_tokens: Tokens,
    pub stats: Arc<ServerStats>,
}

/// The ingestor every receiver feeds. With `forward`, it also hands each batch to a
/// forwarding task (spawned into `tasks`), which hides the operator's private
/// attributes and those of every flag served at the time of each export.
pub fn ingestor(
    forward: Option<ForwardConfig>,
    limits: IngestLimits,
    ofrep: &OfrepConfig,
    flags: &PublishedFlags,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
) -> Arc<Ingestor> {
    let ingestor = match forward {
        None => Arc::new(Ingestor::with_limits(limits, None)),
        Some(forward) => {
            let operator_private = ofrep.private_attributes.clone();
            let flags = flags.clone();
            let (forwarder, worker) = ingest::forwarder(
                forward,
                Box::new(move || operator_private.union(flags.load().private_attributes())),
            );
            tasks.spawn(worker.run(cancel.clone()));
            Arc::new(Ingestor::with_limits(limits, Some(forwarder)))
        }
    };
    tasks.spawn(let_due_traces_go(ingestor.clone(), cancel.clone()));
    ingestor
}

/// Every second, lets go of what the trace join and the forward hold keep past
/// their window, so held spans are judged and forwarded with no traffic and no
/// rollout in progress (nothing else asks then).
async fn let_due_traces_go(
    ingestor: Arc<Ingestor>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => ingestor.let_due_traces_go(),
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

/// Ingest keeps the windows the controller judges.
impl SpanWindows for Ingestor {
    fn window(&self, rollout: &str, epoch: WindowEpoch) -> Window {
        Ingestor::window(self, rollout, epoch)
    }

    fn downstream_windows(&self, rollout: &str, epoch: WindowEpoch) -> Vec<(String, Window)> {
        Ingestor::downstream_windows(self, rollout, epoch)
    }

    fn set_routes(&self, routes: Vec<Route>) {
        Ingestor::set_routes(self, Routes::new(routes));
    }

    fn samples_recorded(&self) -> u64 {
        Ingestor::samples_recorded(self)
    }
}

/// Every family of `/metrics` of a reconciler, an ingestor, OFREP and the
/// listeners, in one registry; a run mode adds its store's before serving it.
pub fn metrics_registry<S: crate::store::RolloutStore>(
    reconciler: &controller::Reconciler<S>,
    ingestor: &Arc<Ingestor>,
    ofrep: &OfrepConfig,
    server: &Arc<ServerStats>,
) -> Registry {
    let mut registry = metrics::registry();
    reconciler.metrics().register(&mut registry);
    let publisher = reconciler.publisher().clone();
    Sampled::gauge_by(
        "controller_rollouts",
        "Rollouts by phase",
        "phase",
        move || {
            publisher
                .phases()
                .into_iter()
                .map(|(phase, n)| (phase.to_string(), n as u64))
                .collect()
        },
    )
    .register(&mut registry);
    ingestor.register_metrics(&mut registry);
    ofrep.stats.register_metrics(&mut registry);
    server.register_metrics(&mut registry);
    let (ingestor, server) = (ingestor.clone(), server.clone());
    Sampled::counter_by(
        "log_warnings_suppressed",
        "Repeated warnings not written (at most one line per kind every 10 s), by event",
        "event",
        move || {
            ingestor
                .suppressed_warnings()
                .into_iter()
                .chain(server.suppressed_warnings())
                .collect()
        },
    )
    .register(&mut registry);
    registry
}
