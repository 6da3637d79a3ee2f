//! The agent runtime: one listener per agent mailbox that serves requests the way Academy's
//! runtime does (`academy/runtime.py`), so Python handles can call Rust agents.
//!
//! - `action-request`: runs concurrently (at most [`RuntimeConfig::max_concurrency`] at once,
//!   the rest queue), after startup; success → `action-response`, error → json
//!   `user-error-response`, cancelled → code 3, each in the strategy the request asked for
//!   (json, or pickle: see [`crate::pickle`]). Unknown actions get a `user-error-response`
//!   saying so.
//! - `ping-request` → `success-response` once started (code 1 if the agent stops first).
//! - `cancel-request` → `success-response` if the target is running (it answers code 3), else
//!   code 2.
//! - `shutdown-request` → `success-response`, then the agent stops (honouring `terminate`).
//! - Requests with an incompatible protocol version → code 5.
//! - Startup failed: every waiting request, and those arriving until the mailbox is quiet, get
//!   a json `user-error-response` saying why (Academy issue #288: callers must not wait for
//!   their timeouts); then the mailbox is terminated (by default), so later sends fail fast.
//! - Responses go to the agent's own handles (calls to other agents).
//!
//! Actions run inside the listener task (no task per call); loops run on their own tasks.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{AbortHandle, BoxFuture, FusedFuture, FutureExt, abortable};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use crate::agent::{ActionFn, Actions, Agent, Answer, Context, Loops, Shared};
use crate::client::{Client, HEARTBEAT_INTERVAL, refusal, start_heartbeat};
use crate::error::{BoxError, Error, Result};
use crate::exchange::{Exchange, Mailbox};
use crate::id::{AgentId, EntityId};
use crate::manager::Manager;
use crate::message::{AcademyError, ActionRequest, Body, ErrorCode, Header, Message, UserError};

/// Name of the built-in action that describes an agent (Academy's `agent_describe`).
pub const DESCRIBE_ACTION: &str = "agent_describe";

/// How an agent runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Most actions running at once; further requests wait in arrival order.
    pub max_concurrency: usize,
    /// Terminate the agent's mailbox after a clean stop (a shutdown request may override).
    pub terminate_on_success: bool,
    /// Terminate the agent's mailbox after a failure (startup, loop or shutdown hook).
    pub terminate_on_error: bool,
    /// Stop the agent when a loop fails (else the failure is only logged).
    pub shutdown_on_loop_error: bool,
    /// How often the agent posts its heartbeat.
    pub heartbeat_interval: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrency: 1024,
            terminate_on_success: true,
            terminate_on_error: true,
            shutdown_on_loop_error: true,
            heartbeat_interval: HEARTBEAT_INTERVAL,
        }
    }
}

impl RuntimeConfig {
    /// Sets [`RuntimeConfig::max_concurrency`] (at least 1).
    pub fn with_max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max.max(1);
        self
    }

    /// Sets [`RuntimeConfig::terminate_on_success`] and [`RuntimeConfig::terminate_on_error`].
    pub fn with_terminate(mut self, on_success: bool, on_error: bool) -> Self {
        self.terminate_on_success = on_success;
        self.terminate_on_error = on_error;
        self
    }

    /// Sets [`RuntimeConfig::shutdown_on_loop_error`].
    pub fn with_shutdown_on_loop_error(mut self, stop: bool) -> Self {
        self.shutdown_on_loop_error = stop;
        self
    }
}

/// Asks a running agent to stop, from outside (the manager).
#[derive(Clone)]
pub struct Stopper {
    request: Arc<watch::Sender<Option<Option<bool>>>>,
}

impl fmt::Debug for Stopper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stopper").field("requested", &*self.request.borrow()).finish()
    }
}

impl Stopper {
    /// Asks the agent to stop; `terminate` overrides its mailbox policy. The first request wins.
    pub fn stop(&self, terminate: Option<bool>) {
        self.request.send_if_modified(|request| {
            if request.is_some() {
                return false;
            }
            *request = Some(terminate);
            true
        });
    }
}

