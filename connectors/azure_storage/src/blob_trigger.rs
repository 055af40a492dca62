//! The `azure_blob` trigger: new and changed blobs, each version (name + ETag) delivered once
//! across restarts and across instances.
//!
//! - **One scanner at a time.** Every instance of a pipeline tries to take a 15 s blob lease on
//!   `<pipeline>/<container>/scan.lock` in the receipts container, renewed every 5 s. The holder
//!   scans and delivers; the others wait and take over when the lease lapses (a killed holder) or
//!   is released (a drained one).
//! - **Receipts.** Once a blob version is settled (delivered, dead-lettered or poisoned), an empty
//!   blob `<pipeline>/<container>/receipts/<etag>/<name>` is written. A blob version with a
//!   receipt is never delivered again; a version whose delivery was cut short (crash, shutdown)
//!   has none and is delivered again.
//! - **Page by page.** A scan lists one page (`page_size` blobs) per round with the continuation
//!   marker, so a large container is never listed whole at once. Once a full pass has completed
//!   with everything settled, later passes only look up receipts of blobs modified since that
//!   pass began (less a margin for clock skew).
//! - **Poison.** A blob whose delivery failed for good with no dead letter has a message put on
//!   `poison_queue` (Azure Functions' format: container, name, ETag), then gets its receipt.

use crate::config::AzureBlobTriggerConfig;
use crate::connection::Service;
use crate::{
    container_client, describe, put_poison, queue_client, service_error, to_chrono, with_timeout,
    CALL_TIMEOUT,
};
use azure_core::http::{NoFormat, RequestContent};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientDownloadOptions, BlobContainerClientListBlobsOptions,
    BlobItem, BlockBlobClientUploadOptions,
};
use azure_storage_blob::BlobContainerClient;
use azure_storage_queue::QueueClient;
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_sdk::error::BuildError;
use switchyard_sdk::event::{Event, TriggerEvent};
use switchyard_sdk::{Ack, BoxError, EventStatus, Trigger, TriggerContext};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const LEASE_SECS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Blob versions held (dispatched, not yet settled) at once.
const MAX_IN_FLIGHT: usize = 32;
/// Clock skew allowed between this host and the storage service.
const SKEW: chrono::Duration = chrono::Duration::minutes(2);

impl AzureBlobTriggerConfig {
    /// `switchyard validate --connect`: read the container's properties (signed with the key,
    /// so a wrong key shows too).
    pub async fn probe(&self) -> Result<String, String> {
        let account = crate::account(
            self.connection_string.expose(),
            self.endpoint.as_deref(),
            Service::Blob,
        )
        .map_err(|e| e.to_string())?;
        let client = container_client(&account, &self.container).map_err(|e| e.to_string())?;
        match with_timeout(CALL_TIMEOUT, client.get_properties(None)).await {
            Ok(_) => Ok(format!("container {} exists", self.container)),
            Err(e) if matches!(service_error(&e), Some((404, _))) => Ok(format!(
                "connected; container {} does not exist yet (nothing to scan until it does)",
                self.container
            )),
            Err(e) => Err(format!("container {}: {}", self.container, describe(&e))),
        }
    }

    /// Build the trigger.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        BuildError::first_of(crate::config::check_blob_trigger(self))?;
        let pattern = match &self.pattern {
            Some(p) => Some(Pattern::parse(p).map_err(|m| BuildError::invalid("pattern", m))?),
            None => None,
        };
        let account = crate::account(
            self.connection_string.expose(),
            self.endpoint.as_deref(),
            Service::Blob,
        )?;
        let poison_account = crate::account(self.connection_string.expose(), None, Service::Queue)?;
        let mut blob_base = account.blob_endpoint.clone();
        blob_base
            .path_segments_mut()
            .expect("endpoints are base URLs")
            .pop_if_empty()
            .push(&self.container);
        let scanner = Scanner {
            container: container_client(&account, &self.container)?,
            receipts: container_client(&account, &self.receipts_container)?,
            poison: queue_client(&poison_account, &self.poison_queue)?,
            scope: format!("{}/{}", cx.pipeline, self.container),
            blob_base: blob_base.to_string(),
            pattern,
            config: self.clone(),
            pipeline: cx.pipeline.clone(),
            in_flight: Mutex::new(HashSet::new()),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        };
        cx.health.not_ready("connecting to azure blob storage");
        Ok(Trigger::task(Box::pin(run(Arc::new(scanner), cx))))
    }
}

