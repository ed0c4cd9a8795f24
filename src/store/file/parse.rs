//! One rollout file's text, read into its documents. Messages name the file, the
//! document and where the problem is (line and column, or the field's path), and
//! never repeat what the file holds: a link to a secret must not end up in a status.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::fields::{self, RESOURCE_FIELDS, Spec};
use super::names::{name_problem, namespace_problem};
use crate::api::{FeatureRolloutSpec, GROUP, SegmentSpec, VERSION};
use crate::store::RolloutKey;
use crate::store::error::{SpecError, SpecProblem, TextFormat};

pub const DEFAULT_NAMESPACE: &str = "default";

/// What one file holds.
#[derive(Debug, Default)]
pub struct Parsed {
    pub rollouts: Vec<Document>,
    pub segments: Vec<SegmentDocument>,
}

/// One FeatureRollout document, or a document that could not be read.
#[derive(Debug)]
pub struct Document {
    /// Its namespace and name; `None` when its metadata cannot be trusted (a
    /// syntax error, an invalid name): it is then reported under the file's name.
    pub key: Option<RolloutKey>,
    /// Its position in the file, from 0.
    pub index: usize,
    pub spec: Result<std::sync::Arc<FeatureRolloutSpec>, SpecError>,
    /// Hash of the spec: a new one is a new generation.
    pub hash: String,
}

/// One Segment document.
#[derive(Debug)]
pub struct SegmentDocument {
    pub key: RolloutKey,
    pub spec: Result<SegmentSpec, SpecError>,
}

impl Parsed {
    /// A file with one problem and nothing read from it.
    pub fn unreadable(error: SpecError) -> Self {
        let mut parsed = Self::default();
        parsed.unreadable_document(0, error);
        parsed
    }

    fn unreadable_document(&mut self, index: usize, error: SpecError) {
        self.rollouts.push(Document {
            key: None,
            index,
            hash: String::new(),
            spec: Err(error),
        });
    }

    /// Whether this reads like a file caught half written, where `previous` did
    /// not: a document that does not parse, or whose steps cannot be carried out,
    /// or fewer documents than before.
    pub fn looks_cut_short_of(&self, previous: &Parsed) -> bool {
        self.problems() > 0 && previous.problems() == 0
            || self.rollouts.len() + self.segments.len()
                < previous.rollouts.len() + previous.segments.len()
    }

    fn problems(&self) -> usize {
        let rollouts = self.rollouts.iter().filter(|d| {
            d.spec
                .as_ref()
                .map_or(true, |spec| crate::rollout::plan(spec).is_err())
        });
        let segments = self.segments.iter().filter(|s| s.spec.is_err());
        rollouts.count() + segments.count()
    }
}

/// Reads `text`, a JSON file when `is_json`, else YAML with any number of documents.
/// `source` names the file in messages.
pub fn parse(source: &str, is_json: bool, text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    if is_json {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => document(&mut parsed, source, 0, value),
            Err(e) => parsed.unreadable_document(
                0,
                SpecError::in_document(
                    source,
                    0,
                    SpecProblem::Syntax {
                        format: TextFormat::Json,
                        message: scrub(&e.to_string()),
                        // serde_json says line 0 when it knows no position.
                        line: (e.line() > 0).then_some(e.line()),
                        column: (e.line() > 0).then_some(e.column()),
                    },
                ),
            ),
        }
        return parsed;
    }
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(value) => document(&mut parsed, source, index, value),
            Err(e) => {
                let location = e.location();
                parsed.unreadable_document(
                    index,
                    SpecError::in_document(
                        source,
                        index,
                        SpecProblem::Syntax {
                            format: TextFormat::Yaml,
                            message: scrub(&e.to_string()),
                            line: location.as_ref().map(|l| l.line()),
                            column: location.as_ref().map(|l| l.column()),
                        },
                    ),
                );
                // After a syntax error the stream yields the same error forever.
                break;
            }
        }
    }
    parsed
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    spec: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
}

