//! The server's TOML configuration file (Academy's keys plus a few of ours; see docs/HTTP.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use exchange_core::{Error, Result};
use serde::Deserialize;

/// Default port of `exchange-server` (the port of Academy's test helper).
pub const DEFAULT_PORT: u16 = 5463;

/// Server configuration. Unknown keys are rejected, as Academy does.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Bind address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Bind port (0 = any free port).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Path every route is mounted under (`""` or e.g. `"/v1"`).
    #[serde(default)]
    pub path_prefix: String,
    /// PEM certificate chain: enables TLS.
    #[serde(default)]
    pub certfile: Option<PathBuf>,
    /// PEM private key (default: read from `certfile`).
    #[serde(default)]
    pub keyfile: Option<PathBuf>,
    /// Default and maximum `timeout` of receives, in seconds (inclusive).
    #[serde(default = "default_listen_timeout")]
    pub listen_timeout_s: f64,
    /// Authentication (absent = none).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Mailbox storage.
    #[serde(default)]
    pub backend: BackendConfig,
    /// Logging.
    #[serde(default)]
    pub logger: LoggerConfig,
    /// What one client, connection or mailbox may hold (our extension; safe defaults).
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[limits]`: bounds that keep a shared server safe from slow, idle, greedy or broken clients.
/// Every default is safe without configuration; docs/HTTP.md lists them with what a client
/// sees when it hits one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Open connections at most; lowered at start to stay below the process's file limit.
    /// Connections past it are closed at once (plain HTTP: after a `503`).
    pub max_connections: usize,
    /// Seconds a client may take to send a request head. The same clock runs while a
    /// keep-alive connection waits for its next request, so idle connections close after it.
    pub header_timeout_s: f64,
    /// Seconds a client may take to send a whole request body (`408` after it).
    pub body_timeout_s: f64,
    /// Seconds a shutdown waits for open requests and streams before dropping them.
    pub shutdown_timeout_s: f64,
    /// Messages one mailbox's queue may hold (`429` past it).
    pub mailbox_max_messages: usize,
    /// Unanswered requests tracked for one mailbox (`429` for new requests past it).
    pub mailbox_max_pending: usize,
    /// MiB of messages one mailbox's queue may hold (memory storage; `429` past it).
    pub mailbox_max_mb: usize,
    /// MiB the whole memory store may hold: queued messages, request records and mailbox
    /// records (`507` past it).
    pub store_max_mb: usize,
    /// Mailboxes (gravestones included) the memory store may hold (`507` past it).
    pub store_max_mailboxes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            header_timeout_s: 30.0,
            body_timeout_s: 30.0,
            shutdown_timeout_s: 30.0,
            mailbox_max_messages: 100_000,
            mailbox_max_pending: 100_000,
            mailbox_max_mb: 256,
            store_max_mb: 2048,
            store_max_mailboxes: 1_000_000,
        }
    }
}

/// Longest expiration accepted for `[backend]` keys (100 years).
pub const MAX_EXPIRATION_DAYS: f64 = 36_500.0;

/// Longest duration accepted anywhere in the configuration (one day), so no deadline computed
/// from a configured value can overflow.
pub const MAX_CONFIG_SECONDS: f64 = 86_400.0;

/// `[auth]`: bearer tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// `"token"`: bearer tokens from [`AuthConfig::tokens`].
    pub method: String,
    /// Token → identity.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenEntry>,
}

/// One accepted bearer token.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TokenEntry {
    /// The client id the token authenticates.
    pub client_id: String,
    /// Groups of the client (for shares).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[backend]`: where mailboxes live and how large messages may be.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackendConfig {
    /// `"memory"` (alias `"python"`, Academy's name for it).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Largest message (its JSON text) in KiB.
    #[serde(default = "default_message_limit_kb")]
    pub message_size_limit_kb: usize,
    /// Largest request body in KiB (default: twice the message limit plus 64 KiB, since the
    /// message travels as an escaped JSON string).
    #[serde(default)]
    pub body_limit_kb: Option<usize>,
    /// Redis host (`kind = "redis"`).
    #[serde(default = "default_redis_host")]
    pub hostname: String,
    /// Redis port (`kind = "redis"`).
    #[serde(default = "default_redis_port")]
    pub port: u16,
    /// TTL in days of queues and request-tracking keys (`kind = "redis"`); age in days at
    /// which the memory storage forgets an unanswered request.
    #[serde(default = "default_mailbox_expiration")]
    pub mailbox_expiration_d: f64,
    /// TTL in days of status, owner, heartbeat and agent keys (`kind = "redis"`); age in days
    /// at which the memory storage drops a terminated mailbox (its id is unknown again).
    #[serde(default = "default_gravestone_expiration")]
    pub gravestone_expiration_d: f64,
}

