//! The write path of the HTTP server's Redis storage: a message's `src` is checked like its
//! `dest`, every key written expires, a send is never stored twice when a client retries it
//! after a Redis stall, and an interrupted terminate is completed by a retry. Each test runs a
//! private `redis-server` and looks at its keys directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use exchange_conformance::redis_server::RedisServer;
use exchange_core::{AgentRegistration, Body, EntityId, Error, Exchange, Message, UserId};
use exchange_http::server::{
    Caller, HttpExchangeServer, RedisStorage, ServerConfig, SpawnedServer, Storage, spawn_server,
};
use exchange_http::{HttpExchange, HttpOptions, RecvMode};
use futures::StreamExt;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Hang detector for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(60);

/// A Redis stall the server must ride out (its command timeout is 5 s).
const SHORT_STALL_MS: u64 = 800;

/// A Redis stall longer than the server's command timeout (5 s), with a margin for a slow
/// machine: sends made at its start fail.
const LONG_STALL_MS: u64 = 8_000;

/// Two tenants.
const TOKENS: &str = r#"
[auth]
method = "token"
[auth.tokens.tok-alice]
client_id = "alice"
groups = ["g1"]
[auth.tokens.tok-mallory]
client_id = "mallory"
"#;

/// A private Redis, our server on it, and a connection of the test's own to Redis.
struct Fixture {
    server: SpawnedServer,
    redis: MultiplexedConnection,
    _redis_server: RedisServer,
}

impl Fixture {
    /// A server with `extra` config (e.g. `[auth]`) on a fresh Redis.
    async fn start(extra: &str) -> Fixture {
        let redis_server = RedisServer::start();
        let config = ServerConfig::from_toml(&format!(
            "port = 0\n[backend]\nkind = \"redis\"\nhostname = \"127.0.0.1\"\nport = {}\n{extra}",
            redis_server.port()
        ))
        .expect("config");
        let server = HttpExchangeServer::from_config(config).await.expect("connect the server to redis");
        let server = spawn_server(server).await.expect("start the server");
        // No response timeout: some commands of the test wait for a pause to end.
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let redis = redis::Client::open(redis_server.url())
            .expect("redis url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to redis");
        Fixture { server, redis, _redis_server: redis_server }
    }

    async fn client(&self, token: Option<&str>) -> HttpExchange {
        let mut options = HttpOptions::default().recv_mode(RecvMode::LongPoll);
        if let Some(token) = token {
            options = options.bearer_token(token);
        }
        HttpExchange::connect_with(self.server.url(), options).await.expect("connect")
    }

    async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut self.redis.clone()).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Pauses Redis's writes and scripts for `ms` milliseconds.
    async fn pause_writes(&self, ms: u64) {
        let () = self.cmd(&["CLIENT", "PAUSE", &ms.to_string(), "WRITE"]).await;
    }

    /// Returns once Redis takes writes again (a write of the test waits out the pause).
    async fn wait_for_writes(&self) {
        let () = tokio::time::timeout(PROMPT, self.cmd(&["SET", "probe", "1", "EX", "1"])).await.expect("pause ends");
    }

    /// The messages queued for `id`, oldest first.
    async fn queued(&self, id: &UserId) -> Vec<Message> {
        let texts: Vec<String> = self.cmd(&["LRANGE", &format!("queue:{}", id.uid()), "0", "-1"]).await;
        texts.iter().map(|text| Message::from_json(text).expect("a queued message")).collect()
    }

    async fn counter(&self, key: &str, uid: Uuid) -> Option<u64> {
        self.cmd(&["GET", &format!("{key}:{uid}")]).await
    }
}

/// Status and body of one raw HTTP/1.1 exchange.
async fn raw(url: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let address = url.strip_prefix("http://").expect("http url");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut bytes = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut bytes)).await.expect("answer in time").expect("read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("end of head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, body.to_owned())
}

/// `PUT /message` of `message`, as academy-py sends it (and re-sends it after a 5xx).
async fn raw_put(url: &str, message: &Message) -> u16 {
    let body = serde_json::to_vec(&json!({ "message": message.to_json() })).expect("json");
    raw(url, "PUT", "/message", None, &body).await.0
}

/// How often each tag occurs among `messages`.
fn tag_counts(messages: &[Message]) -> BTreeMap<Uuid, usize> {
    let mut counts = BTreeMap::new();
    for message in messages {
        *counts.entry(message.tag()).or_insert(0) += 1;
    }
    counts
}

