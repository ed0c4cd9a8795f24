//! Private attributes never leave the process, whatever shape a value takes. A
//! property test generates OTLP attribute trees (key-value lists and arrays nested
//! in each other, and every kind of scalar) with private keys at random places on
//! resources, scopes, spans, span events and links. Each request goes over OTLP/gRPC,
//! OTLP/HTTP protobuf or OTLP/HTTP JSON to a real `spangate standalone` that
//! forwards to a test backend over OTLP/HTTP, and the span's attributes go to OFREP
//! as an evaluation context. Every forwarded span must equal what the README's rule
//! (written again here, independently) makes of it. Requests nested as deep as each
//! receiver accepts check that hiding reaches the bottom, and a malformed request
//! holding a private value is refused without quoting it. At the end every output
//! is searched for every private value planted: the forwarded bytes, spangate's own
//! exported spans, its debug logs, its state folder, the rollouts' status,
//! `/metrics`, and the OTLP and OFREP answers. The shown values of the same requests
//! are searched for too, to prove that the outputs that show contexts would have
//! shown a leak.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::common::otlp::TraceBackend;
use crate::common::{Addrs, Spangate, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use prost::Message as _;
use serde_json::{Map, Value, json};
use spangate::ingest::ForwardProtocol;

/// The operator's private attributes (`--private-attributes`).
const OPERATOR_PRIVATE: &str = "email,phones.0";

const ROLLOUT: &str = r#"apiVersion: spangate.dev/v1alpha1
kind: FeatureRollout
metadata: {name: checkout, namespace: default}
spec:
  flag: {key: new-checkout, variants: {"off": false, "on": true}, defaultVariant: "off", rolloutVariant: "on"}
  bucketBy: accountId
  service: checkout
  steps: [50, 100]
  stepDuration: 1h
  analysis: {maxErrorRate: 0.05}
  privateAttributes: [profile.ssn]
  targeting:
    rules:
    - name: corp
      clauses: [{attribute: email, op: endsWith, values: ["@corp.example"]}]
      variant: "on"
"#;

/// A flag whose targeting key itself is private.
const BANNER: &str = r#"apiVersion: spangate.dev/v1alpha1
kind: FeatureRollout
metadata: {name: banner, namespace: default}
spec:
  flag: {key: banner, variants: {"a": "A", "b": "B"}, defaultVariant: "a"}
  privateAttributes: [targetingKey]
  targeting:
    rules:
    - clauses: [{attribute: plan, op: in, values: [elite]}]
      variant: "b"
"#;

/// The names that hide, as the README states the rule: every private path in
/// force, and where OpenTelemetry puts a targeting key, since it is private.
const HIDDEN: [&str; 6] = [
    "email",
    "phones.0",
    "profile.ssn",
    "targetingKey",
    "feature_flag.context.id",
    "enduser.id",
];

/// The keys generated: private paths, their ends and parts, near misses that must
/// stay shown, and neutral names.
const KEYS: [&str; 30] = [
    "email",
    "user.email",
    "enduser.email",
    "feature_flag.context.email",
    "profile",
    "ssn",
    "profile.ssn",
    "billing.profile.ssn",
    "phones",
    "0",
    "1",
    "targetingKey",
    "enduser.id",
    "feature_flag.context.id",
    "enduser",
    "id",
    "user_email",
    "emails",
    "email.verified",
    "email_hash",
    "ssn_last4",
    "profiles",
    "phone",
    "arr",
    "ctx",
    "plan",
    "city",
    "items",
    "user",
    "context",
];

const SEED: [u8; 32] = *b"spangate private attributes seed";
const CASES: u32 = 100;
const LIMIT: Duration = Duration::from_secs(30);

/// An attribute value. Strings and bytes hold markers, given once a shape is drawn.
#[derive(Debug, Clone, PartialEq)]
enum Tree {
    Text(String),
    Bytes(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Array(Vec<Tree>),
    List(Entries),
}

type Entries = Vec<(&'static str, Tree)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// One request: attributes for each place a list of them can be.
#[derive(Debug, Clone)]
struct Case {
    transport: Transport,
    resource: Entries,
    scope: Entries,
    span: Entries,
    events: Vec<Entries>,
    links: Vec<Entries>,
}

fn tree() -> BoxedStrategy<Tree> {
    let leaf = prop_oneof![
        4 => Just(Tree::Text(String::new())),
        1 => Just(Tree::Bytes(String::new())),
        1 => any::<i64>().prop_map(Tree::Int),
        1 => (-1e6..1e6f64).prop_map(Tree::Double),
        1 => any::<bool>().prop_map(Tree::Bool),
    ];
    leaf.prop_recursive(7, 64, 2, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::Array),
            entries(inner, 4).prop_map(Tree::List),
        ]
    })
    .boxed()
}

