//! Timings of standalone's reconcile pass over a folder of 10,000 rollout files
//! (issue 8, row 11): the first pass (every file read, every state file written),
//! then a pass over a folder where nothing changed (every file looked at, none
//! read), and one where one file changed. Half the rollouts progress through steps
//! (judged on every pass), half are plain flags.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use spangate::controller::Controller;
use spangate::flags::FlagSet;
use spangate::ingest::{IngestLimits, Ingestor};
use spangate::serve::PublishedFlags;
use spangate::store::FileStore;

const ROLLOUTS: usize = 10_000;

fn rollout(i: usize) -> String {
    let steps = if i.is_multiple_of(2) {
        "  service: checkout\n  steps: [10, 50, 100]\n  stepDuration: 5m\n  analysis: {minSamples: 100, maxErrorRate: 0.05}\n".to_string()
    } else {
        String::new()
    };
    let rollout_variant = if i.is_multiple_of(2) {
        ", rolloutVariant: \"on\""
    } else {
        ""
    };
    format!(
        "apiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {{name: r{i}, namespace: team-{}}}\nspec:\n  flag: {{key: flag-{i}, variants: {{\"off\": false, \"on\": true}}, defaultVariant: \"off\"{rollout_variant}}}\n{steps}",
        i % 20
    )
}

fn controller(dir: &Path, state: &Path) -> Controller<FileStore> {
    let store = FileStore::new(dir, Some(state.to_path_buf()));
    let ingestor = Arc::new(Ingestor::with_limits(IngestLimits::default(), None));
    let flags: PublishedFlags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
    Controller::new(store, ingestor, flags)
}

fn folder(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..ROLLOUTS {
        std::fs::write(dir.join(format!("r{i}.yaml")), rollout(i)).unwrap();
    }
    let mut group = c.benchmark_group("folder of 10,000 rollouts");
    group.sample_size(10);

    group.bench_function("first pass", |b| {
        b.iter_batched(
            || {
                let state = tempfile::tempdir().unwrap();
                (controller(&dir, state.path()), state)
            },
            |(mut controller, state)| {
                let report = runtime
                    .block_on(controller.pass(jiff::Timestamp::now()))
                    .unwrap();
                assert_eq!(report.rollouts.len(), ROLLOUTS);
                (controller, state)
            },
            BatchSize::PerIteration,
        );
    });

    let state = temp.path().join("state");
    let mut steady = controller(&dir, &state);
    runtime
        .block_on(steady.pass(jiff::Timestamp::now()))
        .unwrap();
    group.bench_function("pass, nothing changed", |b| {
        b.iter(|| {
            runtime
                .block_on(steady.pass(jiff::Timestamp::now()))
                .unwrap()
        });
    });
    let mut n = 0;
    group.bench_function("pass, one file changed", |b| {
        b.iter(|| {
            n += 1;
            let text = rollout(7).replace(
                "maxErrorRate: 0.05",
                &format!("maxErrorRate: 0.0{}", 1 + n % 8),
            );
            std::fs::write(dir.join("r7.yaml"), text).unwrap();
            runtime
                .block_on(steady.pass(jiff::Timestamp::now()))
                .unwrap()
        });
    });
    assert_eq!(steady.store().files_read(), ROLLOUTS as u64 + n);
    group.finish();
}

criterion_group!(benches, folder);
criterion_main!(benches);
