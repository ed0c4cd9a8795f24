//! Timings of the pure core on the hot paths: bucketing and flag evaluation (every
//! OFREP request), sketch recording and window merging (every ingested span), the
//! trace join (every span of a judged service), and the judge (every tick of every
//! rollout).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use spangate::analysis::{
    Arm, JoinLimits, JoinSpan, JudgeInput, LatencySketch, Observation, Resolution, TraceJoin,
    Window, judge, unit_hash,
};
use spangate::api::{AnalysisSpec, ArmEvidence, LatencyQuantiles, StepEvidence};
use spangate::flags::{Attribute, Context, Flag, PercentageRollout, Variant, bucket};

const MS: u64 = 1_000_000;

/// The `i`th of a spread of durations from 1 ms to about 1 s, the same on every run.
fn duration_ns(i: u64) -> u64 {
    MS + (i * 7_919 % 1_000) * MS + i % 997
}

fn split_flag() -> Flag {
    let variants = vec![
        Variant {
            name: "off".into(),
            value: json!(false),
        },
        Variant {
            name: "on".into(),
            value: json!(true),
        },
    ];
    let mut flag = Flag::new("new-checkout", variants, 0);
    flag.percentage = Some(PercentageRollout {
        variant: 1,
        weight: 2_500,
        bucket_by: Attribute::parse("accountId").expect("a valid attribute"),
    });
    flag
}

fn window(samples: u64, error_every: u64) -> Window {
    let mut window = Window::default();
    for i in 0..samples {
        // A quarter of the users get the candidate, as at a 25% step.
        let arm = if i % 4 == 0 {
            Arm::Candidate
        } else {
            Arm::Baseline
        };
        // Spans of 2,000 accounts, each carrying its account as the bucketing value.
        let observation = Observation {
            unit: Some(unit_hash(&format!("acct-{}", i % 2_000))),
            split: true,
            ..Observation::span(i % error_every == 0, duration_ns(i), [i as u8; 16])
        };
        window.record(arm, &observation);
    }
    window
}

fn bench_flags(c: &mut Criterion) {
    c.bench_function("bucket", |b| {
        b.iter(|| bucket::bucket(black_box("new-checkout"), black_box("acct-12345"), 10_000))
    });

    let flag = split_flag();
    let now = Timestamp::now();
    let attributes: Map<String, Value> =
        json!({"targetingKey": "user-42", "accountId": "acct-12345"})
            .as_object()
            .cloned()
            .unwrap_or_default();
    let context = Context::new(&attributes);
    c.bench_function("flag_evaluate_split", |b| {
        b.iter(|| {
            black_box(&flag)
                .evaluate(black_box(&context), now)
                .map(|r| r.variant)
        })
    });
}

fn bench_analysis(c: &mut Criterion) {
    let mut sketch = LatencySketch::default();
    (0..10_000).for_each(|i| sketch.record_ns(duration_ns(i)));
    let mut i = 0u64;
    c.bench_function("sketch_record_ns", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            sketch.record_ns(black_box(duration_ns(i)))
        })
    });

    let (into, other) = (window(10_000, 50), window(10_000, 20));
    c.bench_function("window_merge", |b| {
        b.iter_batched_ref(
            || into.clone(),
            |w| w.merge(black_box(&other)),
            BatchSize::SmallInput,
        )
    });

    let analysis = AnalysisSpec {
        min_samples: 200,
        max_error_rate: Some(0.05),
        max_error_rate_increase: Some(0.02),
        max_latency_ms: Some(LatencyQuantiles {
            p95: Some(800.0),
            p99: Some(950.0),
            ..LatencyQuantiles::default()
        }),
        max_latency_increase: Some(0.25),
        ..AnalysisSpec::default()
    };
    let judged = window(20_000, 30);
    // Three steps done, so the error checks weigh them too.
    let completed: Vec<StepEvidence> = (0..3)
        .map(|step| StepEvidence {
            step,
            weight: 5.0,
            baseline: ArmEvidence {
                samples: 20_000,
                errors: 200,
                error_rate_unit_variance: Some(5e-7),
                unit_groups: 64,
                sampling: None,
            },
            candidate: ArmEvidence {
                samples: 1_000,
                errors: 11,
                error_rate_unit_variance: Some(1.2e-5),
                unit_groups: 60,
                sampling: None,
            },
        })
        .collect();
    let steps = [1.0, 5.0, 25.0, 50.0, 100.0];
    c.bench_function("judge", |b| {
        b.iter(|| {
            judge(black_box(&JudgeInput {
                analysis: &analysis,
                steps: &steps,
                service: "checkout",
                baseline_variant: "off",
                candidate_variant: "on",
                weight: 25.0,
                previous_weight: None,
                unit_attribute: "accountId",
                completed: &completed,
                window: &judged,
                revision: Some("3f2c1a9"),
                downstream: &[],
            }))
        })
    });
}

/// The `i`th trace ID of a run: distinct, spread over the table.
fn trace_id(i: u64) -> [u8; 16] {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&unit_hash(&i.to_string()).to_le_bytes());
    id[8..].copy_from_slice(&i.to_le_bytes());
    id
}

fn join_span(service: u64, entry: bool) -> JoinSpan {
    JoinSpan {
        service,
        revision: None,
        entry,
        is_error: false,
        duration_ns: 5 * MS,
        span_id: [3; 8],
        weight: 1,
    }
}

/// A trace as two services send it: checkout's entry span with the evaluation,
/// payments' child and entry spans; in steady state, with 100,000 traces kept.
fn bench_join(c: &mut Criterion) {
    const SECOND: u64 = 1_000_000_000;
    const KEPT: u64 = 100_000;
    let limits = JoinLimits {
        window_ns: 30 * SECOND,
        max_bytes: usize::MAX,
    };
    let resolution = Resolution {
        variant: unit_hash("on"),
        context_unit: Some(unit_hash("user-7")),
        attribute_units: [None; 2],
        split: true,
    };
    let (flag, checkout, payments) = (
        unit_hash("new-cart"),
        unit_hash("checkout"),
        unit_hash("payments"),
    );

    let mut pending = TraceJoin::new(limits);
    for i in 0..KEPT {
        pending.span(0, trace_id(i), join_span(payments, true), &mut |_| {});
    }
    println!(
        "trace join: {} bytes per trace waiting for its evaluation (one span kept)",
        pending.bytes() as u64 / KEPT
    );

    let mut join = TraceJoin::new(limits);
    let mut i = 0_u64;
    let mut judged = 0_u64;
    // Traces arrive 10,000 a second, so the window keeps 300,000 of them.
    let now = |i: u64| i * (SECOND / 10_000);
    c.bench_function("join_trace_3_spans", |b| {
        b.iter(|| {
            let id = trace_id(i);
            let at = now(i);
            let mut sink = |_: spangate::analysis::Joined<'_>| judged += 1;
            join.expire(at, &mut sink);
            join.span(at, id, join_span(payments, false), &mut sink);
            join.evaluation(at, id, flag, resolution, &mut sink);
            join.span(at, id, join_span(checkout, true), &mut sink);
            join.span(at, id, join_span(payments, true), &mut sink);
            i += 1;
        })
    });
    black_box(judged);
}

criterion_group!(benches, bench_flags, bench_analysis, bench_join);
criterion_main!(benches);
