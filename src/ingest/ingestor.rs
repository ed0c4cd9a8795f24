//! The windows every receiver feeds: one per routed rollout, for its current step.

use foldhash::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::IngestLimits;
use super::decode::{Decoded, Rejected};
use super::events::{
    BatchIngested, BatchRejected, Counters, IngestStats, RejectReason, RequestAnswered,
    SpansRejected, StaleSamplesDropped, Transport,
};
use super::extract::{self, InvalidSpan, SpanChecks};
use super::forward::Forwarder;
use crate::analysis::{Arm, Observation, Route, Routes, Window, WindowEpoch};
use crate::net::{MemoryBudget, Reservation};
use crate::telemetry::metrics::{Registry, TraceExemplar};

/// What became of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Spans in the request.
    pub spans: u64,
    /// Flag evaluations read off valid spans.
    pub samples: u64,
    /// Samples recorded into a rollout window.
    pub routed: u64,
    /// Invalid spans left out.
    pub rejected: u64,
    /// Why the first rejected span was invalid.
    pub first_rejection: Option<InvalidSpan>,
    /// The trace of the request's first span, as the exemplar of its duration.
    pub first_trace: Option<TraceExemplar>,
}

impl IngestReport {
    /// The OTLP answer: partial success when some spans were rejected.
    pub fn response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: self
                .first_rejection
                .as_ref()
                .map(|first| ExportTracePartialSuccess {
                    rejected_spans: i64::try_from(self.rejected).unwrap_or(i64::MAX),
                    error_message: format!(
                        "rejected {} of {} spans; first: {first}",
                        self.rejected, self.spans
                    ),
                }),
        }
    }
}

#[derive(Debug)]
struct StepWindow {
    epoch: WindowEpoch,
    window: Window,
}

/// Routes span samples into per-rollout windows. Shared by every receiver: routes
/// are read lock-free, and a batch is aggregated on its own before it is merged
/// under the lock once. It also holds what the receivers share: their limits and
/// the memory budget of the requests in flight.
#[derive(Debug)]
pub struct Ingestor {
    routes: ArcSwap<Routes>,
    /// rollout → window of its current epoch. Holds exactly the routed rollouts.
    windows: Mutex<HashMap<String, StepWindow>>,
    counters: Counters,
    forwarder: Option<Forwarder>,
    limits: IngestLimits,
    in_flight: Arc<MemoryBudget>,
}

impl Default for Ingestor {
    fn default() -> Self {
        Self::with_limits(IngestLimits::default(), None)
    }
}

impl Ingestor {
    pub fn new() -> Self {
        Self::default()
    }

    /// An ingestor whose receivers read requests under `limits`, and hand every
    /// accepted batch to `forwarder`, if any.
    pub fn with_limits(limits: IngestLimits, forwarder: Option<Forwarder>) -> Self {
        Self {
            routes: ArcSwap::default(),
            windows: Mutex::default(),
            counters: Counters::default(),
            forwarder,
            limits,
            in_flight: MemoryBudget::new(limits.max_in_flight_bytes),
        }
    }

    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Reserves `bytes` of the in-flight budget for a request being received.
    pub(super) fn reserve(&self, bytes: usize) -> Option<Reservation> {
        self.in_flight.try_reserve(bytes)
    }

    /// Replaces the routes. A rollout whose epoch changed starts an empty window;
    /// the window of a rollout no longer routed is dropped.
    pub fn set_routes(&self, routes: Routes) {
        let mut windows = self.lock_windows();
        let mut kept = HashMap::with_capacity_and_hasher(routes.len(), Default::default());
        for route in routes.iter() {
            let window = match windows.remove(&route.rollout) {
                Some(current) if current.epoch == route.epoch => current,
                _ => StepWindow {
                    epoch: route.epoch,
                    window: Window::default(),
                },
            };
            kept.insert(route.rollout.clone(), window);
        }
        *windows = kept;
        // Swapped under the lock, so a batch merging now sees windows and routes agree.
        self.routes.store(routes.into());
    }

    /// What a receiver calls with a request [`decode`](super::decode)d: ingests it,
    /// then forwards its valid spans when spans are forwarded.
    pub fn accept(&self, decoded: Decoded) -> IngestReport {
        let Decoded {
            mut request,
            rejected,
            cost,
        } = decoded;
        let left_out = rejected.count;
        let mut report = self.ingest_with(&request, rejected);
        report.first_trace = first_trace(&request);
        if let Some(forwarder) = &self.forwarder {
            // Spans the sender was told were rejected do not go on either.
            if report.rejected > left_out {
                retain_valid(&mut request, self.limits.span_checks);
            }
            forwarder.offer(request, cost);
        }
        report
    }

