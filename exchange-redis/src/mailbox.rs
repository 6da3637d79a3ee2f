//! The receiving end of a Redis mailbox.
//!
//! A receive with nothing taken ahead is one round trip: a blocking pop of a batch
//! (`BLMPOP … COUNT n` on Redis 7, `BLPOP` before) on a connection of its own, which answers at
//! once when messages wait. Termination shows as the `<CLOSED>` sentinel every terminate leaves
//! in the queue. The rest of a batch waits in the handle and is handed out without further
//! round trips while the batch is younger than `prefetch_max_age`; older messages are handed
//! out only after a script confirms the mailbox is still active (and tops the batch up). A
//! terminate through this client drops them at once, and after a quiet spell the same script
//! checks the mailbox before blocking again. Closing or dropping the handle puts messages
//! taken ahead back at the head of the queue, so each message is delivered once.
//!
//! The pop runs in a task of its own: a receive that is cancelled (or times out) leaves the
//! pop to finish and its messages to the next receive, so no message is lost in flight.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use exchange_core::{EntityId, Error, Mailbox, Message, Result};
use redis::{RedisResult, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::keys::Keys;
use crate::scripts::{self, ACTIVE, CLOSED, MISSING};
use crate::{Inner, RecvConnection, is_connection_error, unavailable};

/// Longest single `BLPOP`: a receive without a timeout re-checks the mailbox this often.
const MAX_BLOCK: Duration = Duration::from_secs(30);
/// Shorter waits are not worth a blocking command.
const MIN_BLOCK: Duration = Duration::from_millis(1);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// State of a handle that the exchange client can reach (terminations made through it).
pub(crate) struct Shared {
    pub(crate) id: EntityId,
    active_key: String,
    queue_key: String,
    terminated: AtomicBool,
    closed: AtomicBool,
    buffered: AtomicUsize,
    /// Client id of the connection blocked in `BLPOP` for this handle (0: none).
    blocked_on: AtomicI64,
    wake: Notify,
}

impl Shared {
    pub(crate) fn new(id: EntityId, keys: &Keys) -> Self {
        Shared {
            active_key: keys.active(id.uid()),
            queue_key: keys.queue(id.uid()),
            id,
            terminated: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            blocked_on: AtomicI64::new(0),
            wake: Notify::new(),
        }
    }

    /// The mailbox was terminated through this client.
    pub(crate) fn mark_terminated(&self) {
        self.terminated.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Messages taken from Redis and not handed out yet.
    pub(crate) fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed) as u64
    }
}

/// What one pop found.
enum Fetched {
    Missing,
    Terminated,
    /// Messages (maybe none) popped from a mailbox that was active at `at`.
    Messages(Vec<Vec<u8>>, Instant),
    /// The blocking pop timed out or was interrupted.
    Empty,
}

#[derive(Default)]
struct State {
    buffer: VecDeque<Vec<u8>>,
    validated_at: Option<Instant>,
    inflight: Option<JoinHandle<RedisResult<Fetched>>>,
    /// Run the status-checking script before blocking.
    check_first: bool,
    /// Mean size of the messages of the last batch, to bound the next batch in bytes.
    mean_size: usize,
    /// Since when every round trip failed for want of a connection (across receives).
    failing_since: Option<Instant>,
}

impl State {
    /// The next round trip: re-validate and top up a stale buffer, else wait for messages.
    fn plan(&self, prefetch: usize, prefetch_bytes: usize, deadline: Option<Instant>) -> Plan {
        // Never hold more than `prefetch` messages: a slow reader only re-validates.
        let room = prefetch.saturating_sub(self.buffer.len());
        if !self.buffer.is_empty() {
            return Plan::Check { count: room };
        }
        // A blocking pop cannot stop at a byte budget: size its batch from the last one.
        let count = (prefetch_bytes / self.mean_size.max(1024)).clamp(1, prefetch);
        let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if self.check_first { Plan::CheckThenBlock { count, wait } } else { Plan::Block { count, wait } }
    }
}

