//! Kafka helpers for the end-to-end tests: a real broker on 127.0.0.1:9092 (started by
//! `scripts/services`). A missing broker fails the test, loudly.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const BROKER: &str = "127.0.0.1:9092";

/// Fail loudly when the broker is not there.
pub fn require_broker() {
    if std::net::TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(2))
        .is_err()
    {
        panic!("no Kafka broker on {BROKER}: start it with `scripts/services start kafka` (scripts/test does)");
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn create_topic(name: &str, partitions: i32) {
    require_broker();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let res = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Produce `values` with keys `k{i % keys}`.
pub async fn produce(
    topic: &str,
    values: impl IntoIterator<Item = serde_json::Value>,
    keys: usize,
) {
    let p = producer();
    let mut futures = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let p = p.clone();
        let topic = topic.to_string();
        futures.push(async move {
            let key = format!("k{}", i % keys);
            let payload = v.to_string();
            p.send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        });
        if futures.len() >= 1000 {
            futures::future::join_all(std::mem::take(&mut futures)).await;
        }
    }
    futures::future::join_all(futures).await;
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: Option<String>,
    pub payload: serde_json::Value,
    pub headers: HashMap<String, String>,
}

/// Read a topic from the start until `until` says stop (given everything read so far), or the
/// timeout; returns what was read.
pub fn consume_until(
    topic: &str,
    timeout: Duration,
    until: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    use rdkafka::message::Headers;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline && !until(&out) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let mut headers = HashMap::new();
            if let Some(h) = m.headers() {
                for x in h.iter() {
                    headers.insert(
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push(Consumed {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: serde_json::from_slice(m.payload().unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null),
                headers,
            });
        }
    }
    out
}

/// The distinct values of `field` in the payloads, and how many records repeat one.
pub fn distinct_and_duplicates(records: &[Consumed], field: &str) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut dups = 0;
    for r in records {
        if !seen.insert(r.payload[field].to_string()) {
            dups += 1;
        }
    }
    (seen.len(), dups)
}

/// Records of `topic` past the committed offsets of `group` (all of them where nothing is
/// committed): what the group still owes. Reads offsets only; does not join the group.
pub fn uncommitted(topic: &str, group: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let mut owed = 0;
    for e in committed.elements() {
        let (low, high) = c
            .fetch_watermarks(topic, e.partition(), Duration::from_secs(10))
            .unwrap();
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        owed += (high - from).max(0) as usize;
    }
    owed
}
