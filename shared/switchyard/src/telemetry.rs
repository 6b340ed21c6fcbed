//! Logs and traces: text or JSON lines on stderr (filtered by `RUST_LOG`, default `info`), and
//! OpenTelemetry spans through `tracing`, exported with OTLP/HTTP when an endpoint is set.
//!
//! The W3C trace context (`traceparent`) travels with every request (NATS headers), every outbox
//! event and every dead letter, so one business operation is one trace across processes:
//! HTTP request -> breaker -> request client -> the micro handler; the outbox row -> the relay's
//! publish -> each consumer's `process` span -> the events they publish in turn.
//!
//! With no endpoint tracing is off: no layer wants the spans (making one costs nanoseconds), no
//! context is propagated, and outbox events start a trace each. With an endpoint, every span is
//! sampled unless its remote parent was not, and log lines carry `trace_id` and `span_id`.
//! `OTEL_SDK_DISABLED=true` turns tracing off even with an endpoint.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::OnceLock;

use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use uuid::Uuid;

use crate::config::LogFormat;

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint).
    #[error("invalid OTLP endpoint {endpoint}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// What a process's logs and traces say about it.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Log line format.
    pub format: LogFormat,
    /// Filter when `RUST_LOG` is unset.
    pub default_filter: String,
    /// OTLP/HTTP endpoint (base URL; `/v1/traces` is appended) to export spans to; none: not exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    pub service: String,
    /// `service.version`.
    pub version: String,
    /// `service.instance.id`.
    pub instance: Option<String>,
}

impl TelemetryConfig {
    /// Logs in `format` at `info`, spans of `service` not exported.
    pub fn new(format: LogFormat, service: &str, version: &str) -> Self {
        TelemetryConfig {
            format,
            default_filter: "info".into(),
            otlp_endpoint: None,
            service: service.into(),
            version: version.into(),
            instance: None,
        }
    }
}

/// The installed logs and traces; [`Telemetry::shutdown`] (or dropping it) sends the spans not
/// yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter (within 5 s). Logging stays on.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Blocking: the batch processor's thread sends the last spans.
            let _ = std::thread::spawn(move || {
                if let Err(err) = provider.shutdown_with_timeout(std::time::Duration::from_secs(5)) {
                    eprintln!("warning: failed to flush traces: {err}");
                }
            })
            .join();
        }
    }
}

/// The dispatcher installed by [`install`], for reading span contexts while formatting logs.
static DISPATCH: OnceLock<tracing::dispatcher::WeakDispatch> = OnceLock::new();

/// Installs the global subscriber, logging `info` and up unless `RUST_LOG` says otherwise, with
/// no span export. Calling it twice keeps the first one (tests may call it often).
pub fn init(format: LogFormat) {
    let _ = install(&TelemetryConfig::new(format, "switchyard", env!("CARGO_PKG_VERSION")));
}

/// Like [`init`], with another default filter (a command-line tool logs only warnings).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let mut config = TelemetryConfig::new(format, "switchyard", env!("CARGO_PKG_VERSION"));
    config.default_filter = default_filter.into();
    let _ = install(&config);
}

/// Installs logging and tracing as `config` says: a log layer (filtered by `RUST_LOG`) and an
/// OpenTelemetry layer (spans at `info` and up), exporting with OTLP/HTTP when an endpoint is
/// set. A second call in one process keeps the first subscriber.
pub fn install(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.default_filter));
    let resource = {
        let mut attributes = vec![KeyValue::new("service.version", config.version.clone())];
        if let Some(instance) = &config.instance {
            attributes.push(KeyValue::new("service.instance.id", instance.clone()));
        }
        opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service.clone())
            .with_attributes(attributes)
            .build()
    };
    // OTEL_SDK_DISABLED=true (the OpenTelemetry standard switch) turns tracing off even with an
    // endpoint. Off, no layer wants the spans: making one costs a few nanoseconds.
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let endpoint = config.otlp_endpoint.as_ref().filter(|_| !disabled);
    let provider = match endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_url(endpoint))
                .with_timeout(std::time::Duration::from_secs(5))
                .build()
                .map_err(|source| TelemetryError::Exporter { endpoint: endpoint.clone(), source })?;
            Some(
                SdkTracerProvider::builder()
                    .with_resource(resource)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                    .with_batch_exporter(exporter)
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("switchyard"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    // Log lines are events only: spans are for the trace (their ids end each line), so the log
    // layer never formats a span's fields.
    let filter = tracing_subscriber::filter::FilterExt::and(
        filter,
        tracing_subscriber::filter::filter_fn(|metadata| metadata.is_event()),
    );
    let ansi = std::io::stderr().is_terminal();
    let logs = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .event_format(WithTraceIds { inner: tracing_subscriber::fmt::format(), json: false })
            .fmt_fields(TextFields)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format().json().flatten_event(true).with_span_list(false),
                json: true,
            })
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_filter(filter)
            .boxed(),
    };
    let dispatch: tracing::Dispatch = tracing_subscriber::registry().with(logs).with(otel).into();
    let weak = dispatch.downgrade();
    if dispatch.try_init().is_err() {
        // Another subscriber is installed (a test's first call): keep it, export nothing.
        return Ok(Telemetry { provider: None });
    }
    let _ = DISPATCH.set(weak);
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Telemetry { provider })
}

