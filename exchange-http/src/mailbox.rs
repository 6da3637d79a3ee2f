//! The receiving end: an event stream feeding a local buffer, or one long poll per message.
//!
//! Over an event stream the client asks for acknowledged delivery (`exchange-ack: 1`, our
//! extension, see `crate::wire::ACK_HEADER`). Our server then numbers the events; this handle
//! acknowledges what it handed out (every [`ACK_EVERY`] messages, or [`ACK_DELAY`] after the
//! first unacknowledged one, and on close), and drops messages it already handed out when they
//! come again after a stream ended (by tag and kind). A server that does not acknowledge
//! (Academy's) gives at-most-once delivery as before.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use exchange_core::wait::wait_for;
use exchange_core::{EntityId, Error, Mailbox, Message, MessageKind, Result};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::Inner;
use crate::events::listen;
use crate::options::RecvMode;
use crate::wire::{MailboxRequest, MessageResponse};

/// Acknowledge after handing out this many messages of a stream (a quarter of the server's
/// window, so it never stalls a busy stream).
pub(crate) const ACK_EVERY: u64 = 64;

/// Acknowledge after handing out this many bytes of a stream (a quarter of the server's window).
pub(crate) const ACK_BYTES: usize = 256 * 1024;

/// Acknowledge this long after the first unacknowledged hand-out at the latest.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(20);

/// Unacknowledged hand-outs remembered to drop their redelivery (more than the server's window).
const MAX_UNCONFIRMED: usize = 1024;

/// How long `close` waits for the final acknowledgement.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why a handle cannot deliver any more.
#[derive(Clone, Debug)]
pub(crate) enum Terminal {
    Terminated,
    Unknown,
    Failed { status: Option<StatusCode>, text: String },
}

/// A message read ahead, with its event id (0 on streams without ids). `None`: a redelivery of
/// a message already handed out, skipped when its turn comes (its id still counts as handled).
struct Buffered {
    message: Option<Message>,
    event: u64,
    /// Length of the event's data.
    bytes: usize,
}

#[derive(Default)]
struct Buffer {
    queue: VecDeque<Buffered>,
    terminal: Option<Terminal>,
    acks: Acks,
}

/// What identifies a redelivered message: its tag, kind and length.
type Key = (Uuid, MessageKind, usize);

/// Acknowledgement state of the stream being read.
#[derive(Default)]
struct Acks {
    /// The acknowledged stream being read (`None`: the server does not acknowledge).
    stream: Option<Uuid>,
    /// Highest event id handed out (or skipped), and highest acknowledged.
    handed: u64,
    acked: u64,
    /// Bytes handed out since the last acknowledgement.
    unacked_bytes: usize,
    /// When the oldest unacknowledged hand-out happened.
    since: Option<Instant>,
    /// Messages handed out and not acknowledged yet (event id, key), oldest first.
    unconfirmed: VecDeque<(u64, Key)>,
    /// Messages handed out on the previous stream without an acknowledgement: the server put
    /// them back, so they may come again on this one (each is dropped once).
    redeliverable: HashSet<Key>,
    /// The previous stream and the last event handed out of it, sent when reconnecting.
    resume: Option<(Uuid, u64)>,
    /// The handle closed: acknowledge what was handed out, then end the stream.
    closing: bool,
}

/// State shared by a handle and its stream task. Without acknowledgements, when a handle is
/// closed its stream lives on for [`HANDOVER`] and the next handle of the same mailbox in this
/// client takes it over: Academy's server only notices a closed stream when it writes the next
/// message into it, which would lose that message.
pub(crate) struct Shared {
    pub(crate) id: EntityId,
    buffer: Mutex<Buffer>,
    notify: Notify,
    /// Wakes the stream task when an acknowledgement is due or the handle closed.
    pub(crate) ack_wake: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    /// Messages read ahead and not handed out.
    pub(crate) fn buffered(&self) -> usize {
        self.buffer.lock().queue.iter().filter(|b| b.message.is_some()).count()
    }

