//! Redis interop with academy-py 1.0 (venv from `scripts/academy-venv.sh`, or
//! `ACADEMY_PYTHON`): Python's `RedisExchangeFactory` transports and our `RedisExchange` on one
//! private `redis-server`, in both directions (`tests/python/redis_interop.py`).

use std::process::Stdio;
use std::time::Duration;

use exchange_conformance::fixtures;
use exchange_conformance::python::{academy_python, repo_root};
use exchange_conformance::redis_server::RedisServer;
use exchange_core::{AgentRegistration, EntityId, Error, Exchange, MailboxStatus, Message, UserId};
use exchange_redis::RedisExchange;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const WITHIN: Duration = Duration::from_secs(60);

/// The Python side: one child process speaking JSON lines.
struct Python {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Python {
    fn start(args: &[&str]) -> Python {
        let mut child = Command::new(academy_python())
            .arg(repo_root().join("tests/python/redis_interop.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start python");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Python { child, stdin, lines }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WITHIN, self.lines.next_line()).await.expect("python answered in time");
        match line.expect("read python's stdout") {
            Some(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("python wrote {line:?}: {e}")),
            None => panic!("python exited early:\n{}", self.stderr().await),
        }
    }

    async fn tell(&mut self, value: Value) {
        self.stdin.write_all(format!("{value}\n").as_bytes()).await.expect("write to python");
        self.stdin.flush().await.expect("flush");
    }

    async fn stderr(&mut self) -> String {
        let _ = self.child.start_kill();
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut err, &mut text).await;
        }
        text
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(WITHIN, self.child.wait()).await.expect("python exits").expect("wait");
        assert!(status.success(), "python failed:\n{}", self.stderr().await);
    }
}

fn same_json(a: &str, b: &str) -> bool {
    serde_json::from_str::<Value>(a).unwrap() == serde_json::from_str::<Value>(b).unwrap()
}

/// Python sends every message kind to a mailbox Rust registered; Rust receives them equal.
/// Python discovers a Rust agent and terminates a Rust mailbox; Rust discovers Python's agent
/// and reads Python's heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sends_rust_receives() {
    let server = RedisServer::start();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let port = server.port().to_string();
    let root = fixtures::root();
    let mut py = Python::start(&["py-to-rust", &port, root.to_str().unwrap()]);
    let hello = py.next().await;
    let py_mailbox: EntityId = serde_json::from_str(hello["mailbox"].as_str().unwrap()).unwrap();
    let py_agent = hello["agent"].as_str().unwrap().to_owned();

    let me = ex.register_user(Some("rust-receiver")).await.unwrap();
    let inbox = ex.open_mailbox(&me.clone().into()).await.unwrap();
    let behavior = format!("rust{}.Worker", uuid::Uuid::new_v4().simple());
    let agent = ex
        .register_agent(AgentRegistration::new([behavior.clone(), exchange_core::ACADEMY_AGENT_BASE.into()]))
        .await
        .unwrap();
    let victim = ex.register_user(Some("victim")).await.unwrap();
    let victim_inbox = ex.open_mailbox(&victim.clone().into()).await.unwrap();
    py.tell(json!({
        "mailbox": EntityId::from(me).to_json(),
        "agent": agent.uid().to_string(),
        "behavior": behavior,
        "victim": EntityId::from(victim.clone()).to_json(),
    }))
    .await;

    let mut kinds = 0;
    loop {
        let report = py.next().await;
        if report["done"] == json!(true) {
            break;
        }
        let sent = report["sent"].as_str().expect("a sent message");
        let got = inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
        assert!(same_json(sent, &got.to_json()), "{}: sent {sent}\nreceived {}", report["name"], got.to_json());
        assert_eq!(got.src(), &py_mailbox);
        kinds += 1;
    }
    assert_eq!(kinds, fixtures::messages().len(), "every fixture message crossed");
    py.finish().await;

    // Python's agent, discovered from Rust; its heartbeat; the mailbox Python terminated.
    let found = ex.discover("__main__.PyWorker", false).await.unwrap();
    assert_eq!(found.iter().map(|a| a.uid().to_string()).collect::<Vec<_>>(), vec![py_agent]);
    assert!(ex.heartbeat(&py_mailbox).await.unwrap().is_some_and(|age| age < Duration::from_secs(60)));
    assert_eq!(ex.status(&victim.into()).await.unwrap(), MailboxStatus::Terminated);
    let after = victim_inbox.recv(Some(Duration::from_secs(5))).await;
    assert!(matches!(after, Err(Error::MailboxTerminated { .. })), "{after:?}");
}

/// Rust sends every message kind to a Python transport; Python receives them equal, discovers
/// a Rust agent, sees a Rust terminate, and gets the code-0 answer when Rust terminates an
/// agent with its request pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sends_python_receives() {
    let server = RedisServer::start();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let mut py = Python::start(&["rust-to-py", &server.port().to_string()]);
    let hello = py.next().await;
    let py_mailbox: UserId = serde_json::from_str(hello["mailbox"].as_str().unwrap()).unwrap();

    let me = ex.register_user(Some("rust-sender")).await.unwrap();
    ex.update_heartbeat(&me.clone().into()).await.unwrap();
    let behavior = format!("rust{}.Worker", uuid::Uuid::new_v4().simple());
    let agent = ex.register_agent(AgentRegistration::new([behavior.clone()]).with_name("worker")).await.unwrap();
    let victim = ex.register_user(None).await.unwrap();
    ex.terminate(&victim.clone().into()).await.unwrap();
    let messages = fixtures::messages();
    py.tell(json!({
        "count": messages.len(),
        "mailbox": EntityId::from(me.clone()).to_json(),
        "agent": EntityId::from(agent.clone()).to_json(),
        "behavior": behavior,
        "victim": EntityId::from(victim).to_json(),
    }))
    .await;
    for (path, text) in &messages {
        let mut message = Message::from_json(text).unwrap();
        message.header.src = me.clone().into();
        message.header.dest = py_mailbox.clone().into();
        ex.send(message.clone()).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let report = py.next().await;
        let got = report["received"].as_str().unwrap_or_else(|| panic!("{path}: python reported {report}"));
        assert!(same_json(&message.to_json(), got), "{path}: sent {}\nreceived {got}", message.to_json());
    }
    let report = py.next().await;
    assert!(report["requested"].is_string(), "{report}");
    let stats = ex.stats(&agent.clone().into()).await.unwrap();
    assert_eq!((stats.incoming, stats.queued), (1, 1), "Python's request is tracked: {stats:?}");
    ex.terminate(&agent.into()).await.unwrap();
    py.tell(json!({"terminated": true})).await;
    assert_eq!(py.next().await, json!({"done": true}));
    py.finish().await;
}
