//! One HTTP call to a function, in the configured format, and the decoding of its answer.

use super::transport::Transport;
use super::{json_value_bytes, Answer, Invocation, InvokeError};
use crate::config::{Format, FunctionConfig};
use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use switchyard_sdk::cloudevents::{binary_headers, to_json};
use switchyard_sdk::event::is_json_media_type;
use switchyard_sdk::{BoxError, Event, Reply};
use tracing::Instrument;

/// Which outputs a value goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every output (cloudevents replies).
    All,
    /// The output of this name (azure-functions `Outputs`).
    Named(String),
    /// Outputs named `$return`, else every output (azure-functions `ReturnValue`).
    Return,
}

/// One value the function returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Where it goes.
    pub target: Target,
    /// The bytes.
    pub data: Bytes,
    /// Its content type.
    pub content_type: Option<String>,
    /// The reply's CloudEvents type, when it gave one.
    pub ty: Option<String>,
    /// The reply's CloudEvents subject, when it gave one.
    pub subject: Option<String>,
}

impl Value {
    fn new(target: Target, data: Bytes, content_type: Option<String>) -> Self {
        Self {
            target,
            data,
            content_type,
            ty: None,
            subject: None,
        }
    }
}

/// The HTTP call service. The tower stack clones it several times per call, so its
/// configuration is shared, not copied (the URL alone was three allocations per event).
#[derive(Clone)]
pub struct FunctionCall(Arc<CallConfig>);

/// What every call of one function shares.
pub struct CallConfig {
    name: Arc<str>,
    transport: Transport,
    base_url: reqwest::Url,
    base_uri: http::Uri,
    format: Format,
    headers: HeaderMap,
    max_reply: usize,
}

impl std::ops::Deref for FunctionCall {
    type Target = CallConfig;

    fn deref(&self) -> &CallConfig {
        &self.0
    }
}

impl FunctionCall {
    /// A call to `base_url` in the function's format.
    pub fn new(name: &str, cfg: &FunctionConfig, base_url: reqwest::Url) -> Result<Self, BoxError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let value = HeaderValue::from_str(v.expose())
                .map_err(|_| format!("functions.{name}.headers.{k}: invalid header value"))?;
            headers.insert(HeaderName::from_bytes(k.as_bytes())?, value);
        }
        let mut base_url = base_url;
        if let Some(auth) = take_credentials(&mut base_url) {
            if !headers.contains_key(AUTHORIZATION) {
                headers.insert(AUTHORIZATION, auth);
            }
        }
        // Keep connections to the function open and reuse them.
        let transport = Transport::new(&base_url, cfg.concurrency)?;
        let base_uri = uri_of(&base_url)?;
        Ok(Self(Arc::new(CallConfig {
            name: Arc::from(name),
            transport,
            base_url,
            base_uri,
            format: cfg.format,
            headers,
            max_reply: cfg.max_reply.as_usize(),
        })))
    }
}

impl tower::Service<Invocation> for FunctionCall {
    type Response = Answer;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<Answer, InvokeError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, inv: Invocation) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.invoke(inv).await })
    }
}

impl FunctionCall {
    /// One attempt, traced as its own span; the function gets that span as its parent.
    async fn invoke(self, inv: Invocation) -> Result<Answer, InvokeError> {
        let attempt = inv.next_attempt();
        let span = crate::otel::invoke(&self.name, attempt);
        let traced = crate::otel::traceparent(&span);
        let result = self
            .attempt(inv, attempt, traced.clone())
            .instrument(span.clone())
            .await;
        match &result {
            Ok(_) => {}
            Err(e) => {
                if let InvokeError::Status { status, .. } = e {
                    span.record("http.response.status_code", status);
                }
                crate::otel::fail(&span, &e.to_string());
            }
        }
        result
    }

