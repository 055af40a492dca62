//! Soak: a steady load through RabbitMQ → a function that fails now and then → RabbitMQ, for
//! SOAK_MINUTES (default 30) at SOAK_RATE messages/s (default 300). Every 30 s it prints the
//! gateway's RSS and open file descriptors; at the end, start/peak/end of both and whether
//! anything was lost. Run with `scripts/soak` (it starts RabbitMQ).

// The benchmark harness's process helpers (free ports, /proc memory), shared rather than copied.
#[allow(dead_code)]
#[path = "../bench/src/procs.rs"]
mod procs;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use procs::{free_port, mem_mib};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// An echo function that answers 503 to every 40th request.
async fn flaky_echo() -> SocketAddr {
    use axum::routing::post;
    let n = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/",
        post(move |body: axum::body::Bytes| {
            let n = n.clone();
            async move {
                if n.fetch_add(1, Ordering::Relaxed) % 40 == 39 {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::body::Bytes::new(),
                    )
                } else {
                    (axum::http::StatusCode::OK, body)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn declare(ch: &lapin::Channel, q: &str) {
    ch.queue_declare(
        ShortString::from(q),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
}

#[tokio::main]
async fn main() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let rate: u64 = std::env::var("SOAK_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (qin, qout) = (format!("soak-in-{id}"), format!("soak-out-{id}"));
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (scripts/services start rabbitmq)");
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, &qin).await;
    declare(&ch, &qout).await;

    let function = flaky_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "admin: {{ listen: \"127.0.0.1:{}\" }}
functions:
  echo: {{ url: \"http://{function}/\", concurrency: 32 }}
pipelines:
  soak:
    trigger: {{ type: rabbitmq, url: \"{AMQP}\", queue: {qin}, prefetch: 64 }}
    function: echo
    retry: {{ max_attempts: 5, initial_delay: 10ms, max_delay: 200ms }}
    outputs:
      - {{ name: out, type: rabbitmq, url: \"{AMQP}\", routing_key: {qout} }}
",
        free_port()
    );
    let cfg = dir.path().join("switchyard.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = gateway.id();

    // Consumer of the output: distinct values and duplicates.
    let seen = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let dups = Arc::new(AtomicUsize::new(0));
    {
        let ch = conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                ShortString::from(qout.as_str()),
                ShortString::from("soak"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let (seen, dups) = (seen.clone(), dups.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let n: u64 = std::str::from_utf8(&d.data)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX);
                if !seen.lock().unwrap().insert(n) {
                    dups.fetch_add(1, Ordering::Relaxed);
                }
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
            }
        });
    }

    // Producer: a steady rate with publisher confirms.
    let produced = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let producer = {
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let (produced, stop, qin) = (produced.clone(), stop.clone(), qin.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let per_tick = (rate / 10).max(1);
            while !stop.is_cancelled() {
                tick.tick().await;
                let mut confirms = Vec::new();
                for _ in 0..per_tick {
                    let n = produced.load(Ordering::Relaxed);
                    confirms.push(
                        ch.basic_publish(
                            ShortString::from(""),
                            ShortString::from(qin.as_str()),
                            BasicPublishOptions::default(),
                            n.to_string().as_bytes(),
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                        .unwrap(),
                    );
                    produced.fetch_add(1, Ordering::Relaxed);
                }
                for c in confirms {
                    c.await.unwrap();
                }
            }
        })
    };

    println!("soak: {minutes} min at {rate}/s through rabbitmq → flaky echo (1 in 40 answers 503) → rabbitmq");
    println!("| minute | produced | delivered | RSS MiB | open fds |");
    println!("|---|---|---|---|---|");
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut samples: Vec<(f64, usize)> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (rss, fd) = (mem_mib(pid, "VmRSS:"), fds(pid));
        samples.push((rss, fd));
        if samples.len() % 6 == 1 || started.elapsed() >= total {
            println!(
                "| {:.1} | {} | {} | {rss:.1} | {fd} |",
                started.elapsed().as_secs_f64() / 60.0,
                produced.load(Ordering::Relaxed),
                seen.lock().unwrap().len()
            );
        }
        if started.elapsed() >= total {
            break;
        }
    }
    stop.cancel();
    producer.await.unwrap();
    let produced = produced.load(Ordering::Relaxed) as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().len() < produced && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = seen.lock().unwrap().len();
    let peak = mem_mib(pid, "VmHWM:");
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = gateway.wait();
    // Skip the first minute's samples for "start": connections and pools warm up.
    let warm = samples
        .get(12)
        .or(samples.first())
        .copied()
        .unwrap_or_default();
    let end = samples.last().copied().unwrap_or_default();
    let peak_fd = samples.iter().map(|s| s.1).max().unwrap_or(0);
    println!();
    println!("| | start (after 1 min) | peak | end |");
    println!("|---|---|---|---|");
    println!("| RSS MiB | {:.1} | {peak:.1} | {:.1} |", warm.0, end.0);
    println!("| open fds | {} | {peak_fd} | {} |", warm.1, end.1);
    println!(
        "produced {produced}, delivered {delivered} distinct, {} duplicates, lost {}",
        dups.load(Ordering::Relaxed),
        produced.saturating_sub(delivered)
    );
    assert_eq!(delivered, produced, "nothing lost");
}