    /// The mailbox was terminated (seen by this client): drop the buffer, wake receivers.
    pub(crate) fn mark_terminated(&self) {
        self.finish(Terminal::Terminated);
    }

    pub(crate) fn finish(&self, terminal: Terminal) {
        {
            let mut buffer = self.buffer.lock();
            buffer.queue.clear();
            buffer.terminal.get_or_insert(terminal);
        }
        self.notify.notify_waiters();
    }

    /// A message read from the stream with its event id (0 without ids) and data length.
    pub(crate) fn push(&self, message: Message, event: u64, bytes: usize) {
        {
            let mut buffer = self.buffer.lock();
            let redelivered = buffer.acks.redeliverable.remove(&(message.tag(), message.header.kind, bytes));
            buffer.queue.push_back(Buffered { message: (!redelivered).then_some(message), event, bytes });
        }
        self.notify.notify_one();
    }

    fn terminal_error(&self, terminal: &Terminal) -> Error {
        match terminal {
            Terminal::Terminated => Error::MailboxTerminated { id: self.id.clone() },
            Terminal::Unknown => Error::BadEntityId { id: self.id.clone() },
            Terminal::Failed { status: Some(status), text } => {
                crate::client::status_error(*status, text.clone(), &self.id)
            }
            Terminal::Failed { status: None, text } => Error::unavailable("http", text.clone()),
        }
    }

    /// Whether the stream ended for good (the handle cannot be taken over).
    pub(crate) fn is_finished(&self) -> bool {
        self.buffer.lock().terminal.is_some()
    }

