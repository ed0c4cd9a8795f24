//! The container image as a user gets it: `scripts/image` builds it around the
//! spangate binary these tests use, skopeo reads the OCI archive and copies it out
//! as the README's push does, umoci unpacks it into a runtime bundle, and the
//! bundle's entrypoint runs from its root filesystem as the image's user under
//! `chroot`: `--version`, then `standalone` answering `/healthz`. The Dockerfile,
//! kept for those with Docker, declares the same user, entrypoint and labels.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::cluster::tool;
use crate::common::{BIN, ChildGuard, http_get, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const USER: &str = "65532:65532";
const ENTRYPOINT: &str = "/usr/local/bin/spangate";
const CMD: &str = "run";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The labels every build of the image carries, whatever builds it (the revision
/// is checked apart: it is the commit's).
fn fixed_labels() -> BTreeMap<String, String> {
    [
        ("title", "spangate"),
        ("description", env!("CARGO_PKG_DESCRIPTION")),
        ("version", VERSION),
        ("source", env!("CARGO_PKG_REPOSITORY")),
        ("licenses", env!("CARGO_PKG_LICENSE")),
    ]
    .into_iter()
    .map(|(k, v)| (format!("org.opencontainers.image.{k}"), v.to_string()))
    .collect()
}

fn run(command: &mut Command) -> String {
    let out = command
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

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The files the binary loads besides itself, as `ldd` names them.
fn libraries(binary: &Path) -> BTreeSet<PathBuf> {
    run(Command::new("ldd").arg(binary))
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once("=> ").map_or(line, |(_, p)| p);
            let path = path.split(" (").next().unwrap();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Every path under `root` (relative, without the root itself).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.symlink_metadata().unwrap().is_dir() {
                todo.push(path.clone());
            }
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// `program` as this process's PATH finds it.
fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// chroot needs CAP_SYS_CHROOT, and umoci keeps the image's root ownership only as root.
fn require_root() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "the image test runs the image's entrypoint with chroot, which needs root: \
         run ./scripts/test as root (CI does)"
    );
}

#[test]
#[ignore = "needs skopeo, umoci and root: run ./scripts/test"]
fn the_image_runs_its_entrypoint_as_nonroot_from_the_unpacked_root_filesystem() {
    require_root();
    let skopeo = tool("SPANGATE_SKOPEO");
    let umoci = tool("SPANGATE_UMOCI");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("spangate.oci.tar");

    // Built from the debug binary the tests already have: the release build
    // scripts/image makes by default would take minutes of CI.
    run(Command::new(repo().join("scripts/image"))
        .args(["--binary", BIN, "--output"])
        .arg(&archive));
    let size = std::fs::metadata(&archive).unwrap().len();
    println!("image archive: {size} bytes (from the debug binary)");

    let reference = format!("oci-archive:{}", archive.display());
    let inspect = json(&run(Command::new(&skopeo).args(["inspect", &reference])));
    assert_eq!(inspect["Os"], "linux", "{inspect}");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1, "{inspect}");
    let labels: BTreeMap<String, String> =
        serde_json::from_value(inspect["Labels"].clone()).unwrap();
    for (key, value) in fixed_labels() {
        assert_eq!(labels.get(&key), Some(&value), "label {key}: {labels:?}");
    }
    let head = run(Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo()));
    let revision = &labels["org.opencontainers.image.revision"];
    assert!(
        revision.trim_end_matches("-dirty") == head.trim(),
        "revision label {revision}, HEAD {head}"
    );
    let config = json(&run(
        Command::new(&skopeo).args(["inspect", "--config", &reference])
    ));
    let config = &config["config"];
    assert_eq!(config["User"], USER, "{config}");
    assert_eq!(strings(&config["Entrypoint"]), [ENTRYPOINT], "{config}");
    assert_eq!(strings(&config["Cmd"]), [CMD], "{config}");

    // As the README's push does, to a local layout instead of a registry.
    let layout = dir.path().join("layout");
    let tagged = format!("{}:{VERSION}", layout.display());
    run(Command::new(&skopeo)
        .args(["copy", "--quiet", &reference])
        .arg(format!("oci:{tagged}")));
    let bundle = dir.path().join("bundle");
    run(Command::new(&umoci)
        .args(["unpack", "--image", &tagged])
        .arg(&bundle));

    // The runtime configuration umoci derives from the image, as a runtime reads it.
    let runtime = json(&std::fs::read_to_string(bundle.join("config.json")).unwrap());
    let process = &runtime["process"];
    assert_eq!(process["user"]["uid"], 65532, "{process}");
    assert_eq!(process["user"]["gid"], 65532, "{process}");
    let args = strings(&process["args"]);
    assert_eq!(args, [ENTRYPOINT, CMD], "{process}");
    let env: Vec<&str> = strings(&process["env"]);

    // Minimal: the binary, what the loader loads, the user's name, and /tmp.
    let rootfs = bundle.join("rootfs");
    let files: BTreeSet<PathBuf> = walk(&rootfs)
        .into_iter()
        .filter(|p| !rootfs.join(p).symlink_metadata().unwrap().is_dir())
        .collect();
    let mut expected: BTreeSet<PathBuf> = libraries(Path::new(BIN))
        .iter()
        .map(|p| p.strip_prefix("/").unwrap().to_path_buf())
        .collect();
    for file in [
        "usr/local/bin/spangate",
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
    ] {
        expected.insert(file.into());
    }
    assert_eq!(files, expected, "the image holds exactly these files");
    for path in walk(&rootfs) {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            !["sh", "bash", "dash", "busybox", "ash"].contains(&name.as_ref()),
            "a shell in the image: {}",
            path.display()
        );
        let meta = rootfs.join(&path).symlink_metadata().unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{} is root's",
            path.display()
        );
    }
    let tmp = std::fs::metadata(rootfs.join("tmp")).unwrap();
    assert!(tmp.is_dir());
    assert_eq!(
        tmp.permissions().mode() & 0o7777,
        0o1777,
        "/tmp is writable"
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");

    // The entrypoint, as the runtime would start it: in the root filesystem, as the
    // image's user, with only the image's environment (whose PATH cannot find chroot).
    let chroot = which("chroot");
    let entrypoint = |extra: &[&str]| {
        let mut command = Command::new(&chroot);
        command
            .arg(format!("--userspec={USER}"))
            .arg(&rootfs)
            .arg(args[0])
            .args(extra)
            .env_clear()
            .envs(env.iter().map(|kv| kv.split_once('=').unwrap()));
        command
    };
    let version = run(&mut entrypoint(&["--version"]));
    assert_eq!(version.trim(), format!("spangate {VERSION}"));

    // standalone writes its ready file under /tmp, as the user it runs as.
    std::fs::create_dir(rootfs.join("tmp/rollouts")).unwrap();
    let mut standalone = entrypoint(&[
        "standalone",
        "--dir=/tmp/rollouts",
        "--state-dir=/tmp/state",
        "--otlp-grpc-addr=127.0.0.1:0",
        "--otlp-http-addr=127.0.0.1:0",
        "--ofrep-addr=127.0.0.1:0",
        "--probe-addr=127.0.0.1:0",
        "--ready-file=/tmp/ready.json",
    ]);
    let mut process = ChildGuard::spawn(&mut standalone, &dir.path().join("standalone.log"));
    let ready = rootfs.join("tmp/ready.json");
    let probes: std::net::SocketAddr = wait_for("the ready file", Duration::from_secs(60), || {
        if let Some(status) = process.exited() {
            panic!(
                "exited ({status}) before it was ready\n{}",
                process.log_tail()
            );
        }
        let text = std::fs::read_to_string(&ready).ok()?;
        json(&text)["probes"].as_str()?.parse().ok()
    });
    let (status, body) = wait_for("/healthz to answer 200", Duration::from_secs(30), || {
        let answer = http_get(probes, "/healthz");
        (answer.0 == 200).then_some(answer)
    });
    assert_eq!(status, 200, "{body}");
    let written = std::fs::metadata(&ready).unwrap();
    assert_eq!(
        (written.uid(), written.gid()),
        (65532, 65532),
        "written as 65532"
    );
    let exit = process.terminate(Duration::from_secs(30));
    assert!(exit.success(), "{exit}\n{}", process.log_tail());
}

