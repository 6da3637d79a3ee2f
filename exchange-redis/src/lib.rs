//! Redis exchange: every client talks to one Redis server directly, with exactly the keys and
//! JSON values of Academy 1.x's Redis transport (`RedisExchangeFactory`), so Rust and Python
//! peers share mailboxes.
//!
//! Each operation is one network round trip: sends, receives, registration, terminate, stats
//! and heartbeats run as Lua scripts (`EVALSHA`) that do atomically what Academy does with
//! several commands. Commands share one multiplexed connection that reconnects by itself;
//! blocking receives (`BLMPOP`, or `BLPOP` before Redis 7) run on connections of their own, so they never delay senders.
//!
//! ```no_run
//! # async fn demo() -> exchange_core::Result<()> {
//! use exchange_core::{Body, Exchange, Message};
//! use exchange_redis::RedisExchange;
//!
//! let exchange = RedisExchange::connect("redis://127.0.0.1:6379").await?;
//! let alice = exchange.register_user(Some("alice")).await?;
//! let bob = exchange.register_user(Some("bob")).await?;
//! let inbox = exchange.open_mailbox(&bob.clone().into()).await?;
//! exchange.send(Message::request(alice, bob, Body::PingRequest)).await?;
//! assert_eq!(inbox.recv(None).await?.body, Body::PingRequest);
//! # Ok(()) }
//! ```

mod keys;
mod mailbox;
mod scripts;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use exchange_core::{
    AgentId, AgentRegistration, EntityId, Error, Exchange, Header, Mailbox, MailboxStats, MailboxStatus, Message,
    MessageKind, Result, UserId, redact_url,
};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value};
use uuid::Uuid;

use crate::keys::Keys;
pub use crate::mailbox::RedisMailbox;
use crate::mailbox::Shared;
use crate::scripts::{MISSING, TERMINATED};

/// Messages at least this long (bytes of JSON) are pushed with a plain `RPUSH` inside a
/// transaction instead of through the send script's arguments.
const LARGE_MESSAGE: usize = 16 * 1024;

/// Idle receive connections kept for reuse.
const MAX_IDLE_RECV_CONNECTIONS: usize = 16;

/// A client of a Redis exchange. Clones share the connections.
#[derive(Clone)]
pub struct RedisExchange {
    inner: Arc<Inner>,
}

/// Options of a [`RedisExchange`], set through [`RedisExchange::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisExchangeBuilder {
    url: String,
    namespace: Option<String>,
    prefetch: usize,
    prefetch_bytes: usize,
    prefetch_max_age: Duration,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
    reconnect_timeout: Duration,
    tls_root_certificate: Option<Vec<u8>>,
}

impl fmt::Debug for RedisExchangeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisExchangeBuilder")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("prefetch", &self.prefetch)
            .field("prefetch_bytes", &self.prefetch_bytes)
            .field("prefetch_max_age", &self.prefetch_max_age)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_timeout", &self.reconnect_timeout)
            .field("tls_root_certificate", &self.tls_root_certificate.is_some())
            .finish()
    }
}