/// Receiving end of a Redis mailbox (see the module docs for how batches are taken).
pub struct RedisMailbox {
    inner: Arc<Inner>,
    shared: Arc<Shared>,
    state: tokio::sync::Mutex<State>,
}

impl fmt::Debug for RedisMailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMailbox").field("id", &self.shared.id).finish()
    }
}

impl RedisMailbox {
    pub(crate) fn new(inner: Arc<Inner>, shared: Arc<Shared>) -> Self {
        RedisMailbox { inner, shared, state: tokio::sync::Mutex::new(State::default()) }
    }

    /// Discards taken-ahead messages (the mailbox is gone).
    fn drop_buffer(&self, state: &mut State) {
        self.shared.buffered.fetch_sub(state.buffer.len(), Ordering::Relaxed);
        state.buffer.clear();
    }

    fn terminated(&self, state: &mut State) -> Error {
        self.shared.terminated.store(true, Ordering::SeqCst);
        self.drop_buffer(state);
        Error::MailboxTerminated { id: self.shared.id.clone() }
    }
}

/// How one receive round trip takes messages.
#[derive(Clone, Copy)]
enum Plan {
    /// The status-checking script only: confirms the mailbox is active and pops up to
    /// `count` (maybe 0) messages without waiting.
    Check { count: usize },
    /// The script, then a blocking pop if it found nothing.
    CheckThenBlock { count: usize, wait: Option<Duration> },
    /// A blocking pop straight away (`BLMPOP … COUNT`, or `BLPOP` before Redis 7). The
    /// `<CLOSED>` sentinel, which every terminate leaves in the queue, reports termination.
    Block { count: usize, wait: Option<Duration> },
}

async fn fetch(inner: Arc<Inner>, shared: Arc<Shared>, plan: Plan) -> RedisResult<Fetched> {
    let mut conn = inner.recv_connection().await?;
    let result = run_plan(&inner, &shared, &mut conn, plan).await;
    if result.is_ok() {
        inner.release(conn);
    }
    result
}

async fn run_plan(inner: &Inner, shared: &Shared, conn: &mut RecvConnection, plan: Plan) -> RedisResult<Fetched> {
    let (count, wait) = match plan {
        Plan::Check { count } => (count, None),
        // Too short to block: take what is there.
        Plan::CheckThenBlock { count, wait } | Plan::Block { count, wait } if wait.is_some_and(|w| w < MIN_BLOCK) => {
            (count, None)
        }
        Plan::CheckThenBlock { count, wait } => (count, Some(wait)),
        Plan::Block { count, wait } => return block(inner, shared, conn, count, wait).await,
    };
    let started = Instant::now();
    let mut invocation = scripts::POP.prepare_invoke();
    invocation.key(&shared.active_key).key(&shared.queue_key).arg(count).arg(inner.options.prefetch_bytes);
    let reply: Vec<Value> = invocation.invoke_async(&mut conn.connection).await?;
    let mut reply = reply.into_iter();
    let code: i64 = reply.next().map(redis::from_redis_value).transpose()?.unwrap_or(MISSING);
    if code != ACTIVE {
        return Ok(if code == MISSING { Fetched::Missing } else { Fetched::Terminated });
    }
    let batch = reply.map(redis::from_redis_value).collect::<Result<Vec<Vec<u8>>, _>>()?;
    match wait {
        Some(wait) if batch.is_empty() => block(inner, shared, conn, count, wait).await,
        _ => Ok(Fetched::Messages(batch, started)),
    }
}

