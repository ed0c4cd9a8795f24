//! Leader election with a coordination.k8s.io Lease: of several replicas, the one
//! holding the lease reconciles. The holder renews it every third of its duration;
//! when the holder dies, another takes it once it has gone unrenewed for the whole
//! duration. Every write carries the resource version it read, so two candidates
//! can never both win the same lease.

use std::time::Duration;

use anyhow::Context as _;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

/// Who competes for which lease, and for how long a lease holds.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This process (the pod name in a cluster); must differ between replicas.
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    /// Renewed this often: three tries before it would run out.
    fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// One candidate for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) {
        let mut logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                    return;
                }
                Ok(false) if !logged => {
                    tracing::info!(lease = %self.config.name, "another replica leads; waiting for its lease to run out");
                    logged = true;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "could not read or take the lease"
                ),
            }
            tokio::time::sleep(self.config.renew_every()).await;
        }
    }

    /// Renews the lease until it is lost (another replica took it, or it could not
    /// be renewed before running out); returns why.
    pub async fn hold(&self) -> anyhow::Error {
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => return anyhow::anyhow!("another replica took the lease"),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "could not renew the lease");
                    // Give up before it runs out: another replica may take it then.
                    if renewed.elapsed() + self.config.renew_every() >= self.config.duration {
                        return error.context("the lease ran out before it could be renewed");
                    }
                }
            }
        }
    }

    /// Gives the lease up, so another replica takes over at once.
    pub async fn release(&self) -> anyhow::Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .context("releasing the lease")?;
        Ok(())
    }

    /// Takes the lease when it is free or ran out, renews it when it is ours.
    /// `Ok(false)` when another replica holds it (or won the race for it).
    pub async fn try_acquire_or_renew(&self) -> anyhow::Result<bool> {
        let now = Timestamp::now();
        let duration_seconds =
            i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .context("reading the lease")?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return written(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        if !mine && !lapsed(spec, now) {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration_seconds);
        written(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )
    }
}

/// Whether nobody holds `spec` now: no holder, or not renewed within its duration.
fn lapsed(spec: &LeaseSpec, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    holder.is_empty() || renewed.0 + SignedDuration::from_secs(i64::from(seconds)) < now
}

/// A write that lost a race (409 Conflict) means someone else holds the lease.
fn written(result: Result<Lease, kube::Error>) -> anyhow::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error).context("writing the lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        holder: Option<&str>,
        renewed_secs_ago: i64,
        duration: i32,
        now: Timestamp,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_lapses_when_unrenewed_for_its_duration_or_without_holder() {
        let now: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
        assert!(!lapsed(&spec(Some("a"), 5, 15, now), now));
        assert!(!lapsed(&spec(Some("a"), 15, 15, now), now));
        assert!(lapsed(&spec(Some("a"), 16, 15, now), now));
        assert!(lapsed(&spec(None, 0, 15, now), now));
        assert!(lapsed(&spec(Some(""), 0, 15, now), now));
        assert!(lapsed(&LeaseSpec::default(), now));
    }
}
