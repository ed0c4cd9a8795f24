//! `spangate demo` does what its `--help` says: the regression scenario is rolled
//! back by itself after stepping up, the healthy one is promoted, and the exit code
//! says whether the rollout ended as the scenario should.

use std::collections::HashSet;
use std::process::Command;

use crate::common::otlp::{TraceBackend, attribute, text as text_of};
use crate::common::{BIN, scrub_env};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use spangate::ingest::ForwardProtocol;

fn demo(scenario: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = scrub_env(&mut Command::new(BIN))
        .args([
            "demo",
            "--scenario",
            scenario,
            "--deadline",
            "150s",
            "--dir",
        ])
        .arg(dir.path())
        .args(extra)
        .output()
        .expect("run spangate demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What the demo claims is also what its state folder says.
    let state = crate::common::get(dir.path(), &dir.path().join(".spangate"), "new-checkout");
    (
        out.status.success(),
        format!("{text}\nfinal status: {:#}", state["status"]),
    )
}

/// Also exported, as a newcomer with Jaeger would run it: spangate's decisions and
/// the checkout service's spans (forwarded by spangate) reach the backend before
/// the demo exits, and the failing traces the rollback names are among them.
#[tokio::test(flavor = "multi_thread")]
async fn the_regression_is_rolled_back_after_stepping_up() {
    let received = TraceBackend::default();
    let endpoint = received.start(ForwardProtocol::HttpProtobuf).await;
    let args = [
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "http/protobuf",
        "--trace-url-template",
        "http://localhost:16686/trace/{traceId}",
    ]
    .map(str::to_string);
    let (ok, text) = tokio::task::spawn_blocking(move || {
        demo("regression", &args.each_ref().map(String::as_str))
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("▶ StepAdvanced"), "{text}");
    assert!(text.contains("▶ RolledBack"), "{text}");
    assert!(text.contains("failed checks"), "{text}");
    assert!(text.contains("\"phase\": \"RolledBack\""), "{text}");
    assert!(text.contains("in Jaeger search for"), "{text}");

    // Everything was flushed before the demo exited: no waiting here.
    let spans = received.spans();
    let rollback = spans
        .iter()
        .find(|(service, span)| {
            service == "spangate"
                && span.name == "decision"
                && attribute(span, "reason").as_deref() == Some("RolledBack")
        })
        .unwrap_or_else(|| panic!("no RolledBack decision among {} spans", spans.len()));
    assert!(
        attribute(&rollback.1, "spangate.verdict.message").is_some(),
        "{:?}",
        rollback.1
    );
    // The rollout's whole run is one trace under its `rollout` span.
    let root = spans
        .iter()
        .find(|(service, span)| service == "spangate" && span.name == "rollout")
        .map(|(_, span)| span)
        .unwrap_or_else(|| panic!("no rollout span among {} spans", spans.len()));
    let decisions: Vec<_> = spans
        .iter()
        .filter(|(service, span)| service == "spangate" && span.name == "decision")
        .map(|(_, span)| span)
        .collect();
    assert!(decisions.len() >= 3, "{} decisions", decisions.len());
    for decision in &decisions {
        assert_eq!(decision.trace_id, root.trace_id, "{decision:?}");
        assert_eq!(decision.parent_span_id, root.span_id, "{decision:?}");
    }
    let checkout: HashSet<String> = spans
        .iter()
        .filter(|(service, _)| service == "checkout")
        .map(|(_, span)| hex::encode(&span.trace_id))
        .collect();
    assert!(!checkout.is_empty(), "no checkout span forwarded");
    // The decision links to the failing and the slowest requests of the new
    // variant: spans the backend holds.
    let received: HashSet<(Vec<u8>, Vec<u8>)> = spans
        .iter()
        .map(|(_, span)| (span.trace_id.clone(), span.span_id.clone()))
        .collect();
    let links = &rollback.1.links;
    let why = |link: &opentelemetry_proto::tonic::trace::v1::span::Link| {
        link.attributes
            .iter()
            .find(|kv| kv.key == "spangate.exemplar")
            .and_then(|kv| text_of(kv.value.as_ref()?.value.as_ref()?))
    };
    assert!(
        links.iter().any(|l| why(l).as_deref() == Some("error")),
        "{links:?}"
    );
    assert!(
        links.iter().any(|l| why(l).as_deref() == Some("slowest")),
        "{links:?}"
    );
    for link in links {
        assert!(
            received.contains(&(link.trace_id.clone(), link.span_id.clone())),
            "the decision links to a span the backend never received: {link:?}"
        );
    }
    let failing = rollback
        .1
        .attributes
        .iter()
        .find(|kv| kv.key == "spangate.exemplar_trace_ids")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Any::ArrayValue(ids) => Some(ids.values.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no failing traces named in {:?}", rollback.1));
    assert!(!failing.is_empty());
    for id in &failing {
        let id = text_of(id.value.as_ref().unwrap()).unwrap();
        assert!(checkout.contains(&id), "trace {id} named but not received");
        assert!(text.contains(&format!("trace {id}")), "{text}");
    }
    // With the template, the evidence names the failing and slowest requests as
    // links, and the status holds them too.
    assert!(
        text.contains("failed trace    http://localhost:16686/trace/"),
        "{text}"
    );
    assert!(
        text.contains("slowest trace   http://localhost:16686/trace/"),
        "{text}"
    );
    assert!(
        text.contains("\"traceUrl\": \"http://localhost:16686/trace/"),
        "{text}"
    );
}

#[test]
fn the_healthy_variant_is_promoted() {
    let (ok, text) = demo("healthy", &[]);
    assert!(ok, "{text}");
    assert!(text.contains("▶ Promoted"), "{text}");
    assert!(text.contains("\"phase\": \"Promoted\""), "{text}");
}
