//! The `http` trigger: requests on the ingress server become events.

use crate::config::{HttpTriggerConfig, ResponseMode};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use std::sync::Arc;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::event::{Event, TriggerEvent};
use switchyard_sdk::signature::verify_hmac_sha256;
use switchyard_sdk::{Ack, EventStatus, Trigger, TriggerContext};

/// Metric for requests the trigger refused (bad signature, wrong method, too large).
const REJECTED: &str = "switchyard_http_requests_rejected_total";

struct Shared {
    cx: TriggerContext,
    config: HttpTriggerConfig,
    methods: Vec<Method>,
}

impl HttpTriggerConfig {
    /// Build the trigger: its routes on the ingress server, and a task that waits for shutdown.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        if !self.path.starts_with('/') {
            return Err(BuildError::invalid("path", "must start with '/'"));
        }
        if let Some(h) = &self.hmac {
            if !h.algorithm.eq_ignore_ascii_case("sha256") {
                return Err(BuildError::invalid(
                    "hmac.algorithm",
                    format!("unsupported {:?}; only sha256", h.algorithm),
                ));
            }
            if header::HeaderName::from_bytes(h.header.as_bytes()).is_err() {
                return Err(BuildError::invalid(
                    "hmac.header",
                    "not a valid header name",
                ));
            }
        }
        let methods = self
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| BuildError::invalid("methods", format!("invalid method {m:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            cx: cx.clone(),
            config: self.clone(),
            methods,
        });
        let routes = Router::new()
            .route(&self.path, any(handle))
            .with_state(shared);
        cx.health.ready();
        Ok(Trigger::routes(routes, cx.shutdown.clone()))
    }
}

fn refuse(pipeline: &str, status: StatusCode, reason: &'static str) -> Response {
    metrics::counter!(REJECTED, "pipeline" => pipeline.to_string(), "reason" => reason)
        .increment(1);
    tracing::debug!(pipeline, reason, "http trigger refused a request");
    (status, axum::Json(serde_json::json!({ "error": reason }))).into_response()
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let pipeline = s.cx.pipeline.as_str();
    if s.cx.shutdown.is_cancelled() {
        return refuse(pipeline, StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !s.methods.contains(req.method()) {
        return refuse(
            pipeline,
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        );
    }
    let (parts, body) = req.into_parts();
    let body = match s.cx.read_body(body).await {
        Ok(b) => b,
        Err((status, reason)) => return refuse(pipeline, status, reason),
    };
    if let Some(h) = &s.config.hmac {
        let Some(sig) = parts
            .headers
            .get(h.header.as_str())
            .and_then(|v| v.to_str().ok())
        else {
            return refuse(pipeline, StatusCode::UNAUTHORIZED, "missing signature");
        };
        if verify_hmac_sha256(h.secret.expose().as_bytes(), &body, sig, &h.prefix).is_err() {
            return refuse(pipeline, StatusCode::UNAUTHORIZED, "bad signature");
        }
    }
    let event = to_event(
        pipeline,
        &s.config.path,
        &parts.method,
        &parts.uri,
        &parts.headers,
        body,
    );
    match s.config.response {
        ResponseMode::Accepted => {
            let id = event.id.clone();
            if s.cx
                .events
                .send(TriggerEvent::new(event, Ack::none()))
                .await
                .is_err()
            {
                return refuse(pipeline, StatusCode::SERVICE_UNAVAILABLE, "draining");
            }
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({ "id": id })),
            )
                .into_response()
        }
        ResponseMode::Sync => {
            let (ack, rx) = Ack::channel();
            if s.cx
                .events
                .send(TriggerEvent::new(event, ack))
                .await
                .is_err()
            {
                return refuse(pipeline, StatusCode::SERVICE_UNAVAILABLE, "draining");
            }
            match rx.await.unwrap_or(EventStatus::Abandoned) {
                EventStatus::Delivered(reply) => {
                    let status = reply
                        .status
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .unwrap_or(if reply.body.is_empty() {
                            StatusCode::NO_CONTENT
                        } else {
                            StatusCode::OK
                        });
                    let ct = reply
                        .content_type
                        .unwrap_or_else(|| "application/octet-stream".into());
                    (status, [(header::CONTENT_TYPE, ct)], reply.body).into_response()
                }
                EventStatus::DeadLettered { error } | EventStatus::Rejected { error } => (
                    StatusCode::BAD_GATEWAY,
                    axum::Json(serde_json::json!({ "error": error })),
                )
                    .into_response(),
                EventStatus::Abandoned => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(serde_json::json!({ "error": "not delivered; try again" })),
                )
                    .into_response(),
            }
        }
    }
}

fn to_event(
    pipeline: &str,
    path: &str,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Event {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut event = Event::new(
        uuid::Uuid::new_v4().to_string(),
        Event::source_for(pipeline, "http", path.trim_start_matches('/')),
        "switchyard.http.request",
    )
    .with_data(body, content_type);
    event.set_extension("httpmethod", method.as_str());
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        event.set_extension("traceparent", tp);
    }
    let mut hdrs = serde_json::Map::new();
    for (k, v) in headers {
        if let Ok(v) = v.to_str() {
            hdrs.insert(k.as_str().to_string(), v.into());
        }
    }
    let query: serde_json::Map<_, _> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), serde_json::Value::from(v))
        })
        .collect();
    event
        .metadata
        .insert("Method".into(), method.as_str().into());
    event.metadata.insert("Url".into(), uri.to_string().into());
    event.metadata.insert("Headers".into(), hdrs.into());
    event.metadata.insert("Query".into(), query.into());
    event
}
