//! The normalized event: CloudEvents 1.0 attributes plus the data bytes.

use crate::ack::Ack;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// One event as a trigger produced it, before the engine adds delivery attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// CloudEvents `id`: unique per source event and stable across redeliveries.
    pub id: String,
    /// CloudEvents `source`: `switchyard/<pipeline>/<trigger type>/<entity>`.
    pub source: String,
    /// CloudEvents `type`: `switchyard.<trigger type>.<kind>`.
    pub ty: String,
    /// CloudEvents `subject`, where one exists (key, routing key, blob name...).
    pub subject: Option<String>,
    /// CloudEvents `time`: the broker's timestamp, else when switchyard received the event.
    pub time: DateTime<Utc>,
    /// CloudEvents `datacontenttype`; `None` means `application/octet-stream`.
    pub content_type: Option<String>,
    /// The event data.
    pub data: Bytes,
    /// Extension attributes (lower-case names, see [`Event::set_extension`]).
    pub extensions: BTreeMap<String, String>,
    /// The ordering lane for `ordering: partition` (kafka partition, queue...).
    pub partition: Option<String>,
    /// The ordering lane for `ordering: key` (message key).
    pub key: Option<String>,
    /// Connector-specific metadata that has no CloudEvents attribute (HTTP headers, query);
    /// the azure-functions format passes it on in `Metadata`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The default content type when a trigger cannot tell.
pub const OCTET_STREAM: &str = "application/octet-stream";

impl Event {
    /// A new event with the required attributes, received now.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            subject: None,
            time: Utc::now(),
            content_type: None,
            data: Bytes::new(),
            extensions: BTreeMap::new(),
            partition: None,
            key: None,
            metadata: serde_json::Map::new(),
        }
    }

    /// The `source` attribute for a pipeline, trigger type and entity.
    pub fn source_for(pipeline: &str, trigger: &str, entity: &str) -> String {
        // Built per event: one allocation of the exact size, no formatting machinery.
        let parts = ["switchyard/", pipeline, "/", trigger, "/", entity];
        let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            s.push_str(p);
        }
        s
    }

    /// Set the data and its content type.
    pub fn with_data(mut self, data: impl Into<Bytes>, content_type: Option<String>) -> Self {
        self.data = data.into();
        self.content_type = content_type;
        self
    }

    /// The content type, defaulting to `application/octet-stream`.
    pub fn content_type_or_default(&self) -> &str {
        self.content_type.as_deref().unwrap_or(OCTET_STREAM)
    }

    /// Whether the data is declared as JSON (`application/json`, `*+json`).
    pub fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(is_json_media_type)
    }

    /// Add an extension attribute. The name is normalized to what CloudEvents allows
    /// (lower-case ASCII letters and digits); the value loses control characters. Returns the
    /// name used, or `None` when nothing valid was left of the name.
    pub fn set_extension(&mut self, name: &str, value: impl Into<String>) -> Option<String> {
        // Names and values are almost always valid already: then they are not rebuilt.
        let name = if is_valid_attribute_name(name) {
            name.to_string()
        } else {
            extension_name(name)?
        };
        if RESERVED.contains(&name.as_str()) {
            return None;
        }
        let mut value: String = value.into();
        if value.chars().any(char::is_control) {
            value = value.chars().filter(|c| !c.is_control()).collect();
        }
        self.extensions.insert(name.clone(), value);
        Some(name)
    }
}

/// Attribute names that are not extensions.
pub const RESERVED: &[&str] = &[
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];

/// Normalize a name to a valid CloudEvents attribute name: lower-case ASCII letters and digits.
pub fn extension_name(name: &str) -> Option<String> {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (!n.is_empty()).then_some(n)
}

/// Whether a name is a valid CloudEvents attribute name as it stands.
pub fn is_valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether a media type is JSON (`application/json`, `text/json`, `*/*+json`).
pub fn is_json_media_type(ct: &str) -> bool {
    // Compared without lower-casing a copy: this runs for every event.
    let essence = ct.split(';').next().unwrap_or("").trim().as_bytes();
    essence.eq_ignore_ascii_case(b"application/json")
        || essence.eq_ignore_ascii_case(b"text/json")
        || (essence.len() >= 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// `application/json` when data with no declared type is a JSON object or array, else `None`
/// (for triggers whose messages may lack a content type).
pub fn sniff_json(data: &[u8]) -> Option<String> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace())?;
    (matches!(first, b'{' | b'[') && crate::json::is_json(data))
        .then(|| "application/json".to_string())
}

/// The content type of a message's data: the one the message carries, else the one its
/// trigger is configured with (`content_type`, trusted without looking at the data), else
/// `application/json` when the data is JSON, else none (the function gets
/// `application/octet-stream`).
pub fn content_type_of(
    carried: Option<String>,
    configured: Option<&crate::config::MediaType>,
    data: &[u8],
) -> Option<String> {
    carried
        .or_else(|| configured.map(|c| c.as_str().to_string()))
        .or_else(|| sniff_json(data))
}

/// An event together with its acknowledgement handle, as a trigger sends it to the engine.
#[derive(Debug)]
pub struct TriggerEvent {
    /// The event.
    pub event: Event,
    /// Resolve once delivered; see [`Ack`].
    pub ack: Ack,
}

impl TriggerEvent {
    /// Pair an event with its ack.
    pub fn new(event: Event, ack: Ack) -> Self {
        Self { event, ack }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_names_are_normalized() {
        let mut e = Event::new("1", "s", "t");
        assert_eq!(
            e.set_extension("Kafka-Partition", "3").as_deref(),
            Some("kafkapartition")
        );
        assert_eq!(e.set_extension("---", "x"), None);
        assert_eq!(
            e.set_extension("ID", "x"),
            None,
            "reserved names are refused"
        );
        e.set_extension("bad", "line\r\nbreak");
        assert_eq!(e.extensions["bad"], "linebreak");
        assert_eq!(
            e.set_extension("natsdelivered", "2").as_deref(),
            Some("natsdelivered")
        );
        assert_eq!(e.extensions["natsdelivered"], "2");
        assert_eq!(
            Event::source_for("p", "nats", "orders"),
            "switchyard/p/nats/orders"
        );
        assert!(is_valid_attribute_name("kafkaoffset"));
        assert!(!is_valid_attribute_name("kafka_offset"));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/cloudevents+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(is_json_media_type(" Application/JSON "));
        assert!(is_json_media_type("application/VND.x+Json;v=1"));
        assert!(!is_json_media_type("json"));
        assert!(!is_json_media_type("application/jsonx"));
    }

    #[test]
    fn a_message_type_wins_over_the_configured_one_which_wins_over_the_data() {
        let csv = crate::config::MediaType::parse("text/csv").unwrap();
        let json = b"{\"a\":1}";
        // The message's own type first; the data is not looked at.
        assert_eq!(
            content_type_of(Some("text/plain".into()), Some(&csv), json).as_deref(),
            Some("text/plain")
        );
        // Then the trigger's: trusted, even for data that would pass as JSON.
        assert_eq!(
            content_type_of(None, Some(&csv), json).as_deref(),
            Some("text/csv")
        );
        // Neither: JSON data is found to be JSON; anything else has no type.
        assert_eq!(
            content_type_of(None, None, json).as_deref(),
            Some("application/json")
        );
        assert_eq!(content_type_of(None, None, b"{\"a\":"), None);
    }
}
