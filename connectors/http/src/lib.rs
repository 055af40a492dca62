//! The `http` connector: a trigger on the shared ingress server and an output that POSTs.

pub mod config;
pub mod output;
pub mod trigger;

pub use config::{HttpOutputConfig, HttpTriggerConfig};
