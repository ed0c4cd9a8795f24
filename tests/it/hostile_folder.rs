//! A folder of rollout files as a careless operator or a hostile user leaves it
//! (issue 8): names that are paths, a corrupt state file, a link to a secret, a
//! huge file, typos, two files of one flag, a file caught half written, thousands
//! of files. Each attack runs on real files with the real `spangate` binary (or the
//! real `FileStore`), and shows that the bad input costs only itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::fixture::{RolloutFixture, from_yaml};
use crate::common::{Spangate, http_get, wait_for};
use serde_json::{Value, json};
use spangate::store::{FileStore, RolloutKey, RolloutStore as _, StoredRollout};

const ANALYSIS: &str = "{minSamples: 40, maxErrorRate: 0.08, maxErrorRateIncrease: 0.05}";
const LIMIT: Duration = Duration::from_secs(90);

fn folders() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    let state = temp.path().join("state");
    (temp, dir, state)
}

/// A rollout judged on errors only.
fn rollout(name: &str) -> RolloutFixture {
    RolloutFixture::new(name).analysis(from_yaml(ANALYSIS))
}

/// A flag without steps, served as it is.
fn plain_flag(name: &str) -> RolloutFixture {
    RolloutFixture::new(name)
        .default_variant("on")
        .without_steps()
}

fn phase(status: &Value) -> &str {
    status["phase"].as_str().unwrap_or("")
}

fn message(status: &Value) -> String {
    status["message"].as_str().unwrap_or("").to_string()
}

fn starts(status: &Value) -> usize {
    status["history"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|t| t["reason"] == "Started").count())
}

/// One OFREP evaluation: (HTTP status, answer).
fn evaluate(spangate: &Spangate, flag: &str, user: u32) -> (u16, Value) {
    let answer = reqwest::blocking::Client::new()
        .post(format!("http://{}/ofrep/v1/evaluate/flags/{flag}", spangate.addrs.ofrep))
        .json(&json!({"context": {"targetingKey": format!("user-{user}"), "accountId": format!("acct-{user}")}}))
        .send()
        .unwrap();
    (
        answer.status().as_u16(),
        answer.json().unwrap_or(Value::Null),
    )
}

/// Waits until the reconcile counter has grown by `passes` times `rollouts`:
/// that many more passes have run.
fn wait_passes(spangate: &Spangate, rollouts: usize, passes: usize) {
    let counter = "spangate_controller_reconciles_total";
    let start = spangate.metric(counter).unwrap_or(0.0);
    let wanted = start + (rollouts * passes) as f64;
    wait_for("more reconcile passes", LIMIT, || {
        (spangate.metric(counter).unwrap_or(0.0) >= wanted).then_some(())
    });
}

/// The checkout service: asks OFREP for its variant and reports each request as a
/// span over OTLP/HTTP JSON; the rollout variant fails when `failing`.
struct Traffic<'a> {
    spangate: &'a Spangate,
    next_user: u32,
}

impl<'a> Traffic<'a> {
    fn new(spangate: &'a Spangate) -> Self {
        Self {
            spangate,
            next_user: 0,
        }
    }

    fn round(&mut self, flag: &str, failing: bool) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut spans = Vec::new();
        for _ in 0..100 {
            let user = self.next_user;
            self.next_user += 1;
            let (_, answer) = evaluate(self.spangate, flag, user);
            let variant = answer["variant"].as_str().unwrap_or("off").to_string();
            let failed =
                user.is_multiple_of(100) || (failing && variant == "on" && user.is_multiple_of(3));
            spans.push(json!({
                "traceId": format!("{:032x}", u128::from(user) + 1),
                "spanId": format!("{:016x}", u64::from(user) + 1),
                "name": "POST /checkout",
                "kind": 2,
                "startTimeUnixNano": (now - 30_000_000).to_string(),
                "endTimeUnixNano": now.to_string(),
                "attributes": [
                    {"key": "feature_flag.key", "value": {"stringValue": flag}},
                    {"key": "feature_flag.result.variant", "value": {"stringValue": variant}},
                ],
                "status": {"code": if failed { 2 } else { 1 }},
            }));
        }
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "checkout"}},
                {"key": "vcs.ref.head.revision", "value": {"stringValue": "3f2c1a9"}},
            ]},
            "scopeSpans": [{"spans": spans}],
        }]});
        let sent = reqwest::blocking::Client::new()
            .post(format!(
                "http://{}/v1/traces",
                self.spangate.addrs.otlp_http
            ))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(sent.status(), 200);
    }

    /// Sends rounds until rollout `name`'s status satisfies `done`.
    fn drive(
        &mut self,
        name: &str,
        flag: &str,
        failing: bool,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            self.round(flag, failing);
            let status = self.spangate.get(name)["status"].clone();
            if done(&status) {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not get there in {LIMIT:?}; status: {status:#}\n{}",
                self.spangate.log_text()
            );
        }
    }
}

