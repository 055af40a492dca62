//! The `slack` trigger.
//!
//! Every request is verified as Slack documents it: `X-Slack-Signature` is `v0=` + hex
//! HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}` with the signing secret, compared
//! in constant time, and a timestamp more than `max_skew` from now is refused. Slack wants an
//! answer within 3 seconds and retries otherwise, so the trigger answers 200 as soon as the
//! event is queued, invokes the function asynchronously, and drops Slack's retries of an
//! `event_id` it has already taken.

use crate::config::SlackTriggerConfig;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::event::{Event, TriggerEvent};
use switchyard_sdk::signature::verify_hmac_sha256;
use switchyard_sdk::{Ack, EventStatus, Trigger, TriggerContext};

const REJECTED: &str = "switchyard_slack_requests_rejected_total";
const RETRIES: &str = "switchyard_slack_retries_dropped_total";

/// How many event ids are remembered to drop Slack's retries.
const DEDUPE_CAPACITY: usize = 10_000;

struct Shared {
    cx: TriggerContext,
    config: SlackTriggerConfig,
    seen: Mutex<(HashMap<String, ()>, VecDeque<String>)>,
    client: reqwest::Client,
}

/// Verify a Slack request signature (see the module docs).
pub fn verify(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let mut base = format!("v0:{timestamp}:").into_bytes();
    base.extend_from_slice(body);
    verify_hmac_sha256(secret.as_bytes(), &base, signature, "v0=").is_ok()
}

impl SlackTriggerConfig {
    /// Build the trigger: its route on the ingress server.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        if !self.path.starts_with('/') {
            return Err(BuildError::invalid("path", "must start with '/'"));
        }
        let shared = Arc::new(Shared {
            cx: cx.clone(),
            config: self.clone(),
            seen: Mutex::new((HashMap::new(), VecDeque::new())),
            client: reqwest::Client::new(),
        });
        let routes = Router::new()
            .route(&self.path, post(handle))
            .with_state(shared);
        cx.health.ready();
        Ok(Trigger::routes(routes, cx.shutdown.clone()))
    }
}

fn refuse(pipeline: &str, status: StatusCode, reason: &'static str) -> Response {
    metrics::counter!(REJECTED, "pipeline" => pipeline.to_string(), "reason" => reason)
        .increment(1);
    tracing::debug!(pipeline, reason, "slack trigger refused a request");
    (status, reason).into_response()
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let pipeline = s.cx.pipeline.as_str();
    let (parts, body) = req.into_parts();
    let body = match s.cx.read_body(body).await {
        Ok(b) => b,
        Err((status, reason)) => return refuse(pipeline, status, reason),
    };
    let header_str =
        |h: &HeaderMap, n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (Some(ts), Some(sig)) = (
        header_str(&parts.headers, "x-slack-request-timestamp"),
        header_str(&parts.headers, "x-slack-signature"),
    ) else {
        return refuse(pipeline, StatusCode::UNAUTHORIZED, "missing signature");
    };
    let Ok(ts_secs) = ts.trim().parse::<i64>() else {
        return refuse(pipeline, StatusCode::UNAUTHORIZED, "bad timestamp");
    };
    let skew = (chrono::Utc::now().timestamp() - ts_secs).unsigned_abs();
    if skew > s.config.max_skew.get().as_secs() {
        return refuse(pipeline, StatusCode::UNAUTHORIZED, "stale timestamp");
    }
    if !verify(s.config.signing_secret.expose(), &ts, &body, &sig) {
        return refuse(pipeline, StatusCode::UNAUTHORIZED, "bad signature");
    }
    let content_type = header_str(&parts.headers, "content-type").unwrap_or_default();
    let parsed = if content_type.starts_with("application/json") {
        parse_json(pipeline, &s.config.path, &body)
    } else {
        parse_form(pipeline, &s.config.path, &body)
    };
    let (event, response_url) = match parsed {
        Ok(Parsed::Challenge(c)) => {
            return ([(header::CONTENT_TYPE, "text/plain")], c).into_response()
        }
        Ok(Parsed::Event(e, url)) => (*e, url),
        Err(reason) => return refuse(pipeline, StatusCode::BAD_REQUEST, reason),
    };
    if !s.first_time(&event.id) {
        let retry = header_str(&parts.headers, "x-slack-retry-num").unwrap_or_default();
        metrics::counter!(RETRIES, "pipeline" => pipeline.to_string()).increment(1);
        tracing::debug!(pipeline, id = %event.id, retry, "slack retry of an event already taken; dropped");
        return StatusCode::OK.into_response();
    }
    let ack = match response_url {
        // A slash command's reply goes back through its response_url.
        Some(url) => {
            let client = s.client.clone();
            Ack::new(move |status: EventStatus| {
                if let EventStatus::Delivered(reply) = status {
                    if !reply.body.is_empty() {
                        tokio::spawn(respond(client, url, reply.body));
                    }
                }
            })
        }
        None => Ack::none(),
    };
    match tokio::time::timeout(
        Duration::from_secs(2),
        s.cx.events.send(TriggerEvent::new(event.clone(), ack)),
    )
    .await
    {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        _ => {
            // Not taken: let Slack retry it.
            s.forget(&event.id);
            refuse(pipeline, StatusCode::SERVICE_UNAVAILABLE, "busy")
        }
    }
}