fn document(parsed: &mut Parsed, source: &str, index: usize, value: Value) {
    let at = |problem| SpecError::in_document(source, index, problem);
    let Value::Mapping(map) = &value else {
        parsed.unreadable_document(index, at(SpecProblem::NotAMapping));
        return;
    };
    let top_level: Vec<String> = map
        .keys()
        .map(|k| {
            k.as_str().map_or_else(
                || "(a key that is not a string)".to_string(),
                str::to_string,
            )
        })
        .filter(|k| !RESOURCE_FIELDS.contains(&k.as_str()))
        .collect();
    let envelope: Envelope = match serde_path_to_error::deserialize(value) {
        Ok(e) => e,
        Err(e) => {
            parsed.unreadable_document(
                index,
                at(SpecProblem::NotAResource {
                    path: e.path().to_string(),
                    message: scrub(&e.inner().to_string()),
                }),
            );
            return;
        }
    };
    // Other kinds (ConfigMap...) may share the folder.
    let kind = match envelope.kind.as_deref() {
        Some("FeatureRollout") => "FeatureRollout",
        Some("Segment") => "Segment",
        _ => return,
    };
    let Some(name) = envelope.metadata.name.filter(|n| !n.is_empty()) else {
        parsed.unreadable_document(index, at(SpecProblem::NameMissing));
        return;
    };
    let namespace = envelope
        .metadata
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let invalid = name_problem(&name)
        .map(|message| ("metadata.name", message))
        .or_else(|| namespace_problem(&namespace).map(|message| ("metadata.namespace", message)));
    if let Some((field, message)) = invalid {
        parsed.unreadable_document(index, at(SpecProblem::InvalidName { field, message }));
        return;
    }
    let key = RolloutKey::new(namespace, name);
    let expected_api = format!("{GROUP}/{VERSION}");
    let wrong_api = (envelope.api_version.as_deref() != Some(expected_api.as_str())).then(|| {
        at(SpecProblem::WrongApiVersion {
            found: envelope.api_version.clone().unwrap_or_default(),
            kind,
        })
    });
    if kind == "Segment" {
        let spec = match (wrong_api, envelope.spec) {
            (Some(error), _) => Err(error),
            // A segment with no spec is an empty one, as the API server would have it.
            (None, None) => fields::unknown_fields(Spec::Segment, &top_level, &[]).map_or_else(
                || Ok(SegmentSpec::default()),
                |unknown| Err(at(SpecProblem::UnknownFields(unknown))),
            ),
            (None, Some(spec)) => typed(Spec::Segment, spec, &top_level).map_err(at),
        };
        parsed.segments.push(SegmentDocument { key, spec });
        return;
    }
    let spec = match (wrong_api, envelope.spec) {
        (Some(error), _) => Err(error),
        (None, None) => Err(at(SpecProblem::SpecMissing)),
        (None, Some(spec)) => typed(Spec::Rollout, spec, &top_level)
            .map(std::sync::Arc::new)
            .map_err(at),
    };
    let hash = match &spec {
        Ok(spec) => crate::fingerprint::fnv1a_hex(
            serde_json::to_string(&**spec)
                .unwrap_or_default()
                .as_bytes(),
        ),
        Err(_) => String::new(),
    };
    parsed.rollouts.push(Document {
        key: Some(key),
        index,
        spec,
        hash,
    });
}

/// `value` as a spec of type `T`; unknown fields (and unknown top-level fields of
/// the resource) are an error naming each with the nearest known one.
fn typed<T: DeserializeOwned>(
    which: Spec,
    value: Value,
    top_level: &[String],
) -> Result<T, SpecProblem> {
    let mut unknown: Vec<Vec<String>> = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(segments(&path));
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note));
    let spec = result.map_err(|e| SpecProblem::Schema {
        // An empty path is shown as `.`: the spec itself.
        field: match e.path().to_string().as_str() {
            "." => "spec".to_string(),
            path => format!("spec.{path}"),
        },
        message: scrub(&e.inner().to_string()),
    })?;
    match fields::unknown_fields(which, top_level, &unknown) {
        None => Ok(spec),
        Some(unknown) => Err(SpecProblem::UnknownFields(unknown)),
    }
}

