//! Fault injection: the gateway SIGKILLed at random moments, 20 times in a row per broker type,
//! with new events arriving between kills.
//!
//! After each kill the invariant is checked before the restart: every event produced so far is
//! either in the output or still owed by the source (Kafka: past the group's committed offset;
//! RabbitMQ: in the queue; JetStream: pending or unacked on the durable; Azure: in the queue).
//! An event acknowledged at the source without its output would break it. At the end the last
//! copy drains everything: every event reached the output at least once, duplicates stay within
//! kills × the in-flight bound, and after a SIGTERM drain a restart writes nothing again.
//!
//! The output is a `directory` (one file per write, `{uuid}` names), so duplicates are visible
//! and reading the output disturbs nothing.

mod common;

use common::*;
use rand::Rng;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const KILLS: usize = 20;

enum Source {
    Kafka { topic: String, group: String },
    Rabbit { queue: String },
    JetStream { stream: String },
    Azure { queue: String },
}

impl Source {
    async fn kafka() -> Self {
        let topic = common::kafka::unique("faults");
        common::kafka::create_topic(&topic, 3).await;
        Source::Kafka {
            topic,
            group: common::kafka::unique("group"),
        }
    }

    async fn rabbit() -> Self {
        let queue = common::kafka::unique("faults");
        common::rabbitmq::declare(&queue, Default::default()).await;
        Source::Rabbit { queue }
    }

    async fn jetstream() -> Self {
        let stream = format!("FAULTS{}", uuid::Uuid::new_v4().simple());
        common::nats::create_stream(&stream).await;
        Source::JetStream { stream }
    }

    async fn azure() -> Self {
        let queue = common::azure::az_name("faults");
        common::azure::create_queue(&queue).await;
        Source::Azure { queue }
    }

    fn trigger(&self) -> String {
        match self {
            Source::Kafka { topic, group } => format!(
                // Static membership: a restarted copy takes its partitions back at once instead of
                // waiting for the killed member's session to time out.
                "{{ type: kafka, brokers: [\"{}\"], topics: [{topic}], group: {group}, start: earliest, options: {{ group.instance.id: gw-1, session.timeout.ms: 6000 }} }}",
                common::kafka::BROKER
            ),
            Source::Rabbit { queue } => format!(
                "{{ type: rabbitmq, url: \"{}\", queue: {queue}, prefetch: 32 }}",
                common::rabbitmq::URL
            ),
            // Unlimited deliveries: twenty kills can exceed the default 10 for one message.
            Source::JetStream { stream } => format!(
                "{{ type: nats, url: \"{}\", jetstream: {{ stream: {stream}, durable: gw, ack_wait: 3s, max_deliver: -1 }} }}",
                common::nats::URL
            ),
            Source::Azure { queue } => format!(
                // Twenty kills can dequeue one message more than the default 5 times, and a message
                // that keeps "killing" its consumer goes to the poison queue by design (tested in
                // tests/azure.rs); this suite is about losing nothing, so the limit is out of reach.
                "{{ type: azure_queue, connection_string: \"{}\", queue: {queue}, batch_size: 16, visibility_timeout: 2s, max_polling_interval: 200ms, max_dequeue_count: 1000 }}",
                common::azure::CONN
            ),
        }
    }

    /// The most events one kill can repeat: what the gateway holds unacknowledged at once.
    fn bound(&self) -> usize {
        match self {
            // max_in_flight 32 plus those acknowledged during the one commit in flight.
            Source::Kafka { .. } => 64,
            Source::Rabbit { .. } => 32,
            Source::JetStream { .. } => 64,
            Source::Azure { .. } => 24,
        }
    }

    /// Events per round: enough to keep the gateway busy across a kill.
    fn per_round(&self) -> usize {
        match self {
            Source::Azure { .. } => 30,
            _ => 150,
        }
    }

    /// How long the function works on each event, so that a round outlasts the kill delay.
    fn sleep_ms(&self) -> u64 {
        match self {
            // Few events per round (the emulator is slow to fill), so each takes longer.
            Source::Azure { .. } => 300,
            // 150 × 100 ms over 16 at once: about 0.94 s, longer than the longest kill delay.
            _ => 100,
        }
    }

    async fn produce(&self, vals: Vec<serde_json::Value>) {
        match self {
            Source::Kafka { topic, .. } => common::kafka::produce(topic, vals, 30).await,
            Source::Rabbit { queue } => common::rabbitmq::publish(queue, vals).await,
            Source::JetStream { stream } => {
                common::nats::publish(&format!("{stream}.in"), vals).await
            }
            Source::Azure { queue } => {
                common::azure::put_json(&common::azure::queue_client(queue), vals).await
            }
        }
    }

