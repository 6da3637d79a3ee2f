//! The route handlers of Academy's HTTP exchange (spec §3.4).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bytes::Bytes;
use exchange_core::{EntityId, Header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::auth::Authenticator;
use super::observe::{self, FailureReason, MeteredStorage, Metrics, RequestNote, SHUTTING_DOWN};
use super::status_page;
use super::storage::{ApiError, Caller, Storage};
use super::stream::{Listen, Streams};
use crate::wire::{
    ACK_HEADER, ACK_ROUTE, AckRequest, DiscoverResponse, HeartbeatResponse, RESUME_HEADER, STREAM_HEADER,
    SharesResponse, StatusResponse,
};

/// What every handler shares: the store, the authenticator and the limits.
#[derive(Clone)]
pub struct AppState {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) auth: Arc<dyn Authenticator>,
    /// Default and maximum `timeout` of receives, in seconds.
    pub(crate) listen_timeout_s: f64,
    /// Becomes `true` when the server shuts down: long polls and streams end.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Longest time a request body may take to arrive.
    pub(crate) body_timeout: Duration,
    /// Acknowledged event streams that are open.
    pub(crate) streams: Arc<Streams>,
    /// What `GET /metrics` reports.
    pub(crate) metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("listen_timeout_s", &self.listen_timeout_s).finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a store (measured for `GET /metrics`) and an authenticator; `shutdown`
    /// turning `true` ends receives.
    pub fn new(
        storage: Arc<dyn Storage>,
        auth: Arc<dyn Authenticator>,
        listen_timeout_s: f64,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        AppState {
            storage: Arc::new(MeteredStorage::new(storage, metrics.clone())),
            auth,
            listen_timeout_s,
            shutdown,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            streams: Arc::default(),
            metrics,
        }
    }

    /// Sets how long a request body may take to arrive (default 30 s; `408` after it).
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }
}

/// Default of [`AppState::with_body_timeout`].
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The router of every route, under `prefix` (`""` or `"/v1"`...), with `body_limit` bytes
/// as the largest request body.
pub fn router(state: AppState, prefix: &str, body_limit: usize) -> Router {
    let routes = Router::new()
        .route("/mailbox", get(mailbox_status).post(mailbox_create).delete(mailbox_terminate))
        .route("/message", put(message_put).get(message_get))
        .route("/mailbox/listen", get(mailbox_listen))
        .route(ACK_ROUTE, axum::routing::post(mailbox_ack))
        .route("/discover", get(discover))
        .route("/mailbox/heartbeat", get(heartbeat_get).post(heartbeat_post))
        .route("/mailbox/stats", get(stats))
        .route("/mailbox/share", get(share_get).post(share_post).delete(share_delete))
        .route(METRICS_ROUTE, get(observe::metrics))
        .route(HEALTHZ_ROUTE, get(observe::healthz))
        .route(READYZ_ROUTE, get(observe::readyz))
        .route(STATUS_PAGE_ROUTE, get(status_page::page))
        .route("/admin/mailboxes", get(status_page::admin_mailboxes));
    let prefix = prefix.trim_end_matches('/');
    let routes = if prefix.is_empty() { routes } else { Router::new().nest(prefix, routes) };
    routes
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), observe::observe))
        .with_state(state)
}

/// Routes for operators, outside authentication (they carry no mailbox data).
const METRICS_ROUTE: &str = "/metrics";
const HEALTHZ_ROUTE: &str = "/healthz";
const READYZ_ROUTE: &str = "/readyz";
/// The status page (a browser without credentials is asked for the admin token as a password).
const STATUS_PAGE_ROUTE: &str = "/";

/// A browser's navigation (it accepts HTML): asked for credentials, it prompts for them.
fn is_page_request(request: &Request) -> bool {
    request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

/// Whether the request matched one of the operators' routes.
fn is_public(request: &Request) -> bool {
    request.extensions().get::<axum::extract::MatchedPath>().is_some_and(|path| {
        [METRICS_ROUTE, HEALTHZ_ROUTE, READYZ_ROUTE].iter().any(|route| path.as_str().ends_with(route))
    })
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404: Not Found")
}

/// Authentication runs before routing; the caller goes into the request extensions.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if is_public(&request) {
        return next.run(request).await;
    }
    match state.auth.authenticate(request.headers()).await {
        Ok(caller) => {
            if let Some(note) = request.extensions().get::<RequestNote>() {
                note.caller(&caller.client_id);
            }
            request.extensions_mut().insert(caller);
            let mut response = next.run(request).await;
            if response.status() == StatusCode::METHOD_NOT_ALLOWED
                && response.headers().get(header::CONTENT_TYPE).is_none()
            {
                let allow = response.headers().get(header::ALLOW).cloned();
                response = text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
                if let Some(allow) = allow {
                    response.headers_mut().insert(header::ALLOW, allow);
                }
            }
            response
        }
        Err(e) => {
            let missing = matches!(e, ApiError::Unauthorized(_));
            state.metrics.refused(if missing { "missing" } else { "refused" });
            let mut response = e.into_response();
            if missing && is_page_request(&request) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"exchange status\""));
            }
            response
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("responses always serialize");
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

