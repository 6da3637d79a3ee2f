//! Waiting receives of the Redis storage on a bounded number of connections.
//!
//! A receive that finds its queue empty registers as a waiter of that queue key. A few worker
//! tasks, each with its own connection, block in one `BLPOP` over the keys that have waiters (a key
//! belongs to one worker while it has waiters; a new key goes to the worker with the fewest).
//! A popped message goes to the oldest waiter of its queue; if no waiter is left to take it, it
//! goes back to the head of the queue. When a key joins a worker that is blocked, the worker is
//! woken by a push to its private wake-up key, which is part of every `BLPOP` it sends. A
//! worker without keys for [`IDLE`] closes its connection and ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::{CLOSED, REQUEUE, store_error};
use crate::server::storage::ApiError;

/// Blocking connections per server unless configured (`[limits] redis_blocking_connections`).
pub(crate) const DEFAULT_BLOCKING_CONNECTIONS: usize = 4;

/// How long one `BLPOP` blocks before the worker looks at its keys again.
const BLOCK_SECONDS: u64 = 10;

/// How long a worker without keys keeps its connection.
const IDLE: Duration = Duration::from_secs(30);

/// How long a worker may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Seconds a wake-up key lives if its worker never takes it (a server that stopped).
const WAKE_TTL_SECONDS: i64 = 60;

/// What a waiter is given: a message, or why its receive ends.
type Answer = Result<Bytes, ApiError>;

/// Hands messages of Redis queues to the receives waiting for them.
pub(super) struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    /// The storage's command connection (wake-ups and putting messages back).
    conn: ConnectionManager,
    /// The TTL (s) of a queue a message is put back into (`mailbox_expiration_d`).
    queue_ttl: i64,
    state: Mutex<State>,
    workers: Vec<WorkerShared>,
}

/// What a worker's task and the receives share, outside the state lock.
struct WorkerShared {
    /// Its private wake-up key.
    wake_key: String,
    /// Signalled when a key joins the worker while it does not block.
    notify: Notify,
}

#[derive(Default)]
struct State {
    /// Waiters per queue key.
    queues: HashMap<String, Queue>,
    workers: Vec<WorkerState>,
    next_waiter: u64,
}

struct Queue {
    worker: usize,
    /// Waiters, oldest first.
    waiters: VecDeque<(u64, oneshot::Sender<Answer>)>,
}

#[derive(Default)]
struct WorkerState {
    /// Queue keys assigned to this worker.
    keys: usize,
    /// Its task is running.
    running: bool,
    /// It is in a `BLPOP` over the keys it had when it sent it.
    blocked: bool,
    /// A wake-up was pushed since that `BLPOP` was sent.
    woken: bool,
}

impl Dispatcher {
    /// A dispatcher with at most `connections` blocking connections (at least one); workers start
    /// with the first waiters.
    pub(super) fn new(client: redis::Client, conn: ConnectionManager, connections: usize, queue_ttl: i64) -> Self {
        let prefix = format!("exchange:dispatch:{}", Uuid::new_v4());
        let connections = connections.max(1);
        let workers = (0..connections)
            .map(|i| WorkerShared { wake_key: format!("{prefix}:{i}"), notify: Notify::new() })
            .collect();
        let state = State { workers: (0..connections).map(|_| WorkerState::default()).collect(), ..State::default() };
        Dispatcher { shared: Arc::new(Shared { client, conn, queue_ttl, state: Mutex::new(state), workers }) }
    }

    /// Waits up to `timeout` for the next message of the list `queue`; `None` when nothing came.
    /// Cancel safe: a message handed to a receive that is gone goes back to the head of the
    /// queue.
    pub(super) async fn wait(&self, queue: &str, timeout: Duration) -> Result<Option<Bytes>, ApiError> {
        let (waiter, wake) = self.register(queue);
        if let Some(worker) = wake {
            let wake_key = &self.shared.workers[worker].wake_key;
            redis::pipe()
                .lpush(wake_key, 1)
                .ignore()
                .expire(wake_key, WAKE_TTL_SECONDS)
                .ignore()
                .query_async::<()>(&mut self.shared.conn.clone())
                .await
                .map_err(store_error)?;
        }
        waiter.answer(timeout).await
    }

