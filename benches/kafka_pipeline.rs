//! Benchmark: kafka trigger → echo function → kafka output, beside the raw produce and raw
//! consume rates of the same broker, in the same run.
//!
//! Needs the broker of `scripts/services` on 127.0.0.1:9092 (`scripts/bench` starts it).
//! Knobs: BENCH_RECORDS (default 100000), BENCH_RECORD_BYTES (default 256).

mod common;

use common::{free_port, mem_mib, rust_echo};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1:9092";

fn unique(p: &str) -> String {
    format!("bench-{p}-{}", uuid::Uuid::new_v4().simple())
}

async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .create()
        .unwrap();
    for r in admin
        .create_topics(
            [&NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

/// Produce `n` records as fast as the broker takes them (acks=all, idempotent, as switchyard's
/// output does); records/s.
async fn raw_produce(topic: &str, n: usize, size: usize) -> f64 {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(size.saturating_sub(10)));
    let started = Instant::now();
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..n {
        let p = p.clone();
        let payload = payload.clone();
        let topic = topic.to_string();
        pending.push(async move {
            let key = format!("k{}", i % 1000);
            p.send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        });
        if pending.len() == 10_000 {
            futures::future::join_all(std::mem::take(&mut pending)).await;
        }
    }
    futures::future::join_all(pending).await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// Read `n` records from the start of a topic; returns records/s (0 on timeout).
fn raw_consume(topic: &str, n: usize, timeout: Duration) -> (f64, usize) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut got = 0;
    let mut started = None;
    let deadline = Instant::now() + timeout;
    while got < n && Instant::now() < deadline {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    let secs = started
        .map(|s| s.elapsed().as_secs_f64())
        .unwrap_or(f64::INFINITY);
    (got as f64 / secs, got)
}

/// The function's own ceiling: `n` direct calls, `c` at a time, records/s.
async fn raw_function(function: SocketAddr, n: usize, c: usize, size: usize) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .build()
        .unwrap();
    let url = format!("http://{function}/");
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(size.saturating_sub(10)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                for _ in 0..n / c {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    let _ = r.bytes().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (n / c * c) as f64 / started.elapsed().as_secs_f64()
}

/// Run the gateway over `input` (already filled with `n` records) until the output topic has
/// `n` records; returns (records/s from the first output record to the last, peak RSS MiB).
/// Start-up (process start, group join) is left out: it is a one-off, not throughput.
async fn through_gateway(
    function: SocketAddr,
    input: &str,
    n: usize,
    pipeline_extra: &str,
) -> (f64, f64) {
    let output = unique("out");
    create_topic(&output, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let yaml = format!(
        "admin: {{ listen: \"127.0.0.1:{admin}\" }}
functions:
  echo: {{ url: \"http://{function}/\", concurrency: 64 }}
pipelines:
  bench:
    trigger: {{ type: kafka, brokers: [\"{BROKER}\"], topics: [{input}], group: {group} }}
    function: echo
{pipeline_extra}
    outputs:
      - {{ name: out, type: kafka, brokers: [\"{BROKER}\"], topic: {output} }}
",
        group = unique("group")
    );
    let cfg = dir.path().join("switchyard.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = output.clone();
    let (rate, got) =
        tokio::task::spawn_blocking(move || raw_consume(&out, n, Duration::from_secs(600)))
            .await
            .unwrap();
    eprintln!(
        "gateway run took {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    let hwm = mem_mib(pid, "VmHWM:");
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    assert_eq!(got, n, "the gateway delivered {got} of {n}");
    (rate, hwm)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let size: usize = std::env::var("BENCH_RECORD_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    if std::net::TcpStream::connect(BROKER).is_err() {
        panic!("no Kafka broker on {BROKER}: run scripts/services start kafka");
    }
    let function = rust_echo().await;
    let input = unique("in");
    create_topic(&input, 3).await;
    let produce_rate = raw_produce(&input, n, size).await;
    let inp = input.clone();
    let (consume_rate, _) =
        tokio::task::spawn_blocking(move || raw_consume(&inp, n, Duration::from_secs(300)))
            .await
            .unwrap();
    println!("switchyard kafka benchmark: {n} records of {size} bytes, 3 partitions, 2 cores, echo function in-process");
    println!();
    println!("| scenario | records/s | vs raw consume | vs raw produce | vs function direct | gateway peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    println!("| raw produce (acks=all, idempotent) | {produce_rate:.0} | | | | |");
    println!("| raw consume | {consume_rate:.0} | | | | |");
    let function_rate = raw_function(function, n.min(50_000), 64, size).await;
    println!("| echo function called directly, 64 at a time | {function_rate:.0} | | | | |");
    let mut rows = Vec::new();
    for (name, extra) in [
        ("switchyard, ordering: partition", "    ordering: partition"),
        ("switchyard, ordering: none", "    ordering: none"),
        (
            "switchyard, batches of 100 per partition",
            "    batch: { max_events: 100, max_wait: 20ms }",
        ),
    ] {
        let (rate, rss) = through_gateway(function, &input, n, extra).await;
        println!(
            "| {name} | {rate:.0} | {:.3} | {:.3} | {:.2} | {rss:.1} |",
            rate / consume_rate,
            rate / produce_rate,
            rate / function_rate
        );
        rows.push(serde_json::json!({ "scenario": name, "records_per_s": rate, "ratio_consume": rate / consume_rate, "ratio_produce": rate / produce_rate, "peak_rss_mib": rss }));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let doc = serde_json::json!({ "records": n, "record_bytes": size, "raw_produce": produce_rate, "raw_consume": consume_rate, "function_direct": function_rate, "gateway": rows });
    std::fs::write(
        out.join("kafka_pipeline.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    println!();
    println!("written to target/bench/kafka_pipeline.json");
}