/// A Dockerfile instruction's words, for the last stage (the image): continuation
/// lines joined, comments dropped.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut stage = Vec::new();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            stage.clear();
        }
        stage.push((instruction, rest.trim().to_string()));
    }
    stage
}

/// `key="value" key2="value 2"` of a LABEL instruction.
fn label_pairs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("LABEL key=value");
        let after = after.strip_prefix('"').expect("LABEL values are quoted");
        let (value, after) = after.split_once('"').expect("a closing quote");
        out.push((key.trim().to_string(), value.to_string()));
        rest = after.trim_start();
    }
    out
}

#[test]
fn the_dockerfile_declares_the_same_user_entrypoint_and_labels() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stage = final_stage(&text);
    let only = |name: &str| {
        let found: Vec<&String> = stage
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(found.len(), 1, "one {name} in the image stage: {stage:?}");
        found[0].clone()
    };
    assert_eq!(only("USER"), USER);
    let entrypoint: Vec<String> = serde_json::from_str(&only("ENTRYPOINT")).unwrap();
    assert_eq!(entrypoint, [ENTRYPOINT]);
    let cmd: Vec<String> = serde_json::from_str(&only("CMD")).unwrap();
    assert_eq!(cmd, [CMD]);
    let mut labels: BTreeMap<String, String> = stage
        .iter()
        .filter(|(i, _)| i == "LABEL")
        .flat_map(|(_, v)| label_pairs(v))
        .collect();
    let revision = labels
        .remove("org.opencontainers.image.revision")
        .expect("a revision label");
    assert_eq!(labels, fixed_labels());
    // The commit is the builder's to pass: docker build --build-arg REVISION=...
    assert_eq!(revision, "${REVISION}");
    assert!(
        stage
            .iter()
            .any(|(i, v)| i == "ARG" && v.starts_with("REVISION")),
        "{stage:?}"
    );
    // It copies the binary to where the entrypoint runs it.
    assert!(
        stage
            .iter()
            .any(|(i, v)| i == "COPY" && v.ends_with("/usr/local/bin/")),
        "{stage:?}"
    );
}

#[test]
fn the_charts_default_image_tag_is_the_crate_version() {
    let chart = repo().join("charts/spangate");
    let values: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["image"]["tag"], VERSION);
    let meta: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart.join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(meta["version"], VERSION);
    assert_eq!(meta["appVersion"], VERSION);
}
