//! Config of the `kafka` trigger and output.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use switchyard_sdk::config::{Duration, MediaType};
use switchyard_sdk::Template;

/// `type: kafka` trigger: a consumer group over one or more topics.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTriggerConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// The consumer group; instances with the same group share the partitions.
    pub group: String,
    /// Where a new group starts: `earliest` (default, nothing is skipped) or `latest`.
    #[serde(default)]
    pub start: Start,
    /// How often the offsets of delivered events are committed (only when they moved; at least
    /// 10 ms). After a crash, at most the events in flight and those delivered in the last
    /// interval are delivered again.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: Duration,
    /// Extra librdkafka properties (TLS, SASL, timeouts), passed through as they are.
    /// `enable.auto.offset.store` cannot be changed: at-least-once depends on it.
    #[serde(default, deserialize_with = "switchyard_sdk::config::string_map")]
    pub options: BTreeMap<String, String>,
    /// The content type of messages that carry none (e.g. `application/json`), given to the
    /// function as it is; unset, a message without one is checked: JSON data is sent as
    /// `application/json`, anything else as `application/octet-stream`. A message's own
    /// content type always wins.
    #[serde(default)]
    pub content_type: Option<MediaType>,
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// The oldest record still in the topic.
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

impl Start {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}

/// `type: kafka` output: produce each value to a topic.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaOutputConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic (a template).
    pub topic: Template,
    /// The record key (a template); none by default.
    #[serde(default)]
    pub key: Option<Template>,
    /// How long to wait for the delivery report.
    #[serde(default = "default_delivery_timeout")]
    pub timeout: Duration,
    /// Send the event's CloudEvents attributes with each value (`ce_*` headers, the binding's
    /// binary mode). `false` writes the value with its content type alone, as Dapr's
    /// `rawPayload` does, for consumers that do not read CloudEvents.
    #[serde(default = "switchyard_sdk::config::yes")]
    pub attributes: bool,
    /// Extra librdkafka properties, passed through as they are.
    #[serde(default, deserialize_with = "switchyard_sdk::config::string_map")]
    pub options: BTreeMap<String, String>,
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Properties a user may not override, and why.
pub(crate) const FIXED_CONSUMER_KEYS: &[&str] = &["enable.auto.offset.store", "group.id"];

/// Checks shared by `switchyard validate` and build: (key, message) pairs.
pub fn check_trigger(c: &KafkaTriggerConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if c.brokers.is_empty() {
        out.push(("brokers".into(), "give at least one broker".into()));
    }
    if c.topics.is_empty() {
        out.push(("topics".into(), "give at least one topic".into()));
    }
    if c.group.trim().is_empty() {
        out.push(("group".into(), "must not be empty".into()));
    }
    for k in c.options.keys() {
        if FIXED_CONSUMER_KEYS.contains(&k.as_str()) {
            out.push((
                format!("options.{k}"),
                "is set by switchyard and cannot be overridden".into(),
            ));
        }
    }
    out
}