struct Scanner {
    container: BlobContainerClient,
    receipts: BlobContainerClient,
    poison: QueueClient,
    /// `<pipeline>/<container>`: where this pipeline's lock and receipts live.
    scope: String,
    /// The container's URL (no SAS), for `bloburl`.
    blob_base: String,
    pattern: Option<Pattern>,
    config: AzureBlobTriggerConfig,
    pipeline: String,
    /// `(name, etag)` dispatched and not settled yet.
    in_flight: Mutex<HashSet<(String, String)>>,
    permits: Arc<Semaphore>,
}

/// Where a scan is: the continuation marker, and the time filter of receipt lookups.
#[derive(Default)]
struct Pass {
    marker: Option<String>,
    /// When the current pass began.
    started: Option<DateTime<Utc>>,
    /// Only blobs modified after this need a receipt lookup (set once a pass settled fully).
    since: Option<DateTime<Utc>>,
    /// Whether something of the current pass was not settled (cut short, failed to record).
    unsettled: Arc<AtomicBool>,
}

async fn run(s: Arc<Scanner>, cx: TriggerContext) -> Result<(), BoxError> {
    let mut backoff = Duration::from_millis(200);
    let holder = uuid::Uuid::new_v4().to_string();
    let mut announced_standby = false;
    let mut lease_failing = crate::Once::default();
    'outer: loop {
        if cx.shutdown.is_cancelled() {
            break;
        }
        // Take the scan lease (creating the receipts container and the lock blob on the way).
        let lease = match acquire(&s, &holder).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                cx.health.ready();
                if !announced_standby {
                    tracing::info!(pipeline = %s.pipeline, container = %s.config.container, "another instance holds the scan lease; standing by");
                    announced_standby = true;
                }
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                }
                continue;
            }
            Err(e) => {
                cx.health.not_ready(format!("azure blob: {}", describe(&e)));
                let why = describe(&e);
                if lease_failing.fails(&why) {
                    tracing::warn!(pipeline = %s.pipeline, error = %why, "cannot take the scan lease; retrying with backoff");
                }
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        announced_standby = false;
        lease_failing.ok();
        backoff = Duration::from_millis(200);
        tracing::info!(pipeline = %s.pipeline, container = %s.config.container, "scan lease taken; scanning");
        let lost = CancellationToken::new();
        tokio::spawn(renew(
            s.clone(),
            lease.clone(),
            lost.clone(),
            cx.shutdown.clone(),
        ));
        let mut pass = Pass::default();
        let mut failing = crate::Once::default();
        loop {
            if lost.is_cancelled() {
                tracing::warn!(pipeline = %s.pipeline, "scan lease lost; standing by");
                continue 'outer;
            }
            let more = match scan_page(&s, &cx, &mut pass).await {
                Ok(more) => {
                    cx.health.ready();
                    if failing.ok() {
                        tracing::info!(pipeline = %s.pipeline, "listing again");
                    }
                    more
                }
                Err(e) => {
                    let why = match service_error(&e) {
                        Some((404, _)) => {
                            format!("container {:?} does not exist", s.config.container)
                        }
                        _ => describe(&e),
                    };
                    cx.health.not_ready(format!("azure blob: {why}"));
                    if failing.fails(&why) {
                        tracing::warn!(pipeline = %s.pipeline, error = %why, "cannot list blobs; retrying every poll_interval (logged again when the error changes)");
                    }
                    false
                }
            };
            if cx.shutdown.is_cancelled() {
                break 'outer;
            }
            if !more {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break 'outer,
                    _ = lost.cancelled() => {}
                    _ = tokio::time::sleep(s.config.poll_interval.get()) => {}
                }
            }
        }
    }
    // Drain: wait for what is in flight to be settled (receipts written), then let go of the
    // lease so another instance takes over at once.
    let _ = s.permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    let lock = s.receipts.blob_client(&format!("{}/scan.lock", s.scope));
    let _ = with_timeout(CALL_TIMEOUT, lock.release_lease(holder, None)).await;
    tracing::info!(pipeline = %cx.pipeline, "azure blob trigger stopped");
    Ok(())
}

