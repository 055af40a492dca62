//! The one home of metric names, and the tracing setup.

/// Events a trigger handed to the engine.
pub const EVENTS_RECEIVED: &str = "switchyard_events_received_total";
/// Function calls by outcome: `success`, `retry` (a failed attempt that will be retried),
/// `failed` (the last attempt failed or the failure is not retryable).
pub const INVOCATIONS: &str = "switchyard_invocations_total";
/// Duration of one invocation, all attempts together.
pub const INVOCATION_DURATION: &str = "switchyard_invocation_duration_seconds";
/// Output writes by outcome: `success`, `retry`, `failed`.
pub const OUTPUTS: &str = "switchyard_outputs_total";
/// Events written to the dead letter.
pub const DEAD_LETTERS: &str = "switchyard_dead_letters_total";
/// Events that failed for good with no dead letter (handed to the trigger's poison mechanism,
/// or dropped where it has none).
pub const EVENTS_REJECTED: &str = "switchyard_events_rejected_total";
/// Events that could not be finished (shutdown timeout, dead letter down): not acknowledged.
pub const EVENTS_ABANDONED: &str = "switchyard_events_abandoned_total";
/// Events held by a pipeline: queued, batching or in a call.
pub const EVENTS_IN_FLIGHT: &str = "switchyard_events_in_flight";
/// Messages waiting at the source, where the broker can tell.
pub const TRIGGER_BACKLOG: &str = "switchyard_trigger_backlog";
/// Source messages a trigger refused before any call (too large, undecodable), by `reason`.
/// Connectors emit it under this name.
pub const TRIGGER_REJECTED: &str = "switchyard_trigger_rejected_total";
/// Messages a trigger moved to its poison queue (Azure Storage). Connectors emit it under this
/// name.
pub const TRIGGER_POISONED: &str = "switchyard_trigger_poisoned_total";
/// Restarts of supervised function processes.
pub const FUNCTION_RESTARTS: &str = "switchyard_function_restarts_total";
/// Counter: config reloads by outcome (applied, unchanged, invalid, failed).
pub const CONFIG_RELOADS: &str = "switchyard_config_reloads_total";

/// Register descriptions so `/metrics` explains each metric.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS_RECEIVED, "Events a trigger handed to the engine.");
    describe_counter!(
        INVOCATIONS,
        "Function calls by outcome (success, retry, failed)."
    );
    describe_histogram!(
        INVOCATION_DURATION,
        Unit::Seconds,
        "Duration of one invocation, all attempts together."
    );
    describe_counter!(
        OUTPUTS,
        "Output writes by outcome (success, retry, failed)."
    );
    describe_counter!(DEAD_LETTERS, "Events written to the dead letter.");
    describe_counter!(
        EVENTS_REJECTED,
        "Events that failed for good with no dead letter."
    );
    describe_counter!(
        EVENTS_ABANDONED,
        "Events not finished, left unacknowledged for redelivery."
    );
    describe_gauge!(EVENTS_IN_FLIGHT, "Events held by a pipeline.");
    describe_gauge!(TRIGGER_BACKLOG, "Messages waiting at the source.");
    describe_counter!(
        TRIGGER_REJECTED,
        "Source messages refused before any call (too large, undecodable)."
    );
    describe_counter!(TRIGGER_POISONED, "Messages moved to a poison queue.");
    describe_counter!(
        FUNCTION_RESTARTS,
        "Restarts of supervised function processes."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Config reloads by outcome (applied, unchanged, invalid, failed)."
    );
}

/// Log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the tracing subscriber: logs on stderr (`RUST_LOG` overrides the default
/// `info`) and, when `telemetry.otlp_endpoint` is set, the span exporter. Keep the guard until
/// exit: dropping it flushes the spans still buffered.
pub fn init_tracing(
    format: LogFormat,
    telemetry: &crate::config::TelemetryConfig,
) -> Result<crate::otel::Guard, switchyard_sdk::BoxError> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = crate::otel::provider(telemetry)?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colours(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ));
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let (spans, guard) = crate::otel::layer(provider);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(spans)
        .init();
    log_panics();
    Ok(guard)
}

