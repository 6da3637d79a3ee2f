//! Academy-compatible exchange framework for multi-agent systems.
//!
//! This facade re-exports [`exchange_core`] (ids, messages, errors, the [`Exchange`] and
//! [`Mailbox`] traits) and each backend behind a Cargo feature:
//!
//! | feature | backend | URL |
//! |---|---|---|
//! | `local` (default) | [`local`]: in-process, tokio | `local://` or `local://NAME` |
//! | `redis` | `redis`: clients talk to Redis directly | `redis://host:port`, `rediss://…` |
//! | `http` | `http`: client of an HTTP exchange server | `http://host:port`, `https://…` |
//! | `full` | all of the above | |
//!
//! [`connect`] picks the backend from a URL, so the same code runs on every transport.

pub use exchange_core::*;

#[cfg(feature = "local")]
pub use exchange_local as local;

#[cfg(feature = "redis")]
pub use exchange_redis as redis;

#[cfg(feature = "http")]
pub use exchange_http as http;

pub mod launch;

use std::sync::Arc;

/// Connects to the exchange a URL names.
///
/// - `local://` creates a new in-process exchange; `local://NAME` returns the process-wide
///   exchange of that name (created on first use), so separate parts of one program can meet.
/// - `redis://…` / `rediss://…` connect to Redis (feature `redis`).
/// - `http://…` / `https://…` connect to an HTTP exchange server (feature `http`).
///
/// # Errors
/// [`Error::Config`] for an unknown scheme, or one whose backend was not compiled in (the
/// message names the Cargo feature to enable); connection errors of the backend.
pub async fn connect(url: &str) -> Result<Arc<dyn Exchange>> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).ok_or_else(|| {
        Error::config(format!("{url:?} is not an exchange URL (expected local://, redis://, or http(s)://)"))
    })?;
    match scheme.as_str() {
        "local" => connect_local(url),
        "redis" | "rediss" => connect_redis(url).await,
        "http" | "https" => connect_http(url).await,
        other => Err(Error::config(format!(
            "unknown exchange URL scheme {other:?} in {url:?} (expected local, redis, rediss, http or https)"
        ))),
    }
}

#[cfg_attr(all(feature = "local", feature = "redis", feature = "http"), allow(dead_code))]
fn missing_feature(feature: &str, url: &str) -> Error {
    Error::config(format!(
        "{url:?} needs the `{feature}` backend, which this build does not include: enable the `{feature}` \
         (or `full`) feature of the `exchange` crate"
    ))
}

#[cfg(feature = "local")]
fn connect_local(url: &str) -> Result<Arc<dyn Exchange>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    static NAMED: OnceLock<Mutex<HashMap<String, local::LocalExchange>>> = OnceLock::new();
    let name = url.split_once("://").map(|(_, rest)| rest.trim_end_matches('/')).unwrap_or_default();
    if name.is_empty() {
        return Ok(Arc::new(local::LocalExchange::new()));
    }
    let mut named = NAMED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    Ok(Arc::new(named.entry(name.to_owned()).or_default().clone()))
}

#[cfg(not(feature = "local"))]
fn connect_local(url: &str) -> Result<Arc<dyn Exchange>> {
    Err(missing_feature("local", url))
}

#[cfg(feature = "redis")]
async fn connect_redis(url: &str) -> Result<Arc<dyn Exchange>> {
    Ok(Arc::new(redis::RedisExchange::connect(url).await?))
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(url: &str) -> Result<Arc<dyn Exchange>> {
    Err(missing_feature("redis", url))
}

#[cfg(feature = "http")]
async fn connect_http(url: &str) -> Result<Arc<dyn Exchange>> {
    Ok(Arc::new(http::HttpExchange::connect(url).await?))
}

#[cfg(not(feature = "http"))]
async fn connect_http(url: &str) -> Result<Arc<dyn Exchange>> {
    Err(missing_feature("http", url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn named_local_urls_share_one_exchange() {
        let one = connect("local://facade-test").await.unwrap();
        let two = connect("local://facade-test/").await.unwrap();
        let other = connect("local://").await.unwrap();
        let user = one.register_user(None).await.unwrap();
        assert_eq!(two.status(&user.clone().into()).await.unwrap(), MailboxStatus::Active);
        assert_eq!(other.status(&user.into()).await.unwrap(), MailboxStatus::Missing);
    }

    #[tokio::test]
    async fn bad_urls_are_config_errors() {
        for url in ["", "localhost:6379", "ftp://host", "amqp://host:5672"] {
            assert!(matches!(connect(url).await, Err(Error::Config { .. })), "{url}");
        }
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn missing_backend_names_its_feature() {
        match connect("redis://127.0.0.1:6379").await {
            Err(Error::Config { message }) => assert!(message.contains("`redis`"), "{message}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