/// Try to take the scan lease. `Ok(None)`: another instance holds it.
async fn acquire(s: &Scanner, holder: &str) -> azure_core::Result<Option<String>> {
    let lock = s.receipts.blob_client(&format!("{}/scan.lock", s.scope));
    for _ in 0..3 {
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(holder.to_string()),
            ..Default::default()
        };
        match with_timeout(CALL_TIMEOUT, lock.acquire_lease(LEASE_SECS, Some(options))).await {
            Ok(_) => return Ok(Some(holder.to_string())),
            Err(e) => match service_error(&e) {
                Some((409, _)) => return Ok(None),
                Some((404, code)) => {
                    if code == "ContainerNotFound" {
                        match with_timeout(CALL_TIMEOUT, s.receipts.create(None)).await {
                            Ok(_) => {}
                            Err(e) if matches!(service_error(&e), Some((409, _))) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    let empty: RequestContent<bytes::Bytes, NoFormat> = bytes::Bytes::new().into();
                    let options = BlockBlobClientUploadOptions::default().if_not_exists();
                    match with_timeout(CALL_TIMEOUT, lock.upload(empty, Some(options))).await {
                        Ok(_) => {}
                        Err(e) if matches!(service_error(&e), Some((409, _))) => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => return Err(e),
            },
        }
    }
    Ok(None)
}

/// Keep the scan lease; cancel `lost` when it cannot be renewed.
async fn renew(
    s: Arc<Scanner>,
    lease: String,
    lost: CancellationToken,
    shutdown: CancellationToken,
) {
    let lock = s.receipts.blob_client(&format!("{}/scan.lock", s.scope));
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Keep the lease while in-flight blobs drain; `run` releases it.
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    if with_timeout(CALL_TIMEOUT, lock.renew_lease(lease.clone(), None)).await.is_err() {
                        return;
                    }
                }
            }
            _ = tokio::time::sleep(RENEW_EVERY) => {}
        }
        match with_timeout(CALL_TIMEOUT, lock.renew_lease(lease.clone(), None)).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(pipeline = %s.pipeline, error = %describe(&e), "cannot renew the scan lease");
                // 409/412: someone else has it now. Otherwise give it until it would lapse.
                if matches!(service_error(&e), Some((409 | 412, _))) || failures >= 2 {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// List one page and dispatch the blob versions that need delivering. Returns whether more
/// pages follow in this pass.
async fn scan_page(
    s: &Arc<Scanner>,
    cx: &TriggerContext,
    pass: &mut Pass,
) -> azure_core::Result<bool> {
    if pass.marker.is_none() {
        pass.started = Some(Utc::now());
    }
    let options = BlobContainerClientListBlobsOptions {
        prefix: (!s.config.prefix.is_empty()).then(|| s.config.prefix.clone()),
        maxresults: Some(s.config.page_size as i32),
        marker: pass.marker.clone(),
        ..Default::default()
    };
    let mut pages = s.container.list_blobs(Some(options))?.into_pages();
    let page = match with_timeout(CALL_TIMEOUT, async { pages.next().await.transpose() }).await? {
        Some(p) => p.into_model()?,
        None => return Ok(false),
    };
    for item in page.blob_items {
        if cx.shutdown.is_cancelled() {
            return Ok(false);
        }
        if let Some(found) = candidate(s, pass, item) {
            if receipt_exists(s, &found.name, &found.etag).await? {
                continue;
            }
            dispatch(s, cx, pass, found).await;
        }
    }
    pass.marker = page.next_marker.filter(|m| !m.is_empty());
    if pass.marker.is_some() {
        return Ok(true);
    }
    // The pass is complete. If everything of it was settled, later passes look up receipts only
    // for blobs changed since it began.
    if !pass.unsettled.swap(false, Ordering::SeqCst) {
        pass.since = pass.started.map(|t| t - SKEW);
    }
    Ok(false)
}

/// A blob version found by a scan.
struct Found {
    name: String,
    etag: String,
    size: u64,
    content_type: Option<String>,
    modified: Option<DateTime<Utc>>,
    captures: Vec<(String, String)>,
}

fn candidate(s: &Scanner, pass: &Pass, item: BlobItem) -> Option<Found> {
    let name = item.name?;
    let props = item.properties?;
    let etag = props.etag?.to_string();
    let modified = props.last_modified.as_ref().and_then(to_chrono);
    if let (Some(since), Some(m)) = (pass.since, modified) {
        if m < since {
            return None;
        }
    }
    let rest = name.strip_prefix(&s.config.prefix).unwrap_or(&name);
    let captures = match &s.pattern {
        Some(p) => p.matches(rest)?,
        None => Vec::new(),
    };
    let key = (name.clone(), etag.clone());
    if s.in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&key)
    {
        return None;
    }
    Some(Found {
        name,
        etag,
        size: props.content_length.unwrap_or(0),
        content_type: props.content_type,
        modified,
        captures,
    })
}

fn receipt_name(scope: &str, name: &str, etag: &str) -> String {
    format!("{scope}/receipts/{}/{name}", etag.trim_matches('"'))
}

async fn receipt_exists(s: &Scanner, name: &str, etag: &str) -> azure_core::Result<bool> {
    let r = s.receipts.blob_client(&receipt_name(&s.scope, name, etag));
    with_timeout(CALL_TIMEOUT, r.exists()).await
}

async fn dispatch(s: &Arc<Scanner>, cx: &TriggerContext, pass: &Pass, found: Found) {
    let permit = tokio::select! {
        _ = cx.shutdown.cancelled() => return,
        p = s.permits.clone().acquire_owned() => p.expect("never closed"),
    };
    let url = format!("{}/{}", s.blob_base, found.name);
    let data = if found.size <= s.config.max_size.0 {
        let blob = s.container.blob_client(&found.name);
        let options = BlobClientDownloadOptions {
            if_match: Some(found.etag.clone().into()),
            ..Default::default()
        };
        let got = with_timeout(CALL_TIMEOUT, async {
            blob.download(Some(options)).await?.body.collect().await
        })
        .await;
        match got {
            Ok(b) => Some(b),
            // Changed or deleted since it was listed: the next pass sees the new version.
            Err(e) if matches!(service_error(&e), Some((404 | 412, _))) => return,
            Err(e) => {
                tracing::warn!(pipeline = %s.pipeline, blob = %found.name, error = %describe(&e), "cannot download; trying again next pass");
                pass.unsettled.store(true, Ordering::SeqCst);
                return;
            }
        }
    } else {
        None
    };
    let mut event = Event::new(
        format!("{}@{}", found.name, found.etag.trim_matches('"')),
        Event::source_for(&s.pipeline, "azure_blob", &s.config.container),
        "switchyard.azure_blob.created",
    );
    event.subject = Some(found.name.clone());
    if let Some(t) = found.modified {
        event.time = t;
    }
    match data {
        Some(d) => {
            event.content_type = found.content_type.clone();
            event.data = d;
        }
        None => {
            let body = serde_json::json!({"url": url, "size": found.size, "contentType": found.content_type});
            event.content_type = Some("application/json".into());
            event.data = serde_json::to_vec(&body).unwrap_or_default().into();
            event.set_extension("bloboversize", "true");
        }
    }
    event.set_extension("bloburl", url.clone());
    event.set_extension("blobsize", found.size.to_string());
    event.set_extension("blobetag", found.etag.trim_matches('"'));
    let md = &mut event.metadata;
    md.insert(
        "BlobTrigger".into(),
        format!("{}/{}", s.config.container, found.name).into(),
    );
    md.insert("Uri".into(), url.into());
    md.insert(
        "Properties".into(),
        serde_json::json!({"ETag": found.etag, "Length": found.size, "ContentType": found.content_type}),
    );
    for (k, v) in &found.captures {
        md.insert(k.clone(), v.clone().into());
    }
    event.partition = Some(found.name.clone());
    event.key = Some(found.name.clone());

    let key = (found.name.clone(), found.etag.clone());
    s.in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone());
    let (s2, unsettled) = (s.clone(), pass.unsettled.clone());
    let ack = Ack::new(move |status: EventStatus| {
        tokio::spawn(async move {
            if !settle(&s2, &key.0, &key.1, status).await {
                unsettled.store(true, Ordering::SeqCst);
            }
            s2.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            drop(permit);
        });
    });
    let _ = cx.events.send(TriggerEvent::new(event, ack)).await;
}

