//! The connector SDK of switchyard.
//!
//! Every connector crate depends on this one and nothing else of switchyard:
//!
//! - [`Event`]: the normalized event (CloudEvents 1.0 attributes plus data) a trigger produces.
//! - [`Ack`] and [`EventStatus`]: acknowledgement as a value. A trigger hands each event out
//!   with an `Ack`; the engine resolves it once the function and every output are done, and the
//!   trigger maps the status onto its broker (commit, ack, delete, nack).
//! - [`TriggerContext`] and [`Trigger`]: what a trigger gets to run and what it returns.
//! - [`Output`] and [`Record`]: a write that is confirmed before the event counts as delivered.
//! - [`config`]: shared config value types (durations, sizes, secrets, templates).

pub mod ack;
pub mod cloudevents;
pub mod config;
pub mod error;
pub mod event;
pub mod health;
pub mod json;
pub mod output;
pub mod signature;
pub mod template;
pub mod trigger;

#[cfg(feature = "testing")]
pub mod testing;

pub use ack::{Ack, EventStatus, Reply};
pub use error::{BoxError, BuildError, OutputError};
pub use event::{Event, TriggerEvent};
pub use health::Health;
pub use output::{Output, Record};
pub use template::Template;
pub use trigger::{Trigger, TriggerContext};
