//! The published flag set as a ConfigMap in flagd's flag-definition format, so
//! flagd sidecars and flagd's in-process providers evaluate exactly what OFREP
//! serves. Rewritten (server-side apply) whenever the flag set changes.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::Publisher;
use crate::flags::flagd;
use crate::store::FIELD_MANAGER;

/// The ConfigMap key that holds the flag set (a flagd flag source file).
pub const FLAGS_KEY: &str = "flags.flagd.json";

/// Writes the flag set to ConfigMap `namespace/name` now and after every change,
/// until `shutdown` resolves. A failed write is retried with backoff.
pub async fn publish(
    client: Client,
    namespace: &str,
    name: &str,
    publisher: Publisher,
    shutdown: impl Future<Output = ()>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let mut changes = publisher.subscribe();
    tokio::pin!(shutdown);
    let mut retry = Duration::from_millis(500);
    loop {
        changes.mark_unchanged();
        match write(&api, name, &publisher).await {
            Ok(()) => {
                retry = Duration::from_millis(500);
                tokio::select! {
                    _ = &mut shutdown => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
            Err(error) => {
                tracing::warn!(
                    configmap = name,
                    error = format!("{error:#}"),
                    "could not publish the flag set; retrying"
                );
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn write(api: &Api<ConfigMap>, name: &str, publisher: &Publisher) -> anyhow::Result<()> {
    let set = publisher.flags().load_full();
    let export = flagd::flag_set(set.iter().map(|flag| flag.as_ref()));
    for skipped in &export.skipped {
        tracing::warn!(configmap = name, "{skipped}");
    }
    let text = serde_json::to_string_pretty(&export.document)?;
    let configmap = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "spangate"},
        },
        "data": {FLAGS_KEY: text},
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&configmap),
    )
    .await
    .with_context(|| format!("applying ConfigMap {name}"))?;
    tracing::debug!(
        configmap = name,
        flags = set.len(),
        "published the flag set"
    );
    Ok(())
}
