//! The krew plugin manifest (`krew/spangate.yaml`), held to krew's manifest schema
//! and to the rules krew checks before it installs (krew itself cannot be installed
//! here), and the release archive `scripts/krew-archive` builds: the same binary
//! gives the same archive, the rendered manifest carries that archive's sha256, and
//! the archive installed as krew would install it holds a working `kubectl-spangate`
//! at the manifest's `bin`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use serde::Deserialize;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const PLUGIN_BIN: &str = env!("CARGO_BIN_EXE_kubectl-spangate");

// krew's manifest types (sigs.k8s.io/krew/pkg/index): unknown fields are refused,
// so a misspelt field cannot pass for an optional one left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Plugin {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    version: String,
    short_description: String,
    description: Option<String>,
    caveats: Option<String>,
    homepage: Option<String>,
    platforms: Vec<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    uri: String,
    sha256: String,
    selector: Selector,
    files: Option<Vec<FileOperation>>,
    // krew accepts it; nothing here reads it.
    #[allow(dead_code)]
    license: Option<String>,
    bin: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selector {
    match_labels: Option<BTreeMap<String, String>>,
    match_expressions: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperation {
    from: String,
    to: String,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn parse(text: &str) -> Plugin {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("not a krew manifest: {e}\n{text}"))
}

/// What krew's `ValidatePlugin` checks, for the plugin named by the file `name`,
/// and what this plugin promises: its version, homepage, binary and archives.
/// `sha256` says what each platform's sum must be.
fn check(plugin: &Plugin, name: &str, sha256: impl Fn(&Platform) -> String) {
    assert_eq!(
        plugin.api_version,
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(plugin.kind, "Plugin");
    assert!(Regex::new(r"^[\w-]+$").unwrap().is_match(name));
    assert_eq!(plugin.metadata.name, name, "named as its file");
    let spec = &plugin.spec;
    assert!(!spec.short_description.is_empty());
    assert!(!spec.short_description.contains(['\r', '\n']));
    // krew-index asks for a short one; `kubectl krew search` prints it in a column.
    assert!(spec.short_description.len() <= 50, "{spec:?}");
    assert!(spec.description.as_deref().is_some_and(|d| !d.is_empty()));
    assert!(spec.caveats.as_deref().is_some_and(|c| !c.is_empty()));
    // krew parses the version as semver with a leading v.
    assert_eq!(spec.version, format!("v{VERSION}"), "the crate's version");
    assert_eq!(spec.homepage.as_deref(), Some(env!("CARGO_PKG_REPOSITORY")));
    assert!(!spec.platforms.is_empty());
    for platform in &spec.platforms {
        let labels = platform
            .selector
            .match_labels
            .as_ref()
            .expect("matchLabels");
        assert!(platform.selector.match_expressions.is_none());
        assert_eq!(
            labels.keys().map(String::as_str).collect::<Vec<_>>(),
            ["arch", "os"],
            "krew selects on os and arch only"
        );
        let (os, arch) = (&labels["os"], &labels["arch"]);
        let archive = format!("kubectl-spangate_v{VERSION}_{os}_{arch}.tar.gz");
        assert_eq!(
            platform.uri,
            format!(
                "{}/releases/download/v{VERSION}/{archive}",
                env!("CARGO_PKG_REPOSITORY")
            )
        );
        assert_eq!(platform.sha256, sha256(platform), "{archive}");
        let bin = if os == "windows" {
            "kubectl-spangate.exe"
        } else {
            "kubectl-spangate"
        };
        assert_eq!(platform.bin, bin);
        let files = platform.files.as_ref().expect("files");
        assert!(!files.is_empty());
        assert!(files.iter().all(|f| !f.from.is_empty() && !f.to.is_empty()));
    }
}

#[test]
fn the_manifest_template_follows_krews_rules() {
    let text = std::fs::read_to_string(repo().join("krew/spangate.yaml")).unwrap();
    // The one placeholder a platform has: its archive's sum, known once it is built.
    check(&parse(&text), "spangate", |p| {
        format!("{{{{sha256 {}}}}}", p.uri.rsplit('/').next().unwrap())
    });
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
}

fn krew_archive(out_dir: &Path) {
    let out = Command::new(repo().join("scripts/krew-archive"))
        .args(["--binary", PLUGIN_BIN, "--out-dir"])
        .arg(out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/krew-archive failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_release_archive_installs_the_plugin_with_the_manifests_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    krew_archive(&first);
    krew_archive(&second);

    let text = std::fs::read_to_string(first.join("spangate.yaml")).unwrap();
    let plugin = parse(&text);
    check(&plugin, "spangate", |p| {
        let archive = p.uri.rsplit('/').next().unwrap();
        let sum = sha256_hex(&first.join(archive));
        // The same binary, built into an archive again, gives the same bytes.
        assert_eq!(sum, sha256_hex(&second.join(archive)), "reproducible");
        println!("{archive}: sha256 {sum}");
        sum
    });
    // Rendering changed the sums only.
    let template = std::fs::read_to_string(repo().join("krew/spangate.yaml")).unwrap();
    let differing: Vec<(&str, &str)> = template
        .lines()
        .zip(text.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        differing.len(),
        plugin.spec.platforms.len(),
        "{differing:?}"
    );
    assert!(
        differing
            .iter()
            .all(|(a, _)| a.trim().starts_with("sha256:"))
    );

    // Installed as krew installs: unpack, copy each `from` into `to`, run `bin`.
    let platform = &plugin.spec.platforms[0];
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let archive = first.join(platform.uri.rsplit('/').next().unwrap());
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let installed = dir.path().join("installed");
    std::fs::create_dir(&installed).unwrap();
    for op in platform.files.as_ref().unwrap() {
        let to: PathBuf = installed.join(&op.to);
        std::fs::create_dir_all(&to).unwrap();
        let from = unpacked.join(&op.from);
        assert!(from.is_file(), "{} in the archive", op.from);
        std::fs::copy(&from, to.join(from.file_name().unwrap())).unwrap();
    }
    let bin = installed.join(&platform.bin);
    let mode = std::fs::metadata(&bin).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "{} is executable", bin.display());
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kubectl-spangate {VERSION}")
    );
}
