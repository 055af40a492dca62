//! RabbitMQ helpers for the end-to-end tests: a real broker on 127.0.0.1:5672 (guest/guest,
//! started by `scripts/services`). A missing broker fails the test, loudly.

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn require_broker() {
    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("no RabbitMQ broker on 127.0.0.1:5672: start it with `scripts/services start rabbitmq` (scripts/test does)");
    }
}

pub async fn channel() -> (Connection, Channel) {
    require_broker();
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// Declare a durable queue, with optional arguments.
pub async fn declare(name: &str, args: FieldTable) {
    let (_c, ch) = channel().await;
    ch.queue_declare(
        ShortString::from(name),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
}

/// The properties `publish` gives a message: persistent, JSON.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
}

/// Publish values to a queue (default exchange) with publisher confirms.
pub async fn publish(queue: &str, values: impl IntoIterator<Item = serde_json::Value>) {
    publish_with(queue, values.into_iter().map(|v| (v, json_properties()))).await
}

/// Publish values, each with its own properties, to a queue (default exchange) with publisher
/// confirms.
pub async fn publish_with(
    queue: &str,
    messages: impl IntoIterator<Item = (serde_json::Value, BasicProperties)>,
) {
    let (_c, ch) = channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for (v, properties) in messages {
        let body = v.to_string().into_bytes();
        let c = ch
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .unwrap();
        confirms.push(c);
        if confirms.len() >= 500 {
            for c in confirms.drain(..) {
                c.await.unwrap();
            }
        }
    }
    for c in confirms {
        c.await.unwrap();
    }
}

/// Consume (and ack) a queue until `until` says stop, or the timeout; returns the JSON bodies.
pub async fn consume_until(
    queue: &str,
    timeout: Duration,
    until: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    consume_mapped(queue, timeout, json_body, until).await
}

/// Consume (and ack) a queue until `n` messages came or the timeout; each message's properties
/// (headers and all) beside its JSON body.
pub async fn consume_with_properties(
    queue: &str,
    n: usize,
    timeout: Duration,
) -> Vec<(BasicProperties, serde_json::Value)> {
    consume_mapped(
        queue,
        timeout,
        |d| (d.properties.clone(), json_body(d)),
        |v| v.len() >= n,
    )
    .await
}

fn json_body(d: &Delivery) -> serde_json::Value {
    serde_json::from_slice(&d.data).unwrap_or(serde_json::Value::Null)
}

async fn consume_mapped<T>(
    queue: &str,
    timeout: Duration,
    map: impl Fn(&Delivery) -> T,
    until: impl Fn(&[T]) -> bool,
) -> Vec<T> {
    let (_c, ch) = channel().await;
    let mut consumer = ch
        .basic_consume(
            ShortString::from(queue),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !until(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Ok(Some(Ok(d))) =
            tokio::time::timeout(left.min(Duration::from_millis(500)), consumer.next()).await
        {
            out.push(map(&d));
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    out
}

pub fn distinct_and_duplicates(values: &[serde_json::Value], field: &str) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let dups = values
        .iter()
        .filter(|v| !seen.insert(v[field].to_string()))
        .count();
    (seen.len(), dups)
}

/// Run `rabbitmqctl` with a two-minute bound, so a node that does not come back fails the test
/// instead of hanging it.
pub fn rabbitmqctl(args: &[&str]) {
    let st = std::process::Command::new("timeout")
        .arg("120")
        .arg("rabbitmqctl")
        .args(args)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "rabbitmqctl {args:?} ({}, 124 = timed out): {}",
        st.status,
        String::from_utf8_lossy(&st.stderr)
    );
}

/// Messages in a queue (ready; unacked ones return here when their connection dies).
pub async fn message_count(queue: &str) -> usize {
    let (_c, ch) = channel().await;
    ch.queue_declare(
        ShortString::from(queue),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count() as usize
}
