//! The circuit breaker's cost per call, measured by criterion: a call that completes at once,
//! bare and through a closed breaker; the difference is the breaker's overhead (target: at most
//! one microsecond). Run with `cargo bench -p switchyard-bench --bench breaker`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::breaker::{Breaker, BreakerConfig};

fn breaker_overhead(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(runtime) => runtime,
        Err(err) => panic!("cannot build a tokio runtime: {err}"),
    };
    let breaker = Breaker::new("criterion", BreakerConfig::default());
    let mut group = c.benchmark_group("breaker");
    group.bench_function("bare call", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(async { Ok::<u64, std::io::Error>(black_box(7)) }.await) })
    });
    group.bench_function("through a closed breaker", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(breaker.call(async { Ok::<u64, std::io::Error>(black_box(7)) }).await)
        })
    });
    group.finish();
}

criterion_group!(benches, breaker_overhead);
criterion_main!(benches);
