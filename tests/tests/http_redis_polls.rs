//! Waiting receives of the HTTP server with Redis storage share a bounded number of Redis
//! connections (issue 9, finding 5): many long polls and event streams hold a few Redis clients,
//! a small `maxclients` is not exhausted, a poll that goes away loses nothing, and a terminate
//! still wakes every waiter. Each test runs a private `redis-server`.

use std::time::{Duration, Instant};

use exchange_conformance::redis_server::RedisServer;
use exchange_core::{Body, EntityId, Exchange, Message, UserId};
use exchange_http::server::{HttpExchangeServer, ServerConfig, SpawnedServer, spawn_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Hang detector for anything that should happen promptly, on a busy machine.
const PROMPT: Duration = Duration::from_secs(120);

/// Redis clients a server may hold while receives wait: the command connection and at most four
/// blocking ones, plus this test's own connection and some slack.
const MAX_CLIENTS: u64 = 10;

async fn server(redis: &RedisServer) -> SpawnedServer {
    let config = ServerConfig::from_toml(&format!(
        "port = 0\nlisten_timeout_s = 600\n[backend]\nkind = \"redis\"\nhostname = \"127.0.0.1\"\nport = {}\n",
        redis.port()
    ))
    .expect("config");
    let server = HttpExchangeServer::from_config(config).await.expect("connect the server to redis");
    spawn_server(server).await.expect("start the server")
}

/// A connection of this test to `redis`.
async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).expect("redis url");
    client.get_multiplexed_async_connection().await.expect("connect to redis")
}

/// `connected_clients` of `INFO clients` (this connection included).
async fn connected_clients(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query_async(conn).await.expect("INFO clients");
    info.lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("connected_clients in INFO")
}

/// Waits until `check` holds, polling; panics after [`PROMPT`].
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < PROMPT, "{what}: not within {PROMPT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn address(server: &SpawnedServer) -> String {
    server.url().trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// The value of an unlabelled metric of `GET /metrics`.
async fn metric(server: &SpawnedServer, name: &str) -> f64 {
    let (status, body) = exchange(&address(server), "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{body}"))
}

fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends one request on a new connection; the status and the body.
async fn exchange(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request(method, path, body).as_bytes()).await.expect("write request");
    answer(stream).await
}

/// Reads a whole `Connection: close` answer: its status and body.
async fn answer(mut stream: TcpStream) -> (u16, String) {
    let mut bytes = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut bytes)).await.expect("answer in time").expect("read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {text:?}"));
    (status, body.to_owned())
}

/// The body of a receive of `id` waiting up to `timeout_s`.
fn receive_body(id: &UserId, timeout_s: u32) -> String {
    let mailbox = serde_json::to_string(&EntityId::from(id.clone()).to_json()).expect("json");
    format!(r#"{{"mailbox": {mailbox}, "timeout": {timeout_s}}}"#)
}

/// Starts a long poll (`GET /message`) of `id`; the connection its answer comes on.
async fn start_poll(address: &str, id: &UserId) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request("GET", "/message", &receive_body(id, 300)).as_bytes()).await.expect("write poll");
    stream
}

/// Registers `n` users.
async fn users(client: &impl Exchange, n: usize) -> Vec<UserId> {
    let mut users = Vec::with_capacity(n);
    for _ in 0..n {
        users.push(client.register_user(None).await.expect("register"));
    }
    users
}

/// Starts a long poll on each mailbox and waits until the server counts them all as waiting.
async fn start_polls(server: &SpawnedServer, ids: &[UserId]) -> Vec<TcpStream> {
    let address = address(server);
    let mut polls = Vec::with_capacity(ids.len());
    for id in ids {
        polls.push(start_poll(&address, id).await);
    }
    let expected = ids.len() as f64;
    eventually("every poll waiting", || async { metric(server, "exchange_long_polls").await == expected }).await;
    polls
}

/// Watches the Redis clients for a while: the most seen.
async fn most_clients(conn: &mut redis::aio::MultiplexedConnection, during: Duration) -> u64 {
    let started = Instant::now();
    let mut most = 0;
    while started.elapsed() < during {
        most = most.max(connected_clients(conn).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    most
}

/// (a) A thousand long polls on distinct mailboxes hold a few Redis clients, and each still
/// receives the message sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_polls_hold_a_few_redis_clients() {
    let redis = RedisServer::start();
    let server = server(&redis).await;
    let mut conn = redis_conn(&redis).await;
    let client = server.client();
    let sender = client.register_user(None).await.unwrap();
    let ids = users(client, 1000).await;
    let polls = start_polls(&server, &ids).await;
    let most = most_clients(&mut conn, Duration::from_secs(2)).await;
    assert!(most <= MAX_CLIENTS, "{most} Redis clients while 1000 polls wait");

    let mut tags = Vec::with_capacity(ids.len());
    for id in &ids {
        let message = Message::request(sender.clone(), id.clone(), Body::PingRequest);
        tags.push(message.tag().to_string());
        client.send(message).await.unwrap();
    }
    let answers = futures::future::join_all(polls.into_iter().map(answer)).await;
    for ((status, body), tag) in answers.iter().zip(&tags) {
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains(tag.as_str()), "poll answered {body}, not message {tag}");
    }
    let after = connected_clients(&mut conn).await;
    assert!(after <= MAX_CLIENTS, "{after} Redis clients after the polls");
}

