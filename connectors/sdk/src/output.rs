//! Outputs: a write that is confirmed before the event counts as delivered.

use crate::error::OutputError;
use crate::event::Event;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// One value to write, with the attributes templates and brokers may use.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The pipeline that produced it.
    pub pipeline: String,
    /// The id of the event it answers (the source event's CloudEvents `id`).
    pub id: String,
    /// The CloudEvents type of the value (the reply's `ce-type`, else the source event's).
    pub ty: String,
    /// The subject (the reply's `ce-subject`, else the source event's).
    pub subject: Option<String>,
    /// The source event's `source`.
    pub source: String,
    /// When the source event happened.
    pub time: DateTime<Utc>,
    /// The value's content type, when known.
    pub content_type: Option<String>,
    /// Extension attributes to carry over (as `ce_*` headers on brokers that have headers).
    pub extensions: BTreeMap<String, String>,
    /// The value itself.
    pub data: Bytes,
}

impl Record {
    /// A record with the given data and default attributes (used in tests and dead letters).
    pub fn new(pipeline: impl Into<String>, data: Bytes) -> Self {
        Self {
            pipeline: pipeline.into(),
            id: String::new(),
            ty: String::new(),
            subject: None,
            source: String::new(),
            time: Utc::now(),
            content_type: None,
            extensions: BTreeMap::new(),
            data,
        }
    }

    /// A record that answers `event`, with the event's attributes.
    pub fn answering(pipeline: &str, event: &Event, data: Bytes) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            id: event.id.clone(),
            ty: event.ty.clone(),
            subject: event.subject.clone(),
            source: event.source.clone(),
            time: event.time,
            content_type: None,
            extensions: BTreeMap::new(),
            data,
        }
    }
}

impl Record {
    /// The CloudEvent attributes a broker binding carries beside the data: `specversion`, `id`,
    /// `source`, `type`, `time` (RFC 3339), `subject` when set, then the extensions. The data's
    /// content type is left to each binding (a property, a header of its own). Each output adds
    /// its binding's prefix (`ce_` Kafka, `cloudEvents:` AMQP).
    pub fn attributes(&self) -> Vec<(&str, std::borrow::Cow<'_, str>)> {
        crate::cloudevents::attribute_list(
            &self.id,
            &self.source,
            &self.ty,
            &self.time,
            self.subject.as_deref(),
            &self.extensions,
        )
    }
}

/// An output binding. `write` returns only once the destination confirmed the write.
#[async_trait]
pub trait Output: Send + Sync {
    /// Write one value; `Ok` means the destination has it.
    async fn write(&self, record: &Record) -> Result<(), OutputError>;

    /// Check that the destination is reachable (for `/readyz`). Defaults to ready.
    async fn healthcheck(&self) -> Result<(), OutputError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_the_required_then_the_set_ones_then_the_extensions() {
        let mut r = Record::new("p", Bytes::new());
        r.id = "i".into();
        r.source = "s".into();
        r.ty = "t".into();
        r.time = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        r.content_type = Some("application/json".into());
        r.extensions
            .insert("traceparent".into(), "00-a-b-01".into());
        let names = |r: &Record| -> Vec<(String, String)> {
            r.attributes()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into_owned()))
                .collect()
        };
        let expected = |subject: Option<&str>| {
            let mut v = vec![
                ("specversion", "1.0"),
                ("id", "i"),
                ("source", "s"),
                ("type", "t"),
                ("time", "2026-12-01T10:00:00Z"),
            ];
            v.extend(subject.map(|s| ("subject", s)));
            v.push(("traceparent", "00-a-b-01"));
            v.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&r), expected(None), "no content type, no subject");
        r.subject = Some("orders".into());
        assert_eq!(names(&r), expected(Some("orders")));
    }
}
