//! The load of a soak, run from a second process by `scripts/soak` against a running
//! `spangate standalone` whose folder the script fills (the flags of [`APPS`]) and
//! edits meanwhile. For `--seconds` it sends, paced:
//!
//! - OFREP: single evaluations of every flag and bulk evaluations (with the user's
//!   last `ETag` half the time), for 2,000 users with varied contexts; now and then
//!   a flag that does not exist or a context that is not one;
//! - OTLP: batches of 1 to 512 spans over HTTP (protobuf, JSON, gzip) and gRPC, each
//!   span carrying the variant and reason OFREP last gave its user, as an
//!   application would, with more errors and latency on one rollout's new variant;
//! - a trickle of malformed requests: bytes that are not protobuf or not JSON, an
//!   unsupported content type, a body that says gzip and is not, and batches with
//!   invalid spans among valid ones;
//!
//! and every second asks `/healthz` and `/readyz` and reads spangate's resident
//! memory. Then it prints every answer by kind, with latencies, memory and CPU
//! time, and exits 1 when spangate died, a probe was not answered 200, or any
//! request was answered other than as it should be.
//!
//! Usage: `soak --ready-file FILE --pid PID [--seconds N]` (see `--help`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

mod common;
use common::{grpc_call, grpc_frame, kv};

/// Mixed OFREP and OTLP load against a running `spangate standalone`, with its
/// memory, CPU time and probes watched; prints a summary. `scripts/soak` runs it.
#[derive(Parser)]
struct Args {
    /// spangate's ready file (`--ready-file`), for its addresses.
    #[arg(long)]
    ready_file: PathBuf,
    /// spangate's process ID, for its memory (`/proc/PID/status`) and CPU time.
    #[arg(long)]
    pid: u32,
    /// How long to send.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// OFREP requests a second, single and bulk together.
    #[arg(long, env = "SOAK_OFREP_RATE", default_value_t = 1000)]
    ofrep_rate: u32,
    /// OTLP batches a second on each transport (HTTP and gRPC).
    #[arg(long, env = "SOAK_OTLP_RATE", default_value_t = 100)]
    otlp_rate: u32,
    /// Clock ticks a second of `/proc/PID/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clock_ticks: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Addrs {
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
    ofrep: SocketAddr,
    probes: SocketAddr,
}

/// A flag the simulated applications ask for, and the spans they send about it.
struct App {
    flag: &'static str,
    service: &'static str,
    revision: &'static str,
    /// The variant whose spans fail more often (15%, not 1%) and take 60% longer.
    failing: Option<&'static str>,
    /// The folder edits add and remove its file: 404 is an answer too.
    comes_and_goes: bool,
}

/// What `scripts/soak` puts in the folder.
const APPS: [App; 6] = [
    App {
        flag: "soak-checkout",
        service: "checkout",
        revision: "3f2c1a9",
        failing: None,
        comes_and_goes: false,
    },
    App {
        flag: "soak-search",
        service: "search",
        revision: "8d0e4b7",
        failing: Some("new"),
        comes_and_goes: false,
    },
    App {
        flag: "soak-cart",
        service: "cart",
        revision: "5a61c0e",
        failing: None,
        comes_and_goes: false,
    },
    App {
        flag: "soak-plans",
        service: "billing",
        revision: "0b9f3d2",
        failing: None,
        comes_and_goes: false,
    },
    App {
        flag: "soak-banner",
        service: "web",
        revision: "c4e8a11",
        failing: None,
        comes_and_goes: false,
    },
    App {
        flag: "soak-extra",
        service: "web",
        revision: "c4e8a11",
        failing: None,
        comes_and_goes: true,
    },
];

const USERS: usize = 2_000;
const ACCOUNTS: usize = 400;

/// What is measured, one line each in the summary.
#[derive(Clone, Copy)]
enum Kind {
    OfrepSingle,
    OfrepBulk,
    OtlpHttp,
    OtlpGrpc,
    Malformed,
    Probe,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::OfrepSingle, "OFREP single"),
    (Kind::OfrepBulk, "OFREP bulk"),
    (Kind::OtlpHttp, "OTLP HTTP"),
    (Kind::OtlpGrpc, "OTLP gRPC"),
    (Kind::Malformed, "malformed"),
    (Kind::Probe, "probe"),
];

