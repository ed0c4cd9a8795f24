//! `kubectl spangate`: the kubectl plugin. Every command acts through the
//! FeatureRollout resource — `spec.paused`, or an annotation the controller acts on
//! and removes — never behind the controller's back, so the rollout's status and
//! events stay the one account of what happened.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::get::{OutputFormat, render};
use crate::api::{
    ABORT_ANNOTATION, ExemplarReason, FeatureRollout, PROMOTE_ANNOTATION, Phase, VariantEvidence,
    Verdict,
};
use crate::store::{KubeStore, StoredRollout};

/// Exit code of `status` when the rollout ended rolled back.
pub const EXIT_ROLLED_BACK: u8 = 3;
/// Exit code of `status` when the rollout's spec is invalid.
pub const EXIT_INVALID: u8 = 4;

/// Watch and steer spangate FeatureRollouts.
///
/// Reads KUBECONFIG (or ~/.kube/config) like kubectl. pause and resume set
/// spec.paused; promote and abort leave a request annotation that the controller
/// carries out (and records as an event) on its next visit.
#[derive(Parser)]
#[command(name = "kubectl-spangate", bin_name = "kubectl spangate", version)]
pub struct Plugin {
    /// Namespace [default: the kubeconfig context's].
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List rollouts (or one) with phase, step, weight and verdict.
    Get {
        name: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Keep printing as the rollouts change.
        #[arg(short, long)]
        watch: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Live view of one rollout — step, weight, spans and verdict per variant —
    /// until it ends. Exits 0 when promoted, 3 when rolled back, 4 when invalid.
    Status {
        name: String,
        /// Print the current state once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Hold the rollout at its current step (sets spec.paused).
    Pause { name: String },
    /// Go on from where it was paused; the step's dwell starts again.
    Resume { name: String },
    /// Skip the remaining steps: every user gets the rollout variant.
    Promote { name: String },
    /// Roll back now: every user gets the default variant again.
    Abort { name: String },
}

/// Runs the plugin; the exit code says how it went.
pub async fn run(plugin: Plugin, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let client = Client::try_default()
        .await
        .context("cannot reach a cluster: set KUBECONFIG or a current context")?;
    let namespace = plugin
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<FeatureRollout> = Api::namespaced(client.clone(), &namespace);
    match plugin.command {
        PluginCommand::Get {
            name,
            all_namespaces,
            watch,
            output,
        } => {
            let api = if all_namespaces {
                Api::all(client)
            } else {
                api
            };
            get(&api, name.as_deref(), watch, output, out).await
        }
        PluginCommand::Status { name, once } => status(&api, &name, once, out).await,
        PluginCommand::Pause { name } => {
            set_paused(&api, &name, true).await?;
            writeln!(out, "featurerollout.spangate.dev/{name} paused")?;
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Resume { name } => {
            set_paused(&api, &name, false).await?;
            writeln!(out, "featurerollout.spangate.dev/{name} resumed")?;
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Promote { name } => {
            request(&api, &name, PROMOTE_ANNOTATION).await?;
            writeln!(
                out,
                "featurerollout.spangate.dev/{name} promotion requested; the controller carries it out"
            )?;
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Abort { name } => {
            request(&api, &name, ABORT_ANNOTATION).await?;
            writeln!(
                out,
                "featurerollout.spangate.dev/{name} abort requested; the controller rolls it back"
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn fetch(api: &Api<FeatureRollout>, name: &str) -> anyhow::Result<FeatureRollout> {
    api.get_opt(name)
        .await?
        .with_context(|| format!("featurerollout {name:?} not found"))
}

async fn set_paused(api: &Api<FeatureRollout>, name: &str, paused: bool) -> anyhow::Result<()> {
    fetch(api, name).await?;
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": paused}})),
    )
    .await
    .with_context(|| format!("setting spec.paused of {name}"))?;
    Ok(())
}

async fn request(api: &Api<FeatureRollout>, name: &str, annotation: &str) -> anyhow::Result<()> {
    fetch(api, name).await?;
    let patch = json!({"metadata": {"annotations": {annotation: Timestamp::now().to_string()}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("annotating {name} with {annotation}"))?;
    Ok(())
}

fn stored(rollouts: &[FeatureRollout]) -> Vec<StoredRollout> {
    let mut stored: Vec<StoredRollout> = rollouts.iter().map(KubeStore::snapshot).collect();
    stored.sort_by(|a, b| a.key.cmp(&b.key));
    stored
}

async fn get(
    api: &Api<FeatureRollout>,
    name: Option<&str>,
    watch: bool,
    output: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let rollouts = match name {
        Some(name) => vec![fetch(api, name).await?],
        None => api.list(&ListParams::default()).await?.items,
    };
    write!(
        out,
        "{}",
        render(&stored(&rollouts), output, name.is_some(), Timestamp::now())
    )?;
    out.flush()?;
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    let config = match name {
        Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    let stream = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects();
    tokio::pin!(stream);
    let mut last = None;
    while let Some(rollout) = stream.next().await {
        let rollout = rollout?;
        let line = render(
            &stored(std::slice::from_ref(&rollout)),
            output,
            true,
            Timestamp::now(),
        );
        // Without the header: one line per change, as `kubectl get -w` prints.
        let line = match output {
            OutputFormat::Table | OutputFormat::Wide => {
                line.lines().nth(1).unwrap_or_default().to_string() + "\n"
            }
            OutputFormat::Json | OutputFormat::Yaml => line,
        };
        if last.as_ref() != Some(&line) {
            write!(out, "{line}")?;
            out.flush()?;
            last = Some(line);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(
    api: &Api<FeatureRollout>,
    name: &str,
    once: bool,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let rollout = fetch(api, name).await?;
    let mut last = view(&rollout);
    write!(out, "{last}")?;
    out.flush()?;
    if let Some(code) = ended(&rollout) {
        return Ok(code);
    }
    if once {
        return Ok(ExitCode::SUCCESS);
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects();
    tokio::pin!(stream);
    while let Some(rollout) = stream.next().await {
        let rollout = rollout?;
        let text = view(&rollout);
        if text != last {
            write!(out, "{text}")?;
            out.flush()?;
            last = text;
        }
        if let Some(code) = ended(&rollout) {
            return Ok(code);
        }
    }
    anyhow::bail!("the watch on {name} ended")
}

/// The exit code once a rollout has ended; `None` while it goes on.
fn ended(rollout: &FeatureRollout) -> Option<ExitCode> {
    // Only a status of the current spec counts: an edit may have just restarted it.
    let status = rollout.status.as_ref()?;
    if status.observed_generation != rollout.metadata.generation {
        return None;
    }
    match status.phase {
        Phase::Promoted => Some(ExitCode::SUCCESS),
        Phase::RolledBack => Some(ExitCode::from(EXIT_ROLLED_BACK)),
        Phase::Invalid => Some(ExitCode::from(EXIT_INVALID)),
        // Nothing is rolled out: the flag is served as it is.
        Phase::Serving => Some(ExitCode::SUCCESS),
        Phase::Pending | Phase::Progressing | Phase::Paused => None,
    }
}

/// One rollout's state in a few lines: where it stands, the evidence of its last
/// verdict per variant, and the controller's message.
pub fn view(rollout: &FeatureRollout) -> String {
    let status = rollout.status.clone().unwrap_or_default();
    let steps = rollout.spec.steps.len();
    let step = status
        .current_step
        .map_or("-".to_string(), |s| format!("{}/{steps}", s + 1));
    let mut text = format!(
        "{}/{}  {}  step {step}  weight {}%  verdict {}\n",
        rollout.namespace().unwrap_or_default(),
        rollout.name_any(),
        status.phase,
        status.weight,
        status.verdict.map_or("-".to_string(), |v| v.to_string()),
    );
    if let Some(record) = &status.last_verdict {
        for (role, evidence) in [
            ("default", &record.verdict.baseline),
            ("rollout", &record.verdict.candidate),
        ] {
            text.push_str(&format!("  {role:<8} {}\n", evidence_line(evidence)));
        }
        for (label, trace) in exemplar_traces(&record.verdict) {
            text.push_str(&format!("  {label}  {trace}\n"));
        }
    }
    if let Some(url) = &status.trace_url {
        text.push_str(&format!("  rollout trace  {url}\n"));
    }
    if let Some(message) = &status.message {
        text.push_str(&format!("  {message}\n"));
    }
    text
}

/// The verdict's first failing span and its slowest one, each as its link into the
/// trace backend when the operator writes links, else as its trace ID.
fn exemplar_traces(verdict: &Verdict) -> Vec<(&'static str, &str)> {
    let pick = |why| {
        verdict
            .exemplar_spans
            .iter()
            .find(|exemplar| exemplar.why == why)
            .map(|exemplar| exemplar.trace_url.as_deref().unwrap_or(&exemplar.trace_id))
    };
    // Statuses written before exemplar spans were kept name failing traces only.
    let failed = pick(ExemplarReason::Error)
        .or_else(|| verdict.exemplar_trace_ids.first().map(String::as_str));
    [
        ("failed trace ", failed),
        ("slowest trace", pick(ExemplarReason::Slowest)),
    ]
    .into_iter()
    .filter_map(|(label, trace)| Some((label, trace?)))
    .collect()
}

fn evidence_line(e: &VariantEvidence) -> String {
    let rate = e
        .error_rate
        .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
    let quantile = |q: Option<f64>| q.map_or("-".to_string(), |v| format!("{v:.0}ms"));
    format!(
        "{:<8} {:>6} spans  err {rate:>6}  p50 {:>6}  p99 {:>6}",
        e.variant,
        e.samples,
        quantile(e.latency_ms.p50),
        quantile(e.latency_ms.p99),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolled_back(exemplar_spans: serde_json::Value) -> FeatureRollout {
        serde_json::from_value(json!({
            "apiVersion": "spangate.dev/v1alpha1", "kind": "FeatureRollout",
            "metadata": {"name": "checkout", "namespace": "shop", "generation": 1},
            "spec": {"flag": {"key": "new-checkout", "variants": {"off": false, "on": true},
                              "defaultVariant": "off", "rolloutVariant": "on"},
                     "service": "checkout", "steps": [5, 50, 100],
                     "analysis": {"maxErrorRate": 0.05}},
            "status": {"phase": "RolledBack", "observedGeneration": 1, "currentStep": 1,
                       "verdict": "Fail",
                       "lastVerdict": {"at": "2026-12-01T10:00:00Z", "step": 1, "weight": 50.0,
                                       "outcome": "Fail", "message": "too many errors",
                                       "baseline": {"variant": "off", "samples": 400, "errors": 2},
                                       "candidate": {"variant": "on", "samples": 300, "errors": 40},
                                       "exemplarTraceIds": ["aa".repeat(16)],
                                       "exemplarSpans": exemplar_spans}}
        }))
        .unwrap()
    }

    #[test]
    fn status_shows_the_failing_and_slowest_traces_as_links_when_status_has_them() {
        let (failing, slowest) = ("aa".repeat(16), "bb".repeat(16));
        let text = view(&rolled_back(json!([
            {"traceId": failing, "spanId": "a1".repeat(8), "why": "Error",
             "traceUrl": format!("http://jaeger/trace/{failing}")},
            {"traceId": slowest, "spanId": "b2".repeat(8), "why": "Slowest",
             "traceUrl": format!("http://jaeger/trace/{slowest}")},
        ])));
        assert!(
            text.contains(&format!("failed trace   http://jaeger/trace/{failing}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("slowest trace  http://jaeger/trace/{slowest}\n")),
            "{text}"
        );
        // Without links, the IDs to search for.
        let text = view(&rolled_back(json!([
            {"traceId": slowest, "spanId": "b2".repeat(8), "why": "Slowest"},
        ])));
        assert!(
            text.contains(&format!("failed trace   {failing}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("slowest trace  {slowest}\n")),
            "{text}"
        );
    }
}
