//! What observability costs per operation, measured by criterion:
//! - a span as the platform makes one per request, publish and delivery (created, entered,
//!   closed): with no subscriber, with tracing off (the services' log layer only: events), with a
//!   log layer that would format spans too, and with tracing on (the OpenTelemetry layer
//!   sampling and recording; export happens on another thread, not measured here);
//! - a Prometheus sample: a histogram through a cached handle (micro endpoints, consumers) and
//!   through the macro with labels made per call (HTTP, outgoing requests).
//!
//! Run with `cargo bench -p switchyard-bench --bench observe`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

fn span() {
    let span = tracing::info_span!(
        "request",
        otel.name = %"inventory.check",
        otel.kind = "server",
        rpc.system = "nats-micro",
        rpc.method = %"inventory.check",
    );
    let _entered = span.enter();
    black_box(&span);
}

/// The services' log layer: `info` events, no spans.
fn logs() -> impl Layer<tracing_subscriber::Registry> + Send + Sync {
    let events = tracing_subscriber::filter::FilterExt::and(
        tracing_subscriber::EnvFilter::new("info"),
        tracing_subscriber::filter::filter_fn(|metadata| metadata.is_event()),
    );
    tracing_subscriber::fmt::layer().with_writer(std::io::sink).with_filter(events)
}

fn spans(c: &mut Criterion) {
    let mut group = c.benchmark_group("span");
    group.bench_function("no subscriber", |b| b.iter(span));
    let subscriber = tracing_subscriber::registry().with(logs());
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("tracing off (the services' log layer only)", |b| b.iter(span))
    });
    let formatted = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::EnvFilter::new("info"));
    tracing::subscriber::with_default(tracing_subscriber::registry().with(formatted), || {
        group.bench_function("a log layer that formats spans too (not used)", |b| b.iter(span))
    });
    let provider = SdkTracerProvider::builder().with_sampler(Sampler::AlwaysOn).build();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("bench"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let subscriber = tracing_subscriber::registry().with(logs()).with(otel);
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("tracing on (sampled and recorded; export not included)", |b| b.iter(span))
    });
    group.finish();
}

fn samples(c: &mut Criterion) {
    let _ = switchyard::observe::recorder();
    let mut group = c.benchmark_group("metrics");
    let cached =
        metrics::histogram!("bench_cached_seconds", "endpoint" => "inventory.check", "status" => "ok");
    group.bench_function("histogram, cached handle", |b| b.iter(|| cached.record(black_box(0.0012))));
    let subject = String::from("inventory.reserve");
    group.bench_function("histogram, labels per call", |b| {
        b.iter(|| {
            metrics::histogram!("bench_dynamic_seconds", "subject" => subject.clone(), "outcome" => "ok")
                .record(black_box(0.0012))
        })
    });
    let counter = metrics::counter!("bench_total", "consumer" => "audit");
    group.bench_function("counter, cached handle", |b| b.iter(|| counter.increment(1)));
    group.finish();
}

criterion_group!(benches, spans, samples);
criterion_main!(benches);
