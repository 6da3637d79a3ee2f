//! Academy's default serializer (pickle) across languages, over our HTTP server and Redis: a
//! Python caller with Academy's defaults calls the calculator example's agent and gets every
//! basic type back unchanged; a Rust handle with the pickle option calls a Python agent.

#[allow(dead_code, unreachable_pub)] // The example's `main` and `stopped` are not run here.
#[path = "../../examples/calculator.rs"]
mod calculator;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use exchange_conformance::python::{academy_python as python, repo_root};
use exchange_conformance::redis_server::RedisServer;
use exchange_core::{AgentId, Error, Exchange, Manager, PyValue, Strategy, Uuid};
use exchange_http::HttpExchange;
use exchange_http::server::spawn_http_exchange;
use exchange_redis::RedisExchange;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const DEADLINE: Duration = Duration::from_secs(60);

/// Which exchange both sides use: the Rust client and the Python factory arguments.
struct Target {
    exchange: Arc<dyn Exchange>,
    python_args: Vec<String>,
}

async fn over_http(url: &str) -> Target {
    let exchange = HttpExchange::connect(url).await.expect("connect to our HTTP exchange");
    Target { exchange: Arc::new(exchange), python_args: vec!["http".into(), url.into()] }
}

async fn over_redis(server: &RedisServer) -> Target {
    let exchange = RedisExchange::connect(&server.url()).await.expect("connect to the test redis-server");
    Target {
        exchange: Arc::new(exchange),
        python_args: vec!["redis".into(), "127.0.0.1".into(), server.port().to_string()],
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_default_caller_gets_every_basic_type_back_over_http() {
    let server = spawn_http_exchange().await.expect("start our HTTP exchange server");
    python_calls_calculator(over_http(server.url()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_default_caller_gets_every_basic_type_back_over_redis() {
    let server = RedisServer::start();
    python_calls_calculator(over_redis(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_pickle_handle_calls_python_agent_over_http() {
    let server = spawn_http_exchange().await.expect("start our HTTP exchange server");
    rust_calls_python_agent(over_http(server.url()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_pickle_handle_calls_python_agent_over_redis() {
    let server = RedisServer::start();
    rust_calls_python_agent(over_redis(&server).await).await;
}

async fn python_calls_calculator(target: Target) {
    let manager = Manager::new(target.exchange).await.unwrap();
    let calc = manager.launch(calculator::Calculator).await.unwrap();
    // The id line, exactly as the example prints it.
    let id_line = serde_json::to_string(calc.agent_id()).unwrap();
    let args: Vec<String> = std::iter::once(id_line.clone()).chain(target.python_args).collect();
    let (mut child, mut lines) = spawn_python("pickle_caller.py", &args);
    let mut echoes = Vec::new();
    let mut checks = serde_json::Map::new();
    loop {
        let line = next_line(&mut lines, "the next check").await;
        if line == "done" {
            break;
        }
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        match value["check"].as_str().expect("check name") {
            "echo" => echoes.push(value),
            name => {
                checks.insert(name.to_owned(), value);
            }
        }
    }
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("python exits").unwrap();
    assert!(status.success(), "python caller failed: {status}");

    assert_eq!(checks["add"]["value"], Value::from(42));
    assert!(echoes.len() >= 25, "{echoes:?}");
    for echo in &echoes {
        assert_eq!(echo["same"], Value::Bool(true), "echo changed the value or its types: {echo}");
    }
    assert_eq!(checks["fail"]["error"], "Exception", "{}", checks["fail"]);
    assert_eq!(checks["fail"]["text"], "boom");
    assert_eq!(checks["bad_args"]["error"], "TypeError", "{}", checks["bad_args"]);
    assert!(checks["bad_args"]["text"].as_str().unwrap().contains("bad arguments for add"), "{}", checks["bad_args"]);
    let discovered: Vec<AgentId> = checks["discover"]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| serde_json::from_str(id.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(discovered, vec![calc.agent_id().clone()]);
    manager.close().await.unwrap();
}

/// Values JSON cannot carry; a Python agent echoes them back only if both ways were pickle.
fn python_only_values() -> Vec<PyValue> {
    let big = PyValue::int(num_bigint::BigInt::from(1u8) << 100);
    vec![
        PyValue::Tuple(vec![PyValue::Int(1), PyValue::Str("a".into())]),
        PyValue::Set(vec![PyValue::Int(3)]),
        PyValue::FrozenSet(vec![]),
        PyValue::Bytes(b"\x00\xff".to_vec()),
        PyValue::ByteArray(b"ba".to_vec()),
        big.clone(),
        PyValue::Dict(vec![
            (PyValue::Tuple(vec![PyValue::Int(1), PyValue::Int(2)]), PyValue::None),
            (PyValue::Int(7), PyValue::List(vec![big, PyValue::Float(f64::INFINITY)])),
        ]),
    ]
}

async fn rust_calls_python_agent(target: Target) {
    let (mut child, mut lines) = spawn_python("agents_py_agent.py", &target.python_args);
    let started: Value = serde_json::from_str(&next_line(&mut lines, "the agent id").await).expect("json line");
    let uid = Uuid::parse_str(started["agent_id"].as_str().expect("agent_id")).expect("uuid");

    let manager = Manager::new(target.exchange).await.unwrap();
    let agent =
        manager.handle(&AgentId::from_parts(uid, None)).with_timeout(DEADLINE).with_serializer(Strategy::Pickle);
    agent.ping().await.unwrap();
    assert_eq!(agent.call::<i64>("add", (2, 40)).await.unwrap(), 42);
    for value in python_only_values() {
        assert_eq!(agent.call::<PyValue>("echo", (value.clone(),)).await.unwrap(), value);
    }
    let scaled: f64 = agent.call_with_kwargs("scale", (2.0,), serde_json::json!({"factor": 1.5})).await.unwrap();
    assert_eq!(scaled, 3.0);
    match agent.call::<()>("fail", ("bad value",)).await {
        Err(Error::Remote { message }) => assert_eq!(message, "ValueError: bad value"),
        other => panic!("expected the Python exception, got {other:?}"),
    }
    agent.shutdown(None).await.unwrap();
    assert_eq!(next_line(&mut lines, "the agent's stop").await, "stopped");
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("python exits").unwrap();
    assert!(status.success(), "python agent failed: {status}");
    manager.close().await.unwrap();
}
