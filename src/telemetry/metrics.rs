//! `/metrics`, through prometheus-client. Each shell owns its families: counters and
//! histograms bumped where things happen, registered once into the [`Registry`] the
//! server assembles, with [`Sampled`] families for values read only when scraped
//! (memory held, connections open, rollouts by phase).
//!
//! Names: `spangate_<subsystem>_<what>_<unit>`, the subsystem one of `otlp`,
//! `forward`, `ofrep`, `listener`, `controller`, `judge`, `store` and `log`; counters
//! end in `_total`, units (`_seconds`, `_bytes`) are spelled out. The README maps the
//! names before this scheme to these.

use std::fmt::{self, Write as _};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder,
    LabelValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::registry::{Registry, Unit};

/// The registry every family of the process is registered into.
pub fn registry() -> Registry {
    Registry::with_prefix("spangate")
}

/// The exposition of `registry`: OpenMetrics (with exemplars) when the scraper
/// accepts it, as Prometheus does, else the Prometheus text format that people and
/// older tools read. Returns the content type and the text.
pub fn exposition(registry: &Registry, accept: &str) -> (&'static str, String) {
    let mut text = String::new();
    if accept.contains("application/openmetrics-text") {
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, registry);
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        )
    } else {
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
        (
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            text,
        )
    }
}

/// A trace that one observation of a histogram belongs to, kept as its exemplar so
/// that a slow bucket links to a trace in Jaeger: `# {trace_id="4bf9…"} 0.27`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceExemplar {
    trace_id: [u8; 16],
}

impl TraceExemplar {
    /// The exemplar of trace `trace_id`; none for the invalid all-zero ID.
    pub fn new(trace_id: [u8; 16]) -> Option<Self> {
        (trace_id != [0; 16]).then_some(Self { trace_id })
    }

    /// The trace of a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`).
    pub fn from_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (_version, trace) = (parts.next()?, parts.next()?);
        let mut trace_id = [0; 16];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        Self::new(trace_id)
    }

    /// The trace of one of the operator's own spans, when its spans are exported.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = span.context();
        Self::new(context.span().span_context().trace_id().to_bytes())
    }
}

/// The trace ID in lower-case hex, written straight into the exposition.
#[derive(Debug)]
struct HexTraceId([u8; 16]);

impl EncodeLabelValue for HexTraceId {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(encoder, "{b:02x}"))
    }
}

impl EncodeLabelSet for TraceExemplar {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        [("trace_id", HexTraceId(self.trace_id))].encode(encoder)
    }
}

/// A histogram of durations whose buckets keep the latest trace seen in them.
pub type DurationHistogram = HistogramWithExemplars<TraceExemplar>;

/// A family of [`DurationHistogram`]s.
pub type DurationFamily<L> = Family<L, DurationHistogram, fn() -> DurationHistogram>;

/// A histogram whose buckets run 1, 2.5, 5 times each power of ten from `min` to
/// `max` seconds (both powers of ten): bounds a person reads at a glance.
pub fn duration_histogram(min: f64, max: f64) -> DurationHistogram {
    let mut bounds = Vec::new();
    let mut decade = min;
    while decade < max * 0.999 {
        bounds.extend([decade, decade * 2.5, decade * 5.0]);
        // Through the exponent, so bounds stay as short as 0.001, not 0.0010000000000000002.
        decade = 10f64.powi(decade.log10().round() as i32 + 1);
    }
    bounds.push(max);
    DurationHistogram::new(bounds.into_iter())
}

/// A family of values read when scraped, from state kept elsewhere; at most one
/// label.
pub struct Sampled {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    label: Option<&'static str>,
    read: Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>,
}

impl fmt::Debug for Sampled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampled").field("name", &self.name).finish()
    }
}

impl Sampled {
    /// A gauge without labels.
    pub fn gauge(
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            help,
            unit,
            kind: MetricType::Gauge,
            label: None,
            read: Box::new(move || vec![(String::new(), read())]),
        }
    }

    /// A gauge by `label`: `read` gives each label value and its number.
    pub fn gauge_by(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            help,
            unit: None,
            kind: MetricType::Gauge,
            label: Some(label),
            read: Box::new(read),
        }
    }

    /// A counter (kept elsewhere) without labels.
    pub fn counter(
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind: MetricType::Counter,
            ..Self::gauge(name, help, None, read)
        }
    }

    /// A counter (kept elsewhere) by `label`.
    pub fn counter_by(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind: MetricType::Counter,
            ..Self::gauge_by(name, help, label, read)
        }
    }

    /// Registers this family into `registry`.
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
        let values = (self.read)();
        match self.label {
            None => encode_value(self.kind, values.first().map_or(0, |(_, n)| *n), metric),
            Some(key) => values.iter().try_for_each(|(label, n)| {
                let labels = [(key, label.as_str())];
                encode_value(self.kind, *n, metric.encode_family(&labels)?)
            }),
        }
    }
}

fn encode_value(kind: MetricType, n: u64, encoder: MetricEncoder) -> fmt::Result {
    match kind {
        MetricType::Counter => ConstCounter::new(n).encode(encoder),
        _ => ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(encoder),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn prometheus_text_by_default_and_openmetrics_with_exemplars_when_asked() {
        let mut registry = registry();
        let requests = Counter::<u64>::default();
        registry.register("otlp_requests", "Requests", requests.clone());
        let durations = duration_histogram(0.001, 1.0);
        registry.register_with_unit(
            "otlp_request_duration",
            "How long requests took",
            Unit::Seconds,
            durations.clone(),
        );
        Sampled::gauge_by("listener_connections", "Open", "listener", || {
            vec![("ofrep".to_string(), 3)]
        })
        .register(&mut registry);
        requests.inc_by(2);
        let trace = TraceExemplar::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        durations.observe(0.02, trace, None);

        let (content_type, text) = exposition(&registry, "*/*");
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        for line in [
            "# TYPE spangate_otlp_requests_total counter",
            "spangate_otlp_requests_total 2",
            "spangate_listener_connections{listener=\"ofrep\"} 3",
            "spangate_otlp_request_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(!text.contains("trace_id"), "{text}");

        let (content_type, text) = exposition(
            &registry,
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        );
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(
            text.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.02"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn duration_buckets_are_round_numbers() {
        let (_, text) = {
            let mut registry = registry();
            registry.register("d", "D", duration_histogram(0.0001, 0.1));
            exposition(&registry, "")
        };
        let bounds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(
            bounds,
            [
                "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                "0.1", "+Inf"
            ]
        );
    }

    #[test]
    fn a_traceparent_that_is_not_one_gives_no_exemplar() {
        for header in [
            "",
            "00",
            "00-zz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceExemplar::from_traceparent(header), None, "{header:?}");
        }
    }
}
