//! `exchange-server`: the Academy-compatible HTTP exchange server.
//!
//! Run with: `cargo run -p academy-exchange-http --bin exchange-server -- --port 5463 [--config FILE]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use exchange_http::server::{HttpExchangeServer, LogFormat, ServerConfig};

/// jemalloc with background threads: memory freed by drained queues goes back to the system
/// within seconds, where glibc's malloc keeps it (docs/PERFORMANCE.md has the figures).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Serves Academy's HTTP exchange protocol.
#[derive(Debug, Parser)]
#[command(
    name = "exchange-server",
    version,
    about = "The exchange server: mailboxes for agents and users over Academy 1.x's HTTP exchange protocol \
             (academy-py's HttpExchangeFactory and our client connect to it)",
    long_about = None
)]
struct Args {
    /// Bind address (overrides the config file).
    #[arg(long)]
    host: Option<String>,
    /// Bind port (overrides the config file; default 5463).
    #[arg(long)]
    port: Option<u16>,
    /// TOML configuration file (host, port, backend, auth, TLS, logger, limits); Academy's
    /// server files are accepted.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log line format (overrides `[logger] format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

/// What the startup line says about the configuration (never a secret).
fn describe(config: &ServerConfig) -> String {
    let storage = match config.backend.kind.as_str() {
        "redis" => format!("redis {}", config.redis_url().map(|u| exchange_core::redact_url(&u)).unwrap_or_default()),
        _ => "memory".to_owned(),
    };
    let auth = match config.auth.as_ref().and_then(|a| a.method.as_deref()) {
        Some(method) => format!("{method} ({} tokens)", config.auth.as_ref().map_or(0, |a| a.tokens.len())),
        None => "none".to_owned(),
    };
    let limits = &config.limits;
    format!(
        "storage={storage} auth={auth} tls={} message_limit_kb={} max_connections={} header_timeout_s={} \
         body_timeout_s={} listen_timeout_s={}",
        config.certfile.is_some(),
        config.backend.message_size_limit_kb,
        limits.max_connections,
        limits.header_timeout_s,
        limits.body_timeout_s,
        config.listen_timeout_s,
    )
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}

async fn run(args: Args) -> exchange_core::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(host) = args.host {
        config.host = host;
    }
    if let Some(port) = args.port {
        config.port = port;
    }
    if let Some(format) = args.log_format {
        config.logger.format = format;
    }
    exchange_http::server::init_logging(&config.logger)?;
    let described = describe(&config);
    let bound = HttpExchangeServer::from_config(config).await?.bind().await?;
    tracing::info!(url = %bound.url(), %described, "exchange server listening");
    bound.serve(shutdown_signal()).await
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("exchange-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exchange-server: {e}");
            ExitCode::FAILURE
        }
    }
}
