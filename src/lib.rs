//! Academy-compatible exchange framework for multi-agent systems.
//!
//! This facade re-exports [`exchange_core`] (ids, messages, errors, the [`Exchange`] and
//! [`Mailbox`] traits) and each backend behind a Cargo feature:
//!
//! | feature | backend | URL |
//! |---|---|---|
//! | `local` (default) | [`local`]: in-process, tokio | `local://` or `local://NAME` |
//! | `redis` | `redis`: clients talk to Redis directly | `redis://host:port`, `rediss://…`, `redis+unix:///path` |
//! | `http` | `http`: client of an HTTP exchange server | `http://host:port`, `https://…` |
//! | `full` | all of the above | |
//!
//! [`connect`] picks the backend from a URL, so the same code runs on every transport;
//! [`connect_with`] adds credentials and TLS settings ([`ConnectOptions`]). With the `logs`
//! feature (default), [`init_logs`] shows the framework's logs (`RUST_LOG`, default `info`).

pub use exchange_core::*;

#[cfg(feature = "local")]
#[doc(inline)]
pub use exchange_local as local;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use exchange_redis as redis;

#[cfg(feature = "http")]
#[doc(inline)]
pub use exchange_http as http;

mod connect;
pub mod launch;
#[cfg(feature = "logs")]
mod logs;

pub use connect::{ConnectOptions, connect, connect_with};
#[cfg(feature = "logs")]
pub use logs::init_logs;

/// The README's Rust snippets, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeSnippets;
