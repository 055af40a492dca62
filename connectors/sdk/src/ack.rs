//! Acknowledgement as a value.
//!
//! The engine resolves every [`Ack`] exactly once. Dropping an unresolved `Ack` (for example when
//! the shutdown timeout cuts a delivery short) resolves it as [`EventStatus::Abandoned`], so a
//! trigger never waits forever and never acknowledges something that was not delivered.

use bytes::Bytes;
use std::fmt;

/// The function's answer, handed back to triggers that reply to a caller (the `http` trigger).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// The reply body; empty when the function answered without one.
    pub body: Bytes,
    /// The reply's content type, when it gave one.
    pub content_type: Option<String>,
    /// The HTTP status the function asked for (azure-functions `Outputs.res.statusCode`).
    pub status: Option<u16>,
}

/// How the engine finished with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventStatus {
    /// The function answered and every output confirmed its write: acknowledge.
    Delivered(Reply),
    /// Delivery failed for good and the event was written to the dead letter: acknowledge.
    DeadLettered {
        /// Why delivery failed.
        error: String,
    },
    /// Delivery failed for good and no dead letter is configured: use the trigger's own poison
    /// mechanism (reject to a DLX, a poison queue, JetStream term), else drop and count it.
    Rejected {
        /// Why delivery failed.
        error: String,
    },
    /// The engine did not finish (shutdown timeout, dead letter unreachable): do not acknowledge,
    /// let the broker deliver it again.
    Abandoned,
}

impl EventStatus {
    /// Whether the trigger should acknowledge (commit, ack, delete) the event.
    pub fn is_settled(&self) -> bool {
        matches!(self, Self::Delivered(_) | Self::DeadLettered { .. })
    }

    /// A short name for logs and traces: `delivered`, `dead_lettered`, `rejected`, `abandoned`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Delivered(_) => "delivered",
            Self::DeadLettered { .. } => "dead_lettered",
            Self::Rejected { .. } => "rejected",
            Self::Abandoned => "abandoned",
        }
    }
}

type AckFn = Box<dyn FnOnce(EventStatus) + Send + 'static>;

/// The acknowledgement handle of one event. Resolve it once with [`Ack::resolve`].
pub struct Ack(Option<AckFn>);

impl Ack {
    /// An ack that runs `f` with the final status.
    pub fn new(f: impl FnOnce(EventStatus) + Send + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    /// An ack for triggers that have nothing to acknowledge (timers).
    pub fn none() -> Self {
        Self(None)
    }

    /// An ack that sends the status on a oneshot channel.
    pub fn channel() -> (Self, tokio::sync::oneshot::Receiver<EventStatus>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Self::new(move |status| {
                let _ = tx.send(status);
            }),
            rx,
        )
    }

    /// Resolve the ack with its final status.
    pub fn resolve(mut self, status: EventStatus) {
        if let Some(f) = self.0.take() {
            f(status);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(EventStatus::Abandoned);
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ack(pending)"
        } else {
            "Ack(done)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_ack_is_abandoned() {
        let (ack, mut rx) = Ack::channel();
        drop(ack);
        assert_eq!(rx.try_recv().unwrap(), EventStatus::Abandoned);
    }

    #[test]
    fn resolved_ack_reports_once() {
        let (ack, mut rx) = Ack::channel();
        ack.resolve(EventStatus::Rejected { error: "x".into() });
        assert_eq!(
            rx.try_recv().unwrap(),
            EventStatus::Rejected { error: "x".into() }
        );
    }
}
