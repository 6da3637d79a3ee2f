//! An academy-py caller of a Rust agent whose startup fails (Academy issue #288), over our HTTP
//! server and over Redis: the call waiting for the startup fails with the reason
//! (`AcademyRemoteError`), and a call after the mailbox was terminated fails at once. Python
//! comes from `scripts/academy-venv.sh` (or `ACADEMY_PYTHON`).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use exchange_conformance::agents::Calculator;
use exchange_conformance::python::{academy_python as python, repo_root};
use exchange_conformance::redis_server::RedisServer;
use exchange_core::{Exchange, Manager};
use exchange_http::HttpExchange;
use exchange_http::server::spawn_http_exchange;
use exchange_redis::RedisExchange;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;

/// Hang detector: far above what anything here takes on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// Answers well under this long count as "at once" (the callers' own timeout is 120 s).
const PROMPTLY: f64 = 20.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_caller_of_failed_rust_agent_over_http() {
    let server = spawn_http_exchange().await.expect("start our HTTP exchange server");
    let exchange: Arc<dyn Exchange> = Arc::new(HttpExchange::connect(server.url()).await.expect("connect"));
    python_caller_of_failed_agent(exchange, vec!["http".into(), server.url().into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_caller_of_failed_rust_agent_over_redis() {
    let server = RedisServer::start();
    let exchange: Arc<dyn Exchange> = Arc::new(RedisExchange::connect(&server.url()).await.expect("connect"));
    let args = vec!["redis".into(), "127.0.0.1".into(), server.port().to_string()];
    python_caller_of_failed_agent(exchange, args).await;
}

async fn python_caller_of_failed_agent(exchange: Arc<dyn Exchange>, python_args: Vec<String>) {
    let manager = Manager::new(exchange.clone()).await.unwrap();
    let gate = Arc::new(Notify::new());
    let broken =
        Calculator { startup_gate: Some(gate.clone()), startup_error: Some("no database"), ..Calculator::default() };
    let agent = manager.launch(broken).await.unwrap();
    let args: Vec<String> = std::iter::once(agent.agent_id().uid().to_string()).chain(python_args).collect();
    let script = repo_root().join("tests/python/agents_py_failing_caller.py");
    let mut child = Command::new(python())
        .arg(&script)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();

    // Fail the startup only once the Python call waits in the agent's mailbox.
    let waiting = async {
        while agent.stats().await.unwrap().incoming == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, waiting).await.expect("the Python call never reached the agent");
    gate.notify_one();

    let mut checks = serde_json::Map::new();
    loop {
        let line = tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("python answers in time");
        let line = line.expect("read python's stdout").expect("python exited before \"done\" (see its stderr)");
        if line == "done" {
            break;
        }
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        checks.insert(value["check"].as_str().expect("check name").to_owned(), value);
    }
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("python exits").unwrap();
    assert!(status.success(), "python caller failed: {status}");

    let waiting = &checks["waiting"];
    assert_eq!(waiting["error"], "AcademyRemoteError", "{waiting}");
    let text = waiting["text"].as_str().unwrap();
    assert!(text.contains("startup failed") && text.contains("no database"), "{waiting}");
    assert!(waiting["seconds"].as_f64().unwrap() < PROMPTLY, "{waiting}");
    let later = &checks["later"];
    assert!(later["error"].as_str().unwrap().contains("Terminated"), "{later}");
    assert!(later["seconds"].as_f64().unwrap() < PROMPTLY, "{later}");
    assert!(manager.wait(agent.agent_id(), Some(DEADLINE)).await.is_err(), "the agent reports its failure");
    manager.close().await.unwrap();
}
