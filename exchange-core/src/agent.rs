//! The [`Agent`] trait, its action table ([`Actions`]), its loops ([`Loops`]) and the
//! [`Context`] actions and loops run with.
//!
//! ```
//! use exchange_core::agent::{Actions, Agent};
//!
//! struct Calculator;
//!
//! impl Agent for Calculator {
//!     fn actions(&self, actions: &mut Actions<Self>) {
//!         actions.add("add", |_agent, (a, b): (i64, i64)| async move { Ok(a + b) });
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use tokio::sync::{Notify, watch};

use crate::client::Client;
use crate::error::{BoxError, Result};
use crate::exchange::{ACADEMY_AGENT_BASE, Exchange};
use crate::handle::Handle;
use crate::id::{AgentId, EntityId};
use crate::manager::Manager;
use crate::message::{ActionRequest, ActionResponse, Body, Strategy, UserError};
use crate::payload;

/// A stateful actor: actions callers invoke, loops that run on their own, and lifecycle hooks.
///
/// Methods take `&self`; keep mutable state behind a lock or atomics.
#[async_trait]
pub trait Agent: Send + Sync + Sized + 'static {
    /// Behaviour names, most-derived first: what `discover` matches. List the Python classes
    /// this agent stands in for, and end with [`ACADEMY_AGENT_BASE`] (the default is the Rust
    /// type path with `.` separators, then the base).
    fn behaviors(&self) -> Vec<String> {
        vec![std::any::type_name::<Self>().replace("::", "."), ACADEMY_AGENT_BASE.to_owned()]
    }

    /// Registers the actions callers may invoke.
    fn actions(&self, actions: &mut Actions<Self>) {
        let _ = actions;
    }

    /// Registers control, timer and event loops.
    fn loops(&self, loops: &mut Loops<Self>) {
        let _ = loops;
    }

    /// Runs before any action or loop; pings wait for it.
    ///
    /// # Errors
    /// An error stops the agent.
    async fn startup(&self, ctx: &Context<Self>) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }

    /// Runs once when the agent stops, after its loops and actions were cancelled.
    ///
    /// # Errors
    /// Reported as the agent's failure.
    async fn shutdown(&self, ctx: &Context<Self>) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }
}

/// What every action and loop of one running agent shares.
pub(crate) struct Shared {
    pub(crate) id: AgentId,
    pub(crate) client: Client,
    /// `true` once the agent begins to stop.
    pub(crate) stopping: watch::Sender<bool>,
    /// Set by [`Context::shutdown`] and the manager: `Some(terminate override)`.
    pub(crate) stop_request: Arc<watch::Sender<Option<Option<bool>>>>,
    /// Agents launched alongside this one, stopped when it stops.
    pub(crate) children: Manager,
}

/// What an action or loop sees: the agent (`Deref`), its id, the caller, and a way to call
/// other agents from the agent's own mailbox.
pub struct Context<A> {
    agent: Arc<A>,
    shared: Arc<Shared>,
    caller: Option<EntityId>,
}

impl<A> Clone for Context<A> {
    fn clone(&self) -> Self {
        Context { agent: self.agent.clone(), shared: self.shared.clone(), caller: self.caller.clone() }
    }
}

impl<A> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("agent", &self.shared.id).field("caller", &self.caller).finish()
    }
}

impl<A> Deref for Context<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.agent
    }
}

impl<A> Context<A> {
    pub(crate) fn new(agent: Arc<A>, shared: Arc<Shared>, caller: Option<EntityId>) -> Self {
        Context { agent, shared, caller }
    }

    /// The agent itself, shared.
    pub fn agent(&self) -> &Arc<A> {
        &self.agent
    }

    /// This agent's id.
    pub fn id(&self) -> &AgentId {
        &self.shared.id
    }

    /// Who sent the request being served (`None` in loops and hooks).
    pub fn caller(&self) -> Option<&EntityId> {
        self.caller.as_ref()
    }

