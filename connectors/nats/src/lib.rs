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

/// Complete a round of work taken from a channel: yield once, then add what arrived meanwhile
/// (`next` is the channel's `try_recv`), up to `max`. async-nats's connection task writes what
/// is queued for it each time it runs, and tokio runs a task woken by another right after that
/// one yields, so a publish or ack made from each caller's own task is one `write(2)` (and one
/// NATS frame) per message. A round handed to the client whole, before the connection task
/// runs, is one `write(2)`; the yield lets the writes that other tasks on this worker are about
/// to make join it, and costs nothing when the worker is idle.
pub(crate) async fn fill_round<T>(
    round: &mut Vec<T>,
    max: usize,
    mut next: impl FnMut() -> Option<T>,
) {
    tokio::task::yield_now().await;
    while round.len() < max {
        match next() {
            Some(item) => round.push(item),
            None => break,
        }
    }
}
