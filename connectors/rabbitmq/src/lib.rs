//! The `rabbitmq` connector (lapin): a queue trigger with manual acks and `prefetch`, and an
//! output that publishes persistent messages and awaits publisher confirms.

pub mod config;
pub mod output;
mod settle;
pub mod trigger;

pub use config::{RabbitMqOutputConfig, RabbitMqTriggerConfig};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Connection errors without the URL (it may carry a password).
pub(crate) fn describe(e: &lapin::Error) -> String {
    e.to_string()
}

/// A JSON value as an AMQP field value (queue arguments, binding arguments, headers).
pub(crate) fn amqp_value(v: &serde_json::Value) -> AMQPValue {
    match v {
        serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        serde_json::Value::Null => AMQPValue::Void,
        other => AMQPValue::LongString(LongString::from(other.to_string())),
    }
}

pub(crate) fn field_table(
    map: &std::collections::BTreeMap<String, serde_json::Value>,
) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in map {
        t.insert(ShortString::from(k.as_str()), amqp_value(v));
    }
    t
}

/// An AMQP header value as text, for event metadata.
pub(crate) fn amqp_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(i) => i.to_string(),
        AMQPValue::ShortShortUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        other => format!("{other:?}"),
    }
}
