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
    const N: usize = 2_000;
    let topic = common::kafka::unique("restart");
    common::kafka::create_topic(&topic, 3).await;
    common::kafka::produce(&topic, values(N, serde_json::json!({ "sleep_ms": 10 })), 30).await;
    let g = Gateway::start(&yaml(&format!(
        "{{ type: kafka, brokers: [\"{}\"], topics: [{topic}], group: {}, start: earliest }}",
        common::kafka::BROKER,
        common::kafka::unique("g")
    )))
    .await;
    wait_outputs(&g, N / 4, 120).await;
    restart("kafka");
    wait_outputs(&g, N, 240).await;
    let before_end = distinct_outputs(&g).len();
    assert_eq!(before_end, N, "none lost");
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
    wait_outputs(&g, N, 240).await;
    assert_eq!(distinct_outputs(&g).len(), N, "none lost");
    g.wait_ready().await;
    assert_eq!(common::azure::count(&q).await, 0, "every message deleted");
}
