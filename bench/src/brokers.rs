//! The four brokers, each with the client settings the gateway itself uses: create a queue,
//! publish with confirmations, consume with acknowledgements, count what a queue holds, and the
//! configuration snippets that point switchyard and the peer at the same queues.

use azure_storage_queue::models::{QueueClientReceiveMessagesOptions, QueueMessage};
use azure_storage_queue::QueueClient;
use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_azure_storage::connection::Service;

pub const KAFKA: &str = "127.0.0.1:9092";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const NATS: &str = "nats://127.0.0.1:4222";
pub const AZURE: &str = "UseDevelopmentStorage=true";
const KAFKA_PARTITIONS: i32 = 3;
/// Messages the gateway and the raw consumers take from RabbitMQ ahead of the function.
pub const PREFETCH: u16 = 256;

/// One consumed message and what acknowledges it.
pub struct Msg {
    pub body: Bytes,
    pub ack: BoxFuture<'static, ()>,
}

/// A confirmation still owed by the broker for one published message.
pub type Confirm = BoxFuture<'static, ()>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Kafka,
    RabbitMq,
    JetStream,
    AzureQueue,
}

impl Kind {
    /// Every kind, in the order a run takes their scenarios.
    pub const ALL: [Kind; 4] = [
        Kind::Kafka,
        Kind::RabbitMq,
        Kind::JetStream,
        Kind::AzureQueue,
    ];

    /// The `trigger:` and `outputs:` of a switchyard pipeline from `input` to `output`.
    pub fn gateway_pipeline(self, input: &str, output: &str) -> String {
        match self {
            Kind::Kafka => format!(
                "    trigger: {{ type: kafka, brokers: [\"{KAFKA}\"], topics: [{input}], group: {input} }}\n    ordering: none\n    outputs:\n      - {{ name: out, type: kafka, brokers: [\"{KAFKA}\"], topic: {output} }}\n"
            ),
            Kind::RabbitMq => format!(
                "    trigger: {{ type: rabbitmq, url: \"{AMQP}\", queue: {input}, prefetch: {PREFETCH} }}\n    outputs:\n      - {{ name: out, type: rabbitmq, url: \"{AMQP}\", routing_key: {output} }}\n"
            ),
            Kind::JetStream => format!(
                "    trigger: {{ type: nats, url: \"{NATS}\", jetstream: {{ stream: {input}, durable: gw }} }}\n    outputs:\n      - {{ name: out, type: nats, url: \"{NATS}\", subject: \"{output}.x\", jetstream: true }}\n"
            ),
            Kind::AzureQueue => format!(
                "    trigger: {{ type: azure_queue, connection_string: \"{AZURE}\", queue: {input}, batch_size: 32, max_polling_interval: 1s }}\n    outputs:\n      - {{ name: out, type: azure_queue, connection_string: \"{AZURE}\", queue: {output} }}\n"
            ),
        }
    }

    /// The scenario's name in `BENCH_SCENARIOS`, and the argument of the harness's `bridge`
    /// mode.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::RabbitMq => "rabbitmq",
            Kind::JetStream => "jetstream",
            Kind::AzureQueue => "azure",
        }
    }

    /// The kind [`Kind::name`] names.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Kafka => "Kafka",
            Kind::RabbitMq => "RabbitMQ",
            Kind::JetStream => "NATS JetStream",
            Kind::AzureQueue => "Azure Storage queue (Azurite)",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Kind::Kafka => 9092,
            Kind::RabbitMq => 5672,
            Kind::JetStream => 4222,
            Kind::AzureQueue => 10001,
        }
    }

    /// Confirmations outstanding at once when publishing (Azure: requests in flight).
    pub fn window(self) -> usize {
        match self {
            Kind::AzureQueue => 32,
            _ => 1000,
        }
    }
}

/// A connected broker client.
pub struct Broker {
    pub kind: Kind,
    rabbit: Option<Connection>,
    js: Option<async_nats::jetstream::Context>,
}

impl Broker {
    pub async fn connect(kind: Kind) -> Broker {
        if std::net::TcpStream::connect(("127.0.0.1", kind.port())).is_err() {
            panic!(
                "{} is not running on port {}: `scripts/services start` starts it",
                kind.label(),
                kind.port()
            );
        }
        let rabbit = match kind {
            Kind::RabbitMq => Some(
                Connection::connect(AMQP, ConnectionProperties::default())
                    .await
                    .expect("connect to RabbitMQ"),
            ),
            _ => None,
        };
        let js = match kind {
            Kind::JetStream => Some(async_nats::jetstream::new(
                async_nats::connect(NATS).await.expect("connect to NATS"),
            )),
            _ => None,
        };
        Broker { kind, rabbit, js }
    }

