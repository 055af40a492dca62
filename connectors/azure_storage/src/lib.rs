//! The Azure Storage connectors, on the official Azure SDK for Rust crates
//! (`azure_storage_queue`, `azure_storage_blob` 1.x):
//!
//! - `azure_queue` trigger: polls with `batch_size` and `visibility_timeout`, backs off while
//!   the queue is empty, extends the visibility of messages the function is still working on,
//!   deletes a message once delivered, moves it to `<queue>-poison` after `max_dequeue_count`.
//! - `azure_queue` output: puts a message and waits for the service's answer.
//! - `azure_blob` trigger: scans a container (one instance at a time, under a blob lease), page by
//!   page, and delivers each blob version (name + ETag) once, with receipts kept in the account.
//! - `azure_blob` output: writes a blob at a path template.
//!
//! Connection strings (account key, SAS, `UseDevelopmentStorage=true`) are parsed here and
//! account keys are applied by [`auth::SharedKeyPolicy`]: the 1.x crates take neither.

pub mod auth;
pub mod blob_output;
pub mod blob_trigger;
pub mod config;
pub mod connection;
pub mod queue_output;
pub mod queue_trigger;

pub use config::{
    AzureBlobOutputConfig, AzureBlobTriggerConfig, AzureQueueOutputConfig, AzureQueueTriggerConfig,
    Encoding,
};

use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use connection::{Account, Credential, Service};
use switchyard_sdk::error::BuildError;
use switchyard_sdk::OutputError;

/// An HTTP client for one storage client. Not one per process: a pooled connection belongs to
/// the tokio runtime that opened it and fails ("dispatch gone") once that runtime ends, which a
/// process-wide pool would hand to the next runtime (every `#[tokio::test]` has its own).
fn transport() -> Transport {
    Transport::new(azure_core::http::new_http_client(Some(
        azure_core::http::HttpClientOptions {
            automatic_decompression: false,
        },
    )))
}

/// Client options: its own transport, no SDK retries (the engine and the triggers retry
/// with their own backoff), and the shared key policy when the account has a key.
fn client_options(account: &Account) -> ClientOptions {
    let mut o = ClientOptions {
        transport: Some(transport()),
        retry: RetryOptions::none(),
        ..Default::default()
    };
    if let Credential::SharedKey { account, key } = &account.credential {
        o.per_try_policies
            .push(auth::SharedKeyPolicy::new(account, key));
    }
    o
}

/// Parse a connection string and apply an `endpoint` override for `service`.
pub fn account(
    connection_string: &str,
    endpoint: Option<&str>,
    service: Service,
) -> Result<Account, BuildError> {
    let a = Account::parse(connection_string)
        .map_err(|e| BuildError::invalid("connection_string", e.to_string()))?;
    match endpoint {
        Some(e) => a
            .with_endpoint(service, e)
            .map_err(|e| BuildError::invalid("endpoint", e.to_string())),
        None => Ok(a),
    }
}

/// A client for one queue.
pub fn queue_client(account: &Account, queue: &str) -> Result<QueueClient, BuildError> {
    let options = QueueClientOptions {
        client_options: client_options(account),
        ..Default::default()
    };
    QueueClient::new(
        account.entity_url(Service::Queue, queue),
        None,
        Some(options),
    )
    .map_err(|e| BuildError::invalid("queue", e.to_string()))
}

/// A client for one container.
pub fn container_client(
    account: &Account,
    container: &str,
) -> Result<BlobContainerClient, BuildError> {
    let options = BlobContainerClientOptions {
        client_options: client_options(account),
        ..Default::default()
    };
    BlobContainerClient::new(
        account.entity_url(Service::Blob, container),
        None,
        Some(options),
    )
    .map_err(|e| BuildError::invalid("container", e.to_string()))
}

/// The service's HTTP status and error code, when the error is an answer of the service.
pub(crate) fn service_error(e: &azure_core::Error) -> Option<(u16, String)> {
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => Some((
            u16::from(*status),
            error_code.clone().unwrap_or_else(|| status.to_string()),
        )),
        _ => None,
    }
}

/// A short description of an error, for logs and readiness (never a URL with a SAS).
pub(crate) fn describe(e: &azure_core::Error) -> String {
    match service_error(e) {
        Some((status, code)) => format!("storage answered {status} {code}"),
        None => format!("cannot reach storage: {}", e.kind()),
    }
}

/// A failed write as an [`OutputError`].
pub(crate) fn output_error(e: azure_core::Error) -> OutputError {
    match service_error(&e) {
        Some((status, code)) => OutputError::Status {
            status,
            message: code,
            retry_after: None,
        },
        None => OutputError::Connect {
            source: describe(&e).into(),
        },
    }
}

/// How long a trigger's own storage calls (receive, delete, lease, receipt) may take.
pub(crate) const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Put `text` on a trigger's poison queue, creating the queue when it is missing (as Azure
/// Functions does), and count it in `switchyard_trigger_poisoned_total`.
pub(crate) async fn put_poison(
    poison: &QueueClient,
    pipeline: &str,
    text: &str,
) -> azure_core::Result<()> {
    let put = || async {
        let msg = azure_storage_queue::models::QueueMessage {
            message_text: Some(text.to_string()),
        };
        with_timeout(CALL_TIMEOUT, poison.send_message(msg.try_into()?, None)).await
    };
    match put().await {
        Err(e) if matches!(service_error(&e), Some((404, _))) => {
            let _ = with_timeout(CALL_TIMEOUT, poison.create(None)).await;
            put().await?;
        }
        other => {
            other?;
        }
    }
    metrics::counter!("switchyard_trigger_poisoned_total", "pipeline" => pipeline.to_string())
        .increment(1);
    Ok(())
}

/// Run a storage call with a deadline.
pub(crate) async fn with_timeout<T>(
    timeout: std::time::Duration,
    f: impl std::future::Future<Output = azure_core::Result<T>>,
) -> azure_core::Result<T> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Io,
            "no answer from storage within the timeout",
        )),
    }
}

/// A timestamp of the SDK as chrono.
pub(crate) fn to_chrono(
    t: &azure_core::time::OffsetDateTime,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let n = t.unix_timestamp_nanos();
    chrono::DateTime::from_timestamp(
        n.div_euclid(1_000_000_000) as i64,
        n.rem_euclid(1_000_000_000) as u32,
    )
}

/// Logs a repeating failure once, and again only when it changes or clears.
#[derive(Default)]
pub(crate) struct Once {
    last: Option<String>,
}

impl Once {
    /// Whether `why` is new (log it); repeats are not.
    pub(crate) fn fails(&mut self, why: &str) -> bool {
        if self.last.as_deref() == Some(why) {
            return false;
        }
        self.last = Some(why.to_string());
        true
    }

    /// Whether a failure just cleared (log the recovery).
    pub(crate) fn ok(&mut self) -> bool {
        self.last.take().is_some()
    }
}
