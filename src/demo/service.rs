//! The demo's synthetic checkout service: many simulated users (spread over
//! accounts) ask for the flag over OFREP, and every request becomes a real OTLP span
//! tagged with the variant it got and the service's commit.
//!
//! The new checkout uses a connection pool sized for a third of the traffic: at a
//! small share it looks fine, and once more than [`SATURATION_SHARE`] of the last
//! second's requests take the new path it turns slow and starts failing — the kind
//! of regression only a progressive rollout catches before everyone is on it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tokio_util::sync::CancellationToken;

use super::{FLAG_KEY, REVISION, SERVICE, Scenario};

/// Share of requests on the new path above which its pool saturates. A share, not a
/// rate, so the story plays out the same on a slow machine.
pub const SATURATION_SHARE: f64 = 0.35;

/// How the synthetic service behaves.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    pub scenario: Scenario,
    pub requests_per_second: u32,
    pub users: u32,
    pub accounts: u32,
}

/// Runs the service until `stop` is cancelled, then flushes its spans.
pub async fn run(
    config: ServiceConfig,
    ofrep: SocketAddr,
    otlp_grpc: SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{otlp_grpc}"))
        .build()?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(32_768)
                .with_max_export_batch_size(512)
                .with_scheduled_delay(Duration::from_millis(100))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name(SERVICE)
                .with_attribute(KeyValue::new("vcs.ref.head.revision", REVISION))
                .with_attribute(KeyValue::new("service.version", "2.4.0"))
                .build(),
        )
        .build();
    let tracer = provider.tracer("spangate-demo");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("http://{ofrep}/ofrep/v1/evaluate/flags/{FLAG_KEY}");

    const TICK: Duration = Duration::from_millis(50);
    let per_tick = (config.requests_per_second as f64 * TICK.as_secs_f64()).ceil() as u32;
    // (when, took the new path) of the last second's requests.
    let mut recent: VecDeque<(Instant, bool)> = VecDeque::new();
    let mut next_user: u32 = 0;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let users: Vec<u32> = (0..per_tick)
            .map(|_| {
                next_user = (next_user + 7_919) % config.users;
                next_user
            })
            .collect();
        let answers = futures::future::join_all(users.iter().map(|&user| {
            let body = serde_json::json!({
                "context": {
                    "targetingKey": format!("user-{user}"),
                    "accountId": format!("acct-{}", user % config.accounts),
                }
            });
            let request = client.post(&url).json(&body).send();
            async move {
                let response = request.await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                let answer: serde_json::Value = response.json().await.ok()?;
                let reason = answer["reason"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_lowercase();
                answer["variant"]
                    .as_str()
                    .map(|v| (user, v.to_string(), reason))
            }
        }))
        .await;

        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            recent.pop_front();
        }
        let answers: Vec<(u32, String, String)> = answers.into_iter().flatten().collect();
        recent.extend(answers.iter().map(|(_, v, _)| (now, v == "on")));
        let on_share =
            recent.iter().filter(|(_, on)| *on).count() as f64 / recent.len().max(1) as f64;
        let saturated = on_share > SATURATION_SHARE;
        for (user, variant, reason) in answers {
            let on_new_path = variant == "on";
            let (latency, failed) = simulate(config.scenario, on_new_path, saturated);
            let end = SystemTime::now();
            let mut span = tracer
                .span_builder("POST /checkout")
                .with_kind(SpanKind::Server)
                .with_start_time(end - latency)
                .with_attributes([
                    KeyValue::new("feature_flag.key", FLAG_KEY),
                    KeyValue::new("feature_flag.result.variant", variant),
                    KeyValue::new("feature_flag.provider.name", "ofrep"),
                    KeyValue::new("feature_flag.result.reason", reason),
                    KeyValue::new("feature_flag.context.id", format!("user-{user}")),
                    // The bucketing value, so the judge counts accounts, not spans.
                    KeyValue::new("accountId", format!("acct-{}", user % config.accounts)),
                    KeyValue::new("http.request.method", "POST"),
                ])
                .start(&tracer);
            if failed {
                span.set_status(Status::error("payment backend timed out"));
            }
            span.end_with_timestamp(end);
        }
    }
    // Flushing blocks on the exporter: keep it off the async threads.
    tokio::task::spawn_blocking(move || provider.shutdown()).await??;
    Ok(())
}

/// Latency and failure of one request.
fn simulate(scenario: Scenario, on_new_path: bool, saturated: bool) -> (Duration, bool) {
    let (median_ms, error_rate) = match (scenario, on_new_path, saturated) {
        (_, false, _) => (40.0, 0.01),
        (Scenario::Healthy, true, _) => (36.0, 0.008),
        (Scenario::Regression, true, false) => (42.0, 0.012),
        (Scenario::Regression, true, true) => (140.0, 0.15),
    };
    let latency_ms = median_ms * (0.35 * standard_normal()).exp();
    (
        Duration::from_secs_f64(latency_ms / 1_000.0),
        rand::random::<f64>() < error_rate,
    )
}

/// Box–Muller: one standard normal draw.
fn standard_normal() -> f64 {
    let u1: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rand::random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
