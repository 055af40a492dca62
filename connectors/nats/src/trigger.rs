//! The `nats` trigger: a core subscription, or a JetStream durable pull consumer.

use crate::config::{check_trigger, JetStreamTrigger, NatsTriggerConfig};
use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use switchyard_sdk::config::MediaType;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::event::content_type_of;
use switchyard_sdk::event::{Event, TriggerEvent};
use switchyard_sdk::health::HealthHandle;
use switchyard_sdk::{Ack, BoxError, EventStatus, Trigger, TriggerContext};
use tokio::time::Instant;

impl NatsTriggerConfig {
    /// Build the trigger.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        BuildError::first_of(check_trigger(self))?;
        let config = self.clone();
        cx.health.not_ready("connecting to nats");
        Ok(Trigger::task(Box::pin(async move {
            let health = cx.health.clone();
            let client = crate::connect(
                config.url.expose(),
                format!("switchyard-{}", cx.pipeline),
                move |e| report(&health, &e),
            )
            .await?;
            match &config.jetstream {
                Some(js) => {
                    run_jetstream(client, js.clone(), config.content_type.clone(), cx).await
                }
                None => run_core(client, &config, cx).await,
            }
        })))
    }
}

fn report(health: &HealthHandle, e: &async_nats::Event) {
    match e {
        async_nats::Event::Connected => health.ready(),
        async_nats::Event::Disconnected => {
            tracing::warn!("nats connection lost; reconnecting");
            health.not_ready("nats: disconnected, reconnecting")
        }
        other => tracing::debug!(event = %other, "nats event"),
    }
}

fn event_from(
    pipeline: &str,
    entity: &str,
    configured: Option<&MediaType>,
    id: String,
    m: &async_nats::Message,
) -> Event {
    let carried = m
        .headers
        .as_ref()
        .and_then(|h| h.get("Content-Type").map(|v| v.as_str().to_string()));
    let content_type = content_type_of(carried, configured, &m.payload);
    let mut event = Event::new(
        id,
        Event::source_for(pipeline, "nats", entity),
        "switchyard.nats.message",
    )
    .with_data(m.payload.clone(), content_type);
    let subject = m.subject.to_string();
    event.partition = Some(entity.to_string());
    event.key = Some(subject.clone());
    event.subject = Some(subject);
    if let Some(h) = &m.headers {
        let mut map = serde_json::Map::new();
        for (k, vs) in h.iter() {
            // Nearly every header has one value: copied once, without a list to join.
            let v = match vs.as_slice() {
                [one] => one.as_str().to_string(),
                _ => vs.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(","),
            };
            let key: &str = k.as_ref();
            if let Some(attr) = key.strip_prefix("ce-").or_else(|| key.strip_prefix("Ce-")) {
                if !matches!(
                    attr,
                    "specversion" | "id" | "source" | "type" | "time" | "subject"
                ) {
                    event.set_extension(attr, v.clone());
                }
            }
            map.insert(k.to_string(), v.into());
        }
        event.metadata.insert("Headers".into(), map.into());
    }
    event
}

/// A JetStream message's id, `stream/sequence`, built in one allocation of the exact size
/// (`format!` cost several times as much for each message).
fn jetstream_id(stream: &str, sequence: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let sequence = digits.format(sequence);
    let mut id = String::with_capacity(stream.len() + 1 + sequence.len());
    id.push_str(stream);
    id.push('/');
    id.push_str(sequence);
    id
}

