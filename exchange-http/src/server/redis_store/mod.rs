//! Redis [`Storage`]: the key layout of Academy's HTTP server (`[backend] kind = "redis"`, spec
//! §4.2), so several servers (ours or Academy's) can share one Redis. Differences from Academy,
//! as recommended: a terminated id stays terminated when re-created (gravestone), terminate
//! notices are sent with server authority, and a `<CLOSED>` sentinel taken by one receiver is
//! put back for the others. Beyond Academy: a message's `src` must be a mailbox the caller may
//! access, each send is one script (a retry of the same message within 2 minutes is not stored
//! again), and every key written expires. Waiting receives share a few connections (see
//! [`dispatcher`]).

mod dispatcher;
mod health;
mod index;
mod scripts;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use exchange_core::{EntityId, Header, MailboxStats, MailboxStatus, Message, MessageKind};
use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

pub(crate) use self::dispatcher::DEFAULT_BLOCKING_CONNECTIONS;
use self::dispatcher::Dispatcher;
use self::scripts::{HEARTBEAT, NOTICES, PUT, REQUEUE};
use super::config::ServerConfig;
use super::storage::{ApiError, Caller, Storage};

const CLOSED: &str = "<CLOSED>";

/// How long a sent message's digest is remembered (`sent:<dest>:<tag>` = its SHA-1), so that
/// a client's retry of a send whose answer it lost is not stored twice (a different message
/// with the same tag, e.g. a request's response, is stored).
const SENT_TTL_S: u64 = 120;

/// What a send reads before its script: the destination's owner, shares and state, the
/// sender's owner and shares, and whether the sender is registered.
type SendChecks = (Option<String>, Vec<String>, Option<String>, Option<String>, Vec<String>, bool);

/// Terminate notices queued per script.
const NOTICE_BATCH: usize = 100;

const ACTIVE: &str = "ACTIVE";
const TERMINATED: &str = "TERMINATED";

/// Mailboxes in Redis, in the layout of Academy's HTTP server.
pub struct RedisStorage {
    conn: ConnectionManager,
    /// Waiting receives, on at most a few connections of their own.
    dispatcher: Dispatcher,
    message_limit: usize,
    mailbox_ttl: i64,
    gravestone_ttl: i64,
    losses: Arc<health::DataLosses>,
    _background: Background,
}

