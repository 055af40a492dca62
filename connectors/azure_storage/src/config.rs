//! Config of the `azure_queue` and `azure_blob` triggers and outputs.

use schemars::JsonSchema;
use serde::Deserialize;
use switchyard_sdk::config::{ByteSize, Duration, MediaType, Secret};
use switchyard_sdk::Template;

/// How queue message text maps to event data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Message text is base64 of the data (the Azure Functions default).
    #[default]
    Base64,
    /// Message text is the data itself (UTF-8 text).
    None,
}

/// `type: azure_queue` trigger: poll a Storage queue; delete a message once delivered.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureQueueTriggerConfig {
    /// `AccountName=..;AccountKey=..`, a SAS connection string, or `UseDevelopmentStorage=true`.
    /// Never logged.
    pub connection_string: Secret,
    /// The queue.
    pub queue: String,
    /// Messages fetched per request (1 to 32); also the in-flight bound of this trigger
    /// together with the next batch fetched when half of it is done.
    #[serde(default = "default_batch_size")]
    pub batch_size: u8,
    /// How long a received message stays invisible to other consumers; extended while the
    /// function works on it.
    #[serde(default = "default_visibility")]
    pub visibility_timeout: Duration,
    /// Deliveries before a message moves to the poison queue.
    #[serde(default = "default_max_dequeue")]
    pub max_dequeue_count: u32,
    /// The longest wait between polls of an empty queue (the wait doubles from 100ms up to
    /// this, and drops back once messages arrive).
    #[serde(default = "default_max_polling")]
    pub max_polling_interval: Duration,
    /// How message text becomes data.
    #[serde(default)]
    pub encoding: Encoding,
    /// Where failed messages go; default `<queue>-poison`.
    #[serde(default)]
    pub poison_queue: Option<String>,
    /// Replaces the queue service endpoint of the connection string.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The content type of messages that carry none (e.g. `application/json`), given to the
    /// function as it is; unset, a message without one is checked: JSON data is sent as
    /// `application/json`, anything else as `application/octet-stream`. A message's own
    /// content type always wins.
    #[serde(default)]
    pub content_type: Option<MediaType>,
}

fn default_batch_size() -> u8 {
    16
}
fn default_visibility() -> Duration {
    Duration::from_secs(30)
}
fn default_max_dequeue() -> u32 {
    5
}
fn default_max_polling() -> Duration {
    Duration::from_secs(60)
}

impl AzureQueueTriggerConfig {
    /// The poison queue's name.
    pub fn poison_queue(&self) -> String {
        self.poison_queue
            .clone()
            .unwrap_or_else(|| format!("{}-poison", self.queue))
    }
}

/// `type: azure_queue` output: put one message per value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureQueueOutputConfig {
    /// The connection string. Never logged.
    pub connection_string: Secret,
    /// The queue; created on the first write when it does not exist.
    pub queue: String,
    /// How data becomes message text.
    #[serde(default)]
    pub encoding: Encoding,
    /// How long a message lives in the queue (default: the service's 7 days).
    #[serde(default)]
    pub time_to_live: Option<Duration>,
    /// Replaces the queue service endpoint of the connection string.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How long to wait for the service's answer.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `type: azure_blob` trigger: new and changed blobs, each version (name + ETag) delivered once
/// across restarts and instances.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobTriggerConfig {
    /// The connection string. Never logged.
    pub connection_string: Secret,
    /// The container to watch.
    pub container: String,
    /// Only blobs whose names start with this.
    #[serde(default)]
    pub prefix: String,
    /// Only blobs whose names (after `prefix`) match this pattern: literal text and `{name}`
    /// placeholders, each matching any text, e.g. `{name}.json`, `{year}/{name}.csv`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Blobs up to this size are the event data; larger ones send the blob URL only.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// The queue that receives the names of blobs whose delivery failed for good.
    #[serde(default = "default_poison")]
    pub poison_queue: String,
    /// The container that keeps receipts and the scan lease.
    #[serde(default = "default_receipts")]
    pub receipts_container: String,
    /// Time between scans.
    #[serde(default = "default_poll")]
    pub poll_interval: Duration,
    /// Blobs listed per request; a scan goes page by page with the continuation marker.
    #[serde(default = "default_page")]
    pub page_size: u32,
    /// Replaces the blob service endpoint of the connection string (the poison queue uses the
    /// connection string's queue endpoint).
    #[serde(default)]
    pub endpoint: Option<String>,
}

