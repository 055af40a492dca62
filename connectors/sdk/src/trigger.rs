//! Triggers: what a trigger gets from the engine and what it returns.

use crate::error::BoxError;
use crate::event::TriggerEvent;
use crate::health::HealthHandle;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything a trigger needs to run.
#[derive(Clone)]
pub struct TriggerContext {
    /// The pipeline's name (for `source`, logs and metrics).
    pub pipeline: String,
    /// Where events go. The channel is bounded: `send` waiting is the backpressure signal.
    pub events: mpsc::Sender<TriggerEvent>,
    /// Cancelled when the gateway drains: stop taking new events, return from the task.
    pub shutdown: CancellationToken,
    /// Report readiness (connected or not) here.
    pub health: HealthHandle,
    /// The ingress server's largest accepted body, for triggers on the ingress.
    pub max_body: usize,
    /// How long a client on the ingress may take to send its body.
    pub body_timeout: std::time::Duration,
}

/// A built trigger: the task that produces events, and the routes it serves on the shared
/// ingress server (for `http` and `slack`).
pub struct Trigger {
    /// Runs until shutdown; an `Err` is a fatal trigger failure.
    pub task: BoxFuture<'static, Result<(), BoxError>>,
    /// Routes to mount on the ingress server.
    pub routes: Option<axum::Router>,
}

impl Trigger {
    /// A trigger that is just a task.
    pub fn task(task: BoxFuture<'static, Result<(), BoxError>>) -> Self {
        Self { task, routes: None }
    }

    /// A trigger that only serves routes on the ingress server; its task waits for shutdown.
    pub fn routes(routes: axum::Router, shutdown: CancellationToken) -> Self {
        Self {
            task: Box::pin(async move {
                shutdown.cancelled().await;
                Ok(())
            }),
            routes: Some(routes),
        }
    }
}

impl TriggerContext {
    /// Read an ingress request's body within `max_body` and `body_timeout`. The error is the
    /// status to answer and the reason to count.
    pub async fn read_body(
        &self,
        body: axum::body::Body,
    ) -> Result<bytes::Bytes, (axum::http::StatusCode, &'static str)> {
        use axum::http::StatusCode;
        match tokio::time::timeout(self.body_timeout, axum::body::to_bytes(body, self.max_body))
            .await
        {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(_)) => Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
            Err(_) => Err((StatusCode::REQUEST_TIMEOUT, "body too slow")),
        }
    }
}
