//! The `azure_queue` trigger.
//!
//! - Polls with `batch_size` messages per request. At most `batch_size * 3 / 2` messages are held
//!   at once (a new batch is fetched when half of the last one is done, as Azure Functions does).
//! - An empty queue backs the poll off from 100ms, doubling up to `max_polling_interval`; a
//!   non-empty answer polls again at once.
//! - While the function works on a message its visibility timeout is extended every half
//!   timeout, so no other instance receives it meanwhile.
//! - Delivered or dead-lettered: the message is deleted. Failed for good with no dead letter
//!   (`Rejected`): made visible again until its dequeue count reaches `max_dequeue_count`, then
//!   moved to the poison queue. Abandoned (shutdown): made visible again at once.
//! - A message received with a dequeue count above `max_dequeue_count` (the gateway or the
//!   function died on it repeatedly) or whose text is not valid in the configured encoding goes to
//!   the poison queue without a call.

use crate::config::{AzureQueueTriggerConfig, Encoding};
use crate::connection::Service;
use crate::{
    describe, put_poison, queue_client, service_error, to_chrono, with_timeout, CALL_TIMEOUT,
};
use azure_storage_queue::models::{
    QueueClientGetPropertiesResultHeaders, QueueClientReceiveMessagesOptions, ReceivedMessage,
};
use azure_storage_queue::QueueClient;
use base64::Engine;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::event::content_type_of;
use switchyard_sdk::event::{Event, TriggerEvent};
use switchyard_sdk::{Ack, BoxError, EventStatus, Trigger, TriggerContext};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const MIN_POLL: Duration = Duration::from_millis(100);

impl AzureQueueTriggerConfig {
    /// Build the trigger.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        BuildError::first_of(crate::config::check_queue_trigger(self))?;
        let account = crate::account(
            self.connection_string.expose(),
            self.endpoint.as_deref(),
            Service::Queue,
        )?;
        let queue = Shared {
            client: queue_client(&account, &self.queue)?,
            poison: queue_client(&account, &self.poison_queue())?,
            config: self.clone(),
            pipeline: cx.pipeline.clone(),
        };
        cx.health.not_ready("polling the azure queue");
        Ok(Trigger::task(Box::pin(run(Arc::new(queue), cx))))
    }
}

impl AzureQueueTriggerConfig {
    /// `switchyard validate --connect`: read the queue's properties (signed with the key, so a
    /// wrong key shows too).
    pub async fn probe(&self) -> Result<String, String> {
        let account = crate::account(
            self.connection_string.expose(),
            self.endpoint.as_deref(),
            Service::Queue,
        )
        .map_err(|e| e.to_string())?;
        let client = queue_client(&account, &self.queue).map_err(|e| e.to_string())?;
        let rsp = with_timeout(CALL_TIMEOUT, client.get_properties(None))
            .await
            .map_err(|e| format!("queue {}: {}", self.queue, describe(&e)))?;
        let n = rsp.approximate_messages_count().ok().flatten().unwrap_or(0);
        Ok(format!("queue {}: about {n} message(s)", self.queue))
    }
}

struct Shared {
    client: QueueClient,
    poison: QueueClient,
    config: AzureQueueTriggerConfig,
    pipeline: String,
}

impl Shared {
    fn visibility_secs(&self) -> i32 {
        self.config
            .visibility_timeout
            .get()
            .as_secs()
            .clamp(1, 7 * 86400) as i32
    }
}

