//! Distributed tracing: OpenTelemetry spans over OTLP/HTTP, when `telemetry.otlp_endpoint` is
//! set.
//!
//! One trace per delivery: `receive` (the job; its parent is the event's incoming
//! `traceparent`, other events of a batch are links) → `invoke`, one span per attempt, whose
//! context is the `traceparent` the function receives → one `output` span per output write
//! (or dead letter), whose context travels with the written record → `ack`. Spans are made
//! with `tracing` (target `switchyard::trace`) and exported by `tracing-opentelemetry`; with
//! no endpoint none is created, so the hot path pays nothing.

use crate::config::TelemetryConfig;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use switchyard_sdk::{BoxError, Event};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of the spans that are exported.
pub const TARGET: &str = "switchyard::trace";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are being made.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Flushes the spans still buffered when dropped (at exit).
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("switchyard: flushing trace spans failed: {e}");
            }
        }
    }
}

/// The OTLP exporter's provider for `config`, or `None` when tracing is off. The exporter
/// uses its own thread and a blocking HTTP client (the async one needs a runtime the export
/// thread does not have).
pub fn provider(config: &TelemetryConfig) -> Result<Option<SdkTracerProvider>, BoxError> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let mut url = reqwest::Url::parse(endpoint)?;
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/v1/traces");
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.as_str())
        .with_headers(
            config
                .otlp_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
        )
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    Ok(Some(provider))
}

/// The `tracing` layer that exports spans of [`TARGET`], and the guard that flushes them.
pub fn layer<S>(
    provider: Option<SdkTracerProvider>,
) -> (Option<impl tracing_subscriber::Layer<S>>, Guard)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let Some(p) = provider else {
        return (None, Guard(None));
    };
    ON.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(p.tracer("switchyard"))
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO),
        );
    (Some(layer), Guard(Some(p)))
}

/// The `receive` span of a job: child of the first event's `traceparent`, linked to the
/// others'.
pub fn receive(pipeline: &str, trigger: &str, events: &[Event]) -> Span {
    if !on() {
        return Span::none();
    }
    let first = &events[0];
    let span = tracing::info_span!(
        target: TARGET,
        "receive",
        otel.name = format!("receive {pipeline}"),
        otel.kind = "consumer",
        messaging.system = trigger,
        messaging.message.id = %first.id,
        messaging.batch.message_count = events.len(),
        switchyard.pipeline = pipeline,
        cloudevents.event_source = %first.source,
        cloudevents.event_type = %first.ty,
    );
    let mut parents = events
        .iter()
        .filter_map(|e| remote(e.extensions.get("traceparent")?));
    if let Some(parent) = parents.next() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
    for other in parents {
        span.add_link(other);
    }
    span
}

/// One attempt of a function call, child of the current span.
pub fn invoke(function: &str, attempt: u32) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "invoke",
        otel.name = format!("invoke {function}"),
        otel.kind = "client",
        switchyard.function = function,
        switchyard.attempt = attempt,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    )
}

/// One output write (all its attempts), child of the current span.
pub fn output(name: &str) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "output",
        otel.name = format!("output {name}"),
        otel.kind = "producer",
        switchyard.output = name,
        switchyard.attempts = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    )
}

/// The acknowledgement of a job, child of the current span.
pub fn ack(outcome: &'static str) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "ack", switchyard.outcome = outcome)
}

/// Mark a span failed.
pub fn fail(span: &Span, message: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", message);
}

/// The W3C `traceparent` of a span, when it is being traced.
pub fn traceparent(span: &Span) -> Option<String> {
    if !on() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Parse a W3C `traceparent` (version 00) into a remote span context.
pub fn remote(tp: &str) -> Option<SpanContext> {
    let mut parts = tp.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses_and_refuses() {
        let sc = remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-xyz",
        ] {
            assert!(remote(bad).is_none(), "{bad}");
        }
    }
}
