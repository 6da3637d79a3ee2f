//! Request and response bodies of Academy's HTTP routes, shared by the server and the client.
//!
//! Mailbox ids and messages travel as JSON strings holding JSON (`"mailbox": "{\"uid\":…}"`).

use serde::{Deserialize, Serialize};

/// `{"mailbox": ID}` and its optional companions, as the client writes them.
#[derive(Debug, Serialize)]
pub(crate) struct MailboxRequest<'a> {
    pub(crate) mailbox: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<f64>,
}

/// `{"message": MESSAGE}`.
#[derive(Debug, Serialize)]
pub(crate) struct MessageRequest<'a> {
    pub(crate) message: &'a str,
}

/// `{"agent": name, "allow_subclasses": bool}`.
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

/// `{"group_ids": [...]}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SharesResponse {
    pub(crate) group_ids: Vec<String>,
}
