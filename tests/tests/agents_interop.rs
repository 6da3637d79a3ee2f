//! Cross-language agents over Redis, our HTTP exchange server, and Academy's own (Python) one: a Rust agent called from an academy-py
//! handle (json serializer on the Python side), and an academy-py agent called from a Rust
//! handle. Python comes from `scripts/academy-venv.sh` (or `ACADEMY_PYTHON`); the tests fail
//! loudly if it cannot be created.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use exchange_conformance::agents::{CALCULATOR, Calculator};
use exchange_conformance::python::{academy_python as python, repo_root};
use exchange_conformance::redis_server::RedisServer;
use exchange_core::{AgentId, Error, Exchange, Manager, Uuid};
use exchange_http::HttpExchange;
use exchange_http::server::spawn_http_exchange;
use exchange_redis::RedisExchange;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const DEADLINE: Duration = Duration::from_secs(60);

/// Starts a Python helper from `tests/python` with its stdout piped.
fn spawn_python(script: &str, args: &[String]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let path = repo_root().join("tests/python").join(script);
    let mut child = Command::new(python())
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    (child, lines)
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) -> String {
    match tokio::time::timeout(DEADLINE, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => panic!("the Python helper exited before {what} (see its stderr above)"),
        Ok(Err(e)) => panic!("reading the Python helper's output: {e}"),
        Err(_) => panic!("the Python helper printed nothing for {what} within {DEADLINE:?}"),
    }
}

async fn http_exchange(url: &str) -> Arc<dyn Exchange> {
    Arc::new(HttpExchange::connect(url).await.expect("connect to our HTTP exchange"))
}

/// Academy's own HTTP exchange server (`python -m academy.exchange.cloud`), killed on drop.
struct AcademyServer {
    child: Child,
    url: String,
    config: PathBuf,
}

