//! `spangate demo`: a whole rollout in one command, with no cluster. Starts the
//! standalone operator in-process on loopback, writes a rollout for the synthetic
//! [`service`], lets the service ask for the flag over OFREP and send real OTLP
//! spans, and shows the steps go up — and, in the regression scenario, the
//! automatic rollback with its evidence.

pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{
    CheckOutcome, ExemplarReason, FeatureRolloutSpec, FeatureRolloutStatus, Phase, VariantEvidence,
};
use crate::controller::PassReport;
use crate::ingest::IngestLimits;
use crate::server::{ListenAddrs, ServeConfig};
use crate::standalone::{Standalone, StandaloneConfig};
use crate::store::RolloutKey;

pub const FLAG_KEY: &str = "new-checkout";
pub const SERVICE: &str = "checkout";
pub const REVISION: &str = "3f2c1a9";
const ROLLOUT_NAME: &str = "new-checkout";

/// What the new variant does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The new checkout saturates under load: fine at 5% and 25%, failing and slow at 50%.
    Regression,
    /// The new checkout is as good as the old one: promoted to 100%.
    Healthy,
}

impl Scenario {
    /// The phase the demo must end in to have behaved as it says.
    pub fn expected_phase(self) -> Phase {
        match self {
            Scenario::Regression => Phase::RolledBack,
            Scenario::Healthy => Phase::Promoted,
        }
    }
}

/// Options of `spangate demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub scenario: Scenario,
    pub requests_per_second: u32,
    /// Folder for the rollout file and its state; a temporary one when `None`.
    pub dir: Option<PathBuf>,
    /// Give up after this long.
    pub deadline: Duration,
    /// Where spangate forwards the synthetic service's spans, tagged, when the
    /// demo's traces are exported.
    pub forward: Option<crate::ingest::ForwardConfig>,
    /// Links into the trace backend, for the failing and slowest requests.
    pub trace_links: Option<crate::controller::TraceLinks>,
}

/// How the demo ended.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub status: FeatureRolloutStatus,
    pub expected: Phase,
}

impl DemoOutcome {
    pub fn behaved(&self) -> bool {
        self.status.phase == self.expected
    }
}

/// The rollout the demo applies.
pub fn rollout_yaml() -> String {
    format!(
        r#"# Written by `spangate demo`.
apiVersion: spangate.dev/v1alpha1
kind: FeatureRollout
metadata:
  name: {ROLLOUT_NAME}
  namespace: default
spec:
  flag:
    key: {FLAG_KEY}
    variants: {{"off": false, "on": true}}
    defaultVariant: "off"
    rolloutVariant: "on"
  bucketBy: accountId
  service: {SERVICE}
  revision: {REVISION}
  steps: [5, 25, 50, 100]
  stepDuration: 5s
  analysis:
    minSamples: 300
    maxErrorRate: 0.05
    maxErrorRateIncrease: 0.03
    maxLatencyMs: {{p99: 300}}
    maxLatencyIncrease: 0.5
"#
    )
}

