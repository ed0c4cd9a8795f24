//! Standalone mode: the whole operator in one process over a folder of rollout
//! files, with no cluster. Binds the OTLP receivers, OFREP and the probes, and runs
//! the controller with a [`FileStore`]. The demo runs it in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::controller::{self, Controller, PassReport};
use crate::flags::FlagSet;
use crate::ingest::{self, ForwardConfig, IngestLimits, Ingestor, ReceiverOptions};
use crate::net::{self, Protocols, ServerLimits, ServerStats, Tokens};
use crate::serve::{self, OfrepConfig, PublishedFlags, Readiness, RenderMetrics};
use crate::store::{FileStore, FlagdFile};

/// Where standalone listens and what it reads.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    pub dir: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub ofrep_addr: SocketAddr,
    pub probe_addr: SocketAddr,
    /// Longest time between two reconcile passes.
    pub tick: Duration,
    pub ingest_limits: IngestLimits,
    /// Private attributes and the other settings of the OFREP endpoints.
    pub ofrep: OfrepConfig,
    /// A flagd flag-definition file served beside the rollouts.
    pub flags_file: Option<PathBuf>,
    /// Where received spans go on to, if anywhere.
    pub forward: Option<ForwardConfig>,
    /// Connection limits and timeouts of every listener, and the shutdown timeout.
    pub server: ServerLimits,
    /// Tokens the OTLP receivers require; empty: none.
    pub otlp_tokens: Tokens,
    /// Largest rollout file read; larger ones are Invalid.
    pub max_rollout_file_bytes: u64,
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

/// A running standalone operator.
pub struct Standalone {
    pub addrs: BoundAddrs,
    pub ingestor: Arc<Ingestor>,
    pub flags: PublishedFlags,
    pub store: FileStore,
    cancel: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown_timeout: Duration,
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for {what} on {addr}; is another spangate running? choose another address with {flag}")
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
    pub async fn bind(addrs: ListenAddrs) -> anyhow::Result<Self> {
        let grpc = bind(addrs.otlp_grpc, "OTLP gRPC", "--otlp-grpc-addr").await?;
        let http = bind(addrs.otlp_http, "OTLP/HTTP", "--otlp-http-addr").await?;
        let ofrep = bind(addrs.ofrep, "OFREP", "--ofrep-addr").await?;
        let probes = bind(addrs.probes, "probes and metrics", "--probe-addr").await?;
        let addrs = BoundAddrs {
            otlp_grpc: grpc.local_addr()?,
            otlp_http: http.local_addr()?,
            ofrep: ofrep.local_addr()?,
            probes: probes.local_addr()?,
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
    pub metrics: RenderMetrics,
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
    let Some(forward) = forward else {
        return Arc::new(Ingestor::with_limits(limits, None));
    };
    let operator_private = ofrep.private_attributes.clone();
    let flags = flags.clone();
    let (forwarder, worker) = ingest::forwarder(
        forward,
        Box::new(move || operator_private.union(flags.load().private_attributes())),
    );
    tasks.spawn(worker.run(cancel.clone()));
    Arc::new(Ingestor::with_limits(limits, Some(forwarder)))
}

/// The `/metrics` exposition of a reconciler, an ingestor, OFREP and the listeners.
pub fn render_metrics<S: crate::store::RolloutStore>(
    reconciler: &controller::Reconciler<S>,
    ingestor: &Arc<Ingestor>,
    ofrep: &OfrepConfig,
    server: &Arc<ServerStats>,
) -> RenderMetrics {
    let metrics = reconciler.metrics().clone();
    let publisher = reconciler.publisher().clone();
    let (ingestor, ofrep, server) = (ingestor.clone(), ofrep.stats.clone(), server.clone());
    Arc::new(move || {
        let stats = ingestor.stats();
        let mut out = metrics.render(&publisher.phases(), &stats);
        stats.render_limits(&mut out);
        ofrep.render(&mut out);
        server.render(&mut out);
        crate::telemetry::write_family(
            &mut out,
            "spangate_log_warnings_suppressed_total",
            "counter",
            "Repeated warnings not written (at most one line per kind every 10 s), by event.",
            ingestor
                .suppressed_warnings()
                .into_iter()
                .chain(server.suppressed_warnings())
                .map(|(event, n)| (format!("{{event=\"{event}\"}}"), n)),
        );
        out
    })
}

/// `metrics` and the rollout folder's counters.
fn with_store_metrics(metrics: RenderMetrics, store: &FileStore) -> RenderMetrics {
    let store = store.clone();
    Arc::new(move || {
        let mut out = metrics();
        crate::telemetry::write_family(
            &mut out,
            "spangate_rollout_files_read_total",
            "counter",
            "Rollout files read from the folder (a file is read again only when it changed).",
            [("", store.files_read())],
        );
        out
    })
}

/// Waits for every task; a task that ends before `cancel` is an error.
async fn finish_tasks(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) if cancel.is_cancelled() => continue,
            Ok(Ok(())) => anyhow::bail!("a server stopped unexpectedly"),
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_cancelled() => continue,
            Err(e) => return Err(e).context("a server task panicked"),
        }
    }
    Ok(())
}