fn default_redis_host() -> String {
    "localhost".into()
}

fn default_redis_port() -> u16 {
    6379
}

fn default_mailbox_expiration() -> f64 {
    7.0
}

fn default_gravestone_expiration() -> f64 {
    365.0
}

/// `[logger]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoggerConfig {
    /// A tracing filter (`"info"`, `"warn"`, `"exchange_http=debug"`...); `RUST_LOG` wins.
    #[serde(default)]
    pub level: Option<String>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_listen_timeout() -> f64 {
    60.0
}

fn default_kind() -> String {
    "memory".into()
}

fn default_message_limit_kb() -> usize {
    2048
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: default_kind(),
            message_size_limit_kb: default_message_limit_kb(),
            body_limit_kb: None,
            hostname: default_redis_host(),
            port: default_redis_port(),
            mailbox_expiration_d: default_mailbox_expiration(),
            gravestone_expiration_d: default_gravestone_expiration(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: default_host(),
            port: default_port(),
            path_prefix: String::new(),
            certfile: None,
            keyfile: None,
            listen_timeout_s: default_listen_timeout(),
            auth: None,
            backend: BackendConfig::default(),
            logger: LoggerConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Reads and checks a TOML file.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file and what was wrong.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read config file {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| Error::config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks TOML text.
    ///
    /// # Errors
    /// [`Error::Config`] for unknown keys, wrong types or values that cannot work.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| Error::config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    /// [`Error::Config`] describing the problem.
    pub fn validate(&self) -> Result<()> {
        let seconds = |name: &str, value: f64| {
            if value > 0.0 && value <= MAX_CONFIG_SECONDS {
                Ok(())
            } else {
                Err(Error::config(format!(
                    "{name} must be a number of seconds above 0 and at most {MAX_CONFIG_SECONDS}"
                )))
            }
        };
        seconds("listen_timeout_s", self.listen_timeout_s)?;
        let limits = &self.limits;
        seconds("[limits] header_timeout_s", limits.header_timeout_s)?;
        seconds("[limits] body_timeout_s", limits.body_timeout_s)?;
        seconds("[limits] shutdown_timeout_s", limits.shutdown_timeout_s)?;
        for (name, value) in [
            ("max_connections", limits.max_connections),
            ("mailbox_max_messages", limits.mailbox_max_messages),
            ("mailbox_max_pending", limits.mailbox_max_pending),
            ("mailbox_max_mb", limits.mailbox_max_mb),
            ("store_max_mb", limits.store_max_mb),
            ("store_max_mailboxes", limits.store_max_mailboxes),
        ] {
            if value == 0 {
                return Err(Error::config(format!("[limits] {name} must be at least 1")));
            }
        }
        if self.backend.message_size_limit_kb == 0 {
            return Err(Error::config("[backend] message_size_limit_kb must be at least 1"));
        }
        if !matches!(self.backend.kind.as_str(), "memory" | "python" | "redis") {
            return Err(Error::config(format!(
                "[backend] kind {:?} is not supported (use \"memory\" (alias \"python\") or \"redis\")",
                self.backend.kind
            )));
        }
        let days = |name: &str, value: f64| {
            if value > 0.0 && value <= MAX_EXPIRATION_DAYS {
                Ok(())
            } else {
                Err(Error::config(format!(
                    "[backend] {name} must be a number of days above 0 and at most {MAX_EXPIRATION_DAYS}"
                )))
            }
        };
        days("mailbox_expiration_d", self.backend.mailbox_expiration_d)?;
        days("gravestone_expiration_d", self.backend.gravestone_expiration_d)?;
        if let Some(auth) = &self.auth {
            if auth.method != "token" {
                return Err(Error::config(format!("[auth] method {:?} is not supported (use \"token\")", auth.method)));
            }
        }
        if self.keyfile.is_some() && self.certfile.is_none() {
            return Err(Error::config("keyfile given without certfile"));
        }
        if !self.path_prefix.is_empty() && !self.path_prefix.starts_with('/') {
            return Err(Error::config("path_prefix must start with '/'"));
        }
        Ok(())
    }

    /// Largest message in bytes.
    pub fn message_limit(&self) -> usize {
        self.backend.message_size_limit_kb.saturating_mul(1024)
    }

    /// Largest request body in bytes.
    pub fn body_limit(&self) -> usize {
        match self.backend.body_limit_kb {
            Some(kb) => kb.saturating_mul(1024),
            None => self.message_limit().saturating_mul(2).saturating_add(64 * 1024),
        }
    }
}
