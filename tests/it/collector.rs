//! A real OpenTelemetry collector in the path: the shop of `trace_join.rs` exports
//! to rotel (`rotel-agent`), rotel batches, gzips and exports OTLP/gRPC to
//! `spangate standalone`, and spangate forwards to a test backend. The rollout must
//! end as without the collector, and no span may be lost or left untagged on the way.
//!
//! Needs `rotel-agent`, named by `SPANGATE_ROTEL_AGENT`; `./scripts/test` installs it
//! (PyPI `rotel`, pinned in `tests/python/requirements.txt`) and runs it.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::otlp::{TraceBackend, attribute};
use crate::common::{ChildGuard, Spangate, scrub_env, wait_for};
use crate::trace_join::{PAYMENTS_SPANS_PER_TRACE, ROUND, Shop, folders};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;
use spangate::ingest::ForwardProtocol;

/// Healthy, every span is at the backend well within a second of the last round.
const ARRIVAL_LIMIT: Duration = Duration::from_secs(20);

fn rotel_agent() -> PathBuf {
    let agent = match std::env::var_os("SPANGATE_ROTEL_AGENT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "SPANGATE_ROTEL_AGENT is not set. This test puts the rotel collector between \
             the services and spangate: run ./scripts/test, which installs it and sets it"
        ),
    };
    assert!(
        agent.exists(),
        "SPANGATE_ROTEL_AGENT={} does not exist: run ./scripts/test",
        agent.display()
    );
    agent
}

/// A loopback port free a moment ago: rotel takes addresses, not port 0.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
}

