//! The `nats` connector (async-nats).
//!
//! - Core subjects (`subject`, optional `queue_group`): **at most once**. NATS core has no
//!   acknowledgements; a message in flight when the gateway stops or crashes is lost.
//! - JetStream (`jetstream: {stream, durable}`): a durable pull consumer with explicit acks,
//!   at least once.

pub mod config;
pub mod output;
pub mod trigger;

pub use config::{NatsOutputConfig, NatsTriggerConfig};

/// Connect with automatic reconnects, reporting connection events to `on_event`.
pub(crate) async fn connect(
    url: &str,
    name: String,
    on_event: impl Fn(async_nats::Event) + Send + Sync + 'static,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let on_event = std::sync::Arc::new(on_event);
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .event_callback(move |e| {
            let f = on_event.clone();
            async move { f(e) }
        })
        .connect(url)
        .await
}