/// `count` requests from `src` to `dest`, sent concurrently; their tags.
async fn send_requests(client: &HttpExchange, src: &UserId, dest: &EntityId, count: usize) -> BTreeSet<Uuid> {
    let requests: Vec<Message> =
        (0..count).map(|_| Message::request(src.clone(), dest.clone(), Body::PingRequest)).collect();
    let tags = requests.iter().map(Message::tag).collect();
    futures::stream::iter(requests)
        .map(|request| client.send(request))
        .buffer_unordered(16)
        .for_each(|sent| async move { sent.expect("send a request") })
        .await;
    tags
}

fn assert_forbidden(sent: exchange_core::Result<()>, what: &str) {
    assert!(matches!(sent, Err(Error::Forbidden { .. })), "{what}: {sent:?}");
}

/// Finding 1: requests forged "from" a victim and a terminate answering them put nothing in
/// the victim's queue; a forged response neither completes the victim's request nor counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_src_writes_nothing() {
    let fixture = Fixture::start(TOKENS).await;
    let alice = fixture.client(Some("tok-alice")).await;
    let mallory = fixture.client(Some("tok-mallory")).await;
    let victim = alice.register_user(Some("victim")).await.unwrap();
    let own = mallory.register_user(None).await.unwrap();
    for _ in 0..200 {
        let sent = mallory.send(Message::request(victim.clone(), own.clone(), Body::PingRequest)).await;
        assert_forbidden(sent, "a request with another tenant's src");
    }
    let (status, reason) = raw(
        fixture.server.url(),
        "PUT",
        "/message",
        Some("tok-mallory"),
        &serde_json::to_vec(
            &json!({"message": Message::request(victim.clone(), own.clone(), Body::PingRequest).to_json()}),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains("src"), "the reason names the src: {reason}");
    mallory.terminate(&own.clone().into()).await.unwrap();
    assert!(fixture.queued(&victim).await.is_empty(), "nothing lands in the victim's queue");
    assert_eq!(fixture.counter("outgoing", victim.uid()).await, None, "the victim's outgoing counter");
    let forged_records: Vec<String> = fixture.cmd(&["KEYS", &format!("request:{}:*", own.uid())]).await;
    assert!(forged_records.is_empty(), "no forged request was recorded: {forged_records:?}");

    // A response "from" the victim cannot complete the victim's pending request.
    let colleague = alice.register_user(None).await.unwrap();
    let request = Message::request(colleague.clone(), victim.clone(), Body::PingRequest);
    alice.send(request.clone()).await.unwrap();
    let sink = mallory.register_user(None).await.unwrap();
    let mut forged = request.response(Body::SuccessResponse).unwrap();
    forged.header.dest = sink.clone().into();
    assert_forbidden(mallory.send(forged).await, "a response with another tenant's src");
    let record: bool = fixture.cmd(&["EXISTS", &format!("request:{}:{}", victim.uid(), request.tag())]).await;
    assert!(record, "the victim's request is still pending");
    assert_eq!(fixture.counter("completions", victim.uid()).await, None, "the victim's completions counter");
    // An unknown src is refused too, and the owner still sends.
    assert_forbidden(mallory.send(Message::request(UserId::new(None), sink.clone(), Body::PingRequest)).await, "ghost");
    alice.send(Message::request(victim.clone(), colleague.clone(), Body::PingRequest)).await.expect("own src");
    assert_eq!(fixture.counter("outgoing", victim.uid()).await, Some(1));
}