    /// Adds a waiter for `queue`; also the worker to wake with a push, if it is blocked without
    /// that key.
    fn register(&self, queue: &str) -> (Waiter, Option<usize>) {
        let (tx, rx) = oneshot::channel();
        let mut guard = self.shared.state.lock();
        let state = &mut *guard;
        let id = state.next_waiter;
        state.next_waiter += 1;
        let mut wake = None;
        if let Some(waiting) = state.queues.get_mut(queue) {
            waiting.waiters.push_back((id, tx));
        } else {
            let (worker, slot) = state
                .workers
                .iter_mut()
                .enumerate()
                .min_by_key(|(_, slot)| slot.keys)
                .expect("a dispatcher has at least one worker");
            slot.keys += 1;
            if !slot.running {
                slot.running = true;
                tokio::spawn(run_worker(self.shared.clone(), worker));
            } else if slot.blocked {
                if !slot.woken {
                    slot.woken = true;
                    wake = Some(worker);
                }
            } else {
                self.shared.workers[worker].notify.notify_one();
            }
            state.queues.insert(queue.to_owned(), Queue { worker, waiters: VecDeque::from([(id, tx)]) });
        }
        drop(guard);
        (Waiter { shared: self.shared.clone(), queue: queue.to_owned(), id, rx: Some(rx) }, wake)
    }
}

/// A registered receive; dropped, it leaves its queue and puts back a message it was handed
/// but did not return.
struct Waiter {
    shared: Arc<Shared>,
    queue: String,
    id: u64,
    rx: Option<oneshot::Receiver<Answer>>,
}

impl Waiter {
    async fn answer(mut self, timeout: Duration) -> Result<Option<Bytes>, ApiError> {
        let Some(rx) = self.rx.as_mut() else { return Ok(None) };
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Ok(None),
            Ok(Ok(answer)) => {
                self.rx = None;
                answer.map(Some)
            }
            Ok(Err(_)) => Err(ApiError::Unavailable("storage failed: the dispatcher stopped".into())),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        self.shared.leave(&self.queue, self.id);
        rx.close();
        let Ok(Ok(message)) = rx.try_recv() else { return };
        let (shared, queue) = (self.shared.clone(), std::mem::take(&mut self.queue));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut conn = shared.conn.clone();
                if let Err(e) = put_back(&mut conn, &queue, &message, shared.queue_ttl).await {
                    tracing::error!(queue, "cannot put a message back: {e}");
                }
            });
        }
    }
}

impl Shared {
    /// Removes waiter `id` of `queue` (if still there), and the queue once it has none.
    fn leave(&self, queue: &str, id: u64) {
        let mut state = self.state.lock();
        let Some(waiting) = state.queues.get_mut(queue) else { return };
        waiting.waiters.retain(|(waiter, _)| *waiter != id);
        if waiting.waiters.is_empty() {
            let worker = waiting.worker;
            state.queues.remove(queue);
            state.workers[worker].keys -= 1;
        }
    }

    /// Fails every waiter of `worker` (its connection failed).
    fn fail(&self, worker: usize, error: &ApiError) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.queues.retain(|_, waiting| {
            if waiting.worker != worker {
                return true;
            }
            for (_, tx) in waiting.waiters.drain(..) {
                let _ = tx.send(Err(error.clone()));
            }
            false
        });
        state.workers[worker].keys = 0;
    }

    /// Gives `message` of `queue` to its oldest waiter still there; the message back if there is
    /// none. A `<CLOSED>` sentinel ends every waiter of the queue and is always given back.
    fn hand_over(&self, queue: &str, message: Bytes) -> Option<Bytes> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let Some(waiting) = state.queues.get_mut(queue) else { return Some(message) };
        let closed = message.as_ref() == CLOSED.as_bytes();
        let mut left = Some(message);
        while let Some((_, tx)) = waiting.waiters.pop_front() {
            if closed {
                let _ = tx.send(Err(ApiError::Terminated));
                continue;
            }
            let Some(message) = left.take() else { break };
            match tx.send(Ok(message)) {
                Ok(()) => break,
                // That receive is gone: the next one gets the message.
                Err(unsent) => left = unsent.ok(),
            }
        }
        if waiting.waiters.is_empty() {
            let worker = waiting.worker;
            state.queues.remove(queue);
            state.workers[worker].keys -= 1;
        }
        if closed { Some(Bytes::from_static(CLOSED.as_bytes())) } else { left }
    }
}