impl RedisExchangeBuilder {
    /// Puts every key under `namespace:` (default: none, Academy's layout, needed to share
    /// mailboxes with Python peers). Clients only see mailboxes of their own namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        self.namespace = (!namespace.is_empty()).then_some(namespace);
        self
    }

    /// Most messages one receive round trip takes ahead into the mailbox handle (default 128;
    /// 1 takes exactly one message per round trip).
    pub fn prefetch(mut self, messages: usize) -> Self {
        self.prefetch = messages.max(1);
        self
    }

    /// Stops taking messages ahead once a batch holds this many bytes (default 1 MiB).
    pub fn prefetch_bytes(mut self, bytes: usize) -> Self {
        self.prefetch_bytes = bytes.max(1);
        self
    }

    /// How long a taken-ahead message may be handed out without asking Redis again whether
    /// the mailbox is still active (default 2 ms; zero asks before every message). Terminations
    /// made through this client are seen at once whatever this is.
    pub fn prefetch_max_age(mut self, age: Duration) -> Self {
        self.prefetch_max_age = age;
        self
    }

    /// Time limit of one connection attempt (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time limit of a non-blocking command (default 30 s; `None` waits forever). Blocking
    /// receives never time out on their own connections.
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long a receive keeps reconnecting to a lost server before it fails (default 60 s).
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// Trusts this CA certificate (PEM) for `rediss://` instead of the system's roots.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Connects (and checks the server answers `PING`).
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL; [`Error::Unavailable`] naming the URL when the
    /// server cannot be reached within the connect timeout.
    pub async fn connect(self) -> Result<RedisExchange> {
        let shown = redact_url(&self.url);
        let client = match &self.tls_root_certificate {
            None => redis::Client::open(self.url.as_str()),
            Some(pem) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            ),
        }
        .map_err(|e| Error::config(format!("invalid Redis URL {shown}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(self.response_timeout)
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let unreachable = |e: &dyn fmt::Display| Error::unavailable("redis", format!("cannot connect to {shown}: {e}"));
        let limit = self.connect_timeout * 3 + Duration::from_secs(1);
        let mut manager = tokio::time::timeout(limit, ConnectionManager::new_with_config(client.clone(), config))
            .await
            .map_err(|_| unreachable(&format!("no answer within {limit:?}")))?
            .map_err(|e| unreachable(&e))?;
        let pong: String = redis::cmd("PING").query_async(&mut manager).await.map_err(|e| unreachable(&e))?;
        if pong != "PONG" {
            return Err(unreachable(&format!("unexpected PING reply {pong:?}")));
        }
        Ok(RedisExchange {
            inner: Arc::new(Inner {
                url: shown,
                keys: Keys::new(self.namespace.as_deref()),
                client,
                manager,
                options: self,
                idle: Mutex::new(Vec::new()),
                open: Mutex::new(HashMap::new()),
                blmpop: AtomicBool::new(true),
            }),
        })
    }
}

pub(crate) struct Inner {
    url: String,
    pub(crate) keys: Keys,
    client: redis::Client,
    pub(crate) manager: ConnectionManager,
    pub(crate) options: RedisExchangeBuilder,
    /// Idle connections for blocking receives.
    idle: Mutex<Vec<RecvConnection>>,
    /// Mailbox handles opened through this client, by uid.
    open: Mutex<HashMap<Uuid, Vec<Weak<Shared>>>>,
    /// The server knows `BLMPOP` (Redis 7); cleared on the first "unknown command".
    pub(crate) blmpop: AtomicBool,
}

/// A connection dedicated to (possibly blocking) receives, with its server-side client id.
pub(crate) struct RecvConnection {
    pub(crate) connection: MultiplexedConnection,
    pub(crate) client_id: i64,
}

impl Inner {
    pub(crate) fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// An idle receive connection, or a new one.
    pub(crate) async fn recv_connection(&self) -> RedisResult<RecvConnection> {
        if let Some(idle) = self.idle.lock().pop() {
            return Ok(idle);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(None);
        let mut connection = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let client_id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut connection).await?;
        Ok(RecvConnection { connection, client_id })
    }

    /// Returns a healthy receive connection for reuse.
    pub(crate) fn release(&self, connection: RecvConnection) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_RECV_CONNECTIONS {
            idle.push(connection);
        }
    }

    /// Forgets idle receive connections (after a connection failure they are likely dead too).
    pub(crate) fn drop_idle(&self) {
        self.idle.lock().clear();
    }

    fn track(&self, shared: &Arc<Shared>) {
        let mut open = self.open.lock();
        open.retain(|_, handles| {
            handles.retain(|h| h.strong_count() > 0);
            !handles.is_empty()
        });
        open.entry(shared.id.uid()).or_default().push(Arc::downgrade(shared));
    }

    fn handles(&self, uid: Uuid) -> Vec<Arc<Shared>> {
        self.open.lock().get(&uid).map(|hs| hs.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default()
    }
}

impl fmt::Debug for RedisExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisExchange")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.options.namespace)
            .finish()
    }
}