    async fn attempt(
        self,
        inv: Invocation,
        attempt: u32,
        traced: Option<String>,
    ) -> Result<Answer, InvokeError> {
        let traceparent = traced.clone().or_else(|| {
            inv.events
                .first()
                .and_then(|e| e.extensions.get("traceparent").cloned())
        });
        // The common case, one event in binary mode, is sent without copying the event.
        if self.format == Format::Cloudevents && inv.events.len() == 1 && !inv.batch {
            let e = &inv.events[0];
            let mut headers = binary_headers(e);
            headers.insert(
                HeaderName::from_static("ce-deliveryattempt"),
                HeaderValue::from(attempt),
            );
            if let Some(tp) = traced
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok())
            {
                headers.insert(HeaderName::from_static("ce-traceparent"), tp);
            }
            let req = self.request(self.base_uri.clone(), headers, e.data.clone(), traceparent);
            return self.send(req, &inv).await;
        }
        let events: Vec<Event> = inv
            .events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.set_extension("deliveryattempt", attempt.to_string());
                if let Some(tp) = &traced {
                    e.set_extension("traceparent", tp.clone());
                }
                e
            })
            .collect();
        let (uri, content_type, body) = match self.format {
            Format::Cloudevents | Format::CloudeventsStructured
                if events.len() > 1 || inv.batch =>
            {
                let body: Vec<_> = events.iter().map(to_json).collect();
                (
                    self.base_uri.clone(),
                    "application/cloudevents-batch+json",
                    serde_json::to_vec(&body).expect("json"),
                )
            }
            Format::Cloudevents | Format::CloudeventsStructured => (
                self.base_uri.clone(),
                "application/cloudevents+json",
                serde_json::to_vec(&to_json(&events[0])).expect("json"),
            ),
            Format::AzureFunctions => {
                let mut url = self.base_url.clone();
                url.path_segments_mut()
                    .map_err(|_| InvokeError::Refused("function url cannot have a path".into()))?
                    .pop_if_empty()
                    .push(&inv.pipeline);
                (
                    uri_of(&url).map_err(|e| InvokeError::Refused(e.to_string()))?,
                    "application/json",
                    serde_json::to_vec(&azure_request(&inv, &events)).expect("json"),
                )
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let req = self.request(uri, headers, Bytes::from(body), traceparent);
        self.send(req, &inv).await
    }

    /// A POST of `body` to `uri` with `headers`, then the function's configured headers
    /// (which win), then the caller's `traceparent`.
    fn request(
        &self,
        uri: http::Uri,
        mut headers: HeaderMap,
        body: Bytes,
        traceparent: Option<String>,
    ) -> http::Request<Bytes> {
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        if let Some(tp) = traceparent.and_then(|t| HeaderValue::from_str(&t).ok()) {
            headers.append(HeaderName::from_static("traceparent"), tp);
        }
        let mut req = http::Request::new(body);
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        req
    }

    /// Send one attempt and decode the function's answer.
    async fn send(
        &self,
        req: http::Request<Bytes>,
        inv: &Invocation,
    ) -> Result<Answer, InvokeError> {
        let answered = self.transport.send(req, self.max_reply).await?;
        let (status, headers, body) = (answered.status, answered.headers, answered.body);
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        if !status.is_success() {
            return Err(InvokeError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                retry_after: headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after),
            });
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match self.format {
            Format::AzureFunctions => decode_azure(&body, &inv.outputs, &inv.pipeline),
            _ => decode_cloudevents(body, content_type, &headers),
        }
    }
}

/// Credentials in a function's URL (`http://user:pass@host`) as a Basic `Authorization`
/// value, taken out of the URL so they travel in no request line and no log.
fn take_credentials(url: &mut reqwest::Url) -> Option<HeaderValue> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        decode(url.password().unwrap_or(""))
    );
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let token = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The `http::Uri` of a function's URL.
fn uri_of(url: &reqwest::Url) -> Result<http::Uri, BoxError> {
    Ok(url.as_str().parse::<http::Uri>()?)
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or_default())
}

