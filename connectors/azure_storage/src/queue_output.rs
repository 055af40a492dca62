//! The `azure_queue` output: one message per value, written once the service answered 201.

use crate::config::{AzureQueueOutputConfig, Encoding};
use crate::connection::Service;
use crate::{output_error, queue_client, service_error, with_timeout};
use async_trait::async_trait;
use azure_storage_queue::models::{QueueClientSendMessageOptions, QueueMessage};
use azure_storage_queue::QueueClient;
use base64::Engine;
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::{Output, Record};

/// The largest message text the service takes.
pub const MAX_MESSAGE_TEXT: usize = 64 * 1024;

/// Puts messages on a queue; a write that finds the queue missing creates it and writes
/// again (each time: a queue deleted under a running output is made again, and writes racing
/// the first creation each create it, which the service allows, instead of failing).
pub struct AzureQueueOutput {
    client: QueueClient,
    config: AzureQueueOutputConfig,
}

impl AzureQueueOutputConfig {
    /// Build the output.
    pub fn build(&self) -> Result<AzureQueueOutput, BuildError> {
        BuildError::first_of(crate::config::check_queue_output(self))?;
        let account = crate::account(
            self.connection_string.expose(),
            self.endpoint.as_deref(),
            Service::Queue,
        )?;
        Ok(AzureQueueOutput {
            client: queue_client(&account, &self.queue)?,
            config: self.clone(),
        })
    }
}

/// Message text for data in an encoding; `Err` when it cannot be represented.
pub fn encode(data: &[u8], encoding: Encoding) -> Result<String, OutputError> {
    let text = match encoding {
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(data),
        Encoding::None => String::from_utf8(data.to_vec()).map_err(|_| {
            OutputError::Invalid("value is not UTF-8 text; use encoding: base64".into())
        })?,
    };
    if text.len() > MAX_MESSAGE_TEXT {
        return Err(OutputError::Invalid(format!(
            "message text of {} bytes is over the service's 64 KiB limit",
            text.len()
        )));
    }
    Ok(text)
}

impl AzureQueueOutput {
    async fn put(&self, text: &str) -> azure_core::Result<()> {
        let msg = QueueMessage {
            message_text: Some(text.to_string()),
        };
        let options = QueueClientSendMessageOptions {
            message_time_to_live: self
                .config
                .time_to_live
                .map(|d| d.get().as_secs().min(i32::MAX as u64) as i32),
            ..Default::default()
        };
        with_timeout(
            self.config.timeout.get(),
            self.client.send_message(msg.try_into()?, Some(options)),
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Output for AzureQueueOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let text = encode(&record.data, self.config.encoding)?;
        match self.put(&text).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(service_error(&e), Some((404, _))) => {
                tracing::info!(queue = %self.config.queue, "queue does not exist; creating it");
                with_timeout(self.config.timeout.get(), self.client.create(None))
                    .await
                    .map_err(output_error)?;
                self.put(&text).await.map_err(output_error)
            }
            Err(e) => Err(output_error(e)),
        }
    }

    async fn healthcheck(&self) -> Result<(), OutputError> {
        match with_timeout(self.config.timeout.get(), self.client.get_properties(None)).await {
            Ok(_) => Ok(()),
            // Missing is fine: the first write creates it.
            Err(e) if matches!(service_error(&e), Some((404, _))) => Ok(()),
            Err(e) => Err(output_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_refuses_what_does_not_fit() {
        assert_eq!(encode(b"hello", Encoding::Base64).unwrap(), "aGVsbG8=");
        assert_eq!(encode(b"hello", Encoding::None).unwrap(), "hello");
        assert!(!encode(&[0xff, 0xfe], Encoding::None)
            .unwrap_err()
            .is_retryable());
        let big = vec![b'a'; 60 * 1024];
        assert!(encode(&big, Encoding::None).is_ok());
        assert!(
            encode(&big, Encoding::Base64).is_err(),
            "base64 grows 60 KiB past 64 KiB"
        );
    }
}