/// Record the outcome; `false` when the blob version is left for another pass.
async fn settle(s: &Scanner, name: &str, etag: &str, status: EventStatus) -> bool {
    match status {
        s2 if s2.is_settled() => {}
        EventStatus::Rejected { error } => {
            tracing::warn!(pipeline = %s.pipeline, blob = %name, error = %error, poison = %s.config.poison_queue, "failed for good; its name goes to the poison queue");
            if let Err(e) = poison(s, name, etag).await {
                tracing::warn!(pipeline = %s.pipeline, blob = %name, error = %describe(&e), "cannot write to the poison queue; the blob is tried again next pass");
                return false;
            }
        }
        _ => return false,
    }
    let r = s.receipts.blob_client(&receipt_name(&s.scope, name, etag));
    let empty: RequestContent<bytes::Bytes, NoFormat> = bytes::Bytes::new().into();
    match with_timeout(CALL_TIMEOUT, r.upload(empty, None)).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(pipeline = %s.pipeline, blob = %name, error = %describe(&e), "cannot write the receipt; the blob may be delivered again");
            false
        }
    }
}

/// Azure Functions' blob poison message, base64 as its queue trigger expects by default.
async fn poison(s: &Scanner, name: &str, etag: &str) -> azure_core::Result<()> {
    let body = serde_json::json!({
        "Type": "BlobTrigger",
        "FunctionId": s.pipeline,
        "BlobType": "BlockBlob",
        "ContainerName": s.config.container,
        "BlobName": name,
        "ETag": etag,
    });
    let text = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    put_poison(&s.poison, &s.pipeline, &text).await
}

