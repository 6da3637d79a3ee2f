//! The one error type every backend maps its failures into.

use std::time::Duration;

use crate::id::EntityId;

/// A boxed error from a transport library (redis, reqwest, io...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, independent of the transport.
///
/// Match on the variant, never on the text: the conformance suite asserts variants.
/// `Debug` prints the same text as `Display`, so `fn main() -> exchange::Result<()>` reports
/// a failure readably.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The mailbox does not exist (Academy's `BadEntityIdError`; HTTP 404).
    #[error("unknown mailbox {id}")]
    BadEntityId {
        /// The id that was not found.
        id: EntityId,
    },
    /// The mailbox was terminated (HTTP 419).
    #[error("mailbox {id} was terminated")]
    MailboxTerminated {
        /// The terminated mailbox.
        id: EntityId,
    },
    /// Nothing arrived in time (HTTP 408).
    #[error("timed out after {timeout:?}")]
    Timeout {
        /// How long we waited.
        timeout: Duration,
    },
    /// The caller may not touch this mailbox (HTTP 403).
    #[error("forbidden: {message}")]
    Forbidden {
        /// Why, as the exchange said it.
        message: String,
    },
    /// The caller did not authenticate (HTTP 401).
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// Why, as the exchange said it.
        message: String,
    },
    /// The message is larger than the exchange accepts (HTTP 413).
    #[error("message too large: {message}")]
    MessageTooLarge {
        /// The exchange's explanation, with sizes where known.
        message: String,
    },
    /// The exchange refused the message because the destination's queue or the whole store
    /// is at its limit (HTTP 429 or 507): retry once the receiver has caught up.
    #[error("exchange full: {message}")]
    QueueFull {
        /// The exchange's explanation, with the limit that was hit.
        message: String,
    },
    /// The transport failed: connection refused or lost, server error, I/O.
    #[error("{backend} transport failed: {source}")]
    Unavailable {
        /// Which backend (`"redis"`, `"http"`, ...).
        backend: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// Bytes that are not a valid message, id or payload.
    #[error("decode error: {message}")]
    Codec {
        /// What was wrong.
        message: String,
    },
    /// A message's `protocol_version` is not compatible with Academy protocol 1.x.
    #[error("incompatible protocol version {version:?} (this side speaks {})", crate::PROTOCOL_VERSION)]
    IncompatibleProtocol {
        /// The version found (`None` for an explicit null).
        version: Option<String>,
    },
    /// This client-side mailbox handle was closed.
    #[error("mailbox handle for {id} is closed")]
    Closed {
        /// The mailbox whose handle was closed.
        id: EntityId,
    },
    /// A URL, option or configuration value that cannot work.
    #[error("invalid configuration: {message}")]
    Config {
        /// What was wrong and how to fix it.
        message: String,
    },
    /// The remote action raised (a `user-error-response`): carries the error text.
    #[error("remote action failed: {message}")]
    Remote {
        /// The remote error text (for Python agents, the formatted traceback).
        message: String,
    },
    /// The action was cancelled before it finished (academy error code 3).
    #[error("action cancelled")]
    ActionCancelled,
    /// The ping waited for the agent to start, and the agent stopped first (code 1).
    #[error("ping cancelled: the agent stopped before it started")]
    PingCancelled,
    /// A cancel request named an action that is not running (code 2).
    #[error("the action to cancel is not running")]
    ActionInvalidState,
    /// A request was sent to a user mailbox, which cannot serve requests (code 4).
    #[error("{id} is a user client and cannot serve requests")]
    InvalidClient {
        /// The user mailbox.
        id: EntityId,
    },
    /// The agent's heartbeat is stale and the handle rejects calls to inactive agents
    /// (Academy's `AgentInactiveError`).
    #[error("agent {id} is inactive; the handle is configured to reject actions when the agent is inactive")]
    AgentInactive {
        /// The agent.
        id: EntityId,
    },
    /// An agent stopped because its startup, a loop or its shutdown failed.
    #[error("agent {id} failed: {message}")]
    AgentFailed {
        /// The agent.
        id: EntityId,
        /// What failed.
        message: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// Shorthand for [`Error::Codec`].
    pub fn codec(message: impl Into<String>) -> Self {
        Error::Codec { message: message.into() }
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config { message: message.into() }
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Unavailable { backend, source: source.into() }
    }

    /// Whether trying the same operation again may succeed: transport failures, and a full
    /// queue once its reader catches up.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::QueueFull { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::Error;
    use crate::id::AgentId;

    #[test]
    fn debug_reads_like_display() {
        let id = AgentId::new(None);
        let failed = Error::AgentFailed { id: id.clone().into(), message: "startup failed:\nno database".into() };
        assert_eq!(format!("{failed:?}"), format!("agent {id} failed: startup failed:\nno database"));
        let down = Error::unavailable("redis", "connection refused");
        assert_eq!(format!("{down:?}"), "redis transport failed: connection refused");
        assert_eq!(format!("{:?}", Error::ActionCancelled), "action cancelled");
    }
}
