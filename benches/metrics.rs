//! What `/metrics` costs a request: the OFREP path's timing (two clock reads, a
//! family lookup and a histogram observation with its exemplar), beside the two
//! clock reads alone.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::metrics::family::Family;
use spangate::telemetry::metrics::{DurationFamily, TraceExemplar, duration_histogram};

fn bench_metrics(c: &mut Criterion) {
    c.bench_function("clock_reads", |b| {
        b.iter(|| {
            let started = Instant::now();
            black_box(started.elapsed())
        })
    });
    let durations: DurationFamily<[(&'static str, u16); 1]> =
        Family::new_with_constructor(|| duration_histogram(0.000_01, 1.0));
    let trace =
        TraceExemplar::from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    c.bench_function("request_timed_with_exemplar", |b| {
        b.iter(|| {
            let started = Instant::now();
            durations
                .get_or_create(&[("code", black_box(200))])
                .observe(started.elapsed().as_secs_f64(), trace, None);
        })
    });
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