/// Attributes with distinct keys, as OTLP requires.
fn entries(value: impl Strategy<Value = Tree>, most: usize) -> impl Strategy<Value = Entries> {
    prop::collection::vec((prop::sample::select(&KEYS[..]), value), 0..most).prop_map(
        |mut entries| {
            let mut seen = HashSet::new();
            entries.retain(|(key, _)| seen.insert(*key));
            entries
        },
    )
}

fn case() -> impl Strategy<Value = Case> {
    let list = || entries(tree(), 5);
    (
        prop_oneof![
            Just(Transport::Grpc),
            Just(Transport::HttpProtobuf),
            Just(Transport::HttpJson)
        ],
        list(),
        list(),
        list(),
        prop::collection::vec(list(), 0..3),
        prop::collection::vec(list(), 0..3),
    )
        .prop_map(|(transport, resource, scope, span, events, links)| Case {
            transport,
            resource,
            scope,
            span,
            events,
            links,
        })
}

/// A marker: never a part of another, and found by [`markers_in`].
fn marker(request: u32, value: u32) -> String {
    format!("m{request:05}x{value:04}q")
}

fn markers_in(output: &[u8]) -> impl Iterator<Item = &str> {
    static PATTERN: std::sync::LazyLock<regex::bytes::Regex> =
        std::sync::LazyLock::new(|| regex::bytes::Regex::new(r"m\d{5}x\d{4}q").unwrap());
    PATTERN
        .find_iter(output)
        .map(|found| std::str::from_utf8(found.as_bytes()).unwrap())
}

fn mark(entries: &mut Entries, request: u32, next: &mut u32) {
    for (_, tree) in entries {
        mark_tree(tree, request, next);
    }
}

fn mark_tree(tree: &mut Tree, request: u32, next: &mut u32) {
    match tree {
        Tree::Text(text) | Tree::Bytes(text) => {
            *text = marker(request, *next);
            *next += 1;
        }
        Tree::Array(items) => {
            for item in items {
                mark_tree(item, request, next);
            }
        }
        Tree::List(entries) => mark(entries, request, next),
        Tree::Int(_) | Tree::Double(_) | Tree::Bool(_) => {}
    }
}

/// What the rule makes of the markers of a request.
#[derive(Debug, Default)]
struct Planted {
    /// Markers that must not be shown, with where they were.
    secret: Vec<(String, String)>,
    /// Markers that must be shown.
    shown: Vec<String>,
}

/// The README's rule: a value's names are the keys on the way to it joined with
/// dots, each array item named with and without its index; it hides when one of
/// its names is a hidden path or ends with a dot and one.
fn hides(names: &[String]) -> bool {
    names.iter().any(|name| {
        HIDDEN
            .iter()
            .any(|path| name == path || name.ends_with(&format!(".{path}")))
    })
}

