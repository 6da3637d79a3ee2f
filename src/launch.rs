//! Runs one agent from a TOML file: the one call a user's binary makes.
//!
//! ```toml
//! exchange = "redis://127.0.0.1:6379"   # any URL `connect` accepts
//!
//! [agent]                               # all optional
//! name = "calculator"                   # name of a fresh id
//! id = "7d4c…"                          # or a fixed uid (restarts and redeploys keep it)
//! restarts = 2                          # restart a failed agent up to 2 times
//! max_concurrency = 256                 # actions running at once
//! terminate = true                      # terminate the mailbox when the agent stops
//!
//! [settings]                            # handed to your factory, as your own type
//! precision = 3
//! ```
//!
//! ```no_run
//! use exchange::agent::{Actions, Agent};
//!
//! #[derive(serde::Deserialize)]
//! struct Settings { precision: u32 }
//! struct Calculator { precision: u32 }
//! impl Agent for Calculator {
//!     fn actions(&self, actions: &mut Actions<Self>) {
//!         actions.add("precision", |agent, ()| async move { Ok(agent.precision) });
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> exchange::Result<()> {
//!     exchange::launch::run_agent_from_file("agent.toml", |s: &Settings| Calculator { precision: s.precision }).await
//! }
//! ```

use std::path::Path;

use exchange_core::agent::Agent;
use exchange_core::{AgentId, Error, LaunchOptions, Manager, Result, RuntimeConfig, Uuid};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The file's layout; `S` is the agent's own settings type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentFile<S> {
    /// Exchange URL (see [`crate::connect`]).
    pub exchange: String,
    /// How the agent runs.
    #[serde(default)]
    pub agent: AgentSection,
    /// The agent's own settings.
    pub settings: S,
}

/// The `[agent]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentSection {
    /// Name of a fresh id.
    pub name: Option<String>,
    /// A fixed uid.
    pub id: Option<Uuid>,
    /// Restarts after failures.
    #[serde(default)]
    pub restarts: u32,
    /// Actions running at once.
    pub max_concurrency: Option<usize>,
    /// Terminate the mailbox when the agent stops (default true).
    pub terminate: Option<bool>,
}

impl<S: DeserializeOwned> AgentFile<S> {
    /// Parses the TOML text.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::config(format!("invalid agent file: {e}")))
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`Error::Config`] if it cannot be read or parsed.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read agent file {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Launch options from the `[agent]` table.
    pub fn options(&self) -> LaunchOptions {
        let mut config = RuntimeConfig::default();
        if let Some(max) = self.agent.max_concurrency {
            config = config.with_max_concurrency(max);
        }
        if let Some(terminate) = self.agent.terminate {
            config = config.with_terminate(terminate, terminate);
        }
        let mut options = LaunchOptions::default().with_restarts(self.agent.restarts).with_config(config);
        if let Some(name) = &self.agent.name {
            options = options.with_name(name.clone());
        }
        if let Some(uid) = self.agent.id {
            options = options.with_id(AgentId::from_parts(uid, self.agent.name.as_deref()));
        }
        options
    }
}

/// Runs the agent a file describes until it stops (a shutdown request, a failure after its
/// restarts) or the process gets Ctrl-C; `factory` builds the agent from the settings (again
/// for each restart).
///
/// # Errors
/// [`Error::Config`] for a bad file or URL, connection errors, and the agent's failure.
pub async fn run_agent_from_file<A, S, F>(path: impl AsRef<Path>, factory: F) -> Result<()>
where
    A: Agent,
    S: DeserializeOwned + Send + 'static,
    F: FnMut(&S) -> A + Send + 'static,
{
    run_agent(AgentFile::read(path)?, factory).await
}

/// As [`run_agent_from_file`], from an already parsed file.
///
/// # Errors
/// As [`run_agent_from_file`].
pub async fn run_agent<A, S, F>(file: AgentFile<S>, mut factory: F) -> Result<()>
where
    A: Agent,
    S: DeserializeOwned + Send + 'static,
    F: FnMut(&S) -> A + Send + 'static,
{
    let options = file.options();
    let manager = Manager::new(crate::connect(&file.exchange).await?).await?;
    let settings = file.settings;
    let handle = manager.launch_with(options, move || factory(&settings)).await?;
    let id = handle.agent_id().clone();
    let result = tokio::select! {
        result = manager.wait(&id, None) => result,
        _ = tokio::signal::ctrl_c() => {
            manager.shutdown(&id, None)?;
            manager.wait(&id, None).await
        }
    };
    let closed = manager.close().await;
    result.and(closed)
}

#[cfg(all(test, feature = "local"))]
mod tests {
    use std::time::Duration;

    use exchange_core::agent::{Actions, Agent};

    use super::*;

    #[derive(Deserialize)]
    struct Settings {
        offset: i64,
    }

    struct Adder {
        offset: i64,
    }

    impl Agent for Adder {
        fn behaviors(&self) -> Vec<String> {
            vec!["tests.launch.Adder".into(), exchange_core::ACADEMY_AGENT_BASE.into()]
        }

        fn actions(&self, actions: &mut Actions<Self>) {
            actions.add("add", |agent, (x,): (i64,)| async move { Ok(x + agent.offset) });
        }
    }

    #[test]
    fn rejects_unknown_keys() {
        let bad = "exchange = \"local://\"\nport = 1\n[settings]\noffset = 1\n";
        assert!(matches!(AgentFile::<Settings>::parse(bad), Err(Error::Config { .. })));
    }

    #[tokio::test]
    async fn runs_the_agent_a_file_describes_until_shut_down() {
        let uid = Uuid::new_v4();
        let text = format!(
            "exchange = \"local://launch-test\"\n[agent]\nname = \"adder\"\nid = \"{uid}\"\nrestarts = 1\n\
             [settings]\noffset = 10\n"
        );
        let file = AgentFile::<Settings>::parse(&text).unwrap();
        let running = tokio::spawn(run_agent(file, |s: &Settings| Adder { offset: s.offset }));
        let user = Manager::new(crate::connect("local://launch-test").await.unwrap()).await.unwrap();
        let id = AgentId::from_parts(uid, None);
        let handle = user.handle(&id).with_timeout(Duration::from_secs(10));
        let mut sum = Err(Error::config("not called"));
        for _ in 0..200 {
            sum = handle.call::<i64>("add", (5,)).await;
            if sum.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sum.unwrap(), 15);
        assert_eq!(user.client().discover("tests.launch.Adder", false).await.unwrap(), vec![id]);
        handle.shutdown(None).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap().unwrap();
        user.close().await.unwrap();
    }
}
