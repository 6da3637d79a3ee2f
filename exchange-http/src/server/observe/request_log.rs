//! One log line and one metrics sample per request: the middleware around every route, and
//! the note handlers fill in (caller, mailbox, message ids) for it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use exchange_core::{EntityId, Header};
use parking_lot::Mutex;

use super::metrics::Metrics;

/// What a handler learnt about its request, for the log line.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestNote(Arc<Mutex<Noted>>);

#[derive(Debug, Default)]
struct Noted {
    caller: Option<String>,
    mailbox: Option<String>,
    src: Option<String>,
    dest: Option<String>,
    tag: Option<String>,
}

impl RequestNote {
    /// The authenticated client (never its credentials).
    pub(crate) fn caller(&self, client_id: &str) {
        if !client_id.is_empty() {
            self.0.lock().caller = Some(client_id.to_owned());
        }
    }

    /// The mailbox the request is about.
    pub(crate) fn mailbox(&self, id: &EntityId) {
        self.0.lock().mailbox = Some(id.uid().to_string());
    }

    /// The message a send carries.
    pub(crate) fn message(&self, header: &Header) {
        let mut noted = self.0.lock();
        noted.src = Some(header.src.uid().to_string());
        noted.dest = Some(header.dest.uid().to_string());
        noted.tag = Some(header.tag.to_string());
    }
}

/// Why a request failed, as its answer says (kept on the response for the log line).
#[derive(Clone, Debug)]
pub(crate) struct FailureReason(pub(crate) String);

/// Routes polled by machines (scrapers, load balancers): logged at debug only.
const QUIET_ROUTES: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// Times the request, counts it, and logs it: `info` when it succeeded, `warn` for a refusal
/// (4xx, with the reason), `error` for a failure of the server or its storage (5xx).
pub(crate) async fn observe(State(metrics): State<Arc<Metrics>>, mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let note = RequestNote::default();
    request.extensions_mut().insert(note.clone());
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    let status = response.status();
    metrics.request(&route, &method, status, elapsed);
    let noted = note.0.lock();
    let reason = response.extensions().get::<FailureReason>().map(|r| r.0.as_str());
    macro_rules! line {
        ($level:ident, $text:literal) => {
            tracing::$level!(
                method = %method,
                route = %route,
                status = status.as_u16(),
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                caller = noted.caller.as_deref(),
                academy.mailbox_id = noted.mailbox.as_deref(),
                academy.src = noted.src.as_deref(),
                academy.dest = noted.dest.as_deref(),
                academy.message_tag = noted.tag.as_deref(),
                reason,
                $text
            )
        };
    }
    match level(&method, &route, status, reason) {
        tracing::Level::ERROR => line!(error, "request failed"),
        tracing::Level::WARN => line!(warn, "request refused"),
        tracing::Level::DEBUG => line!(debug, "request"),
        _ => line!(info, "request"),
    }
    drop(noted);
    response
}

/// The level of a request's log line.
fn level(method: &Method, route: &str, status: StatusCode, reason: Option<&str>) -> tracing::Level {
    if QUIET_ROUTES.iter().any(|quiet| route.ends_with(quiet)) && status.is_success() {
        return tracing::Level::DEBUG;
    }
    // A long poll that found no message in time is the normal way of waiting.
    if status == StatusCode::REQUEST_TIMEOUT && *method == Method::GET && route.ends_with("/message") {
        return tracing::Level::INFO;
    }
    if status.is_server_error() && reason != Some(super::SHUTTING_DOWN) {
        return tracing::Level::ERROR;
    }
    if status.is_client_error() || status.is_server_error() {
        return tracing::Level::WARN;
    }
    tracing::Level::INFO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_outcome() {
        let ok = StatusCode::OK;
        assert_eq!(level(&Method::PUT, "/message", ok, None), tracing::Level::INFO);
        assert_eq!(level(&Method::GET, "/metrics", ok, None), tracing::Level::DEBUG);
        assert_eq!(level(&Method::GET, "/readyz", StatusCode::SERVICE_UNAVAILABLE, Some("x")), tracing::Level::ERROR);
        assert_eq!(level(&Method::GET, "/message", StatusCode::REQUEST_TIMEOUT, None), tracing::Level::INFO);
        assert_eq!(level(&Method::PUT, "/message", StatusCode::REQUEST_TIMEOUT, None), tracing::Level::WARN);
        assert_eq!(level(&Method::PUT, "/message", StatusCode::FORBIDDEN, Some("no")), tracing::Level::WARN);
        assert_eq!(
            level(&Method::GET, "/message", StatusCode::SERVICE_UNAVAILABLE, Some(super::super::SHUTTING_DOWN)),
            tracing::Level::WARN
        );
        assert_eq!(
            level(&Method::PUT, "/message", StatusCode::SERVICE_UNAVAILABLE, Some("storage failed")),
            tracing::Level::ERROR
        );
    }
}
