//! The windows every receiver feeds: one per routed rollout and judged service, for
//! the rollout's current step, fed through the trace join.

use foldhash::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

use super::IngestLimits;
use super::decode::{Decoded, Rejected};
use super::events::{
    BatchIngested, BatchRejected, Counters, IngestStats, RejectReason, RequestAnswered,
    SamplesJoined, SpansRejected, StaleSamplesDropped, Transport,
};
use super::extract::{self, InvalidSpan, SpanChecks};
use super::forward::Forwarder;
use super::logs::LogEvaluation;
use super::tag::{ForwardHold, TagStats};
use crate::analysis::{
    Arm, JoinSpan, JoinStats, Joined, MAX_BUCKET_ATTRIBUTES, Observation, Resolution, Route,
    Routes, SpanSample, TraceId, TraceJoin, Window, WindowEpoch, name_hash, unit_hash,
};
use crate::net::{MemoryBudget, Reservation};
use crate::telemetry::metrics::{Registry, Sampled, TraceExemplar, Unit};

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

/// A rollout's windows of one step: its service's first, then each downstream
/// service's, in the route's order.
#[derive(Debug)]
struct StepWindow {
    epoch: WindowEpoch,
    windows: Vec<Window>,
}

impl StepWindow {
    fn new(route: &Route) -> Self {
        Self {
            epoch: route.epoch,
            windows: vec![Window::default(); 1 + route.downstream.len()],
        }
    }

    fn samples(&self) -> u64 {
        self.windows
            .iter()
            .map(|w| w.baseline.samples + w.candidate.samples)
            .sum()
    }
}

/// Windows being filled by one request (or one expiry of the join), merged once.
type Batch<'r> = HashMap<&'r str, StepWindow>;

