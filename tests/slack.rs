//! Slack, end to end: requests signed exactly as Slack signs them, the real binary and a real
//! function, and a local server that checks every Web API call as Slack would (no machine here
//! reaches Slack).

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "test-signing-secret";

#[derive(Default)]
struct Mock {
    posts: Vec<serde_json::Value>,
    responses: Vec<serde_json::Value>,
    rate_limited_once: bool,
    post_times: Vec<Instant>,
}

type Shared = Arc<Mutex<Mock>>;

/// chat.postMessage as the Web API documents it: POST, bearer token, JSON body with a channel
/// and text or blocks; errors are HTTP 200 with `"ok": false`.
async fn post_message(
    State(m): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != "Bearer xoxb-test-token" {
        return axum::Json(serde_json::json!({ "ok": false, "error": "not_authed" }))
            .into_response();
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return axum::Json(serde_json::json!({ "ok": false, "error": "invalid_form_data" }))
            .into_response();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return axum::Json(serde_json::json!({ "ok": false, "error": "invalid_json" }))
            .into_response();
    };
    let channel = v["channel"].as_str().unwrap_or("").to_string();
    if channel.is_empty() {
        return axum::Json(serde_json::json!({ "ok": false, "error": "channel_not_found" }))
            .into_response();
    }
    if v.get("text").is_none() && v.get("blocks").is_none() {
        return axum::Json(serde_json::json!({ "ok": false, "error": "no_text" })).into_response();
    }
    let mut g = m.lock().unwrap();
    g.post_times.push(Instant::now());
    if channel == "CRATE" && !g.rate_limited_once {
        g.rate_limited_once = true;
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response();
    }
    if channel == "CRATEALWAYS" {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "").into_response();
    }
    if channel == "CBROKEN" {
        return axum::Json(serde_json::json!({ "ok": false, "error": "internal_error" }))
            .into_response();
    }
    if channel == "CMISSING" {
        return axum::Json(serde_json::json!({ "ok": false, "error": "channel_not_found" }))
            .into_response();
    }
    g.posts.push(v);
    axum::Json(serde_json::json!({ "ok": true, "channel": channel, "ts": "1700000000.000100" }))
        .into_response()
}

async fn response_url(State(m): State<Shared>, body: axum::body::Bytes) -> StatusCode {
    m.lock()
        .unwrap()
        .responses
        .push(serde_json::from_slice(&body).unwrap_or_default());
    StatusCode::OK
}

async fn mock_slack() -> (Shared, u16) {
    let shared = Shared::default();
    let app = axum::Router::new()
        .route("/api/chat.postMessage", axum::routing::post(post_message))
        .route("/response/{id}", axum::routing::post(response_url))
        .with_state(shared.clone());
    let port = serve(app).await;
    (shared, port)
}

fn yaml(slack_port: u16) -> String {
    format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s }}
