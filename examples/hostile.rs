//! A hostile client, run from a second process by `scripts/hostile-memory`: attacks a
//! running spangate with rows 1, 2 and 6 of issue 8 at once while it asks the
//! probes and OFREP every 200 ms, then prints what every attack was answered and
//! how the probes fared.
//!
//! - row 1: 4,000,010-byte requests of 2,000,000 empty spans, over HTTP and gRPC,
//!   4 at once, again and again;
//! - row 2: 4,000 idle connections, headers sent a byte a second, 200 uploads
//!   stalled at 3.9 of 4 MB, 60 gRPC streams stalled the same way;
//! - row 6: full 4 MB batches of valid spans, again and again, which spangate
//!   forwards to a backend that never answers (the script starts it).
//!
//! Usage: `hostile OTLP_GRPC OTLP_HTTP OFREP PROBES SECONDS` (addresses as
//! host:port, as spangate's ready file gives them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

mod common;
use common::{grpc_call, grpc_frame, kv};

/// How each attack was answered: attack → answer → count.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, BTreeMap<String, u64>>>);

impl Tally {
    fn count(&self, attack: &str, answer: impl Into<String>) {
        let mut tally = self.0.lock().unwrap();
        *tally
            .entry(attack.to_string())
            .or_default()
            .entry(answer.into())
            .or_default() += 1;
    }
}

struct Target {
    grpc: SocketAddr,
    http: SocketAddr,
    ofrep: SocketAddr,
    probes: SocketAddr,
    until: Instant,
    tally: Tally,
}

impl Target {
    fn running(&self) -> bool {
        Instant::now() < self.until
    }
}

/// 2,000,000 empty spans: 4,000,010 bytes.
fn empty_spans() -> Bytes {
    let wrap = |tag: u8, inner: Vec<u8>| {
        let mut out = vec![tag];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend(inner);
        out
    };
    wrap(0x0a, wrap(0x12, [0x12, 0x00].repeat(2_000_000))).into()
}

