//! HTTP interop with academy-py 1.0 (venv from `scripts/academy-venv.sh`, or `ACADEMY_PYTHON`):
//! academy-py's `HttpExchangeFactory` against our server, and our client (the whole
//! conformance suite) against Academy's own server (`python -m academy.exchange.cloud`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use exchange_conformance::python::{academy_python, repo_root};
use exchange_conformance::{TestBackend, fixtures};
use exchange_core::Exchange;
use exchange_http::HttpExchange;
use exchange_http::server::spawn_http_exchange;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// academy-py's HTTP client registers, sends every message kind, receives over SSE and long
/// poll, discovers, terminates, and runs a Manager + agent against our server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn academy_client_against_our_server() {
    let server = spawn_http_exchange().await.expect("start our server");
    let python = academy_python();
    let script = repo_root().join("tests/python/http_interop_client.py");
    let url = server.url().to_owned();
    let fixtures = fixtures::root();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(url).arg(fixtures).output().expect("run the python client")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("ALL OK"),
        "academy-py client failed against our server\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// academy-py's HTTP client with bearer tokens (401, 403, shares through its console) against
/// our server in token mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn academy_client_with_tokens_against_our_server() {
    use exchange_http::server::{HttpExchangeServer, ServerConfig, spawn_server};

    let group = "6c5e3a52-6d55-4f3e-9a40-3f0c2a1d9b11";
    let config = ServerConfig::from_toml(&format!(
        "port = 0\n[auth]\nmethod = \"token\"\n\
         [auth.tokens.tok-alice]\nclient_id = \"alice\"\ngroups = [\"{group}\"]\n\
         [auth.tokens.tok-bob]\nclient_id = \"bob\"\ngroups = [\"{group}\"]\n\
         [auth.tokens.tok-carol]\nclient_id = \"carol\"\n"
    ))
    .expect("config");
    let server = spawn_server(HttpExchangeServer::new(config).expect("server")).await.expect("start our server");
    let python = academy_python();
    let script = repo_root().join("tests/python/http_auth_client.py");
    let url = server.url().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(url).arg(group).output().expect("run the python client")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("ALL OK"),
        "academy-py client with tokens failed against our server\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Academy's own HTTP exchange server in a child process (in-memory backend); killed on drop.
struct AcademyServer {
    child: Child,
    url: String,
    /// Config and log; removed on drop.
    dir: PathBuf,
}

impl AcademyServer {
    async fn start() -> Self {
        Self::start_with("[backend]\nkind = \"python\"\n").await
    }

    /// With this `[backend]` section.
    async fn start_with(backend: &str) -> Self {
        let python = academy_python();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("academy-http-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("exchange.toml");
        std::fs::write(&config, format!("host = \"127.0.0.1\"\nport = {port}\n{backend}")).expect("write config");
        let log = std::fs::File::create(dir.join("server.log")).expect("log file");
        let child = Command::new(&python)
            .args(["-m", "academy.exchange.cloud", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Academy's server with {python:?}: {e}"));
        let mut server = AcademyServer { child, url: format!("http://127.0.0.1:{port}"), dir };
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
                panic!("Academy's server exited with {status}:\n{log}");
            }
            assert!(started.elapsed() < Duration::from_secs(60), "Academy's server did not open port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for AcademyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Our client against Academy's server.
struct AcademyBackend {
    server: AcademyServer,
}

impl AcademyBackend {
    async fn start() -> Self {
        AcademyBackend { server: AcademyServer::start().await }
    }
}

#[async_trait]
impl TestBackend for AcademyBackend {
    async fn client(&self) -> Arc<dyn Exchange> {
        Arc::new(HttpExchange::connect(&self.server.url).await.expect("connect to Academy's server"))
    }
}

mod against_academy_server {
    use super::AcademyBackend;

    exchange_conformance::conformance_tests!(AcademyBackend::start());
}

/// Academy's server and ours on one Redis (Academy's server layout, spec §4.2): mailboxes,
/// messages, responses and terminations cross between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn academy_server_and_ours_share_one_redis() {
    use exchange_conformance::redis_server::RedisServer;
    use exchange_core::{AgentRegistration, Body, Error, MailboxStatus, Message};
    use exchange_http::server::{HttpExchangeServer, ServerConfig, spawn_server};

    let redis = RedisServer::start();
    let academy = AcademyServer::start_with(&format!(
        "[backend]\nkind = \"redis\"\nhostname = \"127.0.0.1\"\nport = {}\n",
        redis.port()
    ))
    .await;
    let config = ServerConfig::from_toml(&format!(
        "port = 0\n[backend]\nkind = \"redis\"\nhostname = \"127.0.0.1\"\nport = {}\nreconcile_interval_s = 0.2\n",
        redis.port()
    ))
    .unwrap();
    let ours = spawn_server(HttpExchangeServer::from_config(config).await.unwrap()).await.unwrap();
    let via_academy = HttpExchange::connect(&academy.url).await.unwrap();
    let via_ours = ours.client();

    // An agent Academy's server registers is found by ours after a reconcile pass of its index.
    let theirs =
        via_academy.register_agent(AgentRegistration::new(["test.Theirs", "academy.agent.Agent"])).await.unwrap();
    let started = std::time::Instant::now();
    while via_ours.discover("test.Theirs", false).await.unwrap() != vec![theirs.clone()] {
        assert!(started.elapsed() < Duration::from_secs(30), "Academy's agent never found by our discover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let user = via_academy.register_user(Some("user")).await.unwrap();
    let agent = via_ours.register_agent(AgentRegistration::new(["test.Mixed", "academy.agent.Agent"])).await.unwrap();
    assert_eq!(via_academy.discover("test.Mixed", false).await.unwrap(), vec![agent.clone()]);
    assert_eq!(via_ours.status(&user.clone().into()).await.unwrap(), MailboxStatus::Active);
    let agent_inbox = via_ours.open_mailbox(&agent.clone().into()).await.unwrap();
    let user_inbox = via_academy.open_mailbox(&user.clone().into()).await.unwrap();
    let request = Message::request(user.clone(), agent.clone(), Body::PingRequest);
    via_academy.send(request.clone()).await.unwrap();
    let got = agent_inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!(got, request);
    via_ours.send(got.response(Body::SuccessResponse).unwrap()).await.unwrap();
    let reply = user_inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!((reply.tag(), reply.body), (request.tag(), Body::SuccessResponse));
    // Counters written by one server are read by the other.
    let stats = via_ours.stats(&agent.clone().into()).await.unwrap();
    assert_eq!((stats.completed, stats.in_progress), (1, 0));
    assert_eq!(via_ours.stats(&user.clone().into()).await.unwrap().outgoing, 1);
    // A request queued through our server is answered by Academy's server's terminate.
    let pending = Message::request(user.clone(), agent.clone(), Body::PingRequest);
    via_ours.send(pending.clone()).await.unwrap();
    via_academy.terminate(&agent.clone().into()).await.unwrap();
    let notice = user_inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!(notice.tag(), pending.tag());
    assert!(matches!(notice.body, Body::AcademyError(_)), "{notice:?}");
    assert_eq!(via_ours.status(&agent.clone().into()).await.unwrap(), MailboxStatus::Terminated);
    let refused = via_ours.send(Message::request(user, agent, Body::PingRequest)).await;
    assert!(matches!(refused, Err(Error::MailboxTerminated { .. })), "{refused:?}");
}