/// `<endpoint>/v1/traces`, as the OTLP specification builds the traces URL from a base endpoint.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") }
}

/// An event formatter that adds the current span's trace and span ids: `trace_id`/`span_id`
/// members in JSON, ` trace_id=...` at the end of a text line.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // The innermost span entered on this thread, whichever layer wants it (the log layer
        // sees no spans).
        let ids = DISPATCH.get().and_then(|weak| weak.upgrade()).and_then(|dispatch| {
            let current = dispatch.current_span();
            let cx = tracing_opentelemetry::get_otel_context(current.id()?, &dispatch)?;
            let span_context = cx.span().span_context().clone();
            span_context.is_valid().then_some(span_context)
        });
        let Some(ids) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        let (trace_id, span_id) = (ids.trace_id(), ids.span_id());
        if self.json && body.ends_with('}') {
            let body = &body[..body.len() - 1];
            let comma = if body.ends_with('{') { "" } else { "," };
            writeln!(writer, "{body}{comma}\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}")
        } else {
            writeln!(writer, "{body} trace_id={trace_id}")
        }
    }
}

/// Text log fields as `name=value`, leaving out the spans' OpenTelemetry attributes (`otel.*`,
/// `messaging.*`, `rpc.*`, `http.*`): they go to the trace, and would only crowd the line.
struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor { writer: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for TextVisitor<'_, '_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if self.result.is_err()
            || ["otel.", "messaging.", "rpc.", "http."].iter().any(|p| name.starts_with(p))
        {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value:?}")
        } else {
            write!(self.writer, "{separator}{name}={value:?}")
        };
    }
}

/// The trace context of `span` as a `traceparent`, when it has a valid one.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    // Tracing off: no layer took the span, it has no context.
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then(|| format_traceparent(&span_context))
}

/// The current span's `traceparent`; a new trace when there is none (no span, tracing not
/// installed).
pub fn current_traceparent() -> String {
    traceparent_of(&tracing::Span::current()).unwrap_or_else(new_traceparent)
}

fn format_traceparent(span_context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
}

/// The remote parent a `traceparent` names, as an OpenTelemetry context; `None` when absent or
/// malformed.
pub fn parse_traceparent(traceparent: Option<&str>) -> Option<Context> {
    let value = traceparent?;
    let carrier = std::collections::HashMap::from([(TRACEPARENT.to_string(), value.to_string())]);
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes the context `traceparent` names the parent of `span` (a remote parent: an incoming
/// request, a delivered event). Nothing happens when it is absent or malformed.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    // Tracing off: nothing would keep the parent, so the header is not parsed.
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = parse_traceparent(traceparent) {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the span `traceparent` names (a batch to each event it applies).
pub fn add_link(span: &tracing::Span, traceparent: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = parse_traceparent(traceparent) {
        span.add_link(cx.span().span_context().clone());
    }
}

/// Puts the current span's context in NATS headers (`traceparent`).
pub fn inject(headers: &mut async_nats::HeaderMap) {
    if let Some(traceparent) = traceparent_of(&tracing::Span::current()) {
        headers.insert(TRACEPARENT, traceparent.as_str());
    }
}

use opentelemetry::propagation::TextMapPropagator as _;

/// The end of a binary's `main`: `Ok` exits 0; an error is printed on stderr as one line,
/// `error: <what failed>: <cause>: <cause>...`, and exits 1. No backtrace, even with
/// `RUST_BACKTRACE` set: a returned error is a user's or an environment's problem, and
/// backtraces are for bugs (panics still print theirs).
pub fn exit_code<E>(result: Result<(), E>) -> ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, separated by `: `.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Header carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A new W3C `traceparent` (version 00, sampled).
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to start")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_chain_is_one_line() {
        let err = Outer(std::io::Error::other("port taken"));
        assert_eq!(error_chain(&err), "failed to start: port taken");
    }
}
