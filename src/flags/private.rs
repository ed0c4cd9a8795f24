//! Private attributes: context attributes that targeting may read but that never
//! leave the process. Whatever shows a context (a debug log of an evaluation, a
//! span) shows it through [`PrivateAttributes::redact`].

use serde_json::{Map, Value};

use super::attribute::TARGETING_KEY;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[private]";

/// Where OpenTelemetry's conventions put a targeting key on telemetry.
const TARGETING_KEY_CONVENTIONS: [&str; 2] = ["feature_flag.context.id", "enduser.id"];

/// Attribute paths (`email`, `address.street`) whose values must not be shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivateAttributes(Vec<Box<[Box<str>]>>);

impl PrivateAttributes {
    /// Parses attribute names; every problem is named.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, Vec<String>> {
        let mut paths = Vec::new();
        let mut problems = Vec::new();
        for name in names {
            let name = name.as_ref();
            let parts: Vec<Box<str>> = name.split('.').map(Box::from).collect();
            if name.is_empty() || parts.iter().any(|p| p.is_empty()) {
                problems.push(format!(
                    "private attribute {name:?} is not an attribute name or a.b.c path"
                ));
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

    /// Whether a telemetry attribute named `key` (a span's, a resource's) would show
    /// a private attribute. Applications name context attributes in their own way,
    /// so a key hides when it is the attribute's path (`email`, `address.street`) or
    /// ends with it after a dot (`user.email`, `feature_flag.context.email`); a
    /// private targeting key also hides `feature_flag.context.id` and `enduser.id`,
    /// where OpenTelemetry puts it. Erring towards hiding is the safe side.
    pub fn hides_key(&self, key: &str) -> bool {
        if self.hides_targeting_key() && TARGETING_KEY_CONVENTIONS.contains(&key) {
            return true;
        }
        self.0.iter().any(|path| {
            let mut segments = key.rsplit('.');
            path.iter()
                .rev()
                .all(|part| segments.next() == Some(&**part))
        })
    }

    /// A copy of `context` with every private attribute's value replaced by
    /// [`REDACTED`].
    pub fn redact(&self, context: &Map<String, Value>) -> Map<String, Value> {
        let mut copy = context.clone();
        for path in &self.0 {
            redact_path(&mut copy, path);
        }
        copy
    }
}

fn redact_path(map: &mut Map<String, Value>, path: &[Box<str>]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = map.get_mut(&**first) else {
        return;
    };
    if rest.is_empty() {
        *value = Value::from(REDACTED);
        return;
    }
    match value {
        Value::Object(inner) => redact_path(inner, rest),
        Value::Array(items) => {
            if let Some(item) = rest[0].parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                if rest.len() == 1 {
                    *item = Value::from(REDACTED);
                } else if let Value::Object(inner) = item {
                    redact_path(inner, &rest[1..]);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_names_and_nested_paths_and_nothing_else() {
        let private = PrivateAttributes::parse(&["email", "address.street", "missing.x"]).unwrap();
        let context = json!({
            "targetingKey": "u1",
            "email": "a@b.c",
            "address": {"street": "1 Main St", "state": "CA"},
        });
        let redacted = private.redact(context.as_object().unwrap());
        assert_eq!(
            Value::Object(redacted),
            json!({
                "targetingKey": "u1",
                "email": REDACTED,
                "address": {"street": REDACTED, "state": "CA"},
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
    fn telemetry_keys_hide_when_they_end_with_a_private_path() {
        let private = PrivateAttributes::parse(&["email", "address.street"]).unwrap();
        for hidden in [
            "email",
            "user.email",
            "feature_flag.context.email",
            "address.street",
            "billing.address.street",
        ] {
            assert!(private.hides_key(hidden), "{hidden}");
        }
        for shown in [
            "emails",
            "user.email_verified",
            "street",
            "address.street.number",
            "address",
            "feature_flag.context.id",
        ] {
            assert!(!private.hides_key(shown), "{shown}");
        }
        let key = PrivateAttributes::parse(&["targetingKey"]).unwrap();
        assert!(key.hides_key("feature_flag.context.id") && key.hides_key("enduser.id"));
        assert!(!key.hides_key("service.name"));
    }

    #[test]
    fn malformed_names_are_refused() {
        let problems = PrivateAttributes::parse(&["", "a..b", "ok"]).unwrap_err();
        assert_eq!(problems.len(), 2);
    }
}
