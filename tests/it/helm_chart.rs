//! The Helm chart: its CRDs are the ones in `crds/`; it lints and renders under
//! Helm 3 and Helm 4 with default and non-default values; what it renders is valid
//! Kubernetes (kubernetes-validate, offline) and says what the values say.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/spangate")
}

/// A tool that `./scripts/test` installs and names in an environment variable.
fn tool(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable).unwrap_or_else(|| {
        panic!(
            "{variable} is not set: run ./scripts/test, which installs helm and kubernetes-validate"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{variable}={} does not exist; run ./scripts/test",
        path.display()
    );
    path
}

fn helms() -> [(&'static str, PathBuf); 2] {
    [
        ("helm 3", tool("SPANGATE_HELM3")),
        ("helm 4", tool("SPANGATE_HELM4")),
    ]
}

fn run(command: &mut Command) -> String {
    let out = command
        .env("KUBECONFIG", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` with `values` (`key=value` pairs), as parsed documents.
fn render(helm: &Path, values: &[&str]) -> (String, Vec<Value>) {
    let mut command = Command::new(helm);
    command
        .args(["template", "spangate"])
        .arg(chart())
        .args(["--namespace", "spangate"]);
    for value in values {
        command.args(["--set", value]);
    }
    let text = run(&mut command);
    let documents = serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("helm renders YAML"))
        .filter(|doc| !doc.is_null())
        .collect();
    (text, documents)
}

fn kinds(documents: &[Value]) -> Vec<&str> {
    let mut kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    kinds
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn args(documents: &[Value]) -> Vec<String> {
    find(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// kubernetes-validate, strict, on the rendered manifests (built-in kinds only).
fn validate(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, text).unwrap();
    let out = run(Command::new(tool("SPANGATE_KUBERNETES_VALIDATE"))
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .arg(&file));
    assert!(!out.contains("ERROR"), "{out}");
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    for (name, yaml) in spangate::api::crd_files() {
        let in_chart =
            std::fs::read_to_string(chart().join("crds").join(&name)).unwrap_or_default();
        assert!(
            in_chart == yaml,
            "charts/spangate/crds/{name} differs from crds/{name}; copy it: cp crds/*.yaml charts/spangate/crds/"
        );
    }
}

#[test]
#[ignore = "needs helm 3, helm 4 and kubernetes-validate: run ./scripts/test"]
fn lints_under_helm_3_and_4() {
    for (which, helm) in helms() {
        let out = run(Command::new(&helm).args(["lint", "--strict"]).arg(chart()));
        assert!(out.contains("0 chart(s) failed"), "{which}: {out}");
    }
}

#[test]
#[ignore = "needs helm 3, helm 4 and kubernetes-validate: run ./scripts/test"]
fn default_values_render_a_locked_down_operator() {
    for (which, helm) in helms() {
        let (text, docs) = render(&helm, &[]);
        validate(&text);
        assert_eq!(
            kinds(&docs),
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount"
            ],
            "{which}"
        );
        let deployment = find(&docs, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(deployment["spec"]["replicas"], 1, "{which}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{which}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{which}"
        );
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{which}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{which}");
        assert_eq!(
            security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{which}"
        );
        let args = args(&docs);
        assert_eq!(args[0], "run", "{which}");
        for expected in [
            "--otlp-grpc-addr=0.0.0.0:4317",
            "--ofrep-addr=0.0.0.0:8016",
            "--lease-name=spangate-leader",
            "--flags-configmap=spangate-flags",
            // The limits' defaults, as the binary's own.
            "--max-body-bytes=4194304",
            "--max-decoded-bytes=33554432",
            "--max-in-flight-bytes=67108864",
            "--forward-queue-bytes=33554432",
            "--otlp-max-connections=256",
            "--header-read-timeout=10s",
            "--shutdown-timeout=10s",
        ] {
            assert!(
                args.iter().any(|a| a == expected),
                "{which}: {expected} not in {args:?}"
            );
        }
        assert_eq!(pod["terminationGracePeriodSeconds"], 30, "{which}");
        assert!(
            container["volumeMounts"].is_null(),
            "{which}: no token Secret by default"
        );
        assert!(
            !container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "SPANGATE_NOTIFY_WEBHOOKS"),
            "{which}: no notifications by default"
        );
        let ports: Vec<i64> = find(&docs, "Service")["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [4317, 4318, 8016, 8014], "{which}");

        // Least privilege: nothing may be deleted, and nothing but the controller's
        // own lease and ConfigMap may be written in the release namespace.
        for kind in ["ClusterRole", "Role"] {
            for rule in find(&docs, kind)["rules"].as_array().unwrap() {
                let verbs = rule["verbs"].as_array().unwrap();
                assert!(
                    !verbs
                        .iter()
                        .any(|v| v == "*" || v == "delete" || v == "deletecollection"),
                    "{which}: {kind} allows too much: {rule}"
                );
                assert!(
                    !rule["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r == "*"),
                    "{rule}"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs helm 3, helm 4 and kubernetes-validate: run ./scripts/test"]
fn other_values_change_what_they_say() {
    let values = [
        "replicas=3",
        "leaderElection.enabled=false",
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prometheus",
        "otlpExporter.endpoint=http://jaeger-collector.tracing:4317",
        "rbac.create=false",
        "serviceAccount.create=false",
        "serviceAccount.name=platform-operators",
        "image.tag=9.9.9",
        "logging.level=debug",
        "flagsConfigMap=flags",
        "privateAttributes={email,address.street}",
        "ofrep.tokensSecret=ofrep-tokens",
        "ofrep.rateLimit=500",
        "otlp.tokensSecret=otlp-tokens",
        "limits.maxInFlightBytes=33554432",
        "limits.shutdownTimeout=20s",
        "limits.otlpMaxConnections=512",
        "terminationGracePeriodSeconds=45",
        "traceUrlTemplate=http://jaeger.tracing:16686/trace/{traceId}?uiFind={spanId}",
        "notifications.webhooksSecret=rollout-hooks",
    ];
    for (which, helm) in helms() {
        let (text, docs) = render(&helm, &values);
        validate(&text);
        assert_eq!(
            kinds(&docs),
            ["Deployment", "Service", "ServiceMonitor"],
            "{which}"
        );
        let deployment = find(&docs, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(deployment["spec"]["replicas"], 3, "{which}");
        assert_eq!(pod["serviceAccountName"], "platform-operators", "{which}");
        assert!(
            pod["containers"][0]["image"]
                .as_str()
                .unwrap()
                .ends_with(":9.9.9")
        );
        let args = args(&docs);
        assert!(
            args.contains(&"--no-leader-election".to_string()),
            "{which}: {args:?}"
        );
        assert!(
            args.contains(&"--flags-configmap=flags".to_string()),
            "{which}: {args:?}"
        );
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let var = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://jaeger-collector.tracing:4317".into())
        );
        assert_eq!(var("RUST_LOG"), Some("debug".into()));
        assert_eq!(
            var("SPANGATE_FORWARD_ENDPOINT"),
            Some("http://jaeger-collector.tracing:4317".into()),
            "{which}: the applications' spans go to the same backend"
        );
        assert_eq!(var("SPANGATE_FORWARD_PROTOCOL"), Some("grpc".into()));
        assert_eq!(
            var("SPANGATE_PRIVATE_ATTRIBUTES"),
            Some("email,address.street".into())
        );
        assert_eq!(var("SPANGATE_OFREP_RATE_LIMIT"), Some("500".into()));
        assert_eq!(
            var("SPANGATE_TRACE_URL_TEMPLATE"),
            Some("http://jaeger.tracing:16686/trace/{traceId}?uiFind={spanId}".into()),
            "{which}"
        );
        // The URLs stay in the Secret: the pod reads them, the manifest does not.
        let hooks = env
            .iter()
            .find(|e| e["name"] == "SPANGATE_NOTIFY_WEBHOOKS")
            .expect("SPANGATE_NOTIFY_WEBHOOKS set");
        assert_eq!(
            hooks["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "rollout-hooks", "key": "webhooks"}),
            "{which}"
        );
        let tokens_file = var("SPANGATE_OFREP_TOKENS_FILE").unwrap();
        let mount = &pod["containers"][0]["volumeMounts"][0];
        assert!(
            tokens_file
                .as_str()
                .unwrap()
                .starts_with(mount["mountPath"].as_str().unwrap()),
            "{which}: {tokens_file} is under {mount}"
        );
        assert_eq!(mount["name"], pod["volumes"][0]["name"]);
        assert_eq!(pod["volumes"][0]["secret"]["secretName"], "ofrep-tokens");
        let otlp_tokens = var("SPANGATE_OTLP_TOKENS_FILE").unwrap();
        let mount = &pod["containers"][0]["volumeMounts"][1];
        assert!(
            otlp_tokens
                .as_str()
                .unwrap()
                .starts_with(mount["mountPath"].as_str().unwrap()),
            "{which}: {otlp_tokens} is under {mount}"
        );
        assert_eq!(mount["name"], pod["volumes"][1]["name"]);
        assert_eq!(pod["volumes"][1]["secret"]["secretName"], "otlp-tokens");
        for expected in [
            "--max-in-flight-bytes=33554432",
            "--shutdown-timeout=20s",
            "--otlp-max-connections=512",
        ] {
            assert!(
                args.contains(&expected.to_string()),
                "{which}: {expected} not in {args:?}"
            );
        }
        assert_eq!(pod["terminationGracePeriodSeconds"], 45, "{which}");
        let monitor = find(&docs, "ServiceMonitor");
        assert_eq!(
            monitor["metadata"]["labels"]["release"], "prometheus",
            "{which}"
        );
        assert_eq!(
            monitor["spec"]["endpoints"][0]["port"], "metrics",
            "{which}"
        );
    }
}

#[test]
#[ignore = "needs helm 3, helm 4 and kubernetes-validate: run ./scripts/test"]
fn notes_tell_the_user_what_to_do_next() {
    // Helm 3's `install --dry-run` asks a cluster for its version; the cluster
    // suite installs the chart with Helm 3 into a real API server instead.
    for (which, helm) in [("helm 4", tool("SPANGATE_HELM4"))] {
        let out = run(Command::new(&helm)
            .args(["install", "spangate"])
            .arg(chart())
            .args([
                "--namespace",
                "spangate",
                "--dry-run=client",
                "--set",
                "replicas=2",
            ]));
        let notes = out
            .split("NOTES:")
            .nth(1)
            .unwrap_or_else(|| panic!("{which}: no NOTES in\n{out}"));
        for expected in [
            "kubectl get featurerollouts",
            "http://spangate.spangate:8016",
            "http://spangate.spangate:4317",
            "ConfigMap spangate-flags",
            "kubectl spangate status new-checkout",
            "2 replicas, one leads through lease spangate-leader",
        ] {
            assert!(
                notes.contains(expected),
                "{which}: {expected:?} not in\n{notes}"
            );
        }
    }
}

#[test]
#[ignore = "needs helm 3, helm 4 and kubernetes-validate: run ./scripts/test"]
fn the_packaged_chart_lints_and_runs_the_crates_image() {
    let version = env!("CARGO_PKG_VERSION");
    for (which, helm) in helms() {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new(&helm)
            .arg("package")
            .arg(chart())
            .arg("--destination")
            .arg(dir.path()));
        let package = dir.path().join(format!("spangate-{version}.tgz"));
        assert!(package.is_file(), "{which}: no {}", package.display());
        let out = run(Command::new(&helm).args(["lint", "--strict"]).arg(&package));
        assert!(out.contains("0 chart(s) failed"), "{which}: {out}");
        let text = run(Command::new(&helm)
            .args(["template", "spangate"])
            .arg(&package)
            .args(["--namespace", "spangate"]));
        validate(&text);
        let documents: Vec<Value> = serde_norway::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).unwrap())
            .filter(|doc| !doc.is_null())
            .collect();
        let image =
            &find(&documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"];
        assert_eq!(
            image.as_str().unwrap(),
            format!("spangate/spangate:{version}"),
            "{which}"
        );
        // The CRDs travel in the package.
        let listing = run(Command::new("tar").arg("-tzf").arg(&package));
        for (name, _) in spangate::api::crd_files() {
            assert!(
                listing.contains(&format!("spangate/crds/{name}")),
                "{which}: {name} not in\n{listing}"
            );
        }
    }
}
