//! Notifications (shell): every rollout event, as a JSON notice POSTed to webhooks
//! (Slack, Mattermost or anything that takes JSON).
//!
//! The reconcile only puts a notice on a bounded queue and never waits: one task
//! drains it, POSTs each notice to every webhook with retries, and counts what was
//! sent, what failed and what the full queue dropped. Only the process that
//! reconciles (the leader) makes notices, so replicas do not repeat them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::api::{CheckOutcome, FeatureRolloutStatus, VerdictOutcome};
use crate::store::RolloutKey;

/// Notices waiting to be sent; more are dropped (and counted) rather than held.
pub const QUEUE_CAPACITY: usize = 256;
/// Tries per notice and webhook, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A webhook that takes longer than this for one request has failed that try.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where notices go.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// Every notice is POSTed to each.
    pub webhooks: Vec<reqwest::Url>,
    /// A PEM file of CA certificates trusted besides the system's (private CAs).
    pub ca_file: Option<PathBuf>,
}

/// A webhook URL as a flag gives it: http or https, with a host.
pub fn parse_webhook(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "a webhook URL is http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a webhook URL needs a host".to_string());
    }
    Ok(url)
}

/// What one rollout event tells a webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// `namespace/name`.
    pub rollout: String,
    pub flag: Option<String>,
    /// The event's reason: Started, StepCompleted, RolledBack, Promoted, ...
    pub event: String,
    /// Normal or Warning, as the Kubernetes event.
    #[serde(rename = "type")]
    pub type_: String,
    pub phase: String,
    pub step: Option<u32>,
    pub weight: f64,
    /// The event's note.
    pub message: String,
    /// The last verdict, when there is one.
    pub verdict: Option<NoticeVerdict>,
    /// Links into the trace backend: the rollout's trace, then the spans the
    /// verdict points at.
    pub trace_urls: Vec<String>,
    /// One line for people: what a Slack or Mattermost incoming webhook shows.
    pub text: String,
}

/// The evidence of the last verdict, in short.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticeVerdict {
    pub outcome: String,
    pub message: String,
    pub failed_checks: Vec<String>,
}

impl Notice {
    /// The notice of event `reason` (with `note`) about rollout `key` of `flag`,
    /// now in `status`.
    pub fn new(
        key: &RolloutKey,
        flag: Option<&str>,
        status: &FeatureRolloutStatus,
        type_: &str,
        reason: &str,
        note: &str,
    ) -> Self {
        let flag = flag.map(str::to_string);
        let verdict = status.last_verdict.as_ref().map(|record| NoticeVerdict {
            outcome: record.verdict.outcome.to_string(),
            message: record.verdict.message.clone(),
            failed_checks: failed_checks(&record.verdict),
        });
        let mut trace_urls: Vec<String> = status.trace_url.iter().cloned().collect();
        if let Some(record) = &status.last_verdict {
            for url in record
                .verdict
                .exemplar_spans
                .iter()
                .filter_map(|e| e.trace_url.as_ref())
            {
                if !trace_urls.contains(url) {
                    trace_urls.push(url.clone());
                }
            }
        }
        let mut notice = Self {
            rollout: key.to_string(),
            flag,
            event: reason.to_string(),
            type_: type_.to_string(),
            phase: status.phase.to_string(),
            step: status.current_step,
            weight: status.weight,
            message: note.to_string(),
            verdict,
            trace_urls,
            text: String::new(),
        };
        notice.text = notice.summary(status.last_verdict.as_ref().map(|r| r.verdict.outcome));
        notice
    }

    /// `spangate: ns/name (flag f) RolledBack: note; verdict Fail: why [failed: a, b]
    /// — phase RolledBack, step 2, weight 5% — trace: URL`.
    fn summary(&self, outcome: Option<VerdictOutcome>) -> String {
        let mut text = format!("spangate: {}", self.rollout);
        if let Some(flag) = &self.flag {
            text += &format!(" (flag {flag})");
        }
        text += &format!(" {}", self.event);
        if !self.message.is_empty() {
            text += &format!(": {}", one_line(&self.message));
        }
        // The verdict is news for a decision it caused, not on every event.
        if let (Some(verdict), Some(VerdictOutcome::Fail)) = (&self.verdict, outcome) {
            text += &format!(
                "; verdict {}: {}",
                verdict.outcome,
                one_line(&verdict.message)
            );
            if !verdict.failed_checks.is_empty() {
                text += &format!(" [failed: {}]", verdict.failed_checks.join(", "));
            }
        }
        text += &format!(" — phase {}", self.phase);
        if let Some(step) = self.step {
            text += &format!(", step {step}");
        }
        text += &format!(", weight {}%", self.weight);
        if !self.trace_urls.is_empty() {
            text += &format!(" — traces: {}", self.trace_urls.join(" "));
        }
        text
    }
}