fn default_max_size() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_poison() -> String {
    "switchyard-blob-poison".into()
}
fn default_receipts() -> String {
    "switchyard-receipts".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(10)
}
fn default_page() -> u32 {
    1000
}

/// `type: azure_blob` output: write each value to a blob.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobOutputConfig {
    /// The connection string. Never logged.
    pub connection_string: Secret,
    /// The container; created on the first write when it does not exist.
    pub container: String,
    /// The blob name (a template, e.g. `results/{id}.json`). Values have `/` replaced by `_`.
    pub path: Template,
    /// The blob's content type (default: the value's, else `application/octet-stream`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Replace an existing blob; with `false` an existing blob makes the write fail for good.
    #[serde(default = "switchyard_sdk::config::yes")]
    pub overwrite: bool,
    /// Replaces the blob service endpoint of the connection string.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How long to wait for the service's answer.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

/// Storage naming rules for queues: 3-63 lower-case letters, digits and single dashes.
pub fn check_queue_name(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid queue name (3-63 lower-case letters, digits and single dashes)"
        ))
    }
}

/// Storage naming rules for containers (the same as queues, plus `$root`-style names aside).
pub fn check_container_name(name: &str) -> Result<(), String> {
    check_queue_name(name).map_err(|_| {
        format!("{name:?} is not a valid container name (3-63 lower-case letters, digits and single dashes)")
    })
}

/// Checks that need no I/O: (key, message) pairs.
pub fn check_queue_trigger(c: &AzureQueueTriggerConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Err(e) = crate::connection::Account::parse(c.connection_string.expose()) {
        out.push(("connection_string".into(), e.to_string()));
    }
    if let Err(e) = check_queue_name(&c.queue) {
        out.push(("queue".into(), e));
    }
    if let Err(e) = check_queue_name(&c.poison_queue()) {
        out.push(("poison_queue".into(), e));
    }
    if !(1..=32).contains(&c.batch_size) {
        out.push(("batch_size".into(), "must be 1 to 32".into()));
    }
    let v = c.visibility_timeout.get();
    if v < std::time::Duration::from_secs(1) || v > std::time::Duration::from_secs(7 * 86400) {
        out.push((
            "visibility_timeout".into(),
            "must be 1s to 7 days (the service's range)".into(),
        ));
    }
    if c.max_dequeue_count == 0 {
        out.push(("max_dequeue_count".into(), "must be at least 1".into()));
    }
    out
}

/// Checks that need no I/O for the queue output.
pub fn check_queue_output(c: &AzureQueueOutputConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Err(e) = crate::connection::Account::parse(c.connection_string.expose()) {
        out.push(("connection_string".into(), e.to_string()));
    }
    if let Err(e) = check_queue_name(&c.queue) {
        out.push(("queue".into(), e));
    }
    out
}

/// Checks that need no I/O for the blob trigger.
pub fn check_blob_trigger(c: &AzureBlobTriggerConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Err(e) = crate::connection::Account::parse(c.connection_string.expose()) {
        out.push(("connection_string".into(), e.to_string()));
    }
    if let Err(e) = check_container_name(&c.container) {
        out.push(("container".into(), e));
    }
    if let Err(e) = check_container_name(&c.receipts_container) {
        out.push(("receipts_container".into(), e));
    }
    if let Err(e) = check_queue_name(&c.poison_queue) {
        out.push(("poison_queue".into(), e));
    }
    if !(1..=5000).contains(&c.page_size) {
        out.push(("page_size".into(), "must be 1 to 5000".into()));
    }
    out
}

/// Checks that need no I/O for the blob output.
pub fn check_blob_output(c: &AzureBlobOutputConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Err(e) = crate::connection::Account::parse(c.connection_string.expose()) {
        out.push(("connection_string".into(), e.to_string()));
    }
    if let Err(e) = check_container_name(&c.container) {
        out.push(("container".into(), e));
    }
    out
}
