//! The `directory` trigger (new files in a folder, moved to `.done` once delivered) and output
//! (one file per value at a path template).

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use switchyard_sdk::config::{ByteSize, Duration};
use switchyard_sdk::error::{BuildError, OutputError};
use switchyard_sdk::event::{is_json_media_type, Event, TriggerEvent};
use switchyard_sdk::{Ack, EventStatus, Output, Record, Template, Trigger, TriggerContext};

/// Where delivered files go, under the watched directory.
pub const DONE_DIR: &str = ".done";
/// Where files go whose delivery failed for good with no dead letter configured.
pub const FAILED_DIR: &str = ".failed";

/// `type: directory` trigger: every new file in `path` becomes an event.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryTriggerConfig {
    /// The directory to watch (created if missing).
    pub path: PathBuf,
    /// Which file names to take: `*` and `?` wildcards.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// How often to look for new files.
    #[serde(default = "default_poll")]
    pub poll_interval: Duration,
    /// Larger files are moved to `.failed` instead of being delivered.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
}

fn default_pattern() -> String {
    "*".into()
}
fn default_poll() -> Duration {
    Duration::from_millis(500)
}
fn default_max_size() -> ByteSize {
    ByteSize(16 << 20)
}

/// Whether `name` matches a `*`/`?` wildcard pattern.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => rec(&p[1..], n) || (!n.is_empty() && rec(p, &n[1..])),
            (Some('?'), Some(_)) => rec(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

fn content_type_for(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(
        match ext.as_str() {
            "json" => "application/json",
            "txt" | "log" | "md" => "text/plain",
            "csv" => "text/csv",
            "xml" => "application/xml",
            _ => return None,
        }
        .to_string(),
    )
}

impl DirectoryTriggerConfig {
    /// Build the trigger task.
    pub fn build(&self, cx: TriggerContext) -> Result<Trigger, BuildError> {
        let dir = self.path.clone();
        for sub in [dir.clone(), dir.join(DONE_DIR), dir.join(FAILED_DIR)] {
            std::fs::create_dir_all(&sub).map_err(|source| BuildError::Io {
                context: format!("creating {}", sub.display()),
                source,
            })?;
        }
        let config = self.clone();
        Ok(Trigger::task(Box::pin(async move {
            let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
            cx.health.ready();
            loop {
                if scan(&cx, &config, &in_flight).await.is_err() {
                    return Ok(());
                }
                tokio::select! {
                    _ = cx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(config.poll_interval.get()) => {}
                }
            }
        })))
    }
}

/// One pass over the directory. `Err` means the gateway is shutting down.
async fn scan(
    cx: &TriggerContext,
    config: &DirectoryTriggerConfig,
    in_flight: &Arc<Mutex<HashSet<String>>>,
) -> Result<(), ()> {
    let mut names = Vec::new();
    match tokio::fs::read_dir(&config.path).await {
        Ok(mut rd) => {
            while let Ok(Some(entry)) = rd.next_entry().await {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let is_file = entry
                    .file_type()
                    .await
                    .map(|t| t.is_file())
                    .unwrap_or(false);
                if is_file && !name.starts_with('.') && wildcard_match(&config.pattern, &name) {
                    names.push(name);
                }
            }
        }
        Err(e) => {
            cx.health
                .not_ready(format!("cannot read {}: {e}", config.path.display()));
            return Ok(());
        }
    }
    cx.health.ready();
    names.sort();
    let backlog = names.len() - in_flight.lock().unwrap().len().min(names.len());
    metrics::gauge!("switchyard_trigger_backlog", "pipeline" => cx.pipeline.clone())
        .set(backlog as f64);
    for name in names {
        if !in_flight.lock().unwrap().insert(name.clone()) {
            continue;
        }
        let path = config.path.join(&name);
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) => m,
            Err(_) => {
                in_flight.lock().unwrap().remove(&name);
                continue;
            }
        };
        if meta.len() > config.max_size.0 {
            tracing::warn!(pipeline = %cx.pipeline, file = %name, size = meta.len(), "file over max_size, moved to .failed");
            metrics::counter!("switchyard_trigger_rejected_total", "pipeline" => cx.pipeline.clone(), "reason" => "too large").increment(1);
            settle(&config.path, &name, FAILED_DIR);
            in_flight.lock().unwrap().remove(&name);
            continue;
        }
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(_) => {
                in_flight.lock().unwrap().remove(&name);
                continue;
            }
        };
        let mut content_type = content_type_for(&path);
        if content_type.as_deref().is_some_and(is_json_media_type)
            && serde_json::from_slice::<serde_json::Value>(&data).is_err()
        {
            // Declared JSON by its name but not JSON: deliver the bytes as they are.
            content_type = None;
        }
        let mut event = Event::new(
            name.clone(),
            Event::source_for(
                &cx.pipeline,
                "directory",
                &config.path.display().to_string(),
            ),
            "switchyard.directory.created",
        )
        .with_data(data, content_type);
        event.subject = Some(name.clone());
        if let Ok(m) = meta.modified() {
            event.time = m.into();
        }
        let dir = config.path.clone();
        let flight = in_flight.clone();
        let ack = Ack::new(move |status: EventStatus| {
            match &status {
                s if s.is_settled() => settle(&dir, &name, DONE_DIR),
                EventStatus::Rejected { .. } => settle(&dir, &name, FAILED_DIR),
                _ => {}
            }
            flight.lock().unwrap().remove(&name);
        });
        tokio::select! {
            _ = cx.shutdown.cancelled() => return Err(()),
            r = cx.events.send(TriggerEvent::new(event, ack)) => if r.is_err() { return Err(()) },
        }
    }
    Ok(())
}

