//! The in-cluster reconcile against a mock API server (kube-rs's `tower-test`):
//! every request the controller makes is checked, answered, and counted, so "one
//! status patch and one event" means exactly that.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use spangate::analysis::{Arm, Observation, Route, Window, WindowEpoch};
use spangate::api::{FeatureRollout, FeatureRolloutStatus, Phase};
use spangate::controller::kube::{Context, FINALIZER, reconcile};
use spangate::controller::{Reconciler, SegmentCatalog, SpanWindows};
use spangate::flags::FlagSet;
use spangate::store::{KubeStore, RolloutKey};

use crate::common::fixture::RolloutFixture;

/// Span windows that hold whatever the test puts in them: the rollout's service's,
/// and its downstream services'.
#[derive(Default)]
struct FixedWindows(Mutex<Window>, Vec<(String, Window)>);

impl SpanWindows for FixedWindows {
    fn window(&self, _rollout: &str, _epoch: WindowEpoch) -> Window {
        self.0.lock().unwrap().clone()
    }

    fn downstream_windows(&self, _rollout: &str, _epoch: WindowEpoch) -> Vec<(String, Window)> {
        self.1.clone()
    }

    fn set_routes(&self, _routes: Vec<Route>) {}

    fn samples_recorded(&self) -> u64 {
        0
    }
}

/// The rollout as the API server hands it out, with `status` and `finalizers`.
fn rollout(status: Option<Value>, finalizers: &[&str]) -> FeatureRollout {
    let mut rollout = RolloutFixture::new("new-checkout")
        .bucket_by(None)
        .revision(None)
        .steps([5, 25, 100])
        .analysis(json!({"minSamples": 50, "maxErrorRate": 0.05}))
        .resource();
    let meta = &mut rollout.metadata;
    meta.uid = Some("6d1f0b0e-0000-4000-8000-000000000001".into());
    meta.generation = Some(1);
    meta.resource_version = Some("100".into());
    meta.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    rollout.status = status.map(|s| serde_json::from_value(s).unwrap());
    rollout
}

/// The status the controller leaves after its first visit, a minute ago.
fn started() -> FeatureRolloutStatus {
    started_as(rollout(None, &[FINALIZER]))
}

/// The status the controller leaves after its first visit to `first`, a minute ago.
fn started_as(first: FeatureRollout) -> FeatureRolloutStatus {
    let compiled = SegmentCatalog::default()
        .compile(
            &RolloutKey::new("default", "new-checkout"),
            Arc::new(first.spec),
        )
        .unwrap_or_else(|invalid| panic!("does not compile: {invalid}"));
    let decision = spangate::rollout::decide(spangate::rollout::Input {
        rollout: &compiled,
        generation: Some(1),
        status: &FeatureRolloutStatus::default(),
        verdict: None,
        now: jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60),
        request: None,
    });
    assert_eq!(decision.status.phase, Phase::Progressing);
    decision.status
}

type ApiHandle = Handle<Request<Body>, Response<Body>>;

struct Setup {
    ctx: Arc<Context>,
    handle: Option<ApiHandle>,
    cache: reflector::store::Writer<FeatureRollout>,
}

impl Setup {
    fn new(window: Window) -> Self {
        Self::with_downstream(window, Vec::new())
    }

    fn with_downstream(window: Window, downstream: Vec<(String, Window)>) -> Self {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (reader, cache) = reflector::store::<FeatureRollout>();
        let store = KubeStore::new(client, reader, "spangate-test");
        let flags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
        let windows = Arc::new(FixedWindows(Mutex::new(window), downstream));
        let reconciler = Reconciler::new(store, windows, flags);
        Self {
            ctx: Arc::new(Context::new(reconciler, Duration::from_secs(1))),
            handle: Some(handle),
            cache,
        }
    }

