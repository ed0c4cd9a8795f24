//! `spangate run`: the operator in a cluster. The same listeners as standalone mode
//! (OTLP, OFREP, probes with `/metrics`), rollouts from the API server through the
//! [`KubeStore`], and the published flag set written to a ConfigMap.
//!
//! Every replica serves OFREP. Until it leads, a replica serves the flags as the
//! rollouts' status says (the leader keeps the status); with the lease, it runs the
//! kube-rs controller, judges spans and writes status, events and the ConfigMap.
//! A replica that loses the lease exits, so it can never act on a stale view.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::FeatureRollout;
use crate::controller::kube::{self as kube_controller, Context};
use crate::controller::lease::{LeaderElector, LeaseConfig};
use crate::controller::{Entry, Publisher, Reconciler, SegmentCatalog, flagset};
use crate::flags::FlagSet;
use crate::net::ServerStats;
use crate::serve::{PublishedFlags, Readiness};
use crate::server::{BoundAddrs, Listeners, ServeConfig, Served, ingestor, metrics_registry};
use crate::store::{KubeStore, list_segments};

/// What `spangate run` is told.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub serve: ServeConfig,
    /// Namespace of the lease and the flag-set ConfigMap [default: the client's].
    pub namespace: Option<String>,
    /// Name of the ConfigMap the flag set is published to.
    pub flags_configmap: String,
    /// `None` runs without leader election (a single replica).
    pub lease: Option<LeaseSettings>,
    /// This replica's name in the lease and in events [default: the host name].
    pub identity: Option<String>,
}

/// Which lease, and how long it holds.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub duration: Duration,
}

/// Runs until `cancel`, or until the lease is lost (an error).
pub async fn run(
    config: RunConfig,
    cancel: CancellationToken,
    on_listening: impl FnOnce(BoundAddrs) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes API to talk to: not in a cluster and no usable KUBECONFIG")?;
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let identity = config.identity.clone().unwrap_or_else(host_name);
    let serve = &config.serve;
    let listeners = Listeners::bind(serve.listen).await?;
    let addrs = listeners.addrs;

    let flags: PublishedFlags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
    let mut tasks = JoinSet::new();
    let ingestor = ingestor(
        serve.forward.clone(),
        serve.ingest_limits,
        &serve.ofrep,
        &flags,
        &mut tasks,
        &cancel,
    );
    let readiness = Readiness::default();
    let (controller, segments) = kube_controller::controller(client.clone());
    let store = KubeStore::new(client.clone(), controller.store(), identity.clone())
        .with_segments(segments);
    // Built now, but only the leader reconciles, so only the leader notifies.
    let reconciler = Reconciler::new(store, ingestor.clone(), flags.clone())
        .with_trace_links(serve.trace_links.clone())
        .with_notifications(&serve.notify, cancel.clone())?;
    let publisher = reconciler.publisher().clone();
    let metrics = reconciler.metrics().clone();
    let stats = Arc::new(ServerStats::default());
    listeners.serve(
        &mut tasks,
        &cancel,
        Served {
            ingestor: ingestor.clone(),
            flags: flags.clone(),
            ofrep: serve.ofrep.clone(),
            readiness: readiness.clone(),
            metrics: Arc::new(metrics_registry(
                &reconciler,
                &ingestor,
                &serve.ofrep,
                &stats,
            )),
            server: serve.server,
            otlp_tokens: serve.otlp_tokens.clone(),
            stats,
        },
    );
    on_listening(addrs)?;
    tracing::info!(
        otlp_grpc = %addrs.otlp_grpc,
        otlp_http = %addrs.otlp_http,
        ofrep = %addrs.ofrep,
        probes = %addrs.probes,
        %namespace,
        %identity,
        "spangate is serving; following the rollouts' status until it leads"
    );

    // Serve flags from status at once, leader or not.
    let following = cancel.child_token();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
    let mirror = tokio::spawn(mirror_status(
        client.clone(),
        publisher.clone(),
        readiness,
        following.clone(),
        listed_tx,
    ));

    let elector = config.lease.as_ref().map(|lease| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig {
                namespace: namespace.clone(),
                name: lease.name.clone(),
                identity: identity.clone(),
                duration: lease.duration,
            },
        )
    });
    // Ready, serving flags from status, before competing for the lease: once it
    // holds the lease, nothing may delay renewing it.
    tokio::select! {
        _ = cancel.cancelled() => return finish(tasks, None, config.serve.server.shutdown_timeout).await,
        _ = listed_rx => {}
    }
    if let Some(elector) = &elector {
        tokio::select! {
            _ = cancel.cancelled() => return finish(tasks, None, config.serve.server.shutdown_timeout).await,
            _ = elector.acquire() => {}
        }
    }
    following.cancel();
    let _ = mirror.await;
    metrics.set_leader(true);
    let ctx = Arc::new(Context::new(reconciler, config.serve.tick));
    let stop = cancel.clone();
    tasks.spawn(async move {
        kube_controller::run(controller, ctx, async move { stop.cancelled().await }).await;
        Ok(())
    });
    let stop = cancel.clone();
    let configmap = config.flags_configmap.clone();
    tasks.spawn(async move {
        flagset::publish(client, &namespace, &configmap, publisher, async move {
            stop.cancelled().await
        })
        .await;
        Ok(())
    });

    let lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let shutdown_timeout = config.serve.server.shutdown_timeout;
    tokio::select! {
        _ = cancel.cancelled() => finish(tasks, elector.as_ref(), shutdown_timeout).await,
        failed = wait_any(&mut tasks) => {
            cancel.cancel();
            Err(failed)
        }
        error = lost => {
            metrics.set_leader(false);
            cancel.cancel();
            Err(error.context("lost the leader lease; exiting so that a restart starts as a follower"))
        }
    }
}

