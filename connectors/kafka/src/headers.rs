//! The CloudEvents Kafka protocol binding: record ⇄ event.

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use switchyard_sdk::config::MediaType;
use switchyard_sdk::event::content_type_of;
use switchyard_sdk::event::{is_json_media_type, Event};
use switchyard_sdk::Record;

/// Build the event of a consumed record. A record that already is a CloudEvent (binary mode:
/// `ce_specversion` header; structured mode: `content-type: application/cloudevents+json`)
/// keeps its attributes; any other record gets switchyard's.
pub fn event_from_message<M: Message>(
    pipeline: &str,
    trigger: &str,
    configured: Option<&MediaType>,
    msg: &M,
) -> Event {
    let topic = msg.topic();
    let data = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
    let mut event = Event::new(
        format!("{topic}/{}/{}", msg.partition(), msg.offset()),
        Event::source_for(pipeline, trigger, topic),
        format!("switchyard.{trigger}.record"),
    );
    if let Some(ts) = msg.timestamp().to_millis() {
        if let Some(t) = Utc.timestamp_millis_opt(ts).single() {
            event.time = t;
        }
    }
    let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
    let mut content_type = None;
    let mut ce: Vec<(String, String)> = Vec::new();
    let mut plain = serde_json::Map::new();
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            let value = h
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            if h.key.eq_ignore_ascii_case("content-type") {
                content_type = Some(value);
            } else if let Some(name) = h.key.strip_prefix("ce_") {
                ce.push((name.to_ascii_lowercase(), value));
            } else {
                plain.insert(h.key.to_string(), value.into());
            }
        }
    }
    if !plain.is_empty() {
        event.metadata.insert("Headers".into(), plain.into());
    }
    event.data = data;
    let is_structured = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/cloudevents+json"));
    if is_structured {
        if let Ok(serde_json::Value::Object(obj)) =
            serde_json::from_slice::<serde_json::Value>(&event.data)
        {
            apply_structured(&mut event, obj);
        }
    } else if ce.iter().any(|(k, _)| k == "specversion") {
        for (k, v) in ce {
            apply_attribute(&mut event, &k, v);
        }
        event.content_type = content_type.or(event.content_type);
    } else {
        event.content_type = content_type_of(content_type, configured, &event.data);
    }
    event.subject = event.subject.or_else(|| key.clone());
    if let Some(k) = &key {
        event.set_extension("partitionkey", k.clone());
    }
    event.key = key;
    event.partition = Some(format!("{topic}/{}", msg.partition()));
    event.set_extension("kafkapartition", msg.partition().to_string());
    event.set_extension("kafkaoffset", msg.offset().to_string());
    event.set_extension("kafkatopic", topic);
    event
}

fn apply_attribute(event: &mut Event, name: &str, value: String) {
    match name {
        "specversion" => {}
        "id" if !value.is_empty() => event.id = value,
        "source" if !value.is_empty() => event.source = value,
        "type" if !value.is_empty() => event.ty = value,
        "subject" => event.subject = Some(value),
        "time" => {
            if let Ok(t) = DateTime::parse_from_rfc3339(&value) {
                event.time = t.with_timezone(&Utc);
            }
        }
        "datacontenttype" => event.content_type = Some(value),
        _ => {
            event.set_extension(name, value);
        }
    }
}