/// One agent ready to run on an already registered mailbox.
pub struct Runtime<A> {
    agent: A,
    exchange: Arc<dyn Exchange>,
    id: AgentId,
    config: RuntimeConfig,
    stop: Arc<watch::Sender<Option<Option<bool>>>>,
}

impl<A> fmt::Debug for Runtime<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("id", &self.id).field("config", &self.config).finish()
    }
}

/// A failed agent answers requests until its mailbox has been quiet this long...
const FAILED_STARTUP_QUIET: Duration = Duration::from_millis(250);

/// ...or for at most this long, before it stops (and terminates its mailbox, by default).
const FAILED_STARTUP_DRAIN: Duration = Duration::from_secs(2);

/// Why the serve loop ended.
enum Exit {
    /// Shutdown request or stop: `Some(terminate)` overrides the policy.
    Requested(Option<bool>),
    /// The mailbox was terminated or closed from outside.
    Gone,
    /// Startup or a loop failed, or receiving failed for good.
    Failed(Error),
}

/// What an in-flight future finished with.
enum Done {
    /// The action with this tag answered.
    Finished(Uuid),
    /// The action with this tag was aborted (it still needs its code-3 answer).
    Aborted(Uuid),
    /// A response was sent.
    Sent,
}

type RecvFuture = BoxFuture<'static, Result<Message>>;

fn next_recv(mailbox: &Arc<dyn Mailbox>, delay: Option<Duration>) -> RecvFuture {
    let mailbox = mailbox.clone();
    Box::pin(async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        mailbox.recv(None).await
    })
}

impl<A: Agent> Runtime<A> {
    /// Prepares `agent` to serve the registered mailbox `id`.
    pub fn new(agent: A, exchange: Arc<dyn Exchange>, id: AgentId, config: RuntimeConfig) -> Self {
        Runtime { agent, exchange, id, config, stop: Arc::new(watch::channel(None).0) }
    }

    /// Stops the agent from outside.
    pub fn stopper(&self) -> Stopper {
        Stopper { request: self.stop.clone() }
    }

    /// Runs the agent until it stops: startup, serve requests and loops, shutdown.
    ///
    /// # Errors
    /// `BadEntityId`/`MailboxTerminated` if the mailbox cannot be opened;
    /// [`Error::AgentFailed`] when startup, a loop (with `shutdown_on_loop_error`) or the
    /// shutdown hook failed.
    pub async fn run(self) -> Result<()> {
        let Runtime { agent, exchange, id, config, stop } = self;
        let entity: EntityId = id.clone().into();
        let mailbox: Arc<dyn Mailbox> = Arc::from(exchange.open_mailbox(&entity).await?);
        tracing::info!(academy.agent_id = %id, exchange = ?exchange, "agent starting");
        let heartbeat = start_heartbeat(exchange.clone(), entity.clone(), config.heartbeat_interval).await;
        let client = Client::new(exchange.clone(), entity.clone());
        let shared = Arc::new(Shared {
            id,
            children: Manager::with_client(client.clone()),
            client,
            stopping: watch::channel(false).0,
            stop_request: stop,
        });
        let agent = Arc::new(agent);
        let mut actions = Actions::new();
        agent.actions(&mut actions);
        let mut loops = Loops::new();
        agent.loops(&mut loops);
        let mut server = Server {
            describe: describe(&*agent, &shared.id, &actions),
            actions: actions.table,
            agent,
            shared,
            exchange,
            entity,
            mailbox,
            config,
            started: false,
            running: HashMap::new(),
            inflight: FuturesUnordered::new(),
            backlog: VecDeque::new(),
            ping_waiters: Vec::new(),
            loop_tasks: JoinSet::new(),
        };
        let mut recv = next_recv(&server.mailbox, None);
        let exit = server.serve(&mut recv, loops).await;
        let result = server.stop(exit, recv).await;
        heartbeat.abort();
        result
    }
}