    /// Stops the stream task.
    pub(crate) fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }

    /// A buffered message, the terminal error, or `None` to wait.
    fn try_take(&self) -> Option<Result<Message>> {
        let mut buffer = self.buffer.lock();
        if let Some(terminal) = &buffer.terminal {
            return Some(Err(self.terminal_error(terminal)));
        }
        while let Some(Buffered { message, event, bytes }) = buffer.queue.pop_front() {
            let acks = &mut buffer.acks;
            if acks.stream.is_some() {
                acks.handed = acks.handed.max(event);
                acks.unacked_bytes += bytes;
                // The stream task arms its timer at the first unacknowledged hand-out, and acts
                // at once past a threshold.
                if acks.since.is_none() || acks.handed - acks.acked >= ACK_EVERY || acks.unacked_bytes >= ACK_BYTES {
                    acks.since.get_or_insert_with(Instant::now);
                    self.ack_wake.notify_one();
                }
            }
            if let Some(message) = message {
                if acks.stream.is_some() {
                    acks.unconfirmed.push_back((event, (message.tag(), message.header.kind, bytes)));
                    if acks.unconfirmed.len() > MAX_UNCONFIRMED {
                        acks.unconfirmed.pop_front();
                    }
                }
                return Some(Ok(message));
            }
        }
        None
    }

    /// A stream began: `stream` is its id when the server acknowledges.
    pub(crate) fn begin_stream(&self, stream: Option<Uuid>) {
        let mut buffer = self.buffer.lock();
        let acks = &mut buffer.acks;
        acks.stream = stream;
        (acks.handed, acks.acked, acks.unacked_bytes, acks.since) = (0, 0, 0, None);
    }

    /// A stream ended. With acknowledgements, the messages read ahead and not handed out are
    /// dropped (the server puts them back in the queue) and the stream is remembered for the
    /// next one to resume; returns whether the handle closed.
    pub(crate) fn end_stream(&self) -> bool {
        let mut buffer = self.buffer.lock();
        let acks = &mut buffer.acks;
        if let Some(stream) = acks.stream.take() {
            acks.resume = Some((stream, acks.handed));
            acks.redeliverable = acks.unconfirmed.drain(..).map(|(_, key)| key).collect();
            buffer.queue.clear();
        }
        buffer.acks.closing
    }

    /// The stream a new one resumes from (taken once).
    pub(crate) fn take_resume(&self) -> Option<(Uuid, u64)> {
        self.buffer.lock().acks.resume.take()
    }

    /// The acknowledgement to send now, if any: `(stream, through)`.
    pub(crate) fn ack_due(&self) -> Option<(Uuid, u64)> {
        let buffer = self.buffer.lock();
        let acks = &buffer.acks;
        let stream = acks.stream?;
        let pending = acks.handed - acks.acked;
        let due = pending >= ACK_EVERY
            || (pending > 0
                && (acks.unacked_bytes >= ACK_BYTES
                    || acks.closing
                    || acks.since.is_some_and(|since| since.elapsed() >= ACK_DELAY)));
        due.then_some((stream, acks.handed))
    }

    /// When the next acknowledgement falls due if nothing else happens.
    pub(crate) fn ack_deadline(&self) -> Option<Instant> {
        let buffer = self.buffer.lock();
        let acks = &buffer.acks;
        if acks.stream.is_none() || acks.handed == acks.acked {
            return None;
        }
        acks.since.map(|since| since + ACK_DELAY)
    }

    /// An acknowledgement through `through` of `stream` was sent; `confirmed` if the server
    /// took it (those messages will not come again).
    pub(crate) fn acked(&self, stream: Uuid, through: u64, confirmed: bool) {
        let mut buffer = self.buffer.lock();
        let acks = &mut buffer.acks;
        if acks.stream == Some(stream) && through > acks.acked {
            acks.acked = through;
            if confirmed {
                while acks.unconfirmed.front().is_some_and(|(event, _)| *event <= through) {
                    acks.unconfirmed.pop_front();
                }
            }
            // Bytes are not tracked per event: what was handed out meanwhile waits for the timer.
            acks.unacked_bytes = 0;
            acks.since = (acks.handed > through).then(Instant::now);
        }
    }

    /// Whether the handle closed (the stream task then ends after the last acknowledgement).
    pub(crate) fn is_closing(&self) -> bool {
        self.buffer.lock().acks.closing
    }

    /// The last acknowledged position of the current (or last) stream, for a successor handle.
    fn position(&self) -> Option<(Uuid, u64)> {
        let buffer = self.buffer.lock();
        buffer.acks.stream.map(|stream| (stream, buffer.acks.handed)).or(buffer.acks.resume)
    }
}

/// How long the stream of a closed handle waits for the next handle of the same mailbox.
pub(crate) const HANDOVER: Duration = Duration::from_secs(2);

/// Receiving end of a mailbox on an HTTP exchange.
pub struct HttpMailbox {
    client: Arc<Inner>,
    shared: Arc<Shared>,
    closed: AtomicBool,
}

impl std::fmt::Debug for HttpMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMailbox").field("id", &self.shared.id).finish()
    }
}

impl HttpMailbox {
    /// A handle over `shared` (a fresh one, or the stream of a closed handle taken over).
    pub(crate) fn new(client: Arc<Inner>, shared: Arc<Shared>) -> Self {
        HttpMailbox { client, shared, closed: AtomicBool::new(false) }
    }