/// The answers of one kind.
#[derive(Default)]
struct Record {
    answers: BTreeMap<String, u64>,
    /// Requests that got no answer at all (no connection, a reset, a timeout).
    unanswered: u64,
    latencies_us: Vec<u32>,
    unexpected: u64,
    /// The first few unexpected answers, with what was sent.
    examples: Vec<String>,
}

/// One sample of spangate's memory.
struct Memory {
    at: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

struct Soak {
    addrs: Addrs,
    pid: u32,
    started: Instant,
    until: Instant,
    http: reqwest::Client,
    records: [Mutex<Record>; 6],
    /// (app, user) → the variant and reason OFREP last answered.
    variants: Mutex<HashMap<(usize, usize), (String, String)>>,
    /// user → the `ETag` of the user's last bulk answer.
    etags: Mutex<HashMap<usize, String>>,
    memory: Mutex<Vec<Memory>>,
    died: AtomicBool,
    /// Spans spangate's answers said it took, and said it rejected: what its
    /// counters must show at the end.
    spans_accepted: AtomicU64,
    spans_rejected: AtomicU64,
}

impl Soak {
    fn running(&self) -> bool {
        Instant::now() < self.until && !self.died.load(Ordering::Relaxed)
    }

    fn took_spans(&self, accepted: usize, rejected: u64) {
        self.spans_accepted
            .fetch_add(accepted as u64, Ordering::Relaxed);
        self.spans_rejected.fetch_add(rejected, Ordering::Relaxed);
    }

    /// The answer to a batch of `spans` valid spans: every one must be taken.
    fn exported(
        &self,
        kind: Kind,
        (answer, rejected, took): (String, Option<i64>, Duration),
        spans: usize,
        sent: &str,
    ) {
        if rejected == Some(0) {
            self.took_spans(spans, 0);
        }
        self.record(kind, answer, rejected == Some(0), took, sent);
    }

    fn record(&self, kind: Kind, answer: String, expected: bool, took: Duration, sent: &str) {
        let mut record = self.records[kind as usize].lock().unwrap();
        record
            .latencies_us
            .push(took.as_micros().min(u32::MAX as u128) as u32);
        if no_answer(&answer) {
            record.unanswered += 1;
        }
        if !expected {
            record.unexpected += 1;
            if record.examples.len() < 5 {
                record
                    .examples
                    .push(format!("{sent}: {answer} after {} ms", took.as_millis()));
            }
        }
        *record.answers.entry(answer).or_default() += 1;
    }
}

/// Whether `answer` (or, for malformed requests, its part after "→") says no
/// answer came: how the clients here word a failed request.
fn no_answer(answer: &str) -> bool {
    let answer = answer.rsplit(" → ").next().unwrap_or(answer);
    [
        "no answer",
        "connect error",
        "handshake error",
        "connection closed",
        "stream refused",
        "stream error",
        "no trailers",
        "no status",
    ]
    .iter()
    .any(|prefix| answer.starts_with(prefix))
}

fn user_key(user: usize) -> String {
    // A few users the example targeting names: a target, an exclusion, a segment member.
    match user {
        0 => "qa-alice".into(),
        1 => "vip-carol".into(),
        2 => "beta-tester-1".into(),
        _ => format!("user-{user}"),
    }
}

fn context(user: usize) -> Value {
    let key = user_key(user);
    let domain = ["example.com", "gmail.com", "example.org", "spangate.dev"][user % 4];
    let plan = ["free", "pro", "elite", "free", "pro"][user % 5];
    let state = ["CA", "NY", "TX", "WA", "OR", "FL"][user % 6];
    let version = ["1.9.3", "2.0.0", "2.4.1"][user % 3];
    json!({
        "targetingKey": key,
        "accountId": format!("acct-{}", user % ACCOUNTS),
        "plan": plan,
        "email": format!("{key}@{domain}"),
        "address": {"state": state},
        "app": {"version": version},
        "signupMs": 1_760_000_000_000u64 + (user as u64) * 3_600_000,
    })
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

/// Keeps what OFREP answered for `user`, as an application's span would carry it.
fn remember(soak: &Soak, user: usize, answer: &Value) {
    let Some(app) = answer["key"]
        .as_str()
        .and_then(|key| APPS.iter().position(|a| a.flag == key))
    else {
        return;
    };
    let mut variants = soak.variants.lock().unwrap();
    match (text(&answer["variant"]), text(&answer["reason"])) {
        (Some(variant), Some(reason)) => {
            variants.insert((app, user), (variant, reason));
        }
        _ => {
            variants.remove(&(app, user));
        }
    }
}

/// Sends an OFREP request; its status, body, and time taken.
async fn ofrep_post(
    soak: &Soak,
    path: &str,
    body: String,
    etag: Option<&str>,
) -> (Result<(u16, String, Option<String>), String>, Duration) {
    let started = Instant::now();
    let mut request = soak
        .http
        .post(format!("http://{}{path}", soak.addrs.ofrep))
        .header("content-type", "application/json")
        .body(body);
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    let answer = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|e| e.to_str().ok())
            .map(str::to_string);
        Ok::<_, reqwest::Error>((status, response.text().await?, etag))
    }
    .await
    .map_err(|error| format!("no answer: {error}"));
    (answer, started.elapsed())
}