/// `rotel-agent start` receiving OTLP on loopback and exporting traces over
/// OTLP/gRPC to `endpoint`; returns the process and its gRPC receiver's address.
fn start_rotel(workdir: &Path, endpoint: &str) -> (ChildGuard, SocketAddr) {
    let (grpc, http) = (free_port(), free_port());
    let mut command = Command::new(rotel_agent());
    command
        .arg("start")
        .args(["--otlp-grpc-endpoint", &grpc.to_string()])
        .args(["--otlp-http-endpoint", &http.to_string()])
        .args(["--exporter", "otlp", "--otlp-exporter-endpoint", endpoint])
        // Batches leave within 50 ms rather than the default 200 ms: the test waits
        // on every span.
        .args(["--traces-batch-timeout", "50ms"])
        // Per-test files, not the shared /tmp defaults.
        .arg("--pid-file")
        .arg(workdir.join("rotel.pid"))
        .arg("--log-file")
        .arg(workdir.join("rotel-daemon.log"));
    scrub_env(&mut command);
    let mut rotel = ChildGuard::spawn(&mut command, &workdir.join("rotel.log"));
    wait_for(
        "rotel's OTLP/gRPC receiver",
        Duration::from_secs(30),
        || {
            if let Some(status) = rotel.exited() {
                panic!(
                    "rotel-agent exited ({status}) before it listened\n{}",
                    rotel.log_tail()
                );
            }
            TcpStream::connect(grpc).ok()
        },
    );
    (rotel, grpc)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs rotel: run ./scripts/test"]
async fn through_a_rotel_collector_the_rollout_rolls_back_and_every_span_arrives_tagged() {
    let (temp, dir, state) = folders();
    let sink = TraceBackend::default();
    let sink_endpoint = sink.start(ForwardProtocol::Grpc).await;
    let spangate = Spangate::start_with_args(&dir, &state, &["--forward-endpoint", &sink_endpoint]);
    let (rotel, rotel_grpc) =
        start_rotel(temp.path(), &format!("http://{}", spangate.addrs.otlp_grpc));
    let mut shop = Shop::exporting_to(&spangate, &format!("http://{rotel_grpc}"));

    let status = shop
        .drive(&spangate, |variant, n| variant == "on" && n % 2 == 0)
        .await;
    assert_eq!(
        status["phase"],
        "RolledBack",
        "through rotel the rollout should roll back: {status:#}\n{}",
        rotel.log_tail()
    );
    let verdict = &status["lastVerdict"];
    let message = verdict["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("payments: error rate of on"),
        "the verdict should name payments' error rate: {verdict:#}"
    );
    let failing: Vec<&Value> = verdict["checks"]
        .as_array()
        .expect("the verdict lists its checks")
        .iter()
        .filter(|check| check["outcome"] == "Fail")
        .collect();
    assert!(
        !failing.is_empty() && failing.iter().all(|check| check["service"] == "payments"),
        "only payments' checks should fail: {verdict:#}"
    );

    // Every trace sent arrives whole: rotel's batches and spangate's join may
    // delay spans but must not drop or duplicate one.
    let expected: HashMap<Vec<u8>, &str> = shop
        .sent
        .iter()
        .map(|(id, variant)| (id.to_bytes().to_vec(), variant.as_str()))
        .collect();
    let on_traces = expected.values().filter(|v| **v == "on").count();
    assert!(on_traces > 0, "no trace of the on variant was sent");
    let deadline = Instant::now() + ARRIVAL_LIMIT;
    let received = loop {
        let mut by_trace: HashMap<Vec<u8>, Vec<(String, Span)>> = HashMap::new();
        for (service, span) in sink.spans() {
            by_trace
                .entry(span.trace_id.clone())
                .or_default()
                .push((service, span));
        }
        let short: Vec<String> = expected
            .keys()
            .filter_map(|id| {
                let spans = by_trace.get(id).map_or(&[][..], Vec::as_slice);
                let payments = spans.iter().filter(|(s, _)| s == "payments").count();
                let checkout = spans.iter().filter(|(s, _)| s == "checkout").count();
                let at = index_of(&shop, id);
                (payments < PAYMENTS_SPANS_PER_TRACE || checkout < 1).then(|| {
                    format!(
                        "{} (#{at}): {payments} payments, {checkout} checkout",
                        hex(id)
                    )
                })
            })
            .collect();
        if short.is_empty() {
            break by_trace;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} traces incomplete at the backend after {ARRIVAL_LIMIT:?} (sent {} \
             payments and 1 checkout span each), e.g. {:?}\nspangate metrics:\n{}\n{}\n{}",
            short.len(),
            expected.len(),
            PAYMENTS_SPANS_PER_TRACE,
            &short[..short.len().min(5)],
            spangate.metrics(),
            spangate.log_text(),
            rotel.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for (id, variant) in &expected {
        let spans = &received[id];
        let payments: Vec<&Span> = spans
            .iter()
            .filter(|(s, _)| s == "payments")
            .map(|(_, span)| span)
            .collect();
        assert_eq!(
            (payments.len(), spans.len() - payments.len()),
            (PAYMENTS_SPANS_PER_TRACE, 1),
            "trace {} ({variant}) should arrive with {PAYMENTS_SPANS_PER_TRACE} payments spans \
             and 1 checkout span, no more: {spans:?}",
            hex(id)
        );
        // The last two rounds straddle the verdict: a span that reaches spangate
        // after the rollout ended is forwarded untagged, as the README says.
        if *variant != "on" || index_of(&shop, id) + 2 * ROUND >= shop.sent.len() {
            continue;
        }
        for span in payments {
            assert_eq!(
                (
                    attribute(span, "feature_flag.result.variant").as_deref(),
                    attribute(span, "spangate.rollout").as_deref(),
                ),
                (Some("on"), Some("default/checkout")),
                "#{} payments span {:?} of on trace {} should be tagged with the variant and the \
                 rollout: {span:?}",
                index_of(&shop, id),
                span.name,
                hex(id)
            );
        }
    }
}

/// Where trace `id` was in the order sent: the traces in flight when the rollout
/// ended are the last ones.
fn index_of(shop: &Shop, id: &[u8]) -> usize {
    shop.sent
        .iter()
        .position(|(trace, _)| trace.to_bytes().as_slice() == id)
        .expect("a trace the shop sent")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
