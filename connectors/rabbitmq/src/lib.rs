//! The `rabbitmq` connector (lapin): a queue trigger with manual acks and `prefetch`, and an
//! output that publishes persistent messages and awaits publisher confirms.

pub mod config;
pub mod output;
mod settle;
pub mod trigger;

pub use config::{RabbitMqOutputConfig, RabbitMqTriggerConfig};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

/// The largest AMQP frame switchyard asks the broker for, unless the URL sets `frame_max`.
/// lapin gives every connection a send and a receive buffer of 32 frames each, so RabbitMQ's
/// default of 128 KiB held 8 MiB per connection (three per pipeline: consume, publish,
/// backlog); 16 KiB frames hold 1 MiB. A larger message travels in several frames, as AMQP
/// intends.
pub const FRAME_MAX: u32 = 16 * 1024;

/// Connect to `url`, asking for frames of at most [`FRAME_MAX`] unless the URL says otherwise.
pub(crate) async fn connect(
    url: &str,
    properties: ConnectionProperties,
) -> Result<Connection, lapin::Error> {
    match url.parse::<AMQPUri>() {
        Ok(mut uri) => {
            uri.query.frame_max.get_or_insert(FRAME_MAX);
            Connection::connect_uri(uri, properties).await
        }
        // lapin's own parse says why the URL is wrong.
        Err(_) => Connection::connect(url, properties).await,
    }
}

/// Connection errors without the URL (it may carry a password).
pub(crate) fn describe(e: &lapin::Error) -> String {
    e.to_string()
}

/// The longest AMQP short string: queue and exchange names, routing keys, table keys,
/// message-id, content type, header names.
pub(crate) const MAX_SHORT: usize = lapin::types::MAX_SHORT_STRING_LENGTH;

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