fn apply_structured(event: &mut Event, mut obj: serde_json::Map<String, serde_json::Value>) {
    use base64::Engine;
    let data = obj.remove("data");
    let data_b64 = obj.remove("data_base64");
    for (k, v) in obj {
        let v = match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        apply_attribute(event, &k, v);
    }
    event.data = match (data, data_b64) {
        (_, Some(serde_json::Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .unwrap_or_default(),
        (Some(serde_json::Value::String(s)), _)
            if !event
                .content_type
                .as_deref()
                .is_some_and(is_json_media_type) =>
        {
            Bytes::from(s)
        }
        (Some(v), _) => {
            event
                .content_type
                .get_or_insert_with(|| "application/json".into());
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        (None, _) => Bytes::new(),
    };
}

/// `ce_*` headers (binary mode) for a produced value, with `attributes`; a value that is
/// itself a structured CloudEvent (a dead letter), or any value without `attributes`, gets only
/// its `content-type`.
pub fn headers_for(record: &Record, attributes: bool) -> OwnedHeaders {
    let structured = record
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/cloudevents+json"));
    if structured || !attributes {
        return match &record.content_type {
            Some(ct) => OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct.as_bytes()),
            }),
            None => OwnedHeaders::new(),
        };
    }
    let mut pairs: Vec<(String, std::borrow::Cow<'_, str>)> = record
        .attributes()
        .into_iter()
        .map(|(k, v)| (format!("ce_{k}"), v))
        .collect();
    if let Some(ct) = &record.content_type {
        pairs.push(("content-type".into(), ct.as_str().into()));
    }
    pairs
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(8), |h, (k, v)| {
            h.insert(Header {
                key: &k,
                value: Some(v.as_bytes()),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn msg(payload: &[u8], key: Option<&[u8]>, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            key.map(|k| k.to_vec()),
            "orders".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            2,
            42,
            headers,
        )
    }

    #[test]
    fn plain_record() {
        let e = event_from_message("p", "kafka", None, &msg(br#"{"a":1}"#, Some(b"k1"), None));
        assert_eq!(e.id, "orders/2/42");
        assert_eq!(e.source, "switchyard/p/kafka/orders");
        assert_eq!(e.ty, "switchyard.kafka.record");
        assert_eq!(e.subject.as_deref(), Some("k1"));
        assert_eq!(e.extensions["partitionkey"], "k1");
        assert_eq!(e.extensions["kafkapartition"], "2");
        assert_eq!(e.extensions["kafkaoffset"], "42");
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        assert_eq!(e.time.timestamp_millis(), 1_700_000_000_000);
        assert_eq!(e.partition.as_deref(), Some("orders/2"));
    }

    #[test]
    fn a_configured_content_type_is_trusted_for_records_without_one() {
        let csv = MediaType::parse("text/csv").unwrap();
        let e = event_from_message("p", "kafka", Some(&csv), &msg(br#"{"a":1}"#, None, None));
        assert_eq!(e.content_type.as_deref(), Some("text/csv"));
        let mut h = rdkafka::message::OwnedHeaders::new();
        h = h.insert(rdkafka::message::Header {
            key: "content-type",
            value: Some("text/plain"),
        });
        let e = event_from_message("p", "kafka", Some(&csv), &msg(b"x", None, Some(h)));
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn binary_cloudevent_record_keeps_its_attributes() {
        let mut r = Record::new("p", Bytes::from_static(b"hello"));
        r.id = "evt-1".into();
        r.source = "/upstream".into();
        r.ty = "com.example.thing".into();
        r.content_type = Some("text/plain".into());
        r.extensions.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        let e = event_from_message(
            "p",
            "kafka",
            None,
            &msg(b"hello", None, Some(headers_for(&r, true))),
        );
        assert_eq!(
            (e.id.as_str(), e.source.as_str(), e.ty.as_str()),
            ("evt-1", "/upstream", "com.example.thing")
        );
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
        assert!(e.extensions.contains_key("traceparent"));
        // Without attributes: the content type alone, so the next trigger makes its own.
        let h = headers_for(&r, false);
        let keys: Vec<&str> = h.iter().map(|h| h.key).collect();
        assert_eq!(keys, ["content-type"]);
        let e = event_from_message("p", "kafka", None, &msg(b"hello", None, Some(h)));
        assert_eq!(e.id, "orders/2/42");
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn structured_cloudevent_record() {
        let h = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json".as_bytes()),
        });
        let body = br#"{"specversion":"1.0","id":"s-1","source":"/x","type":"t","datacontenttype":"application/json","data":{"n":1}}"#;
        let e = event_from_message("p", "kafka", None, &msg(body, None, Some(h)));
        assert_eq!(e.id, "s-1");
        assert_eq!(&e.data[..], br#"{"n":1}"#);
    }
}
