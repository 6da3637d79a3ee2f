//! Our server's discover index on Redis (`exchange-server:agents`): discover reads it in
//! registration order without scanning the keyspace, agents registered by Academy's server
//! (written straight to Redis here, in its layout) are added by the reconcile pass, and
//! terminated agents leave it. Each test runs a private `redis-server`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use exchange_conformance::redis_server::RedisServer;
use exchange_core::{AgentId, AgentRegistration, Exchange};
use exchange_http::HttpExchange;
use exchange_http::server::{HttpExchangeServer, ServerConfig, SpawnedServer, spawn_server};
use uuid::Uuid;

const INDEX: &str = "exchange-server:agents";
/// Longest wait for a reconcile pass (interval 0.2 s here) on a busy machine.
const RECONCILE_WITHIN: Duration = Duration::from_secs(30);

async fn server(redis: &RedisServer) -> SpawnedServer {
    let config = ServerConfig::from_toml(&format!(
        "port = 0\n[backend]\nkind = \"redis\"\nhostname = \"127.0.0.1\"\nport = {}\nreconcile_interval_s = 0.2\n",
        redis.port()
    ))
    .expect("config");
    spawn_server(HttpExchangeServer::from_config(config).await.expect("connect to redis")).await.expect("start")
}

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).expect("redis url");
    client.get_multiplexed_async_connection().await.expect("connect to redis")
}

/// Writes agents as Academy's server registers them (no index entry), pipelined.
async fn write_academy_agents(conn: &mut redis::aio::MultiplexedConnection, uids: &[Uuid], names: &str) {
    for chunk in uids.chunks(1000) {
        let mut pipe = redis::pipe();
        for uid in chunk {
            pipe.set(format!("active:{uid}"), "ACTIVE").ignore();
            pipe.set(format!("owner:{uid}"), "_").ignore();
            pipe.set(format!("agent:{uid}"), names).ignore();
        }
        pipe.query_async::<()>(conn).await.expect("write agents");
    }
}

async fn indexed(conn: &mut redis::aio::MultiplexedConnection, uid: Uuid) -> bool {
    let score: Option<f64> = redis::cmd("ZSCORE").arg(INDEX).arg(uid.to_string()).query_async(conn).await.unwrap();
    score.is_some()
}

async fn discover_uids(client: &HttpExchange, name: &str) -> Vec<Uuid> {
    client.discover(name, false).await.expect("discover").iter().map(AgentId::uid).collect()
}

/// 20,000 agents: discover answers every one, the server's own registrations in their order
/// after the ones indexed before them, and well under the 3.2 s a keyspace scan took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_reads_the_index_in_registration_order() {
    let redis = RedisServer::start();
    let mut conn = redis_conn(&redis).await;
    let seeded: Vec<Uuid> = (0..19_950).map(|_| Uuid::new_v4()).collect();
    write_academy_agents(&mut conn, &seeded, "test.Indexed,academy.agent.Agent").await;
    let server = server(&redis).await;
    let client = server.client();
    // The start-up reconcile indexes the seeded agents.
    let started = Instant::now();
    loop {
        let count: u64 = redis::cmd("ZCARD").arg(INDEX).query_async(&mut conn).await.unwrap();
        if count == seeded.len() as u64 {
            break;
        }
        assert!(started.elapsed() < RECONCILE_WITHIN, "{count} of {} indexed", seeded.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ours = Vec::new();
    for _ in 0..50 {
        let id = client.register_agent(AgentRegistration::new(["test.Indexed", "academy.agent.Agent"])).await.unwrap();
        ours.push(id.uid());
    }
    let other = client.register_agent(AgentRegistration::new(["test.Other", "academy.agent.Agent"])).await.unwrap();

    let started = Instant::now();
    let found = discover_uids(client, "test.Indexed").await;
    let elapsed = started.elapsed();
    assert_eq!(found.len(), 20_000);
    assert_eq!(found[19_950..], ours[..], "the server's registrations, in order, last");
    assert_eq!(found[..19_950].iter().collect::<HashSet<_>>(), seeded.iter().collect::<HashSet<_>>());
    // Release: ~30 ms (docs/PERFORMANCE.md); a debug build on a busy machine gets a margin.
    assert!(elapsed < Duration::from_millis(2500), "discover of 20,000 agents took {elapsed:?}");
    assert_eq!(discover_uids(client, "test.Indexed").await, found, "the same order every time");
    assert_eq!(discover_uids(client, "test.Other").await, vec![other.uid()]);
    let with_bases = client.discover("academy.agent.Agent", true).await.unwrap();
    assert_eq!(with_bases.len(), 20_001);
    assert_eq!(with_bases.last().map(AgentId::uid), Some(other.uid()));
}

/// An agent Academy's server registers while ours runs is found after a reconcile pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_registered_by_academy_are_found_after_reconcile() {
    let redis = RedisServer::start();
    let mut conn = redis_conn(&redis).await;
    let server = server(&redis).await;
    let client = server.client();
    let first = client.register_agent(AgentRegistration::new(["test.Late", "academy.agent.Agent"])).await.unwrap();
    let academy = Uuid::new_v4();
    write_academy_agents(&mut conn, &[academy], "test.Late,academy.agent.Agent").await;
    let started = Instant::now();
    loop {
        let found = discover_uids(client, "test.Late").await;
        if found.len() == 2 {
            assert_eq!(found, vec![first.uid(), academy], "appended at the end");
            break;
        }
        assert_eq!(found, vec![first.uid()]);
        assert!(started.elapsed() < RECONCILE_WITHIN, "the Academy agent was never indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(indexed(&mut conn, academy).await);
}

/// Terminated agents leave the index, whichever server terminates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_agents_leave_the_index() {
    let redis = RedisServer::start();
    let mut conn = redis_conn(&redis).await;
    let server = server(&redis).await;
    let client = server.client();
    let registration = || AgentRegistration::new(["test.Gone", "academy.agent.Agent"]);
    let (kept, ours, theirs) = (
        client.register_agent(registration()).await.unwrap(),
        client.register_agent(registration()).await.unwrap(),
        client.register_agent(registration()).await.unwrap(),
    );
    assert!(indexed(&mut conn, ours.uid()).await);

    client.terminate(&ours.clone().into()).await.unwrap();
    assert!(!indexed(&mut conn, ours.uid()).await, "our terminate removes the entry");
    // Academy's server terminates by marking the mailbox and deleting its agent key.
    let _: () = redis::pipe()
        .set(format!("active:{}", theirs.uid()), "TERMINATED")
        .ignore()
        .del(format!("agent:{}", theirs.uid()))
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(discover_uids(client, "test.Gone").await, vec![kept.uid()]);
    assert!(!indexed(&mut conn, theirs.uid()).await, "discover drops entries whose agent key is gone");
}
