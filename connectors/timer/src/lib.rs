//! The `timer` connector: fire on a six-field NCRONTAB schedule (`sec min hour day month dow`).

mod trigger;

pub use trigger::parse_schedule;

pub use trigger::TimerTriggerConfig;