    /// Reconciles `rollout` while `api` answers the requests it makes, and checks
    /// that it made no others; returns what `api` returns.
    async fn reconcile<T>(
        &mut self,
        rollout: FeatureRollout,
        api: impl AsyncFnOnce(&mut ApiHandle) -> T,
    ) -> T {
        self.cache
            .apply_watcher_event(&watcher::Event::Apply(rollout.clone()));
        let mut handle = self.handle.take().expect("one reconcile at a time");
        let (result, answered) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(
                reconcile(Arc::new(rollout), self.ctx.clone()),
                api(&mut handle),
            )
        })
        .await
        .expect("reconcile and the mock API server finished (a hang means they disagree on the requests)");
        result.expect("reconcile succeeded");
        // Every request was answered; one more would be a request nobody expected.
        assert!(
            futures::FutureExt::now_or_never(handle.next_request()).is_none(),
            "reconcile made a request the test did not expect"
        );
        self.handle = Some(handle);
        answered
    }
}

/// Takes the next request, checks its method and path, answers `reply`, and returns
/// the request's JSON body.
async fn expect(
    handle: &mut Handle<Request<Body>, Response<Body>>,
    method: Method,
    path: &str,
    reply: Value,
) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path, "{}", request.uri());
    let query = request.uri().query().unwrap_or_default().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    if path.ends_with("/status") {
        assert!(
            query.contains("fieldManager=spangate") && query.contains("force=true"),
            "status is applied server-side by spangate: {query}"
        );
    }
    // A status patch is answered with the rollout as it now stands.
    let reply = if path.ends_with("/status") {
        let mut doc = serde_json::to_value(rollout(None, &[FINALIZER])).unwrap();
        doc["metadata"]["resourceVersion"] = json!("101");
        doc["status"] = body["status"].clone();
        doc
    } else {
        reply
    };
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    body
}

const ROLLOUT_PATH: &str =
    "/apis/spangate.dev/v1alpha1/namespaces/default/featurerollouts/new-checkout";
const STATUS_PATH: &str =
    "/apis/spangate.dev/v1alpha1/namespaces/default/featurerollouts/new-checkout/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn window(samples: u64, candidate_errors: u64) -> Window {
    let mut window = Window::default();
    for i in 0..samples {
        window.record(
            Arm::Baseline,
            &Observation::span(false, 20_000_000, [1; 16]),
        );
        let failed = i < candidate_errors;
        window.record(
            Arm::Candidate,
            &Observation::span(failed, 20_000_000, [2; 16]),
        );
    }
    window
}

#[tokio::test]
async fn first_sight_adds_the_finalizer_then_sets_conditions() {
    let mut setup = Setup::new(Window::default());
    let patch = setup
        .reconcile(rollout(None, &[]), async |api| {
            let answer = serde_json::to_value(rollout(None, &[FINALIZER])).unwrap();
            expect(api, Method::PATCH, ROLLOUT_PATH, answer).await
        })
        .await;
    assert!(
        patch.to_string().contains(FINALIZER),
        "the finalizer is added first: {patch}"
    );

    let (status, event) = setup
        .reconcile(rollout(None, &[FINALIZER]), async |api| {
            let status = expect(api, Method::PATCH, STATUS_PATH, Value::Null).await;
            let event = expect(api, Method::POST, EVENTS_PATH, json!({})).await;
            (status, event)
        })
        .await;
    let s = &status["status"];
    assert_eq!(status["kind"], "FeatureRollout");
    assert_eq!(s["phase"], "Progressing");
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(condition(s, "Ready")["status"], "True");
    assert_eq!(condition(s, "Ready")["observedGeneration"], 1);
    assert_eq!(condition(s, "Progressing")["status"], "True");
    assert_eq!(condition(s, "Healthy")["reason"], "NoVerdict");
    assert_eq!(event["reason"], "Started");
    assert_eq!(event["type"], "Normal");
    assert_eq!(
        event["regarding"]["uid"],
        "6d1f0b0e-0000-4000-8000-000000000001"
    );
    assert_eq!(event["reportingController"], "spangate.dev/controller");
    assert_eq!(event["note"], "rollout started; step 1/3 at 5%");
}

#[tokio::test]
async fn a_passing_step_advances_with_one_status_patch_and_one_event() {
    let status = serde_json::to_value(started()).unwrap();
    let mut setup = Setup::new(window(60, 0));
    let (patch, event) = setup
        .reconcile(rollout(Some(status), &[FINALIZER]), async |api| {
            let patch = expect(api, Method::PATCH, STATUS_PATH, Value::Null).await;
            let event = expect(api, Method::POST, EVENTS_PATH, json!({})).await;
            (patch, event)
        })
        .await;
    let s = &patch["status"];
    assert_eq!(
        (s["phase"].as_str(), s["currentStep"].as_u64()),
        (Some("Progressing"), Some(1))
    );
    assert_eq!(s["weight"], 25.0);
    assert_eq!(s["verdict"], "Pass");
    assert_eq!(event["reason"], "StepAdvanced");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .starts_with("step 1/3 passed"),
        "{event}"
    );
    // The new step is served at once.
    assert_eq!(served_weight(&setup), Some(2500));
}

