//! Config of the `rabbitmq` trigger and output.

use crate::MAX_SHORT;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use switchyard_sdk::config::{Duration, MediaType, Secret};
use switchyard_sdk::Template;

/// `type: rabbitmq` trigger: consume a queue with manual acks.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqTriggerConfig {
    /// `amqp://user:password@host:5672/vhost` (`%2f` is the default vhost). Never logged.
    pub url: Secret,
    /// The queue to consume.
    pub queue: String,
    /// Unacknowledged messages the broker may hand out at once: the in-flight bound.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Declare the queue (and bind it) at start.
    #[serde(default)]
    pub declare: Option<Declare>,
    /// The content type of messages that carry none (e.g. `application/json`), given to the
    /// function as it is; unset, a message without one is checked: JSON data is sent as
    /// `application/json`, anything else as `application/octet-stream`. A message's own
    /// content type always wins.
    #[serde(default)]
    pub content_type: Option<MediaType>,
}

fn default_prefetch() -> u16 {
    64
}

/// Queue declaration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Declare {
    /// Survive a broker restart.
    #[serde(default = "switchyard_sdk::config::yes")]
    pub durable: bool,
    /// Queue arguments, e.g. `x-dead-letter-exchange`, `x-queue-type: quorum`.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
    /// Bindings to exchanges (declared elsewhere).
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

/// A queue binding.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The exchange.
    pub exchange: String,
    /// The routing key (a pattern for topic exchanges; ignored by fanout and headers).
    #[serde(default)]
    pub routing_key: String,
    /// Binding arguments (`x-match` and the headers to match, for headers exchanges).
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

/// `type: rabbitmq` output: publish to an exchange with publisher confirms.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqOutputConfig {
    /// `amqp://user:password@host:5672/vhost`. Never logged.
    pub url: Secret,
    /// The exchange; `""` is the default exchange (routing key = queue name).
    #[serde(default)]
    pub exchange: String,
    /// The routing key (a template).
    pub routing_key: Template,
    /// Ask the broker to return unroutable messages; a returned message is a failed write.
    #[serde(default)]
    pub mandatory: bool,
    /// How long to wait for the broker's confirm.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Send the event's CloudEvents attributes with each value (`cloudEvents:*` headers, the
    /// binding's binary mode). `false` writes the value with its content type alone, as Dapr's
    /// `rawPayload` does, for consumers that do not read CloudEvents.
    #[serde(default = "switchyard_sdk::config::yes")]
    pub attributes: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn check_name(out: &mut Vec<(String, String)>, key: String, value: &str) {
    if value.len() > MAX_SHORT {
        out.push((
            key,
            format!("is {} bytes; AMQP allows at most {MAX_SHORT}", value.len()),
        ));
    }
}

fn check_keys(
    out: &mut Vec<(String, String)>,
    prefix: &str,
    table: &BTreeMap<String, serde_json::Value>,
) {
    for k in table.keys() {
        check_name(out, format!("{prefix}.{k}"), k);
    }
}

/// Checks shared by `switchyard validate` and build: (key, message) pairs.
pub fn check_trigger(c: &RabbitMqTriggerConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    check_name(&mut out, "queue".into(), &c.queue);
    if let Some(d) = &c.declare {
        check_keys(&mut out, "declare.arguments", &d.arguments);
        for (i, b) in d.bindings.iter().enumerate() {
            let at = format!("declare.bindings[{i}]");
            check_name(&mut out, format!("{at}.exchange"), &b.exchange);
            check_name(&mut out, format!("{at}.routing_key"), &b.routing_key);
            check_keys(&mut out, &format!("{at}.arguments"), &b.arguments);
        }
    }
    out
}

/// Checks of the output: (key, message) pairs. A rendered routing key over the limit is a
/// write error (`invalid`), as it depends on the record.
pub fn check_output(c: &RabbitMqOutputConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    check_name(&mut out, "exchange".into(), &c.exchange);
    out
}
