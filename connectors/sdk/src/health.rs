//! Readiness: every component reports whether it is ready, and why not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shared readiness registry. Components register under a name such as
/// `pipelines.orders.trigger` and flip between ready and a reason for not being ready.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

/// One component's handle on the registry.
#[derive(Clone)]
pub struct HealthHandle {
    name: String,
    health: Health,
}

impl Health {
    /// Register a component, not ready yet with `reason`.
    pub fn register(&self, name: impl Into<String>, reason: impl Into<String>) -> HealthHandle {
        let name = name.into();
        self.lock().insert(name.clone(), Some(reason.into()));
        HealthHandle {
            name,
            health: self.clone(),
        }
    }

    /// The components that are not ready, with their reasons.
    pub fn not_ready(&self) -> BTreeMap<String, String> {
        self.lock()
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|r| (k.clone(), r.clone())))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HealthHandle {
    /// Mark the component ready.
    pub fn ready(&self) {
        self.health.lock().insert(self.name.clone(), None);
    }

    /// Mark the component not ready, with a reason (never a secret).
    pub fn not_ready(&self, reason: impl Into<String>) {
        self.health
            .lock()
            .insert(self.name.clone(), Some(reason.into()));
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
}
