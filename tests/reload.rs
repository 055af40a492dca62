//! Hot reload, end to end: the real binary, a real function process and a real RabbitMQ broker.
//! A config change (by SIGHUP or by editing the file) drains the changed and removed pipelines
//! without losing or repeating an event, starts the new ones, and leaves the rest alone; an
//! invalid config changes nothing.

mod common;

use common::kafka::unique;
use common::rabbitmq::*;
use common::*;
use lapin::types::FieldTable;
use std::time::Duration;

const N: usize = 400;

fn yaml(input: &str, output: &str, other: &str) -> String {
    format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 10s, concurrency: 8 }}
pipelines:
  keep:
    trigger: {{ type: http, path: /keep, response: sync }}
    function: f
  moving:
    trigger: {{ type: rabbitmq, url: \"{URL}\", queue: {input}, prefetch: 32 }}
    function: f
    outputs:
      - {{ name: out, type: rabbitmq, url: \"{URL}\", exchange: \"\", routing_key: {output} }}
{other}"
    )
}

const GONE: &str =
    "  gone:\n    trigger: { type: http, path: /gone, response: sync }\n    function: f\n";
const ADDED: &str =
    "  added:\n    trigger: { type: http, path: /added, response: sync }\n    function: f\n";

async fn reloads(g: &Gateway, outcome: &str) -> f64 {
    g.metric("switchyard_config_reloads_total", &[("outcome", outcome)])
        .await
}

#[tokio::test]
async fn reload_drains_changed_pipelines_without_loss_or_duplicates_and_keeps_the_rest() {
    let (input, out_a, out_b) = (unique("rin"), unique("routa"), unique("routb"));
    for q in [&input, &out_a, &out_b] {
        declare(q, FieldTable::default()).await;
    }
    let mut g = Gateway::start(&yaml(&input, &out_a, GONE)).await;
    assert_eq!(g.post("/gone", r#"{"n":-1}"#).await.0, 200);

    // 1. An invalid config (an unknown key) is refused; everything keeps running.
    g.write_config(&format!("{}    colour: blue\n", yaml(&input, &out_a, GONE)));
    g.signal(libc::SIGHUP);
    let gw = &g;
    for _ in 0..100 {
        if reloads(gw, "invalid").await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloads(&g, "invalid").await >= 1.0, "log:\n{}", g.log());
    assert!(
        g.log().contains("config reload refused") && g.log().contains("colour"),
        "the log says why: {}",
        g.log()
    );
    assert_eq!(
        g.post("/gone", r#"{"n":-2}"#).await.0,
        200,
        "the old config still runs"
    );

    // 2. A backlog the function works through slowly (8 at a time, 40 ms each), so the
    //    change lands with messages in flight.
    publish(
        &input,
        (0..N).map(|i| serde_json::json!({ "n": i, "sleep_ms": 40, "src": "queue" })),
    )
    .await;
    eventually(30, "a quarter of the backlog delivered", || {
        g.function_log()
            .iter()
            .filter(|r| r["body"].as_str().unwrap_or("").contains("queue"))
            .count()
            >= N / 4
    })
    .await;

    // A slow call on the untouched pipeline, spanning the reload.
    let client = g.client.clone();
    let keep_url = g.ingress_url("/keep");
    let slow = tokio::spawn(async move {
        client
            .post(keep_url)
            .header("content-type", "application/json")
            .body(r#"{"n":-3,"sleep_ms":2500}"#)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3. The valid change, noticed by the file watch alone: `moving` writes elsewhere, `gone`
    //    is removed, `added` is new.
    g.write_config(&yaml(&input, &out_b, ADDED));
    let mut applied = false;
    for _ in 0..200 {
        if reloads(&g, "applied").await >= 1.0 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "reload applied; log:\n{}", g.log());
    assert_eq!(
        slow.await.unwrap().expect("the slow call was answered"),
        200,
        "a call in flight on an unchanged pipeline finishes"
    );
    assert_eq!(g.post("/added", r#"{"n":-4}"#).await.0, 200);
    assert_eq!(g.post("/gone", r#"{"n":-5}"#).await.0, 404);

    // 4. Every message reached exactly one of the two outputs, once; both were used.
    let a = consume_until(&out_a, Duration::from_secs(5), |_| false).await;
    let b = consume_until(&out_b, Duration::from_secs(60), |v| {
        let all: Vec<_> = a.iter().chain(v).cloned().collect();
        distinct_and_duplicates(&all, "n").0 >= N
    })
    .await;
    let all: Vec<_> = a.iter().chain(&b).cloned().collect();
    let (distinct, dups) = distinct_and_duplicates(&all, "n");
    assert_eq!(
        (distinct, dups),
        (N, 0),
        "{} before the change, {} after; log:\n{}",
        a.len(),
        b.len(),
        g.log()
    );
    assert!(!a.is_empty() && !b.is_empty(), "{} / {}", a.len(), b.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(message_count(&input).await, 0, "the input queue is empty");

    // The function was called once per message (a drain repeats nothing), by one process: the
    // unchanged function was not restarted.
    let log = g.function_log();
    let calls: Vec<_> = log
        .iter()
        .filter(|r| r["body"].as_str().unwrap_or("").contains("queue"))
        .map(|r| serde_json::from_str::<serde_json::Value>(r["body"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(distinct_and_duplicates(&calls, "n"), (N, 0));
    let pids: std::collections::BTreeSet<_> = log.iter().map(|r| r["pid"].to_string()).collect();
    assert_eq!(pids.len(), 1, "one function process throughout: {pids:?}");
    let log = g.log();
    assert_eq!(
        log.matches("pipeline started").count(),
        5,
        "keep, moving and gone at start; moving and added after the reload:\n{log}"
    );
    assert!(log.contains("pipeline drained") && log.contains("pipeline removed"));

    // A reload that changes nothing restarts nothing.
    g.signal(libc::SIGHUP);
    for _ in 0..100 {
        if reloads(&g, "unchanged").await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloads(&g, "unchanged").await, 1.0);
    assert_eq!(g.log().matches("pipeline started").count(), 5);
    assert!(g.signal_and_wait(libc::SIGTERM).success());
}

/// A changed function on Kafka: the function process is replaced and its pipeline drains (the
/// consumer commits and leaves the group) before the new one joins; every record is called
/// once and reaches the output once.
#[tokio::test]
async fn a_changed_function_on_kafka_is_replaced_without_loss_or_duplicates() {
    use common::kafka::{consume_until as kafka_read, create_topic, produce, BROKER};
    const N: usize = 300;
    let (input, output, group) = (unique("kin"), unique("kout"), unique("kgroup"));
    create_topic(&input, 3).await;
    create_topic(&output, 1).await;
    let yaml = |version: &str| {
        format!(
            "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 10s, concurrency: 8, env: {{ VERSION: \"{version}\" }} }}
pipelines:
  k:
    trigger:
      type: kafka
      brokers: [\"{BROKER}\"]
      topics: [{input}]
      group: {group}
      options: {{ session.timeout.ms: 6000, heartbeat.interval.ms: 1000 }}
    function: f
    ordering: none
    outputs:
      - {{ name: out, type: kafka, brokers: [\"{BROKER}\"], topic: {output} }}
"
        )
    };
    let mut g = Gateway::start(&yaml("1")).await;
    produce(
        &input,
        (0..N).map(|i| serde_json::json!({ "n": i, "sleep_ms": 40, "src": "kafka" })),
        7,
    )
    .await;
    eventually(60, "a quarter of the records called", || {
        g.function_log()
            .iter()
            .filter(|r| r["body"].as_str().unwrap_or("").contains("kafka"))
            .count()
            >= N / 4
    })
    .await;
    g.write_config(&yaml("2"));
    g.signal(libc::SIGHUP);

    let out = tokio::task::spawn_blocking(move || {
        kafka_read(&output, Duration::from_secs(120), |r| r.len() >= N)
    })
    .await
    .unwrap();
    let values: Vec<_> = out.iter().map(|c| c.payload.clone()).collect();
    assert_eq!(
        distinct_and_duplicates(&values, "n"),
        (N, 0),
        "log:\n{}",
        g.log()
    );
    let log = g.function_log();
    let calls: Vec<_> = log
        .iter()
        .filter(|r| r["body"].as_str().unwrap_or("").contains("kafka"))
        .collect();
    let bodies: Vec<serde_json::Value> = calls
        .iter()
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        distinct_and_duplicates(&bodies, "n"),
        (N, 0),
        "each record called once"
    );
    // Two processes, one after the other: the old one served nothing after the new one began.
    let pids: Vec<String> = calls.iter().map(|r| r["pid"].to_string()).collect();
    let first_new = pids
        .iter()
        .position(|p| *p != pids[0])
        .expect("a new process");
    assert!(
        pids[first_new..].iter().all(|p| *p == pids[first_new]),
        "{pids:?}"
    );
    assert!((N / 4..N).contains(&first_new));
    assert_eq!(reloads(&g, "applied").await, 1.0);
    assert!(g.signal_and_wait(libc::SIGTERM).success());
}
