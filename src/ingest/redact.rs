//! Hides private attributes in OTLP trace and logs requests, wherever a value can
//! sit: the attributes of resources, scopes, spans, span events, links and log
//! records, a log record's structured body, and every key-value list and array
//! nested in them. Which values hide is
//! [`PrivateAttributes::hides`]'s rule, the one every output follows.
//!
//! Every forwarded span and log record goes through here: a hidden value is replaced in place and
//! nothing else is copied, so a span without a private attribute costs a walk over
//! its attributes and no allocation.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use crate::flags::{PrivateAttributes, REDACTED, ValuePath};

/// Replaces the value of every private attribute in `request` with [`REDACTED`].
pub fn hide_private(request: &mut ExportTraceServiceRequest, private: &PrivateAttributes) {
    if private.is_empty() {
        return;
    }
    for resource_spans in &mut request.resource_spans {
        if let Some(resource) = &mut resource_spans.resource {
            hide_in(&mut resource.attributes, None, private);
        }
        for scope_spans in &mut resource_spans.scope_spans {
            if let Some(scope) = &mut scope_spans.scope {
                hide_in(&mut scope.attributes, None, private);
            }
            for span in &mut scope_spans.spans {
                hide_in(&mut span.attributes, None, private);
                for event in &mut span.events {
                    hide_in(&mut event.attributes, None, private);
                }
                for link in &mut span.links {
                    hide_in(&mut link.attributes, None, private);
                }
            }
        }
    }
}

/// Replaces the value of every private attribute in `request` with [`REDACTED`].
/// A record's body is read as attributes when it is a key-value list (an event's
/// body is), so the same names hide there.
pub fn hide_private_in_logs(request: &mut ExportLogsServiceRequest, private: &PrivateAttributes) {
    if private.is_empty() {
        return;
    }
    for resource_logs in &mut request.resource_logs {
        if let Some(resource) = &mut resource_logs.resource {
            hide_in(&mut resource.attributes, None, private);
        }
        for scope_logs in &mut resource_logs.scope_logs {
            if let Some(scope) = &mut scope_logs.scope {
                hide_in(&mut scope.attributes, None, private);
            }
            for record in &mut scope_logs.log_records {
                hide_in(&mut record.attributes, None, private);
                if let Some(AnyValue {
                    value: Some(any_value::Value::KvlistValue(body)),
                }) = &mut record.body
                {
                    hide_in(&mut body.values, None, private);
                }
            }
        }
    }
}

/// Hides the private attributes of a list, the top one or one nested at `parent`.
/// The recursion through nested values is as deep as the receivers let a request
/// be: prost decodes at most 100 nested messages, serde_json 128 levels.
fn hide_in(
    attributes: &mut [KeyValue],
    parent: Option<&ValuePath<'_>>,
    private: &PrivateAttributes,
) {
    for KeyValue { key, value, .. } in attributes {
        let path = ValuePath::under(parent, key);
        if private.hides(&path) {
            *value = Some(redacted());
        } else if let Some(value) = value {
            hide_inside(value, &path, private);
        }
    }
}

/// Hides what is private inside `value`, which is itself shown.
fn hide_inside(value: &mut AnyValue, path: &ValuePath<'_>, private: &PrivateAttributes) {
    match &mut value.value {
        Some(any_value::Value::KvlistValue(list)) => hide_in(&mut list.values, Some(path), private),
        Some(any_value::Value::ArrayValue(array)) => {
            for (index, item) in array.values.iter_mut().enumerate() {
                let path = path.item(index);
                if private.hides(&path) {
                    *item = redacted();
                } else {
                    hide_inside(item, &path, private);
                }
            }
        }
        _ => {}
    }
}

fn redacted() -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(REDACTED.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::ingest::test_attributes::kv;

    fn list(values: Vec<KeyValue>) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList { values })),
        }
    }

    fn array(values: Vec<AnyValue>) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
        }
    }

    fn string(value: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }
    }

    fn attribute(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(value),
            ..Default::default()
        }
    }

    /// A request with `attributes` on its resource, scope, span, span event and link.
    fn request(attributes: &[KeyValue]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: attributes.to_vec(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        attributes: attributes.to_vec(),
                        ..Default::default()
                    }),
                    spans: vec![Span {
                        attributes: attributes.to_vec(),
                        events: vec![Event {
                            attributes: attributes.to_vec(),
                            ..Default::default()
                        }],
                        links: vec![Link {
                            attributes: attributes.to_vec(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn private_values_hide_at_any_depth_on_every_attribute_list() {
        let private = PrivateAttributes::parse(&["email", "profile.ssn", "tags.0"]).unwrap();
        let attributes = [
            kv("user.email", "secret-1"),
            kv("plan", "shown-1"),
            attribute(
                "profile",
                list(vec![kv("ssn", "secret-2"), kv("city", "shown-2")]),
            ),
            // The issue's: a key-value list inside an array.
            attribute(
                "arr",
                array(vec![list(vec![
                    kv("email", "secret-3"),
                    kv("user_email", "shown-3"),
                ])]),
            ),
            // Lists inside arrays inside lists.
            attribute(
                "ctx",
                list(vec![attribute(
                    "people",
                    array(vec![
                        string("shown-4"),
                        array(vec![list(vec![attribute(
                            "profile",
                            list(vec![kv("ssn", "secret-4")]),
                        )])]),
                    ]),
                )]),
            ),
            attribute("tags", array(vec![string("secret-5"), string("shown-5")])),
            attribute("emails", array(vec![string("shown-6")])),
            attribute("email", array(vec![string("secret-6")])),
        ];
        let mut batch = request(&attributes);
        hide_private(&mut batch, &private);
        let shown = format!("{batch:?}");
        for n in 1..=6 {
            assert!(
                !shown.contains(&format!("secret-{n}")),
                "secret-{n} in {shown}"
            );
            assert_eq!(shown.matches(&format!("shown-{n}")).count(), 5, "shown-{n}");
        }
        assert_eq!(shown.matches(REDACTED).count(), 5 * 6);
    }

    #[test]
    fn private_values_hide_in_log_records_and_their_bodies() {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

        let private = PrivateAttributes::parse(&["email"]).unwrap();
        let attributes = vec![kv("user.email", "secret-1"), kv("plan", "shown-1")];
        let mut batch = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: attributes.clone(),
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        attributes: attributes.clone(),
                        ..Default::default()
                    }),
                    log_records: vec![LogRecord {
                        attributes: attributes.clone(),
                        body: Some(list(attributes)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        hide_private_in_logs(&mut batch, &private);
        let shown = format!("{batch:?}");
        assert!(!shown.contains("secret-1"), "{shown}");
        assert_eq!(shown.matches("shown-1").count(), 4);
        assert_eq!(shown.matches(REDACTED).count(), 4);
    }

    #[test]
    fn nothing_changes_without_private_attributes() {
        let attributes = [
            kv("email", "a@b.example"),
            attribute("arr", array(vec![list(vec![kv("email", "c@d.example")])])),
        ];
        let mut batch = request(&attributes);
        hide_private(&mut batch, &PrivateAttributes::default());
        assert_eq!(batch, request(&attributes));
        let private = PrivateAttributes::parse(&["phone"]).unwrap();
        hide_private(&mut batch, &private);
        assert_eq!(batch, request(&attributes));
    }
}
