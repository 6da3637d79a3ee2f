//! Log output for programs built on the framework: [`init_logs`].

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a global subscriber that writes human-readable log lines to stderr: the filter
/// comes from `RUST_LOG` (default `info`; an invalid value is reported and replaced by the
/// default), colour only on a terminal and never with `NO_COLOR` set. Does nothing if the
/// program installed a subscriber already.
/// [`run_agent_from_file`](crate::launch::run_agent_from_file) calls it; other programs call
/// it first thing in `main`, as the examples do.
pub fn init_logs() {
    let directives = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let (filter, invalid) = match directives.as_deref().map(EnvFilter::try_new) {
        None => (EnvFilter::new("info"), None),
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new("info"), Some(e)),
    };
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let installed =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).with_writer(std::io::stderr).try_init();
    if let (Ok(()), Some(e)) = (installed, invalid) {
        tracing::warn!(rust_log = directives.as_deref(), error = %e, "RUST_LOG is not a valid filter; logging at info");
    }
}
