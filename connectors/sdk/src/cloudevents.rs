//! The CloudEvents 1.0 HTTP binding: binary-mode headers and the JSON event format.

use crate::event::{is_json_media_type, Event};
use crate::json::{bytes_below_space, bytes_equal};
use crate::output::Record;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The CloudEvents spec version switchyard speaks.
pub const SPEC_VERSION: &str = "1.0";

/// Whether a byte stays as it is in a percent-encoded header value.
fn is_plain(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'"' && b != b'%'
}

/// Whether every byte is [`is_plain`], eight at a time: each value of every function request
/// is checked (a byte loop was 4-5 instructions a byte).
fn all_plain(s: &[u8]) -> bool {
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let c = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // Any flag means a byte that is not plain: the lowest flagged byte is exact, and a
        // borrow only flags bytes above one that is.
        let not_plain = (c & 0x8080_8080_8080_8080)
            | bytes_below_space(c)
            | bytes_equal(c, 0x7f)
            | bytes_equal(c, b'"')
            | bytes_equal(c, b'%');
        if not_plain != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| is_plain(b))
}

/// Percent-encode a header value as the CloudEvents HTTP binding asks: every byte outside
/// printable ASCII, plus `"` and `%`, becomes `%XX` of its UTF-8 encoding.
pub fn encode_header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A percent-encoded header value. Most values need no encoding and are copied once.
fn header_value(s: &str) -> HeaderValue {
    if all_plain(s.as_bytes()) {
        HeaderValue::from_str(s).expect("printable ASCII is a valid header value")
    } else {
        // Percent-encoding leaves only visible ASCII, which is always a valid header value.
        HeaderValue::try_from(encode_header_value(s)).expect("percent-encoded header value")
    }
}

/// `ce-{name}` as a header name, built without a temporary string.
fn extension_header(name: &str) -> Option<HeaderName> {
    let mut buf = [0u8; 64];
    let n = 3 + name.len();
    if n > buf.len() {
        return HeaderName::try_from(format!("ce-{name}")).ok();
    }
    buf[..3].copy_from_slice(b"ce-");
    buf[3..n].copy_from_slice(name.as_bytes());
    HeaderName::from_bytes(&buf[..n]).ok()
}

/// The attributes of an event as (name, value) pairs, without data: the required ones, then
/// the optional ones that are set, then the extensions.
pub fn attributes(event: &Event) -> Vec<(&str, Cow<'_, str>)> {
    attribute_list(
        &event.id,
        &event.source,
        &event.ty,
        &event.time,
        event.subject.as_deref(),
        &event.extensions,
    )
}

/// The one list behind [`attributes`] and [`Record::attributes`]: an event and a record carry
/// the same attributes in fields of the same names.
pub(crate) fn attribute_list<'a>(
    id: &'a str,
    source: &'a str,
    ty: &'a str,
    time: &DateTime<Utc>,
    subject: Option<&'a str>,
    extensions: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, Cow<'a, str>)> {
    let mut attrs = Vec::with_capacity(6 + extensions.len());
    attrs.extend([
        ("specversion", SPEC_VERSION.into()),
        ("id", id.into()),
        ("source", source.into()),
        ("type", ty.into()),
        (
            "time",
            time.to_rfc3339_opts(SecondsFormat::AutoSi, true).into(),
        ),
    ]);
    if let Some(s) = subject {
        attrs.push(("subject", s.into()));
    }
    for (k, v) in extensions {
        attrs.push((k.as_str(), v.as_str().into()));
    }
    attrs
}