/// Runs the demo, printing progress to `out`.
pub async fn run(
    options: DemoOptions,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<DemoOutcome> {
    let temp;
    let dir = match &options.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let path = dir.join(format!("{ROLLOUT_NAME}.yaml"));
    std::fs::write(&path, rollout_yaml()).with_context(|| format!("writing {}", path.display()))?;
    let spec: FeatureRolloutSpec = {
        let doc: serde_norway::Value = serde_norway::from_str(&rollout_yaml())?;
        serde_norway::from_value(doc["spec"].clone())?
    };

    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let latest: Arc<Mutex<Option<PassReport>>> = Arc::default();
    let changed = Arc::new(Notify::new());
    let standalone = Standalone::start(
        StandaloneConfig {
            dir: dir.clone(),
            state_dir: None,
            flags_file: None,
            max_rollout_file_bytes: crate::store::DEFAULT_MAX_FILE_BYTES,
            serve: ServeConfig {
                listen: ListenAddrs {
                    otlp_grpc: loopback(0),
                    otlp_http: loopback(0),
                    ofrep: loopback(0),
                    probes: loopback(0),
                },
                tick: Duration::from_millis(250),
                ingest_limits: IngestLimits::default(),
                ofrep: crate::serve::OfrepConfig::default(),
                forward: options.forward.clone(),
                server: crate::net::ServerLimits::default(),
                otlp_tokens: crate::net::Tokens::default(),
                trace_links: options.trace_links.clone(),
                notify: Default::default(),
            },
        },
        {
            let (latest, changed) = (latest.clone(), changed.clone());
            move |report| {
                *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
                changed.notify_one();
            }
        },
    )
    .await?;
    let key = RolloutKey::new("default", ROLLOUT_NAME);

    writeln!(out, "spangate demo — scenario: {:?}", options.scenario)?;
    writeln!(out, "  rollout file   {}", path.display())?;
    writeln!(
        out,
        "  listening      OTLP gRPC {}  OTLP/HTTP {}  OFREP {}",
        standalone.addrs.otlp_grpc, standalone.addrs.otlp_http, standalone.addrs.ofrep
    )?;
    writeln!(
        out,
        "  service        {SERVICE}@{REVISION}: {} requests/s from {} users in {} accounts, flag {FLAG_KEY} bucketed by accountId",
        options.requests_per_second, 4_000, 300
    )?;
    let steps: Vec<String> = spec.steps.iter().map(|s| format!("{s}%")).collect();
    writeln!(
        out,
        "  steps          {}, each after at least {} and a passing analysis",
        steps.join(" → "),
        spec.step_duration
    )?;
    writeln!(out)?;

    let stop_service = CancellationToken::new();
    let service = tokio::spawn(service::run(
        service::ServiceConfig {
            scenario: options.scenario,
            requests_per_second: options.requests_per_second,
            users: 4_000,
            accounts: 300,
        },
        standalone.addrs.ofrep,
        standalone.addrs.otlp_grpc,
        stop_service.clone(),
    ));

    let started = Instant::now();
    let mut shown_history = 0;
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let final_status = loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let status = latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|r| {
                r.rollouts
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, s)| s.clone())
            });
        let Some(status) = status else { continue };
        for t in status.history.iter().skip(shown_history) {
            writeln!(out, "  ▶ {:<12} {}", t.reason, t.message)?;
        }
        shown_history = status.history.len();
        if status.phase.is_terminal() {
            break status;
        }
        if last_line.elapsed() >= Duration::from_secs(1)
            && let Some(record) = &status.last_verdict
        {
            writeln!(
                out,
                "{}",
                progress_line(started.elapsed(), &spec, &status, &record.verdict)
            )?;
            last_line = Instant::now();
        }
        if started.elapsed() > options.deadline {
            writeln!(
                out,
                "  the demo did not finish within {:?}",
                options.deadline
            )?;
            break status;
        }
    };
    stop_service.cancel();
    service.await.context("the synthetic service panicked")??;
    standalone.shutdown().await?;

    writeln!(out)?;
    print_evidence(out, &final_status)?;
    let outcome = DemoOutcome {
        status: final_status,
        expected: options.scenario.expected_phase(),
    };
    writeln!(out)?;
    if outcome.behaved() {
        writeln!(
            out,
            "✔ the rollout ended {} after {:.0?}, as the {:?} scenario should.",
            outcome.status.phase,
            started.elapsed(),
            options.scenario
        )?;
    } else {
        writeln!(
            out,
            "✘ the rollout ended {}, but the {:?} scenario should end {}.",
            outcome.status.phase, options.scenario, outcome.expected
        )?;
    }
    if options.dir.is_some() {
        writeln!(
            out,
            "  inspect it with: spangate get --dir {} -o yaml",
            dir.display()
        )?;
    }
    if let Some(forward) = &options.forward {
        print_jaeger_guide(out, &forward.endpoint, &outcome.status)?;
    }
    Ok(outcome)
}