/// Maps a Redis client error into the one error type.
pub(crate) fn unavailable(e: RedisError) -> Error {
    Error::unavailable("redis", e)
}

/// Whether the connection (not the command) failed, so a new connection may succeed.
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error()
}

fn int(value: Option<&Value>) -> Result<i64> {
    let value = value.ok_or_else(|| Error::codec("short reply from a Redis script"))?;
    redis::from_redis_value_ref(value).map_err(|e| Error::codec(format!("unexpected Redis reply: {e}")))
}

fn text(value: Option<&Value>) -> Result<String> {
    let value = value.ok_or_else(|| Error::codec("short reply from a Redis script"))?;
    redis::from_redis_value_ref(value).map_err(|e| Error::codec(format!("unexpected Redis reply: {e}")))
}

impl RedisExchange {
    /// Connects with the default options (Academy's unprefixed key layout).
    ///
    /// URL forms: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS, system
    /// roots; see [`RedisExchangeBuilder::tls_root_certificate`]), `redis+unix:///path[?db=N]`.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL; [`Error::Unavailable`] naming the URL when the
    /// server cannot be reached.
    pub async fn connect(url: &str) -> Result<RedisExchange> {
        Self::builder(url).connect().await
    }

    /// Options for a connection to `url` (namespace, prefetch, timeouts).
    pub fn builder(url: &str) -> RedisExchangeBuilder {
        RedisExchangeBuilder {
            url: url.to_owned(),
            namespace: None,
            prefetch: 128,
            prefetch_bytes: 1 << 20,
            prefetch_max_age: Duration::from_millis(2),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Some(Duration::from_secs(30)),
            reconnect_timeout: Duration::from_secs(60),
            tls_root_certificate: None,
        }
    }

    /// The namespace every key is under (`None`: Academy's layout).
    pub fn namespace(&self) -> Option<&str> {
        self.inner.options.namespace.as_deref()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Runs an idempotent operation, once more if the connection failed under it.
    async fn idempotent<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match op(self.inner.manager()).await {
            Err(e) if is_connection_error(&e) => op(self.inner.manager()).await.map_err(unavailable),
            other => other.map_err(unavailable),
        }
    }

    async fn script_reply(&self, invocation: redis::ScriptInvocation<'_>) -> Result<Vec<Value>> {
        self.idempotent(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
    }

    /// Tells this client's open handles of `uid` that the mailbox is terminated.
    fn terminated_locally(&self, uid: Uuid) {
        for handle in self.inner.handles(uid) {
            handle.mark_terminated();
        }
    }
}

#[async_trait]
impl Exchange for RedisExchange {
    async fn register_agent(&self, registration: AgentRegistration) -> Result<AgentId> {
        let id = registration.resolve_id();
        let mut invocation = scripts::REGISTER_AGENT.prepare_invoke();
        invocation
            .key(self.keys().active(id.uid()))
            .key(self.keys().agent(id.uid()))
            .arg(registration.behaviors.join(","));
        self.idempotent(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        })
        .await?;
        Ok(id)
    }

    async fn register_user(&self, name: Option<&str>) -> Result<UserId> {
        let id = UserId::new(name);
        let key = self.keys().active(id.uid());
        self.idempotent(|mut conn| {
            let key = &key;
            async move { redis::cmd("SET").arg(key).arg("ACTIVE").arg("NX").query_async::<Value>(&mut conn).await }
        })
        .await?;
        Ok(id)
    }

