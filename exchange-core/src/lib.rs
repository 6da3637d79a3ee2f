//! Core of the exchange framework: identifiers, messages, errors, and the [`Exchange`] and
//! [`Mailbox`] traits that every transport (in-process, Redis, HTTP) implements.
//!
//! Messages and identifiers serialize to exactly Academy 1.x's JSON, so Rust and Python peers
//! can share one exchange.

pub mod agent;
pub mod client;
pub mod error;
pub mod exchange;
pub mod handle;
pub mod id;
pub mod manager;
pub mod message;
pub mod payload;
pub mod pickle;
pub mod redact;
pub mod runtime;
pub mod wait;

pub use agent::{Actions, Agent, Context, Loops};
/// Attribute for implementing [`Agent`]'s async hooks (`startup`, `shutdown`).
pub use async_trait::async_trait;
pub use client::{AgentStatus, Client};
pub use error::{BoxError, Error, Result};
pub use exchange::{ACADEMY_AGENT_BASE, AgentRegistration, Exchange, Mailbox, MailboxStats, MailboxStatus};
pub use handle::Handle;
pub use id::{AgentId, EntityId, Role, UserId};
pub use manager::{LaunchOptions, Manager};
pub use message::{
    AcademyError, ActionRequest, ActionResponse, ActionResult, Body, ErrorCode, Header, LIBRARY_VERSION, Message,
    MessageKind, PROTOCOL_VERSION, RawBody, Strategy, UserError,
};
pub use pickle::PyValue;
pub use redact::redact_url;
pub use runtime::{Runtime, RuntimeConfig};
pub use uuid::Uuid;