fn failed_checks(verdict: &crate::api::Verdict) -> Vec<String> {
    if !verdict.failed_checks.is_empty() {
        return verdict.failed_checks.clone();
    }
    verdict
        .checks
        .iter()
        .filter(|c| c.outcome == CheckOutcome::Fail)
        .map(|c| c.name.clone())
        .collect()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How long to wait before try `attempt` (2, 3, ...) of one notice: doubling from
/// 200 ms, at most 10 s.
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(2).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Whether a webhook is failing, so a failure is warned about once per outage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    failing: bool,
}

impl Outage {
    /// A notice failed for good: true when this starts an outage (warn now).
    pub fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.failing, true)
    }

    /// A notice went through: true when this ends an outage (say so).
    pub fn sent(&mut self) -> bool {
        std::mem::replace(&mut self.failing, false)
    }
}

/// Whether a response status is worth another try.
fn retryable(status: hyper::StatusCode) -> bool {
    status.is_server_error()
        || status == hyper::StatusCode::TOO_MANY_REQUESTS
        || status == hyper::StatusCode::REQUEST_TIMEOUT
}

/// Puts notices on the queue; the task [`Notifier::start`] spawned sends them.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Arc<Notice>>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Builds the HTTP client (reading the CA file) and spawns the sender, which
    /// stops when `cancel` is cancelled. None without webhooks.
    pub fn start(
        config: &NotifyConfig,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        if config.webhooks.is_empty() {
            return Ok(None);
        }
        let client = client(config.ca_file.as_deref())?;
        let (queue, received) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(send_all(
            client,
            config.webhooks.clone(),
            received,
            metrics.clone(),
            cancel,
        ));
        Ok(Some(Self { queue, metrics }))
    }

    /// Queues `notice` without waiting; a full queue drops it.
    pub fn notify(&self, notice: Notice) {
        if self.queue.try_send(Arc::new(notice)).is_err() {
            self.metrics.notification_dropped();
        }
    }
}

