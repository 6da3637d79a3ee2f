//! The server's TOML configuration file (Academy's keys plus a few of ours; see docs/HTTP.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use exchange_core::{Error, Result, redact_url};
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
    /// Redis connections that waiting receives (long polls, event streams) share, whatever
    /// their number (Redis storage; besides the one command connection).
    pub redis_blocking_connections: usize,
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
            redis_blocking_connections: super::redis_store::DEFAULT_BLOCKING_CONNECTIONS,
        }
    }
}

/// Longest expiration accepted for `[backend]` keys (100 years).
pub const MAX_EXPIRATION_DAYS: f64 = 36_500.0;

/// Longest duration accepted anywhere in the configuration (one day), so no deadline computed
/// from a configured value can overflow.
pub const MAX_CONFIG_SECONDS: f64 = 86_400.0;

/// `[auth]`: how callers are identified. Absent, or without `method`: no authentication.
/// `Debug` shows neither tokens nor kwargs.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// `"token"`: bearer tokens from [`AuthConfig::tokens`]. Academy's `"globus"` is read but
    /// refused at start (this server cannot introspect Globus tokens).
    #[serde(default)]
    pub method: Option<String>,
    /// Token → identity (`method = "token"`).
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenEntry>,
    /// Academy's authenticator arguments (`[auth.kwargs]`, Globus client id and secret);
    /// accepted for Academy's files, never shown.
    #[serde(default)]
    pub kwargs: toml::Table,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("method", &self.method)
            .field("tokens", &format_args!("{} tokens", self.tokens.len()))
            .field("kwargs", &self.kwargs.keys().collect::<Vec<_>>())
            .finish()
    }
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
    /// May see the status page and `GET /admin/mailboxes` (ours; default `false`).
    #[serde(default)]
    pub admin: bool,
}

/// `[backend]`: where mailboxes live and how large messages may be. `Debug` hides the URL's
/// password and the kwargs' values.
#[derive(Clone, Deserialize)]
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
    /// Seconds a Redis command may take before its request answers `503` (`kind = "redis"`;
    /// our extension, default 5). Connecting is limited to 1 s whatever this says.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_s: f64,
    /// Seconds between passes that add agents registered by other servers (Academy's) to our
    /// discover index (`kind = "redis"`; our extension, default 10).
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval_s: f64,
    /// A Redis URL (`redis://[user:password@]host:port/db`, `rediss://…`, `redis+unix:///path`)
    /// instead of `hostname` and `port` (`kind = "redis"`; our extension).
    #[serde(default)]
    pub url: Option<String>,
    /// PEM file of the CA that signed a `rediss://` server's certificate (our extension).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Academy's extra Redis client options (`[backend.kwargs]`): `username`, `password`,
    /// `db`, `ssl`, `ssl_ca_certs`, `unix_socket_path`; others are refused.
    #[serde(default)]
    pub kwargs: toml::Table,
}

impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("kind", &self.kind)
            .field("message_size_limit_kb", &self.message_size_limit_kb)
            .field("body_limit_kb", &self.body_limit_kb)
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("mailbox_expiration_d", &self.mailbox_expiration_d)
            .field("gravestone_expiration_d", &self.gravestone_expiration_d)
            .field("command_timeout_s", &self.command_timeout_s)
            .field("reconcile_interval_s", &self.reconcile_interval_s)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("ca_file", &self.ca_file)
            .field("kwargs", &self.kwargs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `[backend.kwargs]` keys understood (redis-py's names, as Academy passes them on).
const REDIS_KWARGS: &[&str] = &["username", "password", "db", "ssl", "ssl_ca_certs", "unix_socket_path"];

fn default_command_timeout() -> f64 {
    5.0
}

fn default_reconcile_interval() -> f64 {
    10.0
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

/// `[logger]`: Academy's keys (console level, a log file with its own level, daily rotation)
/// plus the output format.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LoggerConfig {
    /// Console (stderr) level: a Python level name or number (`"WARNING"`, `20`) or a tracing
    /// filter (`"info"`, `"exchange_http=debug,info"`); default `info`. `RUST_LOG` wins.
    pub level: Option<LogLevel>,
    /// Also write logs to this file (its folder is created).
    pub logfile: Option<PathBuf>,
    /// Level of the log file (default `INFO`, as Academy).
    pub logfile_level: Option<LogLevel>,
    /// Rotate the log file every `rotation_interval_days`, keeping `backup_count` old files
    /// named `<logfile>.YYYY-MM-DD` (as Python's `TimedRotatingFileHandler`).
    pub rotate: bool,
    /// Days between rotations (at least 1).
    pub rotation_interval_days: u32,
    /// Rotated files kept (at least 1).
    pub backup_count: u32,
    /// `"text"` (default) or `"json"` (one JSON object per line, for log collectors).
    pub format: LogFormat,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig {
            level: None,
            logfile: None,
            logfile_level: None,
            rotate: false,
            rotation_interval_days: 1,
            backup_count: 7,
            format: LogFormat::Text,
        }
    }
}

/// A log level as Academy's files write it: a number or a name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum LogLevel {
    /// A Python logging level number (10 debug, 20 info, 30 warning, 40 error, 50 critical).
    Number(i64),
    /// A Python level name (any case) or a tracing filter directive.
    Name(String),
}

