//! Context attributes, addressed as flagd's `var` addresses them: a name, or a path
//! with dots into nested objects (`address.state`, `tags.0`). `$flagd.flagKey` and
//! `$flagd.timestamp` are what flagd puts there: the flag's key and the evaluation
//! time in epoch seconds, whatever the context says.

use serde_json::Value;

use super::context::{Context, name_hash};

/// What an evaluation reads: the request's context, the flag, and the time.
#[derive(Debug, Clone, Copy)]
pub struct Env<'c> {
    pub context: &'c Context<'c>,
    pub flag_key: &'c str,
    /// Evaluation time, epoch seconds.
    pub now_seconds: i64,
}

impl<'c> Env<'c> {
    pub fn new(context: &'c Context<'c>, flag_key: &'c str, now_seconds: i64) -> Self {
        Self {
            context,
            flag_key,
            now_seconds,
        }
    }

    /// A context attribute by name.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&'c Value> {
        self.context.get_named(name)
    }
}

/// A compiled attribute reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// A path into the context: one name, or several for nested objects, with the
    /// hash of the first (see [`Context::get`]).
    Context(Box<[Box<str>]>, u64),
    /// `$flagd.flagKey`.
    FlagKey,
    /// `$flagd.timestamp`, epoch seconds.
    Timestamp,
    /// Another `$flagd.` name: flagd replaces the whole `$flagd` object, so nothing
    /// else is ever there.
    Nothing,
}

/// An attribute's value in one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found<'a> {
    Value(&'a Value),
    Str(&'a str),
    Seconds(i64),
}

impl<'a> Found<'a> {
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Found::Value(Value::String(s)) => Some(s),
            Found::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(self) -> Option<f64> {
        match self {
            Found::Value(Value::Number(n)) => n.as_f64(),
            Found::Seconds(s) => Some(s as f64),
            _ => None,
        }
    }
}

/// Why an attribute reference cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("is empty")]
    Empty,
    #[error(
        "{} has an empty part; nested attributes are written a.b.c",
        crate::api::shown(.0)
    )]
    EmptyPart(String),
}

impl Attribute {
    /// Compiles `text`: `email`, `address.state`, `$flagd.timestamp`.
    pub fn parse(text: &str) -> Result<Self, AttributeError> {
        if text.is_empty() {
            return Err(AttributeError::Empty);
        }
        if let Some(rest) = text.strip_prefix("$flagd.") {
            return Ok(match rest {
                "flagKey" => Attribute::FlagKey,
                "timestamp" => Attribute::Timestamp,
                _ => Attribute::Nothing,
            });
        }
        if text == "$flagd" {
            return Ok(Attribute::Nothing);
        }
        let parts: Vec<Box<str>> = text.split('.').map(Box::from).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(AttributeError::EmptyPart(text.to_string()));
        }
        let hash = name_hash(&parts[0]);
        Ok(Attribute::Context(parts.into_boxed_slice(), hash))
    }

    /// `targetingKey`.
    pub fn targeting_key() -> Self {
        Attribute::Context(
            Box::new([Box::from(TARGETING_KEY)]),
            name_hash(TARGETING_KEY),
        )
    }

    /// The attribute as written.
    pub fn text(&self) -> String {
        match self {
            Attribute::Context(parts, _) => parts.join("."),
            Attribute::FlagKey => "$flagd.flagKey".into(),
            Attribute::Timestamp => "$flagd.timestamp".into(),
            Attribute::Nothing => "$flagd".into(),
        }
    }

    /// The attribute's value; `None` when it is absent or null.
    #[inline]
    pub fn find<'a>(&self, env: &Env<'a>) -> Option<Found<'a>> {
        match self {
            Attribute::Context(parts, hash) => {
                let (first, rest) = parts.split_first()?;
                let mut value = env.context.get(first, *hash)?;
                for part in rest {
                    value = match value {
                        Value::Object(map) => map.get(&**part)?,
                        Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                (!value.is_null()).then_some(Found::Value(value))
            }
            Attribute::FlagKey => Some(Found::Str(env.flag_key)),
            Attribute::Timestamp => Some(Found::Seconds(env.now_seconds)),
            Attribute::Nothing => None,
        }
    }
}

/// The OpenFeature targeting key.
pub const TARGETING_KEY: &str = "targetingKey";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find(path: &str, context: Value) -> Option<Value> {
        let map = context.as_object().unwrap().clone();
        let context = Context::new(&map);
        let env = Env::new(&context, "f", 7);
        Attribute::parse(path).unwrap().find(&env).map(|f| match f {
            Found::Value(v) => v.clone(),
            Found::Str(s) => json!(s),
            Found::Seconds(s) => json!(s),
        })
    }

    #[test]
    fn paths_read_names_nested_objects_and_array_items() {
        let ctx =
            json!({"email": "a@b", "address": {"state": "CA"}, "tags": ["x", "y"], "n": null});
        assert_eq!(find("email", ctx.clone()), Some(json!("a@b")));
        assert_eq!(find("address.state", ctx.clone()), Some(json!("CA")));
        assert_eq!(find("tags.1", ctx.clone()), Some(json!("y")));
        assert_eq!(find("tags.2", ctx.clone()), None);
        assert_eq!(find("email.x", ctx.clone()), None);
        assert_eq!(find("n", ctx.clone()), None, "null is absent");
        assert_eq!(find("missing", ctx), None);
    }

    #[test]
    fn flagd_properties_come_from_the_evaluation_not_the_context() {
        let ctx = json!({"$flagd": {"flagKey": "forged", "timestamp": 1, "other": 2}});
        assert_eq!(find("$flagd.flagKey", ctx.clone()), Some(json!("f")));
        assert_eq!(find("$flagd.timestamp", ctx.clone()), Some(json!(7)));
        assert_eq!(find("$flagd.other", ctx), None);
    }

    #[test]
    fn empty_paths_are_refused() {
        assert_eq!(Attribute::parse(""), Err(AttributeError::Empty));
        assert!(matches!(
            Attribute::parse("a..b"),
            Err(AttributeError::EmptyPart(_))
        ));
    }
}
