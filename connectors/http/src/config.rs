//! Config of the `http` trigger and output.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use switchyard_sdk::config::Secret;

/// `type: http` trigger: requests to `path` on the ingress server become events.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTriggerConfig {
    /// The path on the ingress server, e.g. `/orders`.
    pub path: String,
    /// Accepted methods; others get 405.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// `sync` answers with the function's reply once the outputs are written;
    /// `accepted` answers 202 at once.
    #[serde(default)]
    pub response: ResponseMode,
    /// Optional HMAC-SHA256 check of the body.
    #[serde(default)]
    pub hmac: Option<HmacConfig>,
}

fn default_methods() -> Vec<String> {
    vec!["POST".into()]
}

/// When the http trigger answers its caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// Answer with the function's reply once every output confirmed its write.
    #[default]
    Sync,
    /// Answer 202 Accepted as soon as the event is queued.
    Accepted,
}

/// HMAC check of the request body (GitHub's `X-Hub-Signature-256` and similar).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// The shared secret.
    pub secret: Secret,
    /// The header that carries the signature, e.g. `X-Hub-Signature-256`.
    pub header: String,
    /// The hash; only `sha256` is supported.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// What precedes the hex signature in the header.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_algorithm() -> String {
    "sha256".into()
}

fn default_prefix() -> String {
    "sha256=".into()
}

/// `type: http` output: POST each value to `url`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpOutputConfig {
    /// Where to POST.
    pub url: String,
    /// Extra headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// How long to wait for the destination's answer.
    #[serde(default = "default_timeout")]
    pub timeout: switchyard_sdk::config::Duration,
    /// Send the event's CloudEvents attributes with each value (`ce-*` headers, the binding's
    /// binary mode). `false` writes the value with its content type alone, as Dapr's
    /// `rawPayload` does, for consumers that do not read CloudEvents.
    #[serde(default = "switchyard_sdk::config::yes")]
    pub attributes: bool,
}

fn default_timeout() -> switchyard_sdk::config::Duration {
    switchyard_sdk::config::Duration::from_secs(30)
}
