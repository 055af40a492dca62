//! The `nats` output: core publish (flushed), or JetStream publish awaiting the PubAck with a
//! `Nats-Msg-Id` header so JetStream deduplicates a repeated write.

use crate::config::NatsOutputConfig;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::{HeaderMap, HeaderName, HeaderValue, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use switchyard_sdk::cloudevents::encode_header_value;
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::{Output, Record};
use tokio::sync::{mpsc, oneshot, OnceCell};

/// Publishes values; connects on first use and reconnects by itself.
pub struct NatsOutput {
    config: NatsOutputConfig,
    queue: OnceCell<mpsc::Sender<Job>>,
}

/// One write handed to the publishing task.
struct Job {
    subject: Subject,
    headers: HeaderMap,
    payload: Bytes,
    /// JetStream: the future of the PubAck; core: `None` once the round is flushed.
    sent: oneshot::Sender<Result<Option<PublishAckFuture>, OutputError>>,
}

/// The most writes the publishing task takes in one round.
const BATCH: usize = 256;

impl NatsOutputConfig {
    /// Build the output.
    pub fn build(&self) -> Result<NatsOutput, BuildError> {
        Ok(NatsOutput {
            config: self.clone(),
            queue: OnceCell::new(),
        })
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> OutputError {
    OutputError::Connect {
        source: Box::new(e),
    }
}

impl NatsOutput {
    /// The publishing task's queue; the first call connects and starts the task, which ends
    /// when the output is dropped.
    async fn queue(&self) -> Result<&mpsc::Sender<Job>, OutputError> {
        self.queue
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .name("switchyard-output")
                    .connect(self.config.url.expose())
                    .await
                    .map_err(err)?;
                let js = self
                    .config
                    .jetstream
                    .then(|| async_nats::jetstream::new(client.clone()));
                let (tx, rx) = mpsc::channel(BATCH * 4);
                tokio::spawn(publish(client, js, rx));
                Ok(tx)
            })
            .await
    }
}

/// Publish every write from one task, in rounds (see [`crate::fill_round`]): one `write(2)`
/// per round instead of one per message. `js` is the JetStream context, `None` for core NATS.
async fn publish(
    client: async_nats::Client,
    js: Option<async_nats::jetstream::Context>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut round = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut round, BATCH).await == 0 {
            return;
        }
        crate::fill_round(&mut round, BATCH, || rx.try_recv().ok()).await;
        if let Some(js) = &js {
            for job in round.drain(..) {
                let sent = js
                    .publish_with_headers(job.subject, job.headers, job.payload)
                    .await
                    .map(Some)
                    .map_err(err);
                let _ = job.sent.send(sent);
            }
        } else {
            let mut queued = Vec::with_capacity(round.len());
            for job in round.drain(..) {
                match client
                    .publish_with_headers(job.subject, job.headers, job.payload)
                    .await
                {
                    Ok(()) => queued.push(job.sent),
                    Err(e) => {
                        let _ = job.sent.send(Err(err(e)));
                    }
                }
            }
            // Flushed once for the round: each write is on the socket when its caller hears.
            let flushed = client.flush().await;
            for sent in queued {
                let _ = sent.send(match &flushed {
                    Ok(()) => Ok(None),
                    Err(e) => Err(OutputError::Connect {
                        source: e.to_string().into(),
                    }),
                });
            }
        }
    }
}

/// The publishing task is gone: only after the output itself is (it holds the sender).
fn stopped() -> OutputError {
    OutputError::Connect {
        source: "the nats publishing task has stopped".into(),
    }
}

