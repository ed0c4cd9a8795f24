//! Attributes for the ingest unit tests' hand-made spans.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}