#[tokio::test]
async fn a_failing_step_rolls_back_with_a_warning() {
    let status = serde_json::to_value(started()).unwrap();
    let mut setup = Setup::new(window(60, 30));
    let (patch, event) = setup
        .reconcile(rollout(Some(status), &[FINALIZER]), async |api| {
            let patch = expect(api, Method::PATCH, STATUS_PATH, Value::Null).await;
            let event = expect(api, Method::POST, EVENTS_PATH, json!({})).await;
            (patch, event)
        })
        .await;
    let s = &patch["status"];
    assert_eq!(
        (s["phase"].as_str(), s["weight"].as_f64()),
        (Some("RolledBack"), Some(0.0))
    );
    assert_eq!(condition(s, "Ready")["status"], "False");
    assert_eq!(condition(s, "Healthy")["reason"], "AnalysisFail");
    assert_eq!(s["lastVerdict"]["failedChecks"], json!(["maxErrorRate"]));
    assert_eq!(
        (event["reason"].as_str(), event["type"].as_str()),
        (Some("RolledBack"), Some("Warning"))
    );
    assert!(
        event["note"].as_str().unwrap().contains("maxErrorRate"),
        "{event}"
    );
    assert_eq!(served_weight(&setup), Some(0));
}

#[tokio::test]
async fn a_regression_of_a_downstream_service_rolls_back_naming_it() {
    let with_payments = |status: Option<Value>| {
        let mut rollout = rollout(status, &[FINALIZER]);
        rollout.spec.downstream_services = vec!["payments".into()];
        rollout
    };
    let status = serde_json::to_value(started_as(with_payments(None))).unwrap();
    // checkout is healthy; half of payments' spans of users served `on` fail.
    let mut setup =
        Setup::with_downstream(window(60, 0), vec![("payments".into(), window(60, 30))]);
    let (patch, event) = setup
        .reconcile(with_payments(Some(status)), async |api| {
            let patch = expect(api, Method::PATCH, STATUS_PATH, Value::Null).await;
            let event = expect(api, Method::POST, EVENTS_PATH, json!({})).await;
            (patch, event)
        })
        .await;
    let s = &patch["status"];
    assert_eq!(s["phase"], "RolledBack", "{s}");
    let verdict = &s["lastVerdict"];
    assert_eq!(verdict["failedChecks"], json!(["maxErrorRate"]));
    let failed: Vec<&Value> = verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "Fail")
        .collect();
    assert_eq!(failed.len(), 1, "{verdict}");
    assert_eq!(failed[0]["service"], "payments");
    assert!(
        verdict["message"]
            .as_str()
            .unwrap()
            .starts_with("payments: error rate of on 50%"),
        "{verdict}"
    );
    assert_eq!(event["reason"], "RolledBack");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("payments: error rate of on"),
        "{event}"
    );
    assert_eq!(served_weight(&setup), Some(0));
}

