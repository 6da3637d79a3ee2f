//! The stream task of a mailbox handle: keeps one `GET /mailbox/listen` event stream open,
//! reconnecting when it ends, parses its events into the handle's buffer, and sends the
//! acknowledgements of an acknowledged stream (see `crate::mailbox`).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use exchange_core::Message;
use futures::StreamExt;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::Inner;
use crate::mailbox::{Shared, Terminal};
use crate::wire::{ACK_HEADER, ACK_ROUTE, AckRequest, MailboxRequest, RESUME_HEADER, STREAM_HEADER};

/// Consecutive failed stream connections before receivers get the transport error.
const MAX_STREAM_FAILURES: u32 = 5;

/// Keeps one event stream open until the mailbox is terminated, unknown, refused, unreachable
/// too many times in a row, or its handle closed.
pub(crate) async fn listen(client: Arc<Inner>, shared: Arc<Shared>) {
    let mailbox = shared.id.to_json();
    let mut failures = 0u32;
    loop {
        if shared.is_closing() {
            return;
        }
        let timeout = Some(client.listen_timeout());
        let request = serde_json::to_vec(&MailboxRequest { mailbox: &mailbox, agent: None, timeout })
            .expect("requests serialize");
        let mut headers = vec![(ACK_HEADER, HeaderValue::from_static("1"))];
        if let Some((stream, through)) = shared.take_resume() {
            let value = HeaderValue::from_str(&format!("{stream} {through}")).expect("a UUID and a number");
            headers.push((RESUME_HEADER, value));
        }
        let response = match client.open_stream("/mailbox/listen", request.into(), headers).await {
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
        let stream = response
            .headers()
            .get(STREAM_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| Uuid::parse_str(text).ok());
        shared.begin_stream(stream);
        let opened = Instant::now();
        let events = read_events(&client, response, &shared, stream).await;
        if shared.end_stream() {
            return;
        }
        if events == 0 && opened.elapsed() < Duration::from_millis(50) {
            // A stream that ends at once with nothing in it (a proxy, a misconfigured server):
            // do not spin.
            tokio::time::sleep(client.options.retry_backoff).await;
        }
    }
}

/// Reads one event stream to its end (or, acknowledged, until the handle closes), pushing
/// every message into the buffer and acknowledging as they are handed out; returns how many
/// messages it carried.
async fn read_events(client: &Inner, response: reqwest::Response, shared: &Shared, stream: Option<Uuid>) -> usize {
    let mut count = 0;
    let mut chunks = response.bytes_stream();
    let mut parser = EventParser::default();
    loop {
        let wake = shared.ack_wake.notified();
        if stream.is_some() {
            if let Some((stream, through)) = shared.ack_due() {
                acknowledge(client, shared, stream, through).await;
                continue;
            }
            if shared.is_closing() {
                return count;
            }
        }
        let deadline = shared.ack_deadline();
        let chunk = tokio::select! {
            chunk = chunks.next() => chunk,
            () = wake => continue,
            () = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => continue,
        };
        let Some(Ok(chunk)) = chunk else { return count };
        parser.feed(&chunk, |event, data| match Message::from_slice(data) {
            Ok(message) => {
                count += 1;
                shared.push(message, event, data.len());
            }
            Err(e) => tracing::warn!(mailbox = %shared.id, "dropping an undecodable event: {e}"),
        });
    }
}

/// Sends one acknowledgement; a failed one is not repeated (the next covers it, and a stream
/// that ended puts back what it had not heard of).
async fn acknowledge(client: &Inner, shared: &Shared, stream: Uuid, through: u64) {
    let body = AckRequest { mailbox: shared.id.to_json(), stream, through };
    let body = serde_json::to_vec(&body).expect("requests serialize");
    let confirmed = match client.call(Method::POST, ACK_ROUTE, body.into(), true).await {
        Ok(reply) if reply.status == StatusCode::OK => true,
        Ok(reply) => {
            tracing::debug!(mailbox = %shared.id, status = %reply.status, "acknowledgement refused");
            false
        }
        Err(e) => {
            tracing::debug!(mailbox = %shared.id, "acknowledgement failed: {e}");
            false
        }
    };
    shared.acked(stream, through, confirmed);
}

/// Splits an event stream into events: `data:` lines joined by `\n`, the last `id:` as a
/// number (0 without one), comments ignored.
#[derive(Default)]
struct EventParser {
    pending: BytesMut,
    data: Vec<u8>,
    event: u64,
}

impl EventParser {
    fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(u64, &[u8])) {
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line = self.pending.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    on_event(self.event, &self.data);
                    self.data.clear();
                }
                self.event = 0;
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            } else if let Some(value) = line.strip_prefix(b"id:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                self.event = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EventParser;

    #[test]
    fn parses_ids_data_and_comments() {
        let mut parser = EventParser::default();
        let mut events = Vec::new();
        let stream = b": ping\r\n\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: x\r\n\r\n";
        // Fed in awkward pieces.
        for piece in stream.chunks(5) {
            parser.feed(piece, |id, data| events.push((id, String::from_utf8_lossy(data).into_owned())));
        }
        assert_eq!(events, vec![(7, "{\"a\":\n1}".to_owned()), (0, "x".to_owned())]);
    }
}
