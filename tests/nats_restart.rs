//! A nats-server restart mid-stream. Its own test binary, so restarting the shared server
//! cannot disturb the other NATS tests (test binaries run one after another).

mod common;

use common::kafka::unique;
use common::rabbitmq::{self as rmq, distinct_and_duplicates};
use common::*;
use lapin::types::FieldTable;
use std::time::Duration;

/// Stop the running nats-server and start it again with the same arguments (same store dir,
/// so JetStream keeps its data).
fn restart_nats_server() {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "nats-server -a 127.0.0.1 -p 4222"])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("a running nats-server")
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    // The server outlives this test on purpose (later tests use it), so it is not waited for.
    #[allow(clippy::zombie_processes)]
    std::process::Command::new(&args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect("127.0.0.1:4222").is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nats-server did not come back");
}

#[tokio::test]
async fn a_nats_server_restart_mid_stream_loses_nothing_and_the_gateway_recovers() {
    const N: usize = 3_000;
    let (stream, out) = (unique("JSR"), unique("out"));
    common::nats::create_stream(&stream).await;
    rmq::declare(&out, FieldTable::default()).await;
    let vals: Vec<serde_json::Value> = (0..N)
        .map(|n| serde_json::json!({ "n": n, "sleep_ms": 20 }))
        .collect();
    common::nats::publish(&format!("{stream}.x"), vals).await;
    let yaml = format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 16 }}
pipelines:
  j:
    trigger: {{ type: nats, url: \"{}\", jetstream: {{ stream: {stream}, durable: gw, ack_wait: 5s }} }}
    function: f
    retry: {{ max_attempts: 5, backoff: exponential, initial_delay: 100ms, max_delay: 2s }}
    outputs:
      - {{ name: out, type: rabbitmq, url: \"{}\", routing_key: {out} }}
",
        common::nats::URL,
        rmq::URL
    );
    let g = Gateway::start(&yaml).await;
    let first = rmq::consume_until(&out, Duration::from_secs(120), |v| v.len() >= N / 3).await;
    let restart = tokio::task::spawn_blocking(restart_nats_server);
    // While the server is away, /readyz says so and names the trigger.
    let not_ready = g.wait_not_ready(100, Duration::from_millis(30)).await;
    restart.await.unwrap();
    assert!(
        not_ready["not_ready"]["pipelines.j.trigger"]
            .as_str()
            .is_some_and(|s| s.contains("nats")),
        "readyz during the outage: {not_ready}"
    );
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let rest = rmq::consume_until(&out, Duration::from_secs(240), |v| {
        let mut all = first.clone();
        all.extend_from_slice(v);
        distinct_and_duplicates(&all, "n").0 >= N
    })
    .await;
    let mut all = first;
    all.extend(rest);
    assert_eq!(
        distinct_and_duplicates(&all, "n").0,
        N,
        "none lost; gateway log:\n{}",
        g.log()
    );
    let after = g
        .function_log()
        .iter()
        .filter(|r| r["t"].as_f64().unwrap() > restarted)
        .count();
    assert!(
        after > N / 10,
        "the restart came mid-stream: {after} calls after it"
    );
    g.wait_ready().await;
}
