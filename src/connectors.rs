//! The one place connectors are registered: a `type`-tagged enum for triggers and one for
//! outputs, one variant per connector, each behind the cargo feature named after it.

use crate::config::{tagged, Ordering};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::{Output, Trigger, TriggerContext};

// Every connector has a trigger: without one, no pipeline could start.
#[cfg(not(any(
    feature = "http",
    feature = "timer",
    feature = "local",
    feature = "kafka",
    feature = "eventhubs",
    feature = "rabbitmq",
    feature = "nats",
    feature = "slack",
    feature = "azure_queue",
    feature = "azure_blob"
)))]
compile_error!("switchyard needs at least one connector feature (see README, Sizing)");

/// Where a pipeline's events come from.
// `Deserialize` is written out below: serde's derive for internally tagged enums loses the key
// path and position of errors inside the variant.
#[derive(Debug, Clone, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerConfig {
    /// Requests on the ingress server.
    #[cfg(feature = "http")]
    Http(switchyard_http::HttpTriggerConfig),
    /// A six-field NCRONTAB schedule.
    #[cfg(feature = "timer")]
    Timer(switchyard_timer::TimerTriggerConfig),
    /// New files in a local directory.
    #[cfg(feature = "local")]
    Directory(switchyard_local::DirectoryTriggerConfig),
    /// A Kafka consumer group over topics.
    #[cfg(feature = "kafka")]
    Kafka(switchyard_kafka::KafkaTriggerConfig),
    /// Azure Event Hubs through its Kafka endpoint.
    #[cfg(feature = "eventhubs")]
    Eventhubs(switchyard_kafka::EventHubsTriggerConfig),
    /// A RabbitMQ queue, manual acks.
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(switchyard_rabbitmq::RabbitMqTriggerConfig),
    /// A NATS core subject (at most once) or a JetStream durable (at least once).
    #[cfg(feature = "nats")]
    Nats(switchyard_nats::NatsTriggerConfig),
    /// Slack's Events API, slash commands and interactivity on the ingress server.
    #[cfg(feature = "slack")]
    Slack(switchyard_slack::SlackTriggerConfig),
    /// An Azure Storage queue, polled; messages deleted once delivered.
    #[cfg(feature = "azure_queue")]
    AzureQueue(switchyard_azure_storage::AzureQueueTriggerConfig),
    /// New and changed blobs in an Azure Storage container, each version once.
    #[cfg(feature = "azure_blob")]
    AzureBlob(switchyard_azure_storage::AzureBlobTriggerConfig),
}

/// Where a function's return values (or dead letters) go.
#[derive(Debug, Clone, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputConfig {
    /// POST to a URL.
    #[cfg(feature = "http")]
    Http(switchyard_http::HttpOutputConfig),
    /// One file per value.
    #[cfg(feature = "local")]
    Directory(switchyard_local::DirectoryOutputConfig),
    /// One JSON line per value on standard output.
    #[cfg(feature = "local")]
    Stdout(switchyard_local::StdoutOutputConfig),
    /// Produce to a Kafka topic.
    #[cfg(feature = "kafka")]
    Kafka(switchyard_kafka::KafkaOutputConfig),
    /// Send to an Azure event hub.
    #[cfg(feature = "eventhubs")]
    Eventhubs(switchyard_kafka::EventHubsOutputConfig),
    /// Publish to a RabbitMQ exchange with publisher confirms.
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(switchyard_rabbitmq::RabbitMqOutputConfig),
    /// Publish to NATS, or to JetStream awaiting the PubAck.
    #[cfg(feature = "nats")]
    Nats(switchyard_nats::NatsOutputConfig),
    /// Post a Slack message (`chat.postMessage` or an incoming webhook).
    #[cfg(feature = "slack")]
    Slack(switchyard_slack::SlackOutputConfig),
    /// Put a message on an Azure Storage queue.
    #[cfg(feature = "azure_queue")]
    AzureQueue(switchyard_azure_storage::AzureQueueOutputConfig),
    /// Write a blob to an Azure Storage container.
    #[cfg(feature = "azure_blob")]
    AzureBlob(switchyard_azure_storage::AzureBlobOutputConfig),
}

/// The trigger types this build has.
pub const TRIGGER_TYPES: &[&str] = &[
    #[cfg(feature = "http")]
    "http",
    #[cfg(feature = "timer")]
    "timer",
    #[cfg(feature = "local")]
    "directory",
    #[cfg(feature = "kafka")]
    "kafka",
    #[cfg(feature = "eventhubs")]
    "eventhubs",
    #[cfg(feature = "rabbitmq")]
    "rabbitmq",
    #[cfg(feature = "nats")]
    "nats",
    #[cfg(feature = "slack")]
    "slack",
    #[cfg(feature = "azure_queue")]
    "azure_queue",
    #[cfg(feature = "azure_blob")]
    "azure_blob",
];

