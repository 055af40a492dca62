//! Errors shared by connectors.

/// The boxed error used at the engine boundary.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A connector could not be built from its config (bad value, cannot connect at start).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A config value is invalid; `key` is the key path below the connector.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, e.g. `schedule`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An I/O error while preparing the connector.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Any other error, with its cause.
    #[error("{context}: {source}")]
    Other {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl BuildError {
    /// A bad value for `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The first of a connector's `(key, message)` config problems as an error, if any: what a
    /// `build` refuses to start with (`validate` reports all of them).
    pub fn first_of(problems: Vec<(String, String)>) -> Result<(), Self> {
        match problems.into_iter().next() {
            Some((key, message)) => Err(Self::invalid(key, message)),
            None => Ok(()),
        }
    }
}

/// A failed output write.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The destination answered with an error status.
    #[error("destination answered {status}: {message}")]
    Status {
        /// The status code (HTTP or broker-specific).
        status: u16,
        /// The destination's words, shortened.
        message: String,
        /// Seconds the destination asked us to wait, when it said so.
        retry_after: Option<std::time::Duration>,
    },
    /// A local I/O failure (disk full, permissions).
    #[error("{context}: {source}")]
    Io {
        /// What was being written.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The destination could not be reached.
    #[error("cannot reach destination: {source}")]
    Connect {
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The value cannot be written (bad template result, too large); retrying will not help.
    #[error("{0}")]
    Invalid(String),
    /// The destination refused the write with an error code of its own (Slack's
    /// `"ok": false, "error": "channel_not_found"`).
    #[error("destination refused the write: {code}")]
    Refused {
        /// The destination's error code; it becomes `switchyarderrorcode`.
        code: String,
        /// Whether the destination's code says a later try may succeed.
        retryable: bool,
    },
}

impl OutputError {
    /// A short code for the dead-letter `switchyarderrorcode` extension.
    pub fn code(&self) -> String {
        match self {
            Self::Status { status, .. } => status.to_string(),
            Self::Io { .. } => "io".into(),
            Self::Connect { .. } => "connection".into(),
            Self::Invalid(_) => "invalid".into(),
            Self::Refused { code, .. } => code.clone(),
        }
    }

    /// Whether retrying the same write may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Invalid(_) => false,
            Self::Refused { retryable, .. } => *retryable,
            _ => true,
        }
    }
}