/// A blob name pattern: literal text and `{name}` placeholders that match any text.
#[derive(Debug, Clone)]
pub struct Pattern {
    parts: Vec<PatternPart>,
}

#[derive(Debug, Clone, PartialEq)]
enum PatternPart {
    Lit(String),
    Var(String),
}

impl Pattern {
    /// Parse `{name}.json`-style patterns.
    pub fn parse(p: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = p;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed '{{' in {p:?}"))?;
                    let var = &rest[1..end];
                    if var.is_empty() || !var.chars().all(|c| c.is_alphanumeric() || c == '_') {
                        return Err(format!("placeholder {{{var}}} in {p:?} must be a word"));
                    }
                    if matches!(parts.last(), Some(PatternPart::Var(_))) {
                        return Err(format!(
                            "two placeholders in a row in {p:?} cannot be told apart"
                        ));
                    }
                    parts.push(PatternPart::Var(var.to_string()));
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    parts.push(PatternPart::Lit(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    parts.push(PatternPart::Lit(rest.to_string()));
                    rest = "";
                }
            }
        }
        Ok(Self { parts })
    }

    /// The placeholder values when `name` matches.
    pub fn matches(&self, name: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        Self::go(&self.parts, name, &mut out).then_some(out)
    }

    fn go(parts: &[PatternPart], s: &str, out: &mut Vec<(String, String)>) -> bool {
        match parts.first() {
            None => s.is_empty(),
            Some(PatternPart::Lit(l)) => {
                s.starts_with(l.as_str()) && Self::go(&parts[1..], &s[l.len()..], out)
            }
            Some(PatternPart::Var(v)) => {
                // Shortest match first, as Azure Functions binds `{name}`.
                for (i, _) in s.char_indices().chain(std::iter::once((s.len(), ' '))) {
                    if i == 0 && !s.is_empty() {
                        continue;
                    }
                    out.push((v.clone(), s[..i].to_string()));
                    if Self::go(&parts[1..], &s[i..], out) {
                        return true;
                    }
                    out.pop();
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::parse("{name}.json").unwrap();
        assert_eq!(
            p.matches("a.b.json").unwrap(),
            vec![("name".into(), "a.b".into())]
        );
        assert!(p.matches("a.csv").is_none());
        assert!(
            p.matches(".json").is_none(),
            "a placeholder matches something"
        );
        let p = Pattern::parse("{year}/{name}.csv").unwrap();
        assert_eq!(
            p.matches("2026/x.csv").unwrap(),
            vec![("year".into(), "2026".into()), ("name".into(), "x".into())]
        );
        assert!(Pattern::parse("{a}{b}").is_err());
        assert!(Pattern::parse("{a").is_err());
        assert!(Pattern::parse("{a b}").is_err());
    }

    #[test]
    fn receipts_are_per_version() {
        assert_eq!(
            receipt_name("p/c", "dir/x.json", "\"0x8D1\""),
            "p/c/receipts/0x8D1/dir/x.json"
        );
    }
}