/// The output types this build has.
pub const OUTPUT_TYPES: &[&str] = &[
    #[cfg(feature = "http")]
    "http",
    #[cfg(feature = "local")]
    "directory",
    #[cfg(feature = "local")]
    "stdout",
    #[cfg(feature = "kafka")]
    "kafka",
    #[cfg(feature = "eventhubs")]
    "eventhubs",
    #[cfg(feature = "rabbitmq")]
    "rabbitmq",
    #[cfg(feature = "nats")]
    "nats",
    #[cfg(feature = "slack")]
    "slack",
    #[cfg(feature = "azure_queue")]
    "azure_queue",
    #[cfg(feature = "azure_blob")]
    "azure_blob",
];

impl<'de> Deserialize<'de> for TriggerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (ty, rest) = tagged::split_type(serde_json::Value::deserialize(d)?, TRIGGER_TYPES)?;
        match ty.as_str() {
            #[cfg(feature = "http")]
            "http" => tagged::from_value(rest).map(Self::Http),
            #[cfg(feature = "timer")]
            "timer" => tagged::from_value(rest).map(Self::Timer),
            #[cfg(feature = "local")]
            "directory" => tagged::from_value(rest).map(Self::Directory),
            #[cfg(feature = "kafka")]
            "kafka" => tagged::from_value(rest).map(Self::Kafka),
            #[cfg(feature = "eventhubs")]
            "eventhubs" => tagged::from_value(rest).map(Self::Eventhubs),
            #[cfg(feature = "rabbitmq")]
            "rabbitmq" => tagged::from_value(rest).map(Self::Rabbitmq),
            #[cfg(feature = "nats")]
            "nats" => tagged::from_value(rest).map(Self::Nats),
            #[cfg(feature = "slack")]
            "slack" => tagged::from_value(rest).map(Self::Slack),
            #[cfg(feature = "azure_queue")]
            "azure_queue" => tagged::from_value(rest).map(Self::AzureQueue),
            #[cfg(feature = "azure_blob")]
            "azure_blob" => tagged::from_value(rest).map(Self::AzureBlob),
            _ => unreachable!("split_type checked the type"),
        }
    }
}

impl<'de> Deserialize<'de> for OutputConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `rest` is unread only in a build without any output connector.
        #[cfg_attr(not(feature = "_outputs"), allow(unused_variables))]
        let (ty, rest) = tagged::split_type(serde_json::Value::deserialize(d)?, OUTPUT_TYPES)?;
        match ty.as_str() {
            #[cfg(feature = "http")]
            "http" => tagged::from_value(rest).map(Self::Http),
            #[cfg(feature = "local")]
            "directory" => tagged::from_value(rest).map(Self::Directory),
            #[cfg(feature = "local")]
            "stdout" => tagged::from_value(rest).map(Self::Stdout),
            #[cfg(feature = "kafka")]
            "kafka" => tagged::from_value(rest).map(Self::Kafka),
            #[cfg(feature = "eventhubs")]
            "eventhubs" => tagged::from_value(rest).map(Self::Eventhubs),
            #[cfg(feature = "rabbitmq")]
            "rabbitmq" => tagged::from_value(rest).map(Self::Rabbitmq),
            #[cfg(feature = "nats")]
            "nats" => tagged::from_value(rest).map(Self::Nats),
            #[cfg(feature = "slack")]
            "slack" => tagged::from_value(rest).map(Self::Slack),
            #[cfg(feature = "azure_queue")]
            "azure_queue" => tagged::from_value(rest).map(Self::AzureQueue),
            #[cfg(feature = "azure_blob")]
            "azure_blob" => tagged::from_value(rest).map(Self::AzureBlob),
            _ => unreachable!("split_type checked the type"),
        }
    }
}