/// Puts `message` back at the head of `queue`: a `<CLOSED>` sentinel always, others only while
/// the mailbox is active (a queue it creates expires after `ttl` seconds).
pub(super) async fn put_back(
    conn: &mut ConnectionManager,
    queue: &str,
    message: &[u8],
    ttl: i64,
) -> Result<(), ApiError> {
    if message == CLOSED.as_bytes() {
        return redis::cmd("LPUSH").arg(queue).arg(message).query_async::<()>(conn).await.map_err(store_error);
    }
    let uid = queue.strip_prefix("queue:").unwrap_or(queue);
    let mut invocation = REQUEUE.prepare_invoke();
    invocation.key(format!("active:{uid}")).key(queue).arg(ttl).arg(message);
    invocation.invoke_async::<i64>(conn).await.map(drop).map_err(store_error)
}

/// One worker: connects when it has keys, blocks over them, hands messages over, and ends after
/// [`IDLE`] without keys.
async fn run_worker(shared: Arc<Shared>, worker: usize) {
    let me = &shared.workers[worker];
    let mut conn: Option<MultiplexedConnection> = None;
    let mut round = 0usize;
    loop {
        let mut keys = loop {
            let notified = me.notify.notified();
            {
                let mut state = shared.state.lock();
                let keys: Vec<String> =
                    state.queues.iter().filter(|(_, q)| q.worker == worker).map(|(key, _)| key.clone()).collect();
                let slot = &mut state.workers[worker];
                if !keys.is_empty() {
                    slot.blocked = true;
                    slot.woken = false;
                    break keys;
                }
                slot.blocked = false;
            }
            if tokio::time::timeout(IDLE, notified).await.is_err() {
                let mut state = shared.state.lock();
                if state.workers[worker].keys == 0 {
                    state.workers[worker].running = false;
                    return;
                }
            }
        };
        // `BLPOP` serves the first key with a message: start each round elsewhere, so that no
        // queue waits behind busier ones.
        round = round.wrapping_add(1);
        let start = round % keys.len();
        keys.rotate_left(start);
        let popped = match pop(&shared.client, &mut conn, &keys, &me.wake_key).await {
            Ok(popped) => popped,
            Err(e) => {
                conn = None;
                shared.state.lock().workers[worker].blocked = false;
                tracing::warn!("redis blocking receive failed: {e}");
                shared.fail(worker, &e);
                continue;
            }
        };
        shared.state.lock().workers[worker].blocked = false;
        let Some((queue, message)) = popped.filter(|(queue, _)| *queue != me.wake_key) else { continue };
        if let Some(message) = shared.hand_over(&queue, message) {
            let mut command = shared.conn.clone();
            if let Err(e) = put_back(&mut command, &queue, &message, shared.queue_ttl).await {
                tracing::error!(queue, "cannot put a message back: {e}");
            }
        }
    }
}

/// One `BLPOP` over `keys` and the wake-up key (any Redis version), connecting first if needed.
async fn pop(
    client: &redis::Client,
    conn: &mut Option<MultiplexedConnection>,
    keys: &[String],
    wake_key: &str,
) -> Result<Option<(String, Bytes)>, ApiError> {
    let conn = match conn {
        Some(conn) => conn,
        None => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(Duration::from_secs(BLOCK_SECONDS * 2)));
            conn.insert(client.get_multiplexed_async_connection_with_config(&config).await.map_err(store_error)?)
        }
    };
    let popped: Option<(String, Vec<u8>)> =
        redis::cmd("BLPOP").arg(keys).arg(wake_key).arg(BLOCK_SECONDS).query_async(conn).await.map_err(store_error)?;
    Ok(popped.map(|(queue, value)| (queue, Bytes::from(value))))
}
