//! The `stdout` output: one JSON line per value.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use switchyard_sdk::error::OutputError;
use switchyard_sdk::event::is_json_media_type;
use switchyard_sdk::{Output, Record};
use tokio::io::AsyncWriteExt;

/// `type: stdout`: one JSON object per line on standard output. No keys.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutOutputConfig {}

/// Writes JSON lines to standard output; a mutex keeps lines whole.
pub struct StdoutOutput {
    out: tokio::sync::Mutex<tokio::io::Stdout>,
}

impl StdoutOutputConfig {
    /// Build the output.
    pub fn build(&self) -> StdoutOutput {
        StdoutOutput {
            out: tokio::sync::Mutex::new(tokio::io::stdout()),
        }
    }
}

/// The JSON line for a record: JSON data stays JSON, UTF-8 text becomes a string, other bytes
/// become `data_base64`.
pub fn json_line(record: &Record) -> String {
    let mut obj = serde_json::json!({
        "pipeline": record.pipeline,
        "id": record.id,
        "type": record.ty,
        "time": record.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let Some(s) = &record.subject {
        obj["subject"] = s.as_str().into();
    }
    if let Some(ct) = &record.content_type {
        obj["datacontenttype"] = ct.as_str().into();
    }
    let json = record
        .content_type
        .as_deref()
        .is_some_and(is_json_media_type)
        .then(|| serde_json::from_slice::<serde_json::Value>(&record.data).ok())
        .flatten();
    match (json, std::str::from_utf8(&record.data)) {
        (Some(v), _) => obj["data"] = v,
        (None, Ok(s)) => obj["data"] = s.into(),
        (None, Err(_)) => {
            use base64::Engine;
            obj["data_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&record.data)
                .into();
        }
    }
    let mut line = obj.to_string();
    line.push('\n');
    line
}

#[async_trait]
impl Output for StdoutOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let line = json_line(record);
        let mut out = self.out.lock().await;
        let io = |source| OutputError::Io {
            context: "writing to stdout".into(),
            source,
        };
        out.write_all(line.as_bytes()).await.map_err(io)?;
        out.flush().await.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_json_json() {
        let mut r = Record::new("p", bytes::Bytes::from_static(br#"{"a":1}"#));
        r.content_type = Some("application/json".into());
        let v: serde_json::Value = serde_json::from_str(&json_line(&r)).unwrap();
        assert_eq!(v["data"]["a"], 1);
        r.data = bytes::Bytes::from_static(&[0xff, 0xfe]);
        let v: serde_json::Value = serde_json::from_str(&json_line(&r)).unwrap();
        assert_eq!(v["data_base64"], "//4=");
    }
}