/// Waits up to `wait` (`None` = [`MAX_BLOCK`]) for messages and pops up to `count` of them.
async fn block(
    inner: &Inner,
    shared: &Shared,
    conn: &mut RecvConnection,
    count: usize,
    wait: Option<Duration>,
) -> RedisResult<Fetched> {
    let wait = wait.unwrap_or(MAX_BLOCK).min(MAX_BLOCK);
    if wait < MIN_BLOCK {
        return Ok(Fetched::Empty);
    }
    // `close` reads `blocked_on` after setting `closed`: one of us sees the other.
    shared.blocked_on.store(conn.client_id, Ordering::SeqCst);
    if shared.closed.load(Ordering::SeqCst) {
        shared.blocked_on.store(0, Ordering::SeqCst);
        return Ok(Fetched::Empty);
    }
    let popped = blocking_pop(inner, &shared.queue_key, conn, count.max(1), wait).await;
    shared.blocked_on.store(0, Ordering::SeqCst);
    let popped = popped?;
    if popped.iter().any(|m| m == CLOSED) {
        // Terminated: whatever came with the sentinel was queued before termination (or sent
        // in a race with a non-atomic terminate) and is dropped. The sentinel stays for every
        // other reader, as Academy's layout keeps it.
        redis::cmd("LPUSH").arg(&shared.queue_key).arg(CLOSED).query_async::<i64>(&mut conn.connection).await?;
        return Ok(Fetched::Terminated);
    }
    Ok(if popped.is_empty() { Fetched::Empty } else { Fetched::Messages(popped, Instant::now()) })
}

/// `BLMPOP wait 1 queue LEFT COUNT count`, or `BLPOP` on servers older than Redis 7.
async fn blocking_pop(
    inner: &Inner,
    queue: &str,
    conn: &mut RecvConnection,
    count: usize,
    wait: Duration,
) -> RedisResult<Vec<Vec<u8>>> {
    if inner.blmpop.load(Ordering::Relaxed) {
        let popped: RedisResult<Option<(Value, Vec<Vec<u8>>)>> = redis::cmd("BLMPOP")
            .arg(wait.as_secs_f64())
            .arg(1)
            .arg(queue)
            .arg("LEFT")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn.connection)
            .await;
        match popped {
            Ok(popped) => return Ok(popped.map(|(_, batch)| batch).unwrap_or_default()),
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                    && e.to_string().to_ascii_lowercase().contains("unknown command") =>
            {
                inner.blmpop.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    let popped: Option<(Value, Vec<u8>)> =
        redis::cmd("BLPOP").arg(queue).arg(wait.as_secs_f64()).query_async(&mut conn.connection).await?;
    Ok(popped.map(|(_, message)| vec![message]).unwrap_or_default())
}

#[async_trait]
impl Mailbox for RedisMailbox {
    fn id(&self) -> &EntityId {
        &self.shared.id
    }

    async fn recv(&self, timeout: Option<Duration>) -> Result<Message> {
        let called = Instant::now();
        let deadline = timeout.map(|t| called + t);
        let timed_out = || Error::Timeout { timeout: timeout.unwrap_or_default() };
        let mut state = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.state.lock()).await.map_err(|_| timed_out())?,
            None => self.state.lock().await,
        };
        let options = &self.inner.options;
        let mut backoff = Duration::ZERO;
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed { id: self.shared.id.clone() });
            }
            if self.shared.terminated.load(Ordering::SeqCst) {
                return Err(self.terminated(&mut state));
            }
            // Confirmed active during this call, or recently enough.
            let fresh = state.validated_at.is_some_and(|at| at >= called || at.elapsed() <= options.prefetch_max_age);
            if fresh {
                if let Some(raw) = state.buffer.pop_front() {
                    self.shared.buffered.fetch_sub(1, Ordering::Relaxed);
                    return Message::from_slice(&raw);
                }
            }
            if state.inflight.is_none() {
                let plan = state.plan(options.prefetch, options.prefetch_bytes, deadline);
                state.inflight = Some(tokio::spawn(fetch(self.inner.clone(), self.shared.clone(), plan)));
            }
            let Some(inflight) = state.inflight.as_mut() else { continue };
            let joined = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, inflight).await {
                    Ok(joined) => joined,
                    Err(_) => return Err(timed_out()),
                },
                None => inflight.await,
            };
            state.inflight = None;
            let fetched = joined.map_err(|e| Error::unavailable("redis", format!("receive task failed: {e}")))?;
            match fetched {
                Ok(Fetched::Messages(batch, at)) => {
                    state.failing_since = None;
                    backoff = Duration::ZERO;
                    state.check_first = false;
                    if !batch.is_empty() {
                        state.mean_size = batch.iter().map(Vec::len).sum::<usize>() / batch.len();
                    }
                    self.shared.buffered.fetch_add(batch.len(), Ordering::Relaxed);
                    state.buffer.extend(batch);
                    state.validated_at = Some(at);
                    if state.buffer.is_empty() && deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(timed_out());
                    }
                }
                Ok(Fetched::Empty) => {
                    state.failing_since = None;
                    // After a quiet spell, check the mailbox still exists before blocking again.
                    state.check_first = true;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(timed_out());
                    }
                }
                Ok(Fetched::Terminated) => return Err(self.terminated(&mut state)),
                Ok(Fetched::Missing) => {
                    self.drop_buffer(&mut state);
                    return Err(Error::BadEntityId { id: self.shared.id.clone() });
                }
                Err(e) if is_connection_error(&e) => {
                    self.inner.drop_idle();
                    // A short outage looks like a quiet mailbox (receives time out as asked and
                    // resume after it); one longer than `reconnect_timeout` is reported.
                    let since = *state.failing_since.get_or_insert_with(Instant::now);
                    let now = Instant::now();
                    if now - since >= options.reconnect_timeout {
                        return Err(unavailable(e));
                    }
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(timed_out());
                    }
                    let mut pause = backoff;
                    if let Some(deadline) = deadline {
                        pause = pause.min(deadline - now);
                    }
                    let wake = self.shared.wake.notified();
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = wake => {}
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.shared.wake.notify_waiters();
        unblock(&self.inner, &self.shared).await;
        let mut state = self.state.lock().await;
        let leftover = leftover(&self.inner, &self.shared, std::mem::take(&mut *state)).await;
        give_back(&self.inner, &self.shared, leftover).await
    }
}