// The fixed header names, made once at compile time (`from_static` run at each write would
// compare the name with every standard NATS header first).
const CE_SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");
const CE_ID: HeaderName = HeaderName::from_static("ce-id");
const CE_SOURCE: HeaderName = HeaderName::from_static("ce-source");
const CE_TYPE: HeaderName = HeaderName::from_static("ce-type");
const CE_TIME: HeaderName = HeaderName::from_static("ce-time");
const CE_SUBJECT: HeaderName = HeaderName::from_static("ce-subject");
const CONTENT_TYPE: HeaderName = HeaderName::from_static("Content-Type");
const NATS_MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
/// The one extension every answer carries (the engine stamps it on each event).
const CE_TRACEPARENT: HeaderName = HeaderName::from_static("ce-traceparent");

/// A header value NATS can carry. The protocol cannot carry CR or LF (async-nats panics on
/// one), and an id, key or subject from another broker may hold them: such a value is
/// percent-encoded whole as the CloudEvents HTTP binding encodes (`%0A`, and `%25` for `%`),
/// so a CloudEvents reader decodes it; any other value travels as it is.
fn value(v: &str) -> HeaderValue {
    // async-nats checks every value for CR and LF once whatever we do (`From` asserts,
    // `from_str` returns the error), so its check is the only one on the common path.
    v.parse()
        .unwrap_or_else(|_| HeaderValue::from(encode_header_value(v)))
}

/// With `attributes`, the value's CloudEvent attributes as `ce-*` headers; its `Content-Type`;
/// and with `msg_id` the event id as `Nats-Msg-Id`. An extension whose name NATS cannot carry
/// is left out (the engine only makes lower-case alphanumeric names).
fn headers(record: &Record, msg_id: bool, attributes: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    if attributes {
        h.insert(CE_SPECVERSION, "1.0");
        h.insert(CE_ID, value(&record.id));
        h.insert(CE_SOURCE, value(&record.source));
        h.insert(CE_TYPE, value(&record.ty));
        // RFC 3339 is plain ASCII: the formatted string becomes the value as it is.
        h.insert(
            CE_TIME,
            record
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        );
        if let Some(s) = &record.subject {
            h.insert(CE_SUBJECT, value(s));
        }
        for (k, v) in &record.extensions {
            if k.is_empty() {
                continue;
            }
            // async-nats's own check of the name, which returns an error where `insert` panics.
            let name = match k.as_str() {
                "traceparent" => Ok(CE_TRACEPARENT),
                _ => format!("ce-{k}").parse::<HeaderName>(),
            };
            if let Ok(name) = name {
                h.insert(name, value(v));
            }
        }
    }
    if let Some(ct) = &record.content_type {
        h.insert(CONTENT_TYPE, value(ct));
    }
    if msg_id {
        h.insert(NATS_MSG_ID, value(&record.id));
    }
    h
}

