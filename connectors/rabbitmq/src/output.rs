//! The `rabbitmq` output: persistent messages, publisher confirms awaited; a nack, a return
//! (unroutable with `mandatory`) or a timeout is a failed write.

use crate::config::RabbitMqOutputConfig;
use crate::{describe, MAX_SHORT};
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sha2::{Digest, Sha256};
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

/// The record id as an AMQP message-id. An id that fits is used as it is. A longer one (a blob
/// name may have 1,024 characters) becomes its first bytes, `#`, and the SHA-256 of the whole id
/// in hex: still one message-id per id, still readable. The whole id is in `cloudEvents:id`.
fn message_id(id: &str) -> ShortString {
    if let Ok(s) = ShortString::try_new(id) {
        return s;
    }
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    let mut cut = MAX_SHORT - 1 - digest.len();
    while !id.is_char_boundary(cut) {
        cut -= 1;
    }
    ShortString::from(format!("{}#{digest}", &id[..cut]))
}

/// The message properties for a record: persistent, the CloudEvents AMQP binding's
/// `cloudEvents:*` application properties (with `attributes`), message-id and timestamp. A
/// content type too long for the property travels as `cloudEvents:datacontenttype`; an
/// extension whose name makes a header name too long is left out.
fn properties(record: &Record, attributes: bool) -> BasicProperties {
    let mut headers = FieldTable::default();
    let content_type = record
        .content_type
        .as_deref()
        .map(|ct| (ct, ShortString::try_new(ct).ok()));
    let mut attrs = if attributes {
        record.attributes()
    } else {
        Vec::new()
    };
    if let Some((ct, None)) = content_type {
        attrs.push(("datacontenttype", ct.into()));
    }
    for (k, v) in attrs {
        if let Ok(name) = ShortString::try_new(format!("cloudEvents:{k}")) {
            headers.insert(name, AMQPValue::LongString(LongString::from(v.as_ref())));
        }
    }
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(message_id(&record.id))
        .with_timestamp(record.time.timestamp().max(0) as u64)
        .with_headers(headers);
    match content_type {
        Some((_, Some(ct))) => props.with_content_type(ct),
        _ => props,
    }
}

#[async_trait]
impl Output for RabbitMqOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let routing_key = self.config.routing_key.render(record);
        let len = routing_key.len();
        let routing_key = ShortString::try_new(routing_key).map_err(|_| {
            OutputError::Invalid(format!(
                "the routing key is {len} bytes; AMQP allows at most {MAX_SHORT}"
            ))
        })?;
        let props = properties(record, self.config.attributes);
        let ch = self.channel().await?;
        let publish = async {
            let confirm = ch
                .basic_publish(
                    ShortString::from(self.config.exchange.as_str()),
                    routing_key,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(p: &BasicProperties, k: &str) -> Option<String> {
        match p.headers().as_ref()?.inner().get(k)? {
            AMQPValue::LongString(s) => Some(String::from_utf8(s.as_bytes().to_vec()).unwrap()),
            other => panic!("{k} is {other:?}"),
        }
    }

    #[test]
    fn an_id_that_fits_is_the_message_id_as_it_is() {
        let id = "a".repeat(MAX_SHORT);
        assert_eq!(message_id(&id).as_str(), id);
        assert_eq!(message_id("orders/0/17").as_str(), "orders/0/17");
    }

    #[test]
    fn a_longer_id_is_cut_at_a_character_and_ends_in_its_digest() {
        // 'é' is two bytes: the cut must not split one.
        let id = format!("in/{}.json@0x8D", "é".repeat(200));
        let m = message_id(&id);
        assert!(m.as_str().len() <= MAX_SHORT, "{} bytes", m.as_str().len());
        let (head, digest) = m.as_str().rsplit_once('#').unwrap();
        assert!(id.starts_with(head) && head.starts_with("in/é"));
        assert_eq!(digest, hex::encode(Sha256::digest(id.as_bytes())));
        // Two ids alike in their first bytes still get two message-ids.
        let other = format!("{id}x");
        assert_ne!(message_id(&other), m);
        assert_eq!(message_id(&id), m, "the same id, the same message-id");
    }

    #[test]
    fn properties_carry_the_whole_id_and_a_long_content_type_as_headers() {
        let mut r = Record::new("p", bytes::Bytes::from_static(b"{}"));
        r.id = "x".repeat(400);
        r.source = "/switchyard/p".into();
        r.ty = "t".into();
        r.content_type = Some(format!("application/json; profile={}", "y".repeat(300)));
        r.extensions
            .insert("traceparent".into(), "00-ab-cd-01".into());
        r.extensions.insert("z".repeat(300), "dropped".into());
        let p = properties(&r, true);
        assert_eq!(header(&p, "cloudEvents:id").unwrap(), r.id);
        assert!(p.message_id().as_ref().unwrap().as_str().len() <= MAX_SHORT);
        assert_eq!(p.content_type(), &None);
        assert_eq!(
            header(&p, "cloudEvents:datacontenttype").as_deref(),
            r.content_type.as_deref()
        );
        assert_eq!(
            header(&p, "cloudEvents:traceparent").as_deref(),
            Some("00-ab-cd-01")
        );
        assert_eq!(p.headers().as_ref().unwrap().inner().len(), 7);

        r.content_type = Some("application/json".into());
        let p = properties(&r, true);
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(header(&p, "cloudEvents:datacontenttype"), None);

        // Without attributes: no `cloudEvents:*` header; the properties stay.
        let p = properties(&r, false);
        assert_eq!(p.headers().as_ref().unwrap().inner().len(), 0);
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(p.delivery_mode(), &Some(2));
        assert!(p.message_id().is_some());
    }
}