/// The webhooks' HTTP client.
pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// An HTTP and HTTPS client with rustls: the system's roots, and those of `ca_file`.
pub fn client(ca_file: Option<&std::path::Path>) -> anyhow::Result<Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: a private CA may be all there is.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading the PEM of the CA file {}", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "no PEM certificate in the CA file {}",
            path.display()
        );
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("a certificate of {} is not a CA", path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

async fn send_all(
    client: Client,
    webhooks: Vec<reqwest::Url>,
    mut queue: mpsc::Receiver<Arc<Notice>>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut outages = vec![Outage::default(); webhooks.len()];
    loop {
        let notice = tokio::select! {
            _ = cancel.cancelled() => return,
            notice = queue.recv() => match notice {
                Some(notice) => notice,
                None => return,
            },
        };
        for (url, outage) in webhooks.iter().zip(outages.iter_mut()) {
            let sent = tokio::select! {
                _ = cancel.cancelled() => return,
                sent = send_one(&client, url, &notice) => sent,
            };
            match sent {
                Ok(()) => {
                    metrics.notification_sent();
                    if outage.sent() {
                        tracing::info!(webhook = %redacted(url), "notifications reach the webhook again");
                    }
                }
                Err(error) => {
                    metrics.notification_failed();
                    if outage.failed() {
                        tracing::warn!(
                            webhook = %redacted(url),
                            rollout = %notice.rollout,
                            event = %notice.event,
                            "a notification could not be sent after {MAX_ATTEMPTS} tries: {error:#}; \
                             further failures are counted in spangate_notifications_failed_total until one goes through"
                        );
                    }
                }
            }
        }
    }
}

/// POSTs `notice` to `url`, trying again after a backoff while the failure may pass.
async fn send_one(client: &Client, url: &reqwest::Url, notice: &Notice) -> anyhow::Result<()> {
    let body = bytes::Bytes::from(serde_json::to_vec(notice)?);
    let mut attempt = 1;
    loop {
        let request = hyper::Request::post(url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("spangate/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Full::new(body.clone()))?;
        let error = match tokio::time::timeout(REQUEST_TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return Ok(()),
            Ok(Ok(response)) => {
                let status = response.status();
                let error = anyhow::anyhow!("the webhook answered {status}");
                if !retryable(status) {
                    return Err(error);
                }
                error
            }
            Ok(Err(e)) => anyhow::Error::new(e),
            Err(_) => anyhow::anyhow!("no answer in {REQUEST_TIMEOUT:?}"),
        };
        if attempt >= MAX_ATTEMPTS {
            return Err(error);
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// A webhook's URL without its path and query: Slack's carry the secret there.
fn redacted(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{exposition, registry};

    fn failed_status() -> FeatureRolloutStatus {
        serde_json::from_value(serde_json::json!({
            "phase": "RolledBack",
            "currentStep": 1,
            "weight": 0.0,
            "traceUrl": "https://jaeger/trace/aa",
            "lastVerdict": {
                "at": "2026-12-01T10:00:00Z",
                "step": 1,
                "weight": 5.0,
                "outcome": "Fail",
                "message": "error rate of on is\n4.1% against 0.2%",
                "failedChecks": ["errorRate"],
                "baseline": {"variant": "off", "samples": 900, "errors": 2},
                "candidate": {"variant": "on", "samples": 100, "errors": 4},
                "exemplarSpans": [
                    {"traceId": "bb", "spanId": "01", "why": "Error", "traceUrl": "https://jaeger/trace/bb"},
                    {"traceId": "aa", "spanId": "02", "why": "Slowest", "traceUrl": "https://jaeger/trace/aa"}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_rollback_notice_carries_the_evidence_and_the_links() {
        let notice = Notice::new(
            &RolloutKey::new("shop", "checkout"),
            Some("new-checkout"),
            &failed_status(),
            "Warning",
            "RolledBack",
            "rolled back at step 1",
        );
        let body = serde_json::to_value(&notice).unwrap();
        assert_eq!(body["rollout"], "shop/checkout");
        assert_eq!(body["flag"], "new-checkout");
        assert_eq!(body["event"], "RolledBack");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["phase"], "RolledBack");
        assert_eq!(body["step"], 1);
        assert_eq!(body["verdict"]["outcome"], "Fail");
        assert_eq!(
            body["verdict"]["failedChecks"],
            serde_json::json!(["errorRate"])
        );
        // The rollout's trace first, each link once.
        assert_eq!(
            body["traceUrls"],
            serde_json::json!(["https://jaeger/trace/aa", "https://jaeger/trace/bb"])
        );
        assert_eq!(
            notice.text,
            "spangate: shop/checkout (flag new-checkout) RolledBack: rolled back at step 1; \
             verdict Fail: error rate of on is 4.1% against 0.2% [failed: errorRate] \
             — phase RolledBack, step 1, weight 0% — traces: https://jaeger/trace/aa https://jaeger/trace/bb"
        );
    }

    #[test]
    fn a_started_notice_without_a_verdict_is_one_short_line() {
        let status = FeatureRolloutStatus {
            current_step: Some(0),
            weight: 1.0,
            ..Default::default()
        };
        let notice = Notice::new(
            &RolloutKey::new("default", "a"),
            None,
            &status,
            "Normal",
            "Started",
            "step 0 at 1%",
        );
        assert_eq!(notice.verdict, None);
        assert!(notice.trace_urls.is_empty());
        assert!(!notice.text.contains('\n'));
        assert!(
            notice
                .text
                .starts_with("spangate: default/a Started: step 0 at 1% — phase ")
        );
        assert!(
            notice.text.ends_with(", step 0, weight 1%"),
            "{}",
            notice.text
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn an_outage_is_warned_about_once() {
        let mut outage = Outage::default();
        assert!(!outage.sent());
        assert!(outage.failed());
        assert!(!outage.failed());
        assert!(!outage.failed());
        assert!(outage.sent());
        assert!(!outage.sent());
        assert!(outage.failed());
    }

    #[test]
    fn only_http_and_https_webhooks_with_a_host() {
        assert!(parse_webhook("https://hooks.example/services/T/B/x").is_ok());
        assert!(parse_webhook("http://127.0.0.1:9/hook").is_ok());
        assert!(
            parse_webhook("ftp://example/hook")
                .unwrap_err()
                .contains("https://")
        );
        assert!(
            parse_webhook("example/hook")
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(parse_webhook("file:///tmp/x").is_err());
    }

    #[test]
    fn retries_on_server_errors_and_throttling_only() {
        assert!(retryable(hyper::StatusCode::INTERNAL_SERVER_ERROR));
        assert!(retryable(hyper::StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(hyper::StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(hyper::StatusCode::NOT_FOUND));
        assert!(!retryable(hyper::StatusCode::BAD_REQUEST));
    }

    #[test]
    fn a_redacted_webhook_keeps_no_secret_path() {
        let url = parse_webhook("https://hooks.example:8443/services/T0/B0/secret?x=1").unwrap();
        assert_eq!(redacted(&url), "https://hooks.example:8443");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Metrics::default());
        let (queue, _held) = mpsc::channel(2);
        let notifier = Notifier {
            queue,
            metrics: metrics.clone(),
        };
        let notice = Notice::new(
            &RolloutKey::new("default", "a"),
            None,
            &FeatureRolloutStatus::default(),
            "Normal",
            "Started",
            "",
        );
        for _ in 0..5 {
            notifier.notify(notice.clone());
        }
        let mut registry = registry();
        metrics.register(&mut registry);
        let (_, text) = exposition(&registry, "");
        assert!(
            text.lines()
                .any(|l| l == "spangate_notifications_dropped_total 3"),
            "{text}"
        );
    }
}
