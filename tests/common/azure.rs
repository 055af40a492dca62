//! Azure Storage helpers for the end-to-end tests: the Azurite emulator on 127.0.0.1:10000
//! (blob) and 10001 (queue), started by `scripts/services`. A missing emulator fails the test,
//! loudly. The clients are the connector's own (the official SDK crates with its Shared Key
//! policy), so the tests use the same account the gateway does.

use azure_core::http::{NoFormat, RequestContent};
use azure_storage_blob::models::BlobContainerClientListBlobsOptions;
use azure_storage_blob::BlobContainerClient;
use azure_storage_queue::models::{
    QueueClientGetPropertiesResultHeaders, QueueClientReceiveMessagesOptions, QueueMessage,
};
use azure_storage_queue::QueueClient;
use base64::Engine;
use futures::StreamExt;
use std::time::{Duration, Instant};
use switchyard_azure_storage::connection::{Account, Service};

pub const CONN: &str = "UseDevelopmentStorage=true";

pub fn require_emulator() {
    for port in [10000, 10001] {
        if std::net::TcpStream::connect_timeout(
            &format!("127.0.0.1:{port}").parse().unwrap(),
            Duration::from_secs(2),
        )
        .is_err()
        {
            panic!("no Azure Storage emulator on 127.0.0.1:{port}: start it with `scripts/services start azurite` (scripts/test does)");
        }
    }
}

/// A fresh valid queue or container name.
pub fn az_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn account(service: Service) -> Account {
    require_emulator();
    switchyard_azure_storage::account(CONN, None, service).unwrap()
}

/// A client for a queue, created.
pub async fn create_queue(name: &str) -> QueueClient {
    let q = switchyard_azure_storage::queue_client(&account(Service::Queue), name).unwrap();
    q.create(None).await.unwrap();
    q
}

/// A client for a queue that may not exist.
pub fn queue_client(name: &str) -> QueueClient {
    switchyard_azure_storage::queue_client(&account(Service::Queue), name).unwrap()
}

/// Put one message per value, base64 of its JSON (the default encoding), 32 at a time.
pub async fn put_json(q: &QueueClient, values: Vec<serde_json::Value>) {
    let texts = values
        .into_iter()
        .map(|v| base64::engine::general_purpose::STANDARD.encode(v.to_string()))
        .collect();
    put_text(q, texts).await;
}

/// Put messages with the given text as is.
pub async fn put_text(q: &QueueClient, texts: Vec<String>) {
    futures::stream::iter(texts)
        .map(|t| async move {
            let m = QueueMessage {
                message_text: Some(t),
            };
            q.send_message(m.try_into().unwrap(), None).await.unwrap();
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// The approximate message count.
pub async fn count(q: &QueueClient) -> i64 {
    q.get_properties(None)
        .await
        .unwrap()
        .approximate_messages_count()
        .unwrap()
        .unwrap_or(0)
}

/// Receive and delete messages until `done` says so or `secs` pass; returns their text.
pub async fn drain(
    q: &QueueClient,
    secs: u64,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(32),
            visibility_timeout: Some(60),
            ..Default::default()
        };
        let got = match q.receive_messages(Some(options)).await {
            Ok(r) => r.into_model().unwrap().items.unwrap_or_default(),
            // The queue may not exist yet (outputs create it on the first write).
            Err(_) => Vec::new(),
        };
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for m in got {
            q.delete_message(
                m.message_id.as_deref().unwrap(),
                m.pop_receipt.as_deref().unwrap(),
                None,
            )
            .await
            .unwrap();
            out.push(m.message_text.unwrap_or_default());
        }
    }
    out
}

/// Message texts decoded from base64 and parsed as JSON.
pub fn decode_json(texts: &[String]) -> Vec<serde_json::Value> {
    texts
        .iter()
        .map(|t| {
            let b = base64::engine::general_purpose::STANDARD
                .decode(t)
                .unwrap_or_else(|e| panic!("message {t:?} is not base64: {e}"));
            serde_json::from_slice(&b).unwrap_or_else(|e| panic!("message {t:?} is not JSON: {e}"))
        })
        .collect()
}

/// A client for a container, created.
pub async fn create_container(name: &str) -> BlobContainerClient {
    let c = switchyard_azure_storage::container_client(&account(Service::Blob), name).unwrap();
    c.create(None).await.unwrap();
    c
}

/// Upload blobs (name, JSON value), 16 at a time.
pub async fn upload_json(c: &BlobContainerClient, blobs: Vec<(String, serde_json::Value)>) {
    futures::stream::iter(blobs)
        .map(|(n, v)| async move {
            let body: RequestContent<bytes::Bytes, NoFormat> =
                bytes::Bytes::from(v.to_string()).into();
            c.blob_client(&n).upload(body, None).await.unwrap();
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Names of the blobs in a container under a prefix.
pub async fn list(c: &BlobContainerClient, prefix: &str) -> Vec<String> {
    let options = BlobContainerClientListBlobsOptions {
        prefix: Some(prefix.to_string()),
        ..Default::default()
    };
    let mut pages = c.list_blobs(Some(options)).unwrap().into_pages();
    let mut out = Vec::new();
    while let Some(p) = pages.next().await {
        for b in p.unwrap().into_model().unwrap().blob_items {
            out.extend(b.name);
        }
    }
    out
}

/// A blob's content as JSON.
pub async fn read_blob_json(c: &BlobContainerClient, name: &str) -> serde_json::Value {
    let b = c
        .blob_client(name)
        .download(None)
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    serde_json::from_slice(&b).unwrap()
}