    /// The exchange the agent runs on.
    pub fn exchange(&self) -> &Arc<dyn Exchange> {
        self.shared.client.exchange()
    }

    /// A handle to another agent that sends from this agent's mailbox.
    pub fn handle(&self, agent: &AgentId) -> Handle {
        self.shared.client.handle(agent)
    }

    /// Agents whose behaviours match (see [`Exchange::discover`]).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn discover(&self, behavior: &str, allow_subclasses: bool) -> Result<Vec<AgentId>> {
        self.exchange().discover(behavior, allow_subclasses).await
    }

    /// Launches `agent` as a child of this agent, on the same tokio runtime (Academy's
    /// `agent_launch_alongside`). The returned handle sends from this agent's mailbox; the
    /// child is stopped, and waited for, when this agent stops (after its shutdown hook).
    ///
    /// # Errors
    /// Transport failures while registering the child.
    pub async fn launch_alongside<B: Agent>(&self, agent: B) -> Result<Handle> {
        self.shared.children.launch(agent).await
    }

    /// Asks this agent to stop (its mailbox is terminated per its policy).
    pub fn shutdown(&self) {
        self.shared.stop_request.send_if_modified(|request| {
            if request.is_some() {
                return false;
            }
            *request = Some(None);
            true
        });
    }

    /// Whether the agent has begun to stop.
    pub fn is_shutting_down(&self) -> bool {
        *self.shared.stopping.borrow()
    }

    /// Completes when the agent begins to stop (or has already).
    pub async fn shutdown_requested(&self) {
        let mut stopping = self.shared.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }
}

/// What an action does with a request: decode, run, encode. Never panics on bad input.
pub(crate) type ActionFn<A> = Arc<dyn Fn(Context<A>, ActionRequest) -> BoxFuture<'static, Body> + Send + Sync>;

/// The actions of an agent type, by name.
pub struct Actions<A> {
    pub(crate) table: HashMap<String, ActionFn<A>>,
}

impl<A> fmt::Debug for Actions<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.table.keys()).finish()
    }
}

impl<A: Send + Sync + 'static> Actions<A> {
    pub(crate) fn new() -> Self {
        Actions { table: HashMap::new() }
    }

    /// Registers an action taking positional arguments decoded as `P` (a tuple such as
    /// `(i64, i64)`, `(String,)`, `()` or a `Vec`) and returning `R`. Keyword arguments must
    /// be empty; use [`Actions::add_with_kwargs`] to accept them.
    pub fn add<P, R, F, Fut>(&mut self, name: &str, action: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context<A>, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, BoxError>> + Send + 'static,
    {
        let action_name = name.to_owned();
        let f: ActionFn<A> = Arc::new(move |ctx, request| {
            if let Err(error) = no_kwargs(&action_name, &request) {
                return Box::pin(std::future::ready(error));
            }
            match decode_args::<P>(&action_name, &request) {
                Ok(args) => {
                    let running = action(ctx, args);
                    let answer = Answer::to(&request);
                    Box::pin(async move { answer.encode(running.await) })
                }
                Err(error) => Box::pin(std::future::ready(error)),
            }
        });
        self.table.insert(name.to_owned(), f);
        self
    }

    /// Registers an action taking positional arguments `P` and keyword arguments `K` (a
    /// struct or map decoded from the keyword object).
    pub fn add_with_kwargs<P, K, R, F, Fut>(&mut self, name: &str, action: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        K: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context<A>, P, K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, BoxError>> + Send + 'static,
    {
        let action_name = name.to_owned();
        let f: ActionFn<A> = Arc::new(move |ctx, request| {
            let answer = Answer::to(&request);
            let args = decode_args::<P>(&action_name, &request);
            let kwargs = request
                .kwargs::<K>()
                .map_err(|e| answer.error(format!("TypeError: bad keyword arguments for {action_name}: {e}")));
            match (args, kwargs) {
                (Ok(args), Ok(kwargs)) => {
                    let running = action(ctx, args, kwargs);
                    Box::pin(async move { answer.encode(running.await) })
                }
                (Err(error), _) | (_, Err(error)) => Box::pin(std::future::ready(error)),
            }
        });
        self.table.insert(name.to_owned(), f);
        self
    }

    /// The registered action names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.table.keys().cloned().collect();
        names.sort();
        names
    }
}

