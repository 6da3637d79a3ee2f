//! `limits`: what clients that never finish cost an HTTP exchange server (issue "hardening"):
//! silent connections still held after the server's header timeout, and messages a stalled
//! event stream takes out of its mailbox. `limits-redis-clients`: the Redis clients a server
//! with Redis storage holds while many long polls wait.

use std::time::{Duration, Instant};

use exchange::{AgentRegistration, Body, EntityId, Message, Result};
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

/// Long polls opened by `limits-redis-clients` (`--n`), and how long they wait before counting.
const POLLS: usize = 2_000;
const POLL_WAIT: Duration = Duration::from_secs(3);

/// Runs both measurements against `--url` (an HTTP exchange).
pub(crate) async fn limits(args: &Args) -> Result<()> {
    let address = http_address(args)?;
    silent_connections(args, &address).await?;
    stalled_stream(args, &address).await
}

/// `host:port` of `--url`, which must be an HTTP exchange.
fn http_address(args: &Args) -> Result<String> {
    args.url()
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/').to_owned())
        .ok_or_else(|| exchange::Error::config("the limits scenarios need an http:// URL"))
}

/// Opens long polls on distinct mailboxes of `--url` (a server with Redis storage), reports
/// `connected_clients` of `--redis-url` before, while they wait and after, then sends each its
/// message and counts the polls that received it.
pub(crate) async fn redis_clients(args: &Args) -> Result<()> {
    let address = http_address(args)?;
    let redis = args
        .redis_url
        .as_deref()
        .and_then(|url| url.strip_prefix("redis://"))
        .map(|rest| rest.trim_end_matches('/').to_owned())
        .ok_or_else(|| exchange::Error::config("limits-redis-clients needs --redis-url redis://host:port"))?;
    let exchange = args.connect().await?;
    let sender = exchange.register_user(Some("bench-sender")).await?;
    let mut readers = Vec::new();
    for _ in 0..args.n_or(POLLS) {
        readers.push(exchange.register_user(Some("bench-poll")).await?);
    }
    let before = connected_clients(&redis).await?;
    let mut polls = Vec::with_capacity(readers.len());
    for reader in &readers {
        let body = json!({ "mailbox": EntityId::from(reader.clone()).to_json(), "timeout": 60 }).to_string();
        let mut stream = TcpStream::connect(&address).await.map_err(|e| exchange::Error::unavailable("http", e))?;
        stream
            .write_all(request("GET", "/message", &body).as_bytes())
            .await
            .map_err(|e| exchange::Error::unavailable("http", e))?;
        polls.push(stream);
    }
    tokio::time::sleep(POLL_WAIT).await;
    let waiting = connected_clients(&redis).await?;
    for reader in &readers {
        exchange.send(Message::request(sender.clone(), reader.clone(), Body::PingRequest)).await?;
    }
    let answers = polls.into_iter().map(|mut stream| async move {
        let mut bytes = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut bytes)).await;
        matches!(read, Ok(Ok(_))) && bytes.starts_with(b"HTTP/1.1 200")
    });
    let received = futures::future::join_all(answers).await.into_iter().filter(|ok| *ok).count();
    let after = connected_clients(&redis).await?;
    emit(
        args,
        "limits-redis-clients",
        json!({ "polls": readers.len(), "redis_clients_before": before, "redis_clients_waiting": waiting, "redis_clients_after": after, "received": received }),
    );
    Ok(())
}

/// A request head and body closing the connection after its answer.
fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `connected_clients` of the Redis at `address` (`host:port`, no password), asked over a
/// connection of its own (counted).
async fn connected_clients(address: &str) -> Result<u64> {
    let failed = |e: std::io::Error| exchange::Error::unavailable("redis", e);
    let mut stream = TcpStream::connect(address).await.map_err(failed)?;
    stream.write_all(b"INFO clients\r\n").await.map_err(failed)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    // A bulk string: `$<len>\r\n<text>\r\n`; the field comes early in the text.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| exchange::Error::unavailable("redis", "INFO timed out"))?
            .map_err(failed)?;
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply);
        let field = text.lines().find_map(|line| line.strip_prefix("connected_clients:")).map(str::trim);
        if let Some(count) = field.and_then(|n| n.parse().ok()).filter(|_| text.contains("\r\nblocked_clients:")) {
            return Ok(count);
        }
        if n == 0 {
            return Err(exchange::Error::unavailable("redis", format!("unexpected INFO reply {text:?}")));
        }
    }
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
    let head = request("GET", "/mailbox/listen", &body);
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

/// Agents registered for `limits-redis-discover` (`--n`), and discovers timed.
const AGENTS: usize = 20_000;
const DISCOVERS: usize = 20;

/// `limits-redis-discover`: registers `--n` agents (default 20,000, 16 at a time) on `--url`
/// (an exchange server with Redis storage, flushed before) and times discover over them, one
/// at a time and four at once.
pub(crate) async fn redis_discover(args: &Args) -> Result<()> {
    let exchange = args.connect().await?;
    let wanted = args.n_or(AGENTS);
    let registrations = (0..16).map(|task| {
        let exchange = exchange.clone();
        async move {
            for _ in (task..wanted).step_by(16) {
                exchange.register_agent(AgentRegistration::new(["bench.Discovered", "academy.agent.Agent"])).await?;
            }
            Result::Ok(())
        }
    });
    for registered in futures::future::join_all(registrations).await {
        registered?;
    }
    let mut alone = Vec::with_capacity(DISCOVERS);
    for _ in 0..DISCOVERS {
        let started = Instant::now();
        let found = exchange.discover("bench.Discovered", false).await?;
        alone.push(started.elapsed().as_secs_f64() * 1e3);
        if found.len() != wanted {
            return Err(exchange::Error::config(format!("discover found {} of {wanted} agents", found.len())));
        }
    }
    let started = Instant::now();
    let together = (0..4).map(|_| exchange.discover("bench.Discovered", false));
    for found in futures::future::join_all(together).await {
        found?;
    }
    let four_ms = started.elapsed().as_secs_f64() * 1e3;
    alone.sort_by(f64::total_cmp);
    emit(
        args,
        "limits-redis-discover",
        json!({
            "agents": wanted,
            "discover_p50_ms": round(alone[DISCOVERS / 2], 2),
            "discover_max_ms": round(alone[DISCOVERS - 1], 2),
            "four_concurrent_ms": round(four_ms, 2),
        }),
    );
    Ok(())
}
