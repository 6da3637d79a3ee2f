//! Runs one agent from a TOML file: the one call a user's binary makes.
//!
//! ```toml
//! exchange = "redis://127.0.0.1:6379"   # any URL `connect` accepts, or a table:
//! # [exchange]
//! # url = "https://exchange.example.org"
//! # token_env = "EXCHANGE_TOKEN"        # or token = "…", token_file = "…"
//! # ca_file = "ca.pem"                  # a private CA; verify_tls = false for development
//!
//! [agent]                               # all optional
//! name = "calculator"                   # name of a fresh id
//! id = "7d4c…"                          # a fixed uid (written here after the first start)
//! restarts = 2                          # restart a failed agent up to 2 times
//! max_concurrency = 256                 # actions running at once
//! terminate = false                     # terminate the mailbox when the agent stops
//!
//! [settings]                            # handed to your factory, as your own type
//! precision = 3                         # (may be left out when every field has a default)
//! ```
//!
//! As Academy's `academy.run` does, an agent whose mailbox outlives it (`terminate = false`,
//! the default) gets its id written into the file (`[agent] id`) when it first registers, so a
//! restarted process serves the same mailbox; the rest of the file is kept as written.
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

use crate::ConnectOptions;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The file's layout; `S` is the agent's own settings type.
#[derive(Debug)]
#[non_exhaustive]
pub struct AgentFile<S> {
    /// Exchange URL (see [`crate::connect`]).
    pub exchange: String,
    /// Credentials and TLS settings of the exchange.
    pub connect: ConnectOptions,
    /// How the agent runs.
    pub agent: AgentSection,
    /// The agent's own settings.
    pub settings: S,
}

/// The file as written, before the settings are read into their type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    exchange: ExchangeSpec,
    #[serde(default)]
    agent: AgentSection,
    settings: Option<toml::Value>,
}

/// `exchange = "URL"`, or an `[exchange]` table with `url` and the [`ConnectOptions`] keys.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExchangeSpec {
    Url(String),
    Table(toml::Table),
}

impl ExchangeSpec {
    fn split(self) -> Result<(String, ConnectOptions)> {
        match self {
            ExchangeSpec::Url(url) => Ok((url, ConnectOptions::default())),
            ExchangeSpec::Table(mut table) => {
                let url = match table.remove("url") {
                    Some(toml::Value::String(url)) => url,
                    _ => return Err(Error::config("invalid agent file: [exchange] needs url = \"…\"")),
                };
                let options = ConnectOptions::deserialize(toml::Value::Table(table))
                    .map_err(|e| Error::config(format!("invalid agent file: [exchange]: {e}")))?;
                Ok((url, options))
            }
        }
    }
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
    /// Terminate the mailbox when the agent stops (default false, as Academy's `academy.run`:
    /// the mailbox outlives the process, which keeps its id in the file).
    pub terminate: Option<bool>,
}

