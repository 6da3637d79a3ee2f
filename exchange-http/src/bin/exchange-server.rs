//! `exchange-server`: the Academy-compatible HTTP exchange server.
//!
//! Run with: `cargo run -p exchange-http --bin exchange-server -- --port 5463 [--config FILE]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use exchange_http::server::{HttpExchangeServer, ServerConfig};
use tracing_subscriber::EnvFilter;

/// jemalloc with background threads: memory freed by drained queues goes back to the system
/// within seconds, where glibc's malloc keeps it (docs/PERFORMANCE.md has the figures).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Serves Academy's HTTP exchange protocol.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Bind address (overrides the config file).
    #[arg(long)]
    host: Option<String>,
    /// Bind port (overrides the config file; default 5463).
    #[arg(long)]
    port: Option<u16>,
    /// TOML configuration file (host, port, backend, auth, TLS, logger).
    #[arg(long)]
    config: Option<PathBuf>,
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
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.logger.level.as_deref().unwrap_or("info")))
        .map_err(|e| exchange_core::Error::config(format!("invalid [logger] level: {e}")))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let bound = HttpExchangeServer::from_config(config).await?.bind().await?;
    tracing::info!(url = %bound.url(), "exchange server listening");
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
