//! `limits`: what clients that never finish cost an HTTP exchange server (issue "hardening"):
//! silent connections still held after the server's header timeout, and messages a stalled
//! event stream takes out of its mailbox.

use std::time::{Duration, Instant};

use exchange::{Body, EntityId, Message, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Args;
use crate::measure::{emit, round};

/// Silent connections opened (`--n`, default 5,000) and how long to wait before counting.
const SILENT: usize = 5_000;
const SILENT_WAIT: Duration = Duration::from_secs(40);

/// Messages queued for the stalled stream, and how long it reads nothing.
const QUEUED: usize = 20_000;
const STALL: Duration = Duration::from_secs(3);

/// Runs both measurements against `--url` (an HTTP exchange).
pub(crate) async fn limits(args: &Args) -> Result<()> {
    let address = args
        .url()
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/').to_owned())
        .ok_or_else(|| exchange::Error::config("the limits scenario needs an http:// URL"))?;
    silent_connections(args, &address).await?;
    stalled_stream(args, &address).await
}

/// Opens silent connections, waits past the header timeout, counts those still open.
async fn silent_connections(args: &Args, address: &str) -> Result<()> {
    let wanted = args.n_or(SILENT);
    let mut streams = Vec::with_capacity(wanted);
    let mut refused = 0;
    for _ in 0..wanted {
        match TcpStream::connect(address).await {
            Ok(stream) => streams.push(stream),
            Err(_) => refused += 1,
        }
    }
    let opened = streams.len();
    tokio::time::sleep(SILENT_WAIT).await;
    let mut held = 0;
    for stream in &mut streams {
        let mut byte = [0u8; 1];
        // Still open when there is nothing to read yet (closed or refused ones read at once).
        if tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await.is_err() {
            held += 1;
        }
    }
    emit(
        args,
        "limits-silent-connections",
        json!({ "opened": opened, "refused_at_connect": refused, "wait_s": SILENT_WAIT.as_secs(), "held": held }),
    );
    Ok(())
}

/// Queues pings, opens an event stream with a raw connection, reads nothing, disconnects, and
/// counts the messages that left the queue with it.
async fn stalled_stream(args: &Args, address: &str) -> Result<()> {
    let exchange = args.connect().await?;
    let reader: EntityId = exchange.register_user(Some("bench-stalled")).await?.into();
    let sends = (0..8).map(|_| {
        let (exchange, reader) = (exchange.clone(), reader.clone());
        async move {
            for _ in 0..QUEUED / 8 {
                exchange.send(Message::request(reader.clone(), reader.clone(), Body::PingRequest)).await?;
            }
            Result::Ok(())
        }
    });
    for sent in futures::future::join_all(sends).await {
        sent?;
    }
    let body = json!({ "mailbox": reader.to_json(), "timeout": 60 }).to_string();
    let head = format!(
        "GET /mailbox/listen HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(address).await.map_err(|e| exchange::Error::unavailable("http", e))?;
    stream.write_all(head.as_bytes()).await.map_err(|e| exchange::Error::unavailable("http", e))?;
    tokio::time::sleep(STALL).await;
    drop(stream);
    // Wait until the queue stops shrinking.
    let started = Instant::now();
    let mut last = u64::MAX;
    let queued = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let queued = exchange.stats(&reader).await?.queued;
        if queued == last || started.elapsed() > Duration::from_secs(30) {
            break queued;
        }
        last = queued;
    };
    let lost = QUEUED as u64 - queued;
    emit(
        args,
        "limits-stalled-stream",
        json!({ "queued": QUEUED, "stall_s": STALL.as_secs(), "lost": lost, "lost_pct": round(lost as f64 * 100.0 / QUEUED as f64, 2) }),
    );
    Ok(())
}
