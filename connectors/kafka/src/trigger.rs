//! The `kafka` trigger: a consumer group, at least once.

use crate::config::{check_trigger, KafkaTriggerConfig};
use crate::headers::event_from_message;
use crate::offsets::Offsets;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_sdk::config::MediaType;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::event::TriggerEvent;
use switchyard_sdk::{Ack, BoxError, EventStatus, Trigger, TriggerContext};
use tokio::sync::mpsc::error::TrySendError;

/// librdkafka callbacks: on revocation, commit what is stored and forget the partitions.
pub(crate) struct Ctx {
    pipeline: String,
    offsets: Arc<Mutex<Offsets>>,
    /// Ready once the group gave this member its partitions (even none): an idle topic is
    /// ready, not waiting for its first record.
    health: switchyard_sdk::health::HealthHandle,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // The stored offsets never pass an event in flight, so committing them is safe.
            commit(consumer, &self.pipeline);
            let mut offsets = lock(&self.offsets);
            for e in tpl.elements() {
                offsets.revoke(e.topic(), e.partition());
            }
            tracing::info!(pipeline = %self.pipeline, partitions = %describe(tpl), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.health.ready();
                tracing::info!(pipeline = %self.pipeline, partitions = %describe(tpl), "partitions assigned")
            }
            Rebalance::Error(e) => {
                tracing::warn!(pipeline = %self.pipeline, error = %e, "rebalance error")
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

type KafkaConsumer = StreamConsumer<Ctx>;

/// How long the trigger waits for room in the engine before it pauses its partitions.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

fn lock(o: &Mutex<Offsets>) -> std::sync::MutexGuard<'_, Offsets> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

fn commit<C: Consumer<X>, X: ConsumerContext>(consumer: &C, pipeline: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "offset commit failed; the next commit will carry it")
        }
    }
}

impl KafkaTriggerConfig {
    /// The librdkafka consumer properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","));
        base_consumer_config(
            &mut c,
            &self.group,
            self.start.as_str(),
            self.commit_interval.get(),
        );
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }

    /// Build the trigger.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        BuildError::first_of(check_trigger(self))?;
        build_consumer(
            cx,
            self.client_config(),
            &self.topics,
            "kafka",
            self.content_type.clone(),
        )
    }

    /// `switchyard validate --connect`: reach the brokers and look the topics up.
    pub async fn probe(&self) -> Result<String, String> {
        probe_topics(self.client_config(), self.topics.clone()).await
    }
}

/// Fetch the cluster's metadata with a plain consumer (joins no group) and describe the
/// topics (shared by `kafka` and `eventhubs`).
pub(crate) async fn probe_topics(
    config: ClientConfig,
    topics: Vec<String>,
) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let c: rdkafka::consumer::BaseConsumer = config.create().map_err(|e| e.to_string())?;
        let md = c
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|e| format!("cannot reach the brokers: {e}"))?;
        let mut found = vec![format!("{} broker(s)", md.brokers().len())];
        for t in &topics {
            match md.topics().iter().find(|m| m.name() == t) {
                Some(m) if m.error().is_none() => {
                    found.push(format!("topic {t}: {} partition(s)", m.partitions().len()))
                }
                Some(m) => return Err(format!("topic {t}: {:?}", m.error())),
                None => found.push(format!(
                    "topic {t} does not exist yet (works only if the brokers create topics)"
                )),
            }
        }
        Ok(found.join("; "))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The properties every switchyard consumer has.
pub(crate) fn base_consumer_config(
    c: &mut ClientConfig,
    group: &str,
    start: &str,
    commit_interval: Duration,
) {
    c.set("group.id", group)
        // At least once: an offset is stored only once its event and every one before it in
        // the partition are delivered; librdkafka commits what is stored.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        // What is stored is committed this often (only when it moved), so a crash repeats at
        // most the events in flight plus those finished in one interval.
        .set(
            "auto.commit.interval.ms",
            commit_interval.as_millis().max(10).to_string(),
        )
        .set("auto.offset.reset", start)
        .set("enable.partition.eof", "false")
        .set("socket.nagle.disable", "true")
        // Bound what librdkafka prefetches; the trigger pauses partitions when the engine is full.
        // 8 MiB is a third of a second at 25,000 records/s of 1 KiB; with the 10 ms backoff
        // below it drained as fast as 16 MiB did, at 11 MiB less peak RSS (docs/benchmarks.md).
        .set("queued.max.messages.kbytes", "8192")
        // With the prefetch bounded, librdkafka's default of 1 s before fetching again once the
        // bound is reached let the queue run dry under a steady drain: 10 ms measured 1.13-1.34
        // times the msg/s at the same or less CPU per message (docs/benchmarks.md).
        .set("fetch.queue.backoff.ms", "10");
}

/// Subscribe and return the trigger task (shared by `kafka` and `eventhubs`).
pub(crate) fn build_consumer(
    cx: TriggerContext,
    mut config: ClientConfig,
    topics: &[String],
    trigger_type: &'static str,
    content_type: Option<MediaType>,
) -> Result<Trigger, BuildError> {
    config.set("client.id", format!("switchyard-{}", cx.pipeline));
    let offsets: Arc<Mutex<Offsets>> = Arc::default();
    let consumer: KafkaConsumer = config
        .create_with_context(Ctx {
            pipeline: cx.pipeline.clone(),
            offsets: offsets.clone(),
            health: cx.health.clone(),
        })
        .map_err(|e| BuildError::Other {
            context: "creating the kafka consumer".into(),
            source: Box::new(e),
        })?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|e| BuildError::Other {
            context: format!("subscribing to {}", topics.join(", ")),
            source: Box::new(e),
        })?;
    cx.health.not_ready("waiting for the broker");
    Ok(Trigger::task(Box::pin(run(
        cx,
        Arc::new(consumer),
        offsets,
        trigger_type,
        content_type,
    ))))
}

