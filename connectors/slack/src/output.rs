//! The `slack` output: `chat.postMessage` with a bot token, or an incoming webhook.
//!
//! The value becomes the message: a JSON object with `text` or `blocks` is sent as the whole
//! message (the configured channel wins), anything else as its `text`. Slack answers HTTP 200
//! with `"ok": false` on errors: that is a failed write whose Slack `error` becomes the dead
//! letter's `switchyarderrorcode`; it is retried unless the code is one another try cannot fix
//! (`channel_not_found`, `invalid_auth`...). A 429 is retried after its `Retry-After`.

use crate::config::{check_output, SlackOutputConfig};
use async_trait::async_trait;
use std::time::Duration;
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::event::is_json_media_type;
use switchyard_sdk::{Output, Record};

/// Posts messages to Slack.
pub struct SlackOutput {
    config: SlackOutputConfig,
    client: reqwest::Client,
}

impl SlackOutputConfig {
    /// Build the output.
    pub fn build(&self) -> Result<SlackOutput, BuildError> {
        BuildError::first_of(check_output(self))?;
        let client = reqwest::Client::builder()
            .timeout(self.timeout.get())
            .build()
            .map_err(|e| BuildError::Other {
                context: "slack client".into(),
                source: e.into(),
            })?;
        Ok(SlackOutput {
            config: self.clone(),
            client,
        })
    }
}

/// The message body for a value.
pub fn message(record: &Record, channel: Option<String>) -> serde_json::Value {
    let as_json = record
        .content_type
        .as_deref()
        .is_some_and(is_json_media_type)
        .then(|| serde_json::from_slice::<serde_json::Value>(&record.data).ok())
        .flatten()
        .filter(|v| v.get("text").is_some() || v.get("blocks").is_some());
    let mut msg = as_json
        .unwrap_or_else(|| serde_json::json!({ "text": String::from_utf8_lossy(&record.data) }));
    if let (Some(c), Some(obj)) = (channel, msg.as_object_mut()) {
        obj.insert("channel".into(), c.into());
    }
    msg
}

/// Slack errors that another try cannot fix (the message, channel or token is wrong).
const PERMANENT: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "msg_too_long",
    "no_text",
    "invalid_blocks",
    "invalid_payload",
    "not_authed",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
    "no_permission",
    "restricted_action",
    "invalid_arguments",
    "channel_is_archived",
    "no_service",
    "no_service_id",
    "no_team",
    "team_disabled",
    "action_prohibited",
];

/// Slack's `"ok": false` (or a webhook's error text): retried unless the code is permanent.
fn refused(code: String) -> OutputError {
    let retryable = !PERMANENT.contains(&code.as_str());
    OutputError::Refused { code, retryable }
}

fn connect(e: reqwest::Error) -> OutputError {
    OutputError::Connect {
        source: Box::new(e.without_url()),
    }
}

#[async_trait]
impl Output for SlackOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let (url, token, channel) = match (&self.config.webhook_url, &self.config.token) {
            (Some(hook), _) => (hook.expose().to_string(), None, None),
            (None, Some(token)) => (
                format!(
                    "{}/chat.postMessage",
                    self.config.endpoint.trim_end_matches('/')
                ),
                Some(token.expose().to_string()),
                self.config.channel.as_ref().map(|c| c.render(record)),
            ),
            (None, None) => return Err(OutputError::Invalid("no token and no webhook_url".into())),
        };
        let mut req = self.client.post(&url).json(&message(record, channel));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(connect)?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs);
            return Err(OutputError::Status {
                status: 429,
                message: "rate limited".into(),
                retry_after,
            });
        }
        let text = resp.text().await.map_err(connect)?;
        if self.config.webhook_url.is_some() {
            // Incoming webhooks answer 200 "ok", or 4xx with an error code as text.
            return if status.is_success() {
                Ok(())
            } else if status.is_client_error() {
                Err(refused(text.trim().chars().take(100).collect()))
            } else {
                Err(OutputError::Status {
                    status: status.as_u16(),
                    message: text.chars().take(200).collect(),
                    retry_after: None,
                })
            };
        }
        if !status.is_success() {
            return Err(OutputError::Status {
                status: status.as_u16(),
                message: text.chars().take(200).collect(),
                retry_after: None,
            });
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| OutputError::Status {
                status: status.as_u16(),
                message: "Slack answered something that is not JSON".into(),
                retry_after: None,
            })?;
        if v["ok"].as_bool() == Some(true) {
            Ok(())
        } else {
            Err(refused(
                v["error"].as_str().unwrap_or("unknown_error").to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_values() {
        let mut r = Record::new("p", bytes::Bytes::from_static(b"hello"));
        assert_eq!(
            message(&r, Some("C1".into())),
            serde_json::json!({ "text": "hello", "channel": "C1" })
        );
        r.data = bytes::Bytes::from_static(br#"{"blocks":[{"type":"divider"}],"channel":"X"}"#);
        r.content_type = Some("application/json".into());
        let m = message(&r, Some("C1".into()));
        assert_eq!(m["channel"], "C1", "the configured channel wins");
        assert_eq!(m["blocks"][0]["type"], "divider");
        r.data = bytes::Bytes::from_static(br#"{"n":1}"#);
        assert_eq!(
            message(&r, None),
            serde_json::json!({ "text": "{\"n\":1}" })
        );
    }
}
