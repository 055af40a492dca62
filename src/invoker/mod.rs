//! The path to the function: a tower stack around one HTTP call.
//!
//! Per function (shared by every pipeline that calls it): concurrency limit → timeout → call.
//! Per pipeline, around that: the retry policy of the pipeline.

mod call;
#[doc(hidden)]
pub use call::decode_answer_for_fuzzing;
mod pool;
pub mod retry;
pub mod supervisor;
mod transport;

pub use call::{FunctionCall, Target, Value};

use crate::config::{FunctionConfig, StatusRange};
use bytes::Bytes;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_sdk::{BoxError, Event, Reply};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// One invocation: the events (one, or a batch) for one call, and how many attempts were made.
#[derive(Clone)]
pub struct Invocation {
    /// The pipeline (the azure-functions path, `{url}/{pipeline}`).
    pub pipeline: Arc<str>,
    /// The trigger's binding name in the azure-functions format.
    pub trigger_name: Arc<str>,
    /// The events; more than one, or `batch`, sends a CloudEvents batch.
    pub events: Arc<Vec<Event>>,
    /// Whether the pipeline batches (then even one event is sent as a batch).
    pub batch: bool,
    /// The output names the function may route to (azure-functions `Outputs`).
    pub outputs: Arc<[String]>,
    attempts: Arc<AtomicU32>,
}

impl Invocation {
    /// A new invocation, before its first attempt.
    pub fn new(
        pipeline: Arc<str>,
        trigger_name: Arc<str>,
        events: Vec<Event>,
        batch: bool,
        outputs: Arc<[String]>,
    ) -> Self {
        Self {
            pipeline,
            trigger_name,
            events: Arc::new(events),
            batch,
            outputs,
            attempts: Arc::default(),
        }
    }

    /// Attempts made so far (shared by the clones the retry layer makes).
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Count a new attempt and return its number (1, 2, ...): the `deliveryattempt`.
    fn next_attempt(&self) -> u32 {
        self.attempts.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// What the function answered, decoded.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// Values for the outputs.
    pub values: Vec<Value>,
    /// The answer for a caller waiting on a `response: sync` http trigger.
    pub reply: Reply,
}

/// Why an invocation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The function answered a non-2xx status.
    #[error("function answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// The status.
        status: u16,
        /// The start of its body.
        body: String,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The call took longer than the function's timeout.
    #[error("function did not answer within its timeout")]
    Timeout,
    /// The function could not be reached or closed the connection.
    #[error("cannot reach function: {0}")]
    Connect(String),
    /// The function answered 2xx with a body that cannot be understood.
    #[error("function answered garbage: {0}")]
    BadReply(String),
    /// The answer can never be used (too large, names unknown outputs): not retried.
    #[error("function answer refused: {0}")]
    Refused(String),
}

impl InvokeError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self, retry_on: &[StatusRange]) -> bool {
        match self {
            Self::Status { status, .. } => StatusRange::any_contains(retry_on, *status),
            Self::Timeout | Self::Connect(_) | Self::BadReply(_) => true,
            Self::Refused(_) => false,
        }
    }

    /// `Retry-After` of the answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The short code for the dead letter's `switchyarderrorcode`.
    pub fn code(&self) -> String {
        match self {
            Self::Status { status, .. } => status.to_string(),
            Self::Timeout => "timeout".into(),
            Self::Connect(_) => "connection".into(),
            Self::BadReply(_) => "bad_reply".into(),
            Self::Refused(_) => "refused".into(),
        }
    }

    fn from_box(e: BoxError) -> Self {
        match e.downcast::<InvokeError>() {
            Ok(e) => *e,
            Err(e) if e.is::<tower::timeout::error::Elapsed>() => Self::Timeout,
            Err(e) => Self::Connect(e.to_string()),
        }
    }
}

/// The shared service of one function, cloned into every pipeline that calls it.
pub type FunctionService = BoxCloneSyncService<Invocation, Answer, InvokeError>;

/// Build the per-function stack around the HTTP call.
pub fn function_service(
    name: &str,
    cfg: &FunctionConfig,
    base_url: reqwest::Url,
) -> Result<FunctionService, BoxError> {
    let call = FunctionCall::new(name, cfg, base_url)?;
    let svc = ServiceBuilder::new()
        // One error type for the engine: timeouts and limits become InvokeError.
        .map_err(InvokeError::from_box)
        // Bound in-flight calls to this function, all pipelines together (`concurrency`).
        .concurrency_limit(cfg.concurrency)
        // Give up on a call slower than `timeout`; the retry policy decides what next.
        .timeout(cfg.timeout.get())
        .service(call);
    Ok(BoxCloneSyncService::new(svc))
}

/// Wrap a function's service in a pipeline's retry policy.
pub fn with_retry(svc: FunctionService, policy: retry::RetryPolicy) -> FunctionService {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            // Retry retryable failures with backoff; the sleep holds no concurrency permit.
            .retry(policy)
            .service(svc)
            .map_err(|e: InvokeError| e),
    )
}

/// Encode a JSON value returned by a function as output bytes: strings as text, the rest as JSON.
pub fn json_value_bytes(v: &serde_json::Value) -> (Bytes, Option<String>) {
    match v {
        serde_json::Value::String(s) => (
            Bytes::from(s.clone()),
            Some("text/plain; charset=utf-8".into()),
        ),
        other => (
            Bytes::from(serde_json::to_vec(other).expect("json")),
            Some("application/json".into()),
        ),
    }
}