fn caller(request: &axum::http::Extensions) -> Caller {
    request.get::<Caller>().cloned().unwrap_or_else(Caller::anonymous)
}

/// Parses a JSON object body into `T`; every failure is a 400 with the reason.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "Missing or invalid field: empty request body (expected a JSON object)".into(),
        ));
    }
    serde_json::from_slice(body).map_err(ApiError::field)
}

fn parse_id(text: &str) -> Result<EntityId, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::field(format_args!("mailbox: {e}")))
}

#[derive(Deserialize)]
struct MailboxBody {
    mailbox: String,
    #[serde(default)]
    agent: Option<String>,
}

#[derive(Deserialize)]
struct ReceiveBody {
    mailbox: String,
    /// `Some(Value::Null)` for an explicit `null` (refused), `None` when absent.
    #[serde(default, deserialize_with = "present")]
    timeout: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct MessageBody {
    message: String,
}

#[derive(Deserialize)]
struct Envelope {
    header: Header,
    /// Required and syntax-checked, never decoded: the message is stored as received.
    #[serde(rename = "body")]
    _body: serde::de::IgnoredAny,
}

#[derive(Deserialize)]
struct DiscoverBody {
    agent: String,
    allow_subclasses: Value,
}

#[derive(Deserialize)]
struct ShareBody {
    mailbox: String,
    group_id: String,
}

/// One handler's extracted input: the caller, the raw body, and the note for the log line.
struct Input {
    caller: Caller,
    body: Bytes,
    note: RequestNote,
}

impl Input {
    /// Parses the mailbox id the request is about.
    fn id(&self, text: &str) -> Result<EntityId, ApiError> {
        let id = parse_id(text)?;
        self.note.mailbox(&id);
        Ok(id)
    }
}

impl axum::extract::FromRequest<AppState> for Input {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = caller(request.extensions());
        let note = request.extensions().get::<RequestNote>().cloned().unwrap_or_default();
        let body = tokio::time::timeout(state.body_timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                let mut response = ApiError::Timeout.into_response();
                let reason = format!("the request body did not arrive within {:?}", state.body_timeout);
                response.extensions_mut().insert(FailureReason(reason));
                // The rest of the body may still trickle in: do not keep the connection.
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            })?
            .map_err(|rejection| {
                let status = rejection.status();
                let reason = rejection.body_text();
                let mut response = (status, reason.clone()).into_response();
                response.extensions_mut().insert(FailureReason(reason));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                response
            })?;
        Ok(Input { caller, body, note })
    }
}

type Answer = Result<Response, ApiError>;

async fn mailbox_create(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let id = input.id(&body.mailbox)?;
    let agent = body.agent.map(|names| names.split(',').map(str::to_owned).collect());
    state.storage.create(&input.caller, &id, agent).await?;
    Ok(StatusCode::OK.into_response())
}

async fn mailbox_terminate(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    state.storage.terminate(&input.caller, &input.id(&body.mailbox)?).await?;
    Ok(StatusCode::OK.into_response())
}

async fn mailbox_status(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let status = state.storage.status(&input.caller, &input.id(&body.mailbox)?).await?;
    Ok(json(&StatusResponse { status }))
}

async fn message_put(State(state): State<AppState>, input: Input) -> Answer {
    let body: MessageBody = parse(&input.body)?;
    let envelope: Envelope =
        serde_json::from_str(&body.message).map_err(|e| ApiError::field(format_args!("message: {e}")))?;
    let header = envelope.header;
    input.note.message(&header);
    let mut message = body.message;
    if message.contains(['\n', '\r']) {
        // Only whitespace between tokens can be a raw line break in valid JSON: an event
        // stream needs the message on one line.
        message = message.replace(['\n', '\r'], " ");
    }
    state.storage.put(&input.caller, &header, Bytes::from(message)).await?;
    Ok(StatusCode::OK.into_response())
}

/// The validated `timeout` of a receive: `0 < timeout <= listen_timeout_s`, default the maximum.
fn receive_timeout(state: &AppState, timeout: Option<Value>) -> Result<Duration, ApiError> {
    let max = state.listen_timeout_s;
    let invalid = || ApiError::BadRequest(format!("Invalid timeout (must be less than {max} and greater than 0)"));
    let seconds = match timeout {
        None => max,
        Some(Value::Number(n)) => n.as_f64().ok_or_else(invalid)?,
        Some(_) => return Err(invalid()),
    };
    if !(seconds > 0.0 && seconds <= max) {
        return Err(invalid());
    }
    // Saturated, so a deadline computed from it never overflows whatever the configured maximum.
    Ok(Duration::from_secs_f64(seconds.min(super::MAX_CONFIG_SECONDS)))
}

