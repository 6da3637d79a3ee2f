//! The facade's URLs and options against real servers: an agent run from its TOML file reaches
//! a token-protected TLS exchange server, and `redis+unix://` URLs work.

use std::time::Duration;

use exchange::agent::{Actions, Agent};
use exchange::{AgentId, Manager};
use exchange_conformance::redis_server::RedisServer;
use exchange_http::server::{HttpExchangeServer, ServerConfig};

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(serde::Deserialize)]
struct Settings {
    greeting: String,
}

struct Greeter {
    greeting: String,
}

impl Agent for Greeter {
    fn behaviors(&self) -> Vec<String> {
        vec!["tests.facade.Greeter".into(), exchange::ACADEMY_AGENT_BASE.into()]
    }

    fn actions(&self, actions: &mut Actions<Self>) {
        actions.add("greet", |agent, (name,): (String,)| async move { Ok(format!("{} {name}", agent.greeting)) });
    }
}

/// `[exchange]` with a token file and a private CA: the agent registers and serves on a server
/// that refuses everyone else, and writes its id back into its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_file_reaches_a_token_protected_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = exchange_conformance::tls::self_signed_cert(dir.path());
    let config = ServerConfig::from_toml(&format!(
        "port = 0\ncertfile = {:?}\nkeyfile = {:?}\n[auth]\nmethod = \"token\"\n[auth.tokens.tok-agent]\nclient_id = \"agents\"\n",
        cert.display().to_string(),
        key.display().to_string()
    ))
    .unwrap();
    let bound = HttpExchangeServer::new(config).unwrap().bind().await.unwrap();
    let url = bound.url();
    assert!(url.starts_with("https://"), "{url}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    std::fs::write(dir.path().join("token"), "tok-agent\n").unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        format!(
            "[exchange]\nurl = {:?}\ntoken_file = {:?}\nca_file = {:?}\n\n[settings]\ngreeting = \"hello\"\n",
            url,
            dir.path().join("token").display().to_string(),
            cert.display().to_string()
        ),
    )
    .unwrap();
    let running = tokio::spawn({
        let file = file.clone();
        async move {
            exchange::launch::run_agent_from_file(file, |s: &Settings| Greeter { greeting: s.greeting.clone() }).await
        }
    });
    // Without the token nothing gets in; without the CA nothing connects.
    let refused = exchange::connect_with(url.as_str(), &exchange::ConnectOptions::default().ca_file(&cert)).await;
    assert!(matches!(refused, Err(exchange::Error::Unauthorized { .. })), "{refused:?}");
    let untrusted = exchange::connect_with(url.as_str(), &exchange::ConnectOptions::default().token("tok-agent")).await;
    assert!(untrusted.is_err(), "connected without trusting the CA");
    let options = exchange::ConnectOptions::default().token("tok-agent").ca_file(&cert);
    let user = Manager::new(exchange::connect_with(url.as_str(), &options).await.unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    let uid = loop {
        let text = std::fs::read_to_string(&file).unwrap();
        if let Some(line) = text.lines().find(|l| l.starts_with("id = ")) {
            break line.trim_start_matches("id = ").trim_matches('"').parse().unwrap();
        }
        assert!(started.elapsed() < DEADLINE, "the agent never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let handle = user.handle(&AgentId::from_parts(uid, None)).with_timeout(DEADLINE);
    assert_eq!(handle.call::<String>("greet", ("tls",)).await.unwrap(), "hello tls");
    handle.shutdown(None).await.unwrap();
    tokio::time::timeout(DEADLINE, running).await.unwrap().unwrap().unwrap();
    user.close().await.unwrap();
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

/// `redis+unix://` through the facade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_redis_urls_work_through_the_facade() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock").display().to_string();
    let _server = RedisServer::start_with(&["--save", "", "--appendonly", "no", "--unixsocket", &socket]);
    let exchange = exchange::connect(&format!("redis+unix://{socket}")).await.unwrap();
    let user: exchange::EntityId = exchange.register_user(None).await.unwrap().into();
    assert_eq!(exchange.status(&user).await.unwrap(), exchange::MailboxStatus::Active);
}