fn redact_entries(
    entries: &Entries,
    parent: &[String],
    place: &str,
    planted: &mut Planted,
) -> Entries {
    entries
        .iter()
        .map(|(key, tree)| {
            let names: Vec<String> = if parent.is_empty() {
                vec![key.to_string()]
            } else {
                parent.iter().map(|name| format!("{name}.{key}")).collect()
            };
            let place = format!("{place}>{key}");
            (*key, redact_tree(tree, &names, &place, planted))
        })
        .collect()
}

fn redact_tree(tree: &Tree, names: &[String], place: &str, planted: &mut Planted) -> Tree {
    if hides(names) {
        every_marker(tree, &mut |marker| {
            planted.secret.push((marker.to_string(), place.to_string()))
        });
        return Tree::Text("[private]".to_string());
    }
    match tree {
        Tree::Text(marker) | Tree::Bytes(marker) => {
            planted.shown.push(marker.clone());
            tree.clone()
        }
        Tree::Array(items) => Tree::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let names: Vec<String> = names
                        .iter()
                        .flat_map(|name| [name.clone(), format!("{name}.{index}")])
                        .collect();
                    redact_tree(item, &names, &format!("{place}[{index}]"), planted)
                })
                .collect(),
        ),
        Tree::List(entries) => Tree::List(redact_entries(entries, names, place, planted)),
        Tree::Int(_) | Tree::Double(_) | Tree::Bool(_) => tree.clone(),
    }
}

fn every_marker(tree: &Tree, found: &mut impl FnMut(&str)) {
    match tree {
        Tree::Text(marker) | Tree::Bytes(marker) => found(marker),
        Tree::Array(items) => items.iter().for_each(|item| every_marker(item, found)),
        Tree::List(entries) => entries.iter().for_each(|(_, t)| every_marker(t, found)),
        Tree::Int(_) | Tree::Double(_) | Tree::Bool(_) => {}
    }
}

fn any_value(tree: &Tree) -> AnyValue {
    use any_value::Value as V;
    let value = match tree {
        Tree::Text(text) => V::StringValue(text.clone()),
        Tree::Bytes(text) => V::BytesValue(text.as_bytes().to_vec()),
        Tree::Int(i) => V::IntValue(*i),
        Tree::Double(d) => V::DoubleValue(*d),
        Tree::Bool(b) => V::BoolValue(*b),
        Tree::Array(items) => V::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect(),
        }),
        Tree::List(entries) => V::KvlistValue(KeyValueList {
            values: attributes(entries),
        }),
    };
    AnyValue { value: Some(value) }
}

fn attributes(entries: &Entries) -> Vec<KeyValue> {
    entries
        .iter()
        .map(|(key, tree)| KeyValue {
            key: key.to_string(),
            value: Some(any_value(tree)),
            ..Default::default()
        })
        .collect()
}

fn json_value(tree: &Tree) -> Value {
    match tree {
        Tree::Text(text) | Tree::Bytes(text) => json!(text),
        Tree::Int(i) => json!(i),
        Tree::Double(d) => json!(d),
        Tree::Bool(b) => json!(b),
        Tree::Array(items) => items.iter().map(json_value).collect(),
        Tree::List(entries) => Value::Object(json_object(entries)),
    }
}

fn json_object(entries: &Entries) -> Map<String, Value> {
    entries
        .iter()
        .map(|(key, tree)| (key.to_string(), json_value(tree)))
        .collect()
}

fn text(key: &'static str, value: &str) -> (&'static str, Tree) {
    (key, Tree::Text(value.to_string()))
}

