//! The `kafka` output: an idempotent producer; a write counts once its delivery report arrives.

use crate::config::KafkaOutputConfig;
use crate::headers::headers_for;
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::time::Duration;
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::{Output, Record, Template};

/// Produces values to a topic.
pub struct KafkaOutput {
    producer: FutureProducer,
    topic: Template,
    key: Option<Template>,
    timeout: Duration,
    /// Send the CloudEvents attributes as `ce_*` headers.
    attributes: bool,
}

impl KafkaOutputConfig {
    /// The librdkafka producer properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","));
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }

    /// Build the output.
    pub fn build(&self) -> Result<KafkaOutput, BuildError> {
        if self.brokers.is_empty() {
            return Err(BuildError::invalid("brokers", "give at least one broker"));
        }
        build_producer(
            self.client_config(),
            self.topic.clone(),
            self.key.clone(),
            self.timeout.get(),
            self.attributes,
        )
    }
}

/// A producer with the settings at-least-once needs (shared with `eventhubs`).
pub(crate) fn build_producer(
    mut config: ClientConfig,
    topic: Template,
    key: Option<Template>,
    timeout: Duration,
    attributes: bool,
) -> Result<KafkaOutput, BuildError> {
    config
        // Every in-sync replica has the record before the delivery report says so.
        .set("acks", "all")
        // Retries inside librdkafka never duplicate or reorder records.
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            timeout.as_millis().max(1000).to_string(),
        );
    if config.get("linger.ms").is_none() {
        // Let the writes of concurrent deliveries share a produce request. With 0, each
        // record went in a request of its own: on a 64-wide pipeline that cost the gateway
        // and the broker about 40% more CPU per record and halved throughput, while 1 ms
        // added nothing measurable to the latency (docs/benchmarks.md, 2026-12-01). Much
        // longer lingers cap throughput at (in-flight writes ÷ linger), since every write
        // is awaited.
        config.set("linger.ms", "1");
    }
    if config.get("socket.nagle.disable").is_none() {
        // Small requests must not wait for the previous one's ACK (Nagle + delayed ACK).
        config.set("socket.nagle.disable", "true");
    }
    let producer: FutureProducer = config.create().map_err(|e| BuildError::Other {
        context: "creating the kafka producer".into(),
        source: Box::new(e),
    })?;
    Ok(KafkaOutput {
        producer,
        topic,
        key,
        timeout,
        attributes,
    })
}

/// A rendered topic the Kafka protocol cannot name: an invalid write, not a retry. The length
/// limit (249) is left to the broker, whose `INVALID_TOPIC_EXCEPTION` maps the same way, since
/// Event Hubs names may be longer.
fn check_topic(topic: &str) -> Result<(), OutputError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || topic == "." || topic == ".." || !topic.chars().all(legal) {
        return Err(OutputError::Invalid(format!(
            "{topic:?} is not a Kafka topic name (letters, digits, '.', '_' and '-')"
        )));
    }
    Ok(())
}

/// A failed produce: the record itself is refused (too large, a topic the broker calls
/// invalid) or something that may pass (connection, timeout, leader change).
fn write_error(e: KafkaError) -> OutputError {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match e.rdkafka_error_code() {
        Some(
            Code::MessageSizeTooLarge
            | Code::InvalidMessageSize
            | Code::MessageBatchTooLarge
            | Code::InvalidTopic
            | Code::InvalidMessage,
        ) => OutputError::Invalid(format!("kafka refused the record: {e}")),
        _ => OutputError::Connect {
            source: Box::new(e),
        },
    }
}

#[async_trait]
impl Output for KafkaOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let topic = self.topic.render(record);
        check_topic(&topic)?;
        let key = self.key.as_ref().map(|k| k.render(record));
        let mut fr = FutureRecord::to(&topic)
            .payload(&record.data[..])
            .headers(headers_for(record, self.attributes));
        if let Some(k) = &key {
            fr = fr.key(k.as_str());
        }
        match self.producer.send(fr, Timeout::After(self.timeout)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(write_error(e)),
        }
    }

    async fn healthcheck(&self) -> Result<(), OutputError> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            p.client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| ())
        })
        .await
        .map_err(|e| OutputError::Connect {
            source: Box::new(e),
        })?
        .map_err(|e| OutputError::Connect {
            source: Box::new(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for ok in ["orders", "a.b_c-D9", &"t".repeat(300)] {
            assert!(check_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "two words", "a/b", "café", "line\nbreak"] {
            let e = check_topic(bad).unwrap_err();
            assert!(!e.is_retryable(), "{bad}");
        }
    }
}