/// Finding 10: after a workload touching every kind of key, each key in Redis has a TTL, and
/// a heartbeat of an unknown id wrote nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_written_expires() {
    let fixture = Fixture::start(TOKENS).await;
    let alice = fixture.client(Some("tok-alice")).await;
    let mallory = fixture.client(Some("tok-mallory")).await;
    let user = alice.register_user(Some("user")).await.unwrap();
    let agent = alice.register_agent(AgentRegistration::new(["test.Ttl", "academy.agent.Agent"])).await.unwrap();
    let share = serde_json::to_vec(&json!({"mailbox": EntityId::from(user.clone()).to_json(), "group_id": "g1"}))
        .expect("json");
    let (status, reason) = raw(fixture.server.url(), "POST", "/mailbox/share", Some("tok-alice"), &share).await;
    assert_eq!(status, 200, "{reason}");
    alice.update_heartbeat(&user.clone().into()).await.unwrap();
    alice.update_heartbeat(&agent.clone().into()).await.unwrap();
    let ghost = UserId::new(None);
    alice.update_heartbeat(&ghost.clone().into()).await.expect("a heartbeat of an unknown id is a 200");

    // A request answered, one left pending (answered by terminate), one forged.
    let agent_inbox = alice.open_mailbox(&agent.clone().into()).await.unwrap();
    let request = Message::request(user.clone(), agent.clone(), Body::PingRequest);
    alice.send(request.clone()).await.unwrap();
    let got = tokio::time::timeout(PROMPT, agent_inbox.recv(Some(PROMPT))).await.expect("in time").unwrap();
    alice.send(got.response(Body::SuccessResponse).unwrap()).await.unwrap();
    alice.send(Message::request(user.clone(), agent.clone(), Body::PingRequest)).await.unwrap();
    let victim_src = Message::request(user.clone(), mallory.register_user(None).await.unwrap(), Body::PingRequest);
    assert_forbidden(mallory.send(victim_src).await, "forged src");
    alice.terminate(&agent.clone().into()).await.unwrap();
    assert_eq!(fixture.queued(&user).await.len(), 2, "the response and the terminate notice");
    // An agent that stays, with a request pending.
    let living = alice.register_agent(AgentRegistration::new(["test.Living"])).await.unwrap();
    alice.send(Message::request(user.clone(), living, Body::PingRequest)).await.unwrap();

    let keys: Vec<String> = fixture.cmd(&["KEYS", "*"]).await;
    for family in
        ["active", "owner", "agent", "heartbeat", "share", "queue", "request", "outgoing", "completions", "sent"]
    {
        assert!(keys.iter().any(|k| k.starts_with(&format!("{family}:"))), "the workload wrote {family}: {keys:?}");
    }
    assert!(!keys.iter().any(|k| k.contains(&ghost.uid().to_string())), "nothing for the unknown id: {keys:?}");
    // The server's own keys (docs/HTTP.md) have no TTL: one index entry per registered
    // agent, its sequence counter, and the marker.
    let ours = ["exchange-server:agents", "exchange-server:agents:seq", "exchange-server:marker"];
    for key in &keys {
        if key.starts_with("exchange-server:") {
            assert!(ours.contains(&key.as_str()), "an undocumented key {key}");
            continue;
        }
        let ttl: i64 = fixture.cmd(&["TTL", key]).await;
        assert!(ttl > 0 || ttl == -2, "{key} has TTL {ttl}");
    }
}

/// Finding 7: a short stall fails no send; during a stall longer than the command timeout a
/// send may fail, and then it is stored at most once, and once after academy-py's retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_survive_redis_stalls_without_duplicates() {
    let fixture = Fixture::start("").await;
    let client = fixture.client(None).await;
    let user = client.register_user(None).await.unwrap();
    let agent = client.register_user(None).await.unwrap();
    let url = fixture.server.url().to_owned();
    let requests =
        |n: usize| (0..n).map(|_| Message::request(user.clone(), agent.clone(), Body::PingRequest)).collect::<Vec<_>>();
    let send_all = |messages: Vec<Message>| {
        let url = url.clone();
        async move {
            let sends = messages.iter().map(|m| raw_put(&url, m));
            let statuses = futures::future::join_all(sends).await;
            messages.into_iter().zip(statuses).collect::<Vec<_>>()
        }
    };

    fixture.pause_writes(SHORT_STALL_MS).await;
    let short = send_all(requests(20)).await;
    for (message, status) in &short {
        assert_eq!(*status, 200, "a send during a {SHORT_STALL_MS} ms stall: {}", message.tag());
    }

    fixture.pause_writes(LONG_STALL_MS).await;
    let long = send_all(requests(20)).await;
    let failed: Vec<&Message> = long.iter().filter(|(_, status)| *status != 200).map(|(m, _)| m).collect();
    assert!(!failed.is_empty(), "sends made at the start of a {LONG_STALL_MS} ms stall fail");
    for (message, status) in &long {
        assert!(*status == 200 || *status == 503, "{}: {status}", message.tag());
    }
    fixture.wait_for_writes().await;
    for message in &failed {
        assert_eq!(raw_put(&url, message).await, 200, "the retry of {}", message.tag());
    }

    assert_eq!(raw_put(&url, &short[0].0).await, 200, "a late retry of a stored send");
    let counts = tag_counts(&fixture.queued(&agent).await);
    for (message, _) in short.iter().chain(&long) {
        assert_eq!(counts.get(&message.tag()), Some(&1), "{} is queued exactly once", message.tag());
    }
    assert_eq!(counts.len(), 40, "nothing else is queued");
    assert_eq!(fixture.counter("outgoing", user.uid()).await, Some(40), "each request counted once");
}

