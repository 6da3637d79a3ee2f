//! Redis [`Storage`]: the key layout of Academy's HTTP server (`[backend] kind = "redis"`, spec
//! §4.2), so several servers (ours or Academy's) can share one Redis. Differences from Academy,
//! as recommended: a terminated id stays terminated when re-created (gravestone), terminate
//! notices are sent with server authority, and a `<CLOSED>` sentinel taken by one receiver is
//! put back for the others. Waiting receives share a few connections (see [`dispatcher`]).

mod dispatcher;

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use exchange_core::{EntityId, Header, MailboxStats, MailboxStatus, Message, MessageKind};
use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

pub(crate) use self::dispatcher::DEFAULT_BLOCKING_CONNECTIONS;
use self::dispatcher::Dispatcher;
use super::storage::{ApiError, Caller, Storage};

const CLOSED: &str = "<CLOSED>";

/// Puts messages back at the head of an active queue, oldest first. KEYS: `active:`, `queue:`;
/// ARGV: the messages in delivery order.
static REQUEUE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= 'ACTIVE' then return 0 end
for i = #ARGV, 1, -1 do redis.call('LPUSH', KEYS[2], ARGV[i]) end
return #ARGV
",
    )
});
const ACTIVE: &str = "ACTIVE";
const TERMINATED: &str = "TERMINATED";

/// Mailboxes in Redis, in the layout of Academy's HTTP server.
pub struct RedisStorage {
    client: redis::Client,
    conn: ConnectionManager,
    /// Waiting receives, on at most a few connections of their own.
    dispatcher: Dispatcher,
    message_limit: usize,
    mailbox_ttl: i64,
    gravestone_ttl: i64,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage").field("message_limit", &self.message_limit).finish_non_exhaustive()
    }
}

fn store_error(e: RedisError) -> ApiError {
    ApiError::Unavailable(format!("storage failed: {e}"))
}

fn days_to_secs(days: f64) -> i64 {
    ((days * 86_400.0).round() as i64).max(1)
}

impl RedisStorage {
    /// Connects to `url` (`redis://host:port[/db]`). TTLs are in days (Academy's defaults: 7 for
    /// queues and requests, 365 for status, owner, heartbeat and agent keys).
    ///
    /// # Errors
    /// [`exchange_core::Error::Unavailable`] if Redis does not answer.
    pub async fn connect(
        url: &str,
        message_limit: usize,
        mailbox_expiration_d: f64,
        gravestone_expiration_d: f64,
    ) -> exchange_core::Result<Self> {
        let unavailable = |e: RedisError| exchange_core::Error::unavailable("http", format!("redis {url}: {e}"));
        let client = redis::Client::open(url).map_err(|e| exchange_core::Error::config(format!("{url}: {e}")))?;
        let config = ConnectionManagerConfig::new().set_connection_timeout(Some(Duration::from_secs(5)));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(unavailable)?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(unavailable)?;
        Ok(RedisStorage {
            dispatcher: Dispatcher::new(client.clone(), conn.clone(), DEFAULT_BLOCKING_CONNECTIONS),
            client,
            conn,
            message_limit,
            mailbox_ttl: days_to_secs(mailbox_expiration_d),
            gravestone_ttl: days_to_secs(gravestone_expiration_d),
        })
    }

