//! Logs and traces, set up once by `main.rs` before the runtime starts.
//!
//! - Logs: `RUST_LOG` (what), `LOG_FORMAT=json` (one JSON object per line).
//! - Traces: every request is a server span and every call to the edge a client span, carried in
//!   the W3C `traceparent` header both ways: a request's span continues the caller's trace (the
//!   edge sends its own span as the parent), and a call to the edge sends the client span as the
//!   parent of the edge's work (the edge logs it: "core call"). With `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the spans are exported over OTLP/HTTP
//!   (protobuf) in batches by the `opentelemetry` SDK, which reads its standard variables
//!   (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, …). Without
//!   it, ids are still made and carried (logs join across tiers), nothing is exported.
//!
//! A leaf: the router and the edge client call [`continue_trace`] and [`traceparent`].

use std::collections::HashMap;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use shared_types::traceparent::TraceParent;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The variables that turn the export on (the SDK reads them itself).
pub const OTLP_ENDPOINT_VARS: [&str; 2] =
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];

/// What becomes a span, whatever `RUST_LOG` says: the core's own spans and events, not those of
/// the libraries under it (the exporter's own HTTP calls must never be traced).
const TRACE_FILTER: &str = "info,sqlx=warn,hyper=warn,h2=warn,tower=warn,reqwest=warn,rdkafka=warn,lettre=warn,tonic=warn,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// The tracer provider: flushed by [`Telemetry::shutdown`] when the process ends.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still in the batch (bounded by the SDK's export timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces: the last batch was not exported");
        }
    }
}

/// Sets up logging and tracing for the process, before the tokio runtime starts (the exporter
/// works on threads of its own, with a blocking HTTP client).
pub fn init() -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        tracing_subscriber::fmt::layer().json().with_filter(filter).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_filter(filter).boxed()
    };
    let (provider, problem) = provider();
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("regional-core"))
        .with_filter(EnvFilter::new(TRACE_FILTER));
    tracing_subscriber::registry().with(logs).with(traces).init();
    match problem {
        Some(e) => {
            tracing::error!(error = %e, "traces: the OTLP exporter could not be set up; not exporting")
        }
        None if exporting() => tracing::info!("traces: exported over OTLP"),
        None => {}
    }
    Telemetry { provider }
}

fn exporting() -> bool {
    OTLP_ENDPOINT_VARS.iter().any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

fn provider() -> (SdkTracerProvider, Option<String>) {
    let mut resource = Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("ticketing-core");
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    let mut problem = None;
    if exporting() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => problem = Some(e.to_string()),
        }
    }
    (builder.build(), problem)
}

/// Header values by name, for the propagator.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` continue the caller's trace (its valid `traceparent`, if any); call before the
/// span is first entered.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if headers.contains_key("traceparent") {
        span.set_parent(TraceContextPropagator::new().extract(&Headers(headers)));
    }
}

/// The `traceparent` that names `span` as the parent of the callee's work; a new trace when the
/// span is not traced (filtered out).
pub fn traceparent(span: &tracing::Span) -> String {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_else(|| {
        let mut random = [0u8; 24];
        let _ = getrandom::getrandom(&mut random);
        TraceParent::new_root(random).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_traceparent_is_the_one_the_edge_reads_and_a_caller_s_trace_continues() {
        // A subscriber with the OpenTelemetry layer, for this thread only.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = HeaderMap::new();
            let edge = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            headers.insert("traceparent", edge.parse().unwrap());
            let span = tracing::info_span!("request");
            continue_trace(&span, &headers);
            let onward = TraceParent::parse(&traceparent(&span)).expect("a header the edge reads");
            assert_eq!(onward.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736", "the same trace");
            assert_ne!(onward.parent_id_hex(), "00f067aa0ba902b7", "the core's own span as the parent");
            // No caller's trace: a new one, still valid.
            let root = tracing::info_span!("request");
            continue_trace(&root, &HeaderMap::new());
            let fresh = TraceParent::parse(&traceparent(&root)).unwrap();
            assert_ne!(fresh.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        });
        // Outside any traced span: a random valid header.
        assert!(TraceParent::parse(&traceparent(&tracing::Span::none())).is_some());
    }
}
