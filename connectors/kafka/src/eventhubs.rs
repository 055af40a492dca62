//! `type: eventhubs`: Azure Event Hubs through its Kafka endpoint (Standard tier and above).
//!
//! `Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=...;SharedAccessKey=...[;EntityPath=hub]`
//! maps to `NS.servicebus.windows.net:9093`, SASL_SSL, PLAIN, username `$ConnectionString`,
//! password the whole connection string; the hub is the topic and the consumer group the group.

use crate::config::Start;
use crate::output::{build_producer, KafkaOutput};
use crate::trigger::{base_consumer_config, build_consumer};
use rdkafka::config::ClientConfig;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use switchyard_sdk::config::{Duration, MediaType, Secret};
use switchyard_sdk::error::BuildError;
use switchyard_sdk::{Template, Trigger, TriggerContext};

/// `type: eventhubs` trigger.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventHubsTriggerConfig {
    /// The namespace (or hub) connection string from the Azure portal.
    pub connection_string: Secret,
    /// The event hub; defaults to the connection string's `EntityPath`.
    #[serde(default)]
    pub hub: Option<String>,
    /// The consumer group.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// Where a new consumer group starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start: Start,
    /// How often the offsets of delivered events are committed (only when they moved; at least
    /// 10 ms). After a crash, at most the events in flight and those delivered in the last
    /// interval are delivered again.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: Duration,
    /// Extra librdkafka properties.
    #[serde(default, deserialize_with = "switchyard_sdk::config::string_map")]
    pub options: BTreeMap<String, String>,
    /// The content type of messages that carry none (e.g. `application/json`), given to the
    /// function as it is; unset, a message without one is checked: JSON data is sent as
    /// `application/json`, anything else as `application/octet-stream`. A message's own
    /// content type always wins.
    #[serde(default)]
    pub content_type: Option<MediaType>,
}

/// `type: eventhubs` output.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventHubsOutputConfig {
    /// The namespace (or hub) connection string.
    pub connection_string: Secret,
    /// The event hub; defaults to the connection string's `EntityPath`.
    #[serde(default)]
    pub hub: Option<String>,
    /// The partition key (a template); none by default.
    #[serde(default)]
    pub key: Option<Template>,
    /// How long to wait for the delivery report.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Send the event's CloudEvents attributes with each value (`ce_*` headers, the binding's
    /// binary mode). `false` writes the value with its content type alone, as Dapr's
    /// `rawPayload` does, for consumers that do not read CloudEvents.
    #[serde(default = "switchyard_sdk::config::yes")]
    pub attributes: bool,
    /// Extra librdkafka properties.
    #[serde(default, deserialize_with = "switchyard_sdk::config::string_map")]
    pub options: BTreeMap<String, String>,
}

fn default_consumer_group() -> String {
    "$Default".into()
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A parsed Event Hubs connection string. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `NS.servicebus.windows.net`
    pub host: String,
    /// `SharedAccessKeyName`
    pub key_name: String,
    /// `EntityPath`, when the string is scoped to one hub.
    pub entity_path: Option<String>,
    raw: Secret,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("key_name", &self.key_name)
            .field("entity_path", &self.entity_path)
            .finish_non_exhaustive()
    }
}

/// Parse a connection string. Errors name the missing or bad part, never the key.
pub fn parse_connection_string(s: &str) -> Result<ConnectionString, String> {
    let mut endpoint = None;
    let mut key_name = None;
    let mut key = None;
    let mut entity = None;
    for part in s.trim().split(';').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err("connection string: every part must be Name=value".into());
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(v.trim().to_string()),
            "sharedaccesskeyname" => key_name = Some(v.trim().to_string()),
            "sharedaccesskey" => key = Some(()),
            "entitypath" => entity = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let endpoint = endpoint.ok_or("connection string: Endpoint is missing")?;
    let host = endpoint
        .strip_prefix("sb://")
        .ok_or("connection string: Endpoint must start with sb://")?
        .trim_end_matches('/')
        .to_string();
    if host.is_empty() || host.contains('/') {
        return Err("connection string: Endpoint must be sb://<namespace host>/".into());
    }
    let key_name = key_name.ok_or("connection string: SharedAccessKeyName is missing")?;
    key.ok_or("connection string: SharedAccessKey is missing")?;
    Ok(ConnectionString {
        host,
        key_name,
        entity_path: entity.filter(|e| !e.is_empty()),
        raw: Secret::new(s.trim()),
    })
}

impl ConnectionString {
    /// The librdkafka properties for the namespace's Kafka endpoint.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", format!("{}:9093", self.host))
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "PLAIN")
            .set("sasl.username", "$ConnectionString")
            .set("sasl.password", self.raw.expose());
        c
    }

    fn hub(&self, hub: &Option<String>) -> Result<String, BuildError> {
        hub.clone()
            .or_else(|| self.entity_path.clone())
            .ok_or_else(|| {
                BuildError::invalid("hub", "give `hub`, or a connection string with EntityPath")
            })
    }
}

