//! Tags the spans forwarded to the tracing backend with what their trace was
//! attributed to, so that a search by variant finds every span of the variant's
//! traces, in every service.
//!
//! A span whose trace is resolved when it arrives is tagged at once. A span of a
//! judged service whose trace is not resolved yet is held, within the trace join's
//! window and a memory budget of the same size, then forwarded tagged when its
//! trace resolves, or untagged when the window passes or the budget needs its
//! room. Every other span goes on at once, unchanged.

use std::collections::VecDeque;

use foldhash::HashMap;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::extract::{FLAG_KEY, FLAG_VARIANT, SERVICE_NAME, string_attribute};
use crate::analysis::{JoinLimits, Routes, Tags, TraceId, TraceJoin, name_hash};

/// `namespace/name` of the rollout a forwarded span's trace was attributed to.
pub const ROLLOUT_ATTRIBUTE: &str = "spangate.rollout";
/// The step (`status.currentStep`) that rollout was at.
pub const STEP_ATTRIBUTE: &str = "spangate.step";

/// What became of forwarded spans of attributed traces, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagStats {
    /// Spans tagged (at once or once their trace resolved).
    pub tagged: u64,
    /// Spans held back until their trace resolved or their window passed.
    pub held: u64,
    /// Held spans forwarded untagged: their trace never resolved in the window,
    /// or the budget needed their room.
    pub released_untagged: u64,
}

/// One trace's spans held back, as parts of requests with their resource and scope.
#[derive(Debug)]
struct Held {
    first_seen_ns: u64,
    parts: Vec<ResourceSpans>,
    bytes: usize,
}

/// The spans held back from forwarding, by trace.
#[derive(Debug)]
pub(super) struct ForwardHold {
    limits: JoinLimits,
    traces: HashMap<TraceId, Held>,
    order: VecDeque<(u64, TraceId)>,
    bytes: usize,
    stats: TagStats,
}

impl ForwardHold {
    pub(super) fn new(limits: JoinLimits) -> Self {
        Self {
            limits,
            traces: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            stats: TagStats::default(),
        }
    }

    pub(super) fn stats(&self) -> TagStats {
        self.stats
    }

    /// Memory the held spans take (estimated).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Tags the spans of `request` whose trace `join` resolved, and takes out the
    /// spans of judged services whose trace it has not; returns the held spans
    /// the budget had to let go, untagged, to forward now.
    pub(super) fn tag_or_hold(
        &mut self,
        now_ns: u64,
        request: &mut ExportTraceServiceRequest,
        routes: &Routes,
        join: &TraceJoin,
    ) -> Vec<ResourceSpans> {
        for resource_spans in &mut request.resource_spans {
            let attributes = resource_spans
                .resource
                .as_ref()
                .map_or(&[][..], |r| r.attributes.as_slice());
            let judged = string_attribute(attributes, SERVICE_NAME)
                .is_some_and(|service| routes.judges_service(name_hash(service)));
            let mut held: HashMap<TraceId, Vec<ScopeSpans>> = HashMap::default();
            for scope_spans in &mut resource_spans.scope_spans {
                let mut kept = Vec::with_capacity(scope_spans.spans.len());
                for mut span in std::mem::take(&mut scope_spans.spans) {
                    let Ok(trace_id) = TraceId::try_from(span.trace_id.as_slice()) else {
                        kept.push(span);
                        continue;
                    };
                    if let Some(tags) = tags_of(routes, join, &trace_id) {
                        tag(&mut span, &tags);
                        self.stats.tagged += 1;
                        kept.push(span);
                    } else if judged {
                        self.stats.held += 1;
                        let scopes = held.entry(trace_id).or_default();
                        match scopes.last_mut() {
                            Some(last) if last.scope == scope_spans.scope => last.spans.push(span),
                            _ => scopes.push(ScopeSpans {
                                scope: scope_spans.scope.clone(),
                                spans: vec![span],
                                schema_url: scope_spans.schema_url.clone(),
                            }),
                        }
                    } else {
                        kept.push(span);
                    }
                }
                scope_spans.spans = kept;
            }
            resource_spans
                .scope_spans
                .retain(|scope_spans| !scope_spans.spans.is_empty());
            for (trace_id, scope_spans) in held {
                self.hold(
                    now_ns,
                    trace_id,
                    ResourceSpans {
                        resource: resource_spans.resource.clone(),
                        scope_spans,
                        schema_url: resource_spans.schema_url.clone(),
                    },
                );
            }
        }
        request
            .resource_spans
            .retain(|resource_spans| !resource_spans.scope_spans.is_empty());
        let mut overflow = Vec::new();
        while self.bytes > self.limits.max_bytes {
            let Some((_, trace_id)) = self.order.pop_front() else {
                break;
            };
            overflow.extend(self.take(&trace_id, None));
        }
        overflow
    }