#[async_trait]
impl Output for NatsOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let subject = self.config.subject.render(record);
        // Checked here, so a record-made subject NATS refuses is an invalid write (dead-lettered
        // at once) rather than a connection error retried to the end.
        let subject = async_nats::Subject::validated(&subject).map_err(|_| {
            OutputError::Invalid(format!(
                "{subject:?} is not a NATS subject (empty, whitespace, or an empty token)"
            ))
        })?;
        // Connected already but for the first write: the connecting future (kilobytes) is
        // boxed, so it does not make every write's future that much larger.
        let queue = match self.queue.get() {
            Some(q) => q,
            None => Box::pin(self.queue()).await?,
        };
        let headers = headers(
            record,
            self.config.jetstream && self.config.deduplicate,
            self.config.attributes,
        );
        let timeout = self.config.timeout.get();
        let work = async {
            let (sent, heard) = oneshot::channel();
            let job = Job {
                subject,
                headers,
                payload: record.data.clone(),
                sent,
            };
            queue.send(job).await.map_err(|_| stopped())?;
            if let Some(ack) = heard.await.map_err(|_| stopped())?? {
                ack.await.map_err(err)?;
            }
            Ok(())
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(OutputError::Connect {
                    source: "no answer from nats within the timeout".into(),
                })
            })
    }

    async fn healthcheck(&self) -> Result<(), OutputError> {
        self.queue().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut r = Record::new("p", Bytes::from_static(b"{}"));
        r.id = "orders/7".into();
        r.source = "switchyard/p/nats/orders".into();
        r.ty = "switchyard.nats.message".into();
        r.subject = Some("orders.new".into());
        r.content_type = Some("application/json".into());
        r.extensions.insert("partitionkey".into(), "k1".into());
        r.extensions.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        r
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.as_str())
    }

    #[test]
    fn every_attribute_travels_as_a_ce_header() {
        let r = record();
        let h = headers(&r, true, true);
        assert_eq!(get(&h, "ce-specversion"), Some("1.0"));
        assert_eq!(get(&h, "ce-id"), Some("orders/7"));
        assert_eq!(get(&h, "ce-source"), Some("switchyard/p/nats/orders"));
        assert_eq!(get(&h, "ce-type"), Some("switchyard.nats.message"));
        assert_eq!(get(&h, "ce-subject"), Some("orders.new"));
        assert_eq!(get(&h, "ce-partitionkey"), Some("k1"));
        assert_eq!(
            get(&h, "ce-traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(get(&h, "Content-Type"), Some("application/json"));
        assert_eq!(get(&h, "Nats-Msg-Id"), Some("orders/7"));
        let time = get(&h, "ce-time").unwrap();
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(time).unwrap(),
            r.time
                .with_timezone(&chrono::FixedOffset::east_opt(0).unwrap())
        );
        assert_eq!(h.len(), 10);
        assert!(headers(&r, false, true).get("Nats-Msg-Id").is_none());
        // Without attributes: the content type and the id JetStream deduplicates by, alone.
        let h = headers(&r, true, false);
        assert_eq!(get(&h, "Content-Type"), Some("application/json"));
        assert_eq!(get(&h, "Nats-Msg-Id"), Some("orders/7"));
        assert_eq!(h.len(), 2);
    }

    #[tokio::test]
    async fn a_writes_future_stays_small() {
        // Each write's future is moved into its box: with the connecting future inside, it was
        // 9,800 bytes, copied at every write (7% of the gateway's instructions on JetStream).
        let config: NatsOutputConfig = serde_json::from_value(serde_json::json!({
            "url": "nats://127.0.0.1:1", "subject": "s", "jetstream": true
        }))
        .unwrap();
        let output = config.build().unwrap();
        let r = record();
        let write = output.write(&r);
        let size = std::mem::size_of_val(&*write);
        assert!(size < 1024, "the write future is {size} bytes");
    }

    #[test]
    fn values_nats_cannot_carry_are_percent_encoded_not_a_panic() {
        // A RabbitMQ message id, a Kafka key or a file name may hold a line break.
        let mut r = record();
        r.id = "a\r\nb%".into();
        r.subject = Some("line\none".into());
        r.content_type = Some("text/plain\n".into());
        r.extensions.insert("note".into(), "x\ny".into());
        r.extensions.insert("bad:name".into(), "v".into());
        r.extensions.insert("bad name".into(), "v".into());
        let h = headers(&r, true, true);
        assert_eq!(get(&h, "ce-id"), Some("a%0D%0Ab%25"));
        assert_eq!(get(&h, "Nats-Msg-Id"), Some("a%0D%0Ab%25"));
        assert_eq!(get(&h, "ce-subject"), Some("line%0Aone"));
        assert_eq!(get(&h, "Content-Type"), Some("text/plain%0A"));
        assert_eq!(get(&h, "ce-note"), Some("x%0Ay"));
        // Names NATS cannot carry are left out; everything else is there.
        assert_eq!(h.len(), 11);
        // A value without a line break is left as it is, `%` and non-ASCII included.
        r.subject = Some("café 100%".into());
        assert_eq!(
            get(&headers(&r, true, true), "ce-subject"),
            Some("café 100%")
        );
    }
}
