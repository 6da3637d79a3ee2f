//! [`Manager`]: launches agents on tokio tasks, hands out handles, restarts failed agents, and
//! shuts everything down in order.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::agent::Agent;
use crate::client::{AgentStatus, Client};
use crate::error::{Error, Result};
use crate::exchange::{AgentRegistration, Exchange};
use crate::handle::Handle;
use crate::id::AgentId;
use crate::runtime::{Runtime, RuntimeConfig, Stopper};

/// How to launch one agent.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct LaunchOptions {
    /// Name of a fresh agent id.
    pub name: Option<String>,
    /// A fixed id (registered if new).
    pub id: Option<AgentId>,
    /// How many times a failed agent is started again, under the same id.
    pub restarts: u32,
    /// How the agent runs.
    pub config: RuntimeConfig,
}

impl LaunchOptions {
    /// Names the agent's fresh id.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Runs the agent under this id.
    pub fn with_id(mut self, id: AgentId) -> Self {
        self.id = Some(id);
        self
    }

    /// Restarts a failed agent up to `restarts` times.
    pub fn with_restarts(mut self, restarts: u32) -> Self {
        self.restarts = restarts;
        self
    }

    /// Runs the agent with this configuration.
    pub fn with_config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }
}

/// How a managed agent ended: `None` while it runs.
type Outcome = Option<Result<(), String>>;

struct Managed {
    control: Arc<Mutex<Control>>,
    done: watch::Receiver<Outcome>,
}

/// The current run's stopper and a stop requested before it existed.
#[derive(Default)]
struct Control {
    stopper: Option<Stopper>,
    requested: Option<Option<bool>>,
}

/// Launches and supervises agents, and owns a user client for handles. Cheap to clone.
#[derive(Clone)]
pub struct Manager {
    client: Client,
    agents: Arc<Mutex<HashMap<AgentId, Managed>>>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager").field("client", self.client.id()).field("agents", &self.agents.lock().len()).finish()
    }
}

impl Manager {
    /// A manager with a fresh user client on `exchange`.
    ///
    /// # Errors
    /// Transport failures while registering the user.
    pub async fn new(exchange: Arc<dyn Exchange>) -> Result<Manager> {
        Ok(Manager { client: Client::user(exchange, Some("manager")).await?, agents: Arc::default() })
    }

    /// A manager whose handles send from `client` (an agent's own, for its children).
    pub(crate) fn with_client(client: Client) -> Manager {
        Manager { client, agents: Arc::default() }
    }

    /// The user client handles are created from.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The exchange.
    pub fn exchange(&self) -> &Arc<dyn Exchange> {
        self.client.exchange()
    }

    /// Registers and starts `agent` with default options; returns a handle to it.
    ///
    /// # Errors
    /// Transport failures while registering.
    pub async fn launch<A: Agent>(&self, agent: A) -> Result<Handle> {
        let mut agent = Some(agent);
        self.supervise(LaunchOptions::default(), move || agent.take()).await
    }

    /// Registers and starts an agent built by `factory`, which is called again for each
    /// restart (same id).
    ///
    /// # Errors
    /// Transport failures while registering.
    pub async fn launch_with<A, F>(&self, options: LaunchOptions, mut factory: F) -> Result<Handle>
    where
        A: Agent,
        F: FnMut() -> A + Send + 'static,
    {
        self.supervise(options, move || Some(factory())).await
    }

