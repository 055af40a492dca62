//! The `azure_blob` output: each value becomes a block blob at the `path` template.

use crate::config::AzureBlobOutputConfig;
use crate::connection::Service;
use crate::{container_client, output_error, service_error, with_timeout};
use async_trait::async_trait;
use azure_core::http::RequestContent;
use azure_storage_blob::models::BlockBlobClientUploadOptions;
use azure_storage_blob::BlobContainerClient;
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::{Output, Record};

/// Writes blobs; a write that finds the container missing creates it and writes again (each
/// time, so a container deleted under a running output is made again).
pub struct AzureBlobOutput {
    container: BlobContainerClient,
    config: AzureBlobOutputConfig,
}

impl AzureBlobOutputConfig {
    /// Build the output.
    pub fn build(&self) -> Result<AzureBlobOutput, BuildError> {
        BuildError::first_of(crate::config::check_blob_output(self))?;
        let account = crate::account(
            self.connection_string.expose(),
            self.endpoint.as_deref(),
            Service::Blob,
        )?;
        Ok(AzureBlobOutput {
            container: container_client(&account, &self.container)?,
            config: self.clone(),
        })
    }
}

impl AzureBlobOutput {
    async fn upload(&self, name: &str, record: &Record) -> azure_core::Result<()> {
        let content_type = self
            .config
            .content_type
            .clone()
            .or_else(|| record.content_type.clone())
            .unwrap_or_else(|| switchyard_sdk::event::OCTET_STREAM.to_string());
        let mut options = BlockBlobClientUploadOptions {
            blob_content_type: Some(content_type),
            ..Default::default()
        };
        if !self.config.overwrite {
            options = options.if_not_exists();
        }
        let blob = self.container.blob_client(name);
        let content: RequestContent<bytes::Bytes, azure_core::http::NoFormat> =
            record.data.clone().into();
        with_timeout(
            self.config.timeout.get(),
            blob.upload(content, Some(options)),
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Output for AzureBlobOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let name = self.config.path.render_path(record);
        if name.is_empty() || name.len() > 1024 {
            return Err(OutputError::Invalid(format!(
                "path template gave a blob name of {} characters (1 to 1024 allowed)",
                name.len()
            )));
        }
        let result = match self.upload(&name, record).await {
            Err(e) if matches!(service_error(&e), Some((404, ref c)) if c == "ContainerNotFound") =>
            {
                tracing::info!(container = %self.config.container, "container does not exist; creating it");
                // An error here (409: another write made it first) shows in the upload's own.
                let _ = with_timeout(self.config.timeout.get(), self.container.create(None)).await;
                self.upload(&name, record).await
            }
            other => other,
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if matches!(service_error(&e), Some((409, _))) && !self.config.overwrite => {
                Err(OutputError::Refused {
                    code: "BlobAlreadyExists".into(),
                    retryable: false,
                })
            }
            Err(e) => Err(output_error(e)),
        }
    }

    async fn healthcheck(&self) -> Result<(), OutputError> {
        match with_timeout(
            self.config.timeout.get(),
            self.container.get_properties(None),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(service_error(&e), Some((404, _))) => Ok(()),
            Err(e) => Err(output_error(e)),
        }
    }
}
