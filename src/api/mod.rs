//! The resources users write: `FeatureRollout` and `Segment` (group `spangate.dev`,
//! version `v1alpha1`), with the status the controller keeps on them.
//!
//! These types are the wire format for both the Kubernetes API and the rollout files
//! of standalone mode; what they mean is decided in the core (`rollout::plan`).

mod duration;
mod rollout;
mod segment;
mod targeting;

pub use duration::{DurationError, parse_duration};
pub use rollout::*;
pub use segment::*;
pub use targeting::*;

/// `text` quoted and escaped for a message, cut to its first 64 characters: a
/// problem names what a spec says, and is shown in status and events, so it
/// must not repeat all that a file holds.
pub fn shown(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}…", &text[..end]),
    }
}

/// The first ten of `names`, each [`shown`], and how many there are in all.
pub fn shown_list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const MAX: usize = 10;
    let count = names.len();
    let mut list: Vec<String> = names.take(MAX).map(shown).collect();
    if count > MAX {
        list.push(format!("… {count} in all"));
    }
    list.join(", ")
}

/// API group of every spangate resource.
pub const GROUP: &str = "spangate.dev";
/// API version served for every spangate resource.
pub const VERSION: &str = "v1alpha1";

/// Annotation that asks the controller to promote a rollout now (`kubectl spangate
/// promote`); the controller removes it once it acted.
pub const PROMOTE_ANNOTATION: &str = "spangate.dev/promote";
/// Annotation that asks the controller to roll a rollout back now (`kubectl spangate
/// abort`); the controller removes it once it acted.
pub const ABORT_ANNOTATION: &str = "spangate.dev/abort";

/// Each CRD as (file name under `crds/`, YAML).
pub fn crd_files() -> Vec<(String, String)> {
    use kube::CustomResourceExt;
    [FeatureRollout::crd(), Segment::crd()]
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            let mut value = serde_json::to_value(&crd).expect("a CRD always serializes");
            drop_null_from_enums(&mut value);
            let yaml = serde_norway::to_string(&value).expect("a CRD always serializes");
            (name, yaml)
        })
        .collect()
}

/// An optional enum is generated as `enum: [..., null]` beside `nullable: true`;
/// the `null` adds nothing, and kubectl's client-side validation of the CRD refuses it.
fn drop_null_from_enums(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(drop_null_from_enums);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_from_enums),
        _ => {}
    }
}

/// The CRDs as one multi-document YAML, what `spangate crd` prints.
pub fn crd_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_spec_says_is_quoted_cut_short() {
        assert_eq!(shown("on"), "\"on\"");
        let long = shown(&"é".repeat(10_000));
        assert_eq!(long, format!("\"{}\"…", "é".repeat(64)));
        let names: Vec<String> = (0..1_000).map(|i| format!("v{i}")).collect();
        let list = shown_list(names.iter().map(String::as_str));
        assert!(list.starts_with("\"v0\", \"v1\", "), "{list}");
        assert!(list.ends_with("\"v9\", … 1000 in all"), "{list}");
        assert_eq!(shown_list(["a", "b"].into_iter()), "\"a\", \"b\"");
    }
}