fn no_kwargs(action: &str, request: &ActionRequest) -> Result<(), Body> {
    let kargs = request.kargs.trim();
    if kargs == "{}" || kargs.is_empty() || request.kwargs::<HashMap<String, IgnoredAny>>().is_ok_and(|m| m.is_empty())
    {
        Ok(())
    } else {
        Err(Answer::to(request).error(format!("TypeError: {action}() takes no keyword arguments")))
    }
}

/// Decodes positional arguments; json `[]` also decodes as `()` (unit reads `null` in serde).
fn decode_args<P: DeserializeOwned>(action: &str, request: &ActionRequest) -> Result<P, Body> {
    request
        .args::<P>()
        .or_else(|e| match request.serialization {
            Strategy::Json if request.pargs.trim() == "[]" => payload::decode::<P>("null").map_err(|_| e),
            _ => Err(e),
        })
        .map_err(|e| Answer::to(request).error(format!("TypeError: bad arguments for {action}: {e}")))
}

/// How to answer one request: the result and exception strategies it asked for.
#[derive(Clone, Copy)]
pub(crate) struct Answer {
    result: Strategy,
    exception: Strategy,
}

impl Answer {
    /// The strategies `request` asked for (Academy's rules).
    pub(crate) fn to(request: &ActionRequest) -> Answer {
        Answer {
            result: request.effective_result_serialization(),
            exception: request.effective_exception_serialization(),
        }
    }

    /// A `user-error-response` carrying `text`.
    pub(crate) fn error(self, text: impl Into<String>) -> Body {
        Body::UserError(UserError::new(self.exception, text))
    }

    /// The response to an action's outcome.
    pub(crate) fn encode<R: Serialize>(self, result: Result<R, BoxError>) -> Body {
        match result.map_err(|e| e.to_string()).and_then(|value| {
            ActionResponse::new(self.result, &value).map_err(|e| format!("TypeError: cannot encode the result: {e}"))
        }) {
            Ok(response) => Body::ActionResponse(response),
            Err(text) => self.error(text),
        }
    }
}

/// A loop body: runs with a context until the agent stops.
pub(crate) type LoopFn<A> = Box<dyn FnOnce(Context<A>) -> BoxFuture<'static, Result<(), BoxError>> + Send>;

/// The loops of one agent.
pub struct Loops<A> {
    pub(crate) loops: Vec<(String, LoopFn<A>)>,
}

impl<A> fmt::Debug for Loops<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.loops.iter().map(|(name, _)| name)).finish()
    }
}

impl<A: Send + Sync + 'static> Loops<A> {
    pub(crate) fn new() -> Self {
        Loops { loops: Vec::new() }
    }

    /// A control loop: `body` runs once after startup and should return when
    /// [`Context::is_shutting_down`] (it is aborted at shutdown anyway). An error stops the agent.
    pub fn control<F, Fut>(&mut self, name: &str, body: F) -> &mut Self
    where
        F: FnOnce(Context<A>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.loops.push((name.to_owned(), Box::new(move |ctx| Box::pin(body(ctx)))));
        self
    }

    /// A timer loop: `body` runs every `period` (first after one period) until shutdown.
    pub fn timer<F, Fut>(&mut self, name: &str, period: Duration, body: F) -> &mut Self
    where
        F: Fn(Context<A>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.control(name, move |ctx| async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                body(ctx.clone()).await?;
            }
        })
    }

    /// An event loop: `body` runs each time `event` is notified, until shutdown.
    pub fn event<F, Fut>(&mut self, name: &str, event: Arc<Notify>, body: F) -> &mut Self
    where
        F: Fn(Context<A>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.control(name, move |ctx| async move {
            loop {
                event.notified().await;
                body(ctx.clone()).await?;
            }
        })
    }
}
