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
use crate::ingest::{self, ForwardConfig, IngestLimits, Ingestor};
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
            limits,
            flags,
            ofrep,
            readiness,
            metrics,
        } = what;
        let stop = cancel.clone();
        tasks.spawn(ingest::serve_grpc(
            self.grpc,
            ingestor.clone(),
            limits,
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(ingest::serve_http(
            self.http,
            ingestor,
            limits,
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(serve::serve(
            self.ofrep,
            serve::ofrep_router(flags, ofrep),
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(serve::serve(
            self.probes,
            serve::health_router(readiness).merge(serve::metrics_router(metrics)),
            async move { stop.cancelled().await },
        ));
    }
}

/// What the listeners serve.
pub struct Served {
    pub ingestor: Arc<Ingestor>,
    pub limits: IngestLimits,
    pub flags: PublishedFlags,
    /// How OFREP is served (private attributes, access, limits).
    pub ofrep: OfrepConfig,
    pub readiness: Readiness,
    pub metrics: RenderMetrics,
}

/// The ingestor every receiver feeds. With `forward`, it also hands each batch to a
/// forwarding task (spawned into `tasks`), which hides the operator's private
/// attributes and those of every flag served at the time of each export.
pub fn ingestor(
    forward: Option<ForwardConfig>,
    ofrep: &OfrepConfig,
    flags: &PublishedFlags,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
) -> Arc<Ingestor> {
    let Some(forward) = forward else {
        return Arc::new(Ingestor::new());
    };
    let operator_private = ofrep.private_attributes.clone();
    let flags = flags.clone();
    let (forwarder, worker) = ingest::forwarder(
        forward,
        Box::new(move || operator_private.union(flags.load().private_attributes())),
    );
    tasks.spawn(worker.run(cancel.clone()));
    Arc::new(Ingestor::forwarding(forwarder))
}

/// The `/metrics` exposition of a reconciler and an ingestor.
pub fn render_metrics<S: crate::store::RolloutStore>(
    reconciler: &controller::Reconciler<S>,
    ingestor: &Arc<Ingestor>,
) -> RenderMetrics {
    let metrics = reconciler.metrics().clone();
    let publisher = reconciler.publisher().clone();
    let ingestor = ingestor.clone();
    Arc::new(move || metrics.render(&publisher.phases(), &ingestor.stats()))
}

impl Standalone {
    /// Binds every listener, then starts serving and reconciling. `on_pass` sees
    /// every controller pass.
    pub async fn start(
        config: StandaloneConfig,
        mut on_pass: impl FnMut(&PassReport) + Send + 'static,
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
        let store = FileStore::new(&config.dir, config.state_dir.clone());
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let ingestor = ingestor(
            config.forward.clone(),
            &config.ofrep,
            &flags,
            &mut tasks,
            &cancel,
        );

        let mut controller = Controller::new(store.clone(), ingestor.clone(), flags.clone());
        if let Some(path) = &config.flags_file {
            controller = controller.with_flags_file(FlagdFile::open(path)?);
        }
        controller.reconciler().metrics().set_leader(true);
        listeners.serve(
            &mut tasks,
            &cancel,
            Served {
                ingestor: ingestor.clone(),
                limits: config.ingest_limits,
                flags: flags.clone(),
                ofrep: config.ofrep.clone(),
                readiness: readiness.clone(),
                metrics: render_metrics(controller.reconciler(), &ingestor),
            },
        );
        let stop = cancel.clone();
        tasks.spawn(async move {
            controller::run(
                controller,
                config.tick,
                jiff::Timestamp::now,
                move |report| {
                    readiness.set_ready();
                    on_pass(report);
                },
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
        })
    }

    /// Waits until a component fails (its error is returned) or shutdown is asked.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok(Ok(())) if self.cancel.is_cancelled() => continue,
                Ok(Ok(())) => anyhow::bail!("a server stopped unexpectedly"),
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(e).context("a server task panicked"),
            }
        }
        Ok(())
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
