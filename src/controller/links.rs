//! Links into the trace backend (`--trace-url-template`): the operator renders them
//! into status and events, so every viewer (`kubectl get -o yaml`, the plugin,
//! `spangate get`, a dashboard) shows the same link without knowing the backend.

use std::str::FromStr;

use crate::api::{ExemplarReason, Verdict};

/// The placeholders a template may hold.
const TRACE_ID: &str = "{traceId}";
const SPAN_ID: &str = "{spanId}";

/// A URL template such as `http://jaeger:16686/trace/{traceId}`, checked when it
/// is read: `{traceId}` (and `{spanId}`, if present) are replaced by hex IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLinks {
    template: String,
}

/// Why a template cannot make links.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "it has no {{traceId}} to put the trace ID in, e.g. http://jaeger:16686/trace/{{traceId}}"
    )]
    NoTraceId,
    #[error(
        "it must be an http:// or https:// URL with a host, e.g. http://jaeger:16686/trace/{{traceId}}"
    )]
    NotHttp,
    #[error("it holds a space or a control character; percent-encode it")]
    Whitespace,
    #[error("{{{0}}} is not a placeholder spangate fills; use {{traceId}} or {{spanId}}")]
    UnknownPlaceholder(String),
}

impl FromStr for TraceLinks {
    type Err = TemplateError;

    fn from_str(template: &str) -> Result<Self, TemplateError> {
        if template
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(TemplateError::Whitespace);
        }
        let rest = ["http://", "https://"]
            .iter()
            .find_map(|scheme| {
                let head = template.get(..scheme.len())?;
                head.eq_ignore_ascii_case(scheme)
                    .then(|| &template[scheme.len()..])
            })
            .ok_or(TemplateError::NotHttp)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        // A placeholder in the host would let a trace ID choose where a link goes.
        let host_ok = axum::http::uri::Authority::from_str(authority)
            .is_ok_and(|authority| !authority.host().is_empty());
        if !host_ok {
            return Err(TemplateError::NotHttp);
        }
        // A misspelt placeholder (`{traceID}`, `{trace_id}`) would silently make
        // links that lead nowhere. Braces around anything but a name (Grafana's
        // JSON in a query string) are left alone.
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find('}') else { break };
            let name = &rest[..close];
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if is_name && name != "traceId" && name != "spanId" {
                return Err(TemplateError::UnknownPlaceholder(name.to_string()));
            }
        }
        if !template.contains(TRACE_ID) {
            return Err(TemplateError::NoTraceId);
        }
        Ok(Self {
            template: template.to_string(),
        })
    }
}