    /// Events the source still owes (not acknowledged by the gateway).
    async fn owed(&self) -> usize {
        match self {
            Source::Kafka { topic, group } => {
                let (topic, group) = (topic.clone(), group.clone());
                tokio::task::spawn_blocking(move || common::kafka::uncommitted(&topic, &group))
                    .await
                    .unwrap()
            }
            Source::Rabbit { queue } => common::rabbitmq::message_count(queue).await,
            Source::JetStream { stream } => common::nats::owed(stream, "gw").await,
            Source::Azure { queue } => {
                common::azure::count(&common::azure::queue_client(queue)).await as usize
            }
        }
    }
}

fn yaml(source: &Source) -> String {
    format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 16 }}
pipelines:
  p:
    trigger: {}
    function: f
    ordering: none
    max_in_flight: 32
    retry: {{ max_attempts: 10, initial_delay: 10ms, max_delay: 200ms }}
    outputs:
      - {{ name: out, type: directory, path: \"{{dir}}/out/{{uuid}}.json\" }}
",
        source.trigger()
    )
}

/// `n` of every output file, and how many files there are.
fn outputs(g: &Gateway) -> (HashMap<i64, usize>, usize) {
    let files = files_in(&g.path("out"));
    let mut m: HashMap<i64, usize> = HashMap::new();
    for f in &files {
        // A file renamed into place is complete; one read mid-rename is simply retried later.
        if let Ok(b) = std::fs::read(f) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                *m.entry(v["n"].as_i64().unwrap()).or_default() += 1;
            }
        }
    }
    (m, files.len())
}

async fn kill_loop(source: Source) {
    let per_round = source.per_round();
    let mut produced = 0;
    let mut g: Option<Gateway> = None;
    let mut rng = rand::rng();
    let mut mid_stream = 0;
    for kill in 0..KILLS {
        let vals: Vec<_> = (produced..produced + per_round)
            .map(
                |i| serde_json::json!({ "n": i, "sleep_ms": source.sleep_ms(), "fail_rate": 0.05 }),
            )
            .collect();
        source.produce(vals).await;
        produced += per_round;
        match g.as_mut() {
            None => g = Some(Gateway::start(&yaml(&source)).await),
            Some(g) => {
                g.spawn();
                g.wait_ready().await;
            }
        }
        let gw = g.as_mut().unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..900))).await;
        assert!(!gw.signal_and_wait(libc::SIGKILL).success());
        if outputs(gw).0.len() < produced {
            mid_stream += 1;
        }
        // The invariant: every event produced is in the output or still owed by the source.
        // (The broker may take a moment to take back what the dead connection held.)
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = outputs(gw).0.len();
            let owed = source.owed().await;
            if done + owed >= produced {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kill {kill}: {done} in the output + {owed} owed by the source < {produced} produced: an event was acknowledged without its output"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        mid_stream >= KILLS / 2,
        "only {mid_stream} of {KILLS} kills came while events were in flight"
    );
    // The last copy drains everything.
    let mut g = g.unwrap();
    g.spawn();
    g.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(180);
    while outputs(&g).0.len() < produced {
        assert!(
            Instant::now() < deadline,
            "only {} of {produced} reached the output; log:\n{}",
            outputs(&g).0.len(),
            g.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (by_n, files) = outputs(&g);
    assert_eq!(by_n.len(), produced, "every event reached the output");
    let dups = files - produced;
    let bound = KILLS * source.bound();
    eprintln!(
        "{KILLS} kills ({mid_stream} mid-stream): {produced} events, 0 lost, {dups} duplicates (bound {bound})"
    );
    assert!(dups <= bound, "{dups} duplicates over the bound {bound}");
    // A drain, then a restart: nothing is written again.
    assert_eq!(
        g.signal_and_wait(libc::SIGTERM).code(),
        Some(0),
        "{}",
        g.log()
    );
    let after_drain = outputs(&g).1;
    g.spawn();
    g.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        outputs(&g).1,
        after_drain,
        "a restart after a drain repeats nothing"
    );
    assert_eq!(source.owed().await, 0, "the source owes nothing");
}

#[tokio::test]
async fn kafka_survives_twenty_sigkills() {
    kill_loop(Source::kafka().await).await;
}

#[tokio::test]
async fn rabbitmq_survives_twenty_sigkills() {
    kill_loop(Source::rabbit().await).await;
}

#[tokio::test]
async fn jetstream_survives_twenty_sigkills() {
    kill_loop(Source::jetstream().await).await;
}

#[tokio::test]
async fn azure_queue_survives_twenty_sigkills() {
    kill_loop(Source::azure().await).await;
}