/// What to search for in the tracing backend the demo exported to.
fn print_jaeger_guide(
    out: &mut (dyn std::io::Write + Send),
    endpoint: &str,
    status: &FeatureRolloutStatus,
) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "  traces sent to {endpoint}; in Jaeger search for")?;
    writeln!(
        out,
        "    service spangate, operation decision      every transition, with the evidence in its tags"
    )?;
    writeln!(
        out,
        "    service {SERVICE}, tag feature_flag.result.variant=on    the new variant's requests"
    )?;
    if let Some(record) = &status.last_verdict {
        for id in &record.verdict.exemplar_trace_ids {
            writeln!(
                out,
                "    trace {id}    a failing request of the new variant"
            )?;
        }
    }
    Ok(())
}

fn arm_text(e: &VariantEvidence) -> String {
    let ms = |v: Option<f64>| v.map_or("    -".to_string(), |v| format!("{v:>4.0}ms"));
    format!(
        "{:<3} {:>6} spans  err {:>5}  p50 {}  p99 {}",
        e.variant,
        e.samples,
        e.error_rate
            .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0)),
        ms(e.latency_ms.p50),
        ms(e.latency_ms.p99),
    )
}

fn progress_line(
    elapsed: Duration,
    spec: &FeatureRolloutSpec,
    status: &FeatureRolloutStatus,
    live: &crate::api::Verdict,
) -> String {
    let step = status.current_step.map_or("-".to_string(), |s| {
        format!("{}/{}", s + 1, spec.steps.len())
    });
    format!(
        "  {:>4.0}s  step {step} {:>3}%  │ {} │ {} │ {}",
        elapsed.as_secs_f64(),
        status.weight,
        arm_text(&live.baseline),
        arm_text(&live.candidate),
        live.outcome,
    )
}

fn print_evidence(
    out: &mut (dyn std::io::Write + Send),
    status: &FeatureRolloutStatus,
) -> std::io::Result<()> {
    let Some(record) = &status.last_verdict else {
        return writeln!(out, "no verdict was reached");
    };
    let v = &record.verdict;
    writeln!(
        out,
        "Last verdict at step {} ({}%): {} — {}",
        record.step + 1,
        record.weight,
        v.outcome,
        v.message
    )?;
    if !v.failed_checks.is_empty() {
        writeln!(out, "  failed checks   {}", v.failed_checks.join(", "))?;
    }
    for check in &v.checks {
        let mark = match check.outcome {
            CheckOutcome::Fail => "✘",
            CheckOutcome::Pass => "✔",
            CheckOutcome::Inconclusive => "…",
        };
        writeln!(out, "  {mark} {}", check.message)?;
    }
    writeln!(out, "  baseline        {}", arm_text(&v.baseline))?;
    writeln!(out, "  candidate       {}", arm_text(&v.candidate))?;
    if v.outcome == crate::api::VerdictOutcome::Fail {
        let linked = v.exemplar_spans.iter().any(|e| e.trace_url.is_some());
        if linked {
            // Each failing trace once (a failing request may fail in several
            // spans), then the slowest request.
            let mut shown: Vec<&str> = Vec::new();
            for exemplar in &v.exemplar_spans {
                let Some(url) = &exemplar.trace_url else {
                    continue;
                };
                let label = match exemplar.why {
                    ExemplarReason::Error if shown.contains(&exemplar.trace_id.as_str()) => {
                        continue;
                    }
                    ExemplarReason::Error => "failed trace ",
                    ExemplarReason::Slowest => "slowest trace",
                };
                shown.push(&exemplar.trace_id);
                writeln!(out, "  {label}   {url}")?;
            }
        } else {
            for id in &v.exemplar_trace_ids {
                writeln!(out, "  failed trace    {id}  (search it in Jaeger)")?;
            }
        }
    }
    Ok(())
}