impl TraceLinks {
    /// The link to span `span_id` of trace `trace_id`; `None` unless both are the
    /// lowercase hex IDs spangate writes (32 and 16 digits), so nothing else can end
    /// up in a URL.
    pub fn url(&self, trace_id: &str, span_id: &str) -> Option<String> {
        let hex = |id: &str, len: usize| {
            id.len() == len && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(trace_id, 32) || !hex(span_id, 16) {
            return None;
        }
        Some(
            self.template
                .replace(TRACE_ID, trace_id)
                .replace(SPAN_ID, span_id),
        )
    }

    /// Writes the link next to each span the verdict points at.
    pub fn annotate(&self, verdict: &mut Verdict) {
        for exemplar in &mut verdict.exemplar_spans {
            exemplar.trace_url = self.url(&exemplar.trace_id, &exemplar.span_id);
        }
    }
}

/// The link an event about `verdict` carries, as `failed trace URL` (the first
/// failing span) or `slowest trace URL` (when no span failed, the slowest one).
pub fn event_link(verdict: &Verdict) -> Option<String> {
    let linked = |why| {
        verdict
            .exemplar_spans
            .iter()
            .filter(|exemplar| exemplar.why == why)
            .find_map(|exemplar| exemplar.trace_url.as_deref())
    };
    linked(ExemplarReason::Error)
        .map(|url| format!("failed trace {url}"))
        .or_else(|| linked(ExemplarReason::Slowest).map(|url| format!("slowest trace {url}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ExemplarSpan;

    const TRACE: &str = "56d2a938713d8e2d08dac64508e13d59";
    const SPAN: &str = "9f3c1a0b7e2d4c11";

    fn links(template: &str) -> TraceLinks {
        template.parse().unwrap()
    }

    #[test]
    fn trace_and_span_ids_fill_their_placeholders() {
        assert_eq!(
            links("http://jaeger.example:16686/trace/{traceId}").url(TRACE, SPAN),
            Some(format!("http://jaeger.example:16686/trace/{TRACE}"))
        );
        assert_eq!(
            links("https://tempo.example/trace/{traceId}?uiFind={spanId}&again={traceId}")
                .url(TRACE, SPAN),
            Some(format!(
                "https://tempo.example/trace/{TRACE}?uiFind={SPAN}&again={TRACE}"
            ))
        );
    }

    #[test]
    fn ids_that_are_not_spangates_hex_make_no_link() {
        let links = links("http://jaeger/trace/{traceId}");
        for (trace, span) in [
            ("", SPAN),
            (TRACE, ""),
            ("56D2A938713D8E2D08DAC64508E13D59", SPAN),
            ("../../admin?x=56d2a938713d8e2d08dac6", SPAN),
            (TRACE, "9f3c1a0b7e2d4c1"),
        ] {
            assert_eq!(links.url(trace, span), None, "{trace:?} {span:?}");
        }
    }

    #[test]
    fn templates_that_cannot_make_links_are_refused_with_the_reason() {
        for (template, error) in [
            ("http://jaeger:16686/search", TemplateError::NoTraceId),
            ("jaeger:16686/trace/{traceId}", TemplateError::NotHttp),
            ("ftp://jaeger/trace/{traceId}", TemplateError::NotHttp),
            ("http:///trace/{traceId}", TemplateError::NotHttp),
            ("http://{traceId}.example/", TemplateError::NotHttp),
            ("http://jaeger/trace/ {traceId}", TemplateError::Whitespace),
            (
                "http://jaeger/trace/{traceID}",
                TemplateError::UnknownPlaceholder("traceID".into()),
            ),
            (
                "http://jaeger/trace/{traceId}?span={span_id}",
                TemplateError::UnknownPlaceholder("span_id".into()),
            ),
        ] {
            assert_eq!(template.parse::<TraceLinks>(), Err(error), "{template}");
        }
        // Braces that are no placeholder (JSON in a query string) are fine.
        assert!(
            r#"HTTPS://grafana.example/explore?left={"query":"{traceId}"}"#
                .parse::<TraceLinks>()
                .is_ok()
        );
        assert!(TemplateError::NoTraceId.to_string().contains("{traceId}"));
    }

    #[test]
    fn every_exemplar_gets_its_link_and_events_prefer_a_failing_one() {
        let exemplar = |span: &str, why| ExemplarSpan {
            trace_id: TRACE.into(),
            span_id: span.into(),
            why,
            trace_url: None,
        };
        let mut verdict: Verdict = serde_json::from_value(serde_json::json!({
            "outcome": "Fail", "message": "m",
            "baseline": {"variant": "off", "samples": 0, "errors": 0},
            "candidate": {"variant": "on", "samples": 0, "errors": 0},
        }))
        .unwrap();
        verdict.exemplar_spans = vec![
            exemplar("00000000000000a1", ExemplarReason::Slowest),
            exemplar("00000000000000b2", ExemplarReason::Error),
        ];
        assert_eq!(event_link(&verdict), None);
        links("http://jaeger/trace/{traceId}?uiFind={spanId}").annotate(&mut verdict);
        let urls: Vec<_> = verdict
            .exemplar_spans
            .iter()
            .map(|e| e.trace_url.clone().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                format!("http://jaeger/trace/{TRACE}?uiFind=00000000000000a1"),
                format!("http://jaeger/trace/{TRACE}?uiFind=00000000000000b2"),
            ]
        );
        assert_eq!(
            event_link(&verdict),
            Some(format!(
                "failed trace http://jaeger/trace/{TRACE}?uiFind=00000000000000b2"
            ))
        );
        // A rollback on latency alone points at the slowest span.
        verdict.exemplar_spans.truncate(1);
        assert!(
            event_link(&verdict)
                .unwrap()
                .starts_with("slowest trace http://")
        );
    }
}