/// Every file under `root`, recursively.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

// Row 3: one bad rollout beside a failing one.
#[test]
fn a_bad_name_or_a_corrupt_state_file_costs_only_its_own_rollout() {
    let (_temp, dir, state) = folders();
    std::fs::write(dir.join("checkout.yaml"), rollout("checkout").yaml()).unwrap();
    std::fs::write(
        dir.join("unrelated.yaml"),
        plain_flag("unrelated").flag("unrelated-flag").yaml(),
    )
    .unwrap();
    // A rollout whose state file is corrupt from the start.
    std::fs::write(
        dir.join("stale.yaml"),
        rollout("stale").flag("stale-flag").steps([10, 100]).yaml(),
    )
    .unwrap();
    let corrupt_path = spangate::store::state_path(&state, &RolloutKey::new("default", "stale"));
    std::fs::create_dir_all(corrupt_path.parent().unwrap()).unwrap();
    std::fs::write(&corrupt_path, b"{\"generation\": 3, \"specHa").unwrap();

    let spangate = Spangate::start(&dir, &state);
    // Unrelated flags answer from the first pass on.
    assert_eq!(evaluate(&spangate, "unrelated-flag", 1).0, 200);
    let stale = spangate.wait_status("stale", "Invalid for its state file", LIMIT, |s| {
        phase(s) == "Invalid"
    });
    assert!(
        message(&stale).contains("state file") && message(&stale).contains("corrupt"),
        "{stale:#}"
    );
    spangate.wait_status("checkout", "Progressing", LIMIT, |s| {
        phase(s) == "Progressing"
    });

    // While running: a 300-character name and a NUL in a name.
    let named = |name: &str, flag: &str| {
        plain_flag(name)
            .flag(flag)
            .variants(json!({"a": 1}), "a")
            .yaml()
    };
    std::fs::write(dir.join("long.yaml"), named(&"a".repeat(300), "long-flag")).unwrap();
    std::fs::write(dir.join("nul.yaml"), named("bad\0name", "nul-flag")).unwrap();
    let long = spangate.wait_status("long", "Invalid for its name", LIMIT, |s| {
        phase(s) == "Invalid"
    });
    assert!(
        message(&long).contains("is 300 characters long; at most 253"),
        "{long:#}"
    );
    let nul = spangate.wait_status("nul", "Invalid for its name", LIMIT, |s| {
        phase(s) == "Invalid"
    });
    assert!(
        message(&nul).contains("not a lowercase RFC 1123 subdomain"),
        "{nul:#}"
    );

    // The failing variant is still judged and rolled back, and everyone gets the old one.
    let mut traffic = Traffic::new(&spangate);
    let status = traffic.drive("checkout", "new-checkout", true, |s| {
        phase(s) != "Progressing"
    });
    assert_eq!(phase(&status), "RolledBack", "{status:#}");
    for user in 0..20 {
        assert_eq!(
            evaluate(&spangate, "new-checkout", user).1["variant"],
            "off"
        );
    }
    assert_eq!(evaluate(&spangate, "unrelated-flag", 1).0, 200);
    assert_eq!(http_get(spangate.addrs.probes, "/readyz").0, 200);
    // No reconcile error of any kind counted, the state file's included.
    let metrics = spangate.metrics();
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("spangate_controller_reconcile_errors_total{"))
        .collect();
    assert!(errors.len() >= 5, "{metrics}");
    assert!(errors.iter().all(|l| l.ends_with(" 0")), "{metrics}");
    // The corrupt state file is left as it was, for whoever looks into it.
    assert_eq!(
        std::fs::read(&corrupt_path).unwrap(),
        b"{\"generation\": 3, \"specHa"
    );

    // Removing it starts that rollout afresh.
    std::fs::remove_file(&corrupt_path).unwrap();
    spangate.wait_status("stale", "a fresh start", LIMIT, |s| {
        phase(s) == "Progressing"
    });
}