pipelines:
  s:
    trigger: {{ type: slack, path: /slack/events, signing_secret: \"{SECRET}\" }}
    function: f
    retry: {{ max_attempts: 3, backoff: fixed, initial_delay: 10ms }}
    dead_letter: {{ type: directory, path: \"{{dir}}/dead/{{id}}.json\" }}
    outputs:
      - {{ name: reply, type: slack, token: xoxb-test-token, channel: \"{{subject}}\", endpoint: \"http://127.0.0.1:{slack_port}/api\" }}
"
    )
}

/// POST a body signed as Slack signs it (at `ts`, or now).
async fn signed(
    g: &Gateway,
    body: &str,
    content_type: &str,
    ts: Option<i64>,
    extra: &[(&str, &str)],
) -> (u16, String, Duration) {
    let ts = ts
        .unwrap_or_else(|| chrono::Utc::now().timestamp())
        .to_string();
    let sig = format!(
        "v0={}",
        switchyard_sdk::signature::hmac_sha256_hex(
            SECRET.as_bytes(),
            format!("v0:{ts}:{body}").as_bytes()
        )
    );
    let mut req = g
        .client
        .post(g.ingress_url("/slack/events"))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", sig)
        .body(body.to_string());
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let started = Instant::now();
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap(), started.elapsed())
}

fn event(id: &str, channel: &str) -> String {
    serde_json::json!({
        "type": "event_callback", "team_id": "T1", "event_id": id, "event_time": 1_700_000_000,
        "event": { "type": "app_mention", "channel": channel, "user": "U1", "text": "<@B1> hello" }
    })
    .to_string()
}

#[tokio::test]
async fn events_are_verified_answered_at_once_deduplicated_and_replied_to() {
    let (mock, port) = mock_slack().await;
    let g = Gateway::start(&yaml(port)).await;

    let (status, body, _) = signed(
        &g,
        r#"{"type":"url_verification","challenge":"3eZbrw1aB"}"#,
        "application/json",
        None,
        &[],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "3eZbrw1aB"));

    // Unsigned, wrongly signed, replayed: 401, counted, never reach the function.
    let r = g
        .client
        .post(g.ingress_url("/slack/events"))
        .body(event("Ev0", "C1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = g
        .client
        .post(g.ingress_url("/slack/events"))
        .header(
            "x-slack-request-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("x-slack-signature", "v0=00")
        .body(event("Ev0", "C1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A body altered after signing.
    let ts = chrono::Utc::now().timestamp().to_string();
    let good = event("Ev0", "C1");
    let sig = format!(
        "v0={}",
        switchyard_sdk::signature::hmac_sha256_hex(
            SECRET.as_bytes(),
            format!("v0:{ts}:{good}").as_bytes()
        )
    );
    let r = g
        .client
        .post(g.ingress_url("/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", sig)
        .body(good.replace("hello", "HELLO"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let stale = chrono::Utc::now().timestamp() - 600;
    assert_eq!(
        signed(
            &g,
            &event("Ev0", "C1"),
            "application/json",
            Some(stale),
            &[]
        )
        .await
        .0,
        401
    );

    // A mention: 200 at once, the function once, a reply in the event's channel.
    let (status, _, took) = signed(&g, &event("Ev1", "C1"), "application/json", None, &[]).await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    // Slack retries it: acknowledged, not invoked again.
    let (status, _, _) = signed(
        &g,
        &event("Ev1", "C1"),
        "application/json",
        None,
        &[
            ("x-slack-retry-num", "1"),
            ("x-slack-retry-reason", "http_timeout"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    eventually(10, "the reply", || !mock.lock().unwrap().posts.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = mock.lock().unwrap().posts.clone();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["channel"], "C1");
    assert!(posts[0]["text"].is_string());
    let calls = g.function_log();
    assert_eq!(calls.len(), 1, "a retried event invokes the function once");
    let h = &calls[0]["headers"];
    assert_eq!(h["ce-id"], "Ev1");
    assert_eq!(h["ce-type"], "switchyard.slack.event.app_mention");
    assert_eq!(h["ce-subject"], "C1");
    assert_eq!(h["ce-time"], "2023-11-14T22:13:20Z");
    let m = g.metrics().await;
    assert_eq!(
        metric_value(&m, "switchyard_slack_requests_rejected_total", &[]),
        4.0
    );
    assert_eq!(
        metric_value(
            &m,
            "switchyard_slack_requests_rejected_total",
            &[("reason", "missing signature")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &m,
            "switchyard_slack_requests_rejected_total",
            &[("reason", "bad signature")]
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &m,
            "switchyard_slack_requests_rejected_total",
            &[("reason", "stale timestamp")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(&m, "switchyard_slack_retries_dropped_total", &[]),
        1.0
    );
}

#[tokio::test]
async fn slack_errors_and_rate_limits_follow_the_delivery_rules() {
    let (mock, port) = mock_slack().await;
    let g = Gateway::start(&yaml(port)).await;
    // "ok": false is a failed write: dead letter with Slack's error code.
    assert_eq!(
        signed(
            &g,
            &event("EvMissing", "CMISSING"),
            "application/json",
            None,
            &[]
        )
        .await
        .0,
        200
    );
    let dead = g.path("dead/EvMissing.json");
    eventually(10, "dead letter", || dead.exists()).await;
    assert_eq!(read_json(&dead)["switchyarderrorcode"], "channel_not_found");
    assert_eq!(
        read_json(&dead)["switchyardattempts"],
        "1",
        "a permanent Slack error is not retried"
    );
    // A transient "ok": false is retried, then dead-lettered with Slack's error.
    assert_eq!(
        signed(
            &g,
            &event("EvBroken", "CBROKEN"),
            "application/json",
            None,
            &[]
        )
        .await
        .0,
        200
    );
    let dead = g.path("dead/EvBroken.json");
    eventually(10, "dead letter", || dead.exists()).await;
    assert_eq!(read_json(&dead)["switchyarderrorcode"], "internal_error");
    assert_eq!(read_json(&dead)["switchyardattempts"], "3");
    // A 429 that never ends: retried, then dead-lettered.
    assert_eq!(
        signed(
            &g,
            &event("EvRateAlways", "CRATEALWAYS"),
            "application/json",
            None,
            &[]
        )
        .await
        .0,
        200
    );
    let dead = g.path("dead/EvRateAlways.json");
    eventually(10, "dead letter", || dead.exists()).await;
    assert_eq!(read_json(&dead)["switchyarderrorcode"], "429");
    assert_eq!(read_json(&dead)["switchyardattempts"], "3");
    // 429 is retried after its Retry-After.
    assert_eq!(
        signed(&g, &event("EvRate", "CRATE"), "application/json", None, &[])
            .await
            .0,
        200
    );
    eventually(10, "the rate-limited reply", || {
        mock.lock()
            .unwrap()
            .posts
            .iter()
            .any(|p| p["channel"] == "CRATE")
    })
    .await;
    let times = mock.lock().unwrap().post_times.clone();
    let gap = times[times.len() - 1] - times[times.len() - 2];
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
}

#[tokio::test]
async fn slash_commands_reply_through_response_url() {
    let (mock, port) = mock_slack().await;
    let g = Gateway::start(&yaml(port)).await;
    let body = format!(
        "token=x&team_id=T1&channel_id=C9&user_id=U1&command=%2Fdeploy&text=now&response_url=http%3A%2F%2F127.0.0.1%3A{port}%2Fresponse%2F1&trigger_id=13345224609.738474920.8088930838d88f008e0"
    );
    let (status, _, _) = signed(&g, &body, "application/x-www-form-urlencoded", None, &[]).await;
    assert_eq!(status, 200);
    eventually(10, "the response_url reply", || {
        !mock.lock().unwrap().responses.is_empty()
    })
    .await;
    let call = &g.function_log()[0];
    assert_eq!(call["headers"]["ce-type"], "switchyard.slack.command");
    assert_eq!(
        call["headers"]["ce-id"],
        "13345224609.738474920.8088930838d88f008e0"
    );
    let data: serde_json::Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (data["command"].as_str(), data["text"].as_str()),
        (Some("/deploy"), Some("now"))
    );
    assert!(
        mock.lock().unwrap().responses[0]["attempt"] == "1",
        "the function's reply went to response_url"
    );
}
