//! The route handlers of Academy's HTTP exchange (spec §3.4).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bytes::{BufMut, Bytes, BytesMut};
use exchange_core::{EntityId, Header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use super::auth::Authenticator;
use super::storage::{ApiError, Caller, Storage};
use crate::wire::{DiscoverResponse, HeartbeatResponse, SharesResponse, StatusResponse};

/// Keep-alive comment interval on event streams.
const PING_INTERVAL: Duration = Duration::from_secs(15);

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
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("listen_timeout_s", &self.listen_timeout_s).finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a store and an authenticator; `shutdown` turning `true` ends receives.
    pub fn new(
        storage: Arc<dyn Storage>,
        auth: Arc<dyn Authenticator>,
        listen_timeout_s: f64,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AppState { storage, auth, listen_timeout_s, shutdown, body_timeout: DEFAULT_BODY_TIMEOUT }
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
        .route("/discover", get(discover))
        .route("/mailbox/heartbeat", get(heartbeat_get).post(heartbeat_post))
        .route("/mailbox/stats", get(stats))
        .route("/mailbox/share", get(share_get).post(share_post).delete(share_delete));
    let prefix = prefix.trim_end_matches('/');
    let routes = if prefix.is_empty() { routes } else { Router::new().nest(prefix, routes) };
    routes
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404: Not Found")
}

/// Authentication runs before routing; the caller goes into the request extensions.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match state.auth.authenticate(request.headers()).await {
        Ok(caller) => {
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
        Err(e) => e.into_response(),
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

/// One handler's extracted input: the caller and the raw body.
struct Input {
    caller: Caller,
    body: Bytes,
}

impl axum::extract::FromRequest<AppState> for Input {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = caller(request.extensions());
        let body = tokio::time::timeout(state.body_timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                let mut response = ApiError::Timeout.into_response();
                // The rest of the body may still trickle in: do not keep the connection.
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            })?
            .map_err(|rejection| {
                let status = rejection.status();
                let mut response = (status, rejection.body_text()).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                response
            })?;
        Ok(Input { caller, body })
    }
}

type Answer = Result<Response, ApiError>;

async fn mailbox_create(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let id = parse_id(&body.mailbox)?;
    let agent = body.agent.map(|names| names.split(',').map(str::to_owned).collect());
    state.storage.create(&input.caller, &id, agent).await?;
    Ok(StatusCode::OK.into_response())
}

async fn mailbox_terminate(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    state.storage.terminate(&input.caller, &parse_id(&body.mailbox)?).await?;
    Ok(StatusCode::OK.into_response())
}

async fn mailbox_status(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let status = state.storage.status(&input.caller, &parse_id(&body.mailbox)?).await?;
    Ok(json(&StatusResponse { status }))
}

async fn message_put(State(state): State<AppState>, input: Input) -> Answer {
    let body: MessageBody = parse(&input.body)?;
    let envelope: Envelope =
        serde_json::from_str(&body.message).map_err(|e| ApiError::field(format_args!("message: {e}")))?;
    let header = envelope.header;
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
    let id = parse_id(&body.mailbox)?;
    let storage = state.storage.clone();
    let received = tokio::select! {
        received = storage.recv(&input.caller, &id, timeout) => received?,
        _ = state.shutdown.wait_for(|stopping| *stopping) => {
            return Err(ApiError::Unavailable("Server shutting down".into()));
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

async fn mailbox_listen(State(state): State<AppState>, input: Input) -> Answer {
    let body: ReceiveBody = parse(&input.body)?;
    let timeout = receive_timeout(&state, body.timeout)?;
    let id = parse_id(&body.mailbox)?;
    state.storage.check_receive(&input.caller, &id).await?;
    let now = tokio::time::Instant::now();
    let listen = Listen {
        storage: state.storage.clone(),
        caller: input.caller,
        id,
        timeout,
        deadline: now + timeout,
        next_ping: now + PING_INTERVAL,
        shutdown: state.shutdown.clone(),
    };
    let stream = futures::stream::unfold(listen, Listen::next);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// State of one event stream.
struct Listen {
    storage: Arc<dyn Storage>,
    caller: Caller,
    id: EntityId,
    timeout: Duration,
    /// When the wait for the next message ends the stream.
    deadline: tokio::time::Instant,
    next_ping: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
}

enum Step {
    Message(Bytes),
    /// Nothing arrived before the wait ended: ping or end, by the clock.
    Wait,
    End,
}

impl Listen {
    /// The next chunk: a message, a keep-alive comment, or the end. The store's receive is
    /// never cancelled for a ping (it waits at most until the next ping is due), so a store
    /// whose blocking pop is not cancel safe loses nothing; only shutdown cancels it.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            let now = tokio::time::Instant::now();
            if now >= self.next_ping {
                self.next_ping += PING_INTERVAL;
                return Some((Ok(Bytes::from_static(b": ping\r\n\r\n")), self));
            }
            if now >= self.deadline {
                return None;
            }
            let wait = self.deadline.min(self.next_ping) - now;
            let step = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stopping| *stopping) => Step::End,
                received = self.storage.recv(&self.caller, &self.id, wait) => match received {
                    Ok(Some(message)) => Step::Message(message),
                    Ok(None) => Step::Wait,
                    Err(_) => Step::End,
                },
            };
            match step {
                Step::Message(message) => {
                    self.deadline = tokio::time::Instant::now() + self.timeout;
                    let mut event = BytesMut::with_capacity(message.len() + 10);
                    event.put_slice(b"data: ");
                    event.put_slice(&message);
                    event.put_slice(b"\r\n\r\n");
                    return Some((Ok(event.freeze()), self));
                }
                Step::Wait => {}
                Step::End => return None,
            }
        }
    }
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
    let heartbeat = state.storage.heartbeat(&input.caller, &parse_id(&body.mailbox)?).await?;
    Ok(json(&HeartbeatResponse { heartbeat }))
}

async fn heartbeat_post(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    state.storage.set_heartbeat(&input.caller, &parse_id(&body.mailbox)?).await?;
    Ok(StatusCode::OK.into_response())
}

async fn stats(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let stats = state.storage.stats(&input.caller, &parse_id(&body.mailbox)?).await?;
    Ok(json(&stats))
}

async fn share_post(State(state): State<AppState>, input: Input) -> Answer {
    let body: ShareBody = parse(&input.body)?;
    state.storage.share(&input.caller, &parse_id(&body.mailbox)?, &body.group_id).await?;
    Ok(StatusCode::OK.into_response())
}

async fn share_get(State(state): State<AppState>, input: Input) -> Answer {
    let body: MailboxBody = parse(&input.body)?;
    let group_ids = state.storage.shares(&input.caller, &parse_id(&body.mailbox)?).await?;
    Ok(json(&SharesResponse { group_ids }))
}

async fn share_delete(State(state): State<AppState>, input: Input) -> Answer {
    let body: ShareBody = parse(&input.body)?;
    state.storage.unshare(&input.caller, &parse_id(&body.mailbox)?, &body.group_id).await?;
    Ok(StatusCode::OK.into_response())
}