    /// Waiting receives share at most `connections` Redis connections (at least one; default
    /// [`DEFAULT_BLOCKING_CONNECTIONS`]), besides the command connection.
    #[must_use]
    pub fn with_blocking_connections(mut self, connections: usize) -> Self {
        self.dispatcher = Dispatcher::new(self.client.clone(), self.conn.clone(), connections);
        self
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Owner (`<client_id>_`) and shares of a mailbox, and whether `caller` has access.
    async fn access(&self, caller: &Caller, uid: Uuid) -> Result<(Option<String>, bool), ApiError> {
        let (owner, shares): (Option<String>, Vec<String>) = redis::pipe()
            .get(format!("owner:{uid}"))
            .smembers(format!("share:{uid}"))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let allowed = match &owner {
            None => true,
            Some(owner) => owner_of(caller) == *owner || shares.iter().any(|g| caller.groups.contains(g)),
        };
        Ok((owner, allowed))
    }

    async fn require_access(&self, caller: &Caller, uid: Uuid) -> Result<(), ApiError> {
        match self.access(caller, uid).await? {
            (_, true) => Ok(()),
            (_, false) => Err(ApiError::forbidden()),
        }
    }

    async fn state(&self, uid: Uuid) -> Result<Option<String>, ApiError> {
        redis::cmd("GET").arg(format!("active:{uid}")).query_async(&mut self.conn()).await.map_err(store_error)
    }

    /// 404 unknown, 419 terminated.
    async fn require_active(&self, uid: Uuid) -> Result<(), ApiError> {
        match self.state(uid).await?.as_deref() {
            None => Err(ApiError::UnknownMailbox),
            Some(TERMINATED) => Err(ApiError::Terminated),
            Some(_) => Ok(()),
        }
    }

    fn refresh_gravestone_ttls(&self, pipe: &mut redis::Pipeline, uid: Uuid) {
        for key in ["active", "owner", "heartbeat", "agent"] {
            pipe.expire(format!("{key}:{uid}"), self.gravestone_ttl).ignore();
        }
    }

    /// Queues a message with request tracking; no access check.
    async fn deliver(&self, header: &Header, message: Bytes) -> Result<(), ApiError> {
        let dest = header.dest.uid();
        self.require_active(dest).await?;
        let mut conn = self.conn();
        match header.kind {
            MessageKind::Request => {
                let header_json = serde_json::to_string(header).map_err(|e| ApiError::Unavailable(e.to_string()))?;
                redis::pipe()
                    .set_ex(format!("request:{dest}:{}", header.tag), header_json, self.mailbox_ttl as u64)
                    .ignore()
                    .incr(format!("outgoing:{}", header.src.uid()), 1)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(store_error)?;
            }
            MessageKind::Response => {
                let src = header.src.uid();
                let found: Option<String> = redis::cmd("GETDEL")
                    .arg(format!("request:{src}:{}", header.tag))
                    .query_async(&mut conn)
                    .await
                    .map_err(store_error)?;
                if found.is_some() {
                    let _: i64 = redis::cmd("INCRBY")
                        .arg(format!("completions:{src}"))
                        .arg(1)
                        .query_async(&mut conn)
                        .await
                        .map_err(store_error)?;
                }
            }
        }
        let queue = format!("queue:{dest}");
        redis::pipe()
            .rpush(&queue, message.as_ref())
            .ignore()
            .cmd("EXPIRE")
            .arg(&queue)
            .arg(self.mailbox_ttl)
            .arg("NX")
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(store_error)
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>, ApiError> {
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(store_error)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Share routes: existence and termination before ownership.
    async fn require_owner(&self, caller: &Caller, uid: Uuid) -> Result<(), ApiError> {
        self.require_active(uid).await?;
        let (owner, _) = self.access(caller, uid).await?;
        if owner.as_deref() != Some(owner_of(caller).as_str()) {
            return Err(ApiError::forbidden());
        }
        Ok(())
    }

    async fn redis_now(&self) -> Result<f64, ApiError> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut self.conn()).await.map_err(store_error)?;
        Ok(secs as f64 + micros as f64 / 1e6)
    }
}

/// Academy's owner value: the client id followed by an underscore.
fn owner_of(caller: &Caller) -> String {
    format!("{}_", caller.client_id)
}

#[async_trait]
impl Storage for RedisStorage {
    async fn create(&self, caller: &Caller, id: &EntityId, agent: Option<Vec<String>>) -> Result<(), ApiError> {
        let uid = id.uid();
        self.require_access(caller, uid).await?;
        let created: Option<String> = redis::cmd("SET")
            .arg(format!("active:{uid}"))
            .arg(ACTIVE)
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if created.is_none() {
            // Exists (active or a gravestone): nothing changes.
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.set(format!("owner:{uid}"), owner_of(caller)).ignore();
        if let (Some(names), Some(_)) = (agent, id.as_agent()) {
            pipe.set(format!("agent:{uid}"), names.join(",")).ignore();
        }
        self.refresh_gravestone_ttls(&mut pipe, uid);
        pipe.query_async::<()>(&mut self.conn()).await.map_err(store_error)
    }

    async fn terminate(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        let uid = id.uid();
        self.require_access(caller, uid).await?;
        if self.state(uid).await?.as_deref() != Some(ACTIVE) {
            return Ok(());
        }
        let queue = format!("queue:{uid}");
        redis::pipe()
            .set(format!("active:{uid}"), TERMINATED)
            .ignore()
            .expire(format!("active:{uid}"), self.gravestone_ttl)
            .ignore()
            .del(&queue)
            .ignore()
            .rpush(&queue, CLOSED)
            .ignore()
            .del(format!("agent:{uid}"))
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(store_error)?;
        for key in self.scan(&format!("request:{uid}:*")).await? {
            let stored: Option<String> =
                redis::cmd("GETDEL").arg(&key).query_async(&mut self.conn()).await.map_err(store_error)?;
            let Some(header) = stored.and_then(|text| serde_json::from_str::<Header>(&text).ok()) else { continue };
            let Ok(notice) = Message::terminated_notice(&header) else { continue };
            // Requesters that are unknown or terminated themselves are skipped.
            let _ = self.deliver(&notice.header, Bytes::from(notice.to_json())).await;
        }
        Ok(())
    }

    async fn status(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStatus, ApiError> {
        let uid = id.uid();
        let Some(state) = self.state(uid).await? else { return Ok(MailboxStatus::Missing) };
        self.require_access(caller, uid).await?;
        Ok(if state == TERMINATED { MailboxStatus::Terminated } else { MailboxStatus::Active })
    }

    async fn put(&self, caller: &Caller, header: &Header, message: Bytes) -> Result<(), ApiError> {
        self.require_access(caller, header.dest.uid()).await?;
        if message.len() > self.message_limit {
            return Err(ApiError::TooLarge { size: message.len(), limit: self.message_limit });
        }
        self.deliver(header, message).await
    }

    async fn requeue(&self, id: &EntityId, messages: Vec<Bytes>) -> Result<(), ApiError> {
        if messages.is_empty() {
            return Ok(());
        }
        let uid = id.uid();
        let mut invocation = REQUEUE.prepare_invoke();
        invocation.key(format!("active:{uid}")).key(format!("queue:{uid}"));
        for message in &messages {
            invocation.arg(message.as_ref());
        }
        invocation.invoke_async::<i64>(&mut self.conn()).await.map_err(store_error)?;
        Ok(())
    }

    async fn check_receive(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        self.require_access(caller, id.uid()).await?;
        self.require_active(id.uid()).await
    }

    async fn recv(&self, caller: &Caller, id: &EntityId, timeout: Duration) -> Result<Option<Bytes>, ApiError> {
        let uid = id.uid();
        self.check_receive(caller, id).await?;
        let queue = format!("queue:{uid}");
        let mut pipe = redis::pipe();
        self.refresh_gravestone_ttls(&mut pipe, uid);
        pipe.expire(&queue, self.mailbox_ttl).ignore();
        pipe.cmd("LPOP").arg(&queue);
        let (first,): (Option<Vec<u8>>,) = pipe.query_async(&mut self.conn()).await.map_err(store_error)?;
        match first {
            Some(value) if value == CLOSED.as_bytes() => {
                // Put the sentinel back so every other receiver sees it too.
                dispatcher::put_back(&mut self.conn(), &queue, &value).await?;
                Err(ApiError::Terminated)
            }
            Some(value) => Ok(Some(Bytes::from(value))),
            None if timeout.is_zero() => Ok(None),
            None => self.dispatcher.wait(&queue, timeout).await,
        }
    }

    async fn discover(&self, caller: &Caller, agent: &str, allow_subclasses: bool) -> Result<Vec<Uuid>, ApiError> {
        let mut found = Vec::new();
        for key in self.scan("agent:*").await? {
            let Some(uid) = key.strip_prefix("agent:").and_then(|u| Uuid::parse_str(u).ok()) else { continue };
            let names: Option<String> =
                redis::cmd("GET").arg(&key).query_async(&mut self.conn()).await.map_err(store_error)?;
            let Some(names) = names else { continue };
            let mut names = names.split(',');
            let matches = if allow_subclasses { names.any(|n| n == agent) } else { names.next() == Some(agent) };
            if matches && self.access(caller, uid).await?.1 && self.state(uid).await?.as_deref() == Some(ACTIVE) {
                found.push(uid);
            }
        }
        Ok(found)
    }

    async fn set_heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        let uid = id.uid();
        self.require_access(caller, uid).await?;
        let now = self.redis_now().await?;
        let mut pipe = redis::pipe();
        pipe.set(format!("heartbeat:{uid}"), format!("{now:.6}")).ignore();
        self.refresh_gravestone_ttls(&mut pipe, uid);
        pipe.query_async::<()>(&mut self.conn()).await.map_err(store_error)
    }

    async fn heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<Option<f64>, ApiError> {
        let uid = id.uid();
        self.check_receive(caller, id).await?;
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("heartbeat:{uid}"))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let Some(at) = value.and_then(|v| v.parse::<f64>().ok()) else { return Ok(None) };
        Ok(Some((self.redis_now().await? - at).max(0.0)))
    }