async fn run(q: Arc<Shared>, cx: TriggerContext) -> Result<(), BoxError> {
    let batch = u32::from(q.config.batch_size);
    let capacity = (batch + batch / 2).max(1) as usize;
    let permits = Arc::new(Semaphore::new(capacity));
    let pending = Arc::new(AtomicUsize::new(0));
    let mut idle = MIN_POLL;
    let mut failing = crate::Once::default();
    tokio::spawn(report_backlog(q.clone(), cx.clone()));
    tracing::info!(pipeline = %cx.pipeline, queue = %q.config.queue, batch_size = batch, "polling azure queue");
    'poll: loop {
        // Wait for room for at least one message, then take what is free up to a batch.
        let first = tokio::select! {
            _ = cx.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("never closed"),
        };
        let mut held = vec![first];
        while held.len() < batch as usize {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(held.len() as i32),
            visibility_timeout: Some(q.visibility_secs()),
            ..Default::default()
        };
        let received = with_timeout(CALL_TIMEOUT, q.client.receive_messages(Some(options))).await;
        let messages = match received.and_then(|r| r.into_model()) {
            Ok(m) => {
                cx.health.ready();
                if failing.ok() {
                    tracing::info!(pipeline = %cx.pipeline, queue = %q.config.queue, "receiving again");
                }
                m.items.unwrap_or_default()
            }
            Err(e) => {
                let why = match service_error(&e) {
                    Some((404, _)) => format!("queue {:?} does not exist", q.config.queue),
                    _ => describe(&e),
                };
                cx.health.not_ready(format!("azure queue: {why}"));
                if failing.fails(&why) {
                    tracing::warn!(pipeline = %cx.pipeline, queue = %q.config.queue, error = %why, "cannot receive; retrying with backoff (logged again when the error changes)");
                }
                Vec::new()
            }
        };
        // Nothing received (an empty queue or an error): wait, longer each time.
        if messages.is_empty() {
            drop(held);
            tokio::select! {
                _ = cx.shutdown.cancelled() => break,
                _ = tokio::time::sleep(idle) => {}
            }
            idle = (idle * 2).min(q.config.max_polling_interval.get().max(MIN_POLL));
            continue;
        }
        idle = MIN_POLL;
        held.truncate(messages.len());
        for (message, permit) in messages.into_iter().zip(held) {
            let (Some(id), Some(receipt)) =
                (message.message_id.clone(), message.pop_receipt.clone())
            else {
                tracing::warn!(pipeline = %cx.pipeline, "message without id or pop receipt; skipped");
                continue;
            };
            let dequeue_count = message.dequeue_count.unwrap_or(1).max(0) as u32;
            let text = message.message_text.clone().unwrap_or_default();
            let data = match decode(&text, q.config.encoding) {
                Ok(d) => d,
                Err(why) => {
                    poison_now(&q, &id, &receipt, &text, why).await;
                    drop(permit);
                    continue;
                }
            };
            if dequeue_count > q.config.max_dequeue_count {
                poison_now(
                    &q,
                    &id,
                    &receipt,
                    &text,
                    "dequeue count above max_dequeue_count",
                )
                .await;
                drop(permit);
                continue;
            }
            let event = to_event(&q, &message, &id, dequeue_count, data);
            let lease = Lease::start(q.clone(), id, receipt);
            pending.fetch_add(1, Ordering::SeqCst);
            let (p, q2) = (pending.clone(), q.clone());
            let ack = Ack::new(move |status: EventStatus| {
                tokio::spawn(async move {
                    settle(&q2, lease, status, dequeue_count, text).await;
                    drop(permit);
                    p.fetch_sub(1, Ordering::SeqCst);
                });
            });
            if cx.events.send(TriggerEvent::new(event, ack)).await.is_err() {
                break 'poll;
            }
        }
    }
    // Drain: wait for what is in flight to be settled.
    while pending.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(pipeline = %cx.pipeline, "azure queue trigger stopped");
    Ok(())
}

fn decode(text: &str, encoding: Encoding) -> Result<bytes::Bytes, &'static str> {
    match encoding {
        Encoding::None => Ok(bytes::Bytes::copy_from_slice(text.as_bytes())),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(bytes::Bytes::from)
            .map_err(|_| "message text is not base64 (set encoding: none for plain text)"),
    }
}

fn to_event(
    q: &Shared,
    m: &ReceivedMessage,
    id: &str,
    dequeue_count: u32,
    data: bytes::Bytes,
) -> Event {
    // Queue messages carry no content type of their own.
    let content_type = content_type_of(None, q.config.content_type.as_ref(), &data);
    let mut event = Event::new(
        id,
        Event::source_for(&q.pipeline, "azure_queue", &q.config.queue),
        "switchyard.azure_queue.message",
    )
    .with_data(data, content_type);
    if let Some(t) = m.insertion_time.as_ref().and_then(to_chrono) {
        event.time = t;
    }
    event.set_extension("dequeuecount", dequeue_count.to_string());
    // The names Azure Functions gives custom handlers in `Metadata`.
    let md = &mut event.metadata;
    md.insert("Id".into(), id.into());
    md.insert("DequeueCount".into(), dequeue_count.into());
    for (name, t) in [
        ("InsertionTime", &m.insertion_time),
        ("ExpirationTime", &m.expiration_time),
        ("NextVisibleTime", &m.time_next_visible),
    ] {
        if let Some(t) = t.as_ref().and_then(to_chrono) {
            md.insert(name.into(), t.to_rfc3339().into());
        }
    }
    event.partition = Some(q.config.queue.clone());
    event
}

/// A received message held by this instance: its current pop receipt, kept invisible by a task
/// that extends the visibility timeout every half timeout.
struct Lease {
    id: String,
    receipt: Arc<Mutex<String>>,
    stop: CancellationToken,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lease {
    fn start(q: Arc<Shared>, id: String, receipt: String) -> Self {
        let receipt = Arc::new(Mutex::new(receipt));
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(keep_invisible(q, id.clone(), receipt.clone(), stop.clone()));
        Self {
            id,
            receipt,
            stop,
            keeper,
        }
    }

    /// Stop extending and return the current pop receipt.
    async fn finish(self) -> (String, String) {
        self.stop.cancel();
        let _ = self.keeper.await;
        let r = self
            .receipt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.id, r)
    }
}