async fn message_get(State(mut state): State<AppState>, input: Input) -> Answer {
    let body: ReceiveBody = parse(&input.body)?;
    let timeout = receive_timeout(&state, body.timeout)?;
    let id = input.id(&body.mailbox)?;
    let storage = state.storage.clone();
    let _waiting = state.metrics.long_poll();
    let received = tokio::select! {
        received = storage.recv(&input.caller, &id, timeout) => received?,
        _ = state.shutdown.wait_for(|stopping| *stopping) => {
            return Err(ApiError::Unavailable(SHUTTING_DOWN.into()));
        }
    };
    let message = received.ok_or(ApiError::Timeout)?;
    let text = std::str::from_utf8(&message).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let mut out = Vec::with_capacity(message.len() + message.len() / 8 + 16);
    out.extend_from_slice(b"{\"message\":");
    serde_json::to_writer(&mut out, text).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    out.push(b'}');
    let mut response = (StatusCode::OK, out).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    Ok(response)
}

async fn mailbox_listen(State(state): State<AppState>, headers: HeaderMap, input: Input) -> Answer {
    let body: ReceiveBody = parse(&input.body)?;
    let timeout = receive_timeout(&state, body.timeout)?;
    let id = input.id(&body.mailbox)?;
    state.storage.check_receive(&input.caller, &id).await?;
    let acknowledged = headers.get(ACK_HEADER).is_some_and(|v| v.as_bytes() == b"1");
    if let Some(resume) = headers.get(RESUME_HEADER).filter(|_| acknowledged) {
        let (previous, through) = parse_resume(resume)?;
        state.streams.take_over(&*state.storage, &input.caller, &id, previous, through).await?;
    }
    let streams = acknowledged.then(|| state.streams.clone());
    let listen = Listen::new(state.storage.clone(), input.caller, id, timeout, state.shutdown.clone(), streams);
    let stream_id = listen.stream_id();
    let open = state.metrics.stream();
    let events = futures::StreamExt::inspect(futures::stream::unfold(listen, Listen::next), move |_| {
        // The stream owns the gauge's guard: it counts until the stream is dropped.
        let _ = &open;
    });
    let mut response = Response::new(Body::from_stream(events));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(stream_id) = stream_id {
        headers.insert(STREAM_HEADER, HeaderValue::from_str(&stream_id.to_string()).expect("a UUID is a header value"));
    }
    Ok(response)
}

/// `exchange-resume: <stream uuid> <last event id>`.
fn parse_resume(value: &HeaderValue) -> Result<(Uuid, u64), ApiError> {
    let invalid =
        || ApiError::BadRequest(format!("Invalid {RESUME_HEADER} header (expected \"<stream id> <event id>\")"));
    let text = value.to_str().map_err(|_| invalid())?;
    let (stream, through) = text.trim().split_once(' ').ok_or_else(invalid)?;
    Ok((Uuid::parse_str(stream).map_err(|_| invalid())?, through.trim().parse().map_err(|_| invalid())?))
}

async fn mailbox_ack(State(state): State<AppState>, input: Input) -> Answer {
    let body: AckRequest = parse(&input.body)?;
    state.streams.ack(&input.caller, &input.id(&body.mailbox)?, body.stream, body.through)?;
    Ok(StatusCode::OK.into_response())
}

/// Python truthiness of a JSON value (Academy does not type-check `allow_subclasses`).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

async fn discover(State(state): State<AppState>, input: Input) -> Answer {
    let body: DiscoverBody = parse(&input.body)?;
    let found = state.storage.discover(&input.caller, &body.agent, truthy(&body.allow_subclasses)).await?;
    let agent_ids = found.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    Ok(json(&DiscoverResponse { agent_ids }))
}

async fn heartbeat_get(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let heartbeat = state.storage.heartbeat(&input.caller, &input.id(&body.mailbox)?).await?;
    Ok(json(&HeartbeatResponse { heartbeat }))
}

async fn heartbeat_post(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    state.storage.set_heartbeat(&input.caller, &input.id(&body.mailbox)?).await?;
    Ok(StatusCode::OK.into_response())
}

async fn stats(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let stats = state.storage.stats(&input.caller, &input.id(&body.mailbox)?).await?;
    Ok(json(&stats))
}

async fn share_post(State(state): State<AppState>, input: Input) -> Answer {
    let body: ShareBody = parse(&input.body)?;
    state.storage.share(&input.caller, &input.id(&body.mailbox)?, &body.group_id).await?;
    Ok(StatusCode::OK.into_response())
}

async fn share_get(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let group_ids = state.storage.shares(&input.caller, &input.id(&body.mailbox)?).await?;
    Ok(json(&SharesResponse { group_ids }))
}

async fn share_delete(State(state): State<AppState>, input: Input) -> Answer {
    let body: ShareBody = parse(&input.body)?;
    state.storage.unshare(&input.caller, &input.id(&body.mailbox)?, &body.group_id).await?;
    Ok(StatusCode::OK.into_response())
}