fn decode_cloudevents(
    body: Bytes,
    content_type: Option<String>,
    headers: &HeaderMap,
) -> Result<Answer, InvokeError> {
    let reply = Reply {
        body: body.clone(),
        content_type: content_type.clone(),
        status: None,
    };
    if body.is_empty() {
        return Ok(Answer {
            values: Vec::new(),
            reply,
        });
    }
    let essence = content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let values = match essence.as_deref() {
        Some("application/cloudevents+json") => {
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                InvokeError::BadReply(format!("invalid structured CloudEvent: {e}"))
            })?;
            vec![structured_value(&v)?]
        }
        Some("application/cloudevents-batch+json") => {
            let v: Vec<serde_json::Value> = serde_json::from_slice(&body)
                .map_err(|e| InvokeError::BadReply(format!("invalid CloudEvents batch: {e}")))?;
            v.iter().map(structured_value).collect::<Result<_, _>>()?
        }
        _ => {
            // The binding percent-encodes `ce-*` values; a reader decodes them.
            let header = |n: &str| {
                headers.get(n).and_then(|v| v.to_str().ok()).map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
            };
            let mut value = Value::new(Target::All, body, content_type);
            value.ty = header("ce-type");
            value.subject = header("ce-subject");
            vec![value]
        }
    };
    Ok(Answer { values, reply })
}

fn structured_value(v: &serde_json::Value) -> Result<Value, InvokeError> {
    let obj = v
        .as_object()
        .ok_or_else(|| InvokeError::BadReply("a CloudEvent must be a JSON object".into()))?;
    let content_type = obj
        .get("datacontenttype")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let (data, ct) = if let Some(b64) = obj.get("data_base64").and_then(|v| v.as_str()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| InvokeError::BadReply(format!("data_base64: {e}")))?;
        (Bytes::from(bytes), content_type)
    } else {
        match obj.get("data") {
            None | Some(serde_json::Value::Null) => (Bytes::new(), content_type),
            Some(serde_json::Value::String(s))
                if !content_type.as_deref().is_some_and(is_json_media_type) =>
            {
                (Bytes::from(s.clone()), content_type)
            }
            Some(other) => (
                Bytes::from(serde_json::to_vec(other).expect("json")),
                content_type.or_else(|| Some("application/json".into())),
            ),
        }
    };
    let mut value = Value::new(Target::All, data, ct);
    value.ty = obj.get("type").and_then(|v| v.as_str()).map(str::to_string);
    value.subject = obj
        .get("subject")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(value)
}

/// The data of one event as the azure-functions format carries it.
fn azure_data(e: &Event) -> serde_json::Value {
    let body = || -> serde_json::Value {
        if e.is_json() {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.data) {
                return v;
            }
        }
        match std::str::from_utf8(&e.data) {
            Ok(s) => s.into(),
            Err(_) => base64::engine::general_purpose::STANDARD
                .encode(&e.data)
                .into(),
        }
    };
    if e.ty == "switchyard.http.request" {
        // The shape Azure Functions gives an HTTP trigger binding.
        let mut req = e.metadata.clone();
        req.insert("Params".into(), serde_json::json!({}));
        req.insert(
            "Body".into(),
            match std::str::from_utf8(&e.data) {
                Ok(s) => s.into(),
                Err(_) => base64::engine::general_purpose::STANDARD
                    .encode(&e.data)
                    .into(),
            },
        );
        return serde_json::Value::Object(req);
    }
    body()
}

/// The custom-handler request: `{"Data": {"<trigger>": ...}, "Metadata": {...}}`.
fn azure_request(inv: &Invocation, events: &[Event]) -> serde_json::Value {
    let data = if events.len() == 1 && !inv.batch {
        azure_data(&events[0])
    } else {
        serde_json::Value::Array(events.iter().map(azure_data).collect())
    };
    let first = &events[0];
    let mut meta = serde_json::Map::new();
    for (k, v) in switchyard_sdk::cloudevents::attributes(first) {
        meta.insert(k.to_string(), v.into_owned().into());
    }
    for (k, v) in &first.metadata {
        meta.entry(k.clone()).or_insert_with(|| v.clone());
    }
    meta.insert(
        "sys".into(),
        serde_json::json!({
            "MethodName": &*inv.pipeline,
            "UtcNow": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "RandGuid": uuid::Uuid::new_v4().to_string(),
        }),
    );
    serde_json::json!({
        "Data": { &*inv.trigger_name: data },
        "Metadata": meta,
    })
}

