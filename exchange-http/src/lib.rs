//! HTTP transport: an Academy-compatible exchange server (axum) and a client (reqwest) that
//! talks to it or to Academy's own server.
//!
//! - [`HttpExchange`] implements [`exchange_core::Exchange`]: `HttpExchange::connect(url)`.
//! - [`server::HttpExchangeServer`] serves the routes of Academy's HTTP exchange; the
//!   `exchange-server` binary runs it from a TOML file; [`server::spawn_http_exchange`] starts one
//!   in this process.
//!
//! Features: `client` (reqwest) and `server` (axum, Redis storage, the binary), both on by
//! default; a client-only build (`default-features = false, features = ["client"]`) carries no
//! server dependencies.
//!
//! Wire details: `docs/HTTP.md` and `docs/PROTOCOL.md`.

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod events;
#[cfg(feature = "client")]
mod mailbox;
#[cfg(feature = "client")]
mod options;
#[cfg(feature = "server")]
pub mod server;
#[cfg(any(feature = "client", feature = "server"))]
mod wire;

#[cfg(feature = "client")]
pub use client::HttpExchange;
#[cfg(feature = "client")]
pub use mailbox::HttpMailbox;
#[cfg(feature = "client")]
pub use options::{HttpOptions, RecvMode};
#[cfg(all(feature = "client", feature = "server"))]
pub use server::spawn_http_exchange;
#[cfg(feature = "server")]
pub use server::{HttpExchangeServer, ServerConfig};
