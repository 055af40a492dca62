//! The engine: per pipeline, a dispatcher that bounds in-flight work, keeps order per lane,
//! forms batches, and runs deliveries (function → outputs → ack).

pub mod deliver;
pub mod dispatch;

pub use deliver::Delivery;
pub use dispatch::run_dispatcher;

use crate::config::Ordering;
use switchyard_sdk::Event;

/// The lane an event travels in: events of one lane are delivered one at a time, in order.
/// `None` means the event may run beside any other.
pub fn lane_of(ordering: Ordering, event: &Event) -> Option<String> {
    match ordering {
        Ordering::None => None,
        Ordering::Partition => Some(event.partition.clone().unwrap_or_default()),
        Ordering::Key => Some(
            event
                .key
                .clone()
                .or_else(|| event.partition.clone())
                .unwrap_or_default(),
        ),
    }
}