impl LogLevel {
    /// The tracing filter directive of this level.
    ///
    /// # Errors
    /// [`Error::Config`] for a word that is not a level (filters with `=` or `,` are checked
    /// by the caller when the filter is built).
    pub fn directive(&self) -> Result<String> {
        let level = match self {
            LogLevel::Number(n) => match n {
                ..=5 => "trace",
                6..=10 => "debug",
                11..=20 => "info",
                21..=30 => "warn",
                31..=50 => "error",
                _ => "off",
            },
            LogLevel::Name(name) if name.contains(['=', ',']) => return Ok(name.clone()),
            LogLevel::Name(name) => match name.to_ascii_lowercase().as_str() {
                "notset" | "trace" => "trace",
                "debug" => "debug",
                "info" => "info",
                "warning" | "warn" => "warn",
                "error" | "critical" | "fatal" => "error",
                "off" => "off",
                _ => {
                    return Err(Error::config(format!(
                        "[logger] level {name:?} is not a level (use DEBUG, INFO, WARNING, ERROR, CRITICAL, a number, \
                         or a tracing filter such as \"exchange_http=debug,info\")"
                    )));
                }
            },
        };
        Ok(level.to_owned())
    }
}

/// Format of log lines.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal only; `NO_COLOR` honoured).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
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
            command_timeout_s: default_command_timeout(),
            reconcile_interval_s: default_reconcile_interval(),
            url: None,
            ca_file: None,
            kwargs: toml::Table::new(),
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
        seconds("[backend] command_timeout_s", self.backend.command_timeout_s)?;
        seconds("[backend] reconcile_interval_s", self.backend.reconcile_interval_s)?;
        for (name, value) in [
            ("max_connections", limits.max_connections),
            ("mailbox_max_messages", limits.mailbox_max_messages),
            ("mailbox_max_pending", limits.mailbox_max_pending),
            ("mailbox_max_mb", limits.mailbox_max_mb),
            ("store_max_mb", limits.store_max_mb),
            ("store_max_mailboxes", limits.store_max_mailboxes),
            ("redis_blocking_connections", limits.redis_blocking_connections),
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
        match self.auth.as_ref().and_then(|auth| auth.method.as_deref()) {
            None | Some("token") => {}
            Some("globus") => {
                return Err(Error::config(
                    "[auth] method \"globus\" is not supported by this server (it cannot introspect Globus tokens); \
                     use method = \"token\" with [auth.tokens], or Academy's own server for Globus auth",
                ));
            }
            Some(other) => {
                return Err(Error::config(format!("[auth] method {other:?} is not supported (use \"token\")")));
            }
        }
        for key in self.backend.kwargs.keys() {
            if !REDIS_KWARGS.contains(&key.as_str()) {
                return Err(Error::config(format!(
                    "[backend.kwargs] {key:?} is not supported (supported: {})",
                    REDIS_KWARGS.join(", ")
                )));
            }
        }
        if let Some(level) = &self.logger.level {
            level.directive()?;
        }
        if let Some(level) = &self.logger.logfile_level {
            level.directive()?;
        }
        if self.logger.rotation_interval_days == 0 || self.logger.backup_count == 0 {
            return Err(Error::config("[logger] rotation_interval_days and backup_count must be at least 1"));
        }
        if self.keyfile.is_some() && self.certfile.is_none() {
            return Err(Error::config("keyfile given without certfile"));
        }
        if !self.path_prefix.is_empty() && !self.path_prefix.starts_with('/') {
            return Err(Error::config("path_prefix must start with '/'"));
        }
        Ok(())
    }

    /// The Redis URL of `[backend]`: `url`, or one built from Academy's `hostname`, `port`
    /// and `[backend.kwargs]`.
    ///
    /// # Errors
    /// [`Error::Config`] for ill-typed kwargs.
    pub fn redis_url(&self) -> Result<String> {
        let backend = &self.backend;
        if let Some(url) = &backend.url {
            return Ok(url.clone());
        }
        let kwargs = &backend.kwargs;
        let text = |key: &str| -> Result<Option<String>> {
            match kwargs.get(key) {
                None => Ok(None),
                Some(toml::Value::String(v)) => Ok(Some(v.clone())),
                Some(other) => Err(Error::config(format!("[backend.kwargs] {key} must be a string, not {other}"))),
            }
        };
        let db = match kwargs.get("db") {
            None => 0,
            Some(toml::Value::Integer(db)) if *db >= 0 => *db,
            Some(other) => return Err(Error::config(format!("[backend.kwargs] db must be a number, not {other}"))),
        };
        let ssl = match kwargs.get("ssl") {
            None => false,
            Some(toml::Value::Boolean(ssl)) => *ssl,
            Some(other) => {
                return Err(Error::config(format!("[backend.kwargs] ssl must be true or false, not {other}")));
            }
        };
        let encode = |part: &str| {
            part.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        let credentials = match (text("username")?, text("password")?) {
            (None, None) => String::new(),
            (user, password) => format!(
                "{}:{}@",
                user.as_deref().map(encode).unwrap_or_default(),
                password.as_deref().map(encode).unwrap_or_default()
            ),
        };
        if let Some(path) = text("unix_socket_path")? {
            return Ok(format!("redis+unix://{path}?db={db}"));
        }
        let scheme = if ssl { "rediss" } else { "redis" };
        Ok(format!("{scheme}://{credentials}{}:{}/{db}", backend.hostname, backend.port))
    }

    /// The CA file for a `rediss://` Redis: `ca_file`, or Academy's `ssl_ca_certs` kwarg.
    pub fn redis_ca_file(&self) -> Option<PathBuf> {
        self.backend.ca_file.clone().or_else(|| match self.backend.kwargs.get("ssl_ca_certs") {
            Some(toml::Value::String(path)) => Some(PathBuf::from(path)),
            _ => None,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Academy 1.0's own server files (its config tests and docs), read with the same meaning.
    #[test]
    fn reads_academy_server_files() {
        let config = ServerConfig::from_toml(
            r#"
host = "localhost"
port = 1234
listen_timeout_s = 60

[backend]
kind = "redis"
hostname = "redis.example"
port = 6380
message_size_limit_kb = 256
mailbox_expiration_d = 2.5
gravestone_expiration_d = 30

[backend.kwargs]
password = "p@ss word"
db = 3

[logger]
level = "WARNING"
logfile = "/tmp/exchange/log.txt"
logfile_level = 10
rotate = true
rotation_interval_days = 2
backup_count = 3
"#,
        )
        .unwrap();
        assert_eq!((config.host.as_str(), config.port, config.backend.port), ("localhost", 1234, 6380));
        assert_eq!(config.redis_url().unwrap(), "redis://:p%40ss%20word@redis.example:6380/3");
        assert_eq!(config.logger.level.as_ref().unwrap().directive().unwrap(), "warn");
        assert_eq!(config.logger.logfile_level.as_ref().unwrap().directive().unwrap(), "debug");
        assert_eq!((config.logger.rotation_interval_days, config.logger.backup_count), (2, 3));
        assert!(!format!("{config:?}").contains("p@ss"), "Debug shows a password");
        // `[auth]` without a method is no authentication, as in Academy.
        let open = ServerConfig::from_toml("[auth]\n").unwrap();
        assert!(open.auth.unwrap().method.is_none());
        let unix = ServerConfig::from_toml(
            "[backend]\nkind = \"redis\"\n[backend.kwargs]\nunix_socket_path = \"/run/r.sock\"",
        )
        .unwrap();
        assert_eq!(unix.redis_url().unwrap(), "redis+unix:///run/r.sock?db=0");
        let tls = ServerConfig::from_toml(
            "[backend]\nkind = \"redis\"\n[backend.kwargs]\nssl = true\nssl_ca_certs = \"ca.pem\"",
        )
        .unwrap();
        assert_eq!(tls.redis_url().unwrap(), "rediss://localhost:6379/0");
        assert_eq!(tls.redis_ca_file(), Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn refuses_what_cannot_work_with_a_reason() {
        let cases = [
            ("[logger]\nlevel = \"loud\"", "not a level"),
            ("[logger]\nlogfile_level = \"verbose\"", "not a level"),
            ("[logger]\nrotation_interval_days = 0", "at least 1"),
            ("[auth]\nmethod = \"globus\"\n[auth.kwargs]\nclient_id = \"ABC\"", "globus"),
            ("[backend]\n[backend.kwargs]\nretry_on_timeout = true", "retry_on_timeout"),
            ("[logger]\nlogfile_size = 3", "logfile_size"),
            ("[backend]\ncommand_timeout_s = 0", "command_timeout_s must be a number of seconds above 0"),
            ("[backend]\nreconcile_interval_s = 1e19", "reconcile_interval_s must be a number of seconds above 0"),
            ("[limits]\nredis_blocking_connections = 0", "redis_blocking_connections must be at least 1"),
        ];
        for (toml, reason) in cases {
            match ServerConfig::from_toml(toml) {
                Err(Error::Config { message }) => assert!(message.contains(reason), "{toml}: {message}"),
                other => panic!("{toml}: accepted ({other:?})"),
            }
        }
        // Unknown keys name the line and the accepted keys.
        let Err(Error::Config { message }) = ServerConfig::from_toml("port = 1\n[logger]\nlogfile_size = 3") else {
            panic!("accepted an unknown key")
        };
        assert!(message.contains("line 3") && message.contains("logfile_level"), "{message}");
    }
}
