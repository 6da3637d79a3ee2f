//! Who is calling: the [`Authenticator`] trait, no authentication, and bearer tokens from the
//! configuration file.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::storage::{ApiError, Caller};

/// Turns a request's headers into a [`Caller`], or refuses it (401/403).
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller of a request with these headers.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] without credentials, [`ApiError::Forbidden`] for refused ones.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError>;
}

/// No authentication: every request is [`Caller::anonymous`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    async fn authenticate(&self, _headers: &HeaderMap) -> Result<Caller, ApiError> {
        Ok(Caller::anonymous())
    }
}

/// Bearer tokens mapped to client ids and groups (the spec's §3.6 rules with a fixed table).
#[derive(Clone, Debug, Default)]
pub struct TokenAuth {
    tokens: HashMap<String, Caller>,
}

impl TokenAuth {
    /// An empty table (every token refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` as `client_id`, member of `groups`.
    pub fn with_token<I, S>(mut self, token: impl Into<String>, client_id: impl Into<String>, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut groups: BTreeSet<String> = groups.into_iter().map(Into::into).collect();
        if groups.is_empty() {
            // As Academy: a client without groups ends up in the group "".
            groups.insert(String::new());
        }
        self.tokens.insert(token.into(), Caller { client_id: client_id.into(), groups, admin: false });
        self
    }

    /// Accepts `token` as [`with_token`](Self::with_token) does, as an admin (status page).
    pub fn with_admin_token<I, S>(self, token: impl Into<String>, client_id: impl Into<String>, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let token = token.into();
        let mut table = self.with_token(token.clone(), client_id, groups);
        if let Some(caller) = table.tokens.get_mut(&token) {
            caller.admin = true;
        }
        table
    }
}

/// The token of an `Authorization` header: `Bearer <token>`, or `Basic` credentials whose
/// password is the token (what a browser sends for the status page; the user name is ignored).
fn token_of(value: &str) -> Option<String> {
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_owned())
}

#[async_trait]
impl Authenticator for TokenAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_of)
            .filter(|t| !t.is_empty() && !t.contains(' '))
            .ok_or_else(|| ApiError::Unauthorized("Missing required headers.".into()))?;
        self.tokens.get(&token).cloned().ok_or_else(|| ApiError::Forbidden("Token expired or revoked.".into()))
    }
}
