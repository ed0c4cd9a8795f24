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
use crate::ingest::{self, IngestLimits, Ingestor};
use crate::serve::{self, OfrepConfig, PublishedFlags, Readiness};
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
        let grpc = bind(config.otlp_grpc_addr, "OTLP gRPC", "--otlp-grpc-addr").await?;
        let http = bind(config.otlp_http_addr, "OTLP/HTTP", "--otlp-http-addr").await?;
        let ofrep = bind(config.ofrep_addr, "OFREP", "--ofrep-addr").await?;
        let probes = bind(config.probe_addr, "probes", "--probe-addr").await?;
        let addrs = BoundAddrs {
            otlp_grpc: grpc.local_addr()?,
            otlp_http: http.local_addr()?,
            ofrep: ofrep.local_addr()?,
            probes: probes.local_addr()?,
        };

        let ingestor = Arc::new(Ingestor::default());
        let flags: PublishedFlags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
        let readiness = Readiness::default();
        let store = FileStore::new(&config.dir, config.state_dir.clone());
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let stop = cancel.clone();
        tasks.spawn(ingest::serve_grpc(
            grpc,
            ingestor.clone(),
            config.ingest_limits,
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(ingest::serve_http(
            http,
            ingestor.clone(),
            config.ingest_limits,
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(serve::serve(
            ofrep,
            serve::ofrep_router(flags.clone(), config.ofrep.clone()),
            async move { stop.cancelled().await },
        ));
        let stop = cancel.clone();
        tasks.spawn(serve::serve(
            probes,
            serve::health_router(readiness.clone()),
            async move { stop.cancelled().await },
        ));

        let mut controller = Controller::new(store.clone(), ingestor.clone(), flags.clone());
        if let Some(path) = &config.flags_file {
            controller = controller.with_flags_file(FlagdFile::open(path)?);
        }
        let stop = cancel.clone();
        tasks.spawn(async move {
            controller::run(
                controller,
                config.tick,
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
