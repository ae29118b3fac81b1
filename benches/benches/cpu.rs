//! criterion benches of the CPU workloads (the same functions the instruction-count gate
//! measures): `cargo bench -p apex-benches --bench cpu`. Reported, not gated: wall-clock
//! numbers on a shared two-core machine are for people; `ci/bench-gate.sh` gates on
//! instruction counts.

use std::hint::black_box;

use apex_benches::workloads;
use criterion::{Criterion, criterion_group, criterion_main};

fn cpu(c: &mut Criterion) {
    let inputs = workloads::inputs();
    for name in workloads::NAMES {
        c.bench_function(name, |b| {
            b.iter(|| black_box(workloads::run(name, black_box(&inputs))))
        });
    }
}

criterion_group!(benches, cpu);
criterion_main!(benches);