async fn run(
    cx: TriggerContext,
    consumer: Arc<KafkaConsumer>,
    offsets: Arc<Mutex<Offsets>>,
    trigger_type: &'static str,
    content_type: Option<MediaType>,
) -> Result<(), BoxError> {
    let pending = Arc::new(AtomicUsize::new(0));
    let mut waiting: VecDeque<TriggerEvent> = VecDeque::new();
    let mut paused = false;
    let mut last_error_log: Option<Instant> = None;
    tokio::spawn(report_backlog(consumer.clone(), cx.clone()));
    loop {
        tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => break,
            permit = cx.events.reserve(), if !waiting.is_empty() => match permit {
                Ok(p) => {
                    p.send(waiting.pop_front().expect("not empty"));
                    if waiting.is_empty() && paused {
                        set_paused(&consumer, false, &cx.pipeline);
                        paused = false;
                    }
                }
                Err(_) => break,
            },
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    cx.health.ready();
                    let event = event_from_message(&cx.pipeline, trigger_type, content_type.as_ref(), &m);
                    let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
                    tracing::trace!(topic, partition, offset, "record received");
                    let generation = lock(&offsets).received(&topic, partition, offset);
                    pending.fetch_add(1, Ordering::SeqCst);
                    let ack = {
                        let (consumer, offsets, pending) = (consumer.clone(), offsets.clone(), pending.clone());
                        Ack::new(move |status: EventStatus| {
                            // Kafka has no poison queue: a rejected event (no dead letter
                            // configured) was logged and counted by the engine; move past it.
                            if status.is_settled() || matches!(status, EventStatus::Rejected { .. }) {
                                if let Some(last) = lock(&offsets).done(&topic, partition, offset, generation) {
                                    // librdkafka stores last + 1, the next offset to consume, and
                                    // commits what is stored every `commit_interval`.
                                    if let Err(e) = consumer.store_offset(&topic, partition, last) {
                                        tracing::debug!(topic, partition, error = %e, "cannot store offset (partition revoked?)");
                                    }
                                }
                            } else {
                                tracing::warn!(topic, partition, offset, "event not delivered; its partition's offset stays behind it until a restart or rebalance");
                            }
                            pending.fetch_sub(1, Ordering::SeqCst);
                        })
                    };
                    let te = TriggerEvent::new(event, ack);
                    if waiting.is_empty() {
                        match cx.events.try_send(te) {
                            Ok(()) => {}
                            Err(TrySendError::Full(te)) => {
                                // The engine is at its bound. A short wait is the normal pace of
                                // a busy pipeline; only a long one pauses the partitions, so the
                                // consumer keeps polling (rebalances, max.poll.interval.ms)
                                // without buffering. Pausing drops librdkafka's prefetch, so it
                                // is not done for every full channel.
                                tokio::select! {
                                    _ = cx.shutdown.cancelled() => break,
                                    r = tokio::time::timeout(PAUSE_AFTER, cx.events.reserve()) => match r {
                                        Ok(Ok(permit)) => permit.send(te),
                                        Ok(Err(_)) => break,
                                        Err(_) => {
                                            waiting.push_back(te);
                                            set_paused(&consumer, true, &cx.pipeline);
                                            paused = true;
                                        }
                                    },
                                }
                            }
                            Err(TrySendError::Closed(_)) => break,
                        }
                    } else {
                        waiting.push_back(te);
                    }
                }
                Err(e) => {
                    cx.health.not_ready(format!("kafka: {e}"));
                    metrics::counter!("switchyard_trigger_errors_total", "pipeline" => cx.pipeline.clone()).increment(1);
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                        tracing::warn!(pipeline = %cx.pipeline, error = %e, "kafka consumer error; retrying");
                        last_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
    // Drain: events never handed to the engine are abandoned (not stored); wait for the rest,
    // then commit the final watermark and leave the group.
    waiting.clear();
    while pending.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = consumer.clone();
    let pipeline = cx.pipeline.clone();
    tokio::task::spawn_blocking(move || {
        commit(c.as_ref(), &pipeline);
        c.unsubscribe();
    })
    .await?;
    tracing::info!(pipeline = %cx.pipeline, in_flight = lock(&offsets).in_flight(), "kafka consumer closed");
    Ok(())
}

fn set_paused(consumer: &KafkaConsumer, pause: bool, pipeline: &str) {
    let Ok(tpl) = consumer.assignment() else {
        return;
    };
    let r = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = r {
        tracing::debug!(pipeline, error = %e, pause, "pause/resume failed");
    }
}

/// `switchyard_trigger_backlog`: the group's lag (high watermark − committed) over the
/// partitions this instance holds, every 10 s.
async fn report_backlog(consumer: Arc<KafkaConsumer>, cx: TriggerContext) {
    let gauge = metrics::gauge!("switchyard_trigger_backlog", "pipeline" => cx.pipeline.clone());
    loop {
        tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let c = consumer.clone();
        let lag = tokio::task::spawn_blocking(move || -> Option<i64> {
            let timeout = Duration::from_secs(5);
            let committed = c.committed(timeout).ok()?;
            let mut lag = 0;
            for e in committed.elements() {
                let (low, high) = c.fetch_watermarks(e.topic(), e.partition(), timeout).ok()?;
                lag += match e.offset() {
                    Offset::Offset(o) => (high - o).max(0),
                    _ => high - low,
                };
            }
            Some(lag)
        })
        .await
        .ok()
        .flatten();
        if let Some(lag) = lag {
            gauge.set(lag as f64);
            // The broker answered: connected again after an error, records or not.
            cx.health.ready();
        }
    }
}