    /// Reads every span of `request` into the windows of the rollouts it counts for.
    pub fn ingest(&self, request: &ExportTraceServiceRequest) -> IngestReport {
        self.ingest_with(request, Rejected::default())
    }

    /// [`Ingestor::ingest`], counting `left_out` spans that decoding already rejected.
    fn ingest_with(&self, request: &ExportTraceServiceRequest, left_out: Rejected) -> IngestReport {
        let routes = self.routes.load();
        let mut report = IngestReport {
            spans: left_out.count,
            rejected: left_out.count,
            first_rejection: left_out.first,
            ..IngestReport::default()
        };
        let mut batch: HashMap<&str, StepWindow> = HashMap::default();
        for span in extract::spans(request, self.limits.span_checks) {
            report.spans += 1;
            let span = match span {
                Ok(span) => span,
                Err(invalid) => {
                    report.rejected += 1;
                    report.first_rejection.get_or_insert(invalid);
                    continue;
                }
            };
            for sample in span.samples() {
                report.samples += 1;
                for (route, arm) in routes.route(&sample) {
                    report.routed += 1;
                    let observation = route.observation(&sample, |name| span.attribute(name));
                    record(&mut batch, route, arm, &observation);
                }
            }
        }
        self.finish(batch, &report);
        report
    }

    /// Records observations already routed: what `spangate simulate` feeds the
    /// windows with, through the same merge as received spans.
    pub fn record_observations<'r>(
        &self,
        observations: impl IntoIterator<Item = (&'r Route, Arm, Observation)>,
    ) {
        let mut batch: HashMap<&str, StepWindow> = HashMap::default();
        let mut report = IngestReport::default();
        for (route, arm, observation) in observations {
            report.spans += 1;
            report.samples += 1;
            report.routed += 1;
            record(&mut batch, route, arm, &observation);
        }
        self.finish(batch, &report);
    }

    /// The routes samples are routed by now.
    pub fn routes(&self) -> std::sync::Arc<Routes> {
        self.routes.load_full()
    }

    fn finish(&self, batch: HashMap<&str, StepWindow>, report: &IngestReport) {
        let stale = self.merge(batch);

        for (rollout, samples) in stale {
            StaleSamplesDropped { rollout, samples }.emit(&self.counters);
        }
        if let Some(first) = &report.first_rejection {
            SpansRejected {
                count: report.rejected,
                first,
            }
            .emit(&self.counters);
        }
        BatchIngested {
            accepted: report.spans - report.rejected,
            samples: report.samples,
            routed: report.routed,
        }
        .emit(&self.counters);
    }

    /// Merges a batch into the windows; returns the rollouts whose samples were of
    /// an epoch no longer current (routes changed while the batch was read), with
    /// how many samples were dropped.
    fn merge<'b>(&self, batch: HashMap<&'b str, StepWindow>) -> Vec<(&'b str, u64)> {
        if batch.is_empty() {
            return Vec::new();
        }
        let mut stale = Vec::new();
        let mut windows = self.lock_windows();
        for (rollout, local) in batch {
            match windows.get_mut(rollout) {
                Some(current) if current.epoch == local.epoch => {
                    current.window.merge(&local.window)
                }
                _ => stale.push((
                    rollout,
                    local.window.baseline.samples + local.window.candidate.samples,
                )),
            }
        }
        stale
    }

    /// A copy of `rollout`'s window for `epoch`; empty when the rollout is not routed
    /// or is at another epoch.
    pub fn window(&self, rollout: &str, epoch: WindowEpoch) -> Window {
        self.lock_windows()
            .get(rollout)
            .filter(|current| current.epoch == epoch)
            .map(|current| current.window.clone())
            .unwrap_or_default()
    }

    /// Counters since start.
    pub fn stats(&self) -> IngestStats {
        IngestStats {
            forwarded: self
                .forwarder
                .as_ref()
                .map(Forwarder::stats)
                .unwrap_or_default(),
            in_flight_bytes: self.in_flight.used() as u64,
            in_flight_limit_bytes: self.in_flight.limit() as u64,
            ..self.counters.snapshot()
        }
    }

    /// Warning lines held back since start, by the event they were about.
    pub fn suppressed_warnings(&self) -> Vec<(String, u64)> {
        let mut suppressed = self.counters.suppressed_warnings();
        if let Some(forwarder) = &self.forwarder {
            suppressed.extend(forwarder.suppressed_warnings());
        }
        suppressed
    }

    /// Registers ingest's families of `/metrics` (and the forwarder's) into `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.counters.register(registry);
        self.in_flight.register_metrics(
            registry,
            ["otlp_in_flight", "otlp_in_flight_limit"],
            [
                "Memory held by OTLP requests being received and decoded (estimated)",
                "Most memory OTLP requests in flight may hold; beyond, requests are told to retry",
            ],
        );
        if let Some(forwarder) = &self.forwarder {
            forwarder.register_metrics(registry);
        }
    }

    /// Records how long a request took to answer, ingested or refused.
    pub(super) fn answered(
        &self,
        transport: Transport,
        took: std::time::Duration,
        trace: Option<TraceExemplar>,
    ) {
        RequestAnswered {
            transport,
            took,
            trace,
        }
        .emit(&self.counters);
    }

    /// Records a request refused before it could be ingested.
    pub(super) fn reject_batch(&self, transport: Transport, reason: RejectReason, detail: &str) {
        BatchRejected {
            transport,
            reason,
            detail,
        }
        .emit(&self.counters);
    }

    fn lock_windows(&self) -> MutexGuard<'_, HashMap<String, StepWindow>> {
        // Windows are only ever merged whole, so a panic elsewhere cannot leave
        // one half-written: the data behind a poisoned lock is still sound.
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The windows of `rollout`'s downstream services for `epoch`, by
    /// `service.name`. The trace join (spans of other services attributed to the
    /// rollout's flag through their trace) fills them; until it does there are none,
    /// and the judge sees every downstream service without spans.
    pub fn downstream_windows(&self, _rollout: &str, _epoch: WindowEpoch) -> Vec<(String, Window)> {
        Vec::new()
    }
}

