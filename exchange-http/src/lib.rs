//! HTTP transport: an Academy-compatible exchange server (axum) and a client (reqwest) that
//! talks to it or to Academy's own server.
//!
//! - [`HttpExchange`] implements [`exchange_core::Exchange`]: `HttpExchange::connect(url)`.
//! - [`server::HttpExchangeServer`] serves the routes of Academy's HTTP exchange; the
//!   `exchange-server` binary runs it from a TOML file; [`server::spawn_http_exchange`] starts one
//!   in this process.
//!
//! Wire details: `docs/HTTP.md` and the spec's §3.

mod client;
mod events;
mod mailbox;
mod options;
pub mod server;
mod wire;

pub use client::HttpExchange;
pub use mailbox::HttpMailbox;
pub use options::{HttpOptions, RecvMode};
pub use server::{HttpExchangeServer, ServerConfig, spawn_http_exchange};
