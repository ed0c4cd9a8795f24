//! Private attributes: context attributes that targeting may read but that never
//! leave the process. Whatever shows a context (a debug log of an evaluation) or
//! telemetry that may carry one (a forwarded span) shows it through
//! [`PrivateAttributes::redact`] or asks [`PrivateAttributes::hides`] about each
//! value, so one rule decides everywhere.

use serde_json::{Map, Value};

use super::attribute::TARGETING_KEY;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[private]";

/// Where OpenTelemetry's conventions put a targeting key on telemetry.
const TARGETING_KEY_CONVENTIONS: [&[&str]; 2] =
    [&["feature_flag", "context", "id"], &["enduser", "id"]];

/// The most parts a private attribute path may have: a match is tracked as one bit
/// per part, so matching stays linear in the depth of a value however the path's
/// parts repeat.
const MAX_PATH_PARTS: usize = 64;

/// Why a name given as a private attribute cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivateAttributeError {
    #[error("private attribute {name:?} is not an attribute name or a.b.c path")]
    NotAPath { name: String },
    #[error("private attribute {name:?} has {parts} parts; at most {MAX_PATH_PARTS} are accepted")]
    TooManyParts { name: String, parts: usize },
}

/// Attribute paths (`email`, `address.street`) whose values must not be shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivateAttributes(Vec<Box<[Box<str>]>>);

/// One step on the way to a value: a key (of a context, an attribute list, a
/// key-value list, an object), or an item of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Item(usize),
}

/// Where a value sits: its last step and the path of what holds it. Each path
/// borrows its parent, so a walk down nested values keeps the whole path on its
/// stack and never allocates.
#[derive(Debug, Clone, Copy)]
pub struct ValuePath<'a> {
    step: Step<'a>,
    parent: Option<&'a ValuePath<'a>>,
}

impl<'a> ValuePath<'a> {
    /// The value named `key` inside `parent`, or at the top when there is none.
    pub fn under(parent: Option<&'a ValuePath<'a>>, key: &'a str) -> Self {
        Self {
            step: Step::Key(key),
            parent,
        }
    }

    /// The `index`th item of this array.
    pub fn item(&'a self, index: usize) -> Self {
        Self {
            step: Step::Item(index),
            parent: Some(self),
        }
    }

    /// The steps from this value up to the top.
    fn up(&self) -> impl Iterator<Item = Step<'a>> {
        std::iter::successors(Some(*self), |path| path.parent.copied()).map(|path| path.step)
    }
}

impl PrivateAttributes {
    /// Parses attribute names; every problem is named.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, Vec<PrivateAttributeError>> {
        let mut paths = Vec::new();
        let mut problems = Vec::new();
        for name in names {
            let name = name.as_ref();
            let parts: Vec<Box<str>> = name.split('.').map(Box::from).collect();
            if name.is_empty() || parts.iter().any(|p| p.is_empty()) {
                problems.push(PrivateAttributeError::NotAPath {
                    name: name.to_string(),
                });
            } else if parts.len() > MAX_PATH_PARTS {
                problems.push(PrivateAttributeError::TooManyParts {
                    name: name.to_string(),
                    parts: parts.len(),
                });
            } else {
                paths.push(parts.into_boxed_slice());
            }
        }
        if problems.is_empty() {
            Ok(Self(paths))
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The attributes as written, for fingerprints.
    pub fn texts(&self) -> Vec<String> {
        self.0.iter().map(|p| p.join(".")).collect()
    }

    /// Both lists together.
    pub fn union(&self, other: &PrivateAttributes) -> PrivateAttributes {
        let mut paths = self.0.clone();
        for path in &other.0 {
            if !paths.contains(path) {
                paths.push(path.clone());
            }
        }
        PrivateAttributes(paths)
    }

    /// Whether the targeting key itself is private.
    pub fn hides_targeting_key(&self) -> bool {
        self.0
            .iter()
            .any(|p| p.len() == 1 && &*p[0] == TARGETING_KEY)
    }

    /// Whether the value at `path` (in a context, or in telemetry: a span's
    /// attributes, a resource's, nested key-value lists and arrays) would show a
    /// private attribute. Applications name context attributes in their own way, so
    /// the value hides when its name ends with a private attribute's path at a dot:
    /// the name is the keys on the way to it joined with dots, each array item
    /// named by its array's key, with or without its index. Private `email` hides
    /// `email`, `user.email`, `contacts.0.email` and `contacts.email`;
    /// `tags.0` hides the first item of `tags`. A private targeting key also hides
    /// `feature_flag.context.id` and `enduser.id`, where OpenTelemetry puts it.
    /// Erring towards hiding is the safe side.
    pub fn hides(&self, path: &ValuePath<'_>) -> bool {
        self.0.iter().any(|parts| ends_with(path, parts))
            || (self.hides_targeting_key()
                && TARGETING_KEY_CONVENTIONS
                    .iter()
                    .any(|parts| ends_with(path, parts)))
    }

    /// A copy of `context` with the value of every name [`hides`](Self::hides)
    /// replaced by [`REDACTED`].
    pub fn redact(&self, context: &Map<String, Value>) -> Map<String, Value> {
        self.redact_object(context, None)
    }

    fn redact_object(
        &self,
        object: &Map<String, Value>,
        parent: Option<&ValuePath<'_>>,
    ) -> Map<String, Value> {
        object
            .iter()
            .map(|(key, value)| {
                let path = ValuePath::under(parent, key);
                (key.clone(), self.redact_value(value, &path))
            })
            .collect()
    }

    fn redact_value(&self, value: &Value, path: &ValuePath<'_>) -> Value {
        if self.hides(path) {
            return Value::from(REDACTED);
        }
        match value {
            Value::Object(object) => Value::Object(self.redact_object(object, Some(path))),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.redact_value(item, &path.item(index)))
                .collect(),
            other => other.clone(),
        }
    }
}