struct Server<A> {
    agent: Arc<A>,
    shared: Arc<Shared>,
    actions: HashMap<String, ActionFn<A>>,
    describe: serde_json::Value,
    exchange: Arc<dyn Exchange>,
    entity: EntityId,
    mailbox: Arc<dyn Mailbox>,
    config: RuntimeConfig,
    started: bool,
    /// Running actions: how to abort them and the request each answers.
    running: HashMap<Uuid, (AbortHandle, Header)>,
    inflight: FuturesUnordered<BoxFuture<'static, Done>>,
    /// Action requests waiting for startup or a free slot.
    backlog: VecDeque<Message>,
    /// Pings that arrived during startup.
    ping_waiters: Vec<Header>,
    loop_tasks: JoinSet<()>,
}

fn describe<A: Agent>(agent: &A, id: &AgentId, actions: &Actions<A>) -> serde_json::Value {
    let mut names = actions.names();
    if !names.iter().any(|n| n == DESCRIBE_ACTION) {
        names.push(DESCRIBE_ACTION.to_owned());
        names.sort();
    }
    serde_json::json!({ "agent_id": id, "behaviors": agent.behaviors(), "actions": names })
}

/// Logs how an action ended: `debug` with its latency when it answered, `warn` with the error
/// text when it raised (or could not run: unknown action, bad arguments).
fn log_action_outcome(body: &Body, started: Instant) {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match body {
        Body::UserError(error) => {
            tracing::warn!(latency_ms, error = %error.text(), academy.action_state = "execute_exception", "action failed");
        }
        _ => tracing::debug!(latency_ms, academy.action_state = "execute_success", "action completed"),
    }
}

fn academy_error(code: ErrorCode) -> Body {
    Body::AcademyError(AcademyError { error_code: code, mailbox_id: None })
}

impl<A: Agent> Server<A> {
    fn context(&self, caller: Option<EntityId>) -> Context<A> {
        Context::new(self.agent.clone(), self.shared.clone(), caller)
    }