fn parse(s: &Secret) -> Result<ConnectionString, BuildError> {
    parse_connection_string(s.expose()).map_err(|m| BuildError::invalid("connection_string", m))
}

impl EventHubsTriggerConfig {
    /// Checks that need no I/O: (key, message) pairs.
    pub fn check(&self) -> Vec<(String, String)> {
        match parse(&self.connection_string).and_then(|cs| cs.hub(&self.hub)) {
            Ok(_) => Vec::new(),
            Err(BuildError::Invalid { key, message }) => vec![(key, message)],
            Err(e) => vec![("connection_string".into(), e.to_string())],
        }
    }

    /// The consumer properties and the hub's name.
    fn consumer_config(&self) -> Result<(rdkafka::ClientConfig, String), BuildError> {
        let cs = parse(&self.connection_string)?;
        let hub = cs.hub(&self.hub)?;
        let mut config = cs.client_config();
        base_consumer_config(
            &mut config,
            &self.consumer_group,
            self.start.as_str(),
            self.commit_interval.get(),
        );
        for (k, v) in &self.options {
            config.set(k, v);
        }
        Ok((config, hub))
    }

    /// Build the trigger.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        let (config, hub) = self.consumer_config()?;
        build_consumer(cx, config, &[hub], "eventhubs", self.content_type.clone())
    }

    /// `switchyard validate --connect`: reach the namespace and look the hub up.
    pub async fn probe(&self) -> Result<String, String> {
        let (config, hub) = self.consumer_config().map_err(|e| e.to_string())?;
        crate::trigger::probe_topics(config, vec![hub]).await
    }
}

impl EventHubsOutputConfig {
    /// Checks that need no I/O: (key, message) pairs.
    pub fn check(&self) -> Vec<(String, String)> {
        match parse(&self.connection_string).and_then(|cs| cs.hub(&self.hub)) {
            Ok(_) => Vec::new(),
            Err(BuildError::Invalid { key, message }) => vec![(key, message)],
            Err(e) => vec![("connection_string".into(), e.to_string())],
        }
    }

    /// Build the output.
    pub fn build(&self) -> Result<KafkaOutput, BuildError> {
        let cs = parse(&self.connection_string)?;
        let hub = cs.hub(&self.hub)?;
        let mut config = cs.client_config();
        for (k, v) in &self.options {
            config.set(k, v);
        }
        let topic = Template::parse(&hub.replace('{', "{{").replace('}', "}}"))
            .map_err(|m| BuildError::invalid("hub", m))?;
        build_producer(
            config,
            topic,
            self.key.clone(),
            self.timeout.get(),
            self.attributes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1ub3QtcmVhbA==";

    fn cs(s: &str) -> Result<ConnectionString, String> {
        parse_connection_string(s)
    }

    #[test]
    fn maps_onto_the_kafka_endpoint() {
        let s = format!("Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY};EntityPath=orders");
        let c = cs(&s).unwrap();
        assert_eq!(c.host, "myns.servicebus.windows.net");
        assert_eq!(c.entity_path.as_deref(), Some("orders"));
        let k = c.client_config();
        assert_eq!(
            k.get("bootstrap.servers"),
            Some("myns.servicebus.windows.net:9093")
        );
        assert_eq!(k.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(k.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(k.get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(k.get("sasl.password"), Some(s.as_str()));
        assert!(!format!("{c:?}").contains(KEY), "Debug never shows the key");
    }

    #[test]
    fn bad_strings_name_the_missing_part_and_never_the_key() {
        let cases = [
            (
                format!("SharedAccessKeyName=n;SharedAccessKey={KEY}"),
                "Endpoint is missing",
            ),
            (
                format!("Endpoint=https://x/;SharedAccessKeyName=n;SharedAccessKey={KEY}"),
                "must start with sb://",
            ),
            (
                format!("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey={KEY}"),
                "SharedAccessKeyName is missing",
            ),
            (
                "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=n".to_string(),
                "SharedAccessKey is missing",
            ),
            ("Endpoint=sb://x/;justtext".to_string(), "Name=value"),
        ];
        for (s, expected) in cases {
            let e = cs(&s).unwrap_err();
            assert!(e.contains(expected), "{s}: {e}");
            assert!(!e.contains(KEY), "the error echoes the key: {e}");
        }
    }

    #[test]
    fn hub_comes_from_config_or_entity_path() {
        let no_entity = format!(
            "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=n;SharedAccessKey={KEY}"
        );
        let t = EventHubsTriggerConfig {
            connection_string: Secret::new(no_entity),
            hub: None,
            consumer_group: default_consumer_group(),
            start: Start::Earliest,
            commit_interval: default_commit_interval(),
            options: BTreeMap::new(),
            content_type: None,
        };
        let problems = t.check();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "hub");
        let t2 = EventHubsTriggerConfig {
            hub: Some("orders".into()),
            ..t
        };
        assert!(t2.check().is_empty());
    }
}
