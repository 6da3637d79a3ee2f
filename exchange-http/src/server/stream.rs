//! Event streams (`GET /mailbox/listen`), with the acknowledged delivery our clients ask for.
//!
//! Every stream takes a message out of the store only when hyper asks for the next chunk, which
//! it does once the previous ones left its small per-connection buffer: a client that stops
//! reading stops taking messages (with `TCP_NOTSENT_LOWAT`, see `serve.rs`). What it already
//! took is lost if it never reads it: at-most-once, as with Academy's server (its clients never
//! acknowledge).
//!
//! A client that sends `exchange-ack: 1` gets acknowledged delivery instead (at-least-once):
//! events carry ids, the server keeps a window of sent, unacknowledged messages and sends no more
//! while it is full, `POST /mailbox/ack` frees it, and when the stream ends (timeout, terminate,
//! shutdown, the client gone, or replaced through `exchange-resume`) the unacknowledged messages
//! go back to the head of the queue. The client drops the duplicates this can cause by tag.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use exchange_core::EntityId;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::storage::{ApiError, Caller, Storage};

/// Keep-alive comment interval on event streams.
const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Unacknowledged messages an acknowledged stream may have sent.
pub(crate) const WINDOW_MESSAGES: usize = 256;

/// Unacknowledged bytes an acknowledged stream may have sent (a larger message still goes
/// alone into an empty window).
pub(crate) const WINDOW_BYTES: usize = 1 << 20;

/// Acknowledged streams that are open, by stream id.
#[derive(Default)]
pub(crate) struct Streams {
    open: Mutex<HashMap<Uuid, Arc<Window>>>,
}

/// The sent, unacknowledged messages of one acknowledged stream.
struct Window {
    mailbox: EntityId,
    client_id: String,
    state: Mutex<WindowState>,
    /// An acknowledgement freed room.
    acked: Notify,
    /// A newer stream took this one over.
    taken_over: Notify,
}

#[derive(Default)]
struct WindowState {
    next_id: u64,
    sent: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Replaced by a newer stream of the same client: end without sending more.
    taken_over: bool,
}

impl Window {
    fn is_full(&self) -> bool {
        let state = self.state.lock();
        !state.sent.is_empty() && (state.sent.len() >= WINDOW_MESSAGES || state.bytes >= WINDOW_BYTES)
    }

    fn push(&self, message: Bytes) -> u64 {
        let mut state = self.state.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.bytes += message.len();
        state.sent.push_back((id, message));
        id
    }

    fn ack(&self, through: u64) {
        let mut state = self.state.lock();
        while state.sent.front().is_some_and(|(id, _)| *id <= through) {
            if let Some((_, message)) = state.sent.pop_front() {
                state.bytes -= message.len();
            }
        }
        drop(state);
        self.acked.notify_waiters();
    }

    /// Takes every unacknowledged message out (each is taken once, by whoever comes first).
    fn take(&self) -> Vec<Bytes> {
        let mut state = self.state.lock();
        state.bytes = 0;
        std::mem::take(&mut state.sent).into_iter().map(|(_, message)| message).collect()
    }
}

impl Streams {
    /// Records an acknowledgement from `caller`; 404 when the stream is not open (any more).
    pub(crate) fn ack(&self, caller: &Caller, mailbox: &EntityId, stream: Uuid, through: u64) -> Result<(), ApiError> {
        let window = self.open.lock().get(&stream).cloned();
        match window {
            Some(window) if window.mailbox == *mailbox && window.client_id == caller.client_id => {
                window.ack(through);
                Ok(())
            }
            Some(_) => Err(ApiError::forbidden()),
            None => Err(ApiError::BadRequest(format!("Unknown or ended stream {stream}"))),
        }
    }

    /// Ends the stream `previous` of the same client and mailbox (after acknowledging through
    /// `through`) and puts its unacknowledged messages back at the head of the queue.
    pub(crate) async fn take_over(
        &self,
        storage: &dyn Storage,
        caller: &Caller,
        mailbox: &EntityId,
        previous: Uuid,
        through: u64,
    ) -> Result<(), ApiError> {
        let window = {
            let mut open = self.open.lock();
            match open.get(&previous) {
                Some(window) if window.mailbox == *mailbox && window.client_id == caller.client_id => {
                    open.remove(&previous)
                }
                _ => None,
            }
        };
        let Some(window) = window else { return Ok(()) };
        window.ack(through);
        window.state.lock().taken_over = true;
        window.taken_over.notify_waiters();
        storage.requeue(mailbox, window.take()).await
    }

    fn open(&self, mailbox: &EntityId, caller: &Caller) -> (Uuid, Arc<Window>) {
        let id = Uuid::new_v4();
        let window = Arc::new(Window {
            mailbox: mailbox.clone(),
            client_id: caller.client_id.clone(),
            state: Mutex::default(),
            acked: Notify::new(),
            taken_over: Notify::new(),
        });
        self.open.lock().insert(id, window.clone());
        (id, window)
    }

    fn close(&self, id: Uuid) {
        self.open.lock().remove(&id);
    }
}

/// One event stream: [`Listen::next`] yields its chunks.
pub(crate) struct Listen {
    storage: Arc<dyn Storage>,
    caller: Caller,
    id: EntityId,
    timeout: Duration,
    /// When the wait for the next message ends the stream.
    deadline: Instant,
    next_ping: Instant,
    shutdown: watch::Receiver<bool>,
    acked: Option<Acked>,
}

