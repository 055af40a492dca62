//! Benchmark: RabbitMQ queue → echo function → RabbitMQ queue, and JetStream → echo function →
//! JetStream, each beside the broker's raw publish rate (with publisher confirms / PubAcks) and
//! raw consume rate (with acks), measured in the same run.
//!
//! Then an Azure Storage queue → echo function → queue on the emulator, beside the emulator's raw
//! put rate and raw receive+delete rate.
//!
//! Needs the brokers of `scripts/services` (`scripts/bench` starts them).
//! Knobs: BENCH_MESSAGES (default 50000), BENCH_AZURE_MESSAGES (default 5000: the emulator is
//! one Node.js process and far slower than the brokers).

mod common;

use async_nats::jetstream::{self, consumer::pull, stream};
use common::{free_port, mem_mib, rust_echo};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS: &str = "nats://127.0.0.1:4222";

fn unique(p: &str) -> String {
    format!("bench{p}{}", uuid::Uuid::new_v4().simple())
}

fn payload(i: usize) -> Vec<u8> {
    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes()
}

async fn rabbit_declare(q: &str) {
    let c = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
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

/// Publish `n` persistent messages with confirms (1000 outstanding at most); messages/s.
async fn rabbit_publish(q: &str, n: usize) -> f64 {
    let c = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(
            ch.basic_publish(
                ShortString::from(""),
                ShortString::from(q),
                BasicPublishOptions::default(),
                &payload(i),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json")),
            )
            .await
            .unwrap(),
        );
        if pending.len() >= 1000 {
            for p in pending.drain(..) {
                p.await.unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Consume and ack `n` messages (prefetch 256); messages/s from the first to the last.
async fn rabbit_consume(q: &str, n: usize) -> (f64, usize) {
    let c = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
    ch.basic_qos(256, Default::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            ShortString::from(q),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = 0;
    let mut first = None;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
            Ok(Some(Ok(d))) => {
                first.get_or_insert_with(Instant::now);
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
                got += 1;
            }
            _ => break,
        }
    }
    (
        got as f64
            / first
                .map(|f| f.elapsed().as_secs_f64())
                .unwrap_or(f64::INFINITY),
        got,
    )
}

async fn js_stream(name: &str) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(NATS).await.unwrap());
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

/// Publish `n` messages awaiting PubAcks (1000 outstanding at most); messages/s.
async fn js_publish(js: &jetstream::Context, subject: &str, n: usize) -> f64 {
    let started = Instant::now();
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(
            js.publish(subject.to_string(), payload(i).into())
                .await
                .unwrap(),
        );
        if acks.len() >= 1000 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Pull and ack `n` messages with a durable-like consumer; messages/s from first to last.
async fn js_consume(js: &jetstream::Context, name: &str, n: usize) -> (f64, usize) {
    let s = js.get_stream(name).await.unwrap();
    let consumer = s
        .create_consumer(pull::Config {
            durable_name: Some(unique("reader")),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut got = 0;
    let mut first = None;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(60), msgs.next()).await {
            Ok(Some(Ok(m))) => {
                first.get_or_insert_with(Instant::now);
                m.ack().await.unwrap();
                got += 1;
            }
            Ok(Some(Err(_))) => {}
            _ => break,
        }
    }
    (
        got as f64
            / first
                .map(|f| f.elapsed().as_secs_f64())
                .unwrap_or(f64::INFINITY),
        got,
    )
}

mod azure {
    use azure_storage_queue::models::{
        QueueClientGetPropertiesResultHeaders, QueueClientReceiveMessagesOptions, QueueMessage,
    };
    use azure_storage_queue::QueueClient;
    use base64::Engine;
    use futures::StreamExt;
    use std::time::Instant;
    use switchyard_azure_storage::connection::Service;

    pub fn queue(name: &str) -> QueueClient {
        let a =
            switchyard_azure_storage::account("UseDevelopmentStorage=true", None, Service::Queue)
                .unwrap();
        switchyard_azure_storage::queue_client(&a, name).unwrap()
    }

    /// Put `n` messages (base64 of the payload), 32 requests in flight; messages/s.
    pub async fn put(q: &QueueClient, n: usize) -> f64 {
        q.create(None).await.unwrap();
        let started = Instant::now();
        futures::stream::iter(0..n)
            .map(|i| async move {
                let text = base64::engine::general_purpose::STANDARD.encode(super::payload(i));
                let m = QueueMessage {
                    message_text: Some(text),
                };
                q.send_message(m.try_into().unwrap(), None).await.unwrap();
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        n as f64 / started.elapsed().as_secs_f64()
    }

    /// Receive 32 at a time and delete each (all deletes of a batch at once), until `n` are
    /// gone; messages/s. The gateway's own loop, without the function.
    pub async fn receive_delete(q: &QueueClient, n: usize) -> f64 {
        let started = Instant::now();
        let mut done = 0;
        while done < n {
            let options = QueueClientReceiveMessagesOptions {
                number_of_messages: Some(32),
                visibility_timeout: Some(60),
                ..Default::default()
            };
            let got = q
                .receive_messages(Some(options))
                .await
                .unwrap()
                .into_model()
                .unwrap()
                .items
                .unwrap_or_default();
            done += got.len();
            futures::future::join_all(got.iter().map(|m| {
                q.delete_message(
                    m.message_id.as_deref().unwrap(),
                    m.pop_receipt.as_deref().unwrap(),
                    None,
                )
            }))
            .await;
        }
        n as f64 / started.elapsed().as_secs_f64()
    }

    pub async fn count(q: &QueueClient) -> usize {
        q.get_properties(None)
            .await
            .map(|r| r.approximate_messages_count().ok().flatten().unwrap_or(0) as usize)
            .unwrap_or(0)
    }
}

fn start_gateway(
    dir: &std::path::Path,
    function: SocketAddr,
    pipeline: &str,
) -> std::process::Child {
    let yaml = format!(
        "admin: {{ listen: \"127.0.0.1:{}\" }}\nfunctions:\n  echo: {{ url: \"http://{function}/\", concurrency: 64 }}\npipelines:\n  bench:\n{pipeline}",
        free_port()
    );
    let cfg = dir.join("switchyard.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: std::process::Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let function = rust_echo().await;
    let dir = tempfile::tempdir().unwrap();
    println!("switchyard queue benchmark: {n} messages of about 210 bytes, 2 cores, echo function in-process");
    println!();
    println!("| broker | raw publish (confirmed)/s | raw consume (acked)/s | switchyard end to end/s | vs raw consume | vs raw publish | gateway peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");

    // RabbitMQ.
    let (rin, rout) = (unique("in"), unique("out"));
    rabbit_declare(&rin).await;
    rabbit_declare(&rout).await;
    let pub_rate = rabbit_publish(&rin, n).await;
    let raw_in = unique("raw");
    rabbit_declare(&raw_in).await;
    rabbit_publish(&raw_in, n).await;
    let (con_rate, _) = rabbit_consume(&raw_in, n).await;
    let g = start_gateway(
        dir.path(),
        function,
        &format!(
            "    trigger: {{ type: rabbitmq, url: \"{AMQP}\", queue: {rin}, prefetch: 256 }}\n    function: echo\n    outputs:\n      - {{ name: out, type: rabbitmq, url: \"{AMQP}\", routing_key: {rout} }}\n"
        ),
    );
    let (e2e, got) = rabbit_consume(&rout, n).await;
    let mem = mem_mib(g.id(), "VmHWM:");
    stop(g);
    assert_eq!(got, n, "rabbitmq: {got} of {n} arrived");
    println!(
        "| RabbitMQ queue → echo → queue | {pub_rate:.0} | {con_rate:.0} | {e2e:.0} | {:.2} | {:.2} | {mem:.1} |",
        e2e / con_rate,
        e2e / pub_rate
    );

    // JetStream.
    let (sin, sout, sraw) = (unique("IN"), unique("OUT"), unique("RAW"));
    let js = js_stream(&sin).await;
    js_stream(&sout).await;
    js_stream(&sraw).await;
    let jpub = js_publish(&js, &format!("{sin}.x"), n).await;
    js_publish(&js, &format!("{sraw}.x"), n).await;
    let (jcon, _) = js_consume(&js, &sraw, n).await;
    let g = start_gateway(
        dir.path(),
        function,
        &format!(
            "    trigger: {{ type: nats, url: \"{NATS}\", jetstream: {{ stream: {sin}, durable: gw }} }}\n    function: echo\n    outputs:\n      - {{ name: out, type: nats, url: \"{NATS}\", subject: \"{sout}.y\", jetstream: true }}\n"
        ),
    );
    let (je2e, got) = js_consume(&js, &sout, n).await;
    let mem = mem_mib(g.id(), "VmHWM:");
    stop(g);
    assert_eq!(got, n, "jetstream: {got} of {n} arrived");
    println!(
        "| JetStream → echo → JetStream | {jpub:.0} | {jcon:.0} | {je2e:.0} | {:.2} | {:.2} | {mem:.1} |",
        je2e / jcon,
        je2e / jpub
    );

    // Azure Storage queue on the emulator.
    let an: usize = std::env::var("BENCH_AZURE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let (ain, aout, araw) = (unique("in"), unique("out"), unique("raw"));
    let (qin, qout, qraw) = (azure::queue(&ain), azure::queue(&aout), azure::queue(&araw));
    let aput = azure::put(&qin, an).await;
    azure::put(&qraw, an).await;
    let aget = azure::receive_delete(&qraw, an).await;
    qout.create(None).await.unwrap();
    let conn = "UseDevelopmentStorage=true";
    let started = Instant::now();
    let g = start_gateway(
        dir.path(),
        function,
        &format!(
            "    trigger: {{ type: azure_queue, connection_string: \"{conn}\", queue: {ain}, batch_size: 32, max_polling_interval: 1s }}\n    function: echo\n    outputs:\n      - {{ name: out, type: azure_queue, connection_string: \"{conn}\", queue: {aout} }}\n"
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while azure::count(&qout).await < an {
        assert!(Instant::now() < deadline, "azure: not all {an} arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ae2e = an as f64 / started.elapsed().as_secs_f64();
    let mem = mem_mib(g.id(), "VmHWM:");
    stop(g);
    println!(
        "| Azure Storage queue (Azurite, {an} msgs) → echo → queue | {aput:.0} (put) | {aget:.0} (get+delete) | {ae2e:.0} | {:.2} | {:.2} | {mem:.1} |",
        ae2e / aget,
        ae2e / aput
    );
}
