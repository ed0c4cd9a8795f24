//! `spangate run` against a real kube-apiserver (with etcd), driven the way a user
//! drives it: `kubectl apply`, spans over OTLP, `kubectl get`, the kubectl plugin,
//! and the Helm chart's RBAC. The API server is 1.20 (built by `./scripts/test`), so
//! the CRDs' CEL rules are not enforced here (`tests/crd_validation.rs` checks them).

use std::time::Duration;

use crate::common::cluster::{Authorization, Cluster, OPERATOR_USER, Operator, tool};
use crate::common::fixture::{RolloutFixture, from_yaml};
use crate::common::wait_for;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

/// A rollout as these tests judge it: their spans carry no revision, and their
/// evaluations only a targeting key to bucket by.
fn rollout(name: &str) -> RolloutFixture {
    RolloutFixture::new(name)
        .bucket_by(None)
        .revision(None)
        .analysis(json!({"minSamples": 30, "maxErrorRate": 0.05}))
}

fn status(cluster: &Cluster, name: &str) -> Value {
    cluster.get(&["featurerollout", name, "-n", "default"])["status"].clone()
}

/// Waits until the rollout's status satisfies `check`, sending spans with `drive`
/// between looks; returns that status.
fn wait_status(
    cluster: &Cluster,
    operator: &Operator,
    name: &str,
    what: &str,
    mut drive: impl FnMut(),
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let status = status(cluster, name);
        if check(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {LIMIT:?} waiting for {what}; status: {status:#}\n{}",
            operator.process.log_tail()
        );
        drive();
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn phase(status: &Value) -> &str {
    status["phase"].as_str().unwrap_or("")
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// Who holds the leader lease; `None` before anyone took it.
fn lease_holder(cluster: &Cluster) -> Option<String> {
    let out = cluster.kubectl_output(&[
        "get",
        "lease",
        "spangate-leader",
        "-n",
        "spangate",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        .filter(|holder| !holder.is_empty())
}

/// The flag set the operator publishes in its ConfigMap.
fn published_flags(cluster: &Cluster) -> Value {
    let configmap = cluster.get(&["configmap", "spangate-flags", "-n", "spangate"]);
    serde_json::from_str(configmap["data"]["flags.flagd.json"].as_str().unwrap()).unwrap()
}

#[test]
#[ignore = "needs a kube-apiserver, etcd and kubectl: run ./scripts/test"]
fn a_rollout_is_driven_through_kubectl_spans_and_the_plugin() {
    let cluster = Cluster::start(Authorization::AlwaysAllow);
    cluster.apply_crds();
    // A single replica, without leader election.
    let operator = Operator::start(&cluster, &cluster.admin_kubeconfig, "spangate-a", None);

    // Admission: the schema refuses a weight over 100, with the field named.
    let refused = cluster
        .apply(&rollout("too-far").flag("too-far").steps([5, 150]).yaml())
        .expect_err("a step of 150% is refused");
    assert!(
        refused.contains("spec.steps") && refused.contains("100"),
        "{refused}"
    );

    cluster
        .apply(&rollout("checkout").steps([20, 50, 100]).yaml())
        .unwrap();
    let s = wait_status(
        &cluster,
        &operator,
        "checkout",
        "the first step",
        || {},
        |s| phase(s) == "Progressing",
    );
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(condition(&s, "Ready")["status"], "True");
    assert_eq!(condition(&s, "Ready")["observedGeneration"], 1);
    assert_eq!(condition(&s, "Healthy")["status"], "Unknown");
    assert_eq!(operator.probe("/readyz").0, 200);

    // The printer columns, as kubectl shows them.
    let table = cluster.kubectl(&["get", "fr", "-n", "default"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "STEP", "WEIGHT", "VERDICT", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..4],
        ["checkout", "Progressing", "1/3", "20"],
        "{table}"
    );

    // Served over OFREP and published for flagd.
    let (code, answer) = operator.evaluate("new-checkout", "user-1");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["metadata"]["rollout"], "default/checkout");
    let flags = wait_for("the flag in the ConfigMap", LIMIT, || {
        let configmap =
            cluster.kubectl_output(&["get", "configmap", "spangate-flags", "-n", "spangate"]);
        configmap
            .status
            .success()
            .then(|| published_flags(&cluster))
    });
    assert_eq!(
        flags["flags"]["new-checkout"]["metadata"]["weight"], 20.0,
        "{flags}"
    );

    // Healthy spans advance the steps.
    let s = wait_status(
        &cluster,
        &operator,
        "checkout",
        "step 2",
        || operator.send_spans("new-checkout", 40, None),
        |s| s["currentStep"] == 1,
    );
    assert_eq!(
        (phase(&s), s["weight"].as_f64()),
        ("Progressing", Some(50.0))
    );

    // The plugin pauses and resumes through spec.paused; `get -w` shows it happen.
    let watching = cluster.plugin_in_background(&["get", "checkout", "-w"], "get-w");
    let (code, out) = cluster.plugin(&["pause", "checkout"]);
    assert_eq!(code, 0, "{out}");
    wait_status(
        &cluster,
        &operator,
        "checkout",
        "paused",
        || {},
        |s| phase(s) == "Paused",
    );
    wait_for("get -w to print the pause", LIMIT, || {
        let text = std::fs::read_to_string(&watching.log).unwrap_or_default();
        text.lines()
            .any(|l| l.contains("Paused") && l.contains("2/3"))
            .then_some(())
    });
    drop(watching);
    let (code, out) = cluster.plugin(&["get", "checkout"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Paused") && out.contains("2/3"), "{out}");
    let (code, out) = cluster.plugin(&["resume", "checkout"]);
    assert_eq!(code, 0, "{out}");
    wait_status(
        &cluster,
        &operator,
        "checkout",
        "resumed",
        || {},
        |s| phase(s) == "Progressing",
    );

    // Failing spans of the new variant roll it back.
    let s = wait_status(
        &cluster,
        &operator,
        "checkout",
        "the rollback",
        || operator.send_spans("new-checkout", 40, Some(3)),
        |s| phase(s) == "RolledBack",
    );
    assert_eq!(s["weight"], 0.0);
    assert_eq!(condition(&s, "Healthy")["reason"], "AnalysisFail");
    let (code, out) = cluster.plugin(&["status", "checkout"]);
    assert_eq!(code, 3, "status exits 3 for a rolled-back rollout: {out}");
    assert!(out.contains("RolledBack") && out.contains("err"), "{out}");
    assert_eq!(
        cluster.event_reasons("checkout"),
        ["Started", "StepAdvanced", "Paused", "Resumed", "RolledBack"]
    );
    // The operator runs with a trace URL template: status, the plugin, the wide
    // table and the rollback's event carry links.
    let jaeger = "http://jaeger.example:16686/trace/";
    let exemplars = s["lastVerdict"]["exemplarSpans"].as_array().unwrap();
    let failing = exemplars
        .iter()
        .find(|e| e["why"] == "Error")
        .and_then(|e| e["traceUrl"].as_str())
        .unwrap_or_else(|| panic!("no failing span's link in {s:#}"));
    assert!(failing.starts_with(jaeger), "{failing}");
    assert!(out.contains(&format!("failed trace   {failing}")), "{out}");
    let wide = cluster.kubectl(&["get", "fr", "checkout", "-n", "default", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().ends_with("TRACE")
            && wide.contains(exemplars[0]["traceUrl"].as_str().unwrap()),
        "{wide}"
    );
    let events = cluster.get(&["events.v1.events.k8s.io", "-n", "default"]);
    let rollback = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["regarding"]["name"] == "checkout" && e["reason"] == "RolledBack")
        .unwrap();
    assert!(
        rollback["note"]
            .as_str()
            .unwrap()
            .ends_with(&format!("; failed trace {failing}")),
        "{rollback}"
    );
    let described = cluster.kubectl(&["describe", "fr", "checkout", "-n", "default"]);
    for expected in [
        "Conditions:",
        "AnalysisFail",
        "Events:",
        "StepAdvanced",
        "spangate.dev/controller",
    ] {
        assert!(
            described.contains(expected),
            "{expected} not in\n{described}"
        );
    }

    // A spec the schema lets through but the controller cannot carry out.
    cluster
        .apply(
            &rollout("typo")
                .flag("typo-flag")
                .steps([10, 100])
                .rollout_variant("onn")
                .yaml(),
        )
        .unwrap();
    let s = wait_status(
        &cluster,
        &operator,
        "typo",
        "the invalid condition",
        || {},
        |s| phase(s) == "Invalid",
    );
    assert_eq!(condition(&s, "Ready")["reason"], "InvalidSpec");
    assert!(
        condition(&s, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains(r#"spec.flag.rolloutVariant "onn" is not one of the variants"#),
        "{s:#}"
    );

    // Promote and abort through the plugin, carried out by the controller.
    cluster
        .apply(
            &rollout("promoted")
                .flag("promoted-flag")
                .steps([1, 5, 100])
                .yaml(),
        )
        .unwrap();
    wait_status(
        &cluster,
        &operator,
        "promoted",
        "started",
        || {},
        |s| phase(s) == "Progressing",
    );
    let mut live = cluster.plugin_in_background(&["status", "promoted"], "status-live");
    // The view must have drawn the running rollout before the promotion ends it.
    wait_for("the live status view to show the step", LIMIT, || {
        std::fs::read_to_string(&live.log)
            .ok()
            .filter(|shown| shown.contains("Progressing  step 1/3"))
    });
    let (code, out) = cluster.plugin(&["promote", "promoted"]);
    assert_eq!(code, 0, "{out}");
    let s = wait_status(
        &cluster,
        &operator,
        "promoted",
        "promoted",
        || {},
        |s| phase(s) == "Promoted",
    );
    // The live view ends by itself once the rollout has ended, with exit code 0.
    let exit = wait_for("the live status view to end", LIMIT, || live.exited());
    let shown = std::fs::read_to_string(&live.log).unwrap();
    assert_eq!(exit.code(), Some(0), "{shown}");
    assert!(
        shown.contains("Progressing  step 1/3") && shown.contains("Promoted  step 3/3"),
        "{shown}"
    );
    assert_eq!(s["weight"], 100.0);
    let annotations =
        cluster.get(&["fr", "promoted", "-n", "default"])["metadata"]["annotations"].clone();
    assert!(
        annotations.get("spangate.dev/promote").is_none(),
        "the request is cleared: {annotations}"
    );
    let (code, out) = cluster.plugin(&["status", "promoted"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cluster.plugin(&["abort", "promoted"]);
    assert_eq!(code, 0, "{out}");
    wait_status(
        &cluster,
        &operator,
        "promoted",
        "aborted",
        || {},
        |s| phase(s) == "RolledBack",
    );
    assert_eq!(
        cluster.event_reasons("promoted"),
        ["Started", "Promoted", "Aborted"]
    );

    // Metrics count what happened.
    let (code, metrics) = operator.probe("/metrics");
    assert_eq!(code, 200);
    for expected in [
        "spangate_controller_leader 1",
        "spangate_controller_rollouts{phase=\"RolledBack\"} 2",
        "spangate_controller_rollouts{phase=\"Invalid\"} 1",
        "spangate_judge_verdicts_total{outcome=\"Fail\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == expected),
            "{expected} not in\n{metrics}"
        );
    }

    // A second rollout of a served flag waits as Invalid, and takes the flag over
    // as soon as the first is deleted.
    cluster
        .apply(&rollout("second").steps([10, 100]).yaml())
        .unwrap();
    let s = wait_status(
        &cluster,
        &operator,
        "second",
        "the conflict",
        || {},
        |s| phase(s) == "Invalid",
    );
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("already rolled out by default/checkout"),
        "{s:#}"
    );
    cluster.kubectl(&["delete", "fr", "checkout", "-n", "default", "--timeout=60s"]);
    wait_status(
        &cluster,
        &operator,
        "second",
        "the takeover",
        || {},
        |s| phase(s) == "Progressing",
    );
    let (_, answer) = operator.evaluate("new-checkout", "user-1");
    assert_eq!(answer["metadata"]["rollout"], "default/second", "{answer}");

    // Deleting a rollout runs the finalizer: its flag is no longer served.
    cluster.kubectl(&["delete", "fr", "promoted", "-n", "default", "--timeout=60s"]);
    wait_for("the deleted flag to leave the ConfigMap", LIMIT, || {
        published_flags(&cluster)["flags"]
            .get("promoted-flag")
            .is_none()
            .then_some(())
    });
    assert_eq!(operator.evaluate("promoted-flag", "user-1").0, 404);
}

#[test]
#[ignore = "needs a kube-apiserver, etcd and kubectl: run ./scripts/test"]
fn a_second_replica_takes_over_and_resumes_from_status() {
    let cluster = Cluster::start(Authorization::AlwaysAllow);
    cluster.apply_crds();
    let first = Operator::start(
        &cluster,
        &cluster.admin_kubeconfig,
        "replica-1",
        Some("spangate-leader"),
    );
    wait_for("replica-1 to lead", LIMIT, || {
        (lease_holder(&cluster).as_deref() == Some("replica-1")).then_some(())
    });
    let second = Operator::start(
        &cluster,
        &cluster.admin_kubeconfig,
        "replica-2",
        Some("spangate-leader"),
    );
    cluster
        .apply(&rollout("checkout").steps([10, 30, 60, 100]).yaml())
        .unwrap();
    wait_status(
        &cluster,
        &first,
        "checkout",
        "step 2 under replica-1",
        || first.send_spans("new-checkout", 40, None),
        |s| s["currentStep"] == 1,
    );
    // The follower serves the same flag, from status, without reconciling.
    let served = wait_for("the follower to serve step 2", LIMIT, || {
        let (code, answer) = second.evaluate("new-checkout", "user-1");
        (code == 200 && answer["metadata"]["weight"] == 30.0).then_some(answer)
    });
    assert_eq!(served["metadata"]["step"], 1);
    let (_, metrics) = second.probe("/metrics");
    assert!(
        metrics.lines().any(|l| l == "spangate_controller_leader 0"),
        "{metrics}"
    );

    // The leader dies without a word; the other takes over within the lease.
    let before = status(&cluster, "checkout");
    drop(first);
    wait_for("replica-2 to lead", Duration::from_secs(20), || {
        (lease_holder(&cluster).as_deref() == Some("replica-2")).then_some(())
    });
    // It resumes where the status stood: no restart, and the next step follows.
    let s = wait_status(
        &cluster,
        &second,
        "checkout",
        "step 3 under replica-2",
        || second.send_spans("new-checkout", 40, None),
        |s| s["currentStep"] == 2,
    );
    assert_eq!(
        s["history"][0], before["history"][0],
        "the rollout was not restarted"
    );
    let reasons = cluster.event_reasons("checkout");
    assert_eq!(reasons, ["Started", "StepAdvanced", "StepAdvanced"]);
}

#[test]
#[ignore = "needs a kube-apiserver, etcd, kubectl and helm: run ./scripts/test"]
fn the_charts_rbac_is_enough() {
    let cluster = Cluster::start(Authorization::Rbac);
    // Helm 3 installs the chart for real (CRDs, RBAC, Deployment); nothing runs the
    // Deployment here, so the operator runs as its ServiceAccount from outside.
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/spangate");
    let out = std::process::Command::new(tool("SPANGATE_HELM3"))
        .args(["install", "spangate"])
        .arg(&chart)
        .args(["--namespace", "spangate", "--kubeconfig"])
        .arg(&cluster.admin_kubeconfig)
        .output()
        .expect("run helm");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helm install: {text}");
    assert!(
        text.contains("NOTES:") && text.contains("kubectl get featurerollouts"),
        "{text}"
    );
    cluster.kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/featurerollouts.spangate.dev",
    ]);
    let who = cluster.kubectl(&[
        "auth",
        "can-i",
        "list",
        "featurerollouts.spangate.dev",
        "--as",
        OPERATOR_USER,
        "-A",
    ]);
    assert_eq!(who.trim(), "yes");

    let operator = Operator::start(
        &cluster,
        &cluster.operator_kubeconfig,
        "spangate-rbac",
        Some("spangate-leader"),
    );
    cluster
        .apply(&rollout("checkout").steps([50, 100]).yaml())
        .unwrap();
    wait_status(
        &cluster,
        &operator,
        "checkout",
        "promotion under the chart's RBAC",
        || operator.send_spans("new-checkout", 40, None),
        |s| phase(s) == "Promoted",
    );
    assert_eq!(cluster.event_reasons("checkout"), ["Started", "Promoted"]);
    wait_for("the ConfigMap under the chart's RBAC", LIMIT, || {
        let configmap =
            cluster.kubectl_output(&["get", "configmap", "spangate-flags", "-n", "spangate"]);
        configmap.status.success().then_some(())
    });
    cluster.kubectl(&["delete", "fr", "checkout", "-n", "default", "--timeout=60s"]);
    let log = std::fs::read_to_string(&operator.process.log).unwrap();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "{}",
        operator.process.log_tail()
    );
}

fn beta_users(member: &str) -> String {
    format!(
        "apiVersion: spangate.dev/v1alpha1\nkind: Segment\nmetadata: {{name: beta-users, namespace: default}}\nspec:\n  included: [{member}]\n"
    )
}

#[test]
#[ignore = "needs a kube-apiserver, etcd and kubectl: run ./scripts/test"]
fn segments_in_the_cluster_target_and_an_edit_re_evaluates() {
    let cluster = Cluster::start(Authorization::AlwaysAllow);
    cluster.apply_crds();
    cluster.apply(&beta_users("u-early")).unwrap();
    let plans = RolloutFixture::new("plans")
        .flag("plan-features")
        .variants(json!({"basic": {"seats": 5}, "pro": {"seats": 50}}), "basic")
        .without_steps()
        .targeting(from_yaml(
            "rules:\n- name: beta\n  clauses: [{op: segmentMatch, values: [beta-users]}]\n  variant: pro\n",
        ));
    cluster.apply(&plans.yaml()).unwrap();
    let operator = Operator::start(&cluster, &cluster.admin_kubeconfig, "spangate-a", None);
    let s = wait_status(
        &cluster,
        &operator,
        "plans",
        "the flag to be served",
        || {},
        |s| phase(s) == "Serving",
    );
    assert_eq!(condition(&s, "Ready")["status"], "True");
    let variant = |user: &str| operator.evaluate("plan-features", user).1["variant"].clone();
    wait_for("u-early to get pro", LIMIT, || {
        (variant("u-early") == "pro").then_some(())
    });
    assert_eq!(variant("u-late"), "basic");

    // The segment's watch re-evaluates the rollouts of its namespace.
    cluster.apply(&beta_users("u-late")).unwrap();
    wait_for("u-late to join the beta", LIMIT, || {
        (variant("u-late") == "pro").then_some(())
    });
    assert_eq!(variant("u-early"), "basic");

    // The published flag set carries the segment as a shared evaluator.
    let published = wait_for("the published segment", LIMIT, || {
        let flags = published_flags(&cluster);
        flags["$evaluators"]["segment:default/beta-users"]
            .to_string()
            .contains("u-late")
            .then_some(flags)
    });
    assert!(
        published["flags"]["plan-features"]["targeting"]
            .to_string()
            .contains(r#"{"$ref":"segment:default/beta-users"}"#)
    );
}
