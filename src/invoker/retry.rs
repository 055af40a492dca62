//! The retry policy: which failures are retried, and how long to wait.

use super::{Answer, Invocation, InvokeError};
use crate::config::{Backoff, RetryConfig};
use rand::Rng;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
/// `Retry-After` wins over the backoff when the answer had one.
pub fn delay(cfg: &RetryConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d;
    }
    let initial = cfg.initial_delay.get();
    match cfg.backoff {
        Backoff::Fixed => initial,
        Backoff::Exponential => {
            let exp = attempt.saturating_sub(1).min(31);
            let cap = initial.saturating_mul(1u32 << exp).min(cfg.max_delay.get());
            // Full jitter: anywhere between zero and the cap.
            let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rand::rng().random_range(0..=nanos))
        }
    }
}

/// The tower retry policy of one pipeline.
#[derive(Clone)]
pub struct RetryPolicy {
    cfg: Arc<RetryConfig>,
    pipeline: Arc<str>,
    retries: metrics::Counter,
}

impl RetryPolicy {
    /// A policy for `pipeline`; `retries` counts the failed attempts it retries.
    pub fn new(cfg: Arc<RetryConfig>, pipeline: Arc<str>, retries: metrics::Counter) -> Self {
        Self {
            cfg,
            pipeline,
            retries,
        }
    }
}

impl tower::retry::Policy<Invocation, Answer, InvokeError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        req: &mut Invocation,
        result: &mut Result<Answer, InvokeError>,
    ) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        let attempt = req.attempts();
        if attempt >= self.cfg.max_attempts || !err.is_retryable(&self.cfg.retry_on) {
            return None;
        }
        self.retries.increment(1);
        let wait = delay(&self.cfg, attempt, err.retry_after());
        tracing::debug!(pipeline = %self.pipeline, attempt, error = %err, wait_ms = wait.as_millis() as u64, "retrying invocation");
        Some(Box::pin(tokio::time::sleep(wait)))
    }

    fn clone_request(&mut self, req: &Invocation) -> Option<Invocation> {
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::config::Duration as D;

    #[test]
    fn exponential_backoff_is_capped_and_jittered() {
        let cfg = RetryConfig {
            initial_delay: D::from_millis(100),
            max_delay: D::from_millis(1000),
            ..RetryConfig::default()
        };
        for attempt in 1..10 {
            let cap = (100u64 << (attempt - 1)).min(1000);
            for _ in 0..50 {
                let d = delay(&cfg, attempt, None);
                assert!(d <= Duration::from_millis(cap), "attempt {attempt}: {d:?}");
            }
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| delay(&cfg, 5, None)).collect();
        assert!(spread.len() > 1, "full jitter varies the delay");
    }

    #[test]
    fn retry_after_wins_and_fixed_is_fixed() {
        let mut cfg = RetryConfig::default();
        assert_eq!(
            delay(&cfg, 1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        cfg.backoff = Backoff::Fixed;
        assert_eq!(delay(&cfg, 4, None), cfg.initial_delay.get());
    }
}
