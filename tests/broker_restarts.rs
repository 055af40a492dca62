//! The Kafka broker and the Azure Storage emulator restarted mid-stream (on the same data): the
//! gateway recovers by itself and loses nothing. Its own test binary, run after the others'
//! binaries are done with the shared services; the two tests share a lock so they never restart
//! a service under each other.

mod common;

use common::*;
use std::time::Duration;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn restart(service: &str) {
    let st = std::process::Command::new(format!("{}/scripts/services", env!("CARGO_MANIFEST_DIR")))
        .args(["restart", service])
        .status()
        .unwrap();
    assert!(st.success(), "scripts/services restart {service}");
}

/// Produce a probe record (`{"probe": true}`, which the test function answers like any event
/// and which is not counted) until the broker takes one, for up to 90 s.
fn wait_serving(topic: &str) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let p: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", common::kafka::BROKER)
            .set("message.timeout.ms", "5000")
            .create()
            .unwrap();
        if p.send(BaseRecord::<(), str>::to(topic).payload(r#"{"probe":true}"#))
            .is_ok()
            && p.flush(Duration::from_secs(6)).is_ok()
            && p.in_flight_count() == 0
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kafka not serving 90 s after its restart"
        );
    }
}

fn yaml(trigger: &str) -> String {
    format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 16 }}
pipelines:
  p:
    trigger: {trigger}
    function: f
    ordering: none
    retry: {{ max_attempts: 5, initial_delay: 100ms, max_delay: 2s }}
    outputs:
      - {{ name: out, type: directory, path: \"{{dir}}/out/{{uuid}}.json\" }}
"
    )
}

fn distinct_outputs(g: &Gateway) -> std::collections::HashSet<i64> {
    files_in(&g.path("out"))
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["n"].as_i64())
        .collect()
}

async fn wait_outputs(g: &Gateway, n: usize, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while distinct_outputs(g).len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} outputs; log:\n{}",
            distinct_outputs(g).len(),
            g.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_kafka_broker_restart_mid_stream_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    const N: usize = 3_000;
    let topic = common::kafka::unique("restart");
    common::kafka::create_topic(&topic, 3).await;
    // Half before, half after the restart: the consumer prefetches what is there, so only new
    // records show that it reconnected (and commits must survive the outage too).
    let vals = values(N, serde_json::json!({ "sleep_ms": 5 }));
    common::kafka::produce(&topic, vals[..N / 2].to_vec(), 30).await;
    let group = common::kafka::unique("g");
    let g = Gateway::start(&yaml(&format!(
        "{{ type: kafka, brokers: [\"{}\"], topics: [{topic}], group: {group}, start: earliest }}",
        common::kafka::BROKER
    )))
    .await;
    wait_outputs(&g, N / 4, 120).await;
    restart("kafka");
    // Listening is not serving: wait until the restarted broker takes a record on this topic.
    let t = topic.clone();
    tokio::task::spawn_blocking(move || wait_serving(&t))
        .await
        .unwrap();
    common::kafka::produce(&topic, vals[N / 2..].to_vec(), 30).await;
    wait_outputs(&g, N, 240).await;
    assert_eq!(distinct_outputs(&g).len(), N, "none lost");
    assert!(
        g.log().contains("kafka consumer error"),
        "the trigger saw the broker go away"
    );
    g.wait_ready().await;
}

#[tokio::test]
async fn an_azure_emulator_restart_mid_stream_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    const N: usize = 300;
    let queue = common::azure::az_name("restart");
    let q = common::azure::create_queue(&queue).await;
    common::azure::put_json(&q, values(N, serde_json::json!({ "sleep_ms": 20 }))).await;
    let g = Gateway::start(&yaml(&format!(
        "{{ type: azure_queue, connection_string: \"{}\", queue: {queue}, visibility_timeout: 5s, max_polling_interval: 500ms }}",
        common::azure::CONN
    )))
    .await;
    wait_outputs(&g, N / 4, 120).await;
    restart("azurite");
    let at_restart = distinct_outputs(&g).len();
    assert!(
        at_restart < N * 3 / 4,
        "the restart came mid-stream ({at_restart} of {N} done)"
    );
    wait_outputs(&g, N, 240).await;
    assert_eq!(distinct_outputs(&g).len(), N, "none lost");
    g.wait_ready().await;
    // A delete that failed during the outage leaves its message to come back after the
    // visibility timeout, be delivered again and deleted.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while common::azure::count(&q).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "every message deleted in the end"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
