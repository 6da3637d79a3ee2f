//! [`Handle`]: calls an agent's actions, pings it, shuts it down.
//!
//! A handle sends from its [`Client`]'s mailbox (a user's, or an agent's own when called from
//! inside an agent) with its own label; the client's listener hands each response to the
//! waiting call. Dropping a call before it completes (a timeout, a cancelled task) sends a
//! `cancel-request` for it, as Academy's handles do.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use uuid::Uuid;

use crate::client::{AgentStatus, Client};
use crate::error::{Error, Result};
use crate::exchange::MailboxStats;
use crate::id::{AgentId, EntityId};
use crate::message::{ActionRequest, Body, ErrorCode, Message, Strategy};
use crate::payload;
use crate::pickle::{self, PyValue};

/// A client-side reference to one agent. Cheap to clone; clones share the label.
#[derive(Clone)]
pub struct Handle {
    client: Client,
    target: AgentId,
    label: Uuid,
    timeout: Option<Duration>,
    serializer: Strategy,
    reject_on_inactive: bool,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("agent", &self.target).field("client", self.client.id()).finish()
    }
}

impl Handle {
    pub(crate) fn new(client: Client, target: AgentId) -> Handle {
        Handle {
            client,
            target,
            label: Uuid::new_v4(),
            timeout: None,
            serializer: Strategy::Json,
            reject_on_inactive: false,
        }
    }

    /// The agent this handle calls.
    pub fn agent_id(&self) -> &AgentId {
        &self.target
    }

    /// The mailbox requests are sent from.
    pub fn client_id(&self) -> &EntityId {
        self.client.id()
    }