async fn ofrep_single(soak: &Soak, app: usize, user: usize) {
    let path = format!("/ofrep/v1/evaluate/flags/{}", APPS[app].flag);
    let body = json!({ "context": context(user) }).to_string();
    let (answer, took) = ofrep_post(soak, &path, body, None).await;
    let (status, expected) = match &answer {
        Ok((200, body, _)) => {
            if let Ok(answer) = serde_json::from_str::<Value>(body) {
                remember(soak, user, &answer);
            }
            ("200".to_string(), true)
        }
        Ok((404, _, _)) => {
            soak.variants.lock().unwrap().remove(&(app, user));
            ("404".into(), APPS[app].comes_and_goes)
        }
        Ok((status, _, _)) => (status.to_string(), false),
        Err(error) => (error.clone(), false),
    };
    soak.record(
        Kind::OfrepSingle,
        status,
        expected,
        took,
        &format!("POST {path} for {}", user_key(user)),
    );
}

async fn ofrep_bulk(soak: &Soak, user: usize, with_etag: bool) {
    let etag = with_etag
        .then(|| soak.etags.lock().unwrap().get(&user).cloned())
        .flatten();
    let body = json!({ "context": context(user) }).to_string();
    let (answer, took) = ofrep_post(soak, "/ofrep/v1/evaluate/flags", body, etag.as_deref()).await;
    let (status, expected) = match &answer {
        Ok((200, body, new_etag)) => {
            let answer: Value = serde_json::from_str(body).unwrap_or_default();
            let flags = answer["flags"].as_array().cloned().unwrap_or_default();
            for app in 0..APPS.len() {
                soak.variants.lock().unwrap().remove(&(app, user));
            }
            for flag in &flags {
                remember(soak, user, flag);
            }
            if let Some(new_etag) = new_etag {
                soak.etags.lock().unwrap().insert(user, new_etag.clone());
            }
            // Every flag but the one that comes and goes is always there.
            let stable = APPS.iter().filter(|a| !a.comes_and_goes).all(|a| {
                flags
                    .iter()
                    .any(|f| f["key"] == a.flag && f["variant"].is_string())
            });
            ("200".to_string(), stable)
        }
        Ok((304, _, _)) => ("304".into(), etag.is_some()),
        Ok((status, _, _)) => (status.to_string(), false),
        Err(error) => (error.clone(), false),
    };
    soak.record(
        Kind::OfrepBulk,
        status,
        expected,
        took,
        &format!(
            "POST /ofrep/v1/evaluate/flags for {}{}",
            user_key(user),
            if etag.is_some() {
                " with If-None-Match"
            } else {
                ""
            }
        ),
    );
}

/// A request OFREP must refuse or not find: (path, body, what it must answer).
fn ofrep_wrong(pick: u32) -> (String, String, u16) {
    let deep = (0..12).fold(json!("x"), |inner, _| json!({ "a": inner }));
    match pick % 4 {
        0 => (
            "/ofrep/v1/evaluate/flags/soak-no-such-flag".into(),
            json!({"context": context(7)}).to_string(),
            404,
        ),
        1 => (
            "/ofrep/v1/evaluate/flags/soak-checkout".into(),
            r#"{"context": "not an object"}"#.into(),
            400,
        ),
        2 => (
            "/ofrep/v1/evaluate/flags/soak-checkout".into(),
            json!({"context": {"targetingKey": "user-9", "accountId": "acct-9", "deep": deep}})
                .to_string(),
            400,
        ),
        _ => (
            "/ofrep/v1/evaluate/flags".into(),
            r#"{"context": {"targetingKey": "user-9""#.into(),
            400,
        ),
    }
}

