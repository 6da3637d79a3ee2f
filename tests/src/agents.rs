//! Agent-level scenarios (agents, handles, runtime, manager), run on every backend.
//!
//! Every scenario goes through `Arc<dyn Exchange>` only, so the same code checks the local,
//! Redis and HTTP transports.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use exchange_core::agent::{Actions, Agent, Context, Loops};
use exchange_core::{
    ACADEMY_AGENT_BASE, ActionRequest, AgentId, AgentRegistration, AgentStatus, Body, BoxError, EntityId, Error,
    ErrorCode, LaunchOptions, MailboxStats, MailboxStatus, Manager, Message, RuntimeConfig, Strategy,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::TestBackend;
use crate::support::{PROMPT, recv_ok};

/// Behaviour name of [`Calculator`].
pub const CALCULATOR: &str = "tests.agents.Calculator";

/// Test agent: arithmetic, failures, slow cancellable work, and who called.
#[derive(Default)]
pub struct Calculator {
    /// Slow actions that were dropped before finishing (cancelled).
    pub cancelled: Arc<AtomicUsize>,
    /// Slow actions that started.
    pub sleeping: Arc<AtomicUsize>,
    /// Startup delay.
    pub startup_delay: Duration,
    /// Startup fails (after the delay) with this text.
    pub startup_error: Option<&'static str>,
    /// Startup waits for this to be notified (before the delay).
    pub startup_gate: Option<Arc<Notify>>,
}

/// Counts a slow action as cancelled when it is dropped before it finishes.
struct CancelGuard(Option<Arc<AtomicUsize>>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait::async_trait]
impl Agent for Calculator {
    fn behaviors(&self) -> Vec<String> {
        vec![CALCULATOR.into(), ACADEMY_AGENT_BASE.into()]
    }

    fn actions(&self, actions: &mut Actions<Self>) {
        actions
            .add("add", |_agent, (a, b): (i64, i64)| async move { Ok(a + b) })
            .add("echo", |_agent, (x,): (Value,)| async move { Ok(x) })
            .add("fail", |_agent, (text,): (String,)| async move { Err::<(), BoxError>(text.into()) })
            .add("whoami", |agent, ()| async move { Ok(agent.caller().map(EntityId::to_json)) })
            .add("stop", |agent, ()| async move {
                agent.shutdown();
                Ok(())
            })
            .add("sleep", |agent, (ms,): (u64,)| async move {
                agent.sleeping.fetch_add(1, Ordering::SeqCst);
                let mut guard = CancelGuard(Some(agent.cancelled.clone()));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                guard.0 = None;
                Ok(ms)
            })
            .add_with_kwargs("scale", |_agent, (x,): (f64,), kwargs: HashMap<String, f64>| async move {
                Ok(x * kwargs.get("factor").copied().unwrap_or(1.0))
            });
    }

    async fn startup(&self, _ctx: &Context<Self>) -> Result<(), BoxError> {
        if let Some(gate) = &self.startup_gate {
            gate.notified().await;
        }
        tokio::time::sleep(self.startup_delay).await;
        match self.startup_error {
            Some(text) => Err(text.into()),
            None => Ok(()),
        }
    }
}

/// Test agent that calls other agents from its actions.
pub struct Relay;

impl Agent for Relay {
    fn actions(&self, actions: &mut Actions<Self>) {
        actions
            .add("relay_add", |agent, (target, a, b): (AgentId, i64, i64)| async move {
                Ok(agent.handle(&target).call::<i64>("add", (a, b)).await?)
            })
            .add("relay_whoami", |agent, (target,): (AgentId,)| async move {
                Ok(agent.handle(&target).call::<Option<String>>("whoami", ()).await?)
            })
            .add("discover_add", |agent, (a, b): (i64, i64)| async move {
                let found = agent.discover(CALCULATOR, false).await?;
                let target = found.first().ok_or("no calculator found")?;
                Ok(agent.handle(target).call::<i64>("add", (a, b)).await?)
            });
    }
}

/// Test agent whose control loop fails on selected runs, and whose event loop counts.
pub struct Flaky {
    runs: Arc<AtomicUsize>,
    fail_runs: usize,
    events: Arc<Notify>,
    seen: Arc<AtomicUsize>,
}

impl Agent for Flaky {
    fn actions(&self, actions: &mut Actions<Self>) {
        actions.add("runs", |agent, ()| async move { Ok(agent.runs.load(Ordering::SeqCst)) });
        actions.add("seen", |agent, ()| async move {
            agent.events.notify_one();
            Ok(agent.seen.load(Ordering::SeqCst))
        });
    }

    fn loops(&self, loops: &mut Loops<Self>) {
        loops.control("maybe_fail", |agent| async move {
            let run = agent.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if run <= agent.fail_runs {
                return Err(format!("run {run} fails on purpose").into());
            }
            agent.shutdown_requested().await;
            Ok(())
        });
        loops.event("count", self.events.clone(), |agent| async move {
            agent.seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
}

async fn manager(backend: &impl TestBackend) -> Manager {
    Manager::new(backend.client().await).await.expect("manager")
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, future).await.unwrap_or_else(|_| panic!("{what} did not finish within {PROMPT:?}"))
}

/// Polls `check` until it holds (generous deadline).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PROMPT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {PROMPT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A handle calls actions with typed positional and keyword arguments.
pub async fn agent_call_returns_result(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    assert_eq!(within("add", calc.call::<i64>("add", (2, 40))).await.unwrap(), 42);
    let text = json!({"text": "h\u{e9}llo", "n": [1, 2.5, null]});
    assert_eq!(calc.call::<Value>("echo", (text.clone(),)).await.unwrap(), text);
    let scaled: f64 = calc.call_with_kwargs("scale", (2.0,), json!({"factor": 1.5})).await.unwrap();
    assert_eq!(scaled, 3.0);
    let caller: Option<String> = calc.call("whoami", ()).await.unwrap();
    assert_eq!(caller, Some(manager.client().id().to_json()), "actions see the caller's id");
    let described: Value = calc.call("agent_describe", ()).await.unwrap();
    let actions = described["actions"].as_array().unwrap();
    assert!(actions.contains(&json!("add")) && actions.contains(&json!("agent_describe")), "{described}");
    assert_eq!(described["behaviors"], json!([CALCULATOR, ACADEMY_AGENT_BASE]));
    manager.close().await.unwrap();
}

/// 64 calls in flight on one handle all complete, concurrently.
pub async fn agent_serves_64_concurrent_calls(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    calc.ping().await.unwrap();
    let sums = futures::future::join_all((0..64i64).map(|i| calc.call::<i64>("add", (i, i))));
    let sums: Vec<i64> = within("64 adds", sums).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(sums, (0..64).map(|i| 2 * i).collect::<Vec<_>>());
    let started = Instant::now();
    let slept = futures::future::join_all((0..64).map(|_| calc.call::<u64>("sleep", (300,))));
    for result in within("64 sleeps", slept).await {
        assert_eq!(result.unwrap(), 300);
    }
    assert!(started.elapsed() < Duration::from_secs(8), "64 × 300 ms sleeps took {:?}", started.elapsed());
    manager.close().await.unwrap();
}

/// An action's error reaches the caller as `Remote` with its text; bad arguments and bad
/// results are errors, never panics; the agent keeps serving.
pub async fn agent_errors_propagate(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    match calc.call::<()>("fail", ("ValueError: bad value",)).await {
        Err(Error::Remote { message }) => assert!(message.contains("ValueError: bad value"), "{message}"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    match calc.call::<i64>("add", ("one", 2)).await {
        Err(Error::Remote { message }) => assert!(message.contains("TypeError"), "{message}"),
        other => panic!("expected a remote error for bad arguments, got {other:?}"),
    }
    match calc.call::<i64>("add", (1, 2, 3)).await {
        Err(Error::Remote { .. }) => {}
        other => panic!("expected a remote error for too many arguments, got {other:?}"),
    }
    match calc.call_with_kwargs::<i64>("add", (1, 2), json!({"extra": 1})).await {
        Err(Error::Remote { message }) => assert!(message.contains("keyword"), "{message}"),
        other => panic!("expected a remote error for keyword arguments, got {other:?}"),
    }
    match calc.call::<String>("add", (1, 2)).await {
        Err(Error::Codec { .. }) => {}
        other => panic!("expected a decode error for a result of the wrong type, got {other:?}"),
    }
    assert_eq!(calc.call::<i64>("add", (1, 2)).await.unwrap(), 3);
    manager.close().await.unwrap();
}

/// Unknown actions are remote errors. A raw `pickle` request (Academy's default) is answered
/// in pickle; one naming a type outside Python's basic values gets a pickled `TypeError`
/// naming the type.
pub async fn agent_unknown_action_is_a_remote_error(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    match calc.call::<Value>("no_such_action", ()).await {
        Err(Error::Remote { message }) => assert!(message.contains("no_such_action"), "{message}"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    let exchange = backend.client().await;
    let user = exchange.register_user(Some("raw")).await.unwrap();
    let inbox = exchange.open_mailbox(&user.clone().into()).await.unwrap();
    let pickled = |pargs: &str| {
        let mut request = ActionRequest::json("add", &(1, 2), &json!({})).unwrap();
        request.serialization = Strategy::Pickle;
        request.pargs = pargs.into();
        request.kargs = "gAR9lC4=".into(); // pickle.dumps({})
        Message::request(user.clone(), calc.agent_id().clone(), Body::ActionRequest(request))
    };
    // pickle.dumps((1, 2))
    let sent = pickled("gASVCQAAAAAAAABLAUsChpQu");
    exchange.send(sent.clone()).await.unwrap();
    let answer = recv_ok(&*inbox).await;
    assert_eq!(answer.tag(), sent.tag());
    match answer.body {
        Body::ActionResponse(response) => {
            assert_eq!(response.serialization, Strategy::Pickle);
            assert_eq!(response.result::<i64>().unwrap(), 3);
        }
        other => panic!("expected a pickled result, got {other:?}"),
    }
    // pickle.dumps((complex(1, 2),))
    let sent = pickled("gASVMAAAAAAAAACMCGJ1aWx0aW5zlIwHY29tcGxleJSTlEc/8AAAAAAAAEdAAAAAAAAAAIaUUpSFlC4=");
    exchange.send(sent.clone()).await.unwrap();
    let answer = recv_ok(&*inbox).await;
    assert_eq!(answer.tag(), sent.tag());
    match answer.body {
        Body::UserError(error) => {
            assert_eq!(error.serialization, Strategy::Pickle);
            let text = error.text();
            assert!(text.starts_with("TypeError: ") && text.contains("builtins.complex"), "{text}");
        }
        other => panic!("expected a pickled user error, got {other:?}"),
    }
    manager.close().await.unwrap();
}

/// Ping waits for startup and returns the round trip.
pub async fn agent_ping_waits_for_startup(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager
        .launch(Calculator { startup_delay: Duration::from_millis(300), ..Calculator::default() })
        .await
        .unwrap();
    let started = Instant::now();
    let rtt = within("ping", calc.ping()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "ping answered before startup finished");
    assert!(rtt <= started.elapsed() + Duration::from_millis(1));
    let again = calc.ping().await.unwrap();
    assert!(again < PROMPT);
    // A ping waiting for a startup that fails is answered with the failure.
    let broken = Calculator {
        startup_delay: Duration::from_millis(300),
        startup_error: Some("no database"),
        ..Calculator::default()
    };
    let broken = manager.launch(broken).await.unwrap();
    match within("ping of a failing agent", broken.ping()).await {
        Err(Error::Remote { message }) => assert!(message.contains("no database"), "{message}"),
        other => panic!("expected the startup failure, got {other:?}"),
    }
    match within("failing agent", manager.wait(broken.agent_id(), None)).await {
        Err(Error::AgentFailed { message, .. }) => assert!(message.contains("no database"), "{message}"),
        other => panic!("expected the startup failure, got {other:?}"),
    }
    manager.close().await.unwrap();
}

/// Calls to an agent whose startup fails get the failure at once, not at their timeout, and
/// calls after it stopped fail fast with `MailboxTerminated` (Academy issue #288).
pub async fn agent_failed_startup_answers_callers(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let broken = Calculator {
        startup_delay: Duration::from_millis(300),
        startup_error: Some("no database"),
        ..Calculator::default()
    };
    let broken = manager.launch(broken).await.unwrap().with_timeout(Duration::from_secs(120));
    let started = Instant::now();
    let calls = futures::future::join_all((0..4i64).map(|i| broken.call::<i64>("add", (i, i))));
    let (calls, ping) = within("calls to a failing agent", futures::future::join(calls, broken.ping())).await;
    for result in calls {
        match result {
            Err(Error::Remote { message }) => {
                assert!(message.contains("startup failed") && message.contains("no database"), "{message}")
            }
            other => panic!("expected the startup failure, got {other:?}"),
        }
    }
    assert!(matches!(ping, Err(Error::Remote { .. })), "expected the startup failure, got {ping:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "answers took {:?}", started.elapsed());
    match within("failing agent", manager.wait(broken.agent_id(), None)).await {
        Err(Error::AgentFailed { message, .. }) => assert!(message.contains("no database"), "{message}"),
        other => panic!("expected the startup failure, got {other:?}"),
    }
    let later = Instant::now();
    match within("call after the failure", broken.call::<i64>("add", (1, 2))).await {
        Err(Error::MailboxTerminated { id }) => assert_eq!(id, *broken.agent_id()),
        other => panic!("expected MailboxTerminated, got {other:?}"),
    }
    assert!(later.elapsed() < Duration::from_secs(20), "the later call took {:?}", later.elapsed());
    manager.close().await.unwrap();
}

/// `Handle::stats` reads the agent mailbox's counters; a handle rejecting inactive agents
/// fails calls to an agent without a fresh heartbeat at once, without sending them.
pub async fn agent_handle_stats_and_reject_on_inactive(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    calc.ping().await.unwrap();
    for i in 0..2i64 {
        assert_eq!(calc.call::<i64>("add", (i, 1)).await.unwrap(), i + 1);
    }
    let expected = MailboxStats { incoming: 3, outgoing: 0, completed: 3, in_progress: 0, queued: 0 };
    assert_eq!(calc.stats().await.unwrap(), expected, "one ping and two calls, all answered");

    eventually("the agent's heartbeat", async || calc.status().await.unwrap() == AgentStatus::Active).await;
    let strict = calc.clone().with_reject_on_inactive(true);
    assert_eq!(strict.call::<i64>("add", (1, 1)).await.unwrap(), 2, "a live agent is called as usual");

    // Registered but never run: no heartbeat, so inactive.
    let silent = manager.exchange().register_agent(AgentRegistration::new([CALCULATOR])).await.unwrap();
    let started = Instant::now();
    match within(
        "call to an inactive agent",
        manager.handle(&silent).with_reject_on_inactive(true).call::<i64>("add", (1, 2)),
    )
    .await
    {
        Err(Error::AgentInactive { id }) => assert_eq!(id, silent),
        other => panic!("expected AgentInactive, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(20), "rejecting took {:?}", started.elapsed());
    assert_eq!(manager.handle(&silent).stats().await.unwrap().incoming, 0, "the rejected call was not sent");
    // Pings are not checked: they can wait for an agent to come up.
    match manager.handle(&silent).with_reject_on_inactive(true).with_timeout(Duration::from_millis(200)).ping().await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected the ping to wait, got {other:?}"),
    }
    manager.close().await.unwrap();
}

/// Parent agent: launches a calculator alongside itself and calls it.
pub struct Parent;

impl Agent for Parent {
    fn actions(&self, actions: &mut Actions<Self>) {
        actions.add("spawn", |ctx, ()| async move {
            let child = ctx.launch_alongside(Calculator::default()).await?;
            let sum = child.call::<i64>("add", (2, 3)).await?;
            assert_eq!(child.client_id(), &EntityId::from(ctx.id().clone()), "the handle sends from the parent");
            Ok((child.agent_id().clone(), sum))
        });
    }
}

/// An agent launches a child alongside itself; the child serves others too, and stops (its
/// mailbox terminated) when the parent stops.
pub async fn agent_launches_child_alongside(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let parent = manager.launch(Parent).await.unwrap();
    let (child, sum): (AgentId, i64) = within("spawn", parent.call("spawn", ())).await.unwrap();
    assert_eq!(sum, 5);
    let direct = manager.handle(&child);
    assert_eq!(within("call to the child", direct.call::<i64>("add", (20, 22))).await.unwrap(), 42);
    assert!(!manager.running().contains(&child), "the child belongs to its parent, not to the manager");
    parent.shutdown(None).await.unwrap();
    within("parent stop", manager.wait(parent.agent_id(), None)).await.unwrap();
    assert_eq!(direct.status().await.unwrap(), AgentStatus::Terminated, "the child stopped with its parent");
    manager.close().await.unwrap();
}

/// A shutdown request stops the agent and terminates its mailbox; calls then fail fast.
pub async fn agent_shutdown_terminates_mailbox(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    calc.ping().await.unwrap();
    assert_eq!(calc.status().await.unwrap(), AgentStatus::Active);
    calc.shutdown(None).await.unwrap();
    within("agent stop", manager.wait(calc.agent_id(), None)).await.unwrap();
    assert!(manager.running().is_empty());
    assert_eq!(calc.status().await.unwrap(), AgentStatus::Terminated);
    match within("call to a terminated agent", calc.call::<i64>("add", (1, 2))).await {
        Err(Error::MailboxTerminated { id }) => assert_eq!(id, *calc.agent_id()),
        other => panic!("expected MailboxTerminated, got {other:?}"),
    }
    // terminate = false keeps the mailbox.
    let kept = manager.launch(Calculator::default()).await.unwrap();
    kept.ping().await.unwrap();
    kept.shutdown(Some(false)).await.unwrap();
    within("agent stop", manager.wait(kept.agent_id(), None)).await.unwrap();
    let status = manager.exchange().status(&kept.agent_id().clone().into()).await.unwrap();
    assert_eq!(status, MailboxStatus::Active);
    // An agent can stop itself from an action.
    let quitter = manager.launch(Calculator::default()).await.unwrap();
    quitter.call::<()>("stop", ()).await.unwrap();
    within("self stop", manager.wait(quitter.agent_id(), None)).await.unwrap();
    assert_eq!(quitter.status().await.unwrap(), AgentStatus::Terminated);
    manager.close().await.unwrap();
}

/// Shutdown cancels running actions: their callers get `ActionCancelled` (code 3).
pub async fn agent_shutdown_cancels_running_actions(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let agent = Calculator::default();
    let (cancelled, sleeping) = (agent.cancelled.clone(), agent.sleeping.clone());
    let calc = manager.launch(agent).await.unwrap();
    calc.ping().await.unwrap();
    let slow = {
        let calc = calc.clone();
        tokio::spawn(async move { calc.call::<u64>("sleep", (60_000,)).await })
    };
    eventually("the slow action to start", async || sleeping.load(Ordering::SeqCst) == 1).await;
    calc.shutdown(None).await.unwrap();
    match within("the cancelled call", slow).await.unwrap() {
        Err(Error::ActionCancelled) => {}
        other => panic!("expected ActionCancelled, got {other:?}"),
    }
    within("agent stop", manager.wait(calc.agent_id(), None)).await.unwrap();
    assert_eq!(cancelled.load(Ordering::SeqCst), 1);
    manager.close().await.unwrap();
}

/// A timed-out call cancels the remote action; cancel requests answer as Academy's runtime.
pub async fn agent_cancel_stops_running_action(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let agent = Calculator::default();
    let cancelled = agent.cancelled.clone();
    let calc = manager.launch(agent).await.unwrap();
    calc.ping().await.unwrap();
    match calc.call_timeout::<u64>("sleep", (60_000,), Duration::from_millis(200)).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    eventually("remote cancellation", async || cancelled.load(Ordering::SeqCst) == 1).await;

    let exchange = backend.client().await;
    let user = exchange.register_user(Some("raw")).await.unwrap();
    let inbox = exchange.open_mailbox(&user.clone().into()).await.unwrap();
    let sleep = ActionRequest::json("sleep", &(60_000,), &json!({})).unwrap();
    let action = Message::request(user.clone(), calc.agent_id().clone(), Body::ActionRequest(sleep));
    exchange.send(action.clone()).await.unwrap();
    // The action must be running before it can be cancelled: a ping answered after it proves it.
    let ping = Message::request(user.clone(), calc.agent_id().clone(), Body::PingRequest);
    exchange.send(ping.clone()).await.unwrap();
    assert_eq!(recv_ok(&*inbox).await.tag(), ping.tag());
    let cancel =
        Message::request(user.clone(), calc.agent_id().clone(), Body::CancelRequest { target_tag: action.tag() });
    exchange.send(cancel.clone()).await.unwrap();
    let mut answers: HashMap<_, _> = HashMap::new();
    for _ in 0..2 {
        let message = recv_ok(&*inbox).await;
        answers.insert(message.tag(), message.body);
    }
    assert_eq!(answers.get(&cancel.tag()), Some(&Body::SuccessResponse));
    match answers.get(&action.tag()) {
        Some(Body::AcademyError(e)) => assert_eq!(e.error_code, ErrorCode::ActionCancelled),
        other => panic!("expected code 3 for the cancelled action, got {other:?}"),
    }
    let unknown = Message::request(
        user.clone(),
        calc.agent_id().clone(),
        Body::CancelRequest { target_tag: uuid::Uuid::new_v4() },
    );
    exchange.send(unknown.clone()).await.unwrap();
    match recv_ok(&*inbox).await.body {
        Body::AcademyError(e) => assert_eq!(e.error_code, ErrorCode::ActionInvalidState),
        other => panic!("expected code 2 for an unknown cancel target, got {other:?}"),
    }
    assert_eq!(cancelled.load(Ordering::SeqCst), 2);
    manager.close().await.unwrap();
}

/// An agent calls another agent from inside an action, from its own mailbox.
pub async fn agent_calls_another_agent(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    let relay = manager.launch(Relay).await.unwrap();
    let sum: i64 = within("relayed call", relay.call("relay_add", (calc.agent_id(), 20, 22))).await.unwrap();
    assert_eq!(sum, 42);
    let seen: Option<String> = relay.call("relay_whoami", (calc.agent_id(),)).await.unwrap();
    assert_eq!(seen, Some(EntityId::from(relay.agent_id().clone()).to_json()), "the callee sees the relay's id");
    let sums = futures::future::join_all((0..16i64).map(|i| relay.call::<i64>("relay_add", (calc.agent_id(), i, 1))));
    for (i, sum) in within("16 relayed calls", sums).await.into_iter().enumerate() {
        assert_eq!(sum.unwrap(), i as i64 + 1);
    }
    manager.close().await.unwrap();
}

/// Discover finds the agent by behaviour (exact and with the Academy base); then calls work.
pub async fn agent_discover_then_call(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    let relay = manager.launch(Relay).await.unwrap();
    calc.ping().await.unwrap();
    let found = manager.client().discover(CALCULATOR, false).await.unwrap();
    assert_eq!(found, vec![calc.agent_id().clone()]);
    let all = manager.client().discover(ACADEMY_AGENT_BASE, true).await.unwrap();
    assert!(all.contains(calc.agent_id()) && all.contains(relay.agent_id()), "{all:?}");
    assert_eq!(manager.handle(&found[0]).call::<i64>("add", (1, 1)).await.unwrap(), 2);
    assert_eq!(relay.call::<i64>("discover_add", (3, 4)).await.unwrap(), 7);
    manager.close().await.unwrap();
}

/// A failed agent is restarted under the same id; one that keeps failing stops with the error.
pub async fn agent_restarted_under_same_id(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let factory_runs = runs.clone();
    let flaky = manager
        .launch_with(LaunchOptions::default().with_name("flaky").with_restarts(2), move || Flaky {
            runs: factory_runs.clone(),
            fail_runs: 1,
            events: Arc::new(Notify::new()),
            seen: Arc::new(AtomicUsize::new(0)),
        })
        .await
        .unwrap();
    eventually("the restart", async || runs.load(Ordering::SeqCst) >= 2).await;
    assert_eq!(within("call after restart", flaky.call::<usize>("runs", ())).await.unwrap(), 2);
    assert_eq!(manager.running(), vec![flaky.agent_id().clone()]);
    // The event loop of the restarted agent reacts to notifications.
    flaky.call::<usize>("seen", ()).await.unwrap();
    eventually("the event loop", async || flaky.call::<usize>("seen", ()).await.unwrap() >= 1).await;
    flaky.shutdown(None).await.unwrap();
    within("stop", manager.wait(flaky.agent_id(), None)).await.unwrap();

    let doomed_runs = Arc::new(AtomicUsize::new(0));
    let doomed_counter = doomed_runs.clone();
    let doomed = manager
        .launch_with(LaunchOptions::default().with_restarts(1), move || Flaky {
            runs: doomed_counter.clone(),
            fail_runs: usize::MAX,
            events: Arc::new(Notify::new()),
            seen: Arc::new(AtomicUsize::new(0)),
        })
        .await
        .unwrap();
    match within("failing agent", manager.wait(doomed.agent_id(), None)).await {
        Err(Error::AgentFailed { message, .. }) => assert!(message.contains("fails on purpose"), "{message}"),
        other => panic!("expected the agent's failure, got {other:?}"),
    }
    assert_eq!(doomed_runs.load(Ordering::SeqCst), 2, "one run plus one restart");
    assert_eq!(doomed.status().await.unwrap(), AgentStatus::Terminated);
    manager.close().await.unwrap();
}

/// Incompatible requests get code 5; requests to a user client get code 4; status reads
/// heartbeats; a failing loop stops the agent (unless configured otherwise).
pub async fn agent_answers_bad_requests(backend: &impl TestBackend) {
    let manager = manager(backend).await;
    let calc = manager.launch(Calculator::default()).await.unwrap();
    calc.ping().await.unwrap();
    let exchange = backend.client().await;
    let user = exchange.register_user(Some("raw")).await.unwrap();
    let inbox = exchange.open_mailbox(&user.clone().into()).await.unwrap();
    let mut old = Message::request(user.clone(), calc.agent_id().clone(), Body::PingRequest);
    old.header.protocol_version = Some("2.0".into());
    exchange.send(old.clone()).await.unwrap();
    let answer = recv_ok(&*inbox).await;
    assert_eq!(answer.tag(), old.tag());
    match answer.body {
        Body::AcademyError(e) => {
            assert_eq!(e.error_code, ErrorCode::IncompatibleProtocol);
            assert_eq!(e.mailbox_id, Some(calc.agent_id().clone().into()));
        }
        other => panic!("expected code 5, got {other:?}"),
    }
    let to_user = Message::request(user.clone(), manager.client().id().clone(), Body::PingRequest);
    exchange.send(to_user.clone()).await.unwrap();
    match recv_ok(&*inbox).await.body {
        Body::AcademyError(e) => {
            assert_eq!(e.error_code, ErrorCode::InvalidClient);
            assert_eq!(e.mailbox_id.as_ref(), Some(manager.client().id()));
        }
        other => panic!("expected code 4, got {other:?}"),
    }
    assert_eq!(manager.status(&AgentId::new(None)).await.unwrap(), AgentStatus::Missing);

    let runs = Arc::new(AtomicUsize::new(0));
    let tolerant_runs = runs.clone();
    let tolerant = manager
        .launch_with(
            LaunchOptions::default().with_config(RuntimeConfig::default().with_shutdown_on_loop_error(false)),
            move || Flaky {
                runs: tolerant_runs.clone(),
                fail_runs: 1,
                events: Arc::new(Notify::new()),
                seen: Arc::new(AtomicUsize::new(0)),
            },
        )
        .await
        .unwrap();
    eventually("the loop failure", async || runs.load(Ordering::SeqCst) == 1).await;
    assert_eq!(tolerant.call::<usize>("runs", ()).await.unwrap(), 1, "the agent survives its loop's failure");
    manager.close().await.unwrap();
    assert_eq!(calc.status().await.unwrap(), AgentStatus::Terminated, "close stops every agent");
}

/// Instantiates every agent scenario as a `#[tokio::test]` for a backend (called by
/// [`crate::conformance_tests!`]).
#[macro_export]
macro_rules! agent_conformance_tests {
    ($factory:expr) => {
        $crate::agent_conformance_tests!(@instantiate $factory;
            agent_call_returns_result,
            agent_serves_64_concurrent_calls,
            agent_errors_propagate,
            agent_unknown_action_is_a_remote_error,
            agent_ping_waits_for_startup,
            agent_failed_startup_answers_callers,
            agent_handle_stats_and_reject_on_inactive,
            agent_launches_child_alongside,
            agent_shutdown_terminates_mailbox,
            agent_shutdown_cancels_running_actions,
            agent_cancel_stops_running_action,
            agent_calls_another_agent,
            agent_discover_then_call,
            agent_restarted_under_same_id,
            agent_answers_bad_requests,
        );
    };
    (@instantiate $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $factory.await;
                $crate::agents::$name(&backend).await;
            }
        )*
    };
}