async fn keep_invisible(
    q: Arc<Shared>,
    id: String,
    receipt: Arc<Mutex<String>>,
    stop: CancellationToken,
) {
    let every = (q.config.visibility_timeout.get() / 2).max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let current = receipt.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Not cancelled mid-call: a new receipt must be recorded before the ack uses it.
        match set_visibility(&q.client, &id, &current, q.visibility_secs()).await {
            Ok(new) => *receipt.lock().unwrap_or_else(|e| e.into_inner()) = new,
            Err(e) => {
                tracing::warn!(pipeline = %q.pipeline, message = %id, error = %describe(&e), "cannot extend the visibility timeout; the message may be delivered again");
                if matches!(service_error(&e), Some((404, _))) {
                    return;
                }
            }
        }
    }
}

/// Update a message's visibility; returns the new pop receipt.
async fn set_visibility(
    client: &QueueClient,
    id: &str,
    receipt: &str,
    secs: i32,
) -> azure_core::Result<String> {
    let rsp = with_timeout(CALL_TIMEOUT, client.update_message(id, receipt, secs, None)).await?;
    Ok(rsp
        .headers()
        .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
            "x-ms-popreceipt",
        ))
        .unwrap_or(receipt)
        .to_string())
}

async fn settle(q: &Shared, lease: Lease, status: EventStatus, dequeue_count: u32, text: String) {
    let (id, receipt) = lease.finish().await;
    let result = match status {
        s if s.is_settled() => delete(q, &id, &receipt).await,
        EventStatus::Rejected { error } if dequeue_count >= q.config.max_dequeue_count => {
            tracing::warn!(pipeline = %q.pipeline, message = %id, dequeue_count, error = %error, poison = %q.config.poison_queue(), "failed for good; moving to the poison queue");
            move_to_poison(q, &id, &receipt, &text).await
        }
        // Failed, or not finished: visible again at once, for another try (here or elsewhere).
        _ => set_visibility(&q.client, &id, &receipt, 0)
            .await
            .map(|_| ()),
    };
    if let Err(e) = result {
        tracing::warn!(pipeline = %q.pipeline, message = %id, error = %describe(&e), "cannot settle the message; it becomes visible again after its visibility timeout");
    }
}

async fn delete(q: &Shared, id: &str, receipt: &str) -> azure_core::Result<()> {
    let once = || with_timeout(CALL_TIMEOUT, q.client.delete_message(id, receipt, None));
    match once().await {
        // A pooled connection the server had just closed fails before the request is read
        // (Azurite closes idle ones after 5 s): one more try, on a fresh connection, instead of
        // a redelivery after the visibility timeout. A delete that did land answers 404.
        Err(e) if matches!(e.kind(), azure_core::error::ErrorKind::Io) => once().await,
        r => r,
    }
    .map(|_| ())
}

/// Put the message text (as received) on the poison queue, creating it if needed, then delete
/// the original. If the put fails the original stays and comes back.
async fn move_to_poison(q: &Shared, id: &str, receipt: &str, text: &str) -> azure_core::Result<()> {
    put_poison(&q.poison, &q.pipeline, text).await?;
    delete(q, id, receipt).await
}

async fn poison_now(q: &Shared, id: &str, receipt: &str, text: &str, why: &'static str) {
    metrics::counter!("switchyard_trigger_rejected_total", "pipeline" => q.pipeline.clone(), "reason" => why)
        .increment(1);
    tracing::warn!(pipeline = %q.pipeline, message = %id, reason = why, poison = %q.config.poison_queue(), "not delivered; moving to the poison queue");
    if let Err(e) = move_to_poison(q, id, receipt, text).await {
        tracing::warn!(pipeline = %q.pipeline, message = %id, error = %describe(&e), "cannot move to the poison queue; the message comes back after its visibility timeout");
    }
}

/// `switchyard_trigger_backlog`: the queue's approximate message count, every 10 s.
async fn report_backlog(q: Arc<Shared>, cx: TriggerContext) {
    let gauge = metrics::gauge!("switchyard_trigger_backlog", "pipeline" => cx.pipeline.clone());
    loop {
        if let Ok(rsp) = with_timeout(CALL_TIMEOUT, q.client.get_properties(None)).await {
            if let Ok(Some(n)) = rsp.approximate_messages_count() {
                gauge.set(n as f64);
            }
        }
        tokio::select! {
            _ = cx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(&decode("aGVsbG8=", Encoding::Base64).unwrap()[..], b"hello");
        assert_eq!(&decode("hello", Encoding::None).unwrap()[..], b"hello");
        assert!(decode("{\"not\": \"base64\"}", Encoding::Base64).is_err());
    }
}