    /// The held spans of `trace_ids` whose trace `join` now resolved, tagged.
    pub(super) fn release<'t>(
        &mut self,
        trace_ids: impl IntoIterator<Item = &'t TraceId>,
        routes: &Routes,
        join: &TraceJoin,
    ) -> Vec<ResourceSpans> {
        let mut released = Vec::new();
        for trace_id in trace_ids {
            if !self.traces.contains_key(trace_id) {
                continue;
            }
            if let Some(tags) = tags_of(routes, join, trace_id) {
                released.extend(self.take(trace_id, Some(&tags)));
            }
        }
        released
    }

    /// Every held span, tagged when `routes` tag its trace as `join` resolved it.
    pub(super) fn release_all(&mut self, routes: &Routes, join: &TraceJoin) -> Vec<ResourceSpans> {
        let trace_ids: Vec<TraceId> = self.traces.keys().copied().collect();
        let mut released = self.release(&trace_ids, routes, join);
        // What no route tags goes untagged: its window is the only thing left to wait for.
        for trace_id in trace_ids {
            released.extend(self.take(&trace_id, None));
        }
        self.order.clear();
        released
    }

    /// The held spans whose window has passed, untagged.
    pub(super) fn expire(&mut self, now_ns: u64) -> Vec<ResourceSpans> {
        let mut expired = Vec::new();
        while let Some(&(first_seen_ns, trace_id)) = self.order.front() {
            if now_ns.saturating_sub(first_seen_ns) < self.limits.window_ns {
                break;
            }
            self.order.pop_front();
            if self
                .traces
                .get(&trace_id)
                .is_some_and(|held| held.first_seen_ns == first_seen_ns)
            {
                expired.extend(self.take(&trace_id, None));
            }
        }
        expired
    }

    fn hold(&mut self, now_ns: u64, trace_id: TraceId, part: ResourceSpans) {
        // The decoded spans, and their encoded copy once forwarded.
        let bytes = 2 * part.encoded_len();
        self.bytes = self.bytes.saturating_add(bytes);
        let order = &mut self.order;
        let held = self.traces.entry(trace_id).or_insert_with(|| {
            order.push_back((now_ns, trace_id));
            Held {
                first_seen_ns: now_ns,
                parts: Vec::new(),
                bytes: 0,
            }
        });
        held.parts.push(part);
        held.bytes = held.bytes.saturating_add(bytes);
    }

    /// Takes out a trace's held spans, tagged with `tags` when given.
    fn take(&mut self, trace_id: &TraceId, tags: Option<&Tags<'_>>) -> Vec<ResourceSpans> {
        let Some(mut held) = self.traces.remove(trace_id) else {
            return Vec::new();
        };
        self.bytes = self.bytes.saturating_sub(held.bytes);
        let spans = held
            .parts
            .iter_mut()
            .flat_map(|part| &mut part.scope_spans)
            .flat_map(|scope_spans| &mut scope_spans.spans);
        match tags {
            Some(tags) => {
                for span in spans {
                    tag(span, tags);
                    self.stats.tagged += 1;
                }
            }
            None => self.stats.released_untagged += spans.count() as u64,
        }
        held.parts
    }
}

/// What spans of trace `trace_id` are tagged with, once it resolved a routed flag
/// to one of its rollout's variants.
fn tags_of<'r>(routes: &'r Routes, join: &TraceJoin, trace_id: &TraceId) -> Option<Tags<'r>> {
    join.resolved(trace_id)
        .find_map(|(flag, resolution)| routes.tags(flag, resolution.variant))
}

/// Adds the trace's flag and variant to a span that lacks them, and the rollout
/// and step to every span.
fn tag(span: &mut Span, tags: &Tags<'_>) {
    let text = |key: &str, value: &str| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    };
    if !span.attributes.iter().any(|kv| kv.key == FLAG_KEY) {
        span.attributes.push(text(FLAG_KEY, tags.flag_key));
        span.attributes.push(text(FLAG_VARIANT, tags.variant));
    }
    span.attributes.push(text(ROLLOUT_ATTRIBUTE, tags.rollout));
    if let Some(step) = tags.step {
        span.attributes.push(KeyValue {
            key: STEP_ATTRIBUTE.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(i64::from(step))),
            }),
            ..Default::default()
        });
    }
}