/// The segments of a path that serde ignored, without the steps through options.
fn segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut out = segments(parent);
            out.push(index.to_string());
            out
        }
        Path::Map { parent, key } => {
            let mut out = segments(parent);
            out.push(key.clone());
            out
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

/// A parser's message without the values it quotes from the file: `invalid type:
/// string "root:x:0:0", expected …` keeps its shape and loses the string. Quoted
/// names (`unknown variant `x``) are kept when they are short.
pub fn scrub(message: &str) -> String {
    const MAX_MESSAGE: usize = 300;
    const MAX_NAME: usize = 40;
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE));
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                // `string "x", expected` → `string, expected`
                if out.ends_with(' ') {
                    out.pop();
                }
            }
            '`' => {
                let quoted: String = chars.by_ref().take_while(|&c| c != '`').collect();
                if quoted.chars().count() <= MAX_NAME && !quoted.chars().any(char::is_control) {
                    out.push('`');
                    out.push_str(&quoted);
                    out.push('`');
                } else {
                    out.push_str("`…`");
                }
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
        if out.len() > MAX_MESSAGE {
            out.push('…');
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(text: &str) -> Parsed {
        parse("rollouts/x.yaml", false, text)
    }

    fn error(parsed: &Parsed) -> String {
        parsed.rollouts[0].spec.as_ref().unwrap_err().to_string()
    }

    fn problem(parsed: &Parsed) -> &SpecProblem {
        &parsed.rollouts[0].spec.as_ref().unwrap_err().problem
    }

    #[test]
    fn a_syntax_error_is_one_unreadable_document_with_its_position() {
        let parsed = parse_yaml("kind: FeatureRollout\nspec: {flag: [\n");
        assert_eq!(parsed.rollouts.len(), 1);
        let message = error(&parsed);
        assert!(
            message.starts_with("rollouts/x.yaml: not valid YAML"),
            "{message}"
        );
        assert!(message.contains("line 3 column 1"), "{message}");
        assert!(
            matches!(
                problem(&parsed),
                SpecProblem::Syntax {
                    format: TextFormat::Yaml,
                    line: Some(3),
                    column: Some(1),
                    ..
                }
            ),
            "{:?}",
            problem(&parsed)
        );
    }

    #[test]
    fn file_contents_are_never_repeated() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
        let parsed = parse_yaml(passwd);
        let message = error(&parsed);
        assert!(
            !message.contains("root") && !message.contains("daemon"),
            "{message}"
        );
        let typed = parse_yaml(
            "apiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {name: a}\nspec: {flag: {key: k, variants: {a: 1}, defaultVariant: a}, steps: [\"hunter2\"]}\n",
        );
        let message = error(&typed);
        assert!(
            message.contains("spec.steps[0]: invalid type: string, expected f64"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            matches!(problem(&typed), SpecProblem::Schema { field, .. } if field == "spec.steps[0]"),
            "{:?}",
            problem(&typed)
        );
    }

    #[test]
    fn segments_are_read_beside_rollouts() {
        let parsed = parse_yaml(
            "apiVersion: spangate.dev/v1alpha1\nkind: Segment\nmetadata: {name: beta, namespace: shop}\nspec: {included: [u1]}\n---\napiVersion: spangate.dev/v1\nkind: Segment\nmetadata: {name: old}\n",
        );
        assert!(parsed.rollouts.is_empty());
        assert_eq!(parsed.segments.len(), 2);
        assert_eq!(parsed.segments[0].key, RolloutKey::new("shop", "beta"));
        assert_eq!(
            parsed.segments[0].spec.as_ref().unwrap().included,
            vec!["u1".to_string()]
        );
        let wrong = parsed.segments[1].spec.as_ref().unwrap_err().to_string();
        assert!(
            wrong.contains("Segment is spangate.dev/v1alpha1"),
            "{wrong}"
        );
    }

    #[test]
    fn other_kinds_are_skipped_and_wrong_api_versions_named() {
        let parsed = parse_yaml(
            "kind: ConfigMap\nmetadata: {name: beta}\n---\napiVersion: spangate.dev/v2\nkind: FeatureRollout\nmetadata: {name: a}\nspec: {}\n",
        );
        assert_eq!(parsed.rollouts.len(), 1);
        assert_eq!(
            parsed.rollouts[0].key,
            Some(RolloutKey::new("default", "a"))
        );
        assert!(
            error(&parsed).contains("(document 2): apiVersion is \"spangate.dev/v2\""),
            "{}",
            error(&parsed)
        );
    }

    #[test]
    fn invalid_names_are_not_keys() {
        let parsed = parse_yaml(
            "apiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {name: ../default/r1, namespace: x}\nspec: {}\n",
        );
        assert_eq!(parsed.rollouts[0].key, None);
        assert!(matches!(
            problem(&parsed),
            SpecProblem::InvalidName {
                field: "metadata.name",
                ..
            }
        ));
        assert!(
            error(&parsed).contains("not a lowercase RFC 1123 subdomain"),
            "{}",
            error(&parsed)
        );
    }

    #[test]
    fn unknown_fields_and_a_wrong_spec_are_told_apart_by_kind() {
        let parsed = parse_yaml(
            "apiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {name: a}\nspec: {flag: {key: k, variants: {a: 1}, defaultVariant: a}, stepz: [1]}\n---\napiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {name: b}\nspec: 7\n",
        );
        let error = parsed.rollouts[0].spec.as_ref().unwrap_err();
        let SpecProblem::UnknownFields(unknown) = &error.problem else {
            panic!("{error:?}");
        };
        assert_eq!(unknown.fields[0].path, "spec.stepz");
        assert_eq!(unknown.fields[0].nearest.as_deref(), Some("steps"));
        assert_eq!(
            error.to_string(),
            "rollouts/x.yaml: unknown field \"spec.stepz\" (did you mean \"steps\"?)"
        );
        let error = parsed.rollouts[1].spec.as_ref().unwrap_err();
        assert_eq!(error.document, Some(1));
        assert!(
            matches!(&error.problem, SpecProblem::Schema { field, .. } if field == "spec"),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("rollouts/x.yaml (document 2): spec: invalid type: integer"),
            "{error}"
        );
    }

    #[test]
    fn scrub_keeps_the_shape_of_a_message() {
        assert_eq!(
            scrub(r#"invalid type: string "a \"b\" c", expected f64 at line 2 column 3"#),
            "invalid type: string, expected f64 at line 2 column 3"
        );
        assert_eq!(
            scrub("unknown variant `In`, expected `in`"),
            "unknown variant `In`, expected `in`"
        );
        assert_eq!(
            scrub(&format!("unknown variant `{}`", "x".repeat(50))),
            "unknown variant `…`"
        );
    }
}
