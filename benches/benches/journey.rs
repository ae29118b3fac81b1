//! criterion benches of one golden-path journey with full verification, against the
//! reference backend in this process: embedded, on Postgres+Redis when `APEX_DATABASE_URL` and
//! `APEX_REDIS_URL` are set, and against the minimal server (the calibration: the same client
//! work with no backend work). `cargo bench -p apex-benches --bench journey`.

use apex_benches::journeys;
use criterion::{Criterion, criterion_group, criterion_main};

fn journey(c: &mut Criterion) {
    apex_harness::client::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (embedded, services, minimal) = runtime.block_on(async {
        (
            journeys::embedded_backend().await,
            journeys::services_backend().await,
            journeys::minimal().await,
        )
    });
    if services.is_none() {
        eprintln!("journey/services skipped: set APEX_DATABASE_URL and APEX_REDIS_URL");
    }
    let mut group = c.benchmark_group("journey");
    let targets = [
        Some(("embedded", &embedded)),
        services.as_ref().map(|s| ("services", s)),
        Some(("minimal_server", &minimal)),
    ];
    for (name, target) in targets.into_iter().flatten() {
        let mut id = 0;
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                id += 1;
                target.journey(id)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, journey);
criterion_main!(benches);