/// Routes span samples into per-rollout windows. Shared by every receiver: routes
/// are read lock-free, and a batch is aggregated on its own before it is merged
/// under the lock once. It also holds what the receivers share: their limits and
/// the memory budget of the requests in flight.
#[derive(Debug)]
pub struct Ingestor {
    routes: ArcSwap<Routes>,
    /// rollout → windows of its current epoch. Holds exactly the routed rollouts.
    windows: Mutex<HashMap<String, StepWindow>>,
    /// Which variant each recent trace recorded, and its spans waiting for one.
    join: Arc<Mutex<TraceJoin>>,
    /// The join's clock: it keeps time as nanoseconds since this instant.
    started: Instant,
    /// Spans held back from forwarding until their trace resolves.
    hold: Arc<Mutex<ForwardHold>>,
    pub(super) counters: Counters,
    pub(super) forwarder: Option<Forwarder>,
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
            join: Arc::new(Mutex::new(TraceJoin::new(limits.trace_join))),
            hold: Arc::new(Mutex::new(ForwardHold::new(limits.trace_join))),
            started: Instant::now(),
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
                Some(current)
                    if current.epoch == route.epoch
                        && current.windows.len() == 1 + route.downstream.len() =>
                {
                    current
                }
                _ => StepWindow::new(route),
            };
            kept.insert(route.rollout.clone(), window);
        }
        *windows = kept;
        // Swapped under the lock, so a batch merging now sees windows and routes agree.
        let routes = Arc::new(routes);
        let previous = self.routes.swap(Arc::clone(&routes));
        drop(windows);
        let ended = previous.iter().any(|old| {
            !routes
                .iter()
                .any(|new| new.rollout == old.rollout && new.flag_key == old.flag_key)
        });
        if let Some(forwarder) = self.forwarder.as_ref().filter(|_| ended) {
            // Held spans wait for a rollout's flag; with a rollout ended (promoted,
            // rolled back, removed) they would wait out the window for nothing: they
            // go now, tagged by the routes they were held under when their trace
            // resolved, else untagged.
            let join = self.lock_join();
            let released = lock(&self.hold).release_all(&previous, &join);
            drop(join);
            offer_released(forwarder, released);
        }
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
        let (mut report, evaluated) = self.ingest_request(&request, rejected);
        report.first_trace = first_trace(&request);
        if let Some(forwarder) = &self.forwarder {
            // Spans the sender was told were rejected do not go on either.
            if report.rejected > left_out {
                retain_valid(&mut request, self.limits.span_checks);
            }
            let released = self.tag_for_forwarding(Some(&mut request), &evaluated);
            forwarder.offer(request, cost);
            offer_released(forwarder, released);
        }
        report
    }

    /// Tags the spans of `request` whose trace is attributed and holds back those
    /// of judged services whose trace is not yet; returns the held spans to forward
    /// now: those of the `evaluated` traces, tagged, and those whose window passed
    /// or whose room the budget needs, untagged.
    fn tag_for_forwarding(
        &self,
        request: Option<&mut ExportTraceServiceRequest>,
        evaluated: &[TraceId],
    ) -> Vec<ResourceSpans> {
        let routes = self.routes.load();
        let now = self.now_ns();
        let join = self.lock_join();
        let mut hold = lock(&self.hold);
        let mut released = match request {
            Some(request) if !routes.is_empty() => hold.tag_or_hold(now, request, &routes, &join),
            _ => Vec::new(),
        };
        released.extend(hold.release(evaluated, &routes, &join));
        released.extend(hold.expire(now));
        released
    }

    /// Reads every span of `request` into the windows of the rollouts it counts for.
    pub fn ingest(&self, request: &ExportTraceServiceRequest) -> IngestReport {
        self.ingest_request(request, Rejected::default()).0
    }

    /// [`Ingestor::ingest`], counting `left_out` spans that decoding already rejected.
    ///
    /// Evaluations are read first, so a request's spans see the variants its own
    /// spans recorded whatever their order; then the spans of judged services go
    /// through the trace join.
    /// Also returns the traces the request's evaluations resolved.
    fn ingest_request(
        &self,
        request: &ExportTraceServiceRequest,
        left_out: Rejected,
    ) -> (IngestReport, Vec<TraceId>) {
        let routes = self.routes.load();
        let mut report = IngestReport {
            spans: left_out.count,
            rejected: left_out.count,
            first_rejection: left_out.first,
            ..IngestReport::default()
        };
        let mut evaluations = Vec::new();
        let mut judged = Vec::new();
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
                let flag = name_hash(sample.flag_key);
                if let Some(attributes) = routes.flag(flag) {
                    let resolution = resolution(&sample, attributes, |name| span.attribute(name));
                    evaluations.push((span.trace_id(), flag, resolution));
                }
            }
            let service = name_hash(span.service());
            if routes.judges_service(service) {
                judged.push((span.trace_id(), span.join_span(service)));
            }
        }
        let mut batch = Batch::default();
        // A request with nothing for the join leaves its lock alone: due traces are
        // let go by the timer and by every reader of the windows.
        if !(evaluations.is_empty() && judged.is_empty()) {
            report.routed = self.join(&routes, &evaluations, &judged, &mut batch);
        }
        self.finish(batch, &report);
        let evaluated = evaluations
            .iter()
            .map(|(trace_id, _, _)| *trace_id)
            .collect();
        (report, evaluated)
    }

    /// Hands evaluations, then spans, to the trace join, recording into `batch`
    /// every span it judges (earlier spans of the same traces included); returns
    /// how many samples were recorded.
    fn join<'r>(
        &self,
        routes: &'r Routes,
        evaluations: &[(TraceId, u64, Resolution)],
        spans: &[(TraceId, JoinSpan)],
        batch: &mut Batch<'r>,
    ) -> u64 {
        let mut routed = 0;
        let mut sink = |joined: Joined<'_>| {
            for (route, target) in routes.targets(&joined) {
                if let Some(arm) = target.arm(&joined) {
                    routed += 1;
                    record(
                        batch,
                        route,
                        target.service,
                        arm,
                        &target.observation(&joined),
                    );
                }
            }
        };
        let now = self.now_ns();
        let mut join = self.lock_join();
        join.expire(now, &mut sink);
        for (trace_id, flag, resolution) in evaluations {
            join.evaluation(now, *trace_id, *flag, *resolution, &mut sink);
        }
        for (trace_id, span) in spans {
            join.span(now, *trace_id, *span, &mut sink);
        }
        routed
    }

    /// Judges what the trace join holds past its window (the spans of services
    /// without an entry span, once their trace's time is up) and forwards the held
    /// spans whose window passed.
    pub fn let_due_traces_go(&self) {
        let routes = self.routes.load();
        let mut batch = Batch::default();
        let routed = self.join(&routes, &[], &[], &mut batch);
        self.record_joined(batch, routed);
        if let Some(forwarder) = &self.forwarder {
            offer_released(forwarder, self.tag_for_forwarding(None, &[]));
        }
    }

    /// Hands flag evaluations read from logs to the trace join; returns how many
    /// samples that recorded (spans of their traces that had waited for them).
    pub(super) fn resolve_traces(&self, evaluations: &[LogEvaluation<'_>]) -> u64 {
        let routes = self.routes.load();
        let resolved: Vec<_> = evaluations
            .iter()
            .filter_map(|evaluation| {
                let flag = name_hash(evaluation.key);
                let attributes = routes.flag(flag)?;
                let sample = SpanSample {
                    service: evaluation.service,
                    revision: None,
                    flag_key: evaluation.key,
                    variant: evaluation.variant,
                    is_error: false,
                    duration_ns: 0,
                    trace_id: evaluation.trace_id,
                    span_id: evaluation.span_id.unwrap_or_default(),
                    context_id: evaluation.context_id,
                    reason: evaluation.reason,
                    weight: 1,
                };
                let resolution = resolution(&sample, attributes, |name| evaluation.attribute(name));
                Some((evaluation.trace_id, flag, resolution))
            })
            .collect();
        if resolved.is_empty() {
            return 0;
        }
        let mut batch = Batch::default();
        let routed = self.join(&routes, &resolved, &[], &mut batch);
        self.record_joined(batch, routed);
        if let Some(forwarder) = &self.forwarder {
            let evaluated: Vec<TraceId> =
                resolved.iter().map(|(trace_id, _, _)| *trace_id).collect();
            offer_released(forwarder, self.tag_for_forwarding(None, &evaluated));
        }
        routed
    }

    /// Merges what the join judged outside a trace request.
    fn record_joined(&self, batch: Batch<'_>, routed: u64) {
        if routed == 0 {
            return;
        }
        for (rollout, samples) in self.merge(batch) {
            StaleSamplesDropped { rollout, samples }.emit(&self.counters);
        }
        SamplesJoined { routed }.emit(&self.counters);
    }

    /// Samples recorded into any window so far, the trace join's due spans
    /// included: grows exactly when there is new analysis data.
    pub fn samples_recorded(&self) -> u64 {
        self.let_due_traces_go();
        self.counters.snapshot().samples_routed
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records observations already routed: what `spangate simulate` feeds the
    /// windows with, through the same merge as received spans.
    pub fn record_observations<'r>(
        &self,
        observations: impl IntoIterator<Item = (&'r Route, Arm, Observation)>,
    ) {
        let mut batch = Batch::default();
        let mut report = IngestReport::default();
        for (route, arm, observation) in observations {
            report.spans += 1;
            report.samples += 1;
            report.routed += 1;
            record(&mut batch, route, 0, arm, &observation);
        }
        self.finish(batch, &report);
    }

    /// The routes samples are routed by now.
    pub fn routes(&self) -> std::sync::Arc<Routes> {
        self.routes.load_full()
    }

    fn finish(&self, batch: Batch<'_>, report: &IngestReport) {
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
    fn merge<'b>(&self, batch: Batch<'b>) -> Vec<(&'b str, u64)> {
        if batch.is_empty() {
            return Vec::new();
        }
        let mut stale = Vec::new();
        let mut windows = self.lock_windows();
        for (rollout, local) in batch {
            match windows.get_mut(rollout) {
                Some(current)
                    if current.epoch == local.epoch
                        && current.windows.len() == local.windows.len() =>
                {
                    for (current, local) in current.windows.iter_mut().zip(&local.windows) {
                        current.merge(local);
                    }
                }
                _ => stale.push((rollout, local.samples())),
            }
        }
        stale
    }

    /// A copy of `rollout`'s window for `epoch`; empty when the rollout is not routed
    /// or is at another epoch.
    pub fn window(&self, rollout: &str, epoch: WindowEpoch) -> Window {
        self.let_due_traces_go();
        self.lock_windows()
            .get(rollout)
            .filter(|current| current.epoch == epoch)
            .and_then(|current| current.windows.first().cloned())
            .unwrap_or_default()
    }

    /// Copies of `rollout`'s windows of its downstream services for `epoch`, by
    /// service; empty when the rollout is not routed or is at another epoch.
    pub fn downstream_windows(&self, rollout: &str, epoch: WindowEpoch) -> Vec<(String, Window)> {
        self.let_due_traces_go();
        let routes = self.routes.load();
        let Some(route) = routes.iter().find(|route| route.rollout == rollout) else {
            return Vec::new();
        };
        let windows = self.lock_windows();
        let Some(current) = windows
            .get(rollout)
            .filter(|current| current.epoch == epoch)
        else {
            return Vec::new();
        };
        route
            .downstream
            .iter()
            .cloned()
            .zip(current.windows.iter().skip(1).cloned())
            .collect()
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

    /// What the trace join did since start.
    pub fn join_stats(&self) -> JoinStats {
        self.lock_join().stats()
    }

    /// What tagging did to forwarded spans since start.
    pub fn tag_stats(&self) -> TagStats {
        lock(&self.hold).stats()
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
        self.register_join_metrics(registry);
    }

    /// The trace join's families: what it judged late, dropped, and holds.
    fn register_join_metrics(&self, registry: &mut Registry) {
        let counters: [SampledCounter<JoinStats>; 6] = [
            (
                "trace_join_evaluations",
                "Flag evaluations of routed flags read, from spans and logs",
                |s| s.evaluations,
            ),
            (
                "trace_join_spans_waited",
                "Spans of judged services that arrived before any evaluation of their trace",
                |s| s.spans_waited,
            ),
            (
                "trace_join_spans_unresolved",
                "Spans not judged: their trace resolved no flag within the window, or was let go for memory first",
                |s| s.spans_unresolved,
            ),
            (
                "trace_join_spans_redundant",
                "Spans not judged: their service already gave its sample span in the trace (child spans, duplicates)",
                |s| s.spans_redundant,
            ),
            (
                "trace_join_traces_conflicting",
                "Traces that recorded two variants of one flag, excluded from then on",
                |s| s.traces_conflicting,
            ),
            (
                "trace_join_traces_evicted",
                "Traces let go before their window passed, for the memory budget",
                |s| s.traces_evicted,
            ),
        ];
        for (name, help, read) in counters {
            let join = Arc::clone(&self.join);
            Sampled::counter(name, help, move || read(&lock(&join).stats())).register(registry);
        }
        let join = Arc::clone(&self.join);
        Sampled::gauge(
            "trace_join_traces",
            "Traces the trace join holds",
            None,
            move || lock(&join).traces() as u64,
        )
        .register(registry);
        let join = Arc::clone(&self.join);
        Sampled::gauge(
            "trace_join_memory",
            "Memory the traces in the trace join take (estimated)",
            Some(Unit::Bytes),
            move || lock(&join).bytes() as u64,
        )
        .register(registry);
        if self.forwarder.is_some() {
            self.register_tag_metrics(registry);
        }
        let limit = self.limits.trace_join.max_bytes as u64;
        Sampled::gauge(
            "trace_join_memory_limit",
            "Most memory the trace join may take; beyond, the oldest traces are let go",
            Some(Unit::Bytes),
            move || limit,
        )
        .register(registry);
    }

    /// Tagging's families: spans tagged, held, and let go untagged.
    fn register_tag_metrics(&self, registry: &mut Registry) {
        let counters: [SampledCounter<TagStats>; 3] = [
            (
                "forward_spans_tagged",
                "Forwarded spans tagged with their trace's flag, variant, rollout and step",
                |s| s.tagged,
            ),
            (
                "forward_spans_held",
                "Spans of judged services held back from forwarding until their trace resolved",
                |s| s.held,
            ),
            (
                "forward_spans_held_untagged",
                "Held spans forwarded untagged: their trace resolved no flag within the window, or the budget needed their room",
                |s| s.released_untagged,
            ),
        ];
        for (name, help, read) in counters {
            let hold = Arc::clone(&self.hold);
            Sampled::counter(name, help, move || read(&lock(&hold).stats())).register(registry);
        }
        let hold = Arc::clone(&self.hold);
        Sampled::gauge(
            "forward_hold_memory",
            "Memory the spans held back from forwarding take (estimated)",
            Some(Unit::Bytes),
            move || lock(&hold).bytes() as u64,
        )
        .register(registry);
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

    fn lock_join(&self) -> MutexGuard<'_, TraceJoin> {
        lock(&self.join)
    }

    fn lock_windows(&self) -> MutexGuard<'_, HashMap<String, StepWindow>> {
        // Windows are only ever merged whole, so a panic elsewhere cannot leave
        // one half-written: the data behind a poisoned lock is still sound.
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Forwards held spans let go of, if any.
fn offer_released(forwarder: &Forwarder, released: Vec<ResourceSpans>) {
    if released.is_empty() {
        return;
    }
    let request = ExportTraceServiceRequest {
        resource_spans: released,
    };
    // Held spans were decoded once; this is what they hold.
    let bytes = request.encoded_len();
    forwarder.offer(request, bytes);
}

/// A counter read from stats `S` when scraped: name, help, and how it is read.
type SampledCounter<S> = (&'static str, &'static str, fn(&S) -> u64);

/// The trace join or the forward hold, locked. Each is changed a trace at a
/// time: what a panic could leave is at most one trace's spans judged or
/// forwarded twice or not at all, never an unsound state.
fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds one observation to the batch's window of `route`'s `service` (0: its own,
/// then its downstream services).
fn record<'r>(
    batch: &mut Batch<'r>,
    route: &'r Route,
    service: usize,
    arm: Arm,
    observation: &Observation,
) {
    if let Some(window) = batch
        .entry(route.rollout.as_str())
        .or_insert_with(|| StepWindow::new(route))
        .windows
        .get_mut(service)
    {
        window.record(arm, observation);
    }
}

/// What an evaluation says of its trace, with the units of the `bucketBy`
/// attributes (name hash, name) that rollouts of its flag read.
fn resolution<'a>(
    sample: &SpanSample<'a>,
    attributes: &[(u64, String)],
    attribute: impl Fn(&str) -> Option<&'a str>,
) -> Resolution {
    let mut attribute_units = [None; MAX_BUCKET_ATTRIBUTES];
    let read = attributes.iter().filter_map(|(hash, name)| {
        attribute(name)
            .filter(|value| !value.is_empty())
            .map(|value| (*hash, unit_hash(value)))
    });
    for (slot, unit) in attribute_units.iter_mut().zip(read) {
        *slot = Some(unit);
    }
    Resolution {
        variant: name_hash(sample.variant),
        context_unit: sample.context_id.filter(|id| !id.is_empty()).map(unit_hash),
        attribute_units,
        split: sample.split(),
    }
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

    /// A root span of a trace of its own.
    fn span(variant: &str, error: bool, duration_ns: u64) -> Span {
        static TRACES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let mut trace_id = vec![9; 16];
        let n = TRACES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        trace_id[..4].copy_from_slice(&n.to_le_bytes());
        Span {
            trace_id,
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
            downstream: Vec::new(),
            flag_key: "new-cart".to_string(),
            revision: None,
            baseline_variant: "off".to_string(),
            candidate_variant: "on".to_string(),
            bucket_by: None,
            epoch: WindowEpoch(epoch),
            step: None,
        }])
    }

    #[test]
    fn batches_accumulate_per_arm() {
        let ingestor = Ingestor::new();
        ingestor.set_routes(routes(1));
        let failing = span("on", true, 9_000_000);
        let failing_trace: [u8; 16] = failing.trace_id.as_slice().try_into().unwrap();
        let report = ingestor.ingest(&request(vec![
            span("off", false, 2_000_000),
            failing,
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
                trace_id: failing_trace,
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
                    weight: 1,
                },
            );
            StepWindow {
                epoch: WindowEpoch(1),
                windows: vec![window],
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
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..250 {
                        let batch =
                            request(vec![span("off", false, 1_000), span("on", true, 2_000)]);
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

    /// A request of one service's spans, each (trace, parent, flag variant or none, error).
    fn service_request(
        service: &str,
        revision: &str,
        spans: &[([u8; 16], bool, Option<&str>, bool)],
    ) -> ExportTraceServiceRequest {
        let spans = spans
            .iter()
            .enumerate()
            .map(|(i, &(trace_id, child, variant, error))| Span {
                trace_id: trace_id.to_vec(),
                span_id: vec![u8::try_from(i + 1).unwrap(); 8],
                parent_span_id: if child { vec![7; 8] } else { Vec::new() },
                start_time_unix_nano: 1_000,
                end_time_unix_nano: 2_000,
                attributes: variant.map_or_else(Vec::new, |variant| {
                    vec![
                        kv("feature_flag.key", "new-cart"),
                        kv("feature_flag.result.variant", variant),
                        kv("accountId", "acme"),
                    ]
                }),
                status: error.then(|| Status {
                    code: StatusCode::Error as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let mut request = request(spans);
        request.resource_spans[0].resource = Some(Resource {
            attributes: vec![
                kv("service.name", service),
                kv("vcs.ref.head.revision", revision),
            ],
            ..Default::default()
        });
        request
    }

    #[test]
    fn downstream_spans_count_through_their_trace_in_any_order() {
        let ingestor = Ingestor::new();
        ingestor.set_routes(Routes::new(vec![Route {
            downstream: vec!["payments".to_string()],
            revision: Some("abc".to_string()),
            bucket_by: Some("accountId".to_string()),
            ..routes(1).iter().next().unwrap().clone()
        }]));
        // payments' spans arrive first, one trace failing, with a child span each.
        let report = ingestor.ingest(&service_request(
            "payments",
            "p-1",
            &[
                ([1; 16], true, None, false),
                ([1; 16], false, None, true),
                ([2; 16], false, None, false),
            ],
        ));
        assert_eq!(report.routed, 0);
        // checkout evaluates the flag in both traces, and a third of another revision.
        let report = ingestor.ingest(&service_request(
            "checkout",
            "abc",
            &[
                ([1; 16], false, Some("on"), false),
                ([2; 16], false, Some("off"), false),
            ],
        ));
        assert_eq!(report.routed, 4);
        ingestor.ingest(&service_request(
            "checkout",
            "other",
            &[([3; 16], false, Some("on"), false)],
        ));
        ingestor.ingest(&service_request(
            "payments",
            "p-1",
            &[([3; 16], false, None, false)],
        ));

        let checkout = ingestor.window("shop/checkout", WindowEpoch(1));
        assert_eq!(
            (checkout.baseline.samples, checkout.candidate.samples),
            (1, 1),
            "the revision filters checkout's spans only"
        );
        assert_eq!(checkout.units.spans_with_unit, 2);
        let downstream = ingestor.downstream_windows("shop/checkout", WindowEpoch(1));
        assert_eq!(downstream.len(), 1);
        let (service, payments) = &downstream[0];
        assert_eq!(service, "payments");
        assert_eq!(
            (payments.baseline.samples, payments.baseline.errors),
            (1, 0)
        );
        // Trace 1's entry span failed; its child did not count.
        assert_eq!(
            (payments.candidate.samples, payments.candidate.errors),
            (2, 1)
        );
        // The child arrived first and was set aside when its entry came.
        assert_eq!(ingestor.join_stats().spans_redundant, 1);
        assert_eq!(ingestor.join_stats().spans_waited, 3);
    }

    #[test]
    fn an_evaluation_in_a_log_record_resolves_the_spans_of_its_trace() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

        let ingestor = Ingestor::new();
        ingestor.set_routes(routes(1));
        let report = ingestor.ingest(&service_request(
            "checkout",
            "abc",
            &[([4; 16], false, None, true)],
        ));
        assert_eq!(report.routed, 0);
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        event_name: "feature_flag.evaluation".to_string(),
                        trace_id: vec![4; 16],
                        span_id: vec![1; 8],
                        attributes: vec![
                            kv("feature_flag.key", "new-cart"),
                            kv("feature_flag.result.variant", "on"),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let report = ingestor.accept_logs(Decoded {
            request: logs,
            rejected: Rejected::default(),
            cost: 0,
        });
        assert_eq!(report.resolved, 1);
        let window = ingestor.window("shop/checkout", WindowEpoch(1));
        assert_eq!((window.candidate.samples, window.candidate.errors), (1, 1));
        assert_eq!(ingestor.stats().samples_routed, 1);
        assert_eq!(
            ingestor.stats().batches_received,
            1,
            "a logs request is no trace batch"
        );
    }
}