/// The output binding name Azure Functions uses for an HTTP trigger's response. When no output
/// of the pipeline has this name, `Outputs.res` answers the caller of a `response: sync` http
/// trigger, as the Azure Functions host does.
pub const HTTP_RESPONSE_BINDING: &str = "res";

/// `{"statusCode": 201, "body": ..., "headers": {"Content-Type": ...}}` as a reply.
fn http_response(v: &serde_json::Value) -> Result<Reply, InvokeError> {
    let obj = v
        .as_object()
        .ok_or_else(|| InvokeError::BadReply("Outputs.res is not a JSON object".into()))?;
    let status = match obj.get("statusCode") {
        None | Some(serde_json::Value::Null) => None,
        Some(s) => {
            let n = s
                .as_u64()
                .or_else(|| s.as_str().and_then(|t| t.parse().ok()))
                .filter(|n| (100..=599).contains(n))
                .ok_or_else(|| {
                    InvokeError::BadReply(format!(
                        "Outputs.res.statusCode {s} is not an HTTP status"
                    ))
                })?;
            Some(n as u16)
        }
    };
    let header_ct = obj
        .get("headers")
        .and_then(|h| h.as_object())
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string);
    let (body, ct) = match obj.get("body") {
        None | Some(serde_json::Value::Null) => (Bytes::new(), None),
        Some(b) => json_value_bytes(b),
    };
    Ok(Reply {
        body,
        content_type: header_ct.or(ct),
        status,
    })
}

/// Decode `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}`.
fn decode_azure(body: &[u8], outputs: &[String], pipeline: &str) -> Result<Answer, InvokeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Answer::default());
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| InvokeError::BadReply(format!("azure-functions answer is not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| {
        InvokeError::BadReply("azure-functions answer is not a JSON object".into())
    })?;
    if let Some(logs) = obj.get("Logs").and_then(|l| l.as_array()) {
        for line in logs {
            match line.as_str() {
                Some(s) => tracing::info!(pipeline, function_log = s),
                None => tracing::info!(pipeline, function_log = %line),
            }
        }
    }
    let mut values = Vec::new();
    let mut reply = Reply::default();
    match obj.get("Outputs") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (name, value) in map {
                if name == HTTP_RESPONSE_BINDING && !outputs.iter().any(|o| o == name) {
                    reply = http_response(value)?;
                    continue;
                }
                if !outputs.iter().any(|o| o == name) {
                    return Err(InvokeError::Refused(format!(
                        "Outputs names {name:?}, which is not an output of this pipeline (outputs: {})",
                        outputs.join(", ")
                    )));
                }
                if value.is_null() {
                    continue;
                }
                let (data, ct) = json_value_bytes(value);
                values.push(Value::new(Target::Named(name.clone()), data, ct));
            }
        }
        Some(_) => return Err(InvokeError::BadReply("Outputs is not a JSON object".into())),
    }
    if let Some(rv) = obj.get("ReturnValue").filter(|v| !v.is_null()) {
        let (data, ct) = json_value_bytes(rv);
        if reply == Reply::default() {
            reply = Reply {
                body: data.clone(),
                content_type: ct.clone(),
                status: None,
            };
        }
        values.push(Value::new(Target::Return, data, ct));
    }
    Ok(Answer { values, reply })
}

