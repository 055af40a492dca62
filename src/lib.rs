//! switchyard: an event trigger and binding gateway.
//!
//! Data path: trigger → engine (dispatcher: bound, order, batch) → invoker (tower stack:
//! retry, concurrency limit, timeout, HTTP call) → outputs → acknowledgement. See
//! ARCHITECTURE.md.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod engine;
pub mod ingress;
pub mod invoker;
pub mod otel;
pub mod probe;
pub mod telemetry;