impl AcademyServer {
    async fn start() -> AcademyServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = std::env::temp_dir().join(format!("agents-interop-{}.toml", Uuid::new_v4()));
        std::fs::write(&config, format!("host = \"127.0.0.1\"\nport = {port}\n")).unwrap();
        let child = Command::new(python())
            .args(["-m", "academy.exchange.cloud", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start Academy's HTTP exchange server");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "Academy's server did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        AcademyServer { child, url: format!("http://127.0.0.1:{port}"), config }
    }
}

impl Drop for AcademyServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.config);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handle_calls_rust_agent_over_http() {
    let server = spawn_http_exchange().await.expect("start our HTTP exchange server");
    python_calls_rust_agent(over_http(server.url()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handle_calls_rust_agent_over_academy_server() {
    let server = AcademyServer::start().await;
    python_calls_rust_agent(over_http(&server.url).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_handle_calls_python_agent_over_http() {
    let server = spawn_http_exchange().await.expect("start our HTTP exchange server");
    rust_calls_python_agent(over_http(server.url()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_handle_calls_python_agent_over_academy_server() {
    let server = AcademyServer::start().await;
    rust_calls_python_agent(over_http(&server.url).await).await;
}

/// Which exchange both sides use: the Rust client and the Python factory arguments.
struct Target {
    exchange: Arc<dyn Exchange>,
    python_args: Vec<String>,
}

async fn over_http(url: &str) -> Target {
    Target { exchange: http_exchange(url).await, python_args: vec!["http".into(), url.into()] }
}

async fn over_redis(server: &RedisServer) -> Target {
    let exchange = RedisExchange::connect(&server.url()).await.expect("connect to the test redis-server");
    Target {
        exchange: Arc::new(exchange),
        python_args: vec!["redis".into(), "127.0.0.1".into(), server.port().to_string()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handle_calls_rust_agent_over_redis() {
    let server = RedisServer::start();
    python_calls_rust_agent(over_redis(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_handle_calls_python_agent_over_redis() {
    let server = RedisServer::start();
    rust_calls_python_agent(over_redis(&server).await).await;
}

async fn python_calls_rust_agent(target: Target) {
    let manager = Manager::new(target.exchange).await.unwrap();
    let calc = manager.launch(Calculator::default()).await.unwrap();
    calc.ping().await.unwrap();
    let id = calc.agent_id().uid().to_string();

    let args: Vec<String> = std::iter::once(id.clone()).chain(target.python_args).collect();
    let (mut child, mut lines) = spawn_python("agents_py_caller.py", &args);
    let mut checks = serde_json::Map::new();
    loop {
        let line = next_line(&mut lines, "the next check").await;
        if line == "done" {
            break;
        }
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        checks.insert(value["check"].as_str().expect("check name").to_owned(), value);
    }
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("python exits").unwrap();
    assert!(status.success(), "python caller failed: {status}");

    assert_eq!(checks["ping"]["ok"], json!(true));
    assert_eq!(checks["add"]["value"], json!(42));
    assert_eq!(checks["echo"]["value"], json!({"text": "h\u{e9}llo", "n": [1, 2.5, null]}));
    assert_eq!(checks["scale"]["value"], json!(3.0));
    let me = checks["whoami"]["me"].as_str().unwrap();
    assert!(checks["whoami"]["value"].as_str().unwrap().contains(me), "{}", checks["whoami"]);
    assert_eq!(checks["concurrent"]["value"], json!((0..64).map(|i| 2 * i).collect::<Vec<_>>()));
    assert_eq!(checks["fail"]["error"], json!("AcademyRemoteError"));
    assert!(checks["fail"]["text"].as_str().unwrap().contains("ValueError: bad value"), "{}", checks["fail"]);
    assert_eq!(checks["unknown"]["error"], json!("AcademyRemoteError"));
    assert!(checks["unknown"]["text"].as_str().unwrap().contains("no_such_action"), "{}", checks["unknown"]);
    assert_eq!(checks["discover"]["value"], json!([id]), "Python discovers {CALCULATOR}");
    // The Python handle's shutdown request stopped the Rust agent and terminated its mailbox.
    tokio::time::timeout(DEADLINE, manager.wait(calc.agent_id(), None)).await.unwrap().unwrap();
    assert!(matches!(calc.call::<i64>("add", (1, 2)).await, Err(Error::MailboxTerminated { .. })));
    manager.close().await.unwrap();
}

async fn rust_calls_python_agent(target: Target) {
    let (mut child, mut lines) = spawn_python("agents_py_agent.py", &target.python_args);
    let started: Value = serde_json::from_str(&next_line(&mut lines, "the agent id").await).expect("json line");
    let uid = Uuid::parse_str(started["agent_id"].as_str().expect("agent_id")).expect("uuid");

    let manager = Manager::new(target.exchange).await.unwrap();
    let agent = manager.handle(&AgentId::from_parts(uid, None)).with_timeout(DEADLINE);
    agent.ping().await.unwrap();
    assert_eq!(agent.call::<i64>("add", (2, 40)).await.unwrap(), 42);
    let value = json!({"text": "h\u{e9}llo", "n": [1, 2.5, null], "nested": {"ok": true}});
    assert_eq!(agent.call::<Value>("echo", (value.clone(),)).await.unwrap(), value);
    assert_eq!(agent.call_with_kwargs::<f64>("scale", (2.0,), json!({"factor": 1.5})).await.unwrap(), 3.0);
    let sums = futures::future::join_all((0..64i64).map(|i| agent.call::<i64>("add", (i, i)))).await;
    assert_eq!(sums.into_iter().map(Result::unwrap).collect::<Vec<_>>(), (0..64).map(|i| 2 * i).collect::<Vec<_>>());
    match agent.call::<()>("fail", ("bad value",)).await {
        Err(Error::Remote { message }) => assert!(message.contains("ValueError: bad value"), "{message}"),
        other => panic!("expected the Python exception, got {other:?}"),
    }
    match agent.call::<Value>("no_such_action", ()).await {
        Err(Error::Remote { message }) => assert!(message.contains("no_such_action"), "{message}"),
        other => panic!("expected the Python AttributeError, got {other:?}"),
    }
    match agent.call_timeout::<f64>("sleep", (30.0,), Duration::from_millis(300)).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    let found = manager.client().discover("agents_py_agent.PyCalculator", false).await.unwrap();
    let found_main = manager.client().discover("__main__.PyCalculator", false).await.unwrap();
    assert!(found.contains(agent.agent_id()) || found_main.contains(agent.agent_id()), "{found:?} {found_main:?}");

    agent.shutdown(None).await.unwrap();
    assert_eq!(next_line(&mut lines, "the agent's stop").await, "stopped");
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("python exits").unwrap();
    assert!(status.success(), "python agent failed: {status}");
    match agent.call::<i64>("add", (1, 2)).await {
        Err(Error::MailboxTerminated { .. }) => {}
        other => panic!("expected the terminated error, got {other:?}"),
    }
    manager.close().await.unwrap();
}