    /// Serves until something stops the agent.
    async fn serve(&mut self, recv: &mut RecvFuture, loops: Loops<A>) -> Exit {
        let ctx = self.context(None);
        let mut startup = async move {
            let agent = ctx.agent().clone();
            agent.startup(&ctx).await
        }
        .boxed()
        .fuse();
        let (loop_error_tx, mut loop_errors) = mpsc::unbounded_channel::<(String, BoxError)>();
        let mut loops = Some(loops);
        let mut stop = self.shared.stop_request.subscribe();
        if let Some(terminate) = *stop.borrow_and_update() {
            return Exit::Requested(terminate);
        }
        let mut failures = 0u32;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    if let Some(terminate) = *stop.borrow_and_update() {
                        return Exit::Requested(terminate);
                    }
                }
                result = &mut startup, if !startup.is_terminated() => match result {
                    Ok(()) => {
                        self.started = true;
                        for header in std::mem::take(&mut self.ping_waiters) {
                            self.send_later(&header, Body::SuccessResponse);
                        }
                        for (name, body) in loops.take().map(|l| l.loops).unwrap_or_default() {
                            let ctx = self.context(None);
                            let errors = loop_error_tx.clone();
                            self.loop_tasks.spawn(async move {
                                if let Err(e) = body(ctx).await {
                                    let _ = errors.send((name, e));
                                }
                            });
                        }
                        self.start_backlog();
                    }
                    Err(e) => {
                        let reason = format!("startup failed: {e}");
                        self.answer_failed_startup(&reason, recv).await;
                        return Exit::Failed(self.failed(reason));
                    }
                },
                Some((name, e)) = loop_errors.recv() => {
                    let error = self.failed(format!("loop {name} failed: {e}"));
                    if self.config.shutdown_on_loop_error {
                        return Exit::Failed(error);
                    }
                    tracing::warn!(error = %error, "agent loop failed; the agent keeps running");
                }
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => self.finished(done),
                received = &mut *recv => {
                    let mut delay = None;
                    match received {
                        Ok(message) => {
                            failures = 0;
                            if let Some(exit) = self.dispatch(message).await {
                                *recv = next_recv(&self.mailbox, None);
                                return exit;
                            }
                        }
                        Err(Error::Timeout { .. }) => {}
                        Err(Error::MailboxTerminated { .. } | Error::Closed { .. }) => return Exit::Gone,
                        Err(e) if e.is_retryable() && failures < 50 => {
                            failures += 1;
                            tracing::warn!(agent = %self.entity, error = %e, "agent receive failed; retrying");
                            delay = Some(Duration::from_millis(100));
                        }
                        Err(e) => return Exit::Failed(e),
                    }
                    *recv = next_recv(&self.mailbox, delay);
                }
            }
        }
    }

    /// After a failed startup, answers every request waiting for the agent (the backlog, pings,
    /// and what the mailbox delivers until it has been quiet for [`FAILED_STARTUP_QUIET`], at
    /// most [`FAILED_STARTUP_DRAIN`]) with an error saying why, so callers do not wait for
    /// their timeouts. Stopping then terminates the mailbox (by default), after which sends
    /// fail with `MailboxTerminated` and the exchange answers requests it still holds (code 0).
    async fn answer_failed_startup(&mut self, reason: &str, recv: &mut RecvFuture) {
        let text = format!("RuntimeError: agent {reason}");
        let mut answers: Vec<Message> = Vec::new();
        for message in std::mem::take(&mut self.backlog) {
            answers.extend(message.response(startup_failure(&message.body, &text)).ok());
        }
        for header in std::mem::take(&mut self.ping_waiters) {
            answers.extend(
                header
                    .response()
                    .ok()
                    .map(|h| Message { header: h, body: Body::UserError(UserError::json(text.clone())) }),
            );
        }
        for answer in answers {
            self.send_answer(answer).await;
        }
        let deadline = tokio::time::Instant::now() + FAILED_STARTUP_DRAIN;
        loop {
            let quiet = (tokio::time::Instant::now() + FAILED_STARTUP_QUIET).min(deadline);
            let Ok(received) = tokio::time::timeout_at(quiet, &mut *recv).await else { return };
            *recv = next_recv(&self.mailbox, None);
            let message = match received {
                Ok(message) => message,
                Err(Error::Timeout { .. }) => continue,
                Err(_) => return,
            };
            if !message.is_request() {
                self.shared.client.route(message);
                continue;
            }
            let answer = if message.header.check_protocol().is_err() {
                refusal(&message, ErrorCode::IncompatibleProtocol, &self.entity)
            } else {
                let body = match &message.body {
                    Body::ActionRequest(_) | Body::PingRequest => startup_failure(&message.body, &text),
                    Body::CancelRequest { .. } => academy_error(ErrorCode::ActionInvalidState),
                    Body::ShutdownRequest { .. } => Body::SuccessResponse,
                    _ => continue,
                };
                message.response(body)
            };
            if let Ok(answer) = answer {
                self.send_answer(answer).await;
            }
        }
    }

    async fn send_answer(&mut self, answer: Message) {
        if let Err(e) = self.exchange.send(answer).await {
            tracing::debug!(error = %e, "could not send a response");
        }
    }

    fn failed(&self, message: String) -> Error {
        Error::AgentFailed { id: self.entity.clone(), message }
    }

    /// Handles one received message; `Some` when the agent must stop.
    async fn dispatch(&mut self, message: Message) -> Option<Exit> {
        if !message.is_request() {
            self.shared.client.route(message);
            return None;
        }
        if message.header.check_protocol().is_err() {
            if let Ok(answer) = refusal(&message, ErrorCode::IncompatibleProtocol, &self.entity) {
                self.send_message_later(answer);
            }
            return None;
        }
        match &message.body {
            Body::ActionRequest(_) => {
                if self.started && self.running.len() < self.config.max_concurrency {
                    self.start_action(message);
                } else {
                    self.backlog.push_back(message);
                }
            }
            Body::PingRequest if self.started => self.send_later(&message.header, Body::SuccessResponse),
            Body::PingRequest => self.ping_waiters.push(message.header),
            Body::CancelRequest { target_tag } => {
                let target_tag = *target_tag;
                let answer = if let Some((abort, _)) = self.running.get(&target_tag) {
                    abort.abort();
                    Body::SuccessResponse
                } else if let Some(at) = self.backlog.iter().position(|m| m.header.tag == target_tag) {
                    if let Some(cancelled) = self.backlog.remove(at) {
                        self.send_later(&cancelled.header, academy_error(ErrorCode::ActionCancelled));
                    }
                    Body::SuccessResponse
                } else {
                    academy_error(ErrorCode::ActionInvalidState)
                };
                self.send_later(&message.header, answer);
            }
            Body::ShutdownRequest { terminate } => {
                let terminate = *terminate;
                if let Ok(answer) = message.response(Body::SuccessResponse) {
                    let _ = self.exchange.send(answer).await;
                }
                return Some(Exit::Requested(terminate));
            }
            _ => tracing::debug!(agent = %self.entity, %message, "ignoring a request of an unknown kind"),
        }
        None
    }

    /// Starts an action request (the caller checked startup and the bound).
    fn start_action(&mut self, message: Message) {
        let Message { header, body: Body::ActionRequest(request) } = message else { return };
        let Ok(response_header) = header.response() else { return };
        let span = self.action_span(&header, &request.action);
        let started = Instant::now();
        let work = match self.action_future(&header, request) {
            Ok(work) => work,
            Err(body) => {
                span.in_scope(|| log_action_outcome(&body, started));
                self.send_message_later(Message { header: response_header, body });
                return;
            }
        };
        // Only the computation is abortable: once it has produced the answer, the answer is sent.
        let (work, abort) = abortable(work);
        let exchange = self.exchange.clone();
        let tag = header.tag;
        self.running.insert(tag, (abort, header));
        let served = async move {
            let Ok(body) = work.await else {
                tracing::debug!(academy.action_state = "execute_cancelled", "action cancelled");
                return Done::Aborted(tag);
            };
            log_action_outcome(&body, started);
            if let Err(e) = exchange.send(Message { header: response_header, body }).await {
                tracing::debug!(error = %e, "could not send an action response");
            }
            Done::Finished(tag)
        };
        self.inflight.push(Box::pin(served.instrument(span)));
    }

    /// The span one action request is served in, with Academy's field names.
    fn action_span(&self, header: &Header, action: &str) -> tracing::Span {
        tracing::info_span!(
            "action",
            academy.agent_id = %self.entity,
            academy.action = action,
            academy.action_tag = %header.tag,
            academy.src = %header.src,
        )
    }

    /// The future that computes an action's answer, or the immediate error answer.
    fn action_future(&self, header: &Header, request: ActionRequest) -> Result<BoxFuture<'static, Body>, Body> {
        let answer = Answer::to(&request);
        match self.actions.get(&request.action) {
            Some(action) => Ok(action(self.context(Some(header.src.clone())), request)),
            None if request.action == DESCRIBE_ACTION => Err(answer.encode(Ok(&self.describe))),
            None => Err(answer.error(format!(
                "AttributeError: agent {} has no action {:?} (actions: {})",
                self.entity, request.action, self.describe["actions"]
            ))),
        }
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Sent => return,
            Done::Finished(tag) => {
                self.running.remove(&tag);
            }
            Done::Aborted(tag) => {
                if let Some((_, header)) = self.running.remove(&tag) {
                    self.send_later(&header, academy_error(ErrorCode::ActionCancelled));
                }
            }
        }
        self.start_backlog();
    }

    fn start_backlog(&mut self) {
        while self.started && self.running.len() < self.config.max_concurrency {
            let Some(message) = self.backlog.pop_front() else { break };
            self.start_action(message);
        }
    }

    fn send_later(&mut self, request: &Header, body: Body) {
        if let Ok(header) = request.response() {
            self.send_message_later(Message { header, body });
        }
    }

    fn send_message_later(&mut self, message: Message) {
        let exchange = self.exchange.clone();
        self.inflight.push(Box::pin(async move {
            if let Err(e) = exchange.send(message).await {
                tracing::debug!(error = %e, "could not send a response");
            }
            Done::Sent
        }));
    }

    /// Stops: cancels actions and loops, runs the shutdown hook, stops the agents launched
    /// alongside, terminates per policy.
    async fn stop(mut self, exit: Exit, mut recv: RecvFuture) -> Result<()> {
        self.shared.stopping.send_replace(true);
        self.loop_tasks.abort_all();
        // Cancel running computations; answers already computed are still sent (bounded wait).
        for (abort, _) in self.running.values() {
            abort.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, self.inflight.next()).await {
            if let Done::Finished(tag) = done {
                self.running.remove(&tag);
            }
        }
        self.inflight = FuturesUnordered::new();
        let mut answers: Vec<Message> = Vec::new();
        for (_, (_, header)) in self.running.drain() {
            answers.extend(
                header.response().ok().map(|h| Message { header: h, body: academy_error(ErrorCode::ActionCancelled) }),
            );
        }
        for message in self.backlog.drain(..) {
            answers.extend(message.response(academy_error(ErrorCode::ActionCancelled)).ok());
        }
        for header in self.ping_waiters.drain(..) {
            answers.extend(
                header.response().ok().map(|h| Message { header: h, body: academy_error(ErrorCode::PingCancelled) }),
            );
        }
        for answer in answers {
            let _ = self.exchange.send(answer).await;
        }
        let gone = matches!(exit, Exit::Gone);
        let requested = match exit {
            Exit::Requested(terminate) => terminate,
            _ => None,
        };
        let mut result = match exit {
            Exit::Failed(e) => Err(e),
            _ => Ok(()),
        };
        if self.started && !gone {
            if let Err(e) = self.shutdown_hook(&mut recv).await {
                result = result.and(Err(e));
            }
        }
        drop(recv);
        self.shared.children.stop_all().await;
        let terminate = match (&result, requested) {
            (_, Some(terminate)) => terminate,
            (Ok(()), None) => self.config.terminate_on_success,
            (Err(_), None) => self.config.terminate_on_error,
        };
        let _ = self.mailbox.close().await;
        if terminate && !gone {
            if let Err(e) = self.exchange.terminate(&self.entity).await {
                tracing::warn!(agent = %self.entity, error = %e, "could not terminate the agent's mailbox");
            }
        }
        self.shared.client.fail_all();
        result
    }

    /// Runs the shutdown hook while still routing responses (the hook may call other agents);
    /// requests arriving meanwhile are answered as cancelled.
    async fn shutdown_hook(&mut self, recv: &mut RecvFuture) -> Result<()> {
        let ctx = self.context(None);
        let mut hook = async move {
            let agent = ctx.agent().clone();
            agent.shutdown(&ctx).await
        }
        .boxed();
        loop {
            tokio::select! {
                result = &mut hook => {
                    return result.map_err(|e| self.failed(format!("shutdown failed: {e}")));
                }
                received = &mut *recv => {
                    match received {
                        Ok(message) if message.is_request() => {
                            let code = if matches!(message.body, Body::PingRequest) {
                                ErrorCode::PingCancelled
                            } else {
                                ErrorCode::ActionCancelled
                            };
                            if let Ok(answer) = message.response(academy_error(code)) {
                                let _ = self.exchange.send(answer).await;
                            }
                        }
                        Ok(message) => self.shared.client.route(message),
                        Err(_) => {
                            return hook.await.map_err(|e| self.failed(format!("shutdown failed: {e}")));
                        }
                    }
                    *recv = next_recv(&self.mailbox, None);
                }
            }
        }
    }
}

/// The answer of a failed agent to `request`: a user error with `text`, in the exception
/// strategy an action request asked for (json for pings).
fn startup_failure(request: &Body, text: &str) -> Body {
    match request {
        Body::ActionRequest(request) => Answer::to(request).error(text),
        _ => Body::UserError(UserError::json(text)),
    }
}
