//! Request and response bodies of Academy's HTTP routes, shared by the server and the client.
//!
//! Mailbox ids and messages travel as JSON strings holding JSON (`"mailbox": "{\"uid\":…}"`).

use serde::{Deserialize, Serialize};

/// `{"mailbox": ID}` and its optional companions, as the client writes them.
#[cfg(feature = "client")]
#[derive(Debug, Serialize)]
pub(crate) struct MailboxRequest<'a> {
    pub(crate) mailbox: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<f64>,
}

/// `{"message": MESSAGE}`.
#[cfg(feature = "client")]
#[derive(Debug, Serialize)]
pub(crate) struct MessageRequest<'a> {
    pub(crate) message: &'a str,
}

/// `{"agent": name, "allow_subclasses": bool}`.
#[cfg(feature = "client")]
#[derive(Debug, Serialize)]
pub(crate) struct DiscoverRequest<'a> {
    pub(crate) agent: &'a str,
    pub(crate) allow_subclasses: bool,
}

/// `{"status": "ACTIVE" | "TERMINATED" | "MISSING"}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatusResponse {
    pub(crate) status: exchange_core::MailboxStatus,
}

/// `{"message": MESSAGE}` answered by `GET /message`.
#[cfg(feature = "client")]
#[derive(Debug, Deserialize)]
pub(crate) struct MessageResponse {
    pub(crate) message: String,
}

/// `{"agent_ids": "uuid,uuid"}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DiscoverResponse {
    pub(crate) agent_ids: String,
}

/// `{"heartbeat": null | seconds}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HeartbeatResponse {
    pub(crate) heartbeat: Option<f64>,
}

/// `{"group_ids": [...]}` (the share routes; our client has no share API).
#[cfg(feature = "server")]
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SharesResponse {
    pub(crate) group_ids: Vec<String>,
}

/// Our extension of `GET /mailbox/listen`, which Academy's server and clients ignore: a
/// request with this header set to `1` asks for acknowledged delivery. The server then numbers
/// each event (`id: N`), keeps what it sent until the client acknowledges it
/// (`POST /mailbox/ack`), stops sending once a window of unacknowledged messages is full, and
/// puts the unacknowledged ones back at the head of the queue when the stream ends.
pub(crate) const ACK_HEADER: &str = "exchange-ack";

/// Response header of an acknowledged stream: its id (a UUID), for acknowledgements.
pub(crate) const STREAM_HEADER: &str = "exchange-stream";

/// Request header of a stream that replaces an earlier one of the same client: `<stream id>
/// <last event id handled>`. The server ends the earlier stream (which may still look open to it)
/// and puts what was not handled back at the head of the queue before the new stream starts.
pub(crate) const RESUME_HEADER: &str = "exchange-resume";

/// Route of acknowledgements (our extension).
pub(crate) const ACK_ROUTE: &str = "/mailbox/ack";

/// `{"mailbox": ID, "stream": "<uuid>", "through": N}`: every event up to id `N` of that stream
/// was handled.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AckRequest {
    pub(crate) mailbox: String,
    pub(crate) stream: uuid::Uuid,
    pub(crate) through: u64,
}