/// Decode a function's answer as the gateway does (for the fuzz targets): the number of values,
/// or the reason it was refused.
#[doc(hidden)]
pub fn decode_answer_for_fuzzing(
    azure: bool,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<usize, String> {
    if azure {
        let outputs = ["a".to_string(), "$return".to_string(), "res".to_string()];
        return decode_azure(body, &outputs, "p")
            .map(|a| a.values.len())
            .map_err(|e| e.to_string());
    }
    let mut headers = HeaderMap::new();
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(CONTENT_TYPE, ct);
    }
    decode_cloudevents(
        Bytes::copy_from_slice(body),
        content_type.map(str::to_string),
        &headers,
    )
    .map(|a| a.values.len())
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_become_basic_auth_and_leave_the_url() {
        let mut url: reqwest::Url = "http://fn%40user:p%3Ass@127.0.0.1:7071/api"
            .parse()
            .unwrap();
        let auth = take_credentials(&mut url).expect("credentials");
        assert_eq!(url.as_str(), "http://127.0.0.1:7071/api");
        let token = base64::engine::general_purpose::STANDARD.encode("fn@user:p:ss");
        assert_eq!(auth.to_str().unwrap(), format!("Basic {token}"));
        assert!(auth.is_sensitive());
        let mut plain: reqwest::Url = "http://127.0.0.1:7071/".parse().unwrap();
        assert!(take_credentials(&mut plain).is_none());
    }

    #[test]
    fn azure_answer_routes_by_name() {
        let outputs: Vec<String> = vec!["a".into(), "b".into()];
        let a = decode_azure(
            br#"{"Outputs":{"a":{"x":1},"b":"text"},"Logs":["hi"],"ReturnValue":null}"#,
            &outputs,
            "p",
        )
        .unwrap();
        assert_eq!(a.values.len(), 2);
        let a_val = a
            .values
            .iter()
            .find(|v| v.target == Target::Named("a".into()))
            .unwrap();
        assert_eq!(&a_val.data[..], br#"{"x":1}"#);
        let b_val = a
            .values
            .iter()
            .find(|v| v.target == Target::Named("b".into()))
            .unwrap();
        assert_eq!(&b_val.data[..], b"text");
    }

    #[test]
    fn azure_garbage_and_unknown_outputs() {
        let outputs: Vec<String> = vec!["a".into()];
        assert!(matches!(
            decode_azure(b"<html>", &outputs, "p"),
            Err(InvokeError::BadReply(_))
        ));
        assert!(matches!(
            decode_azure(br#"{"Outputs":{"zzz":1}}"#, &outputs, "p"),
            Err(InvokeError::Refused(_))
        ));
        let a = decode_azure(br#"{"ReturnValue":{"ok":true}}"#, &outputs, "p").unwrap();
        assert_eq!(a.values[0].target, Target::Return);
        assert_eq!(&a.reply.body[..], br#"{"ok":true}"#);
    }

    #[test]
    fn azure_http_response_answers_the_caller() {
        let a = decode_azure(
            br#"{"Outputs":{"res":{"statusCode":201,"body":"created","headers":{"Content-Type":"text/plain"}}}}"#,
            &["out".to_string()],
            "p",
        )
        .unwrap();
        assert!(
            a.values.is_empty(),
            "res is the HTTP answer, not an output value"
        );
        assert_eq!(a.reply.status, Some(201));
        assert_eq!(&a.reply.body[..], b"created");
        assert_eq!(a.reply.content_type.as_deref(), Some("text/plain"));
        assert!(decode_azure(br#"{"Outputs":{"res":{"statusCode":99}}}"#, &[], "p").is_err());
    }

    #[test]
    fn structured_reply_keeps_type_and_data() {
        let body = Bytes::from_static(br#"{"specversion":"1.0","id":"1","source":"f","type":"order.done","subject":"o-1","datacontenttype":"application/json","data":{"n":1}}"#);
        let a = decode_cloudevents(
            body,
            Some("application/cloudevents+json".into()),
            &HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(a.values[0].ty.as_deref(), Some("order.done"));
        assert_eq!(&a.values[0].data[..], br#"{"n":1}"#);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
