//! The reqwest client: [`HttpExchange`] implements [`Exchange`] over Academy's HTTP routes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use exchange_core::{
    AgentId, AgentRegistration, EntityId, Error, Exchange, Mailbox, MailboxStats, MailboxStatus, Message, Result,
    UserId,
};
use parking_lot::Mutex;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::mailbox::{HttpMailbox, Shared};
use crate::options::HttpOptions;
use crate::wire::{
    DiscoverRequest, DiscoverResponse, HeartbeatResponse, MailboxRequest, MessageRequest, StatusResponse,
};

/// A client of an HTTP exchange (ours or Academy's). Clones share one connection pool.
#[derive(Clone)]
pub struct HttpExchange {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    /// Base URL without a trailing slash (may carry a path such as `/v1`).
    base: String,
    pub(crate) options: HttpOptions,
    /// Handles opened by this client, for terminate and stats (read-ahead counts).
    open: Mutex<HashMap<Uuid, Vec<Weak<Shared>>>>,
    /// Streams of closed handles waiting for the next handle of the same mailbox.
    handovers: Mutex<HashMap<Uuid, Arc<Shared>>>,
    /// Where the last closed handle of a mailbox stopped reading its acknowledged stream
    /// (stream id, last event handed out): the next handle resumes from there.
    positions: Mutex<HashMap<Uuid, (Uuid, u64)>>,
    /// The `timeout` asked per stream or poll (f64 bits): the option, lowered to the server's
    /// maximum when a server refuses it.
    listen_timeout: AtomicU64,
}

impl Inner {
    /// Records where a closed handle stopped reading `id`'s acknowledged stream.
    pub(crate) fn remember_position(&self, id: &EntityId, position: (Uuid, u64)) {
        self.positions.lock().insert(id.uid(), position);
    }

    /// Seconds to ask per stream or poll.
    pub(crate) fn listen_timeout(&self) -> f64 {
        f64::from_bits(self.listen_timeout.load(Ordering::Relaxed))
    }

    /// Learns the server's maximum from its 400 text (`Invalid timeout (must be less than L
    /// and greater than 0)`); `true` if the timeout was lowered and the call is worth repeating.
    pub(crate) fn learn_listen_max(&self, text: &str) -> bool {
        let Some(max) = text
            .split("less than ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse::<f64>().ok())
        else {
            return false;
        };
        if !(max > 0.0 && max < self.listen_timeout()) {
            return false;
        }
        tracing::info!(max, "the exchange limits receive timeouts; asking for {max} s");
        self.listen_timeout.store(max.to_bits(), Ordering::Relaxed);
        true
    }
}

/// Parks the stream of a closed handle for [`crate::mailbox::HANDOVER`]; stops it if no handle of
/// the same mailbox takes it over by then.
pub(crate) fn hand_over(client: &Arc<Inner>, shared: Arc<Shared>) {
    let uid = shared.id.uid();
    if let Some(previous) = client.handovers.lock().insert(uid, shared.clone()) {
        previous.stop();
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        client.handovers.lock().remove(&uid);
        return shared.stop();
    };
    let client = Arc::downgrade(client);
    runtime.spawn(async move {
        tokio::time::sleep(crate::mailbox::HANDOVER).await;
        let parked = client.upgrade().and_then(|client| {
            let mut handovers = client.handovers.lock();
            match handovers.get(&uid) {
                Some(parked) if Arc::ptr_eq(parked, &shared) => handovers.remove(&uid),
                _ => None,
            }
        });
        if parked.is_some() {
            shared.stop();
        }
    });
}

impl std::fmt::Debug for HttpExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExchange").field("url", &exchange_core::redact_url(&self.inner.base)).finish()
    }
}

/// The answer of one call: status and body.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::codec(format!("unexpected answer from the exchange: {e}")))
    }

    /// The error for a non-200 status; `id` is the mailbox concerned.
    pub(crate) fn error(&self, id: &EntityId) -> Error {
        let text = String::from_utf8_lossy(&self.body).into_owned();
        status_error(self.status, text, id)
    }
}

