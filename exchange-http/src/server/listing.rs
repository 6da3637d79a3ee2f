//! Listing mailboxes for operators (the status page and `GET /admin/mailboxes`): the query, a
//! page of rows, and what one row shows.

use serde::Serialize;
use uuid::Uuid;

/// Largest page a listing returns.
pub const MAX_PAGE: usize = 500;

/// Which mailboxes to list: those whose id, name, role or behaviour names contain `search`
/// (case-insensitive; empty = all), in registration order, `limit` from `offset`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxQuery {
    /// Text to look for.
    pub search: String,
    /// Rows to skip.
    pub offset: usize,
    /// Rows to return (at most [`MAX_PAGE`]).
    pub limit: usize,
}

impl MailboxQuery {
    /// Whether a mailbox with these fields matches the search.
    pub fn matches(&self, uid: &Uuid, name: Option<&str>, role: &str, behaviours: &[String]) -> bool {
        if self.search.is_empty() {
            return true;
        }
        let needle = self.search.to_lowercase();
        let has = |text: &str| text.to_lowercase().contains(&needle);
        has(&uid.to_string()) || name.is_some_and(has) || has(role) || behaviours.iter().any(|b| has(b))
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MailboxPage {
    /// Mailboxes matching the search, all pages.
    pub matching: usize,
    /// This page's rows.
    pub rows: Vec<MailboxRow>,
}

/// What the status page shows of one mailbox.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MailboxRow {
    /// The mailbox's uid.
    pub id: Uuid,
    /// The name the id was registered with, if any.
    pub name: Option<String>,
    /// `user` or `agent`.
    pub role: &'static str,
    /// The agent's behaviour names, most derived first (empty for users).
    pub behaviours: Vec<String>,
    /// `ACTIVE` or `TERMINATED`.
    pub status: &'static str,
    /// Messages waiting.
    pub queued: u64,
    /// Requests received and not answered yet.
    pub in_progress: u64,
    /// Seconds since the last heartbeat, if there was one.
    pub heartbeat_age_s: Option<f64>,
}
