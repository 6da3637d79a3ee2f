//! What an operator sees of the HTTP server: one log line per request (refusals and storage
//! failures included, never a token), `GET /metrics` in Prometheus text whose counters follow
//! the traffic, and the health routes outside authentication.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exchange_conformance::log_capture;
use exchange_conformance::redis_server::RedisServer;
use exchange_core::{Body, Exchange, Message};
use exchange_http::server::{HttpExchangeServer, ServerConfig, SpawnedServer, spawn_server};
use exchange_http::{HttpExchange, HttpOptions, RecvMode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::filter::LevelFilter;

/// Hang detector for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(60);

const TOKENS: &str = r#"
[auth]
method = "token"
[auth.tokens.tok-alice]
client_id = "alice"
"#;

/// Every log line of this test binary, as JSON, at info and above.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    log_capture::install(LevelFilter::INFO)
}

fn field<'a>(line: &'a Value, name: &str) -> &'a Value {
    &line["fields"][name]
}

async fn start(toml: &str) -> SpawnedServer {
    logs();
    let config = ServerConfig::from_toml(&format!("port = 0\n{toml}")).expect("test config");
    spawn_server(HttpExchangeServer::from_config(config).await.expect("server")).await.expect("start")
}

async fn client(server: &SpawnedServer, token: &str) -> HttpExchange {
    let options = HttpOptions::default().recv_mode(RecvMode::LongPoll).bearer_token(token);
    HttpExchange::connect_with(server.url(), options).await.expect("connect")
}

/// Status and body of one raw request.
async fn get(url: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let address = url.strip_prefix("http://").expect("http url");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 2\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n{}");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut bytes)).await.expect("answer in time").expect("read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("end of head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, body.to_owned())
}

/// `/metrics`, parsed by a Prometheus text parser.
async fn scrape(url: &str) -> prometheus_parse::Scrape {
    let (status, body) = get(url, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of `name` whose labels include `labels`; 0 when absent.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < PROMPT, "{what}: not within {PROMPT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_logged_and_counted() {
    let server = start(TOKENS).await;
    let alice = client(&server, "tok-alice").await;
    let before = scrape(server.url()).await;
    let me = alice.register_user(Some("alice")).await.unwrap();
    let mailbox = alice.open_mailbox(&me.clone().into()).await.unwrap();
    for _ in 0..5 {
        alice.send(Message::request(me.clone(), me.clone(), Body::PingRequest)).await.unwrap();
    }
    for _ in 0..5 {
        mailbox.recv(Some(PROMPT)).await.unwrap();
    }
    let (refused, _) = get(server.url(), "/mailbox", Some("tok-not-a-token")).await;
    assert_eq!(refused, 403);
    let (missing, _) = get(server.url(), "/mailbox", None).await;
    assert_eq!(missing, 401);

    let after = scrape(server.url()).await;
    let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(delta("exchange_messages_accepted_total", &[]), 5.0);
    assert_eq!(delta("exchange_messages_delivered_total", &[]), 5.0);
    assert_eq!(
        delta("exchange_http_requests_total", &[("route", "/message"), ("method", "PUT"), ("status", "200")]),
        5.0
    );
    assert_eq!(delta("exchange_refused_credentials_total", &[("rule", "refused")]), 1.0);
    assert_eq!(delta("exchange_refused_credentials_total", &[("rule", "missing")]), 1.0);
    assert!(value(&after, "exchange_http_request_duration_seconds_count", &[("route", "/message")]) >= 10.0);
    assert_eq!(value(&after, "exchange_mailboxes", &[("status", "active")]), 1.0);
    assert_eq!(value(&after, "exchange_queued_messages", &[]), 0.0);
    assert!(value(&after, "exchange_open_connections", &[]) >= 1.0);
    assert!(value(&after, "exchange_storage_duration_seconds_count", &[("operation", "put")]) >= 5.0);

    let uid = me.uid().to_string();
    let sends = log_capture::lines(|l| {
        l["level"] == "INFO"
            && field(l, "route") == "/message"
            && field(l, "method") == "PUT"
            && field(l, "academy.mailbox_id").is_null()
            && field(l, "academy.dest") == uid.as_str()
    });
    assert_eq!(sends.len(), 5, "one line per send");
    let send = &sends[0];
    assert_eq!(field(send, "status"), 200);
    assert_eq!(field(send, "caller"), "alice");
    assert_eq!(field(send, "academy.src"), uid.as_str());
    assert!(field(send, "academy.message_tag").is_string());
    assert!(field(send, "latency_ms").as_f64().is_some());
    let receives =
        log_capture::lines(|l| field(l, "route") == "/message" && field(l, "academy.mailbox_id") == uid.as_str());
    assert!(receives.len() >= 5, "{receives:?}");
    let refusals = log_capture::lines(|l| l["level"] == "WARN" && field(l, "status") == 403);
    assert!(refusals.iter().any(|l| field(l, "reason") == "Token expired or revoked."), "{refusals:?}");
    let text = String::from_utf8(logs().lock().unwrap().clone()).unwrap();
    assert!(!text.contains("tok-not-a-token") && !text.contains("tok-alice"), "a token in the logs");
    mailbox.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_receives_are_gauged() {
    let server = start(TOKENS).await;
    let alice = client(&server, "tok-alice").await;
    let me = alice.register_user(None).await.unwrap();
    let mailbox = alice.open_mailbox(&me.clone().into()).await.unwrap();
    let url = server.url().to_owned();
    let polls = |url: String| async move { value(&scrape(&url).await, "exchange_long_polls", &[]) };
    let waiting = tokio::spawn(async move { mailbox.recv(Some(PROMPT)).await.map(|_| ()) });
    eventually("a long poll counted", || {
        let url = url.clone();
        async move { polls(url).await >= 1.0 }
    })
    .await;
    alice.send(Message::request(me.clone(), me.clone(), Body::PingRequest)).await.unwrap();
    waiting.await.unwrap().unwrap();
    eventually("the long poll no longer counted", || {
        let url = url.clone();
        async move { polls(url).await == 0.0 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_routes_follow_the_storage() {
    let mut redis = RedisServer::start();
    let toml = format!("{TOKENS}\n[backend]\nkind = \"redis\"\nhostname = \"127.0.0.1\"\nport = {}\n", redis.port());
    let server = start(&toml).await;
    assert_eq!(get(server.url(), "/healthz", None).await.0, 200);
    assert_eq!(get(server.url(), "/readyz", None).await.0, 200);
    // Redis stores no totals: no gauges that would read as zero.
    assert_eq!(value(&scrape(server.url()).await, "exchange_queued_messages", &[]), 0.0);
    assert!(!scrape(server.url()).await.samples.iter().any(|s| s.metric == "exchange_queued_messages"));

    redis.kill();
    let (status, body) = get(server.url(), "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(get(server.url(), "/healthz", None).await.0, 200, "the process still serves");
    let failures =
        log_capture::lines(|l| l["level"] == "ERROR" && field(l, "route") == "/readyz" && field(l, "status") == 503);
    assert!(!failures.is_empty(), "a storage failure leaves an error line");
    assert!(value(&scrape(server.url()).await, "exchange_storage_errors_total", &[]) >= 1.0);

    redis.restart();
    let url = server.url().to_owned();
    eventually("ready again after Redis returns", || {
        let url = url.clone();
        async move { get(&url, "/readyz", None).await.0 == 200 }
    })
    .await;
}