/// Whether the text log is coloured: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (no-color.org). A log written to a file or read by a log
/// shipper gets no escape codes.
fn colours(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Report every panic as one log event at error level, with its message, where it happened
/// and the thread (and the backtrace when `RUST_BACKTRACE` asks for one), instead of the
/// default hook's plain text on stderr: with `--log-format json` a panic stays one JSON line
/// that a log shipper can parse. A panic that is caught (an output's client library that
/// asserts on a value) is logged so too, and then handled where it was caught.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message =
            panic_message(info.payload()).unwrap_or_else(|| "(a panic without a message)".into());
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(panic = %message, %location, thread, %backtrace, "panicked");
        } else {
            tracing::error!(panic = %message, %location, thread, "panicked");
        }
    }));
}

/// The message a panic was raised with (`panic!("...")` makes a `&str` or a `String`), if any.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// The metric handles of one pipeline, registered once, so the hot path does no label
/// allocation or registry lookup.
#[derive(Clone)]
pub struct PipelineMetrics {
    /// `switchyard_invocations_total{outcome="success"}`
    pub success: metrics::Counter,
    /// `switchyard_invocations_total{outcome="failed"}`
    pub failed: metrics::Counter,
    /// `switchyard_invocations_total{outcome="retry"}`
    pub retry: metrics::Counter,
    /// `switchyard_invocation_duration_seconds`
    pub duration: metrics::Histogram,
    /// `switchyard_dead_letters_total`
    pub dead_letters: metrics::Counter,
    /// `switchyard_events_rejected_total`
    pub rejected: metrics::Counter,
    /// `switchyard_events_abandoned_total`
    pub abandoned: metrics::Counter,
    outputs: std::collections::HashMap<String, [metrics::Counter; 3]>,
}

/// How an output write ended.
#[derive(Debug, Clone, Copy)]
pub enum OutputOutcome {
    /// Confirmed.
    Success = 0,
    /// Failed, will be retried.
    Retry = 1,
    /// Failed for good.
    Failed = 2,
}

impl PipelineMetrics {
    /// Register the handles of `pipeline` calling `function` with these outputs (the dead
    /// letter counts as an output named `dead_letter`).
    pub fn new<'a>(
        pipeline: &str,
        function: &str,
        outputs: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let inv = |outcome: &'static str| metrics::counter!(INVOCATIONS, "pipeline" => pipeline.to_string(), "function" => function.to_string(), "outcome" => outcome);
        let p = || pipeline.to_string();
        let out = |name: &str, outcome: &'static str| metrics::counter!(OUTPUTS, "pipeline" => pipeline.to_string(), "output" => name.to_string(), "outcome" => outcome);
        Self {
            success: inv("success"),
            failed: inv("failed"),
            retry: inv("retry"),
            duration: metrics::histogram!(INVOCATION_DURATION, "pipeline" => p(), "function" => function.to_string()),
            dead_letters: metrics::counter!(DEAD_LETTERS, "pipeline" => p()),
            rejected: metrics::counter!(EVENTS_REJECTED, "pipeline" => p()),
            abandoned: metrics::counter!(EVENTS_ABANDONED, "pipeline" => p()),
            outputs: outputs
                .into_iter()
                .chain(["dead_letter"])
                .map(|n| {
                    (
                        n.to_string(),
                        [out(n, "success"), out(n, "retry"), out(n, "failed")],
                    )
                })
                .collect(),
        }
    }

    /// Count an output write.
    pub fn output(&self, name: &str, outcome: OutputOutcome) {
        if let Some(c) = self.outputs.get(name) {
            c[outcome as usize].increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::colours;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(!colours(false, None), "a file or a pipe");
        assert!(!colours(true, Some("1".into())), "NO_COLOR=1");
        assert!(colours(true, Some("".into())), "an empty NO_COLOR is unset");
    }
}