/// Binary-mode headers (`ce-*` plus `content-type`), values percent-encoded, built straight into
/// a header map: the fixed names are static and each value is encoded once, not copied again.
/// An extension whose name is not a valid header name is left out; `Event::set_extension` only
/// makes valid ones (the `cloudevents` fuzz target checks that none is ever left out).
pub fn binary_headers(event: &Event) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(8 + event.extensions.len());
    h.insert(
        HeaderName::from_static("ce-specversion"),
        HeaderValue::from_static(SPEC_VERSION),
    );
    h.insert(HeaderName::from_static("ce-id"), header_value(&event.id));
    h.insert(
        HeaderName::from_static("ce-source"),
        header_value(&event.source),
    );
    h.insert(HeaderName::from_static("ce-type"), header_value(&event.ty));
    // RFC 3339 is plain ASCII: the formatted string becomes the value as it is.
    let time = event.time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    h.insert(
        HeaderName::from_static("ce-time"),
        HeaderValue::try_from(time).expect("an RFC 3339 time is a valid header value"),
    );
    if let Some(s) = &event.subject {
        h.insert(HeaderName::from_static("ce-subject"), header_value(s));
    }
    for (k, v) in &event.extensions {
        if let Some(name) = extension_header(k) {
            h.insert(name, header_value(v));
        }
    }
    h.insert(CONTENT_TYPE, header_value(event.content_type_or_default()));
    h
}

/// Binary-mode headers for a record an output sends over HTTP: with `attributes`, its
/// attributes as `ce-*` (percent-encoded, so an id or subject with a line break or non-ASCII
/// text still travels); its content type when known, and the W3C `traceparent` (the trace
/// context travels either way).
pub fn record_headers(record: &Record, attributes: bool) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(8 + record.extensions.len());
    if attributes {
        for (k, v) in record.attributes() {
            if let Some(name) = extension_header(k) {
                h.insert(name, header_value(&v));
            }
        }
    }
    if let Some(tp) = record.extensions.get("traceparent") {
        h.insert(HeaderName::from_static("traceparent"), header_value(tp));
    }
    if let Some(ct) = &record.content_type {
        h.insert(CONTENT_TYPE, header_value(ct));
    }
    h
}

/// The event in the JSON event format (structured mode, batches, dead letters). JSON data stays
/// JSON, UTF-8 text becomes a string, anything else becomes `data_base64`.
pub fn to_json(event: &Event) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    for (k, v) in attributes(event) {
        obj.insert(k.to_string(), v.into_owned().into());
    }
    obj.insert(
        "datacontenttype".into(),
        event.content_type_or_default().into(),
    );
    if !event.data.is_empty() {
        let json = is_json_media_type(event.content_type_or_default())
            .then(|| serde_json::from_slice::<serde_json::Value>(&event.data).ok())
            .flatten();
        match json {
            Some(v) => {
                obj.insert("data".into(), v);
            }
            None => match std::str::from_utf8(&event.data) {
                Ok(s) if !is_json_media_type(event.content_type_or_default()) => {
                    obj.insert("data".into(), s.into());
                }
                _ => {
                    obj.insert(
                        "data_base64".into(),
                        base64::engine::general_purpose::STANDARD
                            .encode(&event.data)
                            .into(),
                    );
                }
            },
        }
    }
    serde_json::Value::Object(obj)
}

