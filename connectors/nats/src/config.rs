//! Config of the `nats` trigger and output.

use schemars::JsonSchema;
use serde::Deserialize;
use switchyard_sdk::config::{Duration, MediaType, Secret};
use switchyard_sdk::Template;

/// `type: nats` trigger: a core subject (at most once) or a JetStream durable (at least once).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsTriggerConfig {
    /// `nats://host:4222` (credentials in the URL are never logged).
    pub url: Secret,
    /// Core NATS: the subject to subscribe to. At most once.
    #[serde(default)]
    pub subject: Option<String>,
    /// Core NATS: a queue group, so copies of the gateway share the messages.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// JetStream: a durable pull consumer. At least once.
    #[serde(default)]
    pub jetstream: Option<JetStreamTrigger>,
    /// The content type of messages that carry none (e.g. `application/json`), given to the
    /// function as it is; unset, a message without one is checked: JSON data is sent as
    /// `application/json`, anything else as `application/octet-stream`. A message's own
    /// content type always wins.
    #[serde(default)]
    pub content_type: Option<MediaType>,
}

/// A JetStream durable pull consumer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamTrigger {
    /// The stream.
    pub stream: String,
    /// The durable consumer's name; copies of the gateway with the same durable share it.
    pub durable: String,
    /// With `create: true`, the stream's subjects.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Only messages on this subject (filter within the stream).
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Create the stream (with `subjects`) if it does not exist.
    #[serde(default)]
    pub create: bool,
    /// How long the server waits for an ack before redelivering; keep it longer than the
    /// function's timeout (long calls also send in-progress acks).
    #[serde(default = "default_ack_wait")]
    pub ack_wait: Duration,
    /// Deliveries of one message at most (the engine's retries happen inside one delivery).
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_max_deliver() -> i64 {
    10
}

/// `type: nats` output: core publish, or JetStream publish awaiting the PubAck.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsOutputConfig {
    /// `nats://host:4222`.
    pub url: Secret,
    /// The subject (a template).
    pub subject: Template,
    /// Publish to JetStream and wait for the PubAck (with a `Nats-Msg-Id` header, so JetStream
    /// drops a repeated write); otherwise core publish, flushed.
    #[serde(default)]
    pub jetstream: bool,
    /// With `jetstream`: send the event id as `Nats-Msg-Id`, so the stream drops a write
    /// repeated within its duplicate window (a redelivered event). Off saves the server its
    /// duplicate tracking (about a third of its CPU per publish); repeats are then stored twice.
    #[serde(default = "switchyard_sdk::config::yes")]
    pub deduplicate: bool,
    /// Send the event's CloudEvents attributes with each value (`ce-*` headers, the binding's
    /// binary mode). `false` writes the value with its content type alone, as Dapr's
    /// `rawPayload` does, for consumers that do not read CloudEvents.
    #[serde(default = "switchyard_sdk::config::yes")]
    pub attributes: bool,
    /// How long to wait for the server.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Checks that need no I/O: (key, message) pairs.
pub fn check_trigger(c: &NatsTriggerConfig) -> Vec<(String, String)> {
    match (&c.subject, &c.jetstream) {
        (None, None) => vec![(
            "subject".into(),
            "give `subject` (core NATS) or `jetstream`".into(),
        )],
        (Some(_), Some(_)) => vec![(
            "subject".into(),
            "give `subject` or `jetstream`, not both".into(),
        )],
        (None, Some(js)) if js.create && js.subjects.is_empty() => {
            vec![(
                "jetstream.subjects".into(),
                "`create: true` needs the stream's subjects".into(),
            )]
        }
        (None, Some(_)) if c.queue_group.is_some() => {
            vec![(
                "queue_group".into(),
                "is for core subjects; a JetStream durable is already shared".into(),
            )]
        }
        _ => Vec::new(),
    }
}
