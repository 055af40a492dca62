//! The `slack` connector: a trigger for the Events API, slash commands and interactivity
//! (on the shared ingress server, every request verified with the signing secret), and an
//! output that posts messages (`chat.postMessage` or an incoming webhook).

pub mod config;
pub mod output;
pub mod trigger;

pub use config::{SlackOutputConfig, SlackTriggerConfig};
