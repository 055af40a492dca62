//! The `nats` output: core publish (flushed), or JetStream publish awaiting the PubAck with a
//! `Nats-Msg-Id` header so JetStream deduplicates a repeated write.

use crate::config::NatsOutputConfig;
use async_nats::{HeaderMap, HeaderName};
use async_trait::async_trait;
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::{Output, Record};
use tokio::sync::OnceCell;

/// Publishes values; connects on first use and reconnects by itself.
pub struct NatsOutput {
    config: NatsOutputConfig,
    conn: OnceCell<Conn>,
}

/// The connection, and the JetStream context on it (made once, not per write).
struct Conn {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
}

impl NatsOutputConfig {
    /// Build the output.
    pub fn build(&self) -> Result<NatsOutput, BuildError> {
        Ok(NatsOutput {
            config: self.clone(),
            conn: OnceCell::new(),
        })
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> OutputError {
    OutputError::Connect {
        source: Box::new(e),
    }
}

impl NatsOutput {
    async fn conn(&self) -> Result<&Conn, OutputError> {
        self.conn
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .name("switchyard-output")
                    .connect(self.config.url.expose())
                    .await
                    .map_err(err)?;
                let js = async_nats::jetstream::new(client.clone());
                Ok(Conn { client, js })
            })
            .await
    }
}

#[async_trait]
impl Output for NatsOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let conn = self.conn().await?;
        let subject = self.config.subject.render(record);
        // Static names and owned values where there are some: async-nats copies a borrowed
        // name or value into a new allocation of its own.
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("ce-specversion"), "1.0");
        headers.insert(HeaderName::from_static("ce-id"), record.id.as_str());
        headers.insert(HeaderName::from_static("ce-source"), record.source.as_str());
        headers.insert(HeaderName::from_static("ce-type"), record.ty.as_str());
        headers.insert(
            HeaderName::from_static("ce-time"),
            record
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        );
        if let Some(s) = &record.subject {
            headers.insert(HeaderName::from_static("ce-subject"), s.as_str());
        }
        for (k, v) in &record.extensions {
            headers.insert(format!("ce-{k}"), v.as_str());
        }
        if let Some(ct) = &record.content_type {
            headers.insert(HeaderName::from_static("Content-Type"), ct.as_str());
        }
        let timeout = self.config.timeout.get();
        let work = async {
            if self.config.jetstream {
                headers.insert(HeaderName::from_static("Nats-Msg-Id"), record.id.as_str());
                conn.js
                    .publish_with_headers(subject, headers, record.data.clone())
                    .await
                    .map_err(err)?
                    .await
                    .map_err(err)?;
            } else {
                conn.client
                    .publish_with_headers(subject, headers, record.data.clone())
                    .await
                    .map_err(err)?;
                conn.client.flush().await.map_err(err)?;
            }
            Ok(())
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(OutputError::Connect {
                    source: "no answer from nats within the timeout".into(),
                })
            })
    }

    async fn healthcheck(&self) -> Result<(), OutputError> {
        self.conn().await.map(|_| ())
    }
}
