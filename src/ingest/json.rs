//! OTLP/JSON decoding.
//!
//! opentelemetry-proto's serde mapping reads what the OTLP specification asks for
//! (hex trace and span IDs, integer enums, 64-bit integers as strings or numbers)
//! but refuses two things the protobuf JSON mapping allows and protojson-based
//! senders such as the Collector write: `null` for a default value, and an omitted
//! field in the few messages its types give no serde default (`{"arrayValue": {}}`
//! for an empty array, an entity ref without a schema URL). A request refused for
//! any reason is read once more with those defaults written out; if it is still
//! refused, the first error is the one reported.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

pub(super) fn decode(body: &[u8]) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    let error = match serde_json::from_slice(body) {
        Ok(request) => return Ok(request),
        Err(error) => error,
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return Err(error);
    };
    write_defaults(&mut value, "");
    serde_json::from_value(value).map_err(|_| error)
}

/// What is wrong with a refused request, without the value at fault: serde quotes
/// it (`invalid type: string "ann@example.com", expected a boolean`), it may be a
/// private attribute's, and the refusal is logged. Its kind, what was expected and
/// where are kept.
pub(super) fn without_values(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match unexpected_value(&message) {
        Some((prefix, kind, rest)) => format!("{prefix}{kind}{rest}"),
        None => message,
    }
}

/// The prefix, the kind of the unexpected value (`string`, `integer`) and the rest
/// of a serde "invalid type" or "invalid value" message.
fn unexpected_value(message: &str) -> Option<(&'static str, &str, &str)> {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The expectation comes from the types, never from the request, so the
            // last one is the real one whatever the value holds.
            let at = rest.rfind(", expected ")?;
            let unexpected = &rest[..at];
            let kind = unexpected
                .split(['"', '`'])
                .next()
                .unwrap_or_default()
                .trim();
            return Some((prefix, kind, &rest[at..]));
        }
    }
    None
}

/// Drops `null` members and adds the members the generated types require, for the
/// message `value` found under member `field` (every element of a repeated field
/// is found under its name). serde_json caps nesting at 128 levels, which bounds
/// the recursion.
fn write_defaults(value: &mut Value, field: &str) {
    match value {
        Value::Array(items) => {
            for item in items {
                write_defaults(item, field);
            }
        }
        Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            // Members that are required by the generated types, as strings and as arrays.
            let (strings, arrays): (&[&str], &[&str]) = match field {
                "arrayValue" | "kvlistValue" => (&[], &["values"]),
                "entityRefs" => (&["schemaUrl", "type"], &["idKeys", "descriptionKeys"]),
                _ => (&[], &[]),
            };
            for &name in strings {
                members
                    .entry(name)
                    .or_insert_with(|| Value::String(String::new()));
            }
            for &name in arrays {
                members
                    .entry(name)
                    .or_insert_with(|| Value::Array(Vec::new()));
            }
            for (name, member) in members.iter_mut() {
                write_defaults(member, name);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

    use super::*;

    fn request_with(resource: &str, span_members: &str) -> String {
        format!(
            r#"{{"resourceSpans": [{{"resource": {resource}, "scopeSpans": [{{"spans": [{{
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174"{span_members}
            }}]}}]}}]}}"#
        )
    }

    #[test]
    fn reads_omitted_defaults_and_nulls() {
        let body = request_with(
            r#"{"entityRefs": [{"type": "service", "idKeys": ["service.name"]}]}"#,
            r#", "parentSpanId": null, "status": null, "attributes": [
                {"key": "empty", "value": {"arrayValue": {}}},
                {"key": "nested", "value": {"kvlistValue": {"values": [
                    {"key": "inner", "value": {"kvlistValue": {}}}
                ]}}},
                {"key": "unset", "value": null}
            ]"#,
        );
        let request = decode(body.as_bytes()).unwrap();
        let resource_spans = &request.resource_spans[0];
        let entity = &resource_spans.resource.as_ref().unwrap().entity_refs[0];
        assert_eq!(
            (entity.r#type.as_str(), entity.schema_url.as_str()),
            ("service", "")
        );
        let span = &resource_spans.scope_spans[0].spans[0];
        assert!(span.parent_span_id.is_empty() && span.status.is_none());
        let value = |i: usize| {
            span.attributes[i]
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref())
        };
        assert!(matches!(value(0), Some(AnyValue::ArrayValue(a)) if a.values.is_empty()));
        assert!(matches!(value(1), Some(AnyValue::KvlistValue(l)) if l.values.len() == 1));
        assert_eq!(value(2), None);
    }

    #[test]
    fn refusals_do_not_quote_the_values_at_fault() {
        for (value, kind) in [
            (r#"{"boolValue": "secret-a, expected x"}"#, "string"),
            (r#"{"boolValue": 12345678}"#, "integer"),
            (r#"{"doubleValue": "secret-b"}"#, "string"),
            (r#"{"stringValue": 1.25}"#, "floating point"),
            (r#"{"stringValue": true}"#, "boolean"),
        ] {
            let body = request_with(
                "{}",
                &format!(r#", "attributes": [{{"key": "email", "value": {value}}}]"#),
            );
            let error = decode(body.as_bytes()).unwrap_err();
            let told = without_values(&error);
            for secret in ["secret-a", "secret-b", "12345678", "1.25", "true"] {
                assert!(!told.contains(secret), "{told}");
            }
            assert!(
                told.starts_with(&format!("invalid type: {kind}, expected")),
                "{told}"
            );
            assert!(told.contains("at line 3 column"), "{told}");
        }
    }

    #[test]
    fn still_refuses_what_is_not_otlp_with_the_first_error() {
        let not_hex = request_with("{}", r#", "parentSpanId": "zz""#);
        assert!(decode(not_hex.as_bytes()).is_err());
        let error = decode(br#"{"resourceSpans": 3}"#).unwrap_err();
        assert!(error.to_string().contains("line 1 column"), "{error}");
        assert!(decode(b"{\"resourceSpans\": [").is_err());
    }
}