/// Move a file into `sub` beside it. Runs in the ack, so it is a quick rename.
fn settle(dir: &Path, name: &str, sub: &str) {
    let from = dir.join(name);
    let to = dir.join(sub).join(name);
    if let Err(e) = std::fs::rename(&from, &to) {
        tracing::error!(file = %from.display(), error = %e, "cannot move delivered file; it will be delivered again");
    }
}

/// `type: directory` output: each value becomes a file at the `path` template.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryOutputConfig {
    /// The file path template, e.g. `out/{pipeline}/{id}.json`. Values have `/` replaced by
    /// `_`, so no value can leave the directory the template names.
    pub path: Template,
}

/// Writes one file per value.
pub struct DirectoryOutput {
    path: Template,
}

impl DirectoryOutputConfig {
    /// Build the output.
    pub fn build(&self) -> Result<DirectoryOutput, BuildError> {
        let fixed: PathBuf = self.path.as_str().split('{').next().unwrap_or("").into();
        if fixed.components().any(|c| c == Component::ParentDir)
            && self.path.as_str().contains("..{")
        {
            return Err(BuildError::invalid(
                "path",
                "a placeholder may not follow '..'",
            ));
        }
        Ok(DirectoryOutput {
            path: self.path.clone(),
        })
    }
}

#[async_trait]
impl Output for DirectoryOutput {
    async fn write(&self, record: &Record) -> Result<(), OutputError> {
        let path = PathBuf::from(self.path.render_path(record));
        if path.file_name().is_none() {
            return Err(OutputError::Invalid(format!(
                "path template gave {path:?}, which names no file"
            )));
        }
        let io = |context: &str, source| OutputError::Io {
            context: format!("{context} {}", path.display()),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io("creating the folder of", e))?;
        }
        // Write beside the target and rename, so a reader never sees half a file.
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            uuid_like()
        ));
        let data = record.data.clone();
        let tmp2 = tmp.clone();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp2)?;
            f.write_all(&data)?;
            f.sync_data()
        })
        .await
        .map_err(|e| io("writing", std::io::Error::other(e)))?;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io("writing", e));
        }
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io("renaming into", e))
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "a.json"));
        assert!(wildcard_match("*.json", "a.json"));
        assert!(!wildcard_match("*.json", "a.txt"));
        assert!(wildcard_match("a?c", "abc"));
    }

    #[tokio::test]
    async fn output_stays_inside_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let t = Template::parse(&format!("{}/{{subject}}.out", dir.path().display())).unwrap();
        let out = DirectoryOutputConfig { path: t }.build().unwrap();
        let mut r = Record::new("p", bytes::Bytes::from_static(b"hi"));
        r.subject = Some("../../escape".into());
        out.write(&r).await.unwrap();
        let written = dir.path().join("_._.._escape.out");
        assert_eq!(std::fs::read(written).unwrap(), b"hi");
    }

    #[tokio::test]
    async fn output_reports_unwritable_folder() {
        let out = DirectoryOutputConfig {
            path: Template::parse("/proc/switchyard-test/{id}").unwrap(),
        }
        .build()
        .unwrap();
        let err = out
            .write(&Record::new("p", bytes::Bytes::new()))
            .await
            .unwrap_err();
        assert!(matches!(err, OutputError::Io { .. }), "{err}");
    }
}
