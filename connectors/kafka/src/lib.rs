//! The `kafka` and `eventhubs` connectors (rdkafka, tokio integration).
//!
//! - Trigger: a consumer group over topics. Offsets are stored only up to the contiguous
//!   watermark of delivered events per partition and committed by librdkafka periodically, on
//!   revocation and on shutdown; a rebalance never commits past an event in flight.
//! - Output: an idempotent producer (`acks=all`) whose write counts once the delivery report
//!   arrives.
//! - Event Hubs: the same, through the Event Hubs Kafka endpoint (Standard tier and above).

pub mod config;
pub mod eventhubs;
mod headers;
mod offsets;
pub mod output;
pub mod trigger;

pub use config::{KafkaOutputConfig, KafkaTriggerConfig, Start};
pub use eventhubs::{EventHubsOutputConfig, EventHubsTriggerConfig};