    async fn channel(&self) -> Channel {
        self.rabbit
            .as_ref()
            .expect("rabbitmq connection")
            .create_channel()
            .await
            .expect("rabbitmq channel")
    }

    fn js(&self) -> &async_nats::jetstream::Context {
        self.js.as_ref().expect("jetstream context")
    }

    /// Delete the queue (topic, stream) called `name` and what it holds, once a run is done
    /// with it: a broker left holding every run's messages slows down for the runs after
    /// (Azurite's queue scenario fell from 96 to 13 msg/s over three rounds), and RabbitMQ
    /// held 1.5 GB by the end of a full run.
    pub async fn remove(&self, name: &str) {
        let result: Result<(), String> = match self.kind {
            Kind::Kafka => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", KAFKA)
                    .create()
                    .expect("kafka admin client");
                match admin.delete_topics(&[name], &AdminOptions::new()).await {
                    Ok(results) => results
                        .into_iter()
                        .try_for_each(|r| r.map(|_| ()).map_err(|(t, e)| format!("{t}: {e}"))),
                    Err(e) => Err(e.to_string()),
                }
            }
            Kind::RabbitMq => self
                .channel()
                .await
                .queue_delete(name.into(), QueueDeleteOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Kind::JetStream => self
                .js()
                .delete_stream(name)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Kind::AzureQueue => azure_queue(name)
                .delete(None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        // Not fatal: the figures are already taken; the next run starts on fresh brokers.
        if let Err(e) = result {
            eprintln!("bench: could not delete {name}: {e}");
        }
    }

    /// Create an empty queue (topic, stream) called `name`.
    pub async fn create(&self, name: &str) {
        match self.kind {
            Kind::Kafka => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", KAFKA)
                    .create()
                    .expect("kafka admin client");
                let topic = NewTopic::new(name, KAFKA_PARTITIONS, TopicReplication::Fixed(1));
                for r in admin
                    .create_topics([&topic], &AdminOptions::new())
                    .await
                    .expect("create topic")
                {
                    r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
                }
            }
            Kind::RabbitMq => {
                let ch = self.channel().await;
                ch.queue_declare(
                    ShortString::from(name),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare queue");
            }
            Kind::JetStream => {
                self.js()
                    .create_stream(async_nats::jetstream::stream::Config {
                        name: name.into(),
                        subjects: vec![format!("{name}.>")],
                        ..Default::default()
                    })
                    .await
                    .expect("create stream");
            }
            Kind::AzureQueue => {
                azure_queue(name).create(None).await.expect("create queue");
            }
        }
    }

    /// A publisher to `name` with the durability the gateway's output uses.
    pub async fn publisher(&self, name: &str) -> Publisher {
        match self.kind {
            Kind::Kafka => Publisher::Kafka(
                ClientConfig::new()
                    .set("bootstrap.servers", KAFKA)
                    .set("acks", "all")
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "1")
                    .set("socket.nagle.disable", "true")
                    .create()
                    .expect("kafka producer"),
                name.to_string(),
            ),
            Kind::RabbitMq => {
                let ch = self.channel().await;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm mode");
                Publisher::Rabbit(ch, name.to_string())
            }
            Kind::JetStream => {
                // Every publisher's ids differ from every other's, in this run and the next.
                static PUBLISHERS: AtomicU64 = AtomicU64::new(0);
                let n = PUBLISHERS.fetch_add(1, Ordering::Relaxed);
                Publisher::Jet {
                    js: self.js().clone(),
                    subject: format!("{name}.x"),
                    id_prefix: format!("{}-{n}-", std::process::id()),
                    sent: AtomicU64::new(0),
                }
            }
            Kind::AzureQueue => Publisher::Azure(Arc::new(azure_queue(name))),
        }
    }

    /// Consume from `name`, each message acknowledged by awaiting its `ack`.
    pub async fn consume(&self, name: &str) -> BoxStream<'static, Msg> {
        match self.kind {
            Kind::Kafka => {
                let c: StreamConsumer = ClientConfig::new()
                    .set("bootstrap.servers", KAFKA)
                    .set(
                        "group.id",
                        format!("bench-{}", uuid::Uuid::new_v4().simple()),
                    )
                    .set("enable.auto.offset.store", "false")
                    .set("enable.auto.commit", "true")
                    .set("auto.offset.reset", "earliest")
                    .set("socket.nagle.disable", "true")
                    .set("fetch.wait.max.ms", "10")
                    .set("queued.max.messages.kbytes", "8192")
                    .set("fetch.queue.backoff.ms", "10")
                    .create()
                    .expect("kafka consumer");
                c.subscribe(&[name]).expect("subscribe");
                let c = Arc::new(c);
                futures::stream::unfold(c, |c| async move {
                    let (body, topic, partition, offset) = {
                        let m = c.recv().await.expect("kafka receive");
                        (
                            Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                            m.topic().to_string(),
                            m.partition(),
                            m.offset(),
                        )
                    };
                    let acker = c.clone();
                    let ack = async move {
                        let _ = acker.store_offset(&topic, partition, offset);
                    }
                    .boxed();
                    Some((Msg { body, ack }, c))
                })
                .boxed()
            }
            Kind::RabbitMq => {
                let ch = self.channel().await;
                ch.basic_qos(PREFETCH, BasicQosOptions::default())
                    .await
                    .expect("qos");
                let consumer = ch
                    .basic_consume(
                        ShortString::from(name),
                        ShortString::from(""),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .expect("consume");
                // The channel must live as long as the consumer.
                futures::stream::unfold((consumer, ch), |(mut consumer, ch)| async move {
                    let d = consumer.next().await?.expect("rabbitmq delivery");
                    let acker = d.acker;
                    let ack = async move {
                        acker
                            .ack(BasicAckOptions::default())
                            .await
                            .expect("rabbitmq ack");
                    }
                    .boxed();
                    Some((
                        Msg {
                            body: Bytes::from(d.data),
                            ack,
                        },
                        (consumer, ch),
                    ))
                })
                .boxed()
            }
            Kind::JetStream => {
                let stream = self.js().get_stream(name).await.expect("stream");
                let consumer = stream
                    .create_consumer(async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some(format!("bench{}", uuid::Uuid::new_v4().simple())),
                        ..Default::default()
                    })
                    .await
                    .expect("consumer");
                let messages = consumer.messages().await.expect("messages");
                messages
                    .filter_map(|m| async move {
                        let m = m.ok()?;
                        let body = m.payload.clone();
                        let ack = async move {
                            m.ack().await.expect("jetstream ack");
                        }
                        .boxed();
                        Some(Msg { body, ack })
                    })
                    .boxed()
            }
            Kind::AzureQueue => {
                let q = Arc::new(azure_queue(name));
                futures::stream::unfold(q, |q| async move {
                    loop {
                        let options = QueueClientReceiveMessagesOptions {
                            number_of_messages: Some(32),
                            visibility_timeout: Some(120),
                            ..Default::default()
                        };
                        // A receive on a connection Azurite has just closed fails; the next
                        // poll opens a new one.
                        let got = match q.receive_messages(Some(options)).await {
                            Ok(r) => r.into_model().expect("azure receive body").items,
                            Err(_) => None,
                        }
                        .unwrap_or_default();
                        if got.is_empty() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        let msgs: Vec<Msg> = got
                            .into_iter()
                            .map(|m| {
                                let body = base64::engine::general_purpose::STANDARD
                                    .decode(m.message_text.unwrap_or_default())
                                    .expect("base64 message");
                                let q = q.clone();
                                let (id, receipt) = (m.message_id.unwrap(), m.pop_receipt.unwrap());
                                let ack = async move {
                                    for attempt in 1.. {
                                        match q.delete_message(&id, &receipt, None).await {
                                            Ok(_) => return,
                                            Err(e) if attempt >= 3 => panic!("azure delete: {e}"),
                                            Err(_) => {
                                                tokio::time::sleep(Duration::from_millis(50)).await
                                            }
                                        }
                                    }
                                }
                                .boxed();
                                Msg {
                                    body: Bytes::from(body),
                                    ack,
                                }
                            })
                            .collect();
                        return Some((futures::stream::iter(msgs), q));
                    }
                })
                .flatten()
                .boxed()
            }
        }
    }