impl Drop for RedisMailbox {
    fn drop(&mut self) {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let state = std::mem::take(self.state.get_mut());
        if state.buffer.is_empty() && state.inflight.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (inner, shared) = (self.inner.clone(), self.shared.clone());
        runtime.spawn(async move {
            unblock(&inner, &shared).await;
            let leftover = leftover(&inner, &shared, state).await;
            let _ = give_back(&inner, &shared, leftover).await;
        });
    }
}

/// Wakes a `BLPOP` blocked for this handle (it returns as if timed out).
async fn unblock(inner: &Inner, shared: &Shared) {
    let client_id = shared.blocked_on.load(Ordering::SeqCst);
    if client_id != 0 {
        let _ = redis::cmd("CLIENT").arg("UNBLOCK").arg(client_id).query_async::<Value>(&mut inner.manager()).await;
    }
}

/// Messages of a closed handle that were taken from Redis and not handed out.
async fn leftover(inner: &Inner, shared: &Shared, mut state: State) -> Vec<Vec<u8>> {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    if let Some(mut inflight) = state.inflight.take() {
        match tokio::time::timeout(inner.options.connect_timeout, &mut inflight).await {
            Ok(Ok(Ok(Fetched::Messages(batch, _)))) => messages = batch,
            Ok(_) => {}
            Err(_) => inflight.abort(),
        }
    }
    shared.buffered.fetch_sub(state.buffer.len(), Ordering::Relaxed);
    let mut all: Vec<Vec<u8>> = state.buffer.into();
    all.append(&mut messages);
    all
}

/// Puts messages back at the head of the queue, oldest first, if the mailbox is active.
async fn give_back(inner: &Inner, shared: &Shared, messages: Vec<Vec<u8>>) -> Result<()> {
    if messages.is_empty() || shared.terminated.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut invocation = scripts::UNPOP.prepare_invoke();
    invocation.key(&shared.active_key).key(&shared.queue_key);
    for message in &messages {
        invocation.arg(message.as_slice());
    }
    invocation.invoke_async::<i64>(&mut inner.manager()).await.map_err(unavailable)?;
    Ok(())
}
