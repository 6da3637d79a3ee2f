//! The receiving end: an event stream feeding a local buffer, or one long poll per message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use exchange_core::wait::wait_for;
use exchange_core::{EntityId, Error, Mailbox, Message, Result};
use futures::StreamExt;
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::{Inner, status_error};
use crate::options::RecvMode;
use crate::wire::{MailboxRequest, MessageResponse};

/// Consecutive failed stream connections before receivers get the transport error.
const MAX_STREAM_FAILURES: u32 = 5;

/// Why a handle cannot deliver any more.
#[derive(Clone, Debug)]
enum Terminal {
    Terminated,
    Unknown,
    Failed { status: Option<StatusCode>, text: String },
}

#[derive(Default)]
struct Buffer {
    queue: VecDeque<Message>,
    terminal: Option<Terminal>,
}

/// State shared by a handle and its stream task. When a handle is closed, its stream lives on
/// for [`HANDOVER`] and the next handle of the same mailbox in this client takes it over:
/// Academy's server only notices a closed stream when it writes the next message into it,
/// which would lose that message.
pub(crate) struct Shared {
    pub(crate) id: EntityId,
    buffer: Mutex<Buffer>,
    notify: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    /// Messages read ahead and not handed out.
    pub(crate) fn buffered(&self) -> usize {
        self.buffer.lock().queue.len()
    }

    /// The mailbox was terminated (seen by this client): drop the buffer, wake receivers.
    pub(crate) fn mark_terminated(&self) {
        self.finish(Terminal::Terminated);
    }

    fn finish(&self, terminal: Terminal) {
        {
            let mut buffer = self.buffer.lock();
            buffer.queue.clear();
            buffer.terminal.get_or_insert(terminal);
        }
        self.notify.notify_waiters();
    }

    fn push(&self, message: Message) {
        self.buffer.lock().queue.push_back(message);
        self.notify.notify_one();
    }

    fn terminal_error(&self, terminal: &Terminal) -> Error {
        match terminal {
            Terminal::Terminated => Error::MailboxTerminated { id: self.id.clone() },
            Terminal::Unknown => Error::BadEntityId { id: self.id.clone() },
            Terminal::Failed { status: Some(status), text } => status_error(*status, text.clone(), &self.id),
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
        buffer.queue.pop_front().map(Ok)
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

    /// Fresh shared state for a mailbox.
    pub(crate) fn shared_for(id: EntityId) -> Arc<Shared> {
        Arc::new(Shared { id, buffer: Mutex::default(), notify: Notify::new(), task: Mutex::new(None) })
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
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        wait_for(&self.shared.notify, deadline, || self.ready())
            .await
            .unwrap_or(Err(Error::Timeout { timeout: timeout.unwrap_or_default() }))
    }

    async fn recv_long_poll(&self, timeout: Option<Duration>) -> Result<Message> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let max = Duration::from_secs_f64(self.client.listen_timeout());
            if let Some(ready) = self.ready() {
                return ready;
            }
            let wait = match deadline {
                Some(deadline) => deadline.saturating_duration_since(tokio::time::Instant::now()).min(max),
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
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Err(Error::Timeout { timeout: timeout.unwrap_or_default() });
                    }
                }
                400 if self.client.learn_listen_max(&String::from_utf8_lossy(&reply.body)) => {}
                _ => return Err(reply.error(&self.shared.id)),
            }
        }
    }

    /// Marks the handle closed; its stream (if any) waits [`HANDOVER`] for a successor.
    fn release(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.notify.notify_waiters();
        if self.shared.task.lock().is_some() && !self.shared.is_finished() {
            crate::client::hand_over(&self.client, self.shared.clone());
        } else {
            self.shared.stop();
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

    async fn close(&self) -> Result<()> {
        self.release();
        Ok(())
    }
}

impl Drop for HttpMailbox {
    fn drop(&mut self) {
        self.release();
    }
}

/// The stream task: keeps one event stream open, reconnecting when it ends, until the mailbox
/// is terminated, unknown, refused, or unreachable too many times in a row.
async fn listen(client: Arc<Inner>, shared: Arc<Shared>) {
    let mailbox = shared.id.to_json();
    let mut failures = 0u32;
    loop {
        let timeout = Some(client.listen_timeout());
        let request = serde_json::to_vec(&MailboxRequest { mailbox: &mailbox, agent: None, timeout })
            .expect("requests serialize");
        let response = match client.open_stream("/mailbox/listen", request.into()).await {
            Ok(response) => response,
            Err(e) => {
                failures += 1;
                if failures >= MAX_STREAM_FAILURES {
                    return shared.finish(Terminal::Failed { status: None, text: e.to_string() });
                }
                tokio::time::sleep(client.options.retry_backoff * 2u32.saturating_pow(failures - 1)).await;
                continue;
            }
        };
        let status = response.status();
        match status.as_u16() {
            200 => {}
            419 => return shared.finish(Terminal::Terminated),
            404 => return shared.finish(Terminal::Unknown),
            400..=499 => {
                let text = response.text().await.unwrap_or_default();
                if status == StatusCode::BAD_REQUEST && client.learn_listen_max(&text) {
                    continue;
                }
                return shared.finish(Terminal::Failed { status: Some(status), text });
            }
            _ => {
                failures += 1;
                if failures >= MAX_STREAM_FAILURES {
                    let text = response.text().await.unwrap_or_default();
                    return shared.finish(Terminal::Failed { status: Some(status), text });
                }
                tokio::time::sleep(client.options.retry_backoff * 2u32.saturating_pow(failures - 1)).await;
                continue;
            }
        }
        failures = 0;
        let opened = tokio::time::Instant::now();
        let events = read_events(response, &shared).await;
        if events == 0 && opened.elapsed() < Duration::from_millis(50) {
            // A stream that ends at once with nothing in it (a proxy, a misconfigured server):
            // do not spin.
            tokio::time::sleep(client.options.retry_backoff).await;
        }
    }
}

/// Reads one event stream to its end, pushing every message into the buffer; returns how
/// many messages it carried.
async fn read_events(response: reqwest::Response, shared: &Shared) -> usize {
    let mut count = 0;
    let mut stream = response.bytes_stream();
    let mut pending = BytesMut::new();
    let mut data: Vec<u8> = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let mut line = pending.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                if !data.is_empty() {
                    match Message::from_slice(&data) {
                        Ok(message) => {
                            count += 1;
                            shared.push(message);
                        }
                        Err(e) => tracing::warn!(mailbox = %shared.id, "dropping an undecodable event: {e}"),
                    }
                    data.clear();
                }
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
            }
        }
    }
    count
}
