//! Run with: cargo run --features full --example calculator [-- EXCHANGE_URL]
//!
//! A Rust agent for Python callers with Academy's default settings (pickle serialization):
//! `add(a, b)`, `echo(value)` (returns any basic Python value unchanged: a tuple stays a
//! tuple, a set a set, bytes bytes) and `fail(message)` (raises `Exception(message)`).
//! The URL is any that `exchange::connect` takes (default `http://127.0.0.1:5463`, an
//! `exchange-server`). The first line of stdout is the agent's id as Academy JSON
//! (`AgentId.model_validate_json` reads it); the agent serves until Ctrl-C or SIGTERM. See
//! docs/AGENTS.md, "Calling Rust agents from Python".

use exchange::agent::{Actions, Agent};
use exchange::{ACADEMY_AGENT_BASE, BoxError, Manager, PyValue};

/// The behaviour name Python discovers the agent by.
pub const BEHAVIOR: &str = "examples.Calculator";

/// Adds, echoes and fails, for callers in any language.
pub struct Calculator;

impl Agent for Calculator {
    fn behaviors(&self) -> Vec<String> {
        vec![BEHAVIOR.into(), ACADEMY_AGENT_BASE.into()]
    }

    fn actions(&self, actions: &mut Actions<Self>) {
        actions
            .add("add", |_, (a, b): (i64, i64)| async move {
                a.checked_add(b).ok_or_else(|| BoxError::from(format!("OverflowError: {a} + {b} overflows 64 bits")))
            })
            .add("echo", |_, (value,): (PyValue,)| async move { Ok(value) })
            .add("fail", |_, (message,): (String,)| async move { Err::<(), _>(BoxError::from(message)) });
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
    }
}

#[tokio::main]
async fn main() -> exchange::Result<()> {
    exchange::init_logs(); // on stderr: stdout's first line stays the id
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:5463".into());
    let manager = Manager::new(exchange::connect(&url).await?).await?;
    let calculator = manager.launch(Calculator).await?;
    let id = serde_json::to_string(calculator.agent_id()).map_err(|e| exchange::Error::codec(e.to_string()))?;
    println!("{id}");
    stopped().await;
    manager.close().await
}
