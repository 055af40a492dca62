//! A RabbitMQ broker restart mid-stream. Its own test binary, so restarting the shared broker
//! cannot disturb the other RabbitMQ tests (test binaries run one after another).

mod common;

use common::kafka::unique;
use common::rabbitmq::*;
use common::*;
use lapin::types::FieldTable;
use std::time::Duration;

#[tokio::test]
async fn a_broker_restart_mid_stream_loses_nothing_and_the_gateway_recovers() {
    const N: usize = 3_000;
    let (input, output) = (unique("in"), unique("out"));
    declare(&input, FieldTable::default()).await;
    declare(&output, FieldTable::default()).await;
    let vals: Vec<serde_json::Value> = (0..N)
        .map(|n| serde_json::json!({ "n": n, "sleep_ms": 20 }))
        .collect();
    publish(&input, vals).await;
    let yaml = format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 16 }}
pipelines:
  r:
    trigger: {{ type: rabbitmq, url: \"{URL}\", queue: {input}, prefetch: 32 }}
    function: f
    retry: {{ max_attempts: 5, backoff: exponential, initial_delay: 100ms, max_delay: 2s }}
    outputs:
      - {{ name: out, type: rabbitmq, url: \"{URL}\", exchange: \"\", routing_key: {output} }}
"
    );
    let g = Gateway::start(&yaml).await;
    let first = consume_until(&output, Duration::from_secs(120), |v| v.len() >= N / 3).await;
    rabbitmqctl(&["stop_app"]);
    // While the broker is away, /readyz says so and names the trigger.
    let not_ready = g.wait_not_ready(100, Duration::from_millis(50)).await;
    assert!(
        not_ready["not_ready"]["pipelines.r.trigger"]
            .as_str()
            .is_some_and(|s| s.contains("rabbitmq")),
        "readyz during the outage: {not_ready}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let rest = consume_until(&output, Duration::from_secs(240), |v| {
        let mut all = first.clone();
        all.extend_from_slice(v);
        distinct_and_duplicates(&all, "n").0 >= N
    })
    .await;
    let mut all = first;
    all.extend(rest);
    let after = g
        .function_log()
        .iter()
        .filter(|r| r["t"].as_f64().unwrap() > restarted)
        .count();
    assert!(
        after > N / 10,
        "the restart came mid-stream: {after} calls after it"
    );
    assert_eq!(
        distinct_and_duplicates(&all, "n").0,
        N,
        "none lost; gateway log:\n{}",
        g.log()
    );
    assert!(
        g.log().contains("reconnecting"),
        "the trigger saw the broker go away"
    );
    g.wait_ready().await;
}