/// Serves the flags of every rollout as its status says, until `stop`; ready (and
/// `listed` told) once the first list of rollouts is in.
async fn mirror_status(
    client: Client,
    publisher: Publisher,
    readiness: Readiness,
    stop: CancellationToken,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let mut tell = Some(listed);
    let (cache, writer) = reflector::store::<FeatureRollout>();
    let api: Api<FeatureRollout> = Api::all(client.clone());
    let mut segments = SegmentCatalog::default();
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::pin!(stream);
    let mut listed = false;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(%error, "watching FeatureRollouts failed; retrying");
                continue;
            }
            Some(Ok(watcher::Event::InitDone)) => listed = true,
            Some(Ok(_)) => {}
        }
        // Until the first list is whole, a missing rollout may just not be listed yet.
        if !listed {
            continue;
        }
        // Targeting is compiled against the segments as they are now; a failed
        // list keeps the last ones.
        match list_segments(&client).await {
            Ok(stored) => segments.update(&stored),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "listing Segments failed"),
        }
        let mut keys = Vec::new();
        for rollout in cache.state() {
            let stored = KubeStore::snapshot(&rollout);
            let flag = stored.spec.as_ref().ok().and_then(|spec| {
                let compiled = segments.compile(&stored.key, spec.clone()).ok()?;
                compiled.flag(&stored.key.to_string(), &stored.status)
            });
            publisher.set(
                &stored.key,
                Entry {
                    phase: stored.status.phase,
                    flag,
                    route: None,
                },
            );
            keys.push(stored.key);
        }
        keys.sort();
        publisher.retain(&keys);
        readiness.set_ready();
        if let Some(tell) = tell.take() {
            // The receiver is gone only when the process is stopping.
            let _ = tell.send(());
        }
    }
}

async fn wait_any(tasks: &mut JoinSet<anyhow::Result<()>>) -> anyhow::Error {
    match tasks.join_next().await {
        Some(Ok(Ok(()))) | None => anyhow::anyhow!("a server stopped unexpectedly"),
        Some(Ok(Err(error))) => error,
        Some(Err(error)) => anyhow::Error::new(error).context("a server task panicked"),
    }
}

/// Stops everything, within `timeout` (what has not finished by then is
/// stopped), and hands the lease over at once.
async fn finish(
    mut tasks: JoinSet<anyhow::Result<()>>,
    elector: Option<&LeaderElector>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let finished = tokio::time::timeout(timeout, async {
        while let Some(done) = tasks.join_next().await {
            done.context("a server task panicked")??;
        }
        anyhow::Ok(())
    })
    .await;
    match finished {
        Ok(result) => result?,
        Err(_) => {
            tracing::warn!(
                tasks = tasks.len(),
                "stopping what did not finish within the shutdown timeout"
            );
            tasks.abort_all();
        }
    }
    if let Some(elector) = elector
        && let Err(error) = elector.release().await
    {
        tracing::warn!(
            error = format!("{error:#}"),
            "could not release the lease; the next leader waits for it to run out"
        );
    }
    Ok(())
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| format!("spangate-{}", std::process::id()))
}