// Row 3: readiness reflects whether passes succeed.
#[test]
fn readyz_fails_while_the_folder_cannot_be_read() {
    let (_temp, dir, state) = folders();
    std::fs::write(
        dir.join("unrelated.yaml"),
        plain_flag("unrelated").flag("unrelated-flag").yaml(),
    )
    .unwrap();
    let spangate = Spangate::start(&dir, &state);
    wait_for("ready", LIMIT, || {
        (http_get(spangate.addrs.probes, "/readyz").0 == 200).then_some(())
    });
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    wait_for("not ready", LIMIT, || {
        (http_get(spangate.addrs.probes, "/readyz").0 == 503).then_some(())
    });
    // What was published is still served.
    assert_eq!(evaluate(&spangate, "unrelated-flag", 1).0, 200);
    std::fs::rename(&moved, &dir).unwrap();
    wait_for("ready again", LIMIT, || {
        (http_get(spangate.addrs.probes, "/readyz").0 == 200).then_some(())
    });
}

// Row 4: names that are paths.
#[test]
fn names_never_become_paths_and_never_share_state() {
    let (temp, dir, _) = folders();
    // Deep enough that `../../..` from a namespace folder stays inside the temporary one.
    let state = temp.path().join("deep/er/state");
    let outside = temp.path().join("outside");
    std::fs::write(
        dir.join("r1.yaml"),
        rollout("r1").flag("r1-flag").steps([10, 100]).yaml(),
    )
    .unwrap();
    let with_meta = |ns: &str, name: &str, flag: &str| {
        plain_flag(name)
            .flag(flag)
            .namespace(ns)
            .variants(json!({"a": 1}), "a")
            .yaml()
    };
    std::fs::write(
        dir.join("abs.yaml"),
        with_meta(outside.to_str().unwrap(), "pwn", "f1"),
    )
    .unwrap();
    std::fs::write(
        dir.join("up.yaml"),
        with_meta("default", "../../../escaped/pwn", "f2"),
    )
    .unwrap();
    std::fs::write(dir.join("dots.yaml"), with_meta("..", "pwn", "f3")).unwrap();
    std::fs::write(dir.join("twin.yaml"), with_meta("x", "../default/r1", "f4")).unwrap();
    // The longest valid name is served, its state file fits.
    let longest = "a".repeat(253);
    std::fs::write(
        dir.join("longest.yaml"),
        with_meta("default", &longest, "f5"),
    )
    .unwrap();
    // A state file of the naming before: read, and moved to its new name.
    std::fs::write(
        dir.join("old.yaml"),
        plain_flag("old").flag("old-flag").yaml(),
    )
    .unwrap();
    std::fs::create_dir_all(state.join("default")).unwrap();
    let legacy = state.join("default/old.json");
    std::fs::write(
        &legacy,
        r#"{"generation": 7, "specHash": "x", "status": {"phase": "Pending"}}"#,
    )
    .unwrap();

    let spangate = Spangate::start(&dir, &state);
    let r1 = spangate.wait_status("r1", "Progressing", LIMIT, |s| phase(s) == "Progressing");
    for (name, problem) in [
        ("abs", "metadata.namespace"),
        (
            "up",
            "metadata.name \"../../../escaped/pwn\" is not a lowercase RFC 1123 subdomain",
        ),
        (
            "dots",
            "metadata.namespace \"..\" is not a lowercase RFC 1123 label",
        ),
        ("twin", "metadata.name \"../default/r1\""),
    ] {
        let status = spangate.wait_status(name, "Invalid", LIMIT, |s| phase(s) == "Invalid");
        assert!(message(&status).contains(problem), "{name}: {status:#}");
    }
    spangate.wait_status(&longest, "served", LIMIT, |s| phase(s) == "Serving");
    assert_eq!(evaluate(&spangate, "f5", 1).0, 200);
    let old = spangate.wait_status("old", "served", LIMIT, |s| phase(s) == "Serving");
    assert_eq!(spangate.get("old")["metadata"]["generation"], 8, "{old:#}");
    assert!(!legacy.exists(), "the legacy state file is moved");

    wait_passes(&spangate, 8, 3);
    let after = spangate.get("r1");
    assert_eq!(after["metadata"]["generation"], 1);
    assert_eq!(after["status"]["stepStartedAt"], r1["stepStartedAt"]);
    assert_eq!(starts(&after["status"]), 1);
    for file in files_under(temp.path()) {
        assert!(
            file.starts_with(&dir)
                || file.starts_with(&state)
                || file
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("state.")),
            "written outside the state folder: {}",
            file.display()
        );
    }
    assert!(!outside.exists());
    assert!(!temp.path().join("deep/escaped").exists());
}