#[tokio::test]
async fn an_invalid_spec_gets_its_condition_and_serves_nothing() {
    let mut invalid = rollout(None, &[FINALIZER]);
    invalid.spec.flag.rollout_variant = "onn".into();
    invalid.spec.steps = vec![5.0, 5.0];
    let mut setup = Setup::new(Window::default());
    let (patch, event) = setup
        .reconcile(invalid, async |api| {
            let patch = expect(api, Method::PATCH, STATUS_PATH, Value::Null).await;
            let event = expect(api, Method::POST, EVENTS_PATH, json!({})).await;
            (patch, event)
        })
        .await;
    let s = &patch["status"];
    assert_eq!(s["phase"], "Invalid");
    let ready = condition(s, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains(r#"spec.flag.rolloutVariant "onn" is not one of the variants"#)
            && message.contains("spec.steps must increase"),
        "{message}"
    );
    assert_eq!(
        (event["reason"].as_str(), event["type"].as_str()),
        (Some("InvalidSpec"), Some("Warning"))
    );
    assert_eq!(served_weight(&setup), None);
}

#[tokio::test]
async fn deletion_stops_serving_the_flag_and_removes_the_finalizer() {
    let status = serde_json::to_value(started()).unwrap();
    let mut setup = Setup::new(Window::default());
    // Served first, as after any reconcile; no spans yet, so only the message
    // changes: one status patch and no event.
    setup
        .reconcile(rollout(Some(status.clone()), &[FINALIZER]), async |api| {
            expect(api, Method::PATCH, STATUS_PATH, Value::Null).await;
        })
        .await;
    assert_eq!(served_weight(&setup), Some(500));

    let mut deleted = rollout(Some(status), &[FINALIZER]);
    deleted.meta_mut().deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    let patch = setup
        .reconcile(deleted, async |api| {
            let answer = serde_json::to_value(rollout(None, &[])).unwrap();
            expect(api, Method::PATCH, ROLLOUT_PATH, answer).await
        })
        .await;
    assert!(
        patch.to_string().contains("remove"),
        "the finalizer is removed: {patch}"
    );
    assert_eq!(served_weight(&setup), None, "the flag is no longer served");
}

#[tokio::test]
async fn promote_and_abort_requests_are_carried_out_and_cleared() {
    let status = serde_json::to_value(started()).unwrap();
    let mut setup = Setup::new(Window::default());
    let mut asked = rollout(Some(status), &[FINALIZER]);
    asked
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(spangate::api::PROMOTE_ANNOTATION.into(), "now".into());
    let (patch, event, cleared) = setup
        .reconcile(asked, async |api| {
            let patch = expect(api, Method::PATCH, STATUS_PATH, Value::Null).await;
            let event = expect(api, Method::POST, EVENTS_PATH, json!({})).await;
            let answer = serde_json::to_value(rollout(None, &[FINALIZER])).unwrap();
            let cleared = expect(api, Method::PATCH, ROLLOUT_PATH, answer).await;
            (patch, event, cleared)
        })
        .await;
    assert_eq!(patch["status"]["phase"], "Promoted");
    assert_eq!(event["reason"], "Promoted");
    assert_eq!(
        cleared["metadata"]["annotations"][spangate::api::PROMOTE_ANNOTATION],
        Value::Null
    );
    assert_eq!(served_weight(&setup), Some(10_000));
}

#[tokio::test]
async fn requests_leave_an_invalid_spec_alone() {
    for annotation in [
        spangate::api::PROMOTE_ANNOTATION,
        spangate::api::ABORT_ANNOTATION,
    ] {
        let mut setup = Setup::new(Window::default());
        let mut asked = rollout(None, &[FINALIZER]);
        asked.spec.steps.clear();
        asked
            .meta_mut()
            .annotations
            .get_or_insert_default()
            .insert(annotation.into(), "now".into());
        let (patch, event, cleared) = setup
            .reconcile(asked, async |api| {
                let patch = expect(api, Method::PATCH, STATUS_PATH, Value::Null).await;
                let event = expect(api, Method::POST, EVENTS_PATH, json!({})).await;
                let answer = serde_json::to_value(rollout(None, &[FINALIZER])).unwrap();
                let cleared = expect(api, Method::PATCH, ROLLOUT_PATH, answer).await;
                (patch, event, cleared)
            })
            .await;
        assert_eq!(patch["status"]["phase"], "Invalid", "{annotation}");
        assert_eq!(patch["status"]["step"], Value::Null, "{annotation}");
        assert_eq!(event["reason"], "InvalidSpec", "{annotation}");
        // Cleared all the same: the request does not linger until the spec is fixed.
        assert_eq!(
            cleared["metadata"]["annotations"][annotation],
            Value::Null,
            "{annotation}"
        );
        assert_eq!(served_weight(&setup), None, "{annotation}");
    }
}

fn served_weight(setup: &Setup) -> Option<u64> {
    let flags = setup.ctx.reconciler.publisher().flags().load();
    let flag = flags.get("new-checkout")?;
    Some(flag.percentage.as_ref().map_or(0, |p| p.weight))
}
