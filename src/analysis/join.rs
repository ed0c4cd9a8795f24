//! The trace join: which variant of each flag a trace recorded, and which span of
//! each judged service in that trace becomes its one sample.
//!
//! A flag evaluated in one service decides what the whole trace did, so every
//! service's spans in that trace are attributed to the variant, whichever sent
//! them and in whatever order spans and evaluations arrive. Each service gives one
//! sample per trace and flag: its entry span (kind SERVER or CONSUMER, or a root
//! span), else its first span once the trace's time in the join is up; child
//! spans would otherwise multiply one request into many correlated samples.
//!
//! Bounded twice: a trace is kept `window` after it was first seen, and when the
//! kept traces pass the memory budget the oldest go first (judged as far as they
//! can be). Spans of a trace never resolved are not judged, and counted. Names
//! (flags, services, variants) are kept as [`name_hash`]es, so the join holds no
//! strings and routes can change under it. No clock: callers pass the time.

use std::collections::VecDeque;
use std::mem::size_of;

use foldhash::HashMap;

use super::window::unit_hash;

/// 16 bytes, as OTLP carries it.
pub type TraceId = [u8; 16];

/// The hash a name (flag key, service, variant, attribute) is known by in the join.
pub fn name_hash(name: &str) -> u64 {
    unit_hash(name)
}

/// Most `bucketBy` attributes read per evaluation: rollouts of one flag bucket by
/// one attribute (two while a rollout changes it).
pub const MAX_BUCKET_ATTRIBUTES: usize = 2;

/// What a trace recorded for one flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// [`name_hash`] of the variant.
    pub variant: u64,
    /// [`unit_hash`] of `feature_flag.context.id`, when the evaluation carried it.
    pub context_unit: Option<u64>,
    /// ([`name_hash`] of an attribute, [`unit_hash`] of its value): the `bucketBy`
    /// values the evaluation's span or record carried.
    pub attribute_units: [Option<(u64, u64)>; MAX_BUCKET_ATTRIBUTES],
    /// The percentage split chose the variant.
    pub split: bool,
}

impl Resolution {
    /// The unit a rollout bucketing by `bucket_by` (an attribute's [`name_hash`];
    /// `None`: the targeting key) sees.
    pub fn unit(&self, bucket_by: Option<u64>) -> Option<u64> {
        match bucket_by {
            None => self.context_unit,
            Some(name) => self
                .attribute_units
                .iter()
                .flatten()
                .find(|(attribute, _)| *attribute == name)
                .map(|&(_, unit)| unit),
        }
    }
}

/// What the join needs of a span of a judged service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinSpan {
    /// [`name_hash`] of `service.name`.
    pub service: u64,
    /// [`name_hash`] of its revision (`vcs.ref.head.revision`, else `service.version`).
    pub revision: Option<u64>,
    /// Kind SERVER or CONSUMER, or no parent: where the service's work in the trace
    /// starts.
    pub entry: bool,
    pub is_error: bool,
    pub duration_ns: u64,
    pub span_id: [u8; 8],
    /// How many spans it stands for ([`super::sampling::weight`]).
    pub weight: u32,
}

/// A span judged for a flag: the caller routes it to the rollouts of that flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined<'a> {
    pub trace_id: TraceId,
    /// [`name_hash`] of the flag key.
    pub flag: u64,
    pub resolution: &'a Resolution,
    pub span: &'a JoinSpan,
}

/// How long and how much the join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinLimits {
    /// How long a trace is kept after its first span or evaluation arrived.
    pub window_ns: u64,
    /// Most memory the kept traces may take (estimated); beyond, the oldest go.
    pub max_bytes: usize,
}

/// What the join did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// Evaluations of routed flags read.
    pub evaluations: u64,
    /// Spans that arrived before any evaluation of their trace, and waited.
    pub spans_waited: u64,
    /// Spans not judged because their trace resolved no flag within the window
    /// (or was dropped for memory first).
    pub spans_unresolved: u64,
    /// Spans not judged because their service already had its sample span in the
    /// trace (child spans, and duplicates).
    pub spans_redundant: u64,
    /// Traces that recorded two variants of one flag: excluded from then on.
    pub traces_conflicting: u64,
    /// Traces dropped before their window passed, for the memory budget.
    pub traces_evicted: u64,
}