/// What an acknowledged stream adds.
struct Acked {
    streams: Arc<Streams>,
    stream: Uuid,
    window: Arc<Window>,
}

enum Step {
    Message(Bytes),
    /// Nothing arrived before the wait ended (or the window freed room): look again.
    Wait,
    End,
}

impl Listen {
    /// A stream of `id`'s messages for `caller`, each waited for at most `timeout`; with
    /// `streams`, an acknowledged one (its id is [`Listen::stream_id`]).
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        caller: Caller,
        id: EntityId,
        timeout: Duration,
        shutdown: watch::Receiver<bool>,
        streams: Option<Arc<Streams>>,
    ) -> Self {
        let acked = streams.map(|streams| {
            let (stream, window) = streams.open(&id, &caller);
            Acked { streams, stream, window }
        });
        let now = Instant::now();
        Listen {
            storage,
            caller,
            id,
            timeout,
            deadline: now + timeout,
            next_ping: now + PING_INTERVAL,
            shutdown,
            acked,
        }
    }

    /// The id of an acknowledged stream.
    pub(crate) fn stream_id(&self) -> Option<Uuid> {
        self.acked.as_ref().map(|acked| acked.stream)
    }

    /// The next chunk: a message, a keep-alive comment, or the end. The store's receive is
    /// never cancelled for a ping (it waits at most until the next ping is due); only shutdown
    /// and a takeover cancel it.
    pub(crate) async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            let now = Instant::now();
            if now >= self.next_ping {
                self.next_ping += PING_INTERVAL;
                return Some((Ok(Bytes::from_static(b": ping\r\n\r\n")), self));
            }
            if now >= self.deadline {
                return self.end().await;
            }
            let wait = self.deadline.min(self.next_ping) - now;
            let step = match &self.acked {
                Some(acked) => {
                    let window = &acked.window;
                    let (room, taken_over) = (window.acked.notified(), window.taken_over.notified());
                    if window.state.lock().taken_over {
                        Step::End
                    } else if window.is_full() {
                        tokio::select! {
                            biased;
                            _ = self.shutdown.wait_for(|stopping| *stopping) => Step::End,
                            () = taken_over => Step::End,
                            () = room => Step::Wait,
                            () = tokio::time::sleep(wait) => Step::Wait,
                        }
                    } else {
                        receive(&self.storage, &self.caller, &self.id, wait, &mut self.shutdown, Some(taken_over)).await
                    }
                }
                None => receive(&self.storage, &self.caller, &self.id, wait, &mut self.shutdown, None).await,
            };
            match step {
                Step::Message(message) => {
                    self.deadline = Instant::now() + self.timeout;
                    let id = self.acked.as_ref().map(|acked| acked.window.push(message.clone()));
                    return Some((Ok(event(id, &message)), self));
                }
                Step::Wait => {}
                Step::End => return self.end().await,
            }
        }
    }

    /// Ends the stream: unacknowledged messages go back to the head of the queue first, so a
    /// client that reconnects when it sees the end finds them there.
    async fn end(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if let Some(acked) = self.acked.take() {
            acked.streams.close(acked.stream);
            let unacked = acked.window.take();
            if !unacked.is_empty() {
                let _ = self.storage.requeue(&self.id, unacked).await;
            }
        }
        None
    }
}

impl Drop for Listen {
    /// A stream dropped before its end (the client went away): its unacknowledged messages
    /// go back to the queue from a task of their own.
    fn drop(&mut self) {
        let Some(acked) = self.acked.take() else { return };
        acked.streams.close(acked.stream);
        let unacked = acked.window.take();
        if unacked.is_empty() {
            return;
        }
        let (storage, id) = (self.storage.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = storage.requeue(&id, unacked).await {
                    tracing::error!(mailbox = %id, "cannot put unacknowledged messages back: {e}");
                }
            });
        }
    }
}

/// Waits up to `wait` for the next message, for shutdown, or (acknowledged streams) for a
/// takeover; the store's receive is cancel safe.
async fn receive(
    storage: &Arc<dyn Storage>,
    caller: &Caller,
    id: &EntityId,
    wait: Duration,
    shutdown: &mut watch::Receiver<bool>,
    taken_over: Option<tokio::sync::futures::Notified<'_>>,
) -> Step {
    let taken_over = async {
        match taken_over {
            Some(taken_over) => taken_over.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|stopping| *stopping) => Step::End,
        received = storage.recv(caller, id, wait) => match received {
            Ok(Some(message)) => Step::Message(message),
            Ok(None) => Step::Wait,
            Err(_) => Step::End,
        },
        () = taken_over => Step::End,
    }
}

/// One event: `[id: N\r\n]data: <message>\r\n\r\n`.
fn event(id: Option<u64>, message: &[u8]) -> Bytes {
    let mut event = BytesMut::with_capacity(message.len() + 32);
    if let Some(id) = id {
        event.put_slice(format!("id: {id}\r\n").as_bytes());
    }
    event.put_slice(b"data: ");
    event.put_slice(message);
    event.put_slice(b"\r\n\r\n");
    event.freeze()
}