async fn ofrep_worker(soak: Arc<Soak>, period: Duration) {
    let mut rng = StdRng::from_os_rng();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while soak.running() {
        tick.tick().await;
        let user = rng.random_range(0..USERS);
        let roll: f64 = rng.random();
        if roll < 0.2 {
            ofrep_bulk(&soak, user, rng.random()).await;
        } else if roll < 0.21 {
            let (path, body, must) = ofrep_wrong(rng.random());
            let (answer, took) = ofrep_post(&soak, &path, body.clone(), None).await;
            let (status, expected) = match answer {
                Ok((status, _, _)) => (status.to_string(), status == must),
                Err(error) => (error, false),
            };
            let sent = format!("POST {path} {}", body.chars().take(60).collect::<String>());
            soak.record(Kind::OfrepSingle, status, expected, took, &sent);
        } else {
            ofrep_single(&soak, rng.random_range(0..APPS.len()), user).await;
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A span of `app` for `user`, with the variant OFREP gave it; `None` while OFREP
/// has not answered for that user (or the flag is gone).
fn span(soak: &Soak, rng: &mut StdRng, app: usize, user: usize) -> Option<Span> {
    let (variant, reason) = soak.variants.lock().unwrap().get(&(app, user)).cloned()?;
    let failing = APPS[app].failing == Some(variant.as_str());
    let error_rate = if failing { 0.15 } else { 0.01 };
    // Around 40 ms, with a tail: one span in 50 takes up to five times as long.
    let mut millis = 25.0 + 30.0 * rng.random::<f64>();
    if rng.random_bool(0.02) {
        millis *= 1.0 + 4.0 * rng.random::<f64>();
    }
    if failing {
        millis *= 1.6;
    }
    let end = now_ns();
    let start = end - (millis * 1e6) as u64;
    Some(Span {
        trace_id: rng.random::<u128>().max(1).to_be_bytes().to_vec(),
        span_id: rng.random::<u64>().max(1).to_be_bytes().to_vec(),
        name: format!("GET /{}", APPS[app].service),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![
            kv("feature_flag.key", APPS[app].flag),
            kv("feature_flag.result.variant", &variant),
            kv("feature_flag.result.reason", &reason),
            kv("feature_flag.context.id", &user_key(user)),
            kv("accountId", &format!("acct-{}", user % ACCOUNTS)),
            kv("http.request.method", "GET"),
        ],
        status: Some(Status {
            code: if rng.random_bool(error_rate) {
                StatusCode::Error
            } else {
                StatusCode::Ok
            } as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A request of `spans` spans (fewer while OFREP has answered for few users), one
/// resource per service.
fn batch(soak: &Soak, rng: &mut StdRng, spans: usize) -> (ExportTraceServiceRequest, usize) {
    let mut by_app: BTreeMap<usize, Vec<Span>> = BTreeMap::new();
    let mut count = 0;
    for _ in 0..spans {
        let app = rng.random_range(0..APPS.len());
        let user = rng.random_range(0..USERS);
        if let Some(span) = span(soak, rng, app, user) {
            by_app.entry(app).or_default().push(span);
            count += 1;
        }
    }
    let resource_spans = by_app
        .into_iter()
        .map(|(app, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", APPS[app].service),
                    kv("vcs.ref.head.revision", APPS[app].revision),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, count)
}

/// Spans rejected, from an OTLP/HTTP answer in `content_type`.
fn rejected_spans(content_type: &str, body: &[u8]) -> Option<i64> {
    if content_type.starts_with("application/json") {
        let answer: Value = serde_json::from_slice(body).ok()?;
        match &answer["partialSuccess"]["rejectedSpans"] {
            Value::Null => Some(0),
            Value::String(n) => n.parse().ok(),
            n => n.as_i64(),
        }
    } else {
        let answer = ExportTraceServiceResponse::decode(body).ok()?;
        Some(answer.partial_success.map_or(0, |p| p.rejected_spans))
    }
}

/// Posts one OTLP/HTTP body; the answer as "200", "200, 2 spans rejected", "400",
/// and the spans rejected (when the answer says).
async fn otlp_post(
    soak: &Soak,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> (String, Option<i64>, Duration) {
    let started = Instant::now();
    let mut request = soak
        .http
        .post(format!("http://{}/v1/traces", soak.addrs.otlp_http))
        .header("content-type", content_type)
        .body(body);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let answer = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|c| c.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok::<_, reqwest::Error>((status, content_type, response.bytes().await?))
    }
    .await;
    let took = started.elapsed();
    match answer {
        Ok((200, content_type, body)) => {
            let rejected = rejected_spans(&content_type, &body);
            let answer = match rejected {
                Some(0) => "200".to_string(),
                Some(n) => format!("200, {n} spans rejected"),
                None => "200, answer unreadable".to_string(),
            };
            (answer, rejected, took)
        }
        Ok((status, _, _)) => (status.to_string(), None, took),
        Err(error) => (format!("no answer: {error}"), None, took),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn otlp_http_worker(soak: Arc<Soak>, period: Duration) {
    let mut rng = StdRng::from_os_rng();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while soak.running() {
        tick.tick().await;
        let size = rng.random_range(1..=512);
        let (request, spans) = batch(&soak, &mut rng, size);
        // Mostly protobuf, as SDKs send; JSON and gzip now and then.
        let (format, body) = match rng.random_range(0..10) {
            0 | 1 => ("json", serde_json::to_vec(&request).unwrap()),
            2 => ("protobuf, gzip", gzip(&request.encode_to_vec())),
            _ => ("protobuf", request.encode_to_vec()),
        };
        let content_type = if format == "json" {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        let answer = otlp_post(&soak, content_type, format.ends_with("gzip"), body).await;
        soak.exported(
            Kind::OtlpHttp,
            answer,
            spans,
            &format!("POST /v1/traces, {spans} spans, {format}"),
        );
    }
}

/// An Export over the shared gRPC channel; the answer as "OK", "OK, 2 spans
/// rejected" or the status code, and the spans rejected.
async fn grpc_export(
    client: &mut TraceServiceClient<tonic::transport::Channel>,
    request: ExportTraceServiceRequest,
) -> (String, Option<i64>, Duration) {
    let started = Instant::now();
    let answer = client.export(request).await;
    let took = started.elapsed();
    match answer {
        Ok(response) => {
            let rejected = response
                .into_inner()
                .partial_success
                .map_or(0, |p| p.rejected_spans);
            let answer = match rejected {
                0 => "OK".to_string(),
                n => format!("OK, {n} spans rejected"),
            };
            (answer, Some(rejected), took)
        }
        Err(status) => {
            let message: String = status.message().chars().take(80).collect();
            (format!("{:?}: {message}", status.code()), None, took)
        }
    }
}

async fn otlp_grpc_worker(
    soak: Arc<Soak>,
    mut client: TraceServiceClient<tonic::transport::Channel>,
    period: Duration,
) {
    let mut rng = StdRng::from_os_rng();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while soak.running() {
        tick.tick().await;
        let size = rng.random_range(1..=512);
        let (request, spans) = batch(&soak, &mut rng, size);
        let answer = grpc_export(&mut client, request).await;
        soak.exported(
            Kind::OtlpGrpc,
            answer,
            spans,
            &format!("Export, {spans} spans"),
        );
    }
}

/// A batch of valid spans with two invalid ones among them: a zero trace ID, and
/// a span that ends before it starts.
fn two_invalid_spans(soak: &Soak, rng: &mut StdRng) -> (ExportTraceServiceRequest, usize) {
    let (mut request, valid) = batch(soak, rng, 20);
    let mut zero_trace = Span {
        trace_id: vec![0; 16],
        span_id: vec![7; 8],
        start_time_unix_nano: now_ns() - 1_000_000,
        end_time_unix_nano: now_ns(),
        ..Default::default()
    };
    zero_trace
        .attributes
        .push(kv("feature_flag.key", "soak-checkout"));
    let backwards = Span {
        trace_id: vec![9; 16],
        span_id: vec![9; 8],
        start_time_unix_nano: now_ns(),
        end_time_unix_nano: now_ns() - 5_000_000,
        ..Default::default()
    };
    request.resource_spans.push(ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", "checkout")],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![zero_trace, backwards],
            ..Default::default()
        }],
        ..Default::default()
    });
    (request, valid)
}

/// One malformed request every half second, each kind in turn, each with the one
/// answer it must get.
async fn malformed_worker(
    soak: Arc<Soak>,
    mut client: TraceServiceClient<tonic::transport::Channel>,
) {
    let mut rng = StdRng::from_os_rng();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut turn = 0u32;
    while soak.running() {
        tick.tick().await;
        turn += 1;
        let (sent, answer, expected, took) = match turn % 7 {
            0 => {
                let (answer, _, took) = otlp_post(
                    &soak,
                    "application/x-protobuf",
                    false,
                    b"\xff\xff\xff\xff not protobuf".to_vec(),
                )
                .await;
                let expected = answer == "400";
                ("HTTP: bytes that are not protobuf", answer, expected, took)
            }
            1 => {
                let (request, _) = batch(&soak, &mut rng, 50);
                let json = serde_json::to_vec(&request).unwrap();
                let cut = json[..json.len() / 2].to_vec();
                let (answer, _, took) = otlp_post(&soak, "application/json", false, cut).await;
                let expected = answer == "400";
                ("HTTP: JSON cut in half", answer, expected, took)
            }
            2 => {
                let (answer, _, took) =
                    otlp_post(&soak, "text/plain", false, b"spans, please".to_vec()).await;
                let expected = answer == "415";
                ("HTTP: content type text/plain", answer, expected, took)
            }
            3 => {
                let body = two_invalid_spans(&soak, &mut rng).0.encode_to_vec();
                let (answer, _, took) =
                    otlp_post(&soak, "application/x-protobuf", true, body).await;
                let expected = answer == "400";
                ("HTTP: says gzip, is not", answer, expected, took)
            }
            4 => {
                let (request, valid) = two_invalid_spans(&soak, &mut rng);
                let (answer, rejected, took) = otlp_post(
                    &soak,
                    "application/x-protobuf",
                    false,
                    request.encode_to_vec(),
                )
                .await;
                let expected = rejected == Some(2);
                if expected {
                    soak.took_spans(valid, 2);
                }
                (
                    "HTTP: 2 invalid spans among valid ones",
                    answer,
                    expected,
                    took,
                )
            }
            5 => {
                let started = Instant::now();
                let answer = grpc_call(
                    soak.addrs.otlp_grpc,
                    grpc_frame(b"\xff\xff\xff\xff not protobuf"),
                    None,
                )
                .await;
                let expected = answer == "grpc-status 3";
                (
                    "gRPC: bytes that are not protobuf",
                    answer,
                    expected,
                    started.elapsed(),
                )
            }
            _ => {
                let (request, valid) = two_invalid_spans(&soak, &mut rng);
                let (answer, rejected, took) = grpc_export(&mut client, request).await;
                let expected = rejected == Some(2);
                if expected {
                    soak.took_spans(valid, 2);
                }
                (
                    "gRPC: 2 invalid spans among valid ones",
                    answer,
                    expected,
                    took,
                )
            }
        };
        soak.record(
            Kind::Malformed,
            format!("{sent} → {answer}"),
            expected,
            took,
            sent,
        );
    }
}

/// (VmRSS, VmHWM) in KiB; `None` once the process is gone or a zombie.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    let state = status.lines().find_map(|l| l.strip_prefix("State:"))?;
    if state.trim_start().starts_with('Z') {
        return None;
    }
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User and system CPU time, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which may hold spaces, start at field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

async fn probe(soak: &Soak, path: &str) -> bool {
    let started = Instant::now();
    let answer = soak
        .http
        .get(format!("http://{}{path}", soak.addrs.probes))
        .send()
        .await;
    let took = started.elapsed();
    let (answer, ok) = match answer {
        Ok(response) => (
            response.status().as_u16().to_string(),
            response.status() == 200,
        ),
        Err(error) => (format!("no answer: {error}"), false),
    };
    soak.record(
        Kind::Probe,
        format!("{path} {answer}"),
        ok,
        took,
        &format!("GET {path}"),
    );
    ok
}

/// Every second: the probes and spangate's memory; a progress line every tenth of
/// the run.
async fn watch(soak: Arc<Soak>, seconds: u64) {
    let report_every = (seconds / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut second = 0;
    while soak.running() {
        tick.tick().await;
        let Some((rss_kib, hwm_kib)) = memory(soak.pid) else {
            soak.died.store(true, Ordering::Relaxed);
            break;
        };
        soak.memory.lock().unwrap().push(Memory {
            at: soak.started.elapsed(),
            rss_kib,
            hwm_kib,
        });
        probe(&soak, "/healthz").await;
        probe(&soak, "/readyz").await;
        if second > 0 && second % report_every == 0 {
            let sent: usize = soak
                .records
                .iter()
                .map(|r| r.lock().unwrap().latencies_us.len())
                .sum();
            let unexpected: u64 = soak
                .records
                .iter()
                .map(|r| r.lock().unwrap().unexpected)
                .sum();
            eprintln!(
                "  {second:>4} s: {sent} requests answered, {unexpected} unexpectedly; \
                 spangate VmRSS {} MiB, VmHWM {} MiB",
                rss_kib / 1024,
                hwm_kib / 1024
            );
        }
        second += 1;
    }
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

/// spangate's metric `name` (without labels), from `/metrics`.
async fn metric(soak: &Soak, name: &str) -> Option<u64> {
    let text = soak
        .http
        .get(format!("http://{}/metrics", soak.addrs.probes))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        let value: f64 = line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()?;
        Some(value as u64)
    })
}

/// CPU seconds: spangate's and the load's own, over the run.
struct Cpu {
    spangate: Option<f64>,
    load: Option<f64>,
}

fn summarize(soak: &Soak, ran: Duration, cpu: &Cpu) -> bool {
    println!(
        "\n{:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  answers",
        "kind", "sent", "answered", "a second", "p50 ms", "p99 ms", "max ms"
    );
    let mut requests = 0;
    let mut unexpected = 0;
    for (kind, name) in KINDS {
        let mut record = soak.records[kind as usize].lock().unwrap();
        record.latencies_us.sort_unstable();
        let sorted = &record.latencies_us;
        requests += sorted.len();
        unexpected += record.unexpected;
        let answers: Vec<String> = record
            .answers
            .iter()
            .map(|(answer, n)| format!("{n} × {answer}"))
            .collect();
        println!(
            "{name:<13} {:>9} {:>9} {:>9.1} {:>9.2} {:>9.2} {:>9.2}  {}",
            sorted.len(),
            sorted.len() as u64 - record.unanswered,
            sorted.len() as f64 / ran.as_secs_f64(),
            quantile(sorted, 0.5),
            quantile(sorted, 0.99),
            quantile(sorted, 1.0),
            answers.join("; ")
        );
    }
    println!("\nrequests answered other than they must be: {unexpected}");
    for ((_, name), record) in KINDS.iter().zip(&soak.records) {
        for example in &record.lock().unwrap().examples {
            println!("  {name}: {example}");
        }
    }
    let memory = soak.memory.lock().unwrap();
    if let (Some(first), Some(last)) = (memory.first(), memory.last()) {
        let peak = memory.iter().map(|m| m.hwm_kib).max().unwrap_or(0);
        println!(
            "spangate memory: VmHWM (peak) {:.1} MiB; VmRSS {:.1} MiB after {} s, {:.1} MiB at the end",
            peak as f64 / 1024.0,
            first.rss_kib as f64 / 1024.0,
            first.at.as_secs(),
            last.rss_kib as f64 / 1024.0
        );
        let step = (memory.len() / 10).max(1);
        let samples: Vec<String> = memory
            .iter()
            .step_by(step)
            .map(|m| format!("{} s {:.1}", m.at.as_secs(), m.rss_kib as f64 / 1024.0))
            .collect();
        println!("  VmRSS over time (MiB): {}", samples.join(", "));
    }
    if let Some(spangate) = cpu.spangate {
        println!(
            "spangate CPU: {spangate:.1} s over {:.0} s ({:.0}% of a core), {:.3} s per 1,000 requests",
            ran.as_secs_f64(),
            100.0 * spangate / ran.as_secs_f64(),
            1000.0 * spangate / requests.max(1) as f64
        );
    }
    if let Some(load) = cpu.load {
        // A busy sender delays its own requests: read the latencies with this.
        println!(
            "load generator CPU: {load:.1} s ({:.0}% of a core)",
            100.0 * load / ran.as_secs_f64()
        );
    }
    unexpected == 0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let ready = std::fs::read_to_string(&args.ready_file).expect("read the ready file");
    let addrs: Addrs = serde_json::from_str(&ready).expect("the ready file holds addresses");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.otlp_grpc))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let client = TraceServiceClient::new(channel);
    let started = Instant::now();
    let soak = Arc::new(Soak {
        addrs,
        pid: args.pid,
        started,
        until: started + Duration::from_secs(args.seconds),
        http,
        records: Default::default(),
        variants: Mutex::default(),
        etags: Mutex::default(),
        memory: Mutex::default(),
        died: AtomicBool::new(false),
        spans_accepted: AtomicU64::new(0),
        spans_rejected: AtomicU64::new(0),
    });
    let cpu_before = cpu_ticks(args.pid);
    let load_before = cpu_ticks(std::process::id());
    eprintln!(
        "soak: {} s: {} OFREP requests a second, {} OTLP batches a second over HTTP and as many over gRPC",
        args.seconds, args.ofrep_rate, args.otlp_rate
    );

    let mut tasks = JoinSet::new();
    tasks.spawn(watch(soak.clone(), args.seconds));
    tasks.spawn(malformed_worker(soak.clone(), client.clone()));
    let workers = 8;
    let period = |rate: u32| Duration::from_secs_f64(f64::from(workers) / f64::from(rate.max(1)));
    for _ in 0..workers {
        tasks.spawn(ofrep_worker(soak.clone(), period(args.ofrep_rate)));
        tasks.spawn(otlp_http_worker(soak.clone(), period(args.otlp_rate)));
        tasks.spawn(otlp_grpc_worker(
            soak.clone(),
            client.clone(),
            period(args.otlp_rate),
        ));
    }
    while tasks.join_next().await.is_some() {}
    let ran = started.elapsed();
    let seconds = |before: Option<u64>, after: Option<u64>| {
        before
            .zip(after)
            .map(|(before, after)| (after - before) as f64 / args.clock_ticks as f64)
    };
    let cpu = Cpu {
        spangate: seconds(cpu_before, cpu_ticks(args.pid)),
        load: seconds(load_before, cpu_ticks(std::process::id())),
    };

    let alive = memory(args.pid).is_some();
    let answered = alive && probe(&soak, "/readyz").await;
    let as_they_must = summarize(&soak, ran, &cpu);
    let probes_ok = soak.records[Kind::Probe as usize]
        .lock()
        .unwrap()
        .unexpected
        == 0;
    // Every span an answer said was taken is counted, and every one it said was
    // rejected: nothing lost, nothing counted twice.
    let (accepted, rejected) = (
        soak.spans_accepted.load(Ordering::Relaxed),
        soak.spans_rejected.load(Ordering::Relaxed),
    );
    let (ingested, counted_rejected) = (
        metric(&soak, "spangate_otlp_spans_total{outcome=\"accepted\"}").await,
        metric(&soak, "spangate_otlp_spans_total{outcome=\"rejected\"}").await,
    );
    let show = |n: Option<u64>| n.map_or("(unread)".to_string(), |n| n.to_string());
    println!(
        "spans: {accepted} taken and {rejected} rejected by spangate's answers ({:.0} a second); \
         its counters: {} ingested, {} rejected",
        accepted as f64 / ran.as_secs_f64(),
        show(ingested),
        show(counted_rejected)
    );
    let spans_ok = ingested == Some(accepted) && counted_rejected == Some(rejected);
    if !alive {
        println!("FAIL: spangate died");
    } else if !answered {
        println!("FAIL: spangate did not answer /readyz at the end");
    }
    if !probes_ok {
        println!("FAIL: a probe was not answered 200");
    }
    if !as_they_must {
        println!("FAIL: requests were answered other than they must be");
    }
    if alive && !spans_ok {
        println!("FAIL: spangate's span counters differ from what its answers said");
    }
    std::process::exit(
        if alive && answered && probes_ok && as_they_must && spans_ok {
            0
        } else {
            1
        },
    );
}
