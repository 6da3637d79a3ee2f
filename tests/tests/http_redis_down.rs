//! Our server while its Redis is down: requests fail fast with `503` and `Retry-After`, the
//! server recovers by itself when Redis returns, and a Redis that came back empty (no
//! persistence) is noticed and counted (`exchange_storage_data_losses_total`). Each test runs
//! a private `redis-server`.

use std::time::{Duration, Instant};

use exchange_conformance::redis_server::RedisServer;
use exchange_core::{EntityId, Exchange};
use exchange_http::server::{HttpExchangeServer, ServerConfig, SpawnedServer, spawn_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The target is 1 s (measured in release, docs/HTTP.md); a busy 2-core machine gets a margin.
const FAIL_WITHIN: Duration = Duration::from_secs(3);
/// Longest wait for recovery and for the marker watcher (every 2 s) on a busy machine.
const NOTICE_WITHIN: Duration = Duration::from_secs(30);

fn config(port: u16) -> ServerConfig {
    ServerConfig::from_toml(&format!(
        "port = 0\n[backend]\nkind = \"redis\"\nhostname = \"127.0.0.1\"\nport = {port}\n"
    ))
    .expect("config")
}

async fn server(redis: &RedisServer) -> SpawnedServer {
    spawn_server(HttpExchangeServer::from_config(config(redis.port())).await.expect("connect to redis"))
        .await
        .expect("start")
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One raw request (`Connection: close`), so no client retry hides what the server answers.
async fn request(url: &str, method: &str, path: &str, body: &str) -> Answer {
    let address = url.strip_prefix("http://").expect("http url");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(NOTICE_WITHIN, stream.read_to_end(&mut bytes)).await.expect("an answer").expect("read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("end of head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    Answer { status, head: head.to_ascii_lowercase(), body: body.to_owned() }
}

async fn status_of(url: &str, id: &EntityId) -> Answer {
    let mailbox = serde_json::to_string(id).unwrap();
    request(url, "GET", "/mailbox", &serde_json::json!({ "mailbox": mailbox }).to_string()).await
}

/// Redis killed: each request answers 503 with `Retry-After` at once; Redis back: requests
/// succeed again without restarting our server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_redis_is_down_and_recover() {
    let mut redis = RedisServer::start_durable();
    let server = server(&redis).await;
    let user: EntityId = server.client().register_user(Some("user")).await.unwrap().into();
    let url = server.url().to_owned();
    assert_eq!(status_of(&url, &user).await.status, 200);

    redis.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let answer = status_of(&url, &user).await;
        let elapsed = started.elapsed();
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(answer.head.contains("\r\nretry-after: "), "{}", answer.head);
        assert!(elapsed < FAIL_WITHIN, "503 after {elapsed:?}");
    }

    redis.restart();
    let started = Instant::now();
    loop {
        let answer = status_of(&url, &user).await;
        if answer.status == 200 {
            assert!(answer.body.contains("ACTIVE"), "a durable Redis kept the mailbox: {}", answer.body);
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(started.elapsed() < NOTICE_WITHIN, "not recovered after Redis returned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(data_losses(&url).await, 0.0, "a durable Redis lost nothing");
}

/// The value of `exchange_storage_data_losses_total` in `GET /metrics`.
async fn data_losses(url: &str) -> f64 {
    let answer = request(url, "GET", "/metrics", "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let scrape = prometheus_parse::Scrape::parse(answer.body.lines().map(|l| Ok(l.to_owned()))).expect("metrics");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == "exchange_storage_data_losses_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("not a counter: {s:?}"),
        })
        .expect("exchange_storage_data_losses_total is reported")
}

/// Redis restarted without persistence: the mailboxes read as missing, and the marker watcher
/// counts the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_is_noticed() {
    let mut redis = RedisServer::start();
    let server = server(&redis).await;
    let user: EntityId = server.client().register_user(Some("user")).await.unwrap().into();
    let url = server.url().to_owned();
    assert_eq!(data_losses(&url).await, 0.0);

    redis.restart();
    let started = Instant::now();
    while data_losses(&url).await < 1.0 {
        assert!(started.elapsed() < NOTICE_WITHIN, "the lost data was never noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = status_of(&url, &user).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("MISSING"), "{}", answer.body);
    assert_eq!(data_losses(&url).await, 1.0, "counted once");
}

/// A server whose Redis is not there fails to start at once, with a clear error.
#[tokio::test]
async fn starting_without_redis_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let error = HttpExchangeServer::from_config(config(port)).await.expect_err("no Redis on that port");
    assert!(started.elapsed() < FAIL_WITHIN, "failed after {:?}", started.elapsed());
    assert!(error.to_string().contains(&format!("127.0.0.1:{port}")), "{error}");
}