    async fn stats(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStats, ApiError> {
        let uid = id.uid();
        self.require_access(caller, uid).await?;
        let pending = self.scan(&format!("request:{uid}:*")).await?.len() as u64;
        let (queued, completed, outgoing): (u64, Option<u64>, Option<u64>) = redis::pipe()
            .llen(format!("queue:{uid}"))
            .get(format!("completions:{uid}"))
            .get(format!("outgoing:{uid}"))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(MailboxStats::from_counts(pending, completed.unwrap_or(0), outgoing.unwrap_or(0), queued))
    }

    async fn share(&self, caller: &Caller, id: &EntityId, group: &str) -> Result<(), ApiError> {
        self.require_owner(caller, id.uid()).await?;
        if !caller.groups.contains(group) {
            return Err(ApiError::forbidden());
        }
        let _: i64 = redis::cmd("SADD")
            .arg(format!("share:{}", id.uid()))
            .arg(group)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn shares(&self, caller: &Caller, id: &EntityId) -> Result<Vec<String>, ApiError> {
        self.require_owner(caller, id.uid()).await?;
        let groups: BTreeSet<String> = redis::cmd("SMEMBERS")
            .arg(format!("share:{}", id.uid()))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(groups.into_iter().collect())
    }

    async fn unshare(&self, caller: &Caller, id: &EntityId, group: &str) -> Result<(), ApiError> {
        self.require_owner(caller, id.uid()).await?;
        let _: i64 = redis::cmd("SREM")
            .arg(format!("share:{}", id.uid()))
            .arg(group)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