/// Just under 4 MB of valid, flagged spans: as full as a batch may be.
fn full_batch() -> Bytes {
    let padding = "p".repeat(340);
    let spans = (1..=8_000u64)
        .map(|i| Span {
            trace_id: (u128::from(i) + 1).to_be_bytes().to_vec(),
            span_id: i.to_be_bytes().to_vec(),
            name: "POST /checkout".into(),
            start_time_unix_nano: 1_764_000_000_000_000_000,
            end_time_unix_nano: 1_764_000_000_020_000_000,
            attributes: vec![
                kv("feature_flag.key", "new-checkout"),
                kv(
                    "feature_flag.result.variant",
                    if i % 2 == 0 { "on" } else { "off" },
                ),
                kv("padding", &padding),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
    .into()
}

/// Posts `body` to OTLP/HTTP again and again.
async fn http_posts(target: Arc<Target>, attack: &'static str, body: Bytes) {
    let client = reqwest::Client::new();
    while target.running() {
        let answer = client
            .post(format!("http://{}/v1/traces", target.http))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        match answer {
            Ok(response) => target.tally.count(attack, response.status().to_string()),
            Err(_) => {
                target.tally.count(attack, "connection error");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn grpc_calls(target: Arc<Target>, attack: &'static str, framed: Bytes) {
    while target.running() {
        let answer = grpc_call(target.grpc, framed.clone(), None).await;
        target.tally.count(attack, answer);
    }
}

/// A gRPC stream that sends 3.9 of 4 MB and stalls, again and again.
async fn stalled_grpc_stream(target: Arc<Target>, framed: Bytes) {
    while target.running() {
        let answer = grpc_call(target.grpc, framed.clone(), Some(3_900_000)).await;
        target
            .tally
            .count("row 2: gRPC stream stalled at 3.9 of 4 MB", answer);
    }
}

/// Waits until the server closes `stream` (or the attack ends); what it sent.
async fn until_closed(target: &Target, stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while target.running() {
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    match answer.split_whitespace().nth(1) {
        Some(status) => format!("answered {status}, then closed"),
        None if target.running() => "closed".into(),
        None => "still open at the end".into(),
    }
}

/// A connection that sends nothing, reopened a second after spangate closes it.
async fn idle_connection(target: Arc<Target>, addr: SocketAddr) {
    while target.running() {
        match TcpStream::connect(addr).await {
            Ok(mut stream) => {
                let answer = until_closed(&target, &mut stream).await;
                target.tally.count("row 2: idle connection", answer);
            }
            Err(_) => target
                .tally
                .count("row 2: idle connection", "connect error"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Request headers sent a byte a second.
async fn slow_headers(target: Arc<Target>, addr: SocketAddr) {
    let head = b"POST /v1/traces HTTP/1.1\r\nHost: spangate\r\n".repeat(100);
    while target.running() {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            target
                .tally
                .count("row 2: headers at 1 byte/s", "connect error");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut outcome = "still sending at the end";
        for byte in &head {
            if !target.running() {
                break;
            }
            if stream.write_all(&[*byte]).await.is_err() {
                outcome = "closed";
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::ZERO, stream.read(&mut probe)).await
            {
                outcome = "closed";
                break;
            }
        }
        target.tally.count("row 2: headers at 1 byte/s", outcome);
    }
}

/// An upload of 4,000,000 bytes stalled after 3,900,000, again and again.
async fn stalled_upload(target: Arc<Target>, body: Bytes) {
    let head = "POST /v1/traces HTTP/1.1\r\nHost: spangate\r\n\
                Content-Type: application/x-protobuf\r\nContent-Length: 4000000\r\n\r\n";
    while target.running() {
        let Ok(mut stream) = TcpStream::connect(target.http).await else {
            target
                .tally
                .count("row 2: upload stalled at 3.9 of 4 MB", "connect error");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body[..3_900_000]).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), sent).await;
        let answer = until_closed(&target, &mut stream).await;
        target
            .tally
            .count("row 2: upload stalled at 3.9 of 4 MB", answer);
    }
}

/// Asks the probes and OFREP every 200 ms; counts the answers and keeps the
/// slowest.
async fn probe(target: Arc<Target>, slowest: Arc<Mutex<Duration>>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    while target.running() {
        for (what, request) in [
            (
                "probes: GET /healthz",
                client.get(format!("http://{}/healthz", target.probes)),
            ),
            (
                "probes: GET /readyz",
                client.get(format!("http://{}/readyz", target.probes)),
            ),
            (
                "OFREP: POST evaluate",
                client
                    .post(format!(
                        "http://{}/ofrep/v1/evaluate/flags/new-checkout",
                        target.ofrep
                    ))
                    .body(r#"{"context":{"targetingKey":"user-1","accountId":"acct-1"}}"#),
            ),
        ] {
            let started = Instant::now();
            let answer = match request.send().await {
                Ok(response) => response.status().to_string(),
                Err(error) => format!("failed: {error}"),
            };
            let took = started.elapsed();
            let mut slowest = slowest.lock().unwrap();
            *slowest = (*slowest).max(took);
            target.tally.count(what, answer);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [grpc, http, ofrep, probes, seconds] = args.as_slice() else {
        eprintln!("usage: hostile OTLP_GRPC OTLP_HTTP OFREP PROBES SECONDS");
        std::process::exit(2);
    };
    let addr = |text: &str| text.parse::<SocketAddr>().expect("an address as host:port");
    let seconds: u64 = seconds.parse().expect("SECONDS is a number");
    let target = Arc::new(Target {
        grpc: addr(grpc),
        http: addr(http),
        ofrep: addr(ofrep),
        probes: addr(probes),
        until: Instant::now() + Duration::from_secs(seconds),
        tally: Tally::default(),
    });
    let empty = empty_spans();
    let full = full_batch();
    eprintln!(
        "attacking for {seconds} s: empty-span requests of {} bytes, batches of {} bytes",
        empty.len(),
        full.len()
    );
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let mut tasks = JoinSet::new();
    tasks.spawn(probe(target.clone(), slowest.clone()));
    for _ in 0..4 {
        tasks.spawn(http_posts(
            target.clone(),
            "row 1: 2,000,000 empty spans over HTTP",
            empty.clone(),
        ));
        tasks.spawn(grpc_calls(
            target.clone(),
            "row 1: 2,000,000 empty spans over gRPC",
            grpc_frame(&empty),
        ));
        tasks.spawn(http_posts(
            target.clone(),
            "row 6: full batch to forward over HTTP",
            full.clone(),
        ));
    }
    for i in 0..4_000 {
        let addr = if i % 2 == 0 { target.http } else { target.grpc };
        tasks.spawn(idle_connection(target.clone(), addr));
    }
    for i in 0..100 {
        let addr = if i % 2 == 0 {
            target.http
        } else {
            target.ofrep
        };
        tasks.spawn(slow_headers(target.clone(), addr));
    }
    for _ in 0..200 {
        tasks.spawn(stalled_upload(target.clone(), full.clone()));
    }
    let stalled = grpc_frame(&vec![0x0a; 4_000_000 - 5]);
    for _ in 0..60 {
        tasks.spawn(stalled_grpc_stream(target.clone(), stalled.clone()));
    }
    // Whatever is still waiting when time is up is abandoned.
    tokio::time::sleep_until((target.until + Duration::from_secs(2)).into()).await;
    tasks.abort_all();

    let tally = target.tally.0.lock().unwrap();
    for (attack, answers) in tally.iter() {
        let answers: Vec<String> = answers.iter().map(|(a, n)| format!("{n} × {a}")).collect();
        println!("{attack}: {}", answers.join(", "));
    }
    println!(
        "slowest probe or OFREP answer: {} ms",
        slowest.lock().unwrap().as_millis()
    );
}