    /// Messages `name` holds (for an output that is never consumed: how many were written).
    pub async fn count(&self, name: &str) -> usize {
        match self.kind {
            Kind::Kafka => {
                let c: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", KAFKA)
                    .create()
                    .expect("kafka client");
                (0..KAFKA_PARTITIONS)
                    .map(|p| {
                        c.fetch_watermarks(name, p, Duration::from_secs(5))
                            .map(|(_, high)| high as usize)
                            .unwrap_or(0)
                    })
                    .sum()
            }
            Kind::RabbitMq => {
                let ch = self.channel().await;
                let q = ch
                    .queue_declare(
                        ShortString::from(name),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .expect("passive declare");
                let _ = ch.close(200, ShortString::from("done")).await;
                q.message_count() as usize
            }
            Kind::JetStream => {
                let mut s = self.js().get_stream(name).await.expect("stream");
                s.info().await.expect("stream info").state.messages as usize
            }
            Kind::AzureQueue => azure_queue(name)
                .get_properties(None)
                .await
                .map(|r| {
                    use azure_storage_queue::models::QueueClientGetPropertiesResultHeaders;
                    r.approximate_messages_count().ok().flatten().unwrap_or(0) as usize
                })
                .unwrap_or(0),
        }
    }

    /// The peer's `input:` and `forward_to:` endpoints for the same route, or `None` where the
    /// peer has no connector (Azure Storage queues).
    pub fn peer_endpoints(&self, input: &str, output: &str) -> Option<(String, String)> {
        match self.kind {
            Kind::Kafka => Some((
                format!("{{ kafka: {{ url: \"{KAFKA}\", topic: {input}, group_id: {input} }} }}"),
                format!(
                    "{{ kafka: {{ url: \"{KAFKA}\", topic: {output}, create_topic: false, producer_options: [[\"acks\", \"all\"], [\"enable.idempotence\", \"true\"]] }} }}"
                ),
            )),
            Kind::RabbitMq => Some((
                format!("{{ amqp: {{ url: \"{AMQP}\", queue: {input}, prefetch_count: {PREFETCH} }} }}"),
                format!("{{ amqp: {{ url: \"{AMQP}\", queue: {output} }} }}"),
            )),
            Kind::JetStream => Some((
                format!("{{ nats: {{ url: \"{NATS}\", subject: \"{input}.x\", stream: {input} }} }}"),
                // Deduplicated like the gateway's JetStream output (its `Nats-Msg-Id`), as the
                // Kafka route gives the peer an idempotent producer like the gateway's.
                format!("{{ nats: {{ url: \"{NATS}\", subject: \"{output}.x\", stream: {output}, deduplicate: true }} }}"),
            )),
            Kind::AzureQueue => None,
        }
    }
}

fn azure_queue(name: &str) -> QueueClient {
    let account = switchyard_azure_storage::account(AZURE, None, Service::Queue)
        .expect("development storage account");
    switchyard_azure_storage::queue_client(&account, name).expect("queue client")
}

/// A publisher; `send` hands a message to the client and returns its confirmation.
pub enum Publisher {
    Kafka(FutureProducer, String),
    Rabbit(Channel, String),
    /// Each message carries a `Nats-Msg-Id` (`id_prefix` and the count `sent` before it), as
    /// the gateway's JetStream output writes by default (`deduplicate: true`), so the server's
    /// duplicate tracking is in the publish ceiling and in the hand-written bridge as it is in
    /// the gateway and the peer.
    Jet {
        js: async_nats::jetstream::Context,
        subject: String,
        id_prefix: String,
        sent: AtomicU64,
    },
    Azure(Arc<QueueClient>),
}

impl Publisher {
    pub async fn send(&self, body: Vec<u8>) -> Confirm {
        match self {
            Publisher::Kafka(p, topic) => loop {
                match p.send_result(FutureRecord::<(), _>::to(topic).payload(&body)) {
                    Ok(delivery) => {
                        return async move {
                            delivery
                                .await
                                .expect("delivery report")
                                .expect("kafka produce");
                        }
                        .boxed()
                    }
                    // The local queue is full: let deliveries drain.
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            },
            Publisher::Rabbit(ch, queue) => {
                let confirm = ch
                    .basic_publish(
                        ShortString::from(""),
                        ShortString::from(queue.as_str()),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type(ShortString::from("application/json")),
                    )
                    .await
                    .expect("rabbitmq publish");
                async move {
                    confirm.await.expect("rabbitmq confirm");
                }
                .boxed()
            }
            Publisher::Jet {
                js,
                subject,
                id_prefix,
                sent,
            } => {
                let mut headers = async_nats::HeaderMap::new();
                let n = sent.fetch_add(1, Ordering::Relaxed);
                headers.insert("Nats-Msg-Id", format!("{id_prefix}{n}").as_str());
                let ack = js
                    .publish_with_headers(subject.clone(), headers, body.into())
                    .await
                    .expect("jetstream publish");
                async move {
                    ack.await.expect("jetstream puback");
                }
                .boxed()
            }
            Publisher::Azure(q) => {
                let q = q.clone();
                let text = base64::engine::general_purpose::STANDARD.encode(&body);
                async move {
                    // Azurite closes idle keep-alive connections; a put on one that was just
                    // closed fails before it is sent, so it is tried again (3 tries).
                    for attempt in 1.. {
                        let m = QueueMessage {
                            message_text: Some(text.clone()),
                        };
                        match q
                            .send_message(m.try_into().expect("message body"), None)
                            .await
                        {
                            Ok(_) => return,
                            Err(e) if attempt >= 3 => panic!("azure put: {e}"),
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
                .boxed()
            }
        }
    }
}
