//! What an operator sees of the server: per-request log lines, Prometheus metrics, health
//! routes.

mod metered;
mod metrics;
mod request_log;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(crate) use metered::MeteredStorage;
pub(crate) use metrics::{Live, Metrics};
pub(crate) use request_log::{FailureReason, RequestNote, observe};

use super::routes::AppState;

/// The reason of the `503` receives get while the server shuts down (not a failure).
pub(crate) const SHUTTING_DOWN: &str = "Server shutting down";

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.encode(state.storage.totals(), state.storage.data_losses());
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
    response
}

/// `GET /healthz`: the process serves requests.
pub(crate) async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// `GET /readyz`: the storage answers (`503` with the reason while it does not).
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match state.storage.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => e.into_response(),
    }
}
