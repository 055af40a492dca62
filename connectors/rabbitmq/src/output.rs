//! The `rabbitmq` output: persistent messages, publisher confirms awaited; a nack, a return
//! (unroutable with `mandatory`) or a timeout is a failed write.

use crate::config::RabbitMqOutputConfig;
use crate::describe;
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::{Output, Record};
use tokio::sync::Mutex;

/// Publishes values; reconnects on the next write after a failure.
pub struct RabbitMqOutput {
    config: RabbitMqOutputConfig,
    conn: Mutex<Option<(Connection, Channel)>>,
}

impl RabbitMqOutputConfig {
    /// Build the output (it connects on first use).
    pub fn build(&self) -> Result<RabbitMqOutput, BuildError> {
        Ok(RabbitMqOutput {
            config: self.clone(),
            conn: Mutex::new(None),
        })
    }
}

fn connect_err(e: lapin::Error) -> OutputError {
    OutputError::Connect {
        source: describe(&e).into(),
    }
}

impl RabbitMqOutput {
    async fn channel(&self) -> Result<Channel, OutputError> {
        let mut guard = self.conn.lock().await;
        if let Some((c, ch)) = guard.as_ref() {
            if c.status().connected() && ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        let conn = crate::connect(self.config.url.expose(), ConnectionProperties::default())
            .await
            .map_err(connect_err)?;
        let ch = conn.create_channel().await.map_err(connect_err)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(connect_err)?;
        *guard = Some((conn, ch.clone()));
        Ok(ch)
    }
}

#[async_trait]
impl Output for RabbitMqOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let ch = self.channel().await?;
        let routing_key = self.config.routing_key.render(record);
        let mut headers = FieldTable::default();
        let time = record
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let mut attrs = vec![
            ("specversion", "1.0"),
            ("id", record.id.as_str()),
            ("source", record.source.as_str()),
            ("type", record.ty.as_str()),
            ("time", time.as_str()),
        ];
        if let Some(s) = &record.subject {
            attrs.push(("subject", s));
        }
        for (k, v) in &record.extensions {
            attrs.push((k, v));
        }
        for (k, v) in attrs {
            headers.insert(
                ShortString::from(format!("cloudEvents:{k}")),
                AMQPValue::LongString(LongString::from(v)),
            );
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(record.id.as_str()))
            .with_timestamp(record.time.timestamp().max(0) as u64)
            .with_headers(headers);
        if let Some(ct) = &record.content_type {
            props = props.with_content_type(ShortString::from(ct.as_str()));
        }
        let publish = async {
            let confirm = ch
                .basic_publish(
                    ShortString::from(self.config.exchange.as_str()),
                    ShortString::from(routing_key.as_str()),
                    BasicPublishOptions {
                        mandatory: self.config.mandatory,
                        ..Default::default()
                    },
                    &record.data,
                    props,
                )
                .await
                .map_err(connect_err)?;
            match confirm.await.map_err(connect_err)? {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                Confirmation::Ack(Some(returned)) => Err(OutputError::Status {
                    status: returned.reply_code,
                    message: format!("unroutable: {}", returned.reply_text.as_str()),
                    retry_after: None,
                }),
                Confirmation::Nack(_) => Err(OutputError::Status {
                    status: 500,
                    message: "the broker refused the message (nack)".into(),
                    retry_after: None,
                }),
            }
        };
        match tokio::time::timeout(self.config.timeout.get(), publish).await {
            Ok(r) => r,
            Err(_) => {
                *self.conn.lock().await = None;
                Err(OutputError::Connect {
                    source: "no publisher confirm within the timeout".into(),
                })
            }
        }
    }

    async fn healthcheck(&self) -> Result<(), OutputError> {
        self.channel().await.map(|_| ())
    }
}