impl<S: DeserializeOwned> AgentFile<S> {
    /// Parses the TOML text.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawFile = toml::from_str(text).map_err(|e| Error::config(format!("invalid agent file: {e}")))?;
        let (exchange, connect) = raw.exchange.split()?;
        let settings = raw.settings.unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
        let settings = S::deserialize(settings).map_err(|e| Error::config(format!("invalid [settings]: {e}")))?;
        Ok(AgentFile { exchange, connect, agent: raw.agent, settings })
    }

    /// Whether the mailbox is terminated when the agent stops.
    pub fn terminates(&self) -> bool {
        self.agent.terminate.unwrap_or(false)
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
        config = config.with_terminate(self.terminates(), self.terminates());
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
/// for each restart). With the `logs` feature it first installs `init_logs`'s subscriber
/// (unless the program has one), so the agent's start line and failures are visible.
///
/// # Errors
/// [`Error::Config`] for a bad file or URL, connection errors, and the agent's failure.
pub async fn run_agent_from_file<A, S, F>(path: impl AsRef<Path>, factory: F) -> Result<()>
where
    A: Agent,
    S: DeserializeOwned + Send + 'static,
    F: FnMut(&S) -> A + Send + 'static,
{
    let path = path.as_ref();
    run(AgentFile::read(path)?, factory, Some(path)).await
}

/// As [`run_agent_from_file`], from an already parsed file (nothing is written back).
///
/// # Errors
/// As [`run_agent_from_file`].
pub async fn run_agent<A, S, F>(file: AgentFile<S>, factory: F) -> Result<()>
where
    A: Agent,
    S: DeserializeOwned + Send + 'static,
    F: FnMut(&S) -> A + Send + 'static,
{
    run(file, factory, None).await
}

async fn run<A, S, F>(file: AgentFile<S>, mut factory: F, path: Option<&Path>) -> Result<()>
where
    A: Agent,
    S: DeserializeOwned + Send + 'static,
    F: FnMut(&S) -> A + Send + 'static,
{
    #[cfg(feature = "logs")]
    crate::init_logs();
    let options = file.options();
    let exchange = crate::connect_with(&file.exchange, &file.connect).await?;
    let manager = Manager::new(exchange).await?;
    let settings = file.settings;
    let handle = manager.launch_with(options, move || factory(&settings)).await?;
    let id = handle.agent_id().clone();
    if let Some(path) = path.filter(|_| file.agent.id.is_none() && !file.agent.terminate.unwrap_or(false)) {
        write_back_id(path, &id)?;
    }
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

/// Writes `[agent] id` into the file, keeping the rest as written (atomically: a new file is
/// renamed over the old one).
fn write_back_id(path: &Path, id: &AgentId) -> Result<()> {
    let failed =
        |e: &dyn std::fmt::Display| Error::config(format!("cannot write the agent id into {}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| failed(&e))?;
    let mut document: toml_edit::DocumentMut = text.parse().map_err(|e| failed(&e))?;
    let agent = document.entry("agent").or_insert_with(toml_edit::table);
    let Some(agent) = agent.as_table_like_mut() else { return Err(failed(&"[agent] is not a table")) };
    agent.insert("id", toml_edit::value(id.uid().to_string()));
    let temporary = path.with_extension("toml.tmp");
    std::fs::write(&temporary, document.to_string()).map_err(|e| failed(&e))?;
    std::fs::rename(&temporary, path).map_err(|e| failed(&e))?;
    tracing::info!(agent = %id, file = %path.display(), "wrote the agent's id into its file for restarts");
    Ok(())
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

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Defaults {
        offset: i64,
    }

    #[test]
    fn settings_may_be_left_out_and_exchange_may_be_a_table() {
        let text = "[exchange]\nurl = \"https://exchange.example\"\ntoken_env = \"TOKEN\"\nca_file = \"ca.pem\"\n";
        let file = AgentFile::<Defaults>::parse(text).unwrap();
        assert_eq!(file.exchange, "https://exchange.example");
        assert_eq!(file.connect, ConnectOptions::default().token_env("TOKEN").ca_file("ca.pem"));
        assert_eq!(file.settings.offset, 0);
        assert!(!file.terminates(), "the mailbox outlives the agent by default, as in academy.run");
        let typo = "[exchange]\nurl = \"local://\"\ntoken_fil = \"t\"\n";
        assert!(matches!(AgentFile::<Defaults>::parse(typo), Err(Error::Config { .. })));
        // A settings type with required fields still needs its table.
        match AgentFile::<Settings>::parse("exchange = \"local://\"\n") {
            Err(Error::Config { message }) => assert!(message.contains("offset"), "{message}"),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted missing settings"),
        }
    }

    #[tokio::test]
    async fn the_first_start_writes_the_id_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let text = "# my agent\nexchange = \"local://launch-write-back\"  # local\n\n[settings]\noffset = 2\n";
        std::fs::write(&path, text).unwrap();
        let running = tokio::spawn({
            let path = path.clone();
            async move { run_agent_from_file(path, |s: &Settings| Adder { offset: s.offset }).await }
        });
        let user = Manager::new(crate::connect("local://launch-write-back").await.unwrap()).await.unwrap();
        let started = std::time::Instant::now();
        let written = loop {
            let file = AgentFile::<Settings>::read(&path).unwrap();
            if let Some(uid) = file.agent.id {
                break uid;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the id was never written back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let kept = std::fs::read_to_string(&path).unwrap();
        assert!(kept.starts_with("# my agent\n") && kept.contains("# local"), "comments lost: {kept}");
        let handle = user.handle(&AgentId::from_parts(written, None)).with_timeout(Duration::from_secs(30));
        assert_eq!(handle.call::<i64>("add", (1,)).await.unwrap(), 3);
        handle.shutdown(None).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap().unwrap();
        // The mailbox outlived the agent: a restart from the file serves the same id.
        let status = user.client().exchange().status(&AgentId::from_parts(written, None).into()).await.unwrap();
        assert_eq!(status, exchange_core::MailboxStatus::Active);
        user.close().await.unwrap();
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
