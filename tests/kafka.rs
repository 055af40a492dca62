//! End to end on a real Apache Kafka broker: the real binary, a real function process.

mod common;

use common::kafka::*;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

struct Setup {
    input: String,
    output: String,
    dead: String,
    group: String,
}

impl Setup {
    async fn new(partitions: i32) -> Setup {
        require_broker();
        let s = Setup {
            input: unique("in"),
            output: unique("out"),
            dead: unique("dead"),
            group: unique("group"),
        };
        create_topic(&s.input, partitions).await;
        create_topic(&s.output, 3).await;
        create_topic(&s.dead, 1).await;
        s
    }

    fn yaml(&self, max_attempts: u32) -> String {
        format!(
            "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 16 }}
pipelines:
  k:
    trigger:
      type: kafka
      brokers: [\"{BROKER}\"]
      topics: [{input}]
      group: {group}
      commit_interval: 20ms
      options: {{ session.timeout.ms: 6000, heartbeat.interval.ms: 1000 }}
    function: f
    max_in_flight: 32
    retry: {{ max_attempts: {max_attempts}, backoff: fixed, initial_delay: 5ms }}
    dead_letter: {{ type: kafka, brokers: [\"{BROKER}\"], topic: {dead} }}
    outputs:
      - {{ name: out, type: kafka, brokers: [\"{BROKER}\"], topic: {output}, key: \"{{subject}}\" }}
",
            input = self.input,
            group = self.group,
            dead = self.dead,
            output = self.output,
        )
    }

    fn read_output(&self, n: usize, secs: u64) -> Vec<Consumed> {
        consume_until(&self.output, Duration::from_secs(secs), |r| {
            distinct_and_duplicates(r, "n").0 >= n
        })
    }
}

/// Per partition, the offsets the function was called with, in call order.
fn offsets_by_partition(g: &Gateway) -> HashMap<String, Vec<i64>> {
    let mut m: HashMap<String, Vec<i64>> = HashMap::new();
    for r in g.function_log() {
        let h = &r["headers"];
        let p = h["ce-kafkapartition"].as_str().unwrap().to_string();
        m.entry(p)
            .or_default()
            .push(h["ce-kafkaoffset"].as_str().unwrap().parse().unwrap());
    }
    m
}

#[tokio::test]
async fn ten_thousand_records_over_three_partitions_in_order_none_lost() {
    const N: usize = 10_000;
    let s = Setup::new(3).await;
    produce(&s.input, values(N, serde_json::json!({})), 100).await;
    let g = Gateway::start(&s.yaml(3)).await;
    let out = tokio::task::spawn_blocking({
        let s = Setup { ..s };
        move || (s.read_output(N, 180), s)
    })
    .await
    .unwrap();
    let (records, s) = out;
    let (distinct, _) = distinct_and_duplicates(&records, "n");
    assert_eq!(distinct, N, "every record reached the output topic");
    let by_partition = offsets_by_partition(&g);
    assert_eq!(by_partition.len(), 3, "all three partitions were consumed");
    for (p, offs) in &by_partition {
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
    assert_eq!(
        by_partition.values().map(Vec::len).sum::<usize>(),
        N,
        "each record called once"
    );
    // The output carries the CloudEvent attributes as ce_ headers and the key template.
    let r = &records[0];
    assert_eq!(
        r.headers.get("ce_specversion").map(String::as_str),
        Some("1.0")
    );
    assert!(r.headers["ce_id"].starts_with(&format!("{}/", s.input)));
    assert!(r.key.as_deref().unwrap().starts_with('k'));
    let m = g.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "switchyard_events_received_total",
            &[("trigger", "kafka")]
        ),
        N as f64
    );
    // The group's lag is reported, and reaches 0 once everything is committed.
    let mut lag = None;
    for _ in 0..60 {
        let m = g.metrics().await;
        if m.contains("switchyard_trigger_backlog{pipeline=\"k\"}") {
            lag = Some(metric_value(
                &m,
                "switchyard_trigger_backlog",
                &[("pipeline", "k")],
            ));
            if lag == Some(0.0) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(lag, Some(0.0), "backlog metric");
}

#[tokio::test]
async fn batches_hold_records_of_one_partition() {
    const N: usize = 300;
    let s = Setup::new(3).await;
    produce(&s.input, values(N, serde_json::json!({})), 30).await;
    let yaml = s.yaml(3).replace(
        "    max_in_flight: 32\n",
        "    max_in_flight: 64\n    batch: { max_events: 10, max_wait: 50ms }\n",
    );
    let g = Gateway::start(&yaml).await;
    let mut seen = std::collections::HashSet::new();
    eventually(60, "every record in some batch", || {
        seen.clear();
        for call in g.function_log() {
            let batch: Vec<serde_json::Value> =
                serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
            for e in batch {
                seen.insert(e["data"]["n"].as_u64().unwrap());
            }
        }
        seen.len() == N
    })
    .await;
    let calls = g.function_log();
    assert!(calls.len() < N / 2, "{} calls for {N} records", calls.len());
    for call in &calls {
        assert_eq!(
            call["headers"]["content-type"],
            "application/cloudevents-batch+json"
        );
        let batch: Vec<serde_json::Value> =
            serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
        assert!(batch.len() <= 10);
        let parts: std::collections::HashSet<_> =
            batch.iter().map(|e| e["kafkapartition"].clone()).collect();
        assert_eq!(parts.len(), 1, "a batch spans partitions: {parts:?}");
        let offs: Vec<i64> = batch
            .iter()
            .map(|e| e["kafkaoffset"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(offs.windows(2).all(|w| w[0] < w[1]), "batch out of order");
    }
}

#[tokio::test]
async fn random_function_failures_lose_nothing() {
    const N: usize = 2_000;
    let s = Setup::new(3).await;
    produce(
        &s.input,
        values(N, serde_json::json!({ "fail_rate": 0.2 })),
        50,
    )
    .await;
    let g = Gateway::start(&s.yaml(12)).await;
    let (records, s) = tokio::task::spawn_blocking(move || (s.read_output(N, 180), s))
        .await
        .unwrap();
    assert_eq!(distinct_and_duplicates(&records, "n").0, N);
    assert!(
        g.metric("switchyard_invocations_total", &[("outcome", "retry")])
            .await
            > 100.0,
        "failures happened"
    );
    for (p, offs) in offsets_by_partition(&g) {
        assert!(
            offs.windows(2).all(|w| w[0] <= w[1]),
            "partition {p} out of order across retries"
        );
    }
    let dead = consume_until(&s.dead, Duration::from_secs(2), |r| !r.is_empty());
    assert!(dead.is_empty(), "nothing dead-lettered");
}

#[tokio::test]
async fn sigkill_mid_stream_loses_nothing_and_repeats_at_most_the_in_flight_bound() {
    const N: usize = 3_000;
    let s = Setup::new(3).await;
    produce(
        &s.input,
        values(N, serde_json::json!({ "sleep_ms": 1 })),
        30,
    )
    .await;
    let mut g = Gateway::start(&s.yaml(3)).await;
    let s = tokio::task::spawn_blocking(move || {
        s.read_output(N / 3, 120);
        s
    })
    .await
    .unwrap();
    let _ = g.signal_and_wait(libc::SIGKILL);
    g.spawn();
    g.wait_ready().await;
    let (records, _s) = tokio::task::spawn_blocking(move || (s.read_output(N, 180), s))
        .await
        .unwrap();
    let (distinct, dups) = distinct_and_duplicates(&records, "n");
    assert_eq!(distinct, N, "none lost");
    // Repeated: at most max_in_flight (32) held by the engine, plus those delivered in the last
    // commit_interval (20 ms here, tens of records at this pace).
    eprintln!("duplicates after SIGKILL: {dups}");
    assert!(dups <= 64, "{dups} duplicates");
    let pids: std::collections::HashSet<_> =
        g.function_log().iter().map(|r| r["pid"].as_u64()).collect();
    assert_eq!(
        pids.len(),
        2,
        "the restarted gateway (and its function) did part of the work"
    );
}

#[tokio::test]
async fn sigterm_mid_stream_then_restart_repeats_nothing() {
    const N: usize = 2_000;
    let s = Setup::new(3).await;
    produce(
        &s.input,
        values(N, serde_json::json!({ "sleep_ms": 1 })),
        30,
    )
    .await;
    let mut g = Gateway::start(&s.yaml(3)).await;
    let s = tokio::task::spawn_blocking(move || {
        s.read_output(N / 4, 120);
        s
    })
    .await
    .unwrap();
    assert_eq!(
        g.signal_and_wait(libc::SIGTERM).code(),
        Some(0),
        "{}",
        g.log()
    );
    g.spawn();
    g.wait_ready().await;
    let (records, _s) = tokio::task::spawn_blocking(move || (s.read_output(N, 180), s))
        .await
        .unwrap();
    let (distinct, dups) = distinct_and_duplicates(&records, "n");
    assert_eq!(distinct, N);
    // Give a late duplicate the time to show up before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dups, 0, "a drained restart repeats nothing");
}

#[tokio::test]
async fn two_instances_share_partitions_and_one_takes_over_when_the_other_dies() {
    const N: usize = 3_000;
    let s = Setup::new(3).await;
    produce(
        &s.input,
        values(N, serde_json::json!({ "sleep_ms": 2 })),
        30,
    )
    .await;
    let yaml = s.yaml(3);
    let mut a = Gateway::start(&yaml).await;
    let b = Gateway::start(&yaml).await;
    eventually(60, "both instances get work", || {
        !a.function_log().is_empty() && !b.function_log().is_empty()
    })
    .await;
    let a_parts = offsets_by_partition(&a)
        .keys()
        .cloned()
        .collect::<std::collections::HashSet<_>>();
    let _ = a.signal_and_wait(libc::SIGKILL);
    let (records, _s) = tokio::task::spawn_blocking(move || (s.read_output(N, 180), s))
        .await
        .unwrap();
    assert_eq!(distinct_and_duplicates(&records, "n").0, N, "none lost");
    let b_parts = offsets_by_partition(&b)
        .keys()
        .cloned()
        .collect::<std::collections::HashSet<_>>();
    assert!(
        a_parts.iter().all(|p| b_parts.contains(p)),
        "b took over a's partitions {a_parts:?}, has {b_parts:?}"
    );
}

#[tokio::test]
async fn a_poison_record_goes_to_the_dead_letter_and_its_partition_moves_on() {
    const N: usize = 60;
    let s = Setup::new(1).await;
    let mut vals = values(N, serde_json::json!({}));
    vals[10]["status"] = 400.into();
    produce(&s.input, vals, 1).await;
    let _g = Gateway::start(&s.yaml(3)).await;
    let (records, s) = tokio::task::spawn_blocking(move || (s.read_output(N - 1, 60), s))
        .await
        .unwrap();
    assert_eq!(
        distinct_and_duplicates(&records, "n").0,
        N - 1,
        "records after the poison one were delivered"
    );
    let dead = consume_until(&s.dead, Duration::from_secs(30), |r| !r.is_empty());
    assert_eq!(dead.len(), 1);
    let d = &dead[0].payload;
    assert_eq!(d["switchyarderrorcode"], "400");
    assert_eq!(d["data"]["n"], 10);
    assert_eq!(d["id"], format!("{}/0/10", s.input));
    assert_eq!(
        dead[0].headers.get("content-type").map(String::as_str),
        Some("application/cloudevents+json")
    );
}

#[tokio::test]
async fn an_idle_topic_is_ready_without_a_record() {
    // Regression (found by the kill-loop suite): readiness used to wait for the first record, so
    // a gateway on an idle topic never became ready.
    let s = Setup::new(3).await;
    let g = Gateway::start(&s.yaml(3)).await;
    let body: serde_json::Value = g
        .client
        .get(g.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ready");
    assert!(g.function_log().is_empty());
}

/// A record Kafka refuses for what it is (larger than `message.max.bytes`, or a topic name the
/// protocol cannot carry) is an invalid write: dead-lettered after one attempt, while the
/// records around it flow.
#[tokio::test]
async fn a_record_kafka_refuses_is_dead_lettered_at_once() {
    const N: usize = 20;
    let s = Setup::new(1).await;
    let named = unique("named");
    create_topic(&format!("{named}.k0"), 1).await;
    let mut vals = values(N, serde_json::json!({}));
    vals[3]["huge_reply"] = 2_000.into();
    vals[8]["reply_subject"] = "two words".into();
    produce(&s.input, vals, 1).await;
    let pipeline = |name: &str, group: &str, output: &str| {
        format!(
            "
  {name}:
    trigger: {{ type: kafka, brokers: [\"{BROKER}\"], topics: [{input}], group: {group}, commit_interval: 20ms }}
    function: f
    retry: {{ max_attempts: 5, backoff: fixed, initial_delay: 5ms }}
    dead_letter: {{ type: kafka, brokers: [\"{BROKER}\"], topic: {dead} }}
    outputs:
      - {output}",
            input = s.input,
            dead = s.dead,
        )
    };
    let yaml = format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 8 }}
pipelines:{}{}
",
        pipeline(
            "size",
            &unique("g"),
            &format!(
                "{{ name: out, type: kafka, brokers: [\"{BROKER}\"], topic: {}, options: {{ message.max.bytes: \"1000\" }} }}",
                s.output
            )
        ),
        pipeline(
            "name",
            &unique("g"),
            &format!(
                "{{ name: out, type: kafka, brokers: [\"{BROKER}\"], topic: \"{named}.{{subject}}\" }}"
            )
        ),
    );
    let g = Gateway::start(&yaml).await;
    let (sized, named_out, dead) = tokio::task::spawn_blocking(move || {
        let wait = Duration::from_secs(60);
        let enough = |r: &[Consumed]| distinct_and_duplicates(r, "n").0 >= N - 1;
        (
            consume_until(&s.output, wait, enough),
            consume_until(&format!("{named}.k0"), wait, enough),
            consume_until(&s.dead, wait, |r| r.len() >= 2),
        )
    })
    .await
    .unwrap();
    assert_eq!(distinct_and_duplicates(&sized, "n").0, N - 1);
    assert!(sized.iter().all(|r| r.payload["n"] != 3));
    assert_eq!(distinct_and_duplicates(&named_out, "n").0, N - 1);
    assert!(named_out.iter().all(|r| r.payload["n"] != 8));
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        let d = &d.payload;
        let n = d["data"]["n"].as_u64().unwrap();
        assert!(n == 3 || n == 8, "{d}");
        assert_eq!(d["switchyarderrorcode"], "invalid", "{d}");
        assert_eq!(d["switchyardattempts"], "1", "not retried: {d}");
    }
    for p in ["size", "name"] {
        assert_eq!(
            g.metric(
                "switchyard_outputs_total",
                &[("pipeline", p), ("output", "out"), ("outcome", "retry")]
            )
            .await,
            0.0,
            "{p}"
        );
    }
}