impl Shared {
    fn first_time(&self, id: &str) -> bool {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *g;
        if set.contains_key(id) {
            return false;
        }
        set.insert(id.to_string(), ());
        order.push_back(id.to_string());
        if order.len() > DEDUPE_CAPACITY {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }

    fn forget(&self, id: &str) {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        g.0.remove(id);
    }
}

async fn respond(client: reqwest::Client, url: String, body: Bytes) {
    let json: serde_json::Value = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() => v,
        _ => serde_json::json!({ "text": String::from_utf8_lossy(&body) }),
    };
    if let Err(e) = client.post(&url).json(&json).send().await {
        tracing::warn!(error = %e.without_url(), "cannot post the reply to response_url");
    }
}

enum Parsed {
    Challenge(String),
    Event(Box<Event>, Option<String>),
}

fn parse_json(pipeline: &str, path: &str, body: &[u8]) -> Result<Parsed, &'static str> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed JSON")?;
    match v["type"].as_str() {
        Some("url_verification") => Ok(Parsed::Challenge(
            v["challenge"].as_str().unwrap_or_default().to_string(),
        )),
        Some("event_callback") => {
            let ev = &v["event"];
            let kind = ev["type"].as_str().ok_or("event without type")?;
            let id = v["event_id"].as_str().ok_or("event without event_id")?;
            let mut e = Event::new(
                id,
                Event::source_for(pipeline, "slack", path.trim_start_matches('/')),
                format!("switchyard.slack.event.{kind}"),
            )
            .with_data(
                serde_json::to_vec(ev).unwrap_or_default(),
                Some("application/json".into()),
            );
            e.subject = ev["channel"]
                .as_str()
                .or_else(|| ev["item"]["channel"].as_str())
                .map(str::to_string);
            if let Some(t) = v["event_time"]
                .as_i64()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            {
                e.time = t;
            }
            if let Some(team) = v["team_id"].as_str() {
                e.set_extension("slackteam", team);
            }
            e.partition = e.subject.clone();
            Ok(Parsed::Event(Box::new(e), None))
        }
        _ => Err("unsupported payload type"),
    }
}

