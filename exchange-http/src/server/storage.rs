//! The mailbox store behind the server: the [`Storage`] trait, the caller identity and the
//! route errors it answers with.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use exchange_core::{EntityId, Header, MailboxStats, MailboxStatus};
use uuid::Uuid;

use super::listing::{MailboxPage, MailboxQuery};

/// Who sends a request, as the authenticator says (never from client-supplied headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The client id (`""` without authentication).
    pub client_id: String,
    /// Group ids the client belongs to (`{""}` without authentication or with no groups).
    pub groups: BTreeSet<String>,
    /// May see every mailbox on the status page (`[auth.tokens.*] admin = true`; everyone
    /// without authentication).
    pub admin: bool,
}

impl Caller {
    /// The identity of every request when authentication is off: client `""`, groups `{""}`,
    /// admin (an open server hides nothing).
    pub fn anonymous() -> Self {
        Caller { client_id: String::new(), groups: BTreeSet::from([String::new()]), admin: true }
    }
}

/// A failed request, with the status and text Academy's server uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: a missing or ill-typed field, an invalid id or message header, a bad timeout.
    #[error("{0}")]
    BadRequest(String),
    /// 401: authentication required and missing or malformed.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller may not touch this mailbox, or the token was refused.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown mailbox.
    #[error("Unknown mailbox ID")]
    UnknownMailbox,
    /// 408: no message arrived in time.
    #[error("Request timeout")]
    Timeout,
    /// 413: the message is larger than the limit.
    #[error("Message of size {size} larger than limit {limit}.")]
    TooLarge {
        /// Size of the message in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// 419: the mailbox was terminated.
    #[error("Mailbox was closed")]
    Terminated,
    /// 429 (with `Retry-After`): the destination's queue is at its limit.
    #[error("{0}")]
    QueueFull(String),
    /// 507: the store as a whole is at its limit (stored bytes or mailboxes).
    #[error("{0}")]
    StoreFull(String),
    /// 503 (with `Retry-After`): the store failed or the server is shutting down.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// 403 with Academy's text.
    pub fn forbidden() -> Self {
        ApiError::Forbidden("Incorrect permissions".into())
    }

    /// 403 for a message whose `src` is not a mailbox the caller may access.
    pub fn forbidden_src() -> Self {
        ApiError::Forbidden("Incorrect permissions: the message's src must be a mailbox the caller may access".into())
    }

    /// 400 naming the field and what was wrong.
    pub fn field(details: impl std::fmt::Display) -> Self {
        ApiError::BadRequest(format!("Missing or invalid field: {details}"))
    }

    /// The HTTP status of this error (419 is not a standard code).
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnknownMailbox => StatusCode::NOT_FOUND,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Terminated => StatusCode::from_u16(419).expect("419 is a valid status"),
            ApiError::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StoreFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(self, ApiError::QueueFull(_) | ApiError::Unavailable(_));
        let reason = self.to_string();
        let mut response = (self.status(), reason.clone()).into_response();
        response.extensions_mut().insert(super::observe::FailureReason(reason));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Counts over a whole store, for metrics and the shutdown log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreTotals {
    /// Mailboxes that are active.
    pub active_mailboxes: u64,
    /// Terminated mailboxes kept as gravestones.
    pub terminated_mailboxes: u64,
    /// Messages waiting in queues.
    pub queued_messages: u64,
    /// Bytes of the messages waiting in queues.
    pub queued_bytes: u64,
}

/// Mailbox storage of the server. Every method applies the access rules of the spec's §3.6 for
/// `caller` and answers with the errors of §3.4.
///
/// Messages are kept as the bytes received (only the header was validated).
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Creates a mailbox owned by `caller`; a no-op if it exists (active or terminated).
    async fn create(&self, caller: &Caller, id: &EntityId, agent: Option<Vec<String>>) -> Result<(), ApiError>;

    /// Terminates a mailbox, drops its queue, wakes receivers and answers its pending requests
    /// (with server authority). Unknown ids and repeats are no-ops.
    async fn terminate(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError>;

    /// Status of a mailbox (`Missing` before the access check).
    async fn status(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStatus, ApiError>;

    /// Queues `message` (whose parsed header is `header`) for `header.dest`.
    ///
    /// `caller` needs access to `header.dest` and to `header.src`, which must be a known
    /// mailbox (403 otherwise): a message's sender is an identity like its destination, so
    /// nobody can make answers or terminate notices land in a mailbox they may not send to,
    /// or move another mailbox's counters. Refused with [`ApiError::QueueFull`] or
    /// [`ApiError::StoreFull`] when a limit would be passed; never reported failed once
    /// stored.
    async fn put(&self, caller: &Caller, header: &Header, message: Bytes) -> Result<(), ApiError>;

    /// Puts messages that were taken but not delivered back at the head of `id`'s queue, in
    /// order (`messages[0]` is received next); dropped if the mailbox is no longer active.
    /// Server-internal (event streams whose client did not confirm them): no access check and
    /// no limits, since the messages were accepted once.
    async fn requeue(&self, id: &EntityId, messages: Vec<Bytes>) -> Result<(), ApiError>;

    /// Checks that `caller` may receive from `id` and that it is active.
    async fn check_receive(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError>;

    /// Takes the next message, waiting at most `timeout`; `None` when nothing arrived.
    /// Cancel safe: a message is only taken when the call returns it.
    async fn recv(&self, caller: &Caller, id: &EntityId, timeout: Duration) -> Result<Option<Bytes>, ApiError>;

    /// UUIDs of the active agents the caller may access that match `agent`, in registration order.
    async fn discover(&self, caller: &Caller, agent: &str, allow_subclasses: bool) -> Result<Vec<Uuid>, ApiError>;

    /// Records "now" as the last heartbeat (no existence check).
    async fn set_heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError>;

    /// Seconds since the last heartbeat, `None` before the first.
    async fn heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<Option<f64>, ApiError>;

    /// Counters of a mailbox (zeros for an unknown id).
    async fn stats(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStats, ApiError>;

    /// Shares a mailbox with a group (owner only, and the owner must belong to the group).
    async fn share(&self, caller: &Caller, id: &EntityId, group: &str) -> Result<(), ApiError>;

    /// Groups a mailbox is shared with (owner only).
    async fn shares(&self, caller: &Caller, id: &EntityId) -> Result<Vec<String>, ApiError>;

    /// Stops sharing a mailbox with a group (owner only; removing an absent group is a no-op).
    async fn unshare(&self, caller: &Caller, id: &EntityId, group: &str) -> Result<(), ApiError>;

    /// Whether the store answers (`GET /readyz`). The default asks the status of the nil id: one
    /// round trip to the store, no state changed.
    async fn ready(&self) -> Result<(), ApiError> {
        let nil: EntityId = exchange_core::UserId::from_parts(Uuid::nil(), None).into();
        self.status(&Caller::anonymous(), &nil).await.map(|_| ())
    }

    /// A page of mailboxes for operators (the status page); `None` when this store cannot list
    /// them without scanning everything it holds (Redis).
    async fn mailboxes(&self, _query: &MailboxQuery) -> Result<Option<MailboxPage>, ApiError> {
        Ok(None)
    }

    /// Totals over the whole store when they are cheap to know (in memory); `None` otherwise.
    fn totals(&self) -> Option<StoreTotals> {
        None
    }

    /// Times since start the store was found to have lost its data (Redis: the marker key
    /// vanished); 0 for stores that cannot lose it behind our back.
    fn data_losses(&self) -> u64 {
        0
    }
}