/// Adds one observation to the batch's window of `route`.
fn record<'r>(
    batch: &mut HashMap<&'r str, StepWindow>,
    route: &'r Route,
    arm: Arm,
    observation: &Observation,
) {
    batch
        .entry(route.rollout.as_str())
        .or_insert_with(|| StepWindow {
            epoch: route.epoch,
            window: Window::default(),
        })
        .window
        .record(arm, observation);
}

/// Leaves out the spans [`extract::spans`] rejects, and the groups left empty.
fn retain_valid(request: &mut ExportTraceServiceRequest, checks: SpanChecks) {
    for resource_spans in &mut request.resource_spans {
        for scope_spans in &mut resource_spans.scope_spans {
            scope_spans
                .spans
                .retain(|span| extract::check(span, checks).is_ok());
        }
        resource_spans
            .scope_spans
            .retain(|scope_spans| !scope_spans.spans.is_empty());
    }
    request
        .resource_spans
        .retain(|resource_spans| !resource_spans.scope_spans.is_empty());
}

/// The trace ID of the request's first span.
fn first_trace(request: &ExportTraceServiceRequest) -> Option<TraceExemplar> {
    let span = request
        .resource_spans
        .first()?
        .scope_spans
        .first()?
        .spans
        .first()?;
    TraceExemplar::new(span.trace_id.as_slice().try_into().ok()?)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    use super::*;
    use crate::analysis::{Route, SpanIds};
    use crate::ingest::test_attributes::kv;

    fn span(variant: &str, error: bool, duration_ns: u64) -> Span {
        Span {
            trace_id: vec![9; 16],
            span_id: vec![1; 8],
            start_time_unix_nano: 1_000_000,
            end_time_unix_nano: 1_000_000 + duration_ns,
            attributes: vec![
                kv("feature_flag.key", "new-cart"),
                kv("feature_flag.result.variant", variant),
            ],
            status: error.then(|| Status {
                code: StatusCode::Error as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn routes(epoch: u64) -> Routes {
        Routes::new(vec![Route {
            rollout: "shop/checkout".to_string(),
            service: "checkout".to_string(),
            flag_key: "new-cart".to_string(),
            revision: None,
            baseline_variant: "off".to_string(),
            candidate_variant: "on".to_string(),
            bucket_by: None,
            epoch: WindowEpoch(epoch),
        }])
    }

    #[test]
    fn batches_accumulate_per_arm() {
        let ingestor = Ingestor::new();
        ingestor.set_routes(routes(1));
        let report = ingestor.ingest(&request(vec![
            span("off", false, 2_000_000),
            span("on", true, 9_000_000),
            span("other", false, 1),
        ]));
        assert_eq!(
            report,
            IngestReport {
                spans: 3,
                samples: 3,
                routed: 2,
                rejected: 0,
                first_rejection: None,
                first_trace: None,
            }
        );
        assert_eq!(report.response().partial_success, None);
        ingestor.ingest(&request(vec![span("on", false, 3_000_000)]));

        let window = ingestor.window("shop/checkout", WindowEpoch(1));
        assert_eq!((window.baseline.samples, window.baseline.errors), (1, 0));
        assert_eq!((window.candidate.samples, window.candidate.errors), (2, 1));
        assert_eq!(
            window.candidate.error_exemplars,
            [SpanIds {
                trace_id: [9; 16],
                span_id: [1; 8],
            }]
        );
        let slowest_ms = window.candidate.latency.quantile_ms(1.0).unwrap();
        assert!((slowest_ms - 9.0).abs() <= 9.0 * 0.01, "{slowest_ms}");
        assert_eq!(
            ingestor.window("shop/checkout", WindowEpoch(2)),
            Window::default()
        );
        assert_eq!(
            ingestor.window("shop/other", WindowEpoch(1)),
            Window::default()
        );

        let stats = ingestor.stats();
        assert_eq!(
            (
                stats.batches_received,
                stats.spans_accepted,
                stats.samples_extracted,
                stats.samples_routed
            ),
            (2, 4, 4, 3)
        );
    }

    #[test]
    fn a_new_epoch_restarts_the_window_and_removed_routes_drop_it() {
        let ingestor = Ingestor::new();
        ingestor.set_routes(routes(1));
        ingestor.ingest(&request(vec![span("on", false, 1_000)]));
        ingestor.set_routes(routes(1));
        assert_eq!(
            ingestor
                .window("shop/checkout", WindowEpoch(1))
                .candidate
                .samples,
            1
        );

        ingestor.set_routes(routes(2));
        assert_eq!(
            ingestor.window("shop/checkout", WindowEpoch(1)),
            Window::default()
        );
        assert_eq!(
            ingestor.window("shop/checkout", WindowEpoch(2)),
            Window::default()
        );
        ingestor.ingest(&request(vec![span("on", false, 1_000)]));
        assert_eq!(
            ingestor
                .window("shop/checkout", WindowEpoch(2))
                .candidate
                .samples,
            1
        );

        ingestor.set_routes(Routes::default());
        assert_eq!(
            ingestor.window("shop/checkout", WindowEpoch(2)),
            Window::default()
        );
        assert_eq!(
            ingestor
                .ingest(&request(vec![span("on", false, 1_000)]))
                .routed,
            0
        );
    }

    #[test]
    fn samples_of_a_past_epoch_are_dropped() {
        let ingestor = Ingestor::new();
        ingestor.set_routes(routes(2));
        let mut old = HashMap::default();
        old.insert("shop/checkout", {
            let mut window = Window::default();
            window.record(
                Arm::Candidate,
                &Observation {
                    is_error: false,
                    duration_ns: 1_000,
                    trace_id: [1; 16],
                    span_id: [5; 8],
                    unit: None,
                    split: false,
                },
            );
            StepWindow {
                epoch: WindowEpoch(1),
                window,
            }
        });
        assert_eq!(ingestor.merge(old), [("shop/checkout", 1)]);
        assert_eq!(
            ingestor.window("shop/checkout", WindowEpoch(2)),
            Window::default()
        );
    }

    #[test]
    fn concurrent_batches_lose_nothing() {
        let ingestor = Ingestor::new();
        ingestor.set_routes(routes(1));
        let batch = request(vec![span("off", false, 1_000), span("on", true, 2_000)]);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..250 {
                        ingestor.ingest(&batch);
                    }
                });
            }
        });
        let window = ingestor.window("shop/checkout", WindowEpoch(1));
        assert_eq!(
            (window.baseline.samples, window.candidate.errors),
            (1_000, 1_000)
        );
        assert_eq!(window.candidate.latency.count(), 1_000);
    }

    #[test]
    fn invalid_spans_are_rejected_and_reported() {
        let ingestor = Ingestor::new();
        ingestor.set_routes(routes(1));
        let mut bad = span("on", false, 1_000);
        bad.trace_id = vec![1, 2, 3];
        let report = ingestor.ingest(&request(vec![bad.clone(), span("on", false, 1_000), bad]));
        assert_eq!((report.spans, report.rejected, report.routed), (3, 2, 1));
        let partial = report.response().partial_success.unwrap();
        assert_eq!(partial.rejected_spans, 2);
        assert_eq!(
            partial.error_message,
            "rejected 2 of 3 spans; first: trace_id has 3 bytes, OTLP requires 16"
        );
        assert_eq!(ingestor.stats().spans_rejected, 2);
    }
}