    async fn supervise<A, F>(&self, options: LaunchOptions, mut factory: F) -> Result<Handle>
    where
        A: Agent,
        F: FnMut() -> Option<A> + Send + 'static,
    {
        let Some(first) = factory() else { return Err(Error::config("the agent factory produced no agent")) };
        let mut registration = AgentRegistration::new(first.behaviors());
        registration.id = options.id.clone();
        registration.name = options.name.clone();
        let id = self.exchange().register_agent(registration).await?;
        let control = Arc::new(Mutex::new(Control::default()));
        let (done_tx, done) = watch::channel(None);
        self.agents.lock().insert(id.clone(), Managed { control: control.clone(), done });
        let exchange = self.exchange().clone();
        let agent_id = id.clone();
        tokio::spawn(async move {
            let mut next = Some(first);
            let mut attempt = 0u32;
            let outcome = loop {
                let Some(agent) = next.take().or_else(&mut factory) else {
                    break Err(format!("no agent to restart {agent_id} with"));
                };
                let mut config = options.config.clone();
                if attempt < options.restarts {
                    config.terminate_on_error = false;
                }
                let runtime = Runtime::new(agent, exchange.clone(), agent_id.clone(), config);
                let stop_requested = {
                    let mut control = control.lock();
                    let stopper = runtime.stopper();
                    if let Some(terminate) = control.requested {
                        stopper.stop(terminate);
                    }
                    control.stopper = Some(stopper);
                    control.requested.is_some()
                };
                match runtime.run().await {
                    Ok(()) => break Ok(()),
                    Err(e) if attempt < options.restarts && !stop_requested && control.lock().requested.is_none() => {
                        attempt += 1;
                        tracing::warn!(agent = %agent_id, error = %e, attempt, "agent failed; restarting it");
                    }
                    Err(e) => {
                        if attempt < options.restarts {
                            let _ = exchange.terminate(&agent_id.clone().into()).await;
                        }
                        break Err(e.to_string());
                    }
                }
            };
            if let Err(e) = &outcome {
                tracing::warn!(agent = %agent_id, error = %e, "agent stopped with an error");
            }
            done_tx.send_replace(Some(outcome));
        });
        Ok(self.client.handle(&id))
    }

    /// A handle to an agent (managed here or not), sending from the manager's user mailbox.
    pub fn handle(&self, id: &AgentId) -> Handle {
        self.client.handle(id)
    }

    /// Agents launched here that are still running.
    pub fn running(&self) -> Vec<AgentId> {
        self.agents.lock().iter().filter(|(_, m)| m.done.borrow().is_none()).map(|(id, _)| id.clone()).collect()
    }

    /// Liveness of an agent, from its heartbeat.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn status(&self, id: &AgentId) -> Result<AgentStatus> {
        self.client.status(id).await
    }

    /// Asks a managed agent to stop (does not wait); `terminate` overrides its mailbox policy.
    ///
    /// # Errors
    /// [`Error::BadEntityId`] if the agent was not launched here.
    pub fn shutdown(&self, id: &AgentId, terminate: Option<bool>) -> Result<()> {
        let agents = self.agents.lock();
        let managed = agents.get(id).ok_or_else(|| Error::BadEntityId { id: id.clone().into() })?;
        let mut control = managed.control.lock();
        control.requested.get_or_insert(terminate);
        if let Some(stopper) = &control.stopper {
            stopper.stop(terminate);
        }
        Ok(())
    }

    /// Waits until a managed agent has stopped, at most `timeout`.
    ///
    /// # Errors
    /// [`Error::BadEntityId`] if it was not launched here, [`Error::Timeout`],
    /// [`Error::AgentFailed`] if it stopped with an error (after its restarts).
    pub async fn wait(&self, id: &AgentId, timeout: Option<Duration>) -> Result<()> {
        let mut done = self
            .agents
            .lock()
            .get(id)
            .map(|m| m.done.clone())
            .ok_or_else(|| Error::BadEntityId { id: id.clone().into() })?;
        let waiting = done.wait_for(Option::is_some);
        let outcome = match timeout {
            None => waiting.await,
            Some(timeout) => tokio::time::timeout(timeout, waiting).await.map_err(|_| Error::Timeout { timeout })?,
        }
        .map(|outcome| outcome.clone())
        .map_err(|_| Error::Closed { id: id.clone().into() })?;
        match outcome {
            Some(Err(message)) => Err(Error::AgentFailed { id: id.clone().into(), message }),
            _ => Ok(()),
        }
    }

    /// Stops every managed agent, waits for them, then closes the user client (terminating
    /// its mailbox). Agent failures are not repeated here: [`Manager::wait`] reports them.
    ///
    /// # Errors
    /// Transport failures while closing the client.
    pub async fn close(&self) -> Result<()> {
        self.stop_all().await;
        self.client.close().await
    }

    /// Stops every managed agent and waits for them.
    pub(crate) async fn stop_all(&self) {
        let ids: Vec<AgentId> = self.agents.lock().keys().cloned().collect();
        for id in &ids {
            let _ = self.shutdown(id, None);
        }
        for id in &ids {
            let _ = self.wait(id, None).await;
        }
    }
}
