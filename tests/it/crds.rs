//! The CRDs checked in under `crds/` are the ones the code generates.

use std::path::Path;

#[test]
fn checked_in_crds_equal_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let generated = spangate::api::crd_files();
    let mut stale = Vec::new();
    for (name, yaml) in &generated {
        let path = dir.join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != *yaml {
            stale.push(name.clone());
            if std::env::var_os("SPANGATE_UPDATE_CRDS").is_some() {
                std::fs::write(&path, yaml).unwrap();
            }
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = generated.into_iter().map(|(n, _)| n).collect();
    expected.sort();
    assert!(
        stale.is_empty(),
        "crds/ differs from the code for {stale:?}; regenerate with SPANGATE_UPDATE_CRDS=1 cargo test --test it crds::"
    );
    assert_eq!(
        on_disk, expected,
        "crds/ holds files the code does not generate"
    );
}