// Row 8: a second rollout of a flag that is being rolled out.
#[test]
fn a_second_rollout_of_a_flag_never_takes_it_over() {
    let (_temp, dir, state) = folders();
    std::fs::write(
        dir.join("r1.yaml"),
        rollout("r1").steps([10, 20, 30, 100]).yaml(),
    )
    .unwrap();
    let spangate = Spangate::start(&dir, &state);
    let mut traffic = Traffic::new(&spangate);
    let before = traffic.drive("r1", "new-checkout", false, |s| s["currentStep"] == 1);
    assert_eq!(before["step"], "2/4");

    // Named so that it comes first in key order.
    std::fs::write(
        dir.join("copy.yaml"),
        rollout("a-newcomer").steps([10, 100]).yaml(),
    )
    .unwrap();
    let newcomer = spangate.wait_status("a-newcomer", "Invalid", LIMIT, |s| phase(s) == "Invalid");
    assert!(
        message(&newcomer).contains("already rolled out by default/r1"),
        "{newcomer:#}"
    );
    wait_passes(&spangate, 2, 3);
    let during = spangate.get("r1")["status"].clone();
    assert_eq!(phase(&during), "Progressing", "{during:#}");
    assert_eq!(during["currentStep"], 1);
    assert_eq!(
        evaluate(&spangate, "new-checkout", 1).1["metadata"]["step"],
        1
    );

    std::fs::remove_file(dir.join("copy.yaml")).unwrap();
    wait_passes(&spangate, 1, 3);
    let after = spangate.get("r1")["status"].clone();
    assert_eq!(
        (after["currentStep"].clone(), after["stepStartedAt"].clone()),
        (
            before["currentStep"].clone(),
            before["stepStartedAt"].clone()
        )
    );
    assert_eq!(starts(&after), 1, "{after:#}");
}

// Row 8: ties between rollouts that do not serve yet go to the older one.
#[test]
fn the_older_rollout_of_a_flag_has_it_whatever_the_names() {
    let stored = |name: &str, created: &str, phase: spangate::api::Phase| {
        let spec = plain_flag(name)
            .flag("k")
            .variants(json!({"a": 1, "b": 2}), "a")
            .spec();
        StoredRollout {
            key: RolloutKey::new("default", name),
            generation: Some(1),
            created: Some(created.parse().unwrap()),
            spec: Ok(std::sync::Arc::new(spec)),
            status: spangate::api::FeatureRolloutStatus {
                phase,
                ..Default::default()
            },
            source: name.to_string(),
        }
    };
    use spangate::api::Phase::{Invalid, Pending, Progressing};
    let all = [
        stored("a", "2026-01-02T00:00:00Z", Pending),
        stored("b", "2026-01-01T00:00:00Z", Pending),
    ];
    assert!(
        spangate::controller::flag_conflict(&all[0], &all)
            .unwrap()
            .contains("by default/b")
    );
    assert_eq!(spangate::controller::flag_conflict(&all[1], &all), None);
    // One already serving keeps it, however new.
    let all = [
        stored("a", "2026-01-01T00:00:00Z", Invalid),
        stored("b", "2026-01-05T00:00:00Z", Progressing),
    ];
    assert!(
        spangate::controller::flag_conflict(&all[0], &all)
            .unwrap()
            .contains("by default/b")
    );
}