impl Standalone {
    /// Binds every listener, then starts serving and reconciling. `on_pass` sees
    /// every controller pass.
    pub async fn start(
        config: StandaloneConfig,
        on_pass: impl FnMut(&PassReport) + Send + 'static,
    ) -> anyhow::Result<Self> {
        if !config.dir.is_dir() {
            anyhow::bail!(
                "rollout folder {} does not exist or is not a folder",
                config.dir.display()
            );
        }
        let listeners = Listeners::bind(ListenAddrs {
            otlp_grpc: config.otlp_grpc_addr,
            otlp_http: config.otlp_http_addr,
            ofrep: config.ofrep_addr,
            probes: config.probe_addr,
        })
        .await?;
        let addrs = listeners.addrs;

        let flags: PublishedFlags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
        let readiness = Readiness::default();
        let store = FileStore::new(&config.dir, config.state_dir.clone())
            .with_max_file_bytes(config.max_rollout_file_bytes);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let ingestor = ingestor(
            config.forward.clone(),
            config.ingest_limits,
            &config.ofrep,
            &flags,
            &mut tasks,
            &cancel,
        );

        let mut controller = Controller::new(store.clone(), ingestor.clone(), flags.clone())
            .with_readiness(readiness.clone());
        if let Some(path) = &config.flags_file {
            controller = controller.with_flags_file(FlagdFile::open(path)?);
        }
        controller.reconciler().metrics().set_leader(true);
        let stats = Arc::new(ServerStats::default());
        listeners.serve(
            &mut tasks,
            &cancel,
            Served {
                ingestor: ingestor.clone(),
                flags: flags.clone(),
                ofrep: config.ofrep.clone(),
                readiness: readiness.clone(),
                metrics: with_store_metrics(
                    render_metrics(controller.reconciler(), &ingestor, &config.ofrep, &stats),
                    &store,
                ),
                server: config.server,
                otlp_tokens: config.otlp_tokens.clone(),
                stats,
            },
        );
        let stop = cancel.clone();
        tasks.spawn(async move {
            controller::run(
                controller,
                config.tick,
                jiff::Timestamp::now,
                on_pass,
                async move { stop.cancelled().await },
            )
            .await;
            Ok(())
        });

        Ok(Self {
            addrs,
            ingestor,
            flags,
            store,
            cancel,
            tasks,
            shutdown_timeout: config.server.shutdown_timeout,
        })
    }

    /// Waits until a component fails (its error is returned) or shutdown is asked;
    /// then gives everything the shutdown timeout to finish, and stops what has not.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let cancel = self.cancel.clone();
        tokio::select! {
            result = finish_tasks(&mut self.tasks, &cancel) => return result,
            () = cancel.cancelled() => {}
        }
        let finished = tokio::time::timeout(
            self.shutdown_timeout,
            finish_tasks(&mut self.tasks, &cancel),
        )
        .await;
        finished.unwrap_or_else(|_| {
            tracing::warn!(
                tasks = self.tasks.len(),
                "stopping what did not finish within the shutdown timeout"
            );
            self.tasks.abort_all();
            Ok(())
        })
    }

    /// A handle that stops everything when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops everything and waits for it to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.wait().await
    }
}
