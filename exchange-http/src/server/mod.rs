//! The Academy-compatible HTTP exchange server (axum): routes, storage, authentication,
//! configuration, and an in-process helper for tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use exchange_core::{Error, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

mod auth;
mod config;
mod listing;
mod logging;
mod memory;
mod observe;
mod redis_store;
mod routes;
mod serve;
#[cfg(feature = "client")]
mod spawn;
mod status_page;
mod storage;
mod stream;
mod tls;

pub use auth::{Authenticator, NoAuth, TokenAuth};
pub use config::{
    AuthConfig, BackendConfig, DEFAULT_PORT, LimitsConfig, LogFormat, LogLevel, LoggerConfig, MAX_CONFIG_SECONDS,
    MAX_EXPIRATION_DAYS, ServerConfig, TokenEntry,
};
pub use listing::{MAX_PAGE, MailboxPage, MailboxQuery, MailboxRow};
pub use logging::init_logging;
pub use memory::MemoryStorage;
pub use redis_store::RedisStorage;
pub use routes::{AppState, router};
#[cfg(feature = "client")]
pub use spawn::{SpawnedServer, spawn_http_exchange, spawn_server};
pub use storage::{ApiError, Caller, Storage, StoreTotals};

/// A configured server: storage and authenticator chosen, not yet bound.
#[derive(Clone)]
pub struct HttpExchangeServer {
    config: ServerConfig,
    storage: Arc<dyn Storage>,
    auth: Arc<dyn Authenticator>,
}

impl std::fmt::Debug for HttpExchangeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExchangeServer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl HttpExchangeServer {
    /// A server with the storage and authentication the configuration names.
    ///
    /// # Errors
    /// [`Error::Config`] for a configuration that cannot work.
    pub fn new(config: ServerConfig) -> Result<Self> {
        config.validate()?;
        if config.backend.kind == "redis" {
            return Err(Error::config("[backend] kind = \"redis\" needs HttpExchangeServer::from_config (async)"));
        }
        Ok(Self::with_memory(config))
    }

    /// A server with the storage the configuration names, connecting to Redis for
    /// `kind = "redis"`.
    ///
    /// # Errors
    /// [`Error::Config`] for a configuration that cannot work; [`Error::Unavailable`] if Redis
    /// does not answer.
    pub async fn from_config(config: ServerConfig) -> Result<Self> {
        config.validate()?;
        let redis = config.backend.kind == "redis";
        let server = Self::with_memory(config);
        if !redis {
            return Ok(server);
        }
        let url = server.config.redis_url()?;
        let storage = RedisStorage::connect(&url, &server.config).await?;
        Ok(server.with_storage(Arc::new(storage)))
    }

    fn with_memory(config: ServerConfig) -> Self {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(&config));
        let auth: Arc<dyn Authenticator> = match &config.auth {
            None => Arc::new(NoAuth),
            Some(auth) if auth.method.is_none() => Arc::new(NoAuth),
            Some(auth) => Arc::new(auth.tokens.iter().fold(TokenAuth::new(), |table, (token, entry)| {
                let groups = entry.groups.iter().cloned();
                if entry.admin {
                    table.with_admin_token(token.clone(), entry.client_id.clone(), groups)
                } else {
                    table.with_token(token.clone(), entry.client_id.clone(), groups)
                }
            })),
        };
        HttpExchangeServer { config, storage, auth }
    }

    /// Replaces the mailbox storage.
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Replaces the authenticator.
    pub fn with_authenticator(mut self, auth: Arc<dyn Authenticator>) -> Self {
        self.auth = auth;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The router of this server; `shutdown` turning `true` ends long polls and event streams.
    pub fn router(&self, shutdown: watch::Receiver<bool>) -> Router {
        router(self.state(shutdown), &self.config.path_prefix, self.config.body_limit())
    }

    fn state(&self, shutdown: watch::Receiver<bool>) -> AppState {
        AppState::new(self.storage.clone(), self.auth.clone(), self.config.listen_timeout_s, shutdown)
            .with_body_timeout(Duration::from_secs_f64(self.config.limits.body_timeout_s))
    }

    /// Binds the configured address.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the address cannot be bound; [`Error::Config`] for TLS
    /// settings this build cannot serve.
    pub async fn bind(self) -> Result<BoundServer> {
        let tls = match &self.config.certfile {
            Some(certfile) => Some(tls::server_config(certfile, self.config.keyfile.as_deref())?),
            None => None,
        };
        let address = format!("{}:{}", self.config.host, self.config.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|e| Error::unavailable("http", format!("cannot bind {address}: {e}")))?;
        let local_addr = listener.local_addr().map_err(|e| Error::unavailable("http", e))?;
        Ok(BoundServer { server: self, listener, tls, local_addr })
    }
}

/// A server bound to its address, ready to serve.
#[derive(Debug)]
pub struct BoundServer {
    server: HttpExchangeServer,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    local_addr: SocketAddr,
}

impl BoundServer {
    /// The bound address (the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients connect to (with the path prefix).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.local_addr, self.server.config.path_prefix.trim_end_matches('/'))
    }

    /// Serves until `shutdown` completes, then stops accepting, ends long polls and event
    /// streams, waits for the remaining requests up to `[limits] shutdown_timeout_s` and drops
    /// what is still open.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the server fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let (stop, stopping) = watch::channel(false);
        let state = self.server.state(stopping);
        let metrics = state.metrics.clone();
        let app = router(state, &self.server.config.path_prefix, self.server.config.body_limit());
        let config = &self.server.config.limits;
        let limits = serve::ConnectionLimits {
            max_connections: serve::fit_connection_cap(config.max_connections),
            header_timeout: Duration::from_secs_f64(config.header_timeout_s),
            shutdown_timeout: Duration::from_secs_f64(config.shutdown_timeout_s),
        };
        let storage = self.server.storage.clone();
        let on_stop = move || {
            let _ = stop.send(true);
            if let Some(totals) = storage.totals().filter(|t| t.queued_messages > 0) {
                tracing::warn!(
                    queued_messages = totals.queued_messages,
                    queued_bytes = totals.queued_bytes,
                    "in-memory storage: queued messages are discarded on exit"
                );
            }
        };
        serve::serve(self.listener, self.tls, app, limits, metrics, shutdown, on_stop).await
    }
}
