//! The `http` output: POST each value to a URL; a 2xx answer confirms the write.

use crate::config::HttpOutputConfig;
use async_trait::async_trait;
use std::time::Duration;
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::{cloudevents, Output, Record};

/// POSTs values to a URL.
pub struct HttpOutput {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    /// Send the CloudEvents attributes as `ce-*` headers.
    attributes: bool,
}

impl HttpOutputConfig {
    /// Build the output.
    pub fn build(&self) -> Result<HttpOutput, BuildError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| BuildError::invalid("url", e.to_string()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &self.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| BuildError::invalid(format!("headers.{k}"), "invalid header name"))?;
            let value = reqwest::header::HeaderValue::from_str(v.expose())
                .map_err(|_| BuildError::invalid(format!("headers.{k}"), "invalid header value"))?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout.get())
            .build()
            .map_err(|e| BuildError::Other {
                context: "http output client".into(),
                source: e.into(),
            })?;
        Ok(HttpOutput {
            client,
            url,
            headers,
            attributes: self.attributes,
        })
    }
}

#[async_trait]
impl Output for HttpOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        // Binary mode; the configured headers first, so a `ce-*` attribute wins.
        let req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .headers(cloudevents::record_headers(record, self.attributes))
            .body(record.data.clone());
        let resp = req.send().await.map_err(|e| OutputError::Connect {
            source: Box::new(e.without_url()),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        Err(OutputError::Status {
            status: status.as_u16(),
            message: body.chars().take(200).collect(),
            retry_after,
        })
    }
}