    /// This handle with a timeout applied to every call (a timed-out call is cancelled
    /// remotely and fails with [`Error::Timeout`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Handle {
        self.timeout = Some(timeout);
        self
    }

    /// This handle with the strategy its calls encode arguments in (and ask results and
    /// errors back in).
    ///
    /// The default is [`Strategy::Json`]: json is readable on the wire, needs no allow-list to
    /// decode safely, and is what Rust agents decode fastest. Use [`Strategy::Pickle`] to call
    /// a Python agent whose runtime accepts only pickle (`allowed_deserializers`), or whose
    /// actions need Python types json cannot carry (tuples, sets, bytes); arguments and
    /// results must then be Python's basic values (see [`crate::pickle`]).
    pub fn with_serializer(mut self, serializer: Strategy) -> Handle {
        self.serializer = serializer;
        self
    }

    /// This handle failing calls with [`Error::AgentInactive`] at once, instead of sending
    /// them, when the agent's heartbeat is stale (Academy's `reject_on_inactive`: status
    /// [`AgentStatus::Inactive`], read before each call). Pings are not checked, so a ping
    /// can wait for an agent to come up.
    pub fn with_reject_on_inactive(mut self, reject: bool) -> Handle {
        self.reject_on_inactive = reject;
        self
    }

    /// Calls `action` with positional arguments `args` (a tuple, array or `()`), decoding the
    /// result as `R`.
    ///
    /// # Errors
    /// [`Error::Remote`] when the action failed (including unknown actions and argument
    /// mismatches), [`Error::ActionCancelled`], [`Error::MailboxTerminated`] when the agent is
    /// gone, [`Error::Timeout`], [`Error::Codec`] when the result does not decode as `R`,
    /// [`Error::AgentInactive`] (see [`Handle::with_reject_on_inactive`]).
    pub async fn call<R: DeserializeOwned>(&self, action: &str, args: impl Serialize) -> Result<R> {
        self.call_encoded(action, self.encode_args(&args)?, self.encode_kwargs(&())?).await
    }

    /// Calls `action` with positional and keyword arguments (`kwargs` serializes as an object).
    ///
    /// # Errors
    /// As [`Handle::call`].
    pub async fn call_with_kwargs<R: DeserializeOwned>(
        &self,
        action: &str,
        args: impl Serialize,
        kwargs: impl Serialize,
    ) -> Result<R> {
        self.call_encoded(action, self.encode_args(&args)?, self.encode_kwargs(&kwargs)?).await
    }

    /// Calls `action` with a timeout for this call only.
    ///
    /// # Errors
    /// As [`Handle::call`].
    pub async fn call_timeout<R: DeserializeOwned>(
        &self,
        action: &str,
        args: impl Serialize,
        timeout: Duration,
    ) -> Result<R> {
        self.clone().with_timeout(timeout).call(action, args).await
    }

    async fn call_encoded<R: DeserializeOwned>(&self, action: &str, pargs: String, kargs: String) -> Result<R> {
        let span = tracing::info_span!(
            "call",
            academy.agent_id = %self.target,
            academy.action = action,
            academy.action_tag = tracing::field::Empty,
            academy.src = %self.client.id(),
        );
        let started = Instant::now();
        let result = self.call_once(action, pargs, kargs).instrument(span.clone()).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(latency_ms, academy.action_state = "success", "call completed"),
            Err(e) => tracing::debug!(latency_ms, error = %e, academy.action_state = "exception", "call failed"),
        });
        result
    }

    async fn call_once<R: DeserializeOwned>(&self, action: &str, pargs: String, kargs: String) -> Result<R> {
        let body = Body::ActionRequest(ActionRequest {
            action: action.to_owned(),
            serialization: self.serializer,
            result_serialization: None,
            exception_serialization: None,
            pargs,
            kargs,
        });
        if self.reject_on_inactive && self.status().await? == AgentStatus::Inactive {
            return Err(Error::AgentInactive { id: self.target.clone().into() });
        }
        match self.request(body, true).await?.body {
            Body::ActionResponse(response) => response.result(),
            other => Err(self.unexpected(other)),
        }
    }

    /// Pings the agent (waits for its startup) and returns the round-trip time.
    ///
    /// # Errors
    /// [`Error::PingCancelled`] if the agent stopped first, [`Error::MailboxTerminated`],
    /// [`Error::Timeout`].
    pub async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        match self.request(Body::PingRequest, false).await?.body {
            Body::SuccessResponse => Ok(started.elapsed()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Asks the agent to shut down; does not wait. `terminate` overrides whether its mailbox
    /// is terminated (`None` = the agent's policy, by default yes).
    ///
    /// # Errors
    /// [`Error::MailboxTerminated`] when the agent is already gone; transport failures.
    pub async fn shutdown(&self, terminate: Option<bool>) -> Result<()> {
        let message =
            Message::request(self.client.id().clone(), self.target.clone(), Body::ShutdownRequest { terminate })
                .with_label(self.label);
        self.client.exchange().send(message).await
    }

    /// Liveness of the agent, from its heartbeat.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn status(&self) -> Result<AgentStatus> {
        self.client.status(&self.target).await
    }

    /// The agent mailbox's message counters (Academy's `agent_stats`).
    ///
    /// # Errors
    /// [`Error::BadEntityId`] for an unknown agent; transport failures.
    pub async fn stats(&self) -> Result<MailboxStats> {
        self.client.exchange().stats(&self.target.clone().into()).await
    }

    /// Sends a request and waits for its response (within the handle's timeout).
    async fn request(&self, body: Body, cancel_on_drop: bool) -> Result<Message> {
        let message = Message::request(self.client.id().clone(), self.target.clone(), body).with_label(self.label);
        let tag = message.header.tag;
        tracing::Span::current().record("academy.action_tag", tracing::field::display(tag));
        let rx = self.client.expect(tag, Some(self.label))?;
        let mut guard = Waiting { handle: self, tag, cancel: false };
        self.client.exchange().send(message).await?;
        guard.cancel = cancel_on_drop;
        let received = match self.timeout {
            None => rx.await,
            Some(timeout) => match tokio::time::timeout(timeout, rx).await {
                Ok(received) => received,
                Err(_) => return Err(Error::Timeout { timeout }),
            },
        };
        guard.cancel = false;
        let response = received.map_err(|_| self.client.closed_error())?;
        response.header.check_protocol()?;
        Ok(response)
    }

    /// Positional arguments: a json array or a pickled tuple (`()` is empty).
    fn encode_args(&self, args: &impl Serialize) -> Result<String> {
        match self.serializer {
            Strategy::Json => {
                let text = payload::encode(args)?;
                Ok(if text == "null" { "[]".to_owned() } else { text })
            }
            Strategy::Pickle => {
                let items = match pickle::to_value(args)? {
                    PyValue::None => Vec::new(),
                    PyValue::Tuple(items) | PyValue::List(items) => items,
                    other => {
                        return Err(Error::codec(format!(
                            "positional arguments must be a tuple or sequence, not {}",
                            other.type_name()
                        )));
                    }
                };
                pickle::encode(&PyValue::Tuple(items))
            }
        }
    }

    /// Keyword arguments: an object or dict (`()` is empty).
    fn encode_kwargs(&self, kwargs: &impl Serialize) -> Result<String> {
        match self.serializer {
            Strategy::Json => {
                let text = payload::encode(kwargs)?;
                Ok(if text == "null" { "{}".to_owned() } else { text })
            }
            Strategy::Pickle => match pickle::to_value(kwargs)? {
                PyValue::None => pickle::encode(&PyValue::Dict(Vec::new())),
                dict @ PyValue::Dict(_) => pickle::encode(&dict),
                other => Err(Error::codec(format!("keyword arguments must be a map, not {}", other.type_name()))),
            },
        }
    }

    /// The error a non-success response stands for.
    fn unexpected(&self, body: Body) -> Error {
        match body {
            Body::UserError(error) => Error::Remote { message: error.text() },
            Body::AcademyError(error) => match error.error_code {
                ErrorCode::MailboxTerminated => {
                    Error::MailboxTerminated { id: error.mailbox_id.unwrap_or_else(|| self.target.clone().into()) }
                }
                ErrorCode::PingCancelled => Error::PingCancelled,
                ErrorCode::ActionInvalidState => Error::ActionInvalidState,
                ErrorCode::ActionCancelled => Error::ActionCancelled,
                ErrorCode::InvalidClient => {
                    Error::InvalidClient { id: error.mailbox_id.unwrap_or_else(|| self.target.clone().into()) }
                }
                ErrorCode::IncompatibleProtocol => Error::IncompatibleProtocol { version: None },
            },
            other => Error::codec(format!("unexpected {} in answer to a request", other.kind_name().unwrap_or("body"))),
        }
    }
}

/// Forgets a call when it ends; if it ends before its response (dropped, timed out), sends a
/// `cancel-request` for it.
struct Waiting<'a> {
    handle: &'a Handle,
    tag: Uuid,
    cancel: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.handle.client.forget(&self.tag);
        if !self.cancel {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let cancel = Message::request(
            self.handle.client.id().clone(),
            self.handle.target.clone(),
            Body::CancelRequest { target_tag: self.tag },
        )
        .with_label(self.handle.label);
        let exchange = self.handle.client.exchange().clone();
        runtime.spawn(async move {
            let _ = exchange.send(cancel).await;
        });
    }
}
