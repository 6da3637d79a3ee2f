//! Our HTTP server with Redis storage (Academy's server layout, spec §4.2): the conformance
//! suite, and two servers sharing one Redis. Each test runs a private `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use exchange_conformance::TestBackend;
use exchange_conformance::redis_server::RedisServer;
use exchange_core::{AgentRegistration, Body, EntityId, Error, Exchange, MailboxStatus, Message};
use exchange_http::HttpExchange;
use exchange_http::server::{HttpExchangeServer, ServerConfig, SpawnedServer, spawn_server};

async fn redis_backed_server(redis: &RedisServer) -> SpawnedServer {
    let config = ServerConfig::from_toml(&format!(
        "port = 0\n[backend]\nkind = \"redis\"\nhostname = \"127.0.0.1\"\nport = {}\n",
        redis.port()
    ))
    .expect("config");
    let server = HttpExchangeServer::from_config(config).await.expect("connect the server to redis");
    spawn_server(server).await.expect("start the server")
}

struct HttpRedisBackend {
    server: SpawnedServer,
    _redis: RedisServer,
}

impl HttpRedisBackend {
    async fn start() -> Self {
        let redis = RedisServer::start();
        HttpRedisBackend { server: redis_backed_server(&redis).await, _redis: redis }
    }
}

#[async_trait]
impl TestBackend for HttpRedisBackend {
    async fn client(&self) -> Arc<dyn Exchange> {
        Arc::new(HttpExchange::connect(self.server.url()).await.expect("connect"))
    }
}

exchange_conformance::conformance_tests!(HttpRedisBackend::start());

/// Two servers on one Redis see the same mailboxes, messages, terminations and notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_redis() {
    let redis = RedisServer::start();
    let (a, b) = (redis_backed_server(&redis).await, redis_backed_server(&redis).await);
    let (one, two) = (a.client(), b.client());
    let user = one.register_user(Some("user")).await.unwrap();
    let agent = two.register_agent(AgentRegistration::new(["test.Shared", "academy.agent.Agent"])).await.unwrap();
    assert_eq!(one.discover("test.Shared", false).await.unwrap(), vec![agent.clone()]);
    assert_eq!(two.status(&user.clone().into()).await.unwrap(), MailboxStatus::Active);

    let agent_inbox = two.open_mailbox(&agent.clone().into()).await.unwrap();
    let user_inbox = one.open_mailbox(&user.clone().into()).await.unwrap();
    let request = Message::request(user.clone(), agent.clone(), Body::PingRequest);
    one.send(request.clone()).await.unwrap();
    let got = agent_inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!(got.tag(), request.tag());
    two.send(got.response(Body::SuccessResponse).unwrap()).await.unwrap();
    assert_eq!(user_inbox.recv(Some(Duration::from_secs(10))).await.unwrap().tag(), request.tag());

    // A request left pending is answered with code 0 when the other server terminates.
    let pending = Message::request(user.clone(), agent.clone(), Body::PingRequest);
    one.send(pending.clone()).await.unwrap();
    one.terminate(&agent.clone().into()).await.unwrap();
    let notice = user_inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!(notice.tag(), pending.tag());
    assert!(matches!(notice.body, Body::AcademyError(_)));
    // The agent's event stream (another client, another server) may have read the pending
    // request ahead before the termination: then it comes first, and the termination next.
    let mut received = agent_inbox.recv(Some(Duration::from_secs(10))).await;
    if let Ok(early) = &received {
        assert_eq!(early.tag(), pending.tag());
        received = agent_inbox.recv(Some(Duration::from_secs(10))).await;
    }
    assert!(matches!(received, Err(Error::MailboxTerminated { .. })), "{received:?}");
    assert_eq!(two.status(&EntityId::from(agent.clone())).await.unwrap(), MailboxStatus::Terminated);
    let again = two.send(Message::request(user.clone(), agent.clone(), Body::PingRequest)).await;
    assert!(matches!(again, Err(Error::MailboxTerminated { .. })), "{again:?}");
    // Re-registering the terminated id on either server keeps it terminated.
    two.register_agent(AgentRegistration::new(["test.Shared"]).with_id(agent.clone())).await.unwrap();
    assert_eq!(one.status(&agent.into()).await.unwrap(), MailboxStatus::Terminated);
}