/// Core NATS: at most once; there is nothing to acknowledge.
async fn run_core(
    client: async_nats::Client,
    config: &NatsTriggerConfig,
    cx: TriggerContext,
) -> Result<(), BoxError> {
    let subject = config.subject.clone().unwrap_or_default();
    let mut sub = match &config.queue_group {
        Some(g) => client.queue_subscribe(subject.clone(), g.clone()).await?,
        None => client.subscribe(subject.clone()).await?,
    };
    cx.health.ready();
    tracing::info!(pipeline = %cx.pipeline, subject, "subscribed (core NATS: at most once)");
    let mut n: u64 = 0;
    loop {
        let m = tokio::select! {
            _ = cx.shutdown.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        n += 1;
        // No broker id exists for a core message: the connection-local sequence stands in.
        let id = format!("{}/{}/{n}", subject, std::process::id());
        let event = event_from(&cx.pipeline, &subject, config.content_type.as_ref(), id, &m);
        if cx
            .events
            .send(TriggerEvent::new(event, Ack::none()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = sub.unsubscribe().await;
    Ok(())
}

async fn run_jetstream(
    client: async_nats::Client,
    js_cfg: JetStreamTrigger,
    content_type: Option<MediaType>,
    cx: TriggerContext,
) -> Result<(), BoxError> {
    let js = jetstream::new(client);
    let (settle_tx, settle_rx) = tokio::sync::mpsc::unbounded_channel();
    let settling = tokio::spawn(settle(settle_rx, js_cfg.ack_wait.get()));
    let mut next_key: u64 = 0;
    let mut backoff = Duration::from_millis(200);
    let mut backlog_started = false;
    'consumer: loop {
        if cx.shutdown.is_cancelled() {
            break;
        }
        let consumer = match consumer(&js, &js_cfg).await {
            Ok(c) => c,
            Err(e) => {
                cx.health.not_ready(format!("jetstream: {e}"));
                tracing::warn!(pipeline = %cx.pipeline, stream = %js_cfg.stream, error = %e, "cannot get the consumer; retrying");
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if !backlog_started {
            tokio::spawn(report_backlog(consumer.clone(), cx.clone()));
            backlog_started = true;
        }
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(pipeline = %cx.pipeline, error = %e, "cannot start pulling; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        cx.health.ready();
        backoff = Duration::from_millis(200);
        tracing::info!(pipeline = %cx.pipeline, stream = %js_cfg.stream, durable = %js_cfg.durable, "pulling");
        loop {
            let next = tokio::select! {
                _ = cx.shutdown.cancelled() => break 'consumer,
                n = messages.next() => n,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // Missed heartbeats and the like arrive as errors: log and keep going.
                    tracing::debug!(pipeline = %cx.pipeline, error = %e, "jetstream pull");
                    continue;
                }
                None => continue 'consumer,
            };
            let (id, delivered, published) = match msg.info() {
                Ok(i) => (
                    jetstream_id(i.stream, i.stream_sequence),
                    i.delivered,
                    i.published,
                ),
                Err(_) => continue,
            };
            let mut event = event_from(
                &cx.pipeline,
                &js_cfg.stream,
                content_type.as_ref(),
                id,
                &msg.message,
            );
            event.time = published;
            event.set_extension("natsdelivered", itoa::Buffer::new().format(delivered));
            // The settling task holds the message (and keeps a long call alive) until the
            // engine resolves the ack; the message is handed over before the event is.
            next_key += 1;
            let key = next_key;
            if settle_tx.send(Settle::Hold(key, Box::new(msg))).is_err() {
                break 'consumer;
            }
            let done = settle_tx.clone();
            let ack = Ack::new(move |s: EventStatus| {
                let _ = done.send(Settle::Done(key, s));
            });
            if cx.events.send(TriggerEvent::new(event, ack)).await.is_err() {
                break 'consumer;
            }
        }
    }
    // Every ack holds a sender: the settling task ends once each handed-over message is
    // settled (an ack dropped unresolved settles it as abandoned) and this last sender is gone.
    drop(settle_tx);
    let _ = settling.await;
    tracing::info!(pipeline = %cx.pipeline, "jetstream consumer closed");
    Ok(())
}

impl NatsTriggerConfig {
    /// `switchyard validate --connect`: connect once (no reconnect loop) and, for JetStream,
    /// look the stream up.
    pub async fn probe(&self) -> Result<String, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url.expose())
            .await
            .map_err(|e| e.to_string())?;
        let Some(js_cfg) = &self.jetstream else {
            return Ok(format!("connected to {}", client.server_info().server_name));
        };
        let js = jetstream::new(client);
        match js.get_stream(&js_cfg.stream).await {
            Ok(mut stream) => {
                let info = stream.info().await.map_err(|e| e.to_string())?;
                Ok(format!(
                    "stream {}: {} message(s)",
                    js_cfg.stream, info.state.messages
                ))
            }
            Err(_) if js_cfg.create => Ok(format!(
                "connected; stream {} does not exist yet and is created at start",
                js_cfg.stream
            )),
            Err(e) => Err(format!("stream {}: {e}", js_cfg.stream)),
        }
    }
}

async fn consumer(
    js: &jetstream::Context,
    c: &JetStreamTrigger,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BoxError> {
    let stream = if c.create {
        js.get_or_create_stream(jetstream::stream::Config {
            name: c.stream.clone(),
            subjects: c.subjects.clone(),
            ..Default::default()
        })
        .await?
    } else {
        js.get_stream(&c.stream).await?
    };
    let config = pull::Config {
        durable_name: Some(c.durable.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: c.ack_wait.get(),
        max_deliver: c.max_deliver,
        filter_subject: c.filter_subject.clone().unwrap_or_default(),
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(&c.durable, config).await?)
}

/// What the settling task of a JetStream consumer is told.
enum Settle {
    /// A message handed to the engine under this key (boxed: a message is over 400 bytes,
    /// which every slot of the channel would otherwise take).
    Hold(u64, Box<jetstream::Message>),
    /// The engine's final status for the message of this key.
    Done(u64, EventStatus),
}

/// Settle every message of one consumer from one task (not a task and a timer per
/// message): hold each message until its status arrives, tell the server every third of
/// `ack_wait` that the messages still held are being worked on (long calls), then
/// acknowledge each one by its status. Ends when every sender is gone, that is when the
/// trigger has stopped and every ack is resolved.
async fn settle(mut rx: tokio::sync::mpsc::UnboundedReceiver<Settle>, ack_wait: Duration) {
    const ROUND: usize = 256;
    let every = (ack_wait / 3).max(Duration::from_millis(500));
    let mut held: HashMap<u64, (Box<jetstream::Message>, Instant)> = HashMap::new();
    // Checked twice per `every`, so a message hears a progress mark at most 1.5 × `every`
    // (half of `ack_wait`) after the last one.
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = Vec::with_capacity(ROUND);
    let mut acks = Vec::with_capacity(ROUND);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut round, ROUND) => if n == 0 { return },
            _ = tick.tick() => {
                let now = Instant::now();
                for (msg, last) in held.values_mut() {
                    if now.duration_since(*last) >= every {
                        let _ = msg.ack_with(AckKind::Progress).await;
                        *last = now;
                    }
                }
                continue;
            }
        }
        // Acks go out in rounds, as the output's publishes do (see `crate::fill_round`).
        if round.iter().any(|c| matches!(c, Settle::Done(..))) {
            crate::fill_round(&mut round, ROUND, || rx.try_recv().ok()).await;
        }
        for cmd in round.drain(..) {
            match cmd {
                Settle::Hold(key, msg) => {
                    held.insert(key, (msg, Instant::now()));
                }
                Settle::Done(key, status) => {
                    if let Some((msg, _)) = held.remove(&key) {
                        acks.push((msg, ack_kind(&status)));
                    }
                }
            }
        }
        for (msg, kind) in acks.drain(..) {
            if let Err(e) = msg.ack_with(kind).await {
                tracing::debug!(error = %e, "jetstream ack failed; the server redelivers after ack_wait");
            }
        }
    }
}

/// How a message is acknowledged for the engine's status.
fn ack_kind(status: &EventStatus) -> AckKind {
    match status {
        s if s.is_settled() => AckKind::Ack,
        // Failed for good, no dead letter: never deliver it again.
        EventStatus::Rejected { .. } => AckKind::Term,
        // Not finished: deliver it again a little later.
        _ => AckKind::Nak(Some(Duration::from_secs(1))),
    }
}

/// `switchyard_trigger_backlog`: the durable's pending count, every 10 s.
async fn report_backlog(
    mut consumer: jetstream::consumer::Consumer<pull::Config>,
    cx: TriggerContext,
) {
    let gauge = metrics::gauge!("switchyard_trigger_backlog", "pipeline" => cx.pipeline.clone());
    loop {
        tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if let Ok(info) = consumer.info().await {
            gauge.set(info.num_pending as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jetstream_id_is_the_stream_and_the_sequence() {
        for (stream, seq) in [("ORDERS", 0u64), ("o", 7), ("ORDERS", u64::MAX)] {
            let id = jetstream_id(stream, seq);
            assert_eq!(id, format!("{stream}/{seq}"));
            assert_eq!(id.capacity(), id.len());
        }
    }
}