#[derive(Debug, Clone, Copy)]
enum FlagState {
    Resolved(Resolution),
    /// Two variants recorded: the trace says nothing about this flag.
    Conflicting,
}

/// One service's spans in a trace.
#[derive(Debug)]
struct Slot {
    service: u64,
    entry: Option<JoinSpan>,
    /// Its first span that is not an entry, should no entry come.
    first: Option<JoinSpan>,
    /// Flags this service's sample was already given for.
    judged: Vec<u64>,
}

impl Slot {
    fn bytes(&self) -> usize {
        self.judged.capacity() * size_of::<u64>()
    }
}

#[derive(Debug)]
struct Trace {
    first_seen_ns: u64,
    flags: Vec<(u64, FlagState)>,
    slots: Vec<Slot>,
}

impl Trace {
    /// Heap and table memory of this trace, as the budget counts it.
    fn bytes(&self) -> usize {
        // The table entry, its share of spare table capacity, and the queue entry.
        2 * size_of::<(TraceId, Trace)>()
            + size_of::<(u64, TraceId)>()
            + self.flags.capacity() * size_of::<(u64, FlagState)>()
            + self.slots.capacity() * size_of::<Slot>()
            + self.slots.iter().map(Slot::bytes).sum::<usize>()
    }

    fn resolved(&self) -> impl Iterator<Item = (u64, &Resolution)> {
        self.flags.iter().filter_map(|(flag, state)| match state {
            FlagState::Resolved(resolution) => Some((*flag, resolution)),
            FlagState::Conflicting => None,
        })
    }
}

/// The traces being joined.
#[derive(Debug)]
pub struct TraceJoin {
    limits: JoinLimits,
    traces: HashMap<TraceId, Trace>,
    /// Traces by first sighting, oldest first: the order they expire and are evicted.
    order: VecDeque<(u64, TraceId)>,
    bytes: usize,
    stats: JoinStats,
}

impl TraceJoin {
    pub fn new(limits: JoinLimits) -> Self {
        Self {
            limits,
            traces: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            stats: JoinStats::default(),
        }
    }

    pub fn limits(&self) -> JoinLimits {
        self.limits
    }

    pub fn stats(&self) -> JoinStats {
        self.stats
    }

    /// Traces kept now.
    pub fn traces(&self) -> usize {
        self.traces.len()
    }

    /// Memory the kept traces take, as the budget counts it.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The flags trace `trace_id` resolved so far, with what each resolved to.
    pub fn resolved(&self, trace_id: &TraceId) -> impl Iterator<Item = (u64, &Resolution)> {
        self.traces
            .get(trace_id)
            .into_iter()
            .flat_map(Trace::resolved)
    }

