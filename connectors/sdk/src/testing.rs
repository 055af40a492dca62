//! Helpers for connector and engine tests (feature `testing`).

use crate::error::OutputError;
use crate::output::{Output, Record};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};

/// An output that keeps what it was given, for unit tests of the engine.
#[derive(Clone, Default)]
pub struct CollectOutput {
    records: Arc<Mutex<Vec<Record>>>,
}

impl CollectOutput {
    /// The records written so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }
}

#[async_trait]
impl Output for CollectOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        self.records.lock().unwrap().push(record.clone());
        Ok(())
    }
}