/// Finding 7: a terminate that fails after marking the mailbox terminated (its notices
/// refused by Redis) is completed by a retry; a third terminate sends nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_terminate_sends_the_notices_left() {
    let fixture = Fixture::start("").await;
    let client = fixture.client(None).await;
    let user = client.register_user(None).await.unwrap();
    let agent = client.register_agent(AgentRegistration::new(["test.Dying"])).await.unwrap();
    let tags = send_requests(&client, &user, &agent.clone().into(), 300).await;

    let () = fixture.cmd(&["ACL", "SETUSER", "default", "-@scripting"]).await;
    let failed = client.terminate(&agent.clone().into()).await;
    let () = fixture.cmd(&["ACL", "SETUSER", "default", "+@all"]).await;
    assert!(matches!(failed, Err(Error::Unavailable { .. })), "{failed:?}");
    let state: String = fixture.cmd(&["GET", &format!("active:{}", agent.uid())]).await;
    assert_eq!(state, "TERMINATED");
    assert!(fixture.queued(&user).await.is_empty(), "no notice went out yet");

    client.terminate(&agent.clone().into()).await.expect("the retry");
    client.terminate(&agent.clone().into()).await.expect("once more");
    let notices = fixture.queued(&user).await;
    assert!(notices.iter().all(|n| matches!(n.body, Body::AcademyError(_))), "only notices");
    let counts = tag_counts(&notices);
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), tags, "one notice per request");
    assert!(counts.values().all(|&n| n == 1), "each notice once");
}

/// Finding 7: a terminate made during a stall longer than the command timeout fails; retried
/// after it, every pending request gets its notice exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_during_a_stall_is_completed_by_a_retry() {
    let fixture = Fixture::start("").await;
    let client = fixture.client(None).await;
    let user = client.register_user(None).await.unwrap();
    let agent = client.register_agent(AgentRegistration::new(["test.Stalled"])).await.unwrap();
    let tags = send_requests(&client, &user, &agent.clone().into(), 1_000).await;

    fixture.pause_writes(LONG_STALL_MS).await;
    let started = Instant::now();
    let failed = client.terminate(&agent.clone().into()).await;
    assert!(matches!(failed, Err(Error::Unavailable { .. })), "{failed:?} after {:?}", started.elapsed());
    fixture.wait_for_writes().await;
    client.terminate(&agent.clone().into()).await.expect("the retry");
    let counts = tag_counts(&fixture.queued(&user).await);
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), tags, "one notice per request");
    assert!(counts.values().all(|&n| n == 1), "each notice once");
}

/// Messages an event stream took and did not deliver go back to the head of the queue in
/// order, and the queue they recreate expires like any other; a terminated mailbox takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_messages_keep_order_and_expire() {
    let redis_server = RedisServer::start();
    let config = ServerConfig::from_toml("[backend]\nkind = \"redis\"\nmessage_size_limit_kb = 1024\n").unwrap();
    let storage = RedisStorage::connect(&redis_server.url(), &config).await.expect("connect the storage");
    let caller = Caller::anonymous();
    let (live, dead) = (EntityId::from(UserId::new(None)), EntityId::from(UserId::new(None)));
    for id in [&live, &dead] {
        storage.create(&caller, id, None).await.unwrap();
    }
    storage.terminate(&caller, &dead).await.unwrap();
    let messages = vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")];
    storage.requeue(&live, messages.clone()).await.unwrap();
    storage.requeue(&dead, messages).await.unwrap();

    let mut conn = redis::Client::open(redis_server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let range = |uid: Uuid| redis::cmd("LRANGE").arg(format!("queue:{uid}")).arg(0).arg(-1).clone();
    let queued: Vec<String> = range(live.uid()).query_async(&mut conn).await.unwrap();
    assert_eq!(queued, ["first", "second"]);
    let ttl: i64 = redis::cmd("TTL").arg(format!("queue:{}", live.uid())).query_async(&mut conn).await.unwrap();
    assert!(ttl > 0, "the requeued queue expires: {ttl}");
    let closed: Vec<String> = range(dead.uid()).query_async(&mut conn).await.unwrap();
    assert_eq!(closed, ["<CLOSED>"], "a terminated mailbox takes nothing back");
}