/// Maps an HTTP status to the error variant (spec §3.3).
pub(crate) fn status_error(status: StatusCode, text: String, id: &EntityId) -> Error {
    match status.as_u16() {
        404 => Error::BadEntityId { id: id.clone() },
        419 => Error::MailboxTerminated { id: id.clone() },
        408 => Error::Timeout { timeout: Duration::ZERO },
        401 => Error::Unauthorized { message: text },
        403 => Error::Forbidden { message: text },
        413 => Error::MessageTooLarge { message: text },
        429 | 507 => Error::QueueFull { message: text },
        400 => Error::codec(format!("the exchange rejected the request: {text}")),
        _ => Error::unavailable("http", format!("HTTP {status}: {text}")),
    }
}

fn install_crypto_provider() {
    // Another part of the process may have installed one already: either is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl HttpExchange {
    /// Connects to the exchange at `url` (`http://host:port[/base]` or `https://…`) with default
    /// options, and checks that it answers.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL, [`Error::Unavailable`] if nothing answers, and the
    /// authentication errors of the server.
    pub async fn connect(url: &str) -> Result<HttpExchange> {
        Self::connect_with(url, HttpOptions::default()).await
    }

    /// Connects with options (headers, token, TLS, receive mode...).
    ///
    /// # Errors
    /// As [`HttpExchange::connect`], plus [`Error::Config`] for unusable options.
    pub async fn connect_with(url: &str, options: HttpOptions) -> Result<HttpExchange> {
        let exchange = Self::new(url, options)?;
        // A status call on a random id: proves the server answers and accepts our credentials.
        match exchange.status(&UserId::new(None).into()).await {
            Ok(_) => Ok(exchange),
            Err(Error::BadEntityId { .. }) => {
                Err(Error::config(format!("{url} answers 404 for GET /mailbox: not an exchange (wrong base path?)")))
            }
            Err(e) => Err(e),
        }
    }

    /// A client without contacting the server.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL or options.
    pub fn new(url: &str, options: HttpOptions) -> Result<HttpExchange> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Error::config(format!("invalid exchange URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::config(format!("exchange URL {url:?} must start with http:// or https://")));
        }
        install_crypto_provider();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("academy_version"),
            HeaderValue::from_static(exchange_core::LIBRARY_VERSION),
        );
        if let Some(token) = &options.bearer_token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| Error::config(format!("invalid bearer token: {e}")))?;
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in &options.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::config(format!("invalid header name {name:?}: {e}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| Error::config(format!("invalid header value: {e}")))?;
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .tcp_nodelay(true)
            .connect_timeout(options.connect_timeout)
            // Below the server's idle limit (30 s by default), so the client, not the server,
            // closes idle connections and a request never races a closing connection.
            .pool_idle_timeout(Duration::from_secs(20))
            .http1_only();
        if !options.verify_tls {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(path) = &options.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| Error::config(format!("cannot read CA file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::config(format!("invalid CA file {}: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
        let base = url.trim_end_matches('/').to_owned();
        Ok(HttpExchange {
            inner: Arc::new(Inner {
                http,
                base,
                listen_timeout: AtomicU64::new(options.listen_timeout.as_secs_f64().to_bits()),
                options,
                open: Mutex::default(),
                handovers: Mutex::default(),
                positions: Mutex::default(),
            }),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    fn register_handle(&self, id: &EntityId, shared: &Arc<Shared>) {
        let mut open = self.inner.open.lock();
        let handles = open.entry(id.uid()).or_default();
        handles.retain(|h| h.strong_count() > 0);
        handles.push(Arc::downgrade(shared));
    }

    fn handles(&self, id: &EntityId) -> Vec<Arc<Shared>> {
        let mut open = self.inner.open.lock();
        let Some(handles) = open.get_mut(&id.uid()) else { return Vec::new() };
        handles.retain(|h| h.strong_count() > 0);
        let live: Vec<_> = handles.iter().filter_map(Weak::upgrade).collect();
        if live.is_empty() {
            open.remove(&id.uid());
        }
        live
    }

    async fn mailbox_call(&self, method: Method, route: &str, id: &EntityId) -> Result<Reply> {
        let mailbox = id.to_json();
        let body = serde_json::to_vec(&MailboxRequest { mailbox: &mailbox, agent: None, timeout: None })
            .expect("requests serialize");
        self.inner.call(method, route, body.into(), true).await
    }
}

impl Inner {
    fn url(&self, route: &str) -> String {
        format!("{}{route}", self.base)
    }

    /// One request; connection errors are retried with backoff when `idempotent`.
    pub(crate) async fn call(&self, method: Method, route: &str, body: Bytes, idempotent: bool) -> Result<Reply> {
        let mut attempt = 0;
        loop {
            let sent = self.http.request(method.clone(), self.url(route)).body(body.clone()).send().await;
            let response = match sent {
                Ok(response) => response,
                Err(e) if idempotent && e.is_connect() && attempt < self.options.retries => {
                    tokio::time::sleep(self.options.retry_backoff * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(Error::unavailable("http", e)),
            };
            let status = response.status();
            let body = response.bytes().await.map_err(|e| Error::unavailable("http", e))?;
            return Ok(Reply { status, body });
        }
    }

    /// Starts a request whose answer is read as a stream (the event stream).
    pub(crate) async fn open_stream(
        &self,
        route: &str,
        body: Bytes,
        headers: Vec<(&'static str, HeaderValue)>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self
            .http
            .get(self.url(route))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CACHE_CONTROL, "no-cache");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(body).send().await
    }
}

#[async_trait]
impl Exchange for HttpExchange {
    async fn register_agent(&self, registration: AgentRegistration) -> Result<AgentId> {
        let id = registration.resolve_id();
        let entity = EntityId::from(id.clone());
        let mailbox = entity.to_json();
        let names = registration.behaviors.join(",");
        let body = serde_json::to_vec(&MailboxRequest { mailbox: &mailbox, agent: Some(&names), timeout: None })
            .expect("requests serialize");
        let reply = self.inner.call(Method::POST, "/mailbox", body.into(), true).await?;
        if reply.status != StatusCode::OK {
            return Err(reply.error(&entity));
        }
        Ok(id)
    }

    async fn register_user(&self, name: Option<&str>) -> Result<UserId> {
        let id = UserId::new(name);
        let entity = EntityId::from(id.clone());
        let reply = self.mailbox_call(Method::POST, "/mailbox", &entity).await?;
        if reply.status != StatusCode::OK {
            return Err(reply.error(&entity));
        }
        Ok(id)
    }

    async fn terminate(&self, id: &EntityId) -> Result<()> {
        let reply = self.mailbox_call(Method::DELETE, "/mailbox", id).await?;
        if reply.status != StatusCode::OK {
            return Err(reply.error(id));
        }
        for handle in self.handles(id) {
            handle.mark_terminated();
        }
        Ok(())
    }

    async fn discover(&self, behavior: &str, allow_subclasses: bool) -> Result<Vec<AgentId>> {
        let body = serde_json::to_vec(&DiscoverRequest { agent: behavior, allow_subclasses }).expect("serializes");
        let reply = self.inner.call(Method::GET, "/discover", body.into(), true).await?;
        if reply.status != StatusCode::OK {
            let text = String::from_utf8_lossy(&reply.body).into_owned();
            return Err(match reply.status.as_u16() {
                401 => Error::Unauthorized { message: text },
                403 => Error::Forbidden { message: text },
                400 => Error::codec(format!("the exchange rejected the request: {text}")),
                _ => Error::unavailable("http", format!("GET /discover: HTTP {}: {text}", reply.status)),
            });
        }
        let found: DiscoverResponse = reply.json()?;
        found
            .agent_ids
            .split(',')
            .map(str::trim)
            .filter(|uid| !uid.is_empty())
            .map(|uid| {
                Uuid::parse_str(uid)
                    .map(|uid| AgentId::from_parts(uid, None))
                    .map_err(|e| Error::codec(format!("invalid agent id {uid:?} from discover: {e}")))
            })
            .collect()
    }

    async fn open_mailbox(&self, id: &EntityId) -> Result<Box<dyn Mailbox>> {
        match self.status(id).await? {
            MailboxStatus::Active => {}
            MailboxStatus::Terminated => return Err(Error::MailboxTerminated { id: id.clone() }),
            MailboxStatus::Missing => return Err(Error::BadEntityId { id: id.clone() }),
        }
        let parked = self.inner.handovers.lock().remove(&id.uid()).filter(|shared| !shared.is_finished());
        let shared = match parked {
            Some(shared) => shared,
            None => {
                let resume = self.inner.positions.lock().remove(&id.uid());
                let shared = HttpMailbox::shared_for(id.clone(), resume);
                self.register_handle(id, &shared);
                shared
            }
        };
        Ok(Box::new(HttpMailbox::new(self.inner.clone(), shared)))
    }

    async fn send(&self, message: Message) -> Result<()> {
        let text = message.to_json();
        let body = serde_json::to_vec(&MessageRequest { message: &text }).expect("requests serialize");
        let reply = self.inner.call(Method::PUT, "/message", body.into(), false).await?;
        if reply.status != StatusCode::OK {
            return Err(reply.error(message.dest()));
        }
        Ok(())
    }

    async fn status(&self, id: &EntityId) -> Result<MailboxStatus> {
        let reply = self.mailbox_call(Method::GET, "/mailbox", id).await?;
        if reply.status != StatusCode::OK {
            return Err(reply.error(id));
        }
        Ok(reply.json::<StatusResponse>()?.status)
    }

    async fn update_heartbeat(&self, id: &EntityId) -> Result<()> {
        let reply = self.mailbox_call(Method::POST, "/mailbox/heartbeat", id).await?;
        if reply.status != StatusCode::OK {
            return Err(reply.error(id));
        }
        Ok(())
    }

    async fn heartbeat(&self, id: &EntityId) -> Result<Option<Duration>> {
        let reply = self.mailbox_call(Method::GET, "/mailbox/heartbeat", id).await?;
        if reply.status != StatusCode::OK {
            return Err(reply.error(id));
        }
        let seconds = reply.json::<HeartbeatResponse>()?.heartbeat;
        seconds
            .map(|s| {
                Duration::try_from_secs_f64(s.max(0.0))
                    .map_err(|e| Error::codec(format!("heartbeat age {s} from the exchange: {e}")))
            })
            .transpose()
    }

    async fn stats(&self, id: &EntityId) -> Result<MailboxStats> {
        // The route answers zeros for unknown ids: check existence first.
        if self.status(id).await? == MailboxStatus::Missing {
            return Err(Error::BadEntityId { id: id.clone() });
        }
        let reply = self.mailbox_call(Method::GET, "/mailbox/stats", id).await?;
        if reply.status != StatusCode::OK {
            return Err(reply.error(id));
        }
        let stats: MailboxStats = reply.json()?;
        // Messages this client read ahead over an event stream but did not hand out yet are
        // still waiting, from the application's point of view.
        let read_ahead: u64 = self.handles(id).iter().map(|h| h.buffered() as u64).sum();
        if read_ahead == 0 {
            return Ok(stats);
        }
        let pending = stats.incoming.saturating_sub(stats.completed);
        Ok(MailboxStats::from_counts(pending, stats.completed, stats.outgoing, stats.queued + read_ahead))
    }
}
