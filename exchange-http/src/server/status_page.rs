//! The status page (`GET /`, server-rendered HTML) and its data as JSON
//! (`GET /admin/mailboxes`): totals, live traffic, and a searchable, paged table of mailboxes.
//! Admin callers only (`[auth.tokens.*] admin = true`; everyone without authentication).

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::listing::{MAX_PAGE, MailboxPage, MailboxQuery};
use super::observe::Live;
use super::routes::AppState;
use super::storage::{ApiError, Caller, StoreTotals};

/// Rows per page of the HTML table.
const PAGE_ROWS: usize = 100;

/// `?q=…&offset=…&limit=…`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

impl ListParams {
    fn query(&self) -> MailboxQuery {
        MailboxQuery {
            search: self.q.trim().to_owned(),
            offset: self.offset,
            limit: self.limit.unwrap_or(PAGE_ROWS).min(MAX_PAGE),
        }
    }
}

/// Everything the page shows, as `GET /admin/mailboxes` answers it.
#[derive(Debug, Serialize)]
struct Status {
    /// Store totals (memory storage; `null` with Redis).
    totals: Option<Totals>,
    live: Live,
    /// The page of mailboxes (`null` when the storage cannot list them).
    mailboxes: Option<MailboxPage>,
}

#[derive(Debug, Serialize)]
struct Totals {
    active_mailboxes: u64,
    terminated_mailboxes: u64,
    queued_messages: u64,
    queued_bytes: u64,
}

impl From<StoreTotals> for Totals {
    fn from(t: StoreTotals) -> Self {
        Totals {
            active_mailboxes: t.active_mailboxes,
            terminated_mailboxes: t.terminated_mailboxes,
            queued_messages: t.queued_messages,
            queued_bytes: t.queued_bytes,
        }
    }
}

fn require_admin(caller: Option<&Caller>) -> Result<(), ApiError> {
    match caller {
        Some(caller) if caller.admin => Ok(()),
        _ => Err(ApiError::Forbidden("Incorrect permissions: the status page needs an admin token".into())),
    }
}

async fn status(state: &AppState, query: &MailboxQuery) -> Result<Status, ApiError> {
    Ok(Status {
        totals: state.storage.totals().map(Totals::from),
        live: state.metrics.live(),
        mailboxes: state.storage.mailboxes(query).await?,
    })
}

/// `GET /admin/mailboxes`.
pub(crate) async fn admin_mailboxes(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    require_admin(caller.as_deref())?;
    let status = status(&state, &params.query()).await?;
    Ok(axum::Json(status).into_response())
}

/// `GET /`: the page.
pub(crate) async fn page(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    require_admin(caller.as_deref())?;
    let query = params.query();
    let status = status(&state, &query).await?;
    let mut response = (StatusCode::OK, render(&status, &query)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Text made safe for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query string value (letters, digits and `-._~` kept; the rest percent-encoded).
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}/s"))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;font-size:.9rem}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}\
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}\
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:9rem}.card b{display:block;font-size:1.3rem}\
code{font-size:.8rem}.muted{color:#777}";

fn render(status: &Status, query: &MailboxQuery) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>Exchange status</title><style>{STYLE}</style></head><body><h1>Exchange status</h1>\
         <p class=\"muted\">exchange-server {} · refreshes every 5 s</p><div class=\"cards\">",
        env!("CARGO_PKG_VERSION")
    );
    let mut card = |label: &str, value: String| {
        let _ = write!(html, "<div class=\"card\">{}<b>{}</b></div>", escape(label), escape(&value));
    };
    if let Some(totals) = &status.totals {
        card("active mailboxes", totals.active_mailboxes.to_string());
        card("terminated", totals.terminated_mailboxes.to_string());
        card("queued messages", totals.queued_messages.to_string());
        card("queued bytes", totals.queued_bytes.to_string());
    }
    let live = &status.live;
    card("accepted (last minute)", rate(live.accepted_per_s));
    card("delivered (last minute)", rate(live.delivered_per_s));
    card("connections", live.open_connections.to_string());
    card("event streams", live.event_streams.to_string());
    card("long polls", live.long_polls.to_string());
    html.push_str("</div>");
    let Some(page) = &status.mailboxes else {
        html.push_str(
            "<p>This storage cannot list mailboxes without scanning all of Redis; see <code>/metrics</code> \
             and Redis itself.</p></body></html>",
        );
        return html;
    };
    let _ = write!(
        html,
        "<form method=\"get\" action=\"\"><input name=\"q\" value=\"{}\" placeholder=\"id, name, role or behaviour\" size=\"40\"> \
         <button>Search</button></form><p>{} mailbox(es) match</p>",
        escape(&query.search),
        page.matching
    );
    html.push_str(
        "<table><thead><tr><th>id</th><th>name</th><th>role</th><th>behaviours</th><th>status</th>\
         <th>queued</th><th>in progress</th><th>last heartbeat</th></tr></thead><tbody>",
    );
    for row in &page.rows {
        let heartbeat = row.heartbeat_age_s.map_or_else(|| "–".to_owned(), |age| format!("{age:.0} s ago"));
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n queued\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            row.id,
            escape(row.name.as_deref().unwrap_or("")),
            row.role,
            escape(&row.behaviours.join(", ")),
            row.status,
            row.queued,
            row.in_progress,
            heartbeat
        );
    }
    html.push_str("</tbody></table><p>");
    let link = |offset: usize| format!("?q={}&amp;offset={offset}", url_encode(&query.search));
    if query.offset > 0 {
        let _ = write!(html, "<a href=\"{}\">← previous</a> ", link(query.offset.saturating_sub(query.limit)));
    }
    let shown_to = query.offset + page.rows.len();
    if page.rows.is_empty() {
        html.push_str("no rows on this page ");
    } else {
        let _ = write!(html, "rows {}–{} ", query.offset + 1, shown_to);
    }
    if shown_to < page.matching {
        let _ = write!(html, "<a href=\"{}\">next →</a>", link(shown_to));
    }
    html.push_str("</p></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(url_encode("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }
}
