//! Client options: extra headers, bearer token, TLS verification, receive mode, retries.

use std::path::PathBuf;
use std::time::Duration;

/// How a mailbox handle receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvMode {
    /// One `GET /mailbox/listen` event stream per handle, started on the first receive, feeding
    /// a local buffer (lowest latency; messages read ahead are lost if the handle is closed).
    #[default]
    Sse,
    /// One `GET /message` long poll per received message (exactly one message per request).
    LongPoll,
}

/// Options of an [`crate::HttpExchange`]. `Debug` hides the token and header values.
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Verify server certificates (https); `false` accepts any certificate.
    pub verify_tls: bool,
    /// Extra PEM CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// How handles receive.
    pub recv_mode: RecvMode,
    /// `timeout` asked of the server per receive request or stream (60 s, Academy's default
    /// maximum; lowered automatically when a server answers that its maximum is smaller).
    pub listen_timeout: Duration,
    /// Retries of idempotent calls after a connection error (never for `PUT /message`).
    pub retries: u32,
    /// First retry delay (doubles per retry).
    pub retry_backoff: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("headers", &self.headers.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("verify_tls", &self.verify_tls)
            .field("ca_file", &self.ca_file)
            .field("recv_mode", &self.recv_mode)
            .field("listen_timeout", &self.listen_timeout)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            headers: Vec::new(),
            bearer_token: None,
            verify_tls: true,
            ca_file: None,
            recv_mode: RecvMode::Sse,
            listen_timeout: Duration::from_secs(60),
            retries: 3,
            retry_backoff: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl HttpOptions {
    /// Adds a header sent with every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Authenticates with a bearer token.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Turns certificate verification on or off.
    pub fn verify_tls(mut self, verify: bool) -> Self {
        self.verify_tls = verify;
        self
    }

    /// Trusts the CA certificates of a PEM file.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Chooses how handles receive.
    pub fn recv_mode(mut self, mode: RecvMode) -> Self {
        self.recv_mode = mode;
        self
    }

    /// The `timeout` asked of the server per receive request or stream.
    pub fn listen_timeout(mut self, timeout: Duration) -> Self {
        self.listen_timeout = timeout;
        self
    }

    /// Retries of idempotent calls after connection errors.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}
