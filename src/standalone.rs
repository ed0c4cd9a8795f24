//! Standalone mode: the whole operator in one process over a folder of rollout
//! files, with no cluster. Binds the OTLP receivers, OFREP and the probes, and runs
//! the controller with a [`FileStore`]. The demo runs it in-process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::controller::{self, Controller, PassReport};
use crate::flags::FlagSet;
use crate::ingest::Ingestor;
use crate::net::ServerStats;
use crate::serve::{PublishedFlags, Readiness};
use crate::server::{BoundAddrs, Listeners, ServeConfig, Served, ingestor, metrics_registry};
use crate::store::{FileStore, FlagdFile};
use crate::telemetry::metrics::{Registry, Sampled};

/// What standalone reads, and how it serves.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    pub dir: PathBuf,
    pub state_dir: Option<PathBuf>,
    /// A flagd flag-definition file served beside the rollouts.
    pub flags_file: Option<PathBuf>,
    /// Largest rollout file read; larger ones are Invalid.
    pub max_rollout_file_bytes: u64,
    pub serve: ServeConfig,
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

/// Every family of `/metrics`, with the rollout folder's.
fn registry_with_store(mut registry: Registry, store: &FileStore) -> Arc<Registry> {
    let store = store.clone();
    Sampled::counter(
        "store_files_read",
        "Rollout files read from the folder (a file is read again only when it changed)",
        move || store.files_read(),
    )
    .register(&mut registry);
    Arc::new(registry)
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
        let serve = &config.serve;
        let listeners = Listeners::bind(serve.listen).await?;
        let addrs = listeners.addrs;

        let flags: PublishedFlags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
        let readiness = Readiness::default();
        let store = FileStore::new(&config.dir, config.state_dir.clone())
            .with_max_file_bytes(config.max_rollout_file_bytes);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let ingestor = ingestor(
            serve.forward.clone(),
            serve.ingest_limits,
            &serve.ofrep,
            &flags,
            &mut tasks,
            &cancel,
        );

        let mut controller = Controller::new(store.clone(), ingestor.clone(), flags.clone())
            .with_readiness(readiness.clone())
            .with_trace_links(serve.trace_links.clone())
            .with_notifications(&serve.notify, cancel.clone())?;
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
                ofrep: serve.ofrep.clone(),
                readiness: readiness.clone(),
                metrics: registry_with_store(
                    metrics_registry(controller.reconciler(), &ingestor, &serve.ofrep, &stats),
                    &store,
                ),
                server: serve.server,
                otlp_tokens: serve.otlp_tokens.clone(),
                stats,
            },
        );
        let (tick, shutdown_timeout) = (serve.tick, serve.server.shutdown_timeout);
        let stop = cancel.clone();
        tasks.spawn(async move {
            controller::run(
                controller,
                tick,
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
            shutdown_timeout,
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
