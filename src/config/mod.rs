//! The config file: one YAML document with `admin`, `ingress`, `functions` and `pipelines`
//! (SPEC §1). Every struct denies unknown keys and documents every field; the docs become the
//! JSON Schema that `switchyard schema` prints.

mod interpolate;
mod load;
pub(crate) mod tagged;

pub use interpolate::{expand, Env, Source};
pub use load::{
    load_file, load_file_with_source, load_str, load_str_with_source, ConfigError, Loaded, Problem,
};

use crate::connectors::{OutputConfig, TriggerConfig};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use switchyard_sdk::config::{ByteSize, Duration, Secret};

/// The whole config file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin server: `/healthz`, `/readyz`, `/metrics`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The shared HTTP server for `http` and `slack` triggers.
    #[serde(default)]
    pub ingress: IngressConfig,
    /// Distributed tracing: OpenTelemetry spans exported over OTLP/HTTP.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// How long a drain (SIGTERM, SIGINT) may take before in-flight events are abandoned
    /// (not acknowledged, so the broker delivers them again).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// The functions, by name: HTTP endpoints, optionally started by switchyard.
    pub functions: BTreeMap<String, FunctionConfig>,
    /// The pipelines, by name: trigger → function → outputs.
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The admin server.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on; loopback by default.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    ([127, 0, 0, 1], 9464).into()
}

/// Distributed tracing. Off unless `otlp_endpoint` is set; then every delivery is traced
/// (receive → invoke, one span per attempt → each output → ack) and the `traceparent` the
/// function and the outputs see is that of their span.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP (protobuf) collector, e.g. `http://otel-collector:4318`; `/v1/traces` is
    /// added when the URL has no path.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Extra headers on every export (e.g. an API key). Values never appear in logs.
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, Secret>,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0; a trace that arrives sampled (its
    /// `traceparent`) is always recorded.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_headers: BTreeMap::new(),
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
        }
    }
}

fn default_service_name() -> String {
    "switchyard".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}

/// The ingress server.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Address to listen on. Started only when a pipeline has an `http` or `slack` trigger.
    #[serde(default = "default_ingress_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// How long a client may take to send the request headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Duration,
    /// How long a client may take to send the request body; slower ones get 408.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Duration,
    /// Connections open at once; further clients wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: default_ingress_listen(),
            max_body: default_max_body(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_ingress_listen() -> SocketAddr {
    ([127, 0, 0, 1], 8080).into()
}
fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1024
}

/// A function: an HTTP endpoint that receives events.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Base URL of the function. Required unless `command` is given. An `http://` function
    /// is called directly (no HTTP proxy); an `https://` one honours `HTTPS_PROXY`.
    /// `user:password@` in it is sent as Basic `Authorization` (a configured `Authorization`
    /// header wins).
    #[serde(default)]
    pub url: Option<String>,
    /// Start and supervise this process (restarted with backoff if it dies). It gets its port
    /// in `FUNCTIONS_CUSTOMHANDLER_PORT` and `PORT`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Extra environment for `command`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How events are sent.
    #[serde(default)]
    pub format: Format,
    /// How long one call may take; a timeout is retried.
    #[serde(default = "default_function_timeout")]
    pub timeout: Duration,
    /// In-flight invocations to this function, all pipelines together.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Extra headers on every call (e.g. `Authorization`). Values never appear in logs.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Largest reply body accepted; a larger reply is a failed call.
    #[serde(default = "default_max_reply")]
    pub max_reply: ByteSize,
}

fn default_function_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> usize {
    64
}
fn default_max_reply() -> ByteSize {
    ByteSize(16 << 20)
}

/// How the gateway sends events to a function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// CloudEvents HTTP binary mode: `ce-*` headers, the data as the body.
    #[default]
    Cloudevents,
    /// CloudEvents HTTP structured mode: `application/cloudevents+json`.
    CloudeventsStructured,
    /// The Azure Functions custom-handler protocol: `POST {url}/{pipeline}`.
    AzureFunctions,
}

/// A pipeline: trigger → function → outputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where events come from.
    pub trigger: TriggerConfig,
    /// The binding name of the trigger in the azure-functions format (`Data.<name>`).
    #[serde(default = "default_trigger_name")]
    pub trigger_name: String,
    /// The function (a key of `functions`) that receives the events.
    pub function: String,
    /// Events held at once by this pipeline (queued, batching, in calls and in output writes).
    /// The calls themselves are bounded by `concurrency`; holding more lets outputs be written
    /// while calls run. Defaults to twice the function's `concurrency` times `batch.max_events`
    /// when the pipeline has outputs, once without, and at most what the trigger leaves
    /// unacknowledged (RabbitMQ's `prefetch`).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Batching: more than one event per invocation.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Ordering: `partition` (default for kafka and eventhubs), `key`, or `none`.
    #[serde(default)]
    pub ordering: Option<Ordering>,
    /// Retries of the function call and of output writes.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Where events go whose delivery failed for good. Any output type.
    #[serde(default)]
    pub dead_letter: Option<OutputConfig>,
    /// Where the function's return values go.
    #[serde(default)]
    pub outputs: Vec<NamedOutput>,
}

impl PipelineConfig {
    /// The events this pipeline may call at once: the function's `concurrency` times
    /// `batch.max_events`.
    pub fn calls(&self, function: &FunctionConfig) -> usize {
        function.concurrency * self.batch.max_events.max(1)
    }