    /// Fresh shared state for a mailbox; `resume` is where an earlier handle of this client
    /// stopped reading it.
    pub(crate) fn shared_for(id: EntityId, resume: Option<(Uuid, u64)>) -> Arc<Shared> {
        let buffer = Buffer { acks: Acks { resume, ..Acks::default() }, ..Buffer::default() };
        Arc::new(Shared {
            id,
            buffer: Mutex::new(buffer),
            notify: Notify::new(),
            ack_wake: Notify::new(),
            task: Mutex::new(None),
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A buffered message or an error; `None` to wait.
    fn ready(&self) -> Option<Result<Message>> {
        if self.is_closed() {
            return Some(Err(Error::Closed { id: self.shared.id.clone() }));
        }
        self.shared.try_take()
    }

    fn ensure_stream(&self) {
        let mut task = self.shared.task.lock();
        if task.is_none() && !self.is_closed() {
            let stream = listen(self.client.clone(), self.shared.clone());
            *task = Some(tokio::spawn(stream));
        }
    }

    async fn recv_sse(&self, timeout: Option<Duration>) -> Result<Message> {
        self.ensure_stream();
        let deadline = timeout.map(|t| Instant::now() + t);
        wait_for(&self.shared.notify, deadline, || self.ready())
            .await
            .unwrap_or(Err(Error::Timeout { timeout: timeout.unwrap_or_default() }))
    }

    async fn recv_long_poll(&self, timeout: Option<Duration>) -> Result<Message> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let max = Duration::from_secs_f64(self.client.listen_timeout());
            if let Some(ready) = self.ready() {
                return ready;
            }
            let wait = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()).min(max),
                None => max,
            };
            let mailbox = self.shared.id.to_json();
            let seconds = wait.as_secs_f64().max(0.001);
            let body = serde_json::to_vec(&MailboxRequest { mailbox: &mailbox, agent: None, timeout: Some(seconds) })
                .expect("requests serialize");
            let poll = self.client.call(Method::GET, "/message", body.into(), true);
            let closed = async {
                loop {
                    let notified = self.shared.notify.notified();
                    if self.is_closed() || self.shared.is_finished() {
                        return;
                    }
                    notified.await;
                }
            };
            let reply = tokio::select! {
                reply = poll => reply?,
                () = closed => continue,
            };
            match reply.status.as_u16() {
                200 => {
                    let wrapped: MessageResponse = reply.json()?;
                    return Message::from_json(&wrapped.message);
                }
                408 => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::Timeout { timeout: timeout.unwrap_or_default() });
                    }
                }
                400 if self.client.learn_listen_max(&String::from_utf8_lossy(&reply.body)) => {}
                _ => return Err(reply.error(&self.shared.id)),
            }
        }
    }

    /// Marks the handle closed. An acknowledged stream acknowledges what was handed out and
    /// ends (the server puts the rest back); another stream waits [`HANDOVER`] for a successor.
    fn release(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.notify.notify_waiters();
        if self.shared.task.lock().is_none() || self.shared.is_finished() {
            return self.shared.stop();
        }
        let acknowledged = {
            let mut buffer = self.shared.buffer.lock();
            let acknowledged = buffer.acks.stream.is_some() || buffer.acks.resume.is_some();
            buffer.acks.closing = acknowledged;
            acknowledged
        };
        if acknowledged {
            self.shared.ack_wake.notify_one();
            if let Some(position) = self.shared.position() {
                self.client.remember_position(&self.shared.id, position);
            }
        } else {
            crate::client::hand_over(&self.client, self.shared.clone());
        }
    }
}

#[async_trait]
impl Mailbox for HttpMailbox {
    fn id(&self) -> &EntityId {
        &self.shared.id
    }

    async fn recv(&self, timeout: Option<Duration>) -> Result<Message> {
        match self.client.options.recv_mode {
            RecvMode::Sse => self.recv_sse(timeout).await,
            RecvMode::LongPoll => self.recv_long_poll(timeout).await,
        }
    }

    /// Closes the handle; with an acknowledged stream, waits (a few seconds at most) until what
    /// was handed out is acknowledged, so the next reader gets exactly the rest.
    async fn close(&self) -> Result<()> {
        self.release();
        if self.shared.is_closing() {
            let task = self.shared.task.lock().take();
            if let Some(mut task) = task {
                if tokio::time::timeout(CLOSE_WAIT, &mut task).await.is_err() {
                    task.abort();
                }
            }
        }
        Ok(())
    }
}

impl Drop for HttpMailbox {
    fn drop(&mut self) {
        self.release();
    }
}