/// Check an event in the JSON format against the CloudEvents 1.0 rules switchyard relies on:
/// required attributes present and non-empty strings, `specversion` 1.0, attribute names
/// lower-case letters and digits. Returns every problem found.
pub fn validate_json(v: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(obj) = v.as_object() else {
        return vec!["not a JSON object".into()];
    };
    for req in ["id", "source", "specversion", "type"] {
        match obj.get(req).and_then(|v| v.as_str()) {
            Some(s) if !s.is_empty() => {}
            _ => problems.push(format!("required attribute {req} missing or empty")),
        }
    }
    if obj.get("specversion").and_then(|v| v.as_str()) != Some(SPEC_VERSION) {
        problems.push("specversion is not 1.0".into());
    }
    for k in obj.keys() {
        if k != "data_base64" && !crate::event::is_valid_attribute_name(k) {
            problems.push(format!(
                "attribute name {k:?} is not lower-case letters and digits"
            ));
        }
    }
    if obj.contains_key("data") && obj.contains_key("data_base64") {
        problems.push("both data and data_base64".into());
    }
    if let Some(t) = obj.get("time").and_then(|v| v.as_str()) {
        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
            problems.push(format!("time {t:?} is not RFC 3339"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_headers_encode_values_and_copy_the_trace_context() {
        let mut r = Record::new("p", bytes::Bytes::new());
        r.id = "m-1\r\nnext".into();
        r.source = "s".into();
        r.ty = "t".into();
        r.subject = Some("café".into());
        r.content_type = Some("application/json".into());
        r.extensions
            .insert("traceparent".into(), "00-a-b-01".into());
        r.extensions.insert("bad name".into(), "left out".into());
        let h = record_headers(&r, true);
        let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap());
        assert_eq!(get("ce-id"), Some("m-1%0D%0Anext"));
        assert_eq!(get("ce-subject"), Some("caf%C3%A9"));
        assert_eq!(get("ce-specversion"), Some("1.0"));
        assert_eq!(get("traceparent"), Some("00-a-b-01"));
        assert_eq!(get("ce-traceparent"), Some("00-a-b-01"));
        assert_eq!(get("content-type"), Some("application/json"));
        // specversion id source type time subject traceparent, the W3C copy, content-type.
        assert_eq!(h.len(), 9, "{h:?}");
        // Without attributes: the content type and the trace context alone.
        let h = record_headers(&r, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["traceparent", "content-type"], "{h:?}");
    }

    #[test]
    fn the_eight_byte_check_agrees_with_the_byte_check() {
        // Every byte value at every position of values that span two chunks and a remainder,
        // among plain bytes and beside a second odd byte (a borrow must not hide either).
        for len in [1usize, 7, 8, 9, 16, 17, 23] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    assert_eq!(all_plain(&v), v.iter().all(|&b| is_plain(b)), "{v:?}");
                    if pos + 1 < len {
                        v[pos + 1] = 0x1f;
                        assert!(!all_plain(&v), "{v:?}");
                        v[pos + 1] = 0x21;
                        assert_eq!(all_plain(&v), is_plain(b), "{v:?}");
                    }
                }
            }
        }
        assert!(all_plain(
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(all_plain(b""));
    }

    #[test]
    fn header_values_are_percent_encoded() {
        assert_eq!(encode_header_value("a b"), "a b");
        assert_eq!(encode_header_value("€"), "%E2%82%AC");
        assert_eq!(encode_header_value("100%\"x\"\n"), "100%25%22x%22%0A");
    }

    #[test]
    fn json_format_is_valid() {
        let mut e = Event::new("1", "switchyard/p/http/x", "switchyard.http.request")
            .with_data(&b"{\"a\":1}"[..], Some("application/json".into()));
        e.set_extension("deliveryattempt", "1");
        let v = to_json(&e);
        assert!(validate_json(&v).is_empty(), "{:?}", validate_json(&v));
        assert_eq!(v["data"]["a"], 1);
        let bin = Event::new("2", "s", "t").with_data(&[0xffu8, 0][..], None);
        assert_eq!(to_json(&bin)["data_base64"], "/wA=");
        let mut bad = to_json(&e);
        bad["Bad_Name"] = "x".into();
        assert_eq!(validate_json(&bad).len(), 1);
    }

    #[test]
    fn binary_headers_carry_every_attribute_encoded() {
        let mut e = Event::new("id-1", "switchyard/p/nats/s", "t.x")
            .with_data(&b"x"[..], Some("text/plain".into()));
        e.subject = Some("caf\u{e9} \"q\"".into());
        e.set_extension("partitionkey", "k1");
        let long = "a".repeat(70);
        e.set_extension(&long, "v");
        let h = binary_headers(&e);
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], "id-1");
        assert_eq!(h["ce-source"], "switchyard/p/nats/s");
        assert_eq!(h["ce-type"], "t.x");
        assert_eq!(h["ce-subject"], "caf%C3%A9 %22q%22");
        assert_eq!(h["ce-partitionkey"], "k1");
        assert_eq!(h[format!("ce-{long}").as_str()], "v");
        assert_eq!(h["content-type"], "text/plain");
        let time = h["ce-time"].to_str().unwrap();
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(time).unwrap(),
            e.time,
            "{time}"
        );
        assert_eq!(h.len(), 9);
    }
}
