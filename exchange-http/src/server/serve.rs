//! Serving connections: the accept loop with its limits (connection cap, header and idle
//! timeouts, TLS handshakes, bounded unsent bytes), and a shutdown with a deadline.
//!
//! hyper's HTTP/1 connection builder is used directly (rather than `axum::serve`) for its
//! header read timer and buffer limits. Its header timer starts whenever a connection waits for
//! a request head, so it bounds both a slowly trickled head and an idle keep-alive connection;
//! a TLS handshake gets the same time.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use exchange_core::Result;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::observe::Metrics;

/// Largest buffer hyper keeps per connection for reading a head and for writing. It also
/// bounds what an event stream queues inside the server for a client that does not read: the
/// stream is asked for its next message only when this much has been written out.
const CONNECTION_BUFFER: usize = 16 * 1024;

/// Unsent bytes the kernel may hold per socket (`TCP_NOTSENT_LOWAT`): the socket reads as
/// writable only below this, so a client that stops reading stops taking messages out of its
/// mailbox after about this much.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NOTSENT_LOWAT: u32 = 16 * 1024;

/// File descriptors kept free for everything but client connections (storage connections,
/// config and log files).
const RESERVED_FDS: u64 = 256;

/// Connections past the cap being answered at once; more are closed without an answer.
const REFUSING_AT_ONCE: usize = 64;

/// How long a refused connection may take to read its answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Answer of a plain-HTTP connection past the connection cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 43\r\n\r\nServer at its connection limit; retry later";

/// Connection-level limits of a running server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
}

/// Raises the soft open-file limit to the hard limit (where allowed) and returns the connection
/// cap that fits below it: `wanted`, or fewer with a warning.
pub(crate) fn fit_connection_cap(wanted: usize) -> usize {
    let Some(fds) = open_file_limit() else { return wanted };
    let room = fds.saturating_sub(RESERVED_FDS).max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            wanted,
            allowed = room,
            open_file_limit = fds,
            "[limits] max_connections lowered to stay below the open-file limit (raise it with ulimit -n)"
        );
        return room;
    }
    wanted
}

/// The soft `RLIMIT_NOFILE` after raising it to the hard limit.
#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                limit = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast, reason = "rlim_t is not u64 on every target")]
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// Accepts connections until `shutdown` completes, then stops accepting, lets `on_stop` end
/// long polls and streams, waits for open connections up to the shutdown deadline and drops
/// the rest.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
    on_stop: impl FnOnce(),
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let graceful = GracefulShutdown::new();
    let tls = tls.map(TlsAcceptor::from);
    let mut tasks = JoinSet::new();
    let mut refused = RateLimitedLog::new();
    let mut accept_errors = RateLimitedLog::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before it was taken):
                    // pause instead of spinning, and say so once a second at most.
                    if let Some(skipped) = accept_errors.ready() {
                        tracing::warn!(error = %e, skipped, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(skipped) = refused.ready() {
                tracing::warn!(%peer, max = limits.max_connections, skipped, "connection refused: at the connection limit");
            }
            if tls.is_none() {
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(refuse(stream, permit));
                }
            }
            continue;
        };
        configure(&stream);
        let (app, tls, watcher) = (app.clone(), tls.clone(), graceful.watcher());
        let counted = metrics.connection();
        tasks.spawn(async move {
            let _counted = counted;
            match tls {
                None => serve_connection(stream, app, limits, watcher, permit).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, app, limits, watcher, permit).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    on_stop();
    let open = tasks.len();
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await.is_err() {
        // Finished tasks may not be reaped yet: count the live ones.
        while tasks.try_join_next().is_some() {}
        tracing::warn!(
            dropped = tasks.len(),
            deadline_s = limits.shutdown_timeout.as_secs_f64(),
            "shutdown deadline passed: dropping the connections still open"
        );
        tasks.abort_all();
    } else if open > 0 {
        tracing::info!(connections = open, "open connections finished");
    }
    Ok(())
}

/// Answers a connection past the cap with a 503 and closes it after reading what the client
/// sent (closing with unread input would reset the connection before the answer is read).
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let answer = async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
}

/// Socket options of an accepted connection: no Nagle delay, bounded unsent bytes.
fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        tracing::debug!("cannot set TCP_NOTSENT_LOWAT: {e}");
    }
}

async fn serve_connection<I>(
    io: I,
    app: Router,
    limits: ConnectionLimits,
    watcher: hyper_util::server::graceful::Watcher,
    _permit: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(CONNECTION_BUFFER);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!("connection ended: {e}");
    }
}

/// Lets a repeated warning through once a second, with the count of those held back.
struct RateLimitedLog {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimitedLog {
    fn new() -> Self {
        RateLimitedLog { last: None, skipped: 0 }
    }

    /// `Some(skipped since the last one)` when this occurrence should be logged.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}