/// (b) With `maxclients 300`, 600 waiting polls leave room for other Redis clients, and the
/// server answers other requests meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_do_not_exhaust_maxclients() {
    let redis = RedisServer::start_with(&["--save", "", "--appendonly", "no", "--maxclients", "300"]);
    let server = server(&redis).await;
    let client = server.client();
    let ids = users(client, 600).await;
    let _polls = start_polls(&server, &ids).await;

    let mut other = redis_conn(&redis).await;
    let pong: String = redis::cmd("PING").query_async(&mut other).await.expect("another client is served");
    assert_eq!(pong, "PONG");
    let clients = connected_clients(&mut other).await;
    assert!(clients <= MAX_CLIENTS, "{clients} Redis clients while 600 polls wait");

    let (one, two) = (client.register_user(None).await.unwrap(), client.register_user(None).await.unwrap());
    let inbox = client.open_mailbox(&two.clone().into()).await.unwrap();
    let message = Message::request(one, two, Body::PingRequest);
    client.send(message.clone()).await.unwrap();
    let got = inbox.recv(Some(Duration::from_secs(60))).await.expect("receive beside 600 polls");
    assert_eq!(got.tag(), message.tag());
}

/// (c) A poll whose client goes away before a message arrives takes nothing: the message goes
/// to the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_poll_loses_nothing() {
    let redis = RedisServer::start();
    let server = server(&redis).await;
    let client = server.client();
    let ids = users(client, 2).await;
    let (sender, reader) = (&ids[0], &ids[1]);
    let gone = start_polls(&server, std::slice::from_ref(reader)).await;
    drop(gone);
    eventually("the dropped poll ends", || async { metric(&server, "exchange_long_polls").await == 0.0 }).await;

    let message = Message::request(sender.clone(), reader.clone(), Body::PingRequest);
    client.send(message.clone()).await.unwrap();
    let next = start_poll(&address(&server), reader).await;
    let (status, body) = answer(next).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&message.tag().to_string()), "{body}");
}

/// (d) A terminate wakes every poll and event stream waiting on that mailbox, each with the
/// terminated answer, and leaves the waiters of other mailboxes waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_wakes_every_waiter() {
    let redis = RedisServer::start();
    let server = server(&redis).await;
    let client = server.client();
    let ids = users(client, 2).await;
    let (doomed, bystander) = (&ids[0], &ids[1]);
    let polls = start_polls(&server, &[doomed.clone(), doomed.clone(), doomed.clone(), bystander.clone()]).await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream.write_all(request("GET", "/mailbox/listen", &receive_body(doomed, 300)).as_bytes()).await.unwrap();
    eventually("the stream open", || async { metric(&server, "exchange_event_streams").await == 1.0 }).await;

    client.terminate(&doomed.clone().into()).await.unwrap();
    let mut polls = polls.into_iter();
    let bystanding = polls.next_back().expect("the bystander's poll");
    for (status, body) in futures::future::join_all(polls.map(answer)).await {
        assert_eq!(status, 419, "{body}");
    }
    let (status, _) = answer(stream).await;
    assert_eq!(status, 200, "the stream started, then ended");
    assert_eq!(metric(&server, "exchange_event_streams").await, 0.0);
    assert_eq!(metric(&server, "exchange_long_polls").await, 1.0, "the bystander still waits");
    drop(bystanding);
}

/// (e) Event streams wait through the same few connections: 300 streams on distinct mailboxes
/// hold a few Redis clients and each gets the message sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_share_the_connections() {
    let redis = RedisServer::start();
    let server = server(&redis).await;
    let mut conn = redis_conn(&redis).await;
    let client = server.client();
    let sender = client.register_user(None).await.unwrap();
    let ids = users(client, 300).await;
    let address = address(&server);
    let mut streams = Vec::with_capacity(ids.len());
    for id in &ids {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(request("GET", "/mailbox/listen", &receive_body(id, 300)).as_bytes()).await.unwrap();
        streams.push(stream);
    }
    let expected = ids.len() as f64;
    eventually("every stream open", || async { metric(&server, "exchange_event_streams").await == expected }).await;
    let most = most_clients(&mut conn, Duration::from_secs(2)).await;
    assert!(most <= MAX_CLIENTS, "{most} Redis clients while 300 streams wait");

    let mut tags = Vec::with_capacity(ids.len());
    for id in &ids {
        let message = Message::request(sender.clone(), id.clone(), Body::PingRequest);
        tags.push(message.tag().to_string());
        client.send(message).await.unwrap();
    }
    let reads = streams.iter_mut().zip(&tags).map(|(stream, tag)| async move {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(tag.as_str()) {
            let n = tokio::time::timeout(PROMPT, stream.read(&mut chunk)).await.expect("event in time").unwrap();
            assert!(n > 0, "stream ended before message {tag}");
            seen.extend_from_slice(&chunk[..n]);
        }
    });
    futures::future::join_all(reads).await;
    let after = connected_clients(&mut conn).await;
    assert!(after <= MAX_CLIENTS, "{after} Redis clients after the streams");
}