/// Whether the name of the value at `path` ends with `parts` at a dot. Read from
/// the value up, bit `r - 1` of `ways` says that the steps read so far match the
/// last `parts.len() - r` parts, `r` still to match; an array item either matches a
/// part equal to its index or is passed over, so several ways are followed at once.
fn ends_with<P: AsRef<str>>(path: &ValuePath<'_>, parts: &[P]) -> bool {
    debug_assert!((1..=MAX_PATH_PARTS).contains(&parts.len()));
    let mut ways: u64 = 1 << (parts.len() - 1);
    for step in path.up() {
        match step {
            Step::Key(key) => {
                for segment in key.rsplit('.') {
                    match advance(ways, parts, |part| part == segment) {
                        Advance::Matched => return true,
                        Advance::Left(0) => return false,
                        Advance::Left(left) => ways = left,
                    }
                }
            }
            Step::Item(index) => {
                match advance(ways, parts, |part| part.parse::<usize>() == Ok(index)) {
                    Advance::Matched => return true,
                    Advance::Left(left) => ways |= left,
                }
            }
        }
    }
    false
}

enum Advance {
    /// A way matched every part.
    Matched,
    /// The ways that go on, as in [`ends_with`].
    Left(u64),
}

/// The ways that go on after one more name: each way whose next part `fits` it.
fn advance<P: AsRef<str>>(ways: u64, parts: &[P], fits: impl Fn(&str) -> bool) -> Advance {
    let mut left = 0;
    let mut rest = ways;
    while rest != 0 {
        let bit = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        if fits(parts[bit].as_ref()) {
            if bit == 0 {
                return Advance::Matched;
            }
            left |= 1 << (bit - 1);
        }
    }
    Advance::Left(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The path of `steps`, given from the top: a string is a key, a number an item.
    fn hides(private: &PrivateAttributes, steps: &[Value]) -> bool {
        fn at(
            private: &PrivateAttributes,
            parent: Option<&ValuePath<'_>>,
            steps: &[Value],
        ) -> bool {
            let Some((first, rest)) = steps.split_first() else {
                unreachable!("a path has a step")
            };
            let path = match first {
                Value::String(key) => ValuePath::under(parent, key),
                Value::Number(index) => parent
                    .expect("an item is inside an array")
                    .item(index.as_u64().unwrap() as usize),
                _ => unreachable!("a step is a key or an index"),
            };
            if rest.is_empty() {
                private.hides(&path)
            } else {
                at(private, Some(&path), rest)
            }
        }
        at(private, None, steps)
    }

    #[test]
    fn redacts_names_and_nested_paths_and_nothing_else() {
        let private = PrivateAttributes::parse(&["email", "address.street", "missing.x"]).unwrap();
        let context = json!({
            "targetingKey": "u1",
            "email": "a@b.c",
            "address": {"street": "1 Main St", "state": "CA"},
            "contacts": [{"email": "d@e.f", "name": "Ann"}, "g@h.i"],
            "billing.address": [[{"street": "2 Side St"}]],
            "user_email": "shown",
        });
        let redacted = private.redact(context.as_object().unwrap());
        assert_eq!(
            Value::Object(redacted),
            json!({
                "targetingKey": "u1",
                "email": REDACTED,
                "address": {"street": REDACTED, "state": "CA"},
                "contacts": [{"email": REDACTED, "name": "Ann"}, "g@h.i"],
                "billing.address": [[{"street": REDACTED}]],
                "user_email": "shown",
            })
        );
        assert!(!private.hides_targeting_key());
        assert!(
            PrivateAttributes::parse(&["targetingKey"])
                .unwrap()
                .hides_targeting_key()
        );
    }

    #[test]
    fn names_hide_when_they_end_with_a_private_path_at_a_dot() {
        let private = PrivateAttributes::parse(&["email", "address.street", "tags.0"]).unwrap();
        for hidden in [
            json!(["email"]),
            json!(["user.email"]),
            json!(["feature_flag.context.email"]),
            json!(["user", "email"]),
            json!(["address.street"]),
            json!(["billing.address.street"]),
            json!(["billing", "address", "street"]),
            json!(["billing.address", "street"]),
            // The shape: a key-value list inside an array.
            json!(["arr", 0, "email"]),
            json!(["a", 3, 1, "b", 0, "email"]),
            json!(["address", 2, "street"]),
            json!(["tags", 0]),
            json!(["user.tags", 0]),
            json!(["tags", 1, 0]),
            json!(["tags", "0"]),
        ] {
            assert!(hides(&private, hidden.as_array().unwrap()), "{hidden}");
        }
        for shown in [
            json!(["emails"]),
            json!(["user_email"]),
            json!(["user.email_verified"]),
            json!(["street"]),
            json!(["address.street.number"]),
            json!(["address", "street", "number"]),
            json!(["address"]),
            json!(["address", 0]),
            json!(["tags", 1]),
            json!(["tags"]),
            json!(["arr", 0, "email_hash"]),
            json!(["feature_flag.context.id"]),
        ] {
            assert!(!hides(&private, shown.as_array().unwrap()), "{shown}");
        }
        let key = PrivateAttributes::parse(&["targetingKey"]).unwrap();
        for hidden in [
            json!(["targetingKey"]),
            json!(["feature_flag.context.id"]),
            json!(["enduser.id"]),
            json!(["enduser", "id"]),
            json!(["evaluations", 2, "feature_flag.context.id"]),
        ] {
            assert!(hides(&key, hidden.as_array().unwrap()), "{hidden}");
        }
        assert!(!hides(&key, &[json!("service.name")]));
        assert!(!hides(&key, &[json!("user.id")]));
    }

    #[test]
    fn deep_arrays_and_repeated_parts_are_matched() {
        let zeros = vec!["0"; MAX_PATH_PARTS].join(".");
        let private = PrivateAttributes::parse(&[zeros.as_str()]).unwrap();
        // Followed one by one, the ways to match 64 zeros among 200 nested first
        // items would be too many to count.
        let mut steps = vec![json!("a")];
        steps.extend(std::iter::repeat_n(json!(0), 200));
        assert!(hides(&private, &steps));
        steps[140] = json!(1);
        assert!(
            hides(&private, &steps),
            "an item that is not a first one is passed over"
        );
        let mut shallow = vec![json!("a")];
        shallow.extend(std::iter::repeat_n(json!(0), MAX_PATH_PARTS - 1));
        assert!(!hides(&private, &shallow));
    }

    #[test]
    fn malformed_names_are_refused() {
        let long = vec!["a"; MAX_PATH_PARTS + 1].join(".");
        let problems = PrivateAttributes::parse(&["", "a..b", "ok", long.as_str()]).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            matches!(&problems[0], PrivateAttributeError::NotAPath { name } if name.is_empty())
        );
        assert!(matches!(&problems[1], PrivateAttributeError::NotAPath { name } if name == "a..b"));
        assert!(matches!(
            problems[2],
            PrivateAttributeError::TooManyParts { parts: 65, .. }
        ));
        assert!(
            problems[2].to_string().contains("at most 64"),
            "{problems:?}"
        );
    }
}
