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