/// Longest wait for a connection to Redis: a request fails with `503` within it while Redis
/// is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Tasks that live as long as the storage (aborted on drop).
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
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
    /// Connects to `url` (`redis://host:port[/db]`) with the `[backend]` settings of `config`:
    /// TTLs in days (Academy's defaults: 7 for queues and requests, 365 for status, owner,
    /// heartbeat and agent keys, and here also for counters and shares), the command timeout,
    /// the reconcile interval. Writes the marker key if absent and starts the marker watcher
    /// and the index reconcile.
    ///
    /// # Errors
    /// [`exchange_core::Error::Unavailable`] if Redis does not answer.
    pub async fn connect(url: &str, config: &ServerConfig) -> exchange_core::Result<Self> {
        let unavailable = |e: RedisError| exchange_core::Error::unavailable("http", format!("redis {url}: {e}"));
        let client = redis::Client::open(url).map_err(|e| exchange_core::Error::config(format!("{url}: {e}")))?;
        let backend = &config.backend;
        // One connection attempt per failure: a request never waits on a retry schedule while
        // Redis is down; the next request (or the marker watcher) reconnects.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Every command on the shared connection (reads, writes and scripts, each bounded in
            // size): long enough to ride out a short Redis stall (a fork, a slow command), short
            // enough to answer `503` while Redis hangs (redis-rs's default is 500 ms).
            .set_response_timeout(Some(Duration::from_secs_f64(backend.command_timeout_s)))
            .set_number_of_retries(0);
        let mut conn = ConnectionManager::new_with_config(client.clone(), manager).await.map_err(unavailable)?;
        let marker = health::claim(&mut conn).await.map_err(unavailable)?;
        let losses = Arc::<health::DataLosses>::default();
        let background = Background(vec![
            tokio::spawn(health::watch(conn.clone(), marker, losses.clone())),
            tokio::spawn(index::reconcile_forever(conn.clone(), Duration::from_secs_f64(backend.reconcile_interval_s))),
        ]);
        Ok(RedisStorage {
            dispatcher: Dispatcher::new(
                client,
                conn.clone(),
                config.limits.redis_blocking_connections,
                days_to_secs(backend.mailbox_expiration_d),
            ),
            conn,
            message_limit: config.message_limit(),
            mailbox_ttl: days_to_secs(backend.mailbox_expiration_d),
            gravestone_ttl: days_to_secs(backend.gravestone_expiration_d),
            losses,
            _background: background,
        })
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
        let allowed = may_access(caller, owner.as_deref(), &shares);
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
        for key in registration_keys(uid) {
            pipe.expire(key, self.gravestone_ttl).ignore();
        }
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

    /// The `uids` that are active and that `caller` may access, in their order: status and
    /// owner by `MGET` in chunks, shares only of the mailboxes the caller does not own.
    async fn accessible_active(&self, caller: &Caller, uids: Vec<Uuid>) -> Result<Vec<Uuid>, ApiError> {
        const CHUNK: usize = 1000;
        if uids.is_empty() {
            return Ok(uids);
        }
        let mut pipe = redis::pipe();
        for chunk in uids.chunks(CHUNK) {
            pipe.cmd("MGET").arg(chunk.iter().map(|uid| format!("active:{uid}")).collect::<Vec<_>>());
            pipe.cmd("MGET").arg(chunk.iter().map(|uid| format!("owner:{uid}")).collect::<Vec<_>>());
        }
        let replies: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await.map_err(store_error)?;
        let (mut states, mut owners) = (Vec::with_capacity(uids.len()), Vec::with_capacity(uids.len()));
        for pair in replies.chunks(2) {
            if let [state, owner] = pair {
                states.extend(state.iter().cloned());
                owners.extend(owner.iter().cloned());
            }
        }
        let me = owner_of(caller);
        // Active ones, and whether their shares decide access.
        let candidates: Vec<(Uuid, bool)> = uids
            .iter()
            .zip(states.iter().zip(&owners))
            .filter(|(_, (state, _))| state.as_deref() == Some(ACTIVE))
            .map(|(uid, (_, owner))| (*uid, owner.as_ref().is_some_and(|owner| *owner != me)))
            .collect();
        let mut pipe = redis::pipe();
        for (uid, _) in candidates.iter().filter(|(_, shared)| *shared) {
            pipe.smembers(format!("share:{uid}"));
        }
        let mut shares: std::vec::IntoIter<Vec<String>> = if candidates.iter().any(|(_, shared)| *shared) {
            pipe.query_async::<Vec<Vec<String>>>(&mut self.conn()).await.map_err(store_error)?.into_iter()
        } else {
            Vec::new().into_iter()
        };
        Ok(candidates
            .into_iter()
            .filter(|(_, shared)| {
                !*shared || shares.next().is_some_and(|groups| groups.iter().any(|g| caller.groups.contains(g)))
            })
            .map(|(uid, _)| uid)
            .collect())
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

    /// Answers every request record left under `request:<uid>:*` with a terminate notice, in
    /// batches; each record is deleted by the script that queues its notice, so an interrupted
    /// run loses nothing and a second run sends only what the first did not.
    async fn answer_pending(&self, uid: Uuid) -> Result<(), ApiError> {
        let keys = self.scan(&format!("request:{uid}:*")).await?;
        for batch in keys.chunks(NOTICE_BATCH) {
            let records: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(batch).query_async(&mut self.conn()).await.map_err(store_error)?;
            let mut invocation = NOTICES.prepare_invoke();
            invocation.arg(self.mailbox_ttl);
            for (key, record) in batch.iter().zip(records) {
                // A record that is not a request to this mailbox is dropped without a notice.
                let notice = record
                    .and_then(|text| serde_json::from_slice::<Header>(&text).ok())
                    .filter(|header| header.kind == MessageKind::Request && header.dest.uid() == uid)
                    .and_then(|header| Message::terminated_notice(&header).ok());
                let requester = notice.as_ref().map_or(uid, |notice| notice.header.dest.uid());
                invocation.key(key).key(format!("active:{requester}")).key(format!("queue:{requester}"));
                invocation.arg(notice.map(|notice| notice.to_json()).unwrap_or_default());
            }
            invocation.invoke_async::<i64>(&mut self.conn()).await.map_err(store_error)?;
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

/// The access rule of §3.6: no owner (a mailbox Academy's transport made), the owner, or a
/// member of a group the mailbox is shared with.
fn may_access(caller: &Caller, owner: Option<&str>, shares: &[String]) -> bool {
    match owner {
        None => true,
        Some(owner) => owner_of(caller) == owner || shares.iter().any(|g| caller.groups.contains(g)),
    }
}

/// The keys that live as long as a mailbox's registration (`gravestone_expiration_d`, refreshed
/// on use), `active:<uid>` first and `heartbeat:<uid>` second: Academy's four, and the counters
/// and shares Academy leaves without expiry.
fn registration_keys(uid: Uuid) -> [String; 7] {
    ["active", "heartbeat", "owner", "agent", "outgoing", "completions", "share"].map(|key| format!("{key}:{uid}"))
}

/// The request record a message writes (a request) or completes (a response), and the
/// sender's counter it raises.
fn tracking_keys(header: &Header) -> (String, String) {
    let (dest, src, tag) = (header.dest.uid(), header.src.uid(), header.tag);
    match header.kind {
        MessageKind::Request => (format!("request:{dest}:{tag}"), format!("outgoing:{src}")),
        MessageKind::Response => (format!("request:{src}:{tag}"), format!("completions:{src}")),
    }
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
            .arg("EX")
            .arg(self.gravestone_ttl)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if created.is_none() {
            // Exists (active or a gravestone): nothing changes.
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.set(format!("owner:{uid}"), owner_of(caller)).ignore();
        let is_agent = agent.is_some() && id.as_agent().is_some();
        if let (Some(names), true) = (agent, is_agent) {
            pipe.set(format!("agent:{uid}"), names.join(",")).ignore();
        }
        self.refresh_gravestone_ttls(&mut pipe, uid);
        pipe.query_async::<()>(&mut self.conn()).await.map_err(store_error)?;
        if is_agent {
            // After the `agent:` key: an indexed agent always has its names. Should this fail,
            // the reconcile pass indexes the agent.
            index::add(&mut self.conn(), uid).await.map_err(store_error)?;
        }
        Ok(())
    }

    async fn terminate(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        let uid = id.uid();
        self.require_access(caller, uid).await?;
        match self.state(uid).await?.as_deref() {
            None => return Ok(()),
            Some(ACTIVE) => {
                let queue = format!("queue:{uid}");
                let mut pipe = redis::pipe();
                index::remove(&mut pipe, uid);
                pipe.atomic()
                    .set_ex(format!("active:{uid}"), TERMINATED, self.gravestone_ttl as u64)
                    .ignore()
                    .del(&queue)
                    .ignore()
                    .rpush(&queue, CLOSED)
                    .ignore()
                    .expire(&queue, self.gravestone_ttl)
                    .ignore()
                    .del(format!("agent:{uid}"))
                    .ignore()
                    .query_async::<()>(&mut self.conn())
                    .await
                    .map_err(store_error)?;
            }
            // Terminated already: answer what an interrupted terminate left.
            Some(_) => {}
        }
        self.answer_pending(uid).await
    }

    async fn status(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStatus, ApiError> {
        let uid = id.uid();
        let Some(state) = self.state(uid).await? else { return Ok(MailboxStatus::Missing) };
        self.require_access(caller, uid).await?;
        Ok(if state == TERMINATED { MailboxStatus::Terminated } else { MailboxStatus::Active })
    }

    async fn put(&self, caller: &Caller, header: &Header, message: Bytes) -> Result<(), ApiError> {
        let (dest, src) = (header.dest.uid(), header.src.uid());
        let (dest_owner, dest_shares, dest_state, src_owner, src_shares, src_known): SendChecks = redis::pipe()
            .get(format!("owner:{dest}"))
            .smembers(format!("share:{dest}"))
            .get(format!("active:{dest}"))
            .get(format!("owner:{src}"))
            .smembers(format!("share:{src}"))
            .exists(format!("active:{src}"))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if !may_access(caller, dest_owner.as_deref(), &dest_shares) {
            return Err(ApiError::forbidden());
        }
        if message.len() > self.message_limit {
            return Err(ApiError::TooLarge { size: message.len(), limit: self.message_limit });
        }
        if dest_state.is_none() {
            return Err(ApiError::UnknownMailbox);
        }
        if !src_known || !may_access(caller, src_owner.as_deref(), &src_shares) {
            return Err(ApiError::forbidden_src());
        }
        let (kind, header_json) = match header.kind {
            MessageKind::Request => {
                ("request", serde_json::to_string(header).map_err(|e| ApiError::Unavailable(e.to_string()))?)
            }
            MessageKind::Response => ("response", String::new()),
        };
        let (record, counter) = tracking_keys(header);
        let outcome: String = PUT
            .key(format!("active:{dest}"))
            .key(format!("queue:{dest}"))
            .key(format!("sent:{dest}:{}", header.tag))
            .key(record)
            .key(counter)
            .arg(message.as_ref())
            .arg(kind)
            .arg(header_json)
            .arg(self.mailbox_ttl)
            .arg(self.gravestone_ttl)
            .arg(sha1_smol::Sha1::from(&message).digest().to_string())
            .arg(SENT_TTL_S)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        match outcome.as_str() {
            "stored" | "duplicate" => Ok(()),
            "unknown" => Err(ApiError::UnknownMailbox),
            "terminated" => Err(ApiError::Terminated),
            other => Err(ApiError::Unavailable(format!("storage failed: the send script answered {other:?}"))),
        }
    }

    async fn requeue(&self, id: &EntityId, messages: Vec<Bytes>) -> Result<(), ApiError> {
        if messages.is_empty() {
            return Ok(());
        }
        let uid = id.uid();
        let mut invocation = REQUEUE.prepare_invoke();
        invocation.key(format!("active:{uid}")).key(format!("queue:{uid}")).arg(self.mailbox_ttl);
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
                dispatcher::put_back(&mut self.conn(), &queue, &value, self.mailbox_ttl).await?;
                Err(ApiError::Terminated)
            }
            Some(value) => Ok(Some(Bytes::from(value))),
            None if timeout.is_zero() => Ok(None),
            None => self.dispatcher.wait(&queue, timeout).await,
        }
    }

    async fn discover(&self, caller: &Caller, agent: &str, allow_subclasses: bool) -> Result<Vec<Uuid>, ApiError> {
        let mut conn = self.conn();
        let matching: Vec<Uuid> = index::agents(&mut conn)
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|(_, names)| {
                let mut names = names.split(',');
                if allow_subclasses { names.any(|n| n == agent) } else { names.next() == Some(agent) }
            })
            .map(|(uid, _)| uid)
            .collect();
        self.accessible_active(caller, matching).await
    }

    fn data_losses(&self) -> u64 {
        self.losses.get()
    }

    async fn set_heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        let uid = id.uid();
        self.require_access(caller, uid).await?;
        // An unknown id is a 200 that stores nothing (Academy answers 200 too).
        let mut invocation = HEARTBEAT.prepare_invoke();
        for key in registration_keys(uid) {
            invocation.key(key);
        }
        invocation.arg(self.gravestone_ttl).invoke_async::<i64>(&mut self.conn()).await.map_err(store_error)?;
        Ok(())
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
        let key = format!("share:{}", id.uid());
        redis::pipe()
            .atomic()
            .sadd(&key, group)
            .ignore()
            .expire(&key, self.gravestone_ttl)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(store_error)
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