fn parse_form(pipeline: &str, path: &str, body: &[u8]) -> Result<Parsed, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8")?;
    let url = reqwest::Url::parse(&format!("http://form/?{text}")).map_err(|_| "malformed form")?;
    let fields: serde_json::Map<String, serde_json::Value> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned().into()))
        .collect();
    let source = Event::source_for(pipeline, "slack", path.trim_start_matches('/'));
    if let Some(payload) = fields.get("payload").and_then(|p| p.as_str()) {
        // Interactivity (buttons, modals, shortcuts).
        let p: serde_json::Value =
            serde_json::from_str(payload).map_err(|_| "malformed interactivity payload")?;
        let kind = p["type"].as_str().unwrap_or("interaction");
        let id = p["trigger_id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| stable_id(payload.as_bytes()));
        let mut e = Event::new(id, source, format!("switchyard.slack.interaction.{kind}"))
            .with_data(payload.as_bytes().to_vec(), Some("application/json".into()));
        e.subject = p["channel"]["id"].as_str().map(str::to_string);
        let url = p["response_url"].as_str().map(str::to_string);
        return Ok(Parsed::Event(Box::new(e), url));
    }
    if fields.get("command").is_some() {
        // A slash command: Slack does not retry it; the id is its trigger_id, else a hash.
        let id = fields
            .get("trigger_id")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| stable_id(body));
        let mut e = Event::new(id, source, "switchyard.slack.command").with_data(
            serde_json::to_vec(&fields).unwrap_or_default(),
            Some("application/json".into()),
        );
        e.subject = fields
            .get("channel_id")
            .and_then(|c| c.as_str())
            .map(str::to_string);
        let url = fields
            .get("response_url")
            .and_then(|u| u.as_str())
            .map(str::to_string);
        return Ok(Parsed::Event(Box::new(e), url));
    }
    Err("unsupported form payload")
}

fn stable_id(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slack_known_answer() {
        assert!(verify(SECRET, TS, BODY.as_bytes(), SIG));
        assert!(
            !verify(SECRET, "1531420619", BODY.as_bytes(), SIG),
            "timestamp is signed"
        );
        assert!(!verify("other", TS, BODY.as_bytes(), SIG));
        assert!(
            !verify(SECRET, TS, BODY.as_bytes(), "a2114d57"),
            "prefix required"
        );
    }

    #[test]
    fn slash_command_from_the_documented_body() {
        let Ok(Parsed::Event(e, url)) = parse_form("p", "/slack", BODY.as_bytes()) else {
            panic!()
        };
        assert_eq!(e.ty, "switchyard.slack.command");
        assert_eq!(
            e.id,
            "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
        );
        assert_eq!(e.subject.as_deref(), Some("G8PSS9T3V"));
        assert_eq!(
            url.as_deref(),
            Some(
                "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
            )
        );
        let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(data["command"], "/webhook-collect");
    }

    #[test]
    fn interactivity_payloads_are_events() {
        let payload = r#"{"type":"block_actions","trigger_id":"T-1","channel":{"id":"C7"},"response_url":"https://hooks.example/r"}"#;
        let encoded: String = payload
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let body = format!("payload={encoded}");
        let Ok(Parsed::Event(e, url)) = parse_form("p", "/s", body.as_bytes()) else {
            panic!()
        };
        assert_eq!(
            (e.id.as_str(), e.ty.as_str()),
            ("T-1", "switchyard.slack.interaction.block_actions")
        );
        assert_eq!(e.subject.as_deref(), Some("C7"));
        assert_eq!(url.as_deref(), Some("https://hooks.example/r"));
    }

    #[test]
    fn events_and_challenges() {
        let Ok(Parsed::Challenge(c)) = parse_json(
            "p",
            "/s",
            br#"{"type":"url_verification","challenge":"abc"}"#,
        ) else {
            panic!()
        };
        assert_eq!(c, "abc");
        let body = br#"{"type":"event_callback","team_id":"T1","event_id":"Ev1","event_time":1700000000,"event":{"type":"app_mention","channel":"C1","text":"hi"}}"#;
        let Ok(Parsed::Event(e, None)) = parse_json("p", "/s", body) else {
            panic!()
        };
        assert_eq!(
            (e.id.as_str(), e.ty.as_str()),
            ("Ev1", "switchyard.slack.event.app_mention")
        );
        assert_eq!(e.subject.as_deref(), Some("C1"));
        assert_eq!(e.time.timestamp(), 1_700_000_000);
        assert!(parse_json("p", "/s", b"{nope").is_err());
    }
}
