//! Config of the `slack` trigger and output.

use schemars::JsonSchema;
use serde::Deserialize;
use switchyard_sdk::config::{Duration, Secret};
use switchyard_sdk::Template;

/// `type: slack` trigger: Slack's requests on the ingress server at `path`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackTriggerConfig {
    /// The path on the ingress server (the app's Request URL), e.g. `/slack/events`.
    pub path: String,
    /// The app's signing secret; every request is verified with it.
    pub signing_secret: Secret,
    /// Requests whose timestamp is further from now are refused (replays).
    #[serde(default = "default_max_skew")]
    pub max_skew: Duration,
}

fn default_max_skew() -> Duration {
    Duration::from_secs(300)
}

/// `type: slack` output: `chat.postMessage` with a bot token, or an incoming webhook.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackOutputConfig {
    /// A bot token (`xoxb-...`) for `chat.postMessage`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// The channel (a template), e.g. `{subject}` to answer where the event came from.
    #[serde(default)]
    pub channel: Option<Template>,
    /// An incoming webhook URL, instead of `token` and `channel`.
    #[serde(default)]
    pub webhook_url: Option<Secret>,
    /// The Web API base URL (tests point it at a local server).
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// How long to wait for Slack's answer.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_endpoint() -> String {
    "https://slack.com/api".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Checks that need no I/O: (key, message) pairs.
pub fn check_output(c: &SlackOutputConfig) -> Vec<(String, String)> {
    match (&c.token, &c.channel, &c.webhook_url) {
        (Some(_), Some(_), None) | (None, None, Some(_)) => Vec::new(),
        (_, _, Some(_)) => vec![(
            "webhook_url".into(),
            "give `webhook_url` alone, or `token` and `channel`".into(),
        )],
        (None, _, None) => vec![(
            "token".into(),
            "give `token` and `channel`, or `webhook_url`".into(),
        )],
        (Some(_), None, None) => vec![("channel".into(), "`token` needs a `channel`".into())],
    }
}
