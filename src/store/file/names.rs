//! Names as Kubernetes validates them, and the state file each rollout gets.
//!
//! A name comes from a file anyone may have written: it is validated before it is
//! used, and never becomes part of a path. State files are named by a digest of the
//! key, so every valid name fits the file system (a 253-character name would not fit
//! the usual 255-byte limit with `.json`), and two keys never share a file.

use std::path::{Path, PathBuf};

use crate::store::RolloutKey;

/// Longest `metadata.name` (a DNS-1123 subdomain).
pub const MAX_NAME_LENGTH: usize = 253;
/// Longest `metadata.namespace` (a DNS-1123 label).
pub const MAX_NAMESPACE_LENGTH: usize = 63;

/// Why `name` is not a valid `metadata.name`, if it is not.
pub fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_NAME_LENGTH {
        return Some(format!(
            "metadata.name {} is {} characters long; at most {MAX_NAME_LENGTH} are allowed",
            shown(name),
            name.chars().count()
        ));
    }
    (name.is_empty() || !name.split('.').all(is_label)).then(|| {
        format!(
            "metadata.name {} is not a lowercase RFC 1123 subdomain: lowercase letters, digits, \
             '-' and '.', starting and ending with a letter or digit (e.g. 'new-checkout')",
            shown(name)
        )
    })
}

/// Why `namespace` is not a valid `metadata.namespace`, if it is not.
pub fn namespace_problem(namespace: &str) -> Option<String> {
    if namespace.len() > MAX_NAMESPACE_LENGTH {
        return Some(format!(
            "metadata.namespace {} is {} characters long; at most {MAX_NAMESPACE_LENGTH} are allowed",
            shown(namespace),
            namespace.chars().count()
        ));
    }
    (!is_label(namespace)).then(|| {
        format!(
            "metadata.namespace {} is not a lowercase RFC 1123 label: lowercase letters, digits \
             and '-', starting and ending with a letter or digit (e.g. 'shop')",
            shown(namespace)
        )
    })
}

fn is_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

pub use crate::api::shown;

/// The folder of state files named by digest (not a valid namespace, so it never
/// meets a folder of the naming before it).
const STATE_FOLDER: &str = "rollouts.v2";

/// Where the state of `key` is kept under `state_dir`.
pub fn state_path(state_dir: &Path, key: &RolloutKey) -> PathBuf {
    // Length-prefixed, so no two keys give the same bytes whatever they hold.
    let text = format!("{}:{}/{}", key.namespace.len(), key.namespace, key.name);
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    state_dir
        .join(STATE_FOLDER)
        .join(format!("{}.json", hex::encode(digest.as_ref())))
}

/// Where the state of `key` was kept before state files were named by digest,
/// for a valid key only (nothing else may become a path).
pub fn legacy_state_path(state_dir: &Path, key: &RolloutKey) -> Option<PathBuf> {
    let valid = name_problem(&key.name).is_none() && namespace_problem(&key.namespace).is_none();
    (valid && key.name.len() <= 250).then(|| {
        state_dir
            .join(&key.namespace)
            .join(format!("{}.json", key.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_as_kubernetes_does() {
        for good in ["r1", "new-checkout", "a.b-c.d", "0", &"a".repeat(253)] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "../default/r1",
            "..",
            "a/b",
            "A",
            "-a",
            "a-",
            "a..b",
            "a\0b",
            &"a".repeat(254),
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["default", "shop-1", &"a".repeat(63)] {
            assert_eq!(namespace_problem(good), None, "{good}");
        }
        for bad in ["/tmp/x", "..", "a.b", "", "Shop", &"a".repeat(64)] {
            assert!(namespace_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn every_key_has_its_own_state_file_inside_the_state_folder() {
        let dir = Path::new("state");
        let a = state_path(dir, &RolloutKey::new("a", "b/c"));
        let b = state_path(dir, &RolloutKey::new("a/b", "c"));
        assert_ne!(a, b);
        let long = state_path(dir, &RolloutKey::new("default", "a".repeat(253)));
        assert!(long.file_name().unwrap().len() < 100);
        assert_eq!(long.parent().unwrap(), dir.join(STATE_FOLDER));
        assert_eq!(
            legacy_state_path(dir, &RolloutKey::new("x", "../default/r1")),
            None
        );
    }

    #[test]
    fn long_or_odd_names_are_cut_and_escaped_in_messages() {
        let message = name_problem(&format!("{}\n", "x".repeat(300))).unwrap();
        assert!(message.contains("301 characters"), "{message}");
        assert!(message.len() < 200, "{message}");
        assert!(name_problem("a\0b").unwrap().contains("\\0"));
    }
}