    /// Trace `trace_id` recorded that `flag` resolved as `resolution`: its services'
    /// entry spans seen so far are judged now.
    pub fn evaluation(
        &mut self,
        now_ns: u64,
        trace_id: TraceId,
        flag: u64,
        resolution: Resolution,
        sink: &mut impl FnMut(Joined<'_>),
    ) {
        self.stats.evaluations += 1;
        let stats = &mut self.stats;
        let (trace, before) = Self::trace(&mut self.traces, &mut self.order, now_ns, trace_id);
        match trace.flags.iter_mut().find(|(known, _)| *known == flag) {
            Some((_, FlagState::Resolved(known))) if known.variant == resolution.variant => {}
            Some((_, state @ FlagState::Resolved(_))) => {
                *state = FlagState::Conflicting;
                stats.traces_conflicting += 1;
            }
            Some((_, FlagState::Conflicting)) => {}
            None => {
                trace.flags.push((flag, FlagState::Resolved(resolution)));
                for slot in &mut trace.slots {
                    if let Some(span) = &slot.entry {
                        slot.judged.push(flag);
                        sink(Joined {
                            trace_id,
                            flag,
                            resolution: &resolution,
                            span,
                        });
                    }
                }
            }
        }
        let after = trace.bytes();
        self.account(before, after, sink);
    }

    /// A span of a judged service arrived: judged at once when it is its service's
    /// entry in a resolved trace, else kept until it can be.
    pub fn span(
        &mut self,
        now_ns: u64,
        trace_id: TraceId,
        span: JoinSpan,
        sink: &mut impl FnMut(Joined<'_>),
    ) {
        let stats = &mut self.stats;
        let (trace, before) = Self::trace(&mut self.traces, &mut self.order, now_ns, trace_id);
        if trace.resolved().next().is_none() {
            stats.spans_waited += 1;
        }
        let index = match trace.slots.iter().position(|s| s.service == span.service) {
            Some(index) => index,
            None => {
                trace.slots.push(Slot {
                    service: span.service,
                    entry: None,
                    first: None,
                    judged: Vec::new(),
                });
                trace.slots.len() - 1
            }
        };
        let slot = &mut trace.slots[index];
        match (span.entry, &slot.entry, &slot.first) {
            (true, None, first) => {
                // Its first span is no longer needed: the entry speaks for the service.
                if first.is_some() {
                    stats.spans_redundant += 1;
                }
                slot.entry = Some(span);
                slot.first = None;
                for (flag, state) in &trace.flags {
                    if let FlagState::Resolved(resolution) = state
                        && !slot.judged.contains(flag)
                    {
                        slot.judged.push(*flag);
                        sink(Joined {
                            trace_id,
                            flag: *flag,
                            resolution,
                            span: &span,
                        });
                    }
                }
            }
            (false, None, None) => slot.first = Some(span),
            _ => stats.spans_redundant += 1,
        }
        let after = trace.bytes();
        self.account(before, after, sink);
    }

    /// Lets go of the traces whose window has passed: services without an entry
    /// span are judged by their first span; spans of traces that resolved nothing
    /// are counted as unresolved.
    pub fn expire(&mut self, now_ns: u64, sink: &mut impl FnMut(Joined<'_>)) {
        while let Some(&(first_seen_ns, trace_id)) = self.order.front() {
            if now_ns.saturating_sub(first_seen_ns) < self.limits.window_ns {
                break;
            }
            self.order.pop_front();
            self.finish(first_seen_ns, trace_id, sink);
        }
    }

    /// Judges what can be of a trace leaving the join, and forgets it.
    fn finish(&mut self, first_seen_ns: u64, trace_id: TraceId, sink: &mut impl FnMut(Joined<'_>)) {
        let Some(trace) = self.traces.get(&trace_id) else {
            return;
        };
        // A trace seen again after it was let go is a new entry with its own place.
        if trace.first_seen_ns != first_seen_ns {
            return;
        }
        let Some(trace) = self.traces.remove(&trace_id) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(trace.bytes());
        let resolved = trace.resolved().next().is_some();
        for slot in &trace.slots {
            if !resolved {
                self.stats.spans_unresolved +=
                    u64::from(slot.entry.is_some()) + u64::from(slot.first.is_some());
                continue;
            }
            let Some(span) = &slot.first else {
                continue;
            };
            for (flag, resolution) in trace.resolved() {
                if !slot.judged.contains(&flag) {
                    sink(Joined {
                        trace_id,
                        flag,
                        resolution,
                        span,
                    });
                }
            }
        }
    }

    /// The trace `trace_id`, created if new, with the bytes it took before.
    fn trace<'t>(
        traces: &'t mut HashMap<TraceId, Trace>,
        order: &mut VecDeque<(u64, TraceId)>,
        now_ns: u64,
        trace_id: TraceId,
    ) -> (&'t mut Trace, usize) {
        let mut created = false;
        let trace = traces.entry(trace_id).or_insert_with(|| {
            created = true;
            order.push_back((now_ns, trace_id));
            Trace {
                first_seen_ns: now_ns,
                flags: Vec::new(),
                slots: Vec::new(),
            }
        });
        let before = if created { 0 } else { trace.bytes() };
        (trace, before)
    }

    /// Updates the memory count after a trace changed from `before` to `after`
    /// bytes, and lets the oldest traces go while it is over the budget.
    fn account(&mut self, before: usize, after: usize, sink: &mut impl FnMut(Joined<'_>)) {
        self.bytes = self.bytes.saturating_sub(before).saturating_add(after);
        while self.bytes > self.limits.max_bytes {
            let Some((first_seen_ns, trace_id)) = self.order.pop_front() else {
                break;
            };
            if self
                .traces
                .get(&trace_id)
                .is_some_and(|t| t.first_seen_ns == first_seen_ns)
            {
                self.stats.traces_evicted += 1;
            }
            self.finish(first_seen_ns, trace_id, sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const FLAG: u64 = 11;
    const CHECKOUT: u64 = 21;
    const PAYMENTS: u64 = 22;

    fn join() -> TraceJoin {
        TraceJoin::new(JoinLimits {
            window_ns: 30 * SECOND,
            max_bytes: 1 << 20,
        })
    }

    fn on() -> Resolution {
        Resolution {
            variant: 1,
            context_unit: Some(7),
            attribute_units: [Some((5, 9)), None],
            split: true,
        }
    }

    fn span(service: u64, entry: bool, id: u8) -> JoinSpan {
        JoinSpan {
            service,
            revision: None,
            entry,
            is_error: false,
            duration_ns: 1_000,
            span_id: [id; 8],
            weight: 1,
        }
    }

    /// (service, span id, variant) of every span judged.
    type Seen = Vec<(u64, u8, u64)>;

    fn record(seen: &mut Seen) -> impl FnMut(Joined<'_>) + '_ {
        |joined| {
            assert_eq!(joined.flag, FLAG);
            seen.push((
                joined.span.service,
                joined.span.span_id[0],
                joined.resolution.variant,
            ));
        }
    }

    #[test]
    fn every_service_of_a_resolved_trace_gives_its_entry_span() {
        let mut join = join();
        let mut seen = Seen::new();
        join.evaluation(0, [1; 16], FLAG, on(), &mut record(&mut seen));
        join.span(1, [1; 16], span(CHECKOUT, true, 1), &mut record(&mut seen));
        join.span(2, [1; 16], span(PAYMENTS, true, 2), &mut record(&mut seen));
        // Child spans and a resent entry add nothing.
        join.span(3, [1; 16], span(PAYMENTS, false, 3), &mut record(&mut seen));
        join.span(4, [1; 16], span(PAYMENTS, true, 2), &mut record(&mut seen));
        assert_eq!(seen, [(CHECKOUT, 1, 1), (PAYMENTS, 2, 1)]);
        assert_eq!(join.resolved(&[1; 16]).collect::<Vec<_>>(), [(FLAG, &on())]);
        assert_eq!(join.resolved(&[2; 16]).count(), 0);
        assert_eq!(join.stats().spans_redundant, 2);
        join.expire(60 * SECOND, &mut record(&mut seen));
        assert_eq!(seen.len(), 2);
        assert_eq!(join.traces(), 0);
        assert_eq!(join.bytes(), 0);
    }

    #[test]
    fn spans_that_arrive_first_wait_for_the_evaluation() {
        let mut join = join();
        let mut seen = Seen::new();
        join.span(0, [1; 16], span(PAYMENTS, true, 2), &mut record(&mut seen));
        assert!(seen.is_empty());
        join.evaluation(5 * SECOND, [1; 16], FLAG, on(), &mut record(&mut seen));
        assert_eq!(seen, [(PAYMENTS, 2, 1)]);
        assert_eq!(join.stats().spans_waited, 1);
        // The same evaluation again (a retried export) judges nothing twice.
        join.evaluation(6 * SECOND, [1; 16], FLAG, on(), &mut record(&mut seen));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_service_without_an_entry_span_is_judged_by_its_first_when_the_window_passes() {
        let mut join = join();
        let mut seen = Seen::new();
        join.evaluation(0, [1; 16], FLAG, on(), &mut record(&mut seen));
        join.span(0, [1; 16], span(PAYMENTS, false, 3), &mut record(&mut seen));
        join.span(0, [1; 16], span(PAYMENTS, false, 4), &mut record(&mut seen));
        join.expire(29 * SECOND, &mut record(&mut seen));
        assert!(seen.is_empty());
        join.expire(30 * SECOND, &mut record(&mut seen));
        assert_eq!(seen, [(PAYMENTS, 3, 1)]);

        // An entry that comes later replaces the first span.
        let mut seen = Seen::new();
        join.span(
            40 * SECOND,
            [2; 16],
            span(PAYMENTS, false, 3),
            &mut record(&mut seen),
        );
        join.span(
            40 * SECOND,
            [2; 16],
            span(PAYMENTS, true, 5),
            &mut record(&mut seen),
        );
        join.evaluation(41 * SECOND, [2; 16], FLAG, on(), &mut record(&mut seen));
        join.expire(100 * SECOND, &mut record(&mut seen));
        assert_eq!(seen, [(PAYMENTS, 5, 1)]);
    }

    #[test]
    fn unresolved_traces_are_counted_not_judged() {
        let mut join = join();
        let mut seen = Seen::new();
        join.span(0, [1; 16], span(PAYMENTS, true, 2), &mut record(&mut seen));
        join.span(0, [1; 16], span(CHECKOUT, false, 3), &mut record(&mut seen));
        join.expire(30 * SECOND, &mut record(&mut seen));
        // The evaluation comes too late: its trace was let go, the spans counted.
        join.evaluation(31 * SECOND, [1; 16], FLAG, on(), &mut record(&mut seen));
        assert!(seen.is_empty());
        assert_eq!(join.stats().spans_unresolved, 2);
    }

    #[test]
    fn two_variants_of_one_flag_exclude_the_trace() {
        let mut join = join();
        let mut seen = Seen::new();
        join.evaluation(0, [1; 16], FLAG, on(), &mut record(&mut seen));
        let off = Resolution { variant: 2, ..on() };
        join.evaluation(0, [1; 16], FLAG, off, &mut record(&mut seen));
        join.evaluation(0, [1; 16], FLAG, on(), &mut record(&mut seen));
        join.span(0, [1; 16], span(PAYMENTS, true, 2), &mut record(&mut seen));
        join.expire(SECOND * 60, &mut record(&mut seen));
        assert!(seen.is_empty());
        assert_eq!(join.stats().traces_conflicting, 1);
    }

    #[test]
    fn the_memory_budget_lets_the_oldest_traces_go() {
        let mut join = TraceJoin::new(JoinLimits {
            window_ns: 30 * SECOND,
            max_bytes: 64 * 1024,
        });
        let mut seen = Seen::new();
        for i in 0..10_000_u32 {
            let mut trace_id = [0; 16];
            trace_id[..4].copy_from_slice(&i.to_le_bytes());
            join.span(0, trace_id, span(PAYMENTS, true, 1), &mut record(&mut seen));
            assert!(join.bytes() <= 64 * 1024);
        }
        let stats = join.stats();
        assert!(stats.traces_evicted > 9_000, "{stats:?}");
        assert_eq!(stats.spans_unresolved, stats.traces_evicted);
        assert_eq!(join.traces() as u64 + stats.traces_evicted, 10_000);
        assert!(seen.is_empty());
        // A resolved trace leaving for memory is judged as far as it can be.
        let mut join = TraceJoin::new(JoinLimits {
            window_ns: 30 * SECOND,
            max_bytes: 1,
        });
        join.evaluation(0, [1; 16], FLAG, on(), &mut record(&mut seen));
        join.span(0, [2; 16], span(PAYMENTS, false, 3), &mut record(&mut seen));
        assert_eq!(join.traces(), 0);
    }

    #[test]
    fn units_come_from_the_bucketing_attribute_or_the_context() {
        let resolution = on();
        assert_eq!(resolution.unit(None), Some(7));
        assert_eq!(resolution.unit(Some(5)), Some(9));
        assert_eq!(resolution.unit(Some(6)), None);
    }
}