/// A store over `dir` that lists as the controller does.
fn list(store: &FileStore) -> Vec<StoredRollout> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(store.list())
        .unwrap()
}

fn find<'a>(rollouts: &'a [StoredRollout], name: &str) -> &'a StoredRollout {
    rollouts
        .iter()
        .find(|r| r.key.name == name)
        .unwrap_or_else(|| panic!("no {name} in {rollouts:#?}"))
}

// Row 9: a file caught half written.
#[test]
fn a_file_caught_half_written_keeps_its_last_spec_for_one_more_look() {
    let (_temp, dir, state) = folders();
    let r1 = rollout("r1").steps([10, 20, 30, 100]);
    let text = r1.yaml();
    let path = dir.join("r1.yaml");
    std::fs::write(&path, &text).unwrap();
    let store = FileStore::new(&dir, Some(state));
    let first = list(&store);
    assert!(find(&first, "r1").spec.is_ok());
    assert_eq!(store.files_read(), 1);

    // Rewritten in place with the same bytes: read again, nothing new.
    std::fs::write(&path, &text).unwrap();
    let same = list(&store);
    assert_eq!(store.files_read(), 2);
    assert_eq!(find(&same, "r1").generation, Some(1));

    // Caught half written: the last good spec stays in force for one more look.
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let half = list(&store);
    assert!(find(&half, "r1").spec.is_ok(), "{half:#?}");
    // Still half written at the second look: now it is believed.
    let still = list(&store);
    let err = find(&still, "r1").spec.clone().unwrap_err().to_string();
    assert!(err.contains("r1.yaml"), "{err}");
    // Whole again: the same spec, the same generation.
    std::fs::write(&path, &text).unwrap();
    let whole = list(&store);
    assert_eq!(find(&whole, "r1").generation, Some(1));
    assert!(find(&whole, "r1").spec.is_ok());

    // Cut where it still parses, but its steps can no longer be carried out (no
    // service): also looked at twice before it is believed.
    let cut = r1.service(None).yaml();
    std::fs::write(&path, &cut).unwrap();
    let first_look = list(&store);
    assert_eq!(
        find(&first_look, "r1").spec.as_ref().unwrap().service,
        "checkout"
    );
    let second_look = list(&store);
    assert_eq!(find(&second_look, "r1").spec.as_ref().unwrap().service, "");
    assert_eq!(find(&second_look, "r1").generation, Some(2));
}

// Row 9, end to end: a rewrite with the same content never restarts a rollout,
// even one slow enough to leave it Invalid for a while.
#[test]
fn a_rollout_rewritten_with_the_same_content_never_restarts() {
    let (_temp, dir, state) = folders();
    let text = rollout("r1").steps([10, 20, 30, 100]).yaml();
    let path = dir.join("r1.yaml");
    std::fs::write(&path, &text).unwrap();
    let spangate = Spangate::start(&dir, &state);
    let before = spangate.wait_status("r1", "Progressing", LIMIT, |s| phase(s) == "Progressing");

    for _ in 0..5 {
        std::fs::write(&path, &text).unwrap();
        wait_passes(&spangate, 1, 2);
    }
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    spangate.wait_status("r1", "Invalid while half written", LIMIT, |s| {
        phase(s) == "Invalid"
    });
    std::fs::write(&path, &text).unwrap();
    let after = spangate.wait_status("r1", "Progressing again", LIMIT, |s| {
        phase(s) == "Progressing"
    });
    assert_eq!(after["stepStartedAt"], before["stepStartedAt"], "{after:#}");
    assert_eq!(after["epoch"], before["epoch"]);
    assert_eq!(starts(&after), 1, "{after:#}");
    assert_eq!(spangate.get("r1")["metadata"]["generation"], 1);
}

