//! Choosing a backend by URL, with the credentials and TLS settings a shared exchange needs.

use std::path::PathBuf;
use std::sync::Arc;

use exchange_core::{Error, Exchange, Result};
use serde::Deserialize;

/// Credentials and TLS settings for [`connect_with`]; every field is optional. `Debug` never
/// shows the token.
///
/// The same keys can be given in an agent file (see [`crate::launch`]).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// A bearer token for an HTTP exchange with token auth.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A PEM CA certificate to trust for `https://` and `rediss://` (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify server certificates (default true; false only for development).
    #[serde(default)]
    pub verify_tls: Option<bool>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .field("ca_file", &self.ca_file)
            .field("verify_tls", &self.verify_tls)
            .finish()
    }
}

impl ConnectOptions {
    /// Sends `Authorization: Bearer <token>`.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Reads the bearer token from a file when connecting.
    #[must_use]
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Reads the bearer token from an environment variable when connecting.
    #[must_use]
    pub fn token_env(mut self, variable: impl Into<String>) -> Self {
        self.token_env = Some(variable.into());
        self
    }

    /// Trusts this PEM CA certificate.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Turns certificate verification off (development only).
    #[must_use]
    pub fn verify_tls(mut self, verify: bool) -> Self {
        self.verify_tls = Some(verify);
        self
    }

    /// The bearer token: `token`, else the file's content, else the variable's value.
    ///
    /// # Errors
    /// [`Error::Config`] if the file cannot be read, the variable is not set, or the token is
    /// empty.
    pub fn resolve_token(&self) -> Result<Option<String>> {
        let token = if let Some(token) = &self.token {
            token.clone()
        } else if let Some(path) = &self.token_file {
            std::fs::read_to_string(path)
                .map_err(|e| Error::config(format!("cannot read token file {}: {e}", path.display())))?
                .trim()
                .to_owned()
        } else if let Some(variable) = &self.token_env {
            std::env::var(variable)
                .map_err(|_| Error::config(format!("token variable {variable} is not set")))?
                .trim()
                .to_owned()
        } else {
            return Ok(None);
        };
        if token.is_empty() {
            return Err(Error::config("the bearer token is empty"));
        }
        Ok(Some(token))
    }
}

/// Connects to the exchange a URL names, with default options (see [`connect_with`]).
///
/// # Errors
/// As [`connect_with`].
pub async fn connect(url: &str) -> Result<Arc<dyn Exchange>> {
    connect_with(url, &ConnectOptions::default()).await
}

/// Connects to the exchange a URL names.
///
/// - `local://` creates a new in-process exchange; `local://NAME` returns the process-wide
///   exchange of that name (created on first use), so separate parts of one program can meet.
/// - `redis://…`, `rediss://…`, `redis+unix:///path` connect to Redis (feature `redis`).
/// - `http://…` / `https://…` connect to an HTTP exchange server (feature `http`).
///
/// `options` carry a bearer token (HTTP), a private CA and certificate verification (HTTPS and
/// `rediss://`); local exchanges ignore them.
///
/// # Errors
/// [`Error::Config`] for an unknown scheme, or one whose backend was not compiled in (the
/// message names the Cargo feature to enable), or unusable options; connection errors of the
/// backend.
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Exchange>> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).ok_or_else(|| {
        Error::config(format!("{url:?} is not an exchange URL (expected local://, redis://, or http(s)://)"))
    })?;
    match scheme.as_str() {
        "local" => connect_local(url),
        "redis" | "rediss" | "redis+unix" | "unix" => connect_redis(url, options).await,
        "http" | "https" => connect_http(url, options).await,
        other => Err(Error::config(format!(
            "unknown exchange URL scheme {other:?} in {url:?} (expected local, redis, rediss, redis+unix, http or https)"
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

    use crate::local::LocalExchange;

    static NAMED: OnceLock<Mutex<HashMap<String, LocalExchange>>> = OnceLock::new();
    let name = url.split_once("://").map(|(_, rest)| rest.trim_end_matches('/')).unwrap_or_default();
    if name.is_empty() {
        return Ok(Arc::new(LocalExchange::new()));
    }
    let mut named = NAMED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    Ok(Arc::new(named.entry(name.to_owned()).or_default().clone()))
}

#[cfg(not(feature = "local"))]
fn connect_local(url: &str) -> Result<Arc<dyn Exchange>> {
    Err(missing_feature("local", url))
}

#[cfg(feature = "redis")]
async fn connect_redis(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Exchange>> {
    let mut url = url.to_owned();
    if options.verify_tls == Some(false) && !url.contains('#') {
        // redis-rs's switch for unverified TLS.
        url.push_str("#insecure");
    }
    let mut builder = crate::redis::RedisExchange::builder(&url);
    if let Some(path) = &options.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| Error::config(format!("cannot read CA file {}: {e}", path.display())))?;
        builder = builder.tls_root_certificate(pem);
    }
    Ok(Arc::new(builder.connect().await?))
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(url: &str, _options: &ConnectOptions) -> Result<Arc<dyn Exchange>> {
    Err(missing_feature("redis", url))
}

#[cfg(feature = "http")]
async fn connect_http(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Exchange>> {
    let mut http = crate::http::HttpOptions::default();
    if let Some(token) = options.resolve_token()? {
        http = http.bearer_token(token);
    }
    if let Some(path) = &options.ca_file {
        http = http.ca_file(path.clone());
    }
    if let Some(verify) = options.verify_tls {
        http = http.verify_tls(verify);
    }
    Ok(Arc::new(crate::http::HttpExchange::connect_with(url, http).await?))
}

#[cfg(not(feature = "http"))]
async fn connect_http(url: &str, _options: &ConnectOptions) -> Result<Arc<dyn Exchange>> {
    Err(missing_feature("http", url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "local")]
    #[tokio::test]
    async fn named_local_urls_share_one_exchange() {
        let one = connect("local://facade-test").await.unwrap();
        let two = connect("local://facade-test/").await.unwrap();
        let other = connect("local://").await.unwrap();
        let user = one.register_user(None).await.unwrap();
        assert_eq!(two.status(&user.clone().into()).await.unwrap(), exchange_core::MailboxStatus::Active);
        assert_eq!(other.status(&user.into()).await.unwrap(), exchange_core::MailboxStatus::Missing);
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
        for url in ["redis://127.0.0.1:6379", "redis+unix:///tmp/redis.sock"] {
            match connect(url).await {
                Err(Error::Config { message }) => assert!(message.contains("`redis`"), "{message}"),
                other => panic!("expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn tokens_come_from_the_option_a_file_or_a_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  tok-file\n").unwrap();
        assert_eq!(ConnectOptions::default().resolve_token().unwrap(), None);
        assert_eq!(ConnectOptions::default().token("tok").resolve_token().unwrap().as_deref(), Some("tok"));
        assert_eq!(ConnectOptions::default().token_file(&path).resolve_token().unwrap().as_deref(), Some("tok-file"));
        let missing = ConnectOptions::default().token_env("EXCHANGE_TEST_TOKEN_THAT_IS_NOT_SET");
        assert!(matches!(missing.resolve_token(), Err(Error::Config { .. })));
        assert!(!format!("{:?}", ConnectOptions::default().token("secret")).contains("secret"));
    }
}
