//! The `rabbitmq` trigger: manual acks after delivery, `prefetch` as the in-flight bound, and a
//! reconnect loop of its own.
//!
//! Reconnecting is done here rather than by lapin's auto-recovery: a delivery's ack is bound to
//! the channel it came on, so after a reconnect an old ack can only fail (the broker then
//! redelivers the message) and never acknowledge a different message.

use crate::config::RabbitMqTriggerConfig;
use crate::settle::{self, Finished, Verdict};
use crate::{amqp_text, describe, field_table};
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::event::content_type_of;
use switchyard_sdk::event::{Event, TriggerEvent};
use switchyard_sdk::{Ack, BoxError, EventStatus, Trigger, TriggerContext};

impl RabbitMqTriggerConfig {
    /// Build the trigger.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        if self.queue.is_empty() {
            return Err(BuildError::invalid("queue", "must not be empty"));
        }
        if self.prefetch == 0 {
            return Err(BuildError::invalid("prefetch", "must be at least 1"));
        }
        let config = self.clone();
        cx.health.not_ready("connecting to rabbitmq");
        Ok(Trigger::task(Box::pin(run(config, cx))))
    }
}

impl RabbitMqTriggerConfig {
    /// `switchyard validate --connect`: open a connection and look the queue up (passively:
    /// nothing is declared or consumed).
    pub async fn probe(&self) -> Result<String, String> {
        let conn = crate::connect(self.url.expose(), ConnectionProperties::default())
            .await
            .map_err(|e| describe(&e))?;
        let looked_up = async {
            let ch = conn.create_channel().await?;
            ch.queue_declare(
                ShortString::from(self.queue.as_str()),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
        }
        .await;
        let _ = conn.close(200, ShortString::from("probe")).await;
        match looked_up {
            Ok(q) => Ok(format!(
                "queue {}: {} message(s), {} consumer(s)",
                self.queue,
                q.message_count(),
                q.consumer_count()
            )),
            Err(_) if self.declare.is_some() => Ok(format!(
                "connected; queue {} does not exist yet and is declared at start",
                self.queue
            )),
            Err(e) => Err(format!("queue {}: {}", self.queue, describe(&e))),
        }
    }
}

async fn connect(
    config: &RabbitMqTriggerConfig,
    pipeline: &str,
) -> Result<(Connection, Channel), lapin::Error> {
    let conn = crate::connect(
        config.url.expose(),
        ConnectionProperties::default()
            .with_connection_name(format!("switchyard-{pipeline}").into()),
    )
    .await?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    if let Some(d) = &config.declare {
        channel
            .queue_declare(
                ShortString::from(config.queue.as_str()),
                QueueDeclareOptions {
                    durable: d.durable,
                    ..QueueDeclareOptions::default()
                },
                field_table(&d.arguments),
            )
            .await?;
        for b in &d.bindings {
            channel
                .queue_bind(
                    ShortString::from(config.queue.as_str()),
                    ShortString::from(b.exchange.as_str()),
                    ShortString::from(b.routing_key.as_str()),
                    QueueBindOptions::default(),
                    field_table(&b.arguments),
                )
                .await?;
        }
    }
    Ok((conn, channel))
}

async fn run(config: RabbitMqTriggerConfig, cx: TriggerContext) -> Result<(), BoxError> {
    let pending = Arc::new(AtomicUsize::new(0));
    let mut backoff = Duration::from_millis(200);
    tokio::spawn(report_backlog(config.clone(), cx.clone()));
    'reconnect: loop {
        if cx.shutdown.is_cancelled() {
            break;
        }
        let (conn, channel) = match connect(&config, &cx.pipeline).await {
            Ok(c) => c,
            Err(e) => {
                cx.health.not_ready(format!("rabbitmq: {}", describe(&e)));
                tracing::warn!(pipeline = %cx.pipeline, error = %describe(&e), retry_in_ms = backoff.as_millis() as u64, "cannot connect to rabbitmq");
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let tag = format!("switchyard-{}-{}", cx.pipeline, std::process::id());
        let mut consumer = match channel
            .basic_consume(
                ShortString::from(config.queue.as_str()),
                ShortString::from(tag.as_str()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                cx.health.not_ready(format!("rabbitmq: {}", describe(&e)));
                tracing::warn!(pipeline = %cx.pipeline, queue = %config.queue, error = %describe(&e), "cannot consume");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        tracing::info!(pipeline = %cx.pipeline, queue = %config.queue, prefetch = config.prefetch, "consuming");
        // Acknowledgements of this channel's deliveries, batched (see `settle`).
        let settle = settle::spawn(pending.clone());
        cx.health.ready();
        backoff = Duration::from_millis(200);
        loop {
            let next = tokio::select! {
                _ = cx.shutdown.cancelled() => {
                    let _ = channel.basic_cancel(ShortString::from(tag.as_str()), BasicCancelOptions::default()).await;
                    // The acks go over this channel: keep it open until they are sent.
                    settled(&pending).await;
                    close(&conn).await;
                    break 'reconnect;
                }
                n = consumer.next() => n,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::warn!(pipeline = %cx.pipeline, error = %describe(&e), "rabbitmq connection lost; reconnecting (unacked messages are redelivered)");
                    cx.health.not_ready(format!("rabbitmq: {}", describe(&e)));
                    let _ = conn.close(0, ShortString::from("reconnecting")).await;
                    continue 'reconnect;
                }
                None => {
                    tracing::warn!(pipeline = %cx.pipeline, "rabbitmq consumer closed; reconnecting");
                    cx.health.not_ready("rabbitmq consumer closed");
                    let _ = conn.close(0, ShortString::from("reconnecting")).await;
                    continue 'reconnect;
                }
            };
            let event = to_event(&cx.pipeline, &config, &delivery);
            let (acker, tag) = (delivery.acker, delivery.delivery_tag);
            pending.fetch_add(1, Ordering::SeqCst);
            let (settle, p) = (settle.clone(), pending.clone());
            let ack = Ack::new(move |status: EventStatus| {
                let verdict = match status {
                    s if s.is_settled() => Verdict::Ack,
                    // Failed for good with no dead letter: the queue's DLX takes it.
                    EventStatus::Rejected { .. } => Verdict::Reject,
                    // Not finished: back to the queue for another try.
                    _ => Verdict::Requeue,
                };
                if settle
                    .send(Finished {
                        acker,
                        tag,
                        verdict,
                    })
                    .is_err()
                {
                    // The channel's settling task is gone: so is the channel, and the broker
                    // delivers the message again.
                    p.fetch_sub(1, Ordering::SeqCst);
                }
            });
            if cx.events.send(TriggerEvent::new(event, ack)).await.is_err() {
                settled(&pending).await;
                close(&conn).await;
                break 'reconnect;
            }
        }
    }
    settled(&pending).await;
    tracing::info!(pipeline = %cx.pipeline, "rabbitmq consumer closed");
    Ok(())
}

/// Close the connection after a drain; a broker that does not answer is not waited for.
async fn close(conn: &Connection) {
    let closing = conn.close(200, ShortString::from("draining"));
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
}

/// Wait until every delivered message is acked, rejected or nacked. Dropping the connection
/// or the channel before would close the channel and turn finished work into redeliveries.
async fn settled(pending: &AtomicUsize) {
    while pending.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn to_event(pipeline: &str, config: &RabbitMqTriggerConfig, d: &lapin::message::Delivery) -> Event {
    let queue = config.queue.as_str();
    let props = &d.properties;
    let id = match props.message_id() {
        Some(id) if !id.as_str().is_empty() => id.as_str().to_string(),
        _ => {
            // Stable across redeliveries: a hash of exchange, routing key and body.
            let mut h = Sha256::new();
            h.update(d.exchange.as_str().as_bytes());
            h.update([0]);
            h.update(d.routing_key.as_str().as_bytes());
            h.update([0]);
            h.update(&d.data);
            hex::encode(&h.finalize()[..16])
        }
    };
    let content_type = content_type_of(
        props
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_string()),
        config.content_type.as_ref(),
        &d.data,
    );
    let mut event = Event::new(
        id,
        Event::source_for(pipeline, "rabbitmq", queue),
        "switchyard.rabbitmq.message",
    )
    .with_data(d.data.clone(), content_type);
    if let Some(ts) = props.timestamp() {
        if let Some(t) = chrono::DateTime::from_timestamp(*ts as i64, 0) {
            event.time = t;
        }
    }
    let rk = d.routing_key.as_str().to_string();
    if !rk.is_empty() {
        event.subject = Some(rk.clone());
    }
    event.set_extension("rabbitmqroutingkey", rk.clone());
    event.set_extension("rabbitmqexchange", d.exchange.as_str());
    event.set_extension("rabbitmqredelivered", d.redelivered.to_string());
    if let Some(headers) = props.headers() {
        let mut m = serde_json::Map::new();
        for (k, v) in headers.inner() {
            let text = amqp_text(v);
            if let Some(attr) = k
                .as_str()
                .strip_prefix("cloudEvents:")
                .or_else(|| k.as_str().strip_prefix("cloudEvents_"))
            {
                if attr == "traceparent"
                    || !matches!(attr, "specversion" | "id" | "source" | "type" | "time")
                {
                    event.set_extension(attr, text.clone());
                }
            }
            m.insert(k.as_str().to_string(), text.into());
        }
        event.metadata.insert("Headers".into(), m.into());
    }
    event.partition = Some(queue.to_string());
    event.key = Some(rk);
    event
}

/// `switchyard_trigger_backlog`: the queue's ready message count, every 10 s.
async fn report_backlog(config: RabbitMqTriggerConfig, cx: TriggerContext) {
    let gauge = metrics::gauge!("switchyard_trigger_backlog", "pipeline" => cx.pipeline.clone());
    let mut conn: Option<(Connection, Channel)> = None;
    loop {
        tokio::select! {
            _ = cx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if conn.as_ref().is_none_or(|(c, _)| !c.status().connected()) {
            conn = async {
                let c = crate::connect(config.url.expose(), ConnectionProperties::default())
                    .await
                    .ok()?;
                let ch = c.create_channel().await.ok()?;
                Some((c, ch))
            }
            .await;
        }
        if let Some((_, ch)) = &conn {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match ch
                .queue_declare(
                    ShortString::from(config.queue.as_str()),
                    passive,
                    FieldTable::default(),
                )
                .await
            {
                Ok(q) => gauge.set(q.message_count() as f64),
                Err(_) => conn = None,
            }
        }
    }
    if let Some((c, _)) = conn {
        let _ = c.close(0, ShortString::from("bye")).await;
    }
}