    /// Set when the trigger leaves fewer events unacknowledged than the pipeline asks to hold
    /// (`max_in_flight`, else [`Self::calls`]): a RabbitMQ `prefetch` below it. The engine is
    /// then never full, so each delivery wakes it alone (2.5 times the context switches per
    /// message measured at twice the prefetch, docs/benchmarks.md), and where `concurrency`
    /// is above it, fewer calls run than it allows. `run` logs it, `validate` prints it.
    pub fn prefetch_below(&self, function: &FunctionConfig) -> Option<PrefetchBelow> {
        let max_in_flight = self.max_in_flight.unwrap_or_else(|| self.calls(function));
        let prefetch = self.trigger.unacked_limit()?;
        (prefetch < max_in_flight).then_some(PrefetchBelow {
            max_in_flight,
            prefetch,
        })
    }
}

/// A trigger's prefetch below what its pipeline asks to hold ([`PipelineConfig::prefetch_below`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefetchBelow {
    /// The events the pipeline asks to hold.
    pub max_in_flight: usize,
    /// The events the trigger leaves unacknowledged.
    pub prefetch: usize,
}

impl PrefetchBelow {
    /// What it means and what to do.
    pub const ADVICE: &'static str = "the trigger's prefetch is below max_in_flight: at most \
         prefetch events are held; raise prefetch to max_in_flight (or lower concurrency)";
}

fn default_trigger_name() -> String {
    "trigger".into()
}

/// Batching of events into one invocation.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Events per invocation; more than 1 sends a CloudEvents batch.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// How long to wait for a batch to fill.
    #[serde(default)]
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: default_max_events(),
            max_wait: Duration::default(),
        }
    }
}

fn default_max_events() -> usize {
    1
}

/// Which events must reach the function one at a time, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Events of one partition (queue, stream...) in order; partitions in parallel.
    Partition,
    /// Events of one key in order; keys in parallel.
    Key,
    /// No order; bounded concurrency only.
    None,
}

/// Retry policy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// `fixed` or `exponential` (with full jitter).
    #[serde(default)]
    pub backoff: Backoff,
    /// The first delay.
    #[serde(default = "default_initial_delay")]
    pub initial_delay: Duration,
    /// The largest delay.
    #[serde(default = "default_max_delay")]
    pub max_delay: Duration,
    /// Statuses that are retried (numbers or `"500-599"` ranges), besides connection errors
    /// and timeouts.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<StatusRange>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff: Backoff::default(),
            initial_delay: default_initial_delay(),
            max_delay: default_max_delay(),
            retry_on: default_retry_on(),
        }
    }
}

fn default_max_attempts() -> u32 {
    5
}
fn default_initial_delay() -> Duration {
    Duration::from_millis(200)
}
fn default_max_delay() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_on() -> Vec<StatusRange> {
    vec![
        StatusRange(408, 408),
        StatusRange(429, 429),
        StatusRange(500, 599),
    ]
}

/// Backoff between attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Always `initial_delay`.
    Fixed,
    /// `initial_delay * 2^(attempt-1)`, capped at `max_delay`, with full jitter.
    #[default]
    Exponential,
}

/// An HTTP status or an inclusive range such as `"500-599"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange(pub u16, pub u16);

impl StatusRange {
    /// Whether `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.0..=self.1).contains(&status)
    }

    /// Whether `status` is in any of `ranges` (a `retry_on` list): the one rule the function's
    /// answers and the outputs' statuses are both retried by.
    pub fn any_contains(ranges: &[StatusRange], status: u16) -> bool {
        ranges.iter().any(|r| r.contains(status))
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u16),
            S(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "invalid status {s:?}; write a status such as 429 or a range such as \"500-599\""
            ))
        };
        let (lo, hi) = match Raw::deserialize(d)? {
            Raw::N(n) => (n, n),
            Raw::S(s) => match s.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse().map_err(|_| bad(&s))?,
                    b.trim().parse().map_err(|_| bad(&s))?,
                ),
                None => {
                    let n = s.trim().parse().map_err(|_| bad(&s))?;
                    (n, n)
                }
            },
        };
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(bad(&format!("{lo}-{hi}")));
        }
        Ok(Self(lo, hi))
    }
}

impl JsonSchema for StatusRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StatusRange".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["integer", "string"],
            "description": "An HTTP status (429) or an inclusive range (\"500-599\")."
        })
    }
}

/// An output with its name (the name the azure-functions format routes `Outputs` by).
///
/// Deserialized by hand: serde's `flatten` would silently accept unknown keys.
#[derive(Debug, Clone)]
pub struct NamedOutput {
    /// The output's name; `$return` receives the azure-functions `ReturnValue`.
    pub name: String,
    /// The output itself.
    pub output: OutputConfig,
}

impl<'de> Deserialize<'de> for NamedOutput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(d)?;
        let name = match value.as_object_mut().and_then(|m| m.remove("name")) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s,
            Some(_) => {
                return Err(serde::de::Error::custom(tagged::at(
                    "name",
                    "must be a non-empty string",
                )))
            }
            None => return Err(serde::de::Error::missing_field("name")),
        };
        let output = tagged::from_value(value)?;
        Ok(Self { name, output })
    }
}

impl JsonSchema for NamedOutput {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NamedOutput".into()
    }
    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let inner = gen.subschema_for::<OutputConfig>();
        schemars::json_schema!({
            "description": "An output with its name; `$return` receives the azure-functions ReturnValue.",
            "allOf": [
                {
                    "type": "object",
                    "properties": { "name": { "type": "string", "description": "The output's name." } },
                    "required": ["name"]
                },
                inner
            ]
        })
    }
}
