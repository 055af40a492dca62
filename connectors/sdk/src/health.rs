//! Readiness: every component reports whether it is ready, and why not.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Shared readiness registry. Components register under a name such as
/// `pipelines.orders.trigger` and flip between ready and a reason for not being ready.
///
/// Registering a name again (a pipeline rebuilt by a config reload) retires the handles of
/// the earlier registration: what a draining component reports no longer counts.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
    generation: Arc<AtomicU64>,
}

struct Entry {
    generation: u64,
    reason: Option<String>,
}

/// One component's handle on the registry.
#[derive(Clone)]
pub struct HealthHandle {
    name: String,
    generation: u64,
    health: Health,
}

impl Health {
    /// Register a component, not ready yet with `reason`.
    pub fn register(&self, name: impl Into<String>, reason: impl Into<String>) -> HealthHandle {
        let name = name.into();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(
            name.clone(),
            Entry {
                generation,
                reason: Some(reason.into()),
            },
        );
        HealthHandle {
            name,
            generation,
            health: self.clone(),
        }
    }

    /// Forget every component whose name starts with `prefix` (a removed pipeline).
    pub fn remove_prefix(&self, prefix: &str) {
        self.lock().retain(|k, _| !k.starts_with(prefix));
    }

    /// The components that are not ready, with their reasons.
    pub fn not_ready(&self) -> BTreeMap<String, String> {
        self.lock()
            .iter()
            .filter_map(|(k, e)| e.reason.as_ref().map(|r| (k.clone(), r.clone())))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HealthHandle {
    /// Mark the component ready.
    pub fn ready(&self) {
        self.set(None);
    }

    /// Mark the component not ready, with a reason (never a secret).
    pub fn not_ready(&self, reason: impl Into<String>) {
        self.set(Some(reason.into()));
    }

    fn set(&self, reason: Option<String>) {
        if let Some(e) = self.health.lock().get_mut(&self.name) {
            if e.generation == self.generation {
                e.reason = reason;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_reasons_until_ready() {
        let h = Health::default();
        let a = h.register("a", "starting");
        assert_eq!(h.not_ready().get("a").map(String::as_str), Some("starting"));
        a.ready();
        assert!(h.not_ready().is_empty());
        a.not_ready("gone");
        assert_eq!(h.not_ready().len(), 1);
    }

    #[test]
    fn a_new_registration_retires_the_old_handle() {
        let h = Health::default();
        let old = h.register("p.trigger", "starting");
        let new = h.register("p.trigger", "starting");
        new.ready();
        old.not_ready("draining");
        assert!(
            h.not_ready().is_empty(),
            "the retired handle changed nothing"
        );
        h.remove_prefix("p.");
        new.not_ready("gone");
        assert!(
            h.not_ready().is_empty(),
            "a removed component stays removed"
        );
    }
}
