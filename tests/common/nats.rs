//! NATS helpers for the end-to-end tests: a real nats-server with JetStream on 127.0.0.1:4222
//! (started by `scripts/services`). A missing server fails the test, loudly.

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use std::time::{Duration, Instant};

pub const URL: &str = "nats://127.0.0.1:4222";

pub fn require_server() {
    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:4222".parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("no nats-server on 127.0.0.1:4222: start it with `scripts/services start nats` (scripts/test does)");
    }
}

pub async fn js() -> jetstream::Context {
    require_server();
    jetstream::new(async_nats::connect(URL).await.unwrap())
}

/// Create a file-backed stream over `<name>.>`.
pub async fn create_stream(name: &str) {
    js().await
        .create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Publish values to `subject`, awaiting every PubAck.
pub async fn publish(subject: &str, values: impl IntoIterator<Item = serde_json::Value>) {
    let js = js().await;
    let mut acks = Vec::new();
    for v in values {
        acks.push(
            js.publish(subject.to_string(), v.to_string().into())
                .await
                .unwrap(),
        );
        if acks.len() >= 500 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// The messages of a stream from the start, headers and all (an ephemeral consumer, no acks).
pub async fn messages_from_start(name: &str) -> pull::Stream {
    let js = js().await;
    let s = js.get_stream(name).await.unwrap();
    let consumer = s
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    consumer.messages().await.unwrap()
}

/// Read a stream from the start (an ephemeral consumer) until `until` says stop or the timeout.
pub async fn read_stream(
    name: &str,
    timeout: Duration,
    until: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut msgs = messages_from_start(name).await;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !until(&out) && Instant::now() < deadline {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), msgs.next()).await
        {
            out.push(serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null));
        }
    }
    out
}

/// What a durable still owes: messages not yet delivered plus those delivered and not acked.
pub async fn owed(stream: &str, durable: &str) -> usize {
    let js = js().await;
    let s = js.get_stream(stream).await.unwrap();
    let mut c: jetstream::consumer::Consumer<pull::Config> = s.get_consumer(durable).await.unwrap();
    let info = c.info().await.unwrap();
    info.num_pending as usize + info.num_ack_pending
}