impl TriggerConfig {
    /// The `type` as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            #[cfg(feature = "http")]
            Self::Http(_) => "http",
            #[cfg(feature = "timer")]
            Self::Timer(_) => "timer",
            #[cfg(feature = "local")]
            Self::Directory(_) => "directory",
            #[cfg(feature = "kafka")]
            Self::Kafka(_) => "kafka",
            #[cfg(feature = "eventhubs")]
            Self::Eventhubs(_) => "eventhubs",
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(_) => "rabbitmq",
            #[cfg(feature = "nats")]
            Self::Nats(_) => "nats",
            #[cfg(feature = "slack")]
            Self::Slack(_) => "slack",
            #[cfg(feature = "azure_queue")]
            Self::AzureQueue(_) => "azure_queue",
            #[cfg(feature = "azure_blob")]
            Self::AzureBlob(_) => "azure_blob",
        }
    }

    /// The ordering used when the pipeline does not say: per partition for partitioned logs.
    pub fn default_ordering(&self) -> Ordering {
        match self {
            #[cfg(feature = "kafka")]
            Self::Kafka(_) => Ordering::Partition,
            #[cfg(feature = "eventhubs")]
            Self::Eventhubs(_) => Ordering::Partition,
            #[allow(unreachable_patterns)]
            _ => Ordering::None,
        }
    }

    /// The most deliveries the broker hands out unacknowledged, where the trigger sets such a
    /// bound (RabbitMQ's `prefetch`): the pipeline never holds more events than this.
    pub fn unacked_limit(&self) -> Option<usize> {
        match self {
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(r) => Some(usize::from(r.prefetch)),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The path the trigger serves on the ingress server, if it does.
    pub fn ingress_path(&self) -> Option<&str> {
        match self {
            #[cfg(feature = "http")]
            Self::Http(h) => Some(&h.path),
            #[cfg(feature = "slack")]
            Self::Slack(s) => Some(&s.path),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Checks that need no I/O, for `switchyard validate`: (key, message) pairs.
    pub fn check(&self) -> Vec<(String, String)> {
        match self {
            #[cfg(feature = "timer")]
            Self::Timer(t) => switchyard_timer::parse_schedule(&t.schedule)
                .err()
                .map(|m| ("schedule".to_string(), m))
                .into_iter()
                .collect(),
            #[cfg(feature = "http")]
            Self::Http(h) if !h.path.starts_with('/') => {
                vec![("path".into(), "must start with '/'".into())]
            }
            #[cfg(feature = "kafka")]
            Self::Kafka(k) => switchyard_kafka::config::check_trigger(k),
            #[cfg(feature = "eventhubs")]
            Self::Eventhubs(e) => e.check(),
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(r) => switchyard_rabbitmq::config::check_trigger(r),
            #[cfg(feature = "nats")]
            Self::Nats(n) => switchyard_nats::config::check_trigger(n),
            #[cfg(feature = "slack")]
            Self::Slack(s) if !s.path.starts_with('/') => {
                vec![("path".into(), "must start with '/'".into())]
            }
            #[cfg(feature = "azure_queue")]
            Self::AzureQueue(q) => switchyard_azure_storage::config::check_queue_trigger(q),
            #[cfg(feature = "azure_blob")]
            Self::AzureBlob(b) => switchyard_azure_storage::config::check_blob_trigger(b),
            #[allow(unreachable_patterns)]
            _ => Vec::new(),
        }
    }

    /// Build the trigger.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        match self {
            #[cfg(feature = "http")]
            Self::Http(c) => c.build(cx),
            #[cfg(feature = "timer")]
            Self::Timer(c) => c.build(cx),
            #[cfg(feature = "local")]
            Self::Directory(c) => c.build(cx),
            #[cfg(feature = "kafka")]
            Self::Kafka(c) => c.build(cx),
            #[cfg(feature = "eventhubs")]
            Self::Eventhubs(c) => c.build(cx),
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(c) => c.build(cx),
            #[cfg(feature = "nats")]
            Self::Nats(c) => c.build(cx),
            #[cfg(feature = "slack")]
            Self::Slack(c) => c.build(cx),
            #[cfg(feature = "azure_queue")]
            Self::AzureQueue(c) => c.build(cx),
            #[cfg(feature = "azure_blob")]
            Self::AzureBlob(c) => c.build(cx),
        }
    }
}

impl OutputConfig {
    /// The `type` as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            #[cfg(feature = "http")]
            Self::Http(_) => "http",
            #[cfg(feature = "local")]
            Self::Directory(_) => "directory",
            #[cfg(feature = "local")]
            Self::Stdout(_) => "stdout",
            #[cfg(feature = "kafka")]
            Self::Kafka(_) => "kafka",
            #[cfg(feature = "eventhubs")]
            Self::Eventhubs(_) => "eventhubs",
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(_) => "rabbitmq",
            #[cfg(feature = "nats")]
            Self::Nats(_) => "nats",
            #[cfg(feature = "slack")]
            Self::Slack(_) => "slack",
            #[cfg(feature = "azure_queue")]
            Self::AzureQueue(_) => "azure_queue",
            #[cfg(feature = "azure_blob")]
            Self::AzureBlob(_) => "azure_blob",
            // Only a build whose one connector is the timer has no output variant.
            #[cfg(not(feature = "_outputs"))]
            _ => unreachable!("no output connector is built"),
        }
    }

    /// Checks that need no I/O: (key, message) pairs.
    pub fn check(&self) -> Vec<(String, String)> {
        match self {
            #[cfg(feature = "http")]
            Self::Http(h) => match reqwest::Url::parse(&h.url) {
                Ok(_) => Vec::new(),
                Err(e) => vec![("url".into(), format!("invalid URL: {e}"))],
            },
            #[cfg(feature = "kafka")]
            Self::Kafka(k) if k.brokers.is_empty() => {
                vec![("brokers".into(), "give at least one broker".into())]
            }
            #[cfg(feature = "eventhubs")]
            Self::Eventhubs(e) => e.check(),
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(r) => switchyard_rabbitmq::config::check_output(r),
            #[cfg(feature = "slack")]
            Self::Slack(s) => switchyard_slack::config::check_output(s),
            #[cfg(feature = "azure_queue")]
            Self::AzureQueue(q) => switchyard_azure_storage::config::check_queue_output(q),
            #[cfg(feature = "azure_blob")]
            Self::AzureBlob(b) => switchyard_azure_storage::config::check_blob_output(b),
            #[allow(unreachable_patterns)]
            _ => Vec::new(),
        }
    }

    /// Build the output.
    // Without any output connector built, the match below has no arm that returns.
    #[cfg_attr(not(feature = "_outputs"), allow(unreachable_code))]
    pub async fn build(&self) -> Result<Arc<dyn Output>, BuildError> {
        Ok(match self {
            #[cfg(feature = "http")]
            Self::Http(c) => Arc::new(c.build()?),
            #[cfg(feature = "local")]
            Self::Directory(c) => Arc::new(c.build()?),
            #[cfg(feature = "local")]
            Self::Stdout(c) => Arc::new(c.build()),
            #[cfg(feature = "kafka")]
            Self::Kafka(c) => Arc::new(c.build()?),
            #[cfg(feature = "eventhubs")]
            Self::Eventhubs(c) => Arc::new(c.build()?),
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(c) => Arc::new(c.build()?),
            #[cfg(feature = "nats")]
            Self::Nats(c) => Arc::new(c.build()?),
            #[cfg(feature = "slack")]
            Self::Slack(c) => Arc::new(c.build()?),
            #[cfg(feature = "azure_queue")]
            Self::AzureQueue(c) => Arc::new(c.build()?),
            #[cfg(feature = "azure_blob")]
            Self::AzureBlob(c) => Arc::new(c.build()?),
            // Only a build whose one connector is the timer has no output variant.
            #[cfg(not(feature = "_outputs"))]
            _ => unreachable!("no output connector is built"),
        })
    }
}