/// The request's one group of spans: fixed attributes that make the span count for
/// the checkout rollout, then the case's.
fn resource_spans(case: &Case, trace_id: &[u8]) -> ResourceSpans {
    let mut resource = vec![text("service.name", "checkout")];
    resource.extend(case.resource.iter().cloned());
    let mut span = vec![
        text("feature_flag.key", "new-checkout"),
        text("feature_flag.result.variant", "on"),
    ];
    span.extend(case.span.iter().cloned());
    ResourceSpans {
        resource: Some(Resource {
            attributes: attributes(&resource),
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "checkout-handler".to_string(),
                version: "1.0.0".to_string(),
                attributes: attributes(&case.scope),
                ..Default::default()
            }),
            spans: vec![Span {
                trace_id: trace_id.to_vec(),
                span_id: vec![0x5b; 8],
                name: "checkout".to_string(),
                start_time_unix_nano: 1_000_000,
                end_time_unix_nano: 2_000_000,
                attributes: attributes(&span),
                events: case
                    .events
                    .iter()
                    .map(|event| Event {
                        time_unix_nano: 1_500_000,
                        name: "note".to_string(),
                        attributes: attributes(event),
                        ..Default::default()
                    })
                    .collect(),
                links: case
                    .links
                    .iter()
                    .enumerate()
                    .map(|(i, link)| Link {
                        trace_id: vec![0x11; 16],
                        span_id: vec![i as u8 + 1; 8],
                        attributes: attributes(link),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn trace_id(request: u32) -> Vec<u8> {
    let mut id = vec![0x7e; 16];
    id[12..].copy_from_slice(&request.to_be_bytes());
    id
}

/// A case, marked and sent: what goes out, and what must come out.
struct Prepared {
    request: ExportTraceServiceRequest,
    trace_id: Vec<u8>,
    expected: ResourceSpans,
    planted: Planted,
    context: Map<String, Value>,
    /// Markers of the context that must be shown.
    context_shown: Vec<String>,
}

fn prepare(case: &Case, number: u32) -> Prepared {
    let mut case = case.clone();
    let mut next = 0;
    let lists = [&mut case.resource, &mut case.scope, &mut case.span];
    for list in lists
        .into_iter()
        .chain(case.events.iter_mut())
        .chain(case.links.iter_mut())
    {
        mark(list, number, &mut next);
    }
    let mut planted = Planted::default();
    let redacted = Case {
        transport: case.transport,
        resource: redact_entries(&case.resource, &[], "resource", &mut planted),
        scope: redact_entries(&case.scope, &[], "scope", &mut planted),
        span: redact_entries(&case.span, &[], "span", &mut planted),
        events: (case.events.iter().enumerate())
            .map(|(i, e)| redact_entries(e, &[], &format!("event{i}"), &mut planted))
            .collect(),
        links: (case.links.iter().enumerate())
            .map(|(i, l)| redact_entries(l, &[], &format!("link{i}"), &mut planted))
            .collect(),
    };
    let trace_id = trace_id(number);
    let request = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(&case, &trace_id)],
    };
    let expected = resource_spans(&redacted, &trace_id);

    // The span's attributes as a context, with a (private) targeting key; its
    // values are the span's, and so is what must be shown of them.
    let mut in_context = Planted::default();
    redact_entries(&case.span, &[], "context", &mut in_context);
    let mut context = json_object(&case.span);
    if !context.contains_key("targetingKey") {
        let key = marker(number, next);
        planted
            .secret
            .push((key.clone(), "context>targetingKey".to_string()));
        context.insert("targetingKey".to_string(), json!(key));
    }
    context.insert("accountId".to_string(), json!(format!("acct-{number}")));
    Prepared {
        request,
        trace_id,
        expected,
        planted,
        context,
        context_shown: in_context.shown,
    }
}

/// What spangate answered: accepted whole, refused with this text, or accepted
/// but for the spans a partial success names.
#[derive(Debug)]
enum Answer {
    Accepted,
    Refused(String),
    Partial(String),
}

/// OTLP and OFREP clients of one spangate.
struct Clients {
    addrs: Addrs,
    runtime: tokio::runtime::Handle,
    grpc: TraceServiceClient<tonic::transport::Channel>,
    http: reqwest::blocking::Client,
    /// Every answer's text, to be searched.
    answers: RefCell<String>,
}

impl Clients {
    fn send(&self, transport: Transport, request: &ExportTraceServiceRequest) -> Answer {
        let answer = match transport {
            Transport::Grpc => {
                let mut client = self.grpc.clone();
                match self.runtime.block_on(client.export(request.clone())) {
                    Ok(response) => {
                        let response = response.into_inner();
                        self.answers
                            .borrow_mut()
                            .push_str(&format!("{response:?}\n"));
                        match response.partial_success {
                            Some(partial) => Answer::Partial(partial.error_message),
                            None => Answer::Accepted,
                        }
                    }
                    Err(status) => {
                        Answer::Refused(format!("{:?}: {}", status.code(), status.message()))
                    }
                }
            }
            Transport::HttpProtobuf => {
                self.post_otlp("application/x-protobuf", request.encode_to_vec())
            }
            Transport::HttpJson => {
                self.post_otlp("application/json", serde_json::to_vec(request).unwrap())
            }
        };
        if let Answer::Refused(text) | Answer::Partial(text) = &answer {
            self.answers.borrow_mut().push_str(text);
        }
        answer
    }

    fn post_otlp(&self, content_type: &str, body: Vec<u8>) -> Answer {
        let response = self
            .http
            .post(format!("http://{}/v1/traces", self.addrs.otlp_http))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("OTLP/HTTP answers");
        let status = response.status();
        let body = response.bytes().unwrap();
        if !status.is_success() {
            return Answer::Refused(format!(
                "{} {}",
                status.as_u16(),
                String::from_utf8_lossy(&body)
            ));
        }
        self.answers
            .borrow_mut()
            .push_str(&String::from_utf8_lossy(&body));
        let partial = if content_type == "application/json" {
            serde_json::from_slice::<Value>(&body).unwrap()["partialSuccess"]["errorMessage"]
                .as_str()
                .map(str::to_string)
        } else {
            ExportTraceServiceResponse::decode(body)
                .unwrap()
                .partial_success
                .map(|p| p.error_message)
        };
        match partial {
            Some(message) => Answer::Partial(message),
            None => Answer::Accepted,
        }
    }

    fn post_ofrep(&self, path: &str, context: &Map<String, Value>) -> String {
        let response = self
            .http
            .post(format!("http://{}{path}", self.addrs.ofrep))
            .json(&json!({ "context": context }))
            .send()
            .expect("OFREP answers");
        let headers = format!("{:?}", response.headers());
        let answer = format!("{headers}\n{}\n", response.text().unwrap());
        self.answers.borrow_mut().push_str(&answer);
        answer
    }
}

/// The group of spans of `trace_id` as the backend received it.
fn forwarded(backend: &TraceBackend, trace_id: &[u8]) -> ResourceSpans {
    wait_for("the forwarded span", LIMIT, || {
        backend
            .requests()
            .into_iter()
            .flat_map(|request| request.resource_spans)
            .find(|group| {
                (group.scope_spans.iter().flat_map(|s| &s.spans)).any(|s| s.trace_id == trace_id)
            })
    })
}

fn encoded(backend: &TraceBackend) -> Vec<u8> {
    backend
        .requests()
        .iter()
        .flat_map(|request| request.encode_to_vec())
        .collect()
}

fn read_tree(dir: &std::path::Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(&path, out);
        } else {
            out.extend(format!("--- {}\n", path.display()).into_bytes());
            out.extend(std::fs::read(&path).unwrap());
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn private_values_appear_in_no_output_whatever_their_shape() {
    let forwarded = TraceBackend::default();
    let forward_endpoint = forwarded.start(ForwardProtocol::HttpProtobuf).await;
    let own = TraceBackend::default();
    let own_endpoint = own.start(ForwardProtocol::Grpc).await;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        search_every_output(runtime, &forward_endpoint, &forwarded, &own_endpoint, &own)
    })
    .await
    .unwrap();
}

fn search_every_output(
    runtime: tokio::runtime::Handle,
    forward_endpoint: &str,
    forwarded_to: &TraceBackend,
    own_endpoint: &str,
    own: &TraceBackend,
) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("checkout.yaml"), ROLLOUT).unwrap();
    std::fs::write(dir.join("banner.yaml"), BANNER).unwrap();
    let state = temp.path().join("state");
    let mut spangate = Spangate::start_with_env(
        &dir,
        &state,
        &[
            ("RUST_LOG", "debug"),
            ("SPANGATE_PRIVATE_ATTRIBUTES", OPERATOR_PRIVATE),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", own_endpoint),
            ("SPANGATE_FORWARD_ENDPOINT", forward_endpoint),
            ("SPANGATE_FORWARD_PROTOCOL", "http/protobuf"),
        ],
    );
    spangate.wait_status("checkout", "the rollout to start", LIMIT, |s| {
        s["phase"] == "Progressing"
    });
    let grpc = runtime
        .block_on(TraceServiceClient::connect(format!(
            "http://{}",
            spangate.addrs.otlp_grpc
        )))
        .expect("the OTLP/gRPC receiver answers");
    let clients = Clients {
        addrs: spangate.addrs,
        runtime,
        grpc,
        http: reqwest::blocking::Client::new(),
        answers: RefCell::default(),
    };
    // The rollouts' private attributes are hidden once their flags are published,
    // and their status is written before.
    let email = marker(99_999, 0);
    wait_for("the flags to be published", LIMIT, || {
        let context = json!({"targetingKey": "t", "accountId": "a", "email": format!("{email}@corp.example")});
        let answer = clients.post_ofrep(
            "/ofrep/v1/evaluate/flags/new-checkout",
            context.as_object().unwrap(),
        );
        answer.contains("\"value\"").then_some(answer)
    })
    .contains("\"rule\":\"corp\"")
    .then_some(())
    .expect("targeting reads the private e-mail");

    let secrets: RefCell<HashMap<String, String>> = RefCell::new(HashMap::from([(
        email,
        "an OFREP context's email".to_string(),
    )]));
    let context_shown: RefCell<Vec<String>> = RefCell::default();
    let transports: RefCell<BTreeSet<Transport>> = RefCell::default();
    let numbers = Cell::new(0u32);

    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: CASES,
            failure_persistence: None,
            max_shrink_iters: 200,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &SEED),
    );
    let result = runner.run(&case(), |case| {
        let number = numbers.get();
        numbers.set(number + 1);
        let prepared = prepare(&case, number);
        secrets
            .borrow_mut()
            .extend(prepared.planted.secret.iter().cloned());
        transports.borrow_mut().insert(case.transport);

        let answer = clients.send(case.transport, &prepared.request);
        prop_assert!(matches!(answer, Answer::Accepted), "{answer:?}");
        let mut got = forwarded(forwarded_to, &prepared.trace_id);
        let bytes = got.encode_to_vec();
        for (secret, place) in &prepared.planted.secret {
            prop_assert!(
                !contains(&bytes, secret),
                "{secret} (at {place}) was forwarded in clear"
            );
        }
        // The rollout's flag resolved the trace: the span is tagged with it, and
        // is otherwise what was sent with private values hidden.
        for span in got.scope_spans.iter_mut().flat_map(|s| &mut s.spans) {
            let tags: Vec<&str> = span
                .attributes
                .iter()
                .map(|kv| kv.key.as_str())
                .filter(|key| key.starts_with("spangate."))
                .collect();
            prop_assert_eq!(tags, ["spangate.rollout", "spangate.step"]);
            span.attributes
                .retain(|kv| !kv.key.starts_with("spangate."));
        }
        prop_assert_eq!(&got, &prepared.expected);

        let path = if number.is_multiple_of(2) {
            "/ofrep/v1/evaluate/flags"
        } else {
            "/ofrep/v1/evaluate/flags/banner"
        };
        clients.post_ofrep(path, &prepared.context);
        context_shown.borrow_mut().extend(prepared.context_shown);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert_eq!(transports.borrow().len(), 3, "every transport is used");

    deepest_requests(&clients, forwarded_to, &numbers, &mut secrets.borrow_mut());
    malformed_request(&clients, &numbers, &mut secrets.borrow_mut());

    let metrics = reqwest::blocking::get(format!("http://{}/metrics", spangate.addrs.probes))
        .and_then(|response| response.bytes())
        .expect("/metrics answers");
    let mut status = Vec::new();
    for rollout in ["checkout", "banner"] {
        status.extend(spangate.get(rollout).to_string().into_bytes());
    }
    // A clean stop flushes the spans and the logs.
    let exit = spangate.process.terminate(LIMIT);
    assert!(exit.success(), "spangate did not stop cleanly: {exit}");
    let logs = std::fs::read(&spangate.process.log).unwrap();
    let mut state_files = Vec::new();
    read_tree(&state, &mut state_files);
    let answers = clients.answers.take().into_bytes();
    let outputs: [(&str, &[u8]); 7] = [
        ("forwarded spans", &encoded(forwarded_to)),
        ("spangate's own spans", &encoded(own)),
        ("logs", &logs),
        ("state folder", &state_files),
        ("status", &status),
        ("/metrics", &metrics),
        ("OTLP and OFREP answers", &answers),
    ];

    let secrets = secrets.into_inner();
    let mut leaks = Vec::new();
    for (output, bytes) in outputs {
        for found in markers_in(bytes) {
            if let Some(place) = secrets.get(found) {
                leaks.push(format!("{found} (at {place}) in the {output}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );

    // Proof that the search would have found them: the outputs that show contexts
    // show every value not private, and the redactions.
    let shown = context_shown.into_inner();
    assert!(!shown.is_empty());
    for (output, bytes) in [("logs", &logs), ("spangate's own spans", &encoded(own))] {
        let missing: Vec<_> = shown.iter().filter(|m| !contains(bytes, m)).collect();
        assert!(missing.is_empty(), "{output} do not show {missing:?}");
        assert!(contains(bytes, "[private]"), "{output} show no redaction");
    }
    assert!(contains(&state_files, "events.jsonl") && contains(&state_files, "Progressing"));
    assert!(contains(&metrics, "spangate_forward_spans_total"));

    // The seeded cases plant private values everywhere a value can be.
    let places: Vec<&String> = secrets.values().collect();
    let holding = |shape: &[Container]| {
        places
            .iter()
            .any(|place| containers(place).windows(shape.len()).any(|w| w == shape))
    };
    use Container::{Array, List};
    for (what, found) in [
        (
            "resource",
            places.iter().any(|p| p.starts_with("resource>")),
        ),
        ("scope", places.iter().any(|p| p.starts_with("scope>"))),
        ("span", places.iter().any(|p| p.starts_with("span>"))),
        ("span event", places.iter().any(|p| p.starts_with("event"))),
        ("link", places.iter().any(|p| p.starts_with("link"))),
        ("array item", places.iter().any(|p| p.ends_with(']'))),
        ("key-value list in an array", holding(&[Array, List])),
        ("list in an array in a list", holding(&[List, Array, List])),
        (
            "array in a list in an array",
            holding(&[Array, List, Array]),
        ),
    ] {
        assert!(found, "no private value planted in a {what}: {places:?}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Array,
    List,
}

/// The containers on the way to the value at `place` (`span>ctx>people[1]>email`:
/// a list, an array, a list).
fn containers(place: &str) -> Vec<Container> {
    let steps: Vec<char> = place
        .split_once('>')
        .map_or("", |(_, rest)| rest)
        .chars()
        .filter(|c| matches!(c, '>' | '['))
        .collect();
    steps
        .iter()
        .map(|step| match step {
            '>' => Container::List,
            _ => Container::Array,
        })
        .collect()
}

/// A value nested `depth` times in arrays and key-value lists, at the bottom a
/// list with a private and a shown value.
fn nested(depth: usize, secret: &str, shown: &str) -> Tree {
    let mut tree = Tree::List(vec![
        ("email", Tree::Text(secret.to_string())),
        ("plan", Tree::Text(shown.to_string())),
    ]);
    for level in 0..depth {
        tree = if level % 2 == 0 {
            Tree::Array(vec![tree])
        } else {
            Tree::List(vec![("ctx", tree)])
        };
    }
    tree
}

fn nested_request(depth: usize, number: u32) -> (ExportTraceServiceRequest, Vec<u8>) {
    let case = Case {
        transport: Transport::Grpc,
        resource: Vec::new(),
        scope: Vec::new(),
        span: vec![(
            "deep",
            nested(depth, &marker(number, 0), &marker(number, 1)),
        )],
        events: Vec::new(),
        links: Vec::new(),
    };
    let trace_id = trace_id(number);
    let request = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(&case, &trace_id)],
    };
    (request, trace_id)
}

/// Spans as deep as the receivers accept (`--max-attribute-depth`) are redacted
/// down to the bottom; one level deeper they are rejected alone, as a partial
/// success, and spangate goes on serving.
fn deepest_requests(
    clients: &Clients,
    forwarded_to: &TraceBackend,
    numbers: &Cell<u32>,
    secrets: &mut HashMap<String, String>,
) {
    // `nested(d)` is d + 2 levels deep as the limit counts them: its d containers,
    // the list at the bottom, and that list's values.
    let limit = spangate::ingest::IngestLimits::default().max_attribute_depth - 2;
    for transport in [
        Transport::Grpc,
        Transport::HttpProtobuf,
        Transport::HttpJson,
    ] {
        for depth in [limit, limit + 1] {
            let number = numbers.get();
            numbers.set(number + 1);
            let (secret, shown) = (marker(number, 0), marker(number, 1));
            secrets.insert(secret.clone(), format!("{transport:?} nested {depth} deep"));
            let (request, trace_id) = nested_request(depth, number);
            match clients.send(transport, &request) {
                Answer::Accepted => {
                    assert_eq!(depth, limit, "{transport:?} accepted {depth} levels");
                    let bytes = forwarded(forwarded_to, &trace_id).encode_to_vec();
                    assert!(
                        !contains(&bytes, &secret),
                        "{transport:?} at {depth} levels"
                    );
                    assert!(contains(&bytes, &shown) && contains(&bytes, "[private]"));
                }
                Answer::Partial(why) => {
                    assert_eq!(
                        depth,
                        limit + 1,
                        "{transport:?} rejected {depth} levels: {why}"
                    );
                    assert!(why.contains("nest deeper than"), "{why}");
                }
                Answer::Refused(why) => {
                    panic!("{transport:?} refused the whole request at {depth} levels: {why}")
                }
            }
        }
    }
}

/// A request that is not OTLP, holding a private value where a boolean belongs,
/// is refused without quoting it.
fn malformed_request(
    clients: &Clients,
    numbers: &Cell<u32>,
    secrets: &mut HashMap<String, String>,
) {
    let number = numbers.get();
    numbers.set(number + 1);
    let secret = marker(number, 0);
    secrets.insert(secret.clone(), "a malformed request".to_string());
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "attributes": [{"key": "email", "value": {"boolValue": secret}}],
    }]}]}]});
    // The span that cannot be decoded is rejected alone, as a partial success.
    match clients.post_otlp("application/json", serde_json::to_vec(&body).unwrap()) {
        Answer::Refused(why) | Answer::Partial(why) => {
            assert!(why.contains("expected a boolean"), "{why}");
            clients.answers.borrow_mut().push_str(&why);
        }
        Answer::Accepted => panic!("a malformed request was accepted"),
    }
}