// Row 11: files are read again only when they change.
#[test]
fn files_are_read_again_only_when_they_change() {
    let (_temp, dir, state) = folders();
    const N: usize = 300;
    for i in 0..N {
        std::fs::write(
            dir.join(format!("r{i}.yaml")),
            plain_flag(&format!("r{i}"))
                .flag(&format!("flag-{i}"))
                .yaml(),
        )
        .unwrap();
    }
    let spangate = Spangate::start(&dir, &state);
    wait_for("ready", LIMIT, || {
        (http_get(spangate.addrs.probes, "/readyz").0 == 200).then_some(())
    });
    let reads = "spangate_store_files_read_total";
    assert_eq!(spangate.metric(reads), Some(N as f64));
    wait_passes(&spangate, N, 3);
    assert_eq!(spangate.metric(reads), Some(N as f64));
    std::fs::write(
        dir.join("r7.yaml"),
        plain_flag("r7").flag("flag-7-renamed").yaml(),
    )
    .unwrap();
    wait_for("the changed file served", LIMIT, || {
        (evaluate(&spangate, "flag-7-renamed", 1).0 == 200).then_some(())
    });
    assert_eq!(spangate.metric(reads), Some(N as f64 + 1.0));
}

// Row 12: a link to a file outside the folder.
#[test]
fn links_out_of_the_folder_are_not_followed_and_contents_never_echoed() {
    let (temp, dir, state) = folders();
    let secret = "s3cr3t-token-0123456789";
    let outside = temp.path().join("secret.txt");
    std::fs::write(&outside, format!("root:x:0:0:{secret}:/root:/bin/bash\n")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("passwd.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("etc.yaml")).unwrap();
    // A file inside the folder holding a secret and a syntax error.
    std::fs::write(dir.join("inside.yaml"), format!("apiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {{name: inside}}\nspec: {{flag: \"{secret}\", steps: [\n")).unwrap();
    // A ConfigMap mount: links through ..data, all inside the folder.
    let data = dir.join("..2026_01_01");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("mounted.yaml"),
        plain_flag("mounted").flag("mounted-flag").yaml(),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_01_01", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/mounted.yaml", dir.join("mounted.yaml")).unwrap();

    let spangate = Spangate::start(&dir, &state);
    spangate.wait_status("mounted", "served through its link", LIMIT, |s| {
        phase(s) == "Serving"
    });
    for name in ["passwd", "etc"] {
        let status = spangate.wait_status(name, "Invalid", LIMIT, |s| phase(s) == "Invalid");
        assert!(
            message(&status).contains("a symbolic link to a file outside the folder; not followed"),
            "{status:#}"
        );
    }
    let inside = spangate.wait_status("inside", "Invalid", LIMIT, |s| phase(s) == "Invalid");
    let said = message(&inside);
    assert!(
        said.contains("inside.yaml") && said.contains("line 5 column 1"),
        "{said}"
    );
    wait_passes(&spangate, 4, 2);
    let mut everything = spangate.log();
    for file in files_under(&state) {
        everything.push_str(&String::from_utf8_lossy(&std::fs::read(file).unwrap()));
    }
    everything.push_str(&serde_json::to_string(&spangate.get("inside")).unwrap());
    assert!(!everything.contains(secret), "the secret was echoed");
    assert!(!everything.contains("/bin/bash"), "/etc/passwd was echoed");
}

// Row 14: a huge rollout file.
#[test]
fn a_rollout_file_over_the_size_limit_is_invalid_and_never_read() {
    let (_temp, dir, state) = folders();
    let mut big = plain_flag("big").flag("big-flag").yaml();
    big.push_str(&"# padding\n".repeat(5_000));
    std::fs::write(dir.join("big.yaml"), &big).unwrap();
    std::fs::write(
        dir.join("small.yaml"),
        plain_flag("small").flag("small-flag").yaml(),
    )
    .unwrap();
    let spangate = Spangate::start_with_args(&dir, &state, &["--max-rollout-file-bytes", "4096"]);
    let status = spangate.wait_status("big", "Invalid", LIMIT, |s| phase(s) == "Invalid");
    assert!(
        message(&status).contains("over the limit of 4096 (--max-rollout-file-bytes)"),
        "{status:#}"
    );
    assert_eq!(evaluate(&spangate, "small-flag", 1).0, 200);
    assert_eq!(evaluate(&spangate, "big-flag", 1).0, 404);
    wait_passes(&spangate, 2, 3);
    assert_eq!(
        spangate.metric("spangate_store_files_read_total"),
        Some(1.0)
    );
}

// Row 18: two unparsable files of one stem.
#[test]
fn each_unparsable_file_names_its_own_error() {
    let (_temp, dir, state) = folders();
    std::fs::write(dir.join("garbage.yaml"), "kind: FeatureRollout\nspec: [\n").unwrap();
    std::fs::write(
        dir.join("garbage.json"),
        "{\"kind\": \"FeatureRollout\",, }",
    )
    .unwrap();
    let spangate = Spangate::start(&dir, &state);
    // In file-name order, the first takes the stem, the second its whole file name.
    let json = spangate.wait_status("garbage", "Invalid", LIMIT, |s| phase(s) == "Invalid");
    assert!(
        message(&json)
            .contains("garbage.json: not valid JSON: key must be a string at line 1 column 27"),
        "{json:#}"
    );
    let yaml = spangate.wait_status("garbage.yaml", "Invalid", LIMIT, |s| phase(s) == "Invalid");
    assert!(
        message(&yaml).contains("garbage.yaml: not valid YAML")
            && message(&yaml).contains("line 3 column 1"),
        "{yaml:#}"
    );
}

// Row 22: a typo in a field name.
#[test]
fn an_unknown_field_is_invalid_and_names_the_nearest_known_one() {
    let (_temp, dir, state) = folders();
    let mut analysis = from_yaml(ANALYSIS);
    analysis["maxErrorRateIncrese"] = json!(0.01);
    let typo = rollout("typo")
        .flag("typo-flag")
        .steps([10, 100])
        .analysis(analysis)
        .yaml();
    std::fs::write(dir.join("typo.yaml"), typo).unwrap();
    let spangate = Spangate::start(&dir, &state);
    let status = spangate.wait_status("typo", "Invalid", LIMIT, |s| phase(s) == "Invalid");
    assert!(
        message(&status).contains("unknown field \"spec.analysis.maxErrorRateIncrese\" (did you mean \"maxErrorRateIncrease\"?)"),
        "{status:#}"
    );
}

/// Row 23: steps with no threshold would promote on time alone; they are Invalid
/// unless the file says the analysis is off, and then they ramp on dwell alone.
#[test]
fn steps_without_a_check_are_invalid_unless_the_analysis_is_off() {
    let (_temp, dir, state) = folders();
    let unjudged = rollout("unjudged")
        .flag("unjudged-flag")
        .steps([10, 100])
        .analysis(json!({"minSamples": 40}))
        .yaml();
    std::fs::write(dir.join("unjudged.yaml"), unjudged).unwrap();
    let ramp = rollout("ramp")
        .flag("ramp-flag")
        .analysis(json!({"enabled": false}))
        .yaml();
    std::fs::write(dir.join("ramp.yaml"), ramp).unwrap();
    let spangate = Spangate::start(&dir, &state);
    let status = spangate.wait_status("unjudged", "Invalid", LIMIT, |s| phase(s) == "Invalid");
    assert!(
        message(&status).contains("no check to judge the steps by"),
        "{status:#}"
    );
    // No span is ever sent: the ramp still reaches 100% through each of its steps.
    let status = spangate.wait_status("ramp", "Promoted", LIMIT, |s| phase(s) == "Promoted");
    let advanced = status["history"].as_array().map_or(0, |h| {
        h.iter().filter(|t| t["reason"] == "StepAdvanced").count()
    });
    assert_eq!(advanced, 1, "{status:#}");
    assert!(status["lastVerdict"].is_null(), "{status:#}");
    assert_eq!(evaluate(&spangate, "unjudged-flag", 1).0, 404);
}