    async fn terminate(&self, id: &EntityId) -> Result<()> {
        let uid = id.uid();
        let mut cursor = "0".to_owned();
        let mut headers = Vec::new();
        loop {
            let mut invocation = scripts::TERMINATE.prepare_invoke();
            invocation
                .key(self.keys().active(uid))
                .key(self.keys().queue(uid))
                .key(self.keys().agent(uid))
                .arg(self.keys().request_pattern(uid))
                .arg(&cursor)
                .arg(scripts::SCAN_BUDGET);
            let reply = self.script_reply(invocation).await?;
            if cursor == "0" {
                self.terminated_locally(uid);
            }
            cursor = text(reply.first())?;
            headers.extend(reply.into_iter().skip(1));
            if cursor == "0" {
                break;
            }
        }
        let notices = headers.iter().filter_map(|value| {
            let raw: Vec<u8> = redis::from_redis_value_ref(value).ok()?;
            // A header that does not parse cannot be answered; Academy would fail the same way.
            let header: Header = serde_json::from_slice(&raw).ok()?;
            Message::terminated_notice(&header).ok()
        });
        let results = futures::future::join_all(notices.map(|notice| self.send(notice))).await;
        for result in results {
            match result {
                Ok(()) | Err(Error::BadEntityId { .. } | Error::MailboxTerminated { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn discover(&self, behavior: &str, allow_subclasses: bool) -> Result<Vec<AgentId>> {
        let pattern = self.keys().agent_pattern();
        let mut conn = self.inner.manager();
        let mut cursor: u64 = 0;
        let mut seen = HashSet::new();
        let mut uids = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            for key in batch {
                if let Some(uid) = self.keys().agent_uid(&key) {
                    if seen.insert(uid) {
                        uids.push(uid);
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let agent_keys: Vec<String> = uids.iter().map(|uid| self.keys().agent(*uid)).collect();
        let active_keys: Vec<String> = uids.iter().map(|uid| self.keys().active(*uid)).collect();
        let (names, states): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
            .cmd("MGET")
            .arg(&agent_keys)
            .cmd("MGET")
            .arg(&active_keys)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let found = uids.into_iter().zip(names).zip(states).filter_map(|((uid, names), state)| {
            let names = names?;
            let mut names = names.split(',');
            let matches = if allow_subclasses { names.any(|n| n == behavior) } else { names.next() == Some(behavior) };
            (matches && state.as_deref() == Some("ACTIVE")).then(|| AgentId::from_parts(uid, None))
        });
        Ok(found.collect())
    }

    async fn open_mailbox(&self, id: &EntityId) -> Result<Box<dyn Mailbox>> {
        match self.status(id).await? {
            MailboxStatus::Missing => return Err(Error::BadEntityId { id: id.clone() }),
            MailboxStatus::Terminated => return Err(Error::MailboxTerminated { id: id.clone() }),
            MailboxStatus::Active => {}
        }
        let shared = Arc::new(Shared::new(id.clone(), &self.inner.keys));
        self.inner.track(&shared);
        Ok(Box::new(RedisMailbox::new(self.inner.clone(), shared)))
    }

    async fn send(&self, message: Message) -> Result<()> {
        let header = &message.header;
        let (src, dest, tag) = (header.src.uid(), header.dest.uid(), header.tag);
        let keys = self.keys();
        let is_request = header.kind == MessageKind::Request;
        let header_json = if is_request {
            serde_json::to_string(header).map_err(|e| Error::codec(format!("cannot encode header: {e}")))?
        } else {
            String::new()
        };
        let (track, counter) = if is_request {
            (keys.request(dest, tag), keys.outgoing(src))
        } else {
            (keys.request(src, tag), keys.completions(src))
        };
        let flag = if is_request { "1" } else { "0" };
        let json = message.to_json();
        let (active, queue, sender) = (keys.active(dest), keys.queue(dest), keys.active(src));
        let mut conn = self.inner.manager();
        // One attempt only: after a lost connection nobody knows whether the message was queued.
        let code: i64 = if json.len() < LARGE_MESSAGE {
            let mut invocation = scripts::SEND.prepare_invoke();
            invocation.key(active).key(queue).key(track).key(counter).key(sender);
            invocation.arg(flag).arg(json).arg(header_json);
            invocation.invoke_async(&mut conn).await.map_err(unavailable)?
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("EVAL")
                .arg(scripts::TRACK)
                .arg(4)
                .arg(&active)
                .arg(track)
                .arg(counter)
                .arg(sender)
                .arg(flag)
                .arg(header_json)
                .cmd("RPUSH")
                .arg(&queue)
                .arg(json)
                .ignore()
                .cmd("EVAL")
                .arg(scripts::UNDO_PUSH)
                .arg(2)
                .arg(&active)
                .arg(&queue)
                .ignore();
            let (code,): (i64,) = pipe.query_async(&mut conn).await.map_err(unavailable)?;
            code
        };
        match code {
            MISSING => Err(Error::BadEntityId { id: message.header.dest }),
            TERMINATED => Err(Error::MailboxTerminated { id: message.header.dest }),
            _ => Ok(()),
        }
    }

    async fn status(&self, id: &EntityId) -> Result<MailboxStatus> {
        let key = self.keys().active(id.uid());
        let state: Option<String> = self
            .idempotent(|mut conn| {
                let key = &key;
                async move { redis::cmd("GET").arg(key).query_async(&mut conn).await }
            })
            .await?;
        Ok(match state.as_deref() {
            None => MailboxStatus::Missing,
            Some("ACTIVE") => MailboxStatus::Active,
            Some(_) => MailboxStatus::Terminated,
        })
    }

    async fn update_heartbeat(&self, id: &EntityId) -> Result<()> {
        let mut invocation = scripts::UPDATE_HEARTBEAT.prepare_invoke();
        invocation.key(self.keys().active(id.uid())).key(self.keys().heartbeat(id.uid()));
        self.idempotent(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        })
        .await?;
        Ok(())
    }

    async fn heartbeat(&self, id: &EntityId) -> Result<Option<Duration>> {
        let mut invocation = scripts::HEARTBEAT.prepare_invoke();
        invocation.key(self.keys().active(id.uid())).key(self.keys().heartbeat(id.uid()));
        let reply = self.script_reply(invocation).await?;
        match int(reply.first())? {
            MISSING => return Err(Error::BadEntityId { id: id.clone() }),
            TERMINATED => return Err(Error::MailboxTerminated { id: id.clone() }),
            _ if reply.len() < 4 => return Ok(None),
            _ => {}
        }
        let beat: f64 = text(reply.get(1))?
            .trim()
            .parse()
            .map_err(|e| Error::codec(format!("heartbeat of {id} is not a number: {e}")))?;
        let now = int(reply.get(2))? as f64 + int(reply.get(3))? as f64 / 1e6;
        Ok(Some(Duration::from_secs_f64((now - beat).max(0.0))))
    }

    async fn stats(&self, id: &EntityId) -> Result<MailboxStats> {
        let uid = id.uid();
        let keys = self.keys();
        let mut invocation = scripts::STATS.prepare_invoke();
        invocation
            .key(keys.active(uid))
            .key(keys.queue(uid))
            .key(keys.completions(uid))
            .key(keys.outgoing(uid))
            .arg(keys.request_pattern(uid))
            .arg(scripts::SCAN_BUDGET);
        let reply = self.script_reply(invocation).await?;
        if int(reply.first())? == MISSING {
            return Err(Error::BadEntityId { id: id.clone() });
        }
        let count = |i: usize| int(reply.get(i)).map(|n| n.max(0) as u64);
        let (queued, completed, outgoing) = (count(1)?, count(2)?, count(3)?);
        let mut cursor = text(reply.get(4))?;
        let mut pending = count(5)?;
        while cursor != "0" {
            let mut invocation = scripts::COUNT_KEYS.prepare_invoke();
            invocation.arg(keys.request_pattern(uid)).arg(&cursor).arg(scripts::SCAN_BUDGET);
            let reply = self.script_reply(invocation).await?;
            cursor = text(reply.first())?;
            pending += int(reply.get(1))?.max(0) as u64;
        }
        // Messages taken ahead by this client's handles are still queued for their reader.
        let taken_ahead: u64 = self.inner.handles(uid).iter().map(|h| h.buffered()).sum();
        Ok(MailboxStats::from_counts(pending, completed, outgoing, queued + taken_ahead))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_and_tls_urls_are_config_errors() {
        for url in ["redis://:secret@[::1", "redis://[::1", "http://127.0.0.1:6379"] {
            match RedisExchange::connect(url).await {
                Err(Error::Config { message }) => assert!(!message.contains("secret"), "{message}"),
                other => panic!("{url}: expected a config error, got {other:?}"),
            }
        }
    }
}