impl TriggerConfig {
    /// `switchyard validate --connect`: reach what the trigger reads from, without consuming;
    /// `Ok` describes what was found, `Err` says why it cannot be reached.
    pub async fn probe(&self) -> Result<String, String> {
        match self {
            #[cfg(feature = "http")]
            Self::Http(h) => Ok(format!("served on the ingress at {}", h.path)),
            #[cfg(feature = "slack")]
            Self::Slack(s) => Ok(format!("served on the ingress at {}", s.path)),
            #[cfg(feature = "timer")]
            Self::Timer(_) => Ok("a schedule: nothing to connect to".into()),
            #[cfg(feature = "local")]
            Self::Directory(d) => match std::fs::read_dir(&d.path) {
                Ok(_) => Ok(format!("folder {} readable", d.path.display())),
                Err(e) => Err(format!("folder {}: {e}", d.path.display())),
            },
            #[cfg(feature = "kafka")]
            Self::Kafka(k) => k.probe().await,
            #[cfg(feature = "eventhubs")]
            Self::Eventhubs(e) => e.probe().await,
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(r) => r.probe().await,
            #[cfg(feature = "nats")]
            Self::Nats(n) => n.probe().await,
            #[cfg(feature = "azure_queue")]
            Self::AzureQueue(q) => q.probe().await,
            #[cfg(feature = "azure_blob")]
            Self::AzureBlob(b) => b.probe().await,
        }
    }
}

impl OutputConfig {
    /// `switchyard validate --connect`: connect the output as the gateway would and run its
    /// health check; HTTP endpoints (http, slack) get a TCP connection to their host.
    pub async fn probe(&self) -> Result<String, String> {
        match self {
            #[cfg(feature = "http")]
            Self::Http(h) => crate::probe::tcp_to_url(&h.url).await,
            #[cfg(feature = "slack")]
            Self::Slack(s) => match &s.webhook_url {
                Some(w) => crate::probe::tcp_to_url(w.expose()).await,
                None => crate::probe::tcp_to_url(&s.endpoint).await,
            },
            #[cfg(feature = "local")]
            Self::Directory(_) | Self::Stdout(_) => Ok("local: nothing to connect to".into()),
            #[allow(unreachable_patterns)]
            _ => {
                let output = self.build().await.map_err(|e| e.to_string())?;
                output
                    .healthcheck()
                    .await
                    .map(|()| "connected".to_string())
                    .map_err(|e| e.to_string())
            }
        }
    }
}
