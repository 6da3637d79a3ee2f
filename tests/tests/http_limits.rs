//! What the HTTP server's in-memory storage accepts and keeps: a message's `src` is checked
//! like its `dest`, queues, request records, mailboxes and the whole store are bounded (429 /
//! 507, `QueueFull` through our client), request records and gravestones expire, and nothing
//! is stored for an id nobody created.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange_core::{
    ActionRequest, Body, EntityId, Error, Exchange, MailboxStats, MailboxStatus, Message, MessageKind, UserId,
};
use exchange_http::server::{HttpExchangeServer, MemoryStorage, ServerConfig, SpawnedServer, Storage, spawn_server};
use exchange_http::{HttpExchange, HttpOptions, RecvMode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hang detector for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(60);

/// Three tenants; alice and bob share group `g1`.
const TOKENS: &str = r#"
[auth]
method = "token"
[auth.tokens.tok-alice]
client_id = "alice"
groups = ["g1"]
[auth.tokens.tok-bob]
client_id = "bob"
groups = ["g1"]
[auth.tokens.tok-mallory]
client_id = "mallory"
"#;

/// A server in this process with its storage at hand (for its totals).
struct Server {
    spawned: SpawnedServer,
    storage: Arc<MemoryStorage>,
}

impl Server {
    /// A server configured by `toml` (any free port).
    async fn start(toml: &str) -> Server {
        let config = ServerConfig::from_toml(&format!("port = 0\n{toml}")).expect("test config");
        let storage = Arc::new(MemoryStorage::new(&config));
        let server = HttpExchangeServer::new(config).expect("server").with_storage(storage.clone());
        Server { spawned: spawn_server(server).await.expect("start server"), storage }
    }

    fn url(&self) -> &str {
        self.spawned.url()
    }

    /// A client receiving by long poll (one message per receive, nothing read ahead).
    async fn client(&self, token: Option<&str>) -> HttpExchange {
        let mut options = HttpOptions::default().recv_mode(RecvMode::LongPoll);
        if let Some(token) = token {
            options = options.bearer_token(token);
        }
        HttpExchange::connect_with(self.url(), options).await.expect("connect")
    }

    fn totals(&self) -> exchange_http::server::StoreTotals {
        self.storage.totals().expect("the memory storage counts")
    }
}

/// Status and headers of one raw HTTP/1.1 exchange.
struct RawResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

async fn raw(url: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> RawResponse {
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
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse { status, headers, body: body.to_owned() }
}

/// `PUT /message` of `message`, as any client sends it.
async fn raw_put(url: &str, token: Option<&str>, message: &Message) -> RawResponse {
    let body = serde_json::to_vec(&json!({ "message": message.to_json() })).expect("json");
    raw(url, "PUT", "/message", token, &body).await
}

/// A request carrying `size` bytes of payload.
fn big_request(src: &UserId, dest: &UserId, size: usize) -> Message {
    let request = ActionRequest::json("echo", &["x".repeat(size)], &json!({})).expect("request");
    Message::request(src.clone(), dest.clone(), Body::ActionRequest(request))
}

async fn stats(client: &HttpExchange, id: &UserId) -> MailboxStats {
    client.stats(&id.clone().into()).await.expect("stats")
}

/// Unanswered requests addressed to a mailbox.
fn pending(stats: &MailboxStats) -> u64 {
    stats.incoming - stats.completed
}

/// Waits until `check` holds, polling; panics after `limit`.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, limit: Duration, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_forbidden(sent: exchange_core::Result<()>, what: &str) {
    assert!(matches!(sent, Err(Error::Forbidden { .. })), "{what}: {sent:?}");
}

/// Finding 1: a tenant cannot send with another tenant's mailbox as `src`, so she can neither
/// make terminate notices land in the victim's queue nor move the victim's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_src_is_refused() {
    let server = Server::start(TOKENS).await;
    let alice = server.client(Some("tok-alice")).await;
    let mallory = server.client(Some("tok-mallory")).await;
    let victim = alice.register_user(Some("victim")).await.unwrap();
    let own = mallory.register_user(None).await.unwrap();
    // Requests "from" the victim into her own mailbox, then a terminate answering them.
    for _ in 0..20 {
        let sent = mallory.send(Message::request(victim.clone(), own.clone(), Body::PingRequest)).await;
        assert_forbidden(sent, "a request with another tenant's src");
    }
    let raw_answer =
        raw_put(server.url(), Some("tok-mallory"), &Message::request(victim.clone(), own.clone(), Body::PingRequest))
            .await;
    assert_eq!(raw_answer.status, 403, "{}", raw_answer.body);
    assert!(raw_answer.body.contains("src"), "the reason names the src: {}", raw_answer.body);
    mallory.terminate(&own.clone().into()).await.unwrap();
    let seen = stats(&alice, &victim).await;
    assert_eq!((seen.queued, seen.outgoing), (0, 0), "the victim's queue and counters: {seen:?}");
    // A response "from" the victim cannot complete the victim's pending request.
    let colleague = alice.register_user(None).await.unwrap();
    let request = Message::request(colleague.clone(), victim.clone(), Body::PingRequest);
    alice.send(request.clone()).await.unwrap();
    let sink = mallory.register_user(None).await.unwrap();
    let mut forged = request.response(Body::SuccessResponse).unwrap();
    forged.header.dest = sink.clone().into();
    assert_forbidden(mallory.send(forged).await, "a response with another tenant's src");
    let seen = stats(&alice, &victim).await;
    assert_eq!((pending(&seen), seen.completed), (1, 0), "the victim's request is still pending: {seen:?}");
    // An unknown src is refused too.
    let ghost = UserId::new(None);
    assert_forbidden(mallory.send(Message::request(ghost, sink.clone(), Body::PingRequest)).await, "unknown src");
    assert_eq!(server.totals().queued_messages, 1, "only alice's request is queued");
}

/// The src rule is the dest rule: the owner, or a member of a group the mailbox is shared
/// with, may send from it (and answer as it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn src_may_be_a_shared_mailbox() {
    let server = Server::start(TOKENS).await;
    let alice = server.client(Some("tok-alice")).await;
    let bob = server.client(Some("tok-bob")).await;
    let shared = alice.register_user(None).await.unwrap();
    let inbox = bob.register_user(None).await.unwrap();
    let before = bob.send(Message::request(shared.clone(), inbox.clone(), Body::PingRequest)).await;
    assert_forbidden(before, "before the share");
    let share =
        serde_json::to_vec(&json!({"mailbox": EntityId::from(shared.clone()).to_json(), "group_id": "g1"})).unwrap();
    assert_eq!(raw(server.url(), "POST", "/mailbox/share", Some("tok-alice"), &share).await.status, 200);
    bob.send(Message::request(shared.clone(), inbox.clone(), Body::PingRequest)).await.expect("src shared with bob");
    assert_eq!(stats(&alice, &shared).await.outgoing, 1);
}

/// Without authentication every mailbox is everyone's, but `src` must still exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_src_is_refused_without_auth() {
    let server = Server::start("").await;
    let client = server.client(None).await;
    let dest = client.register_user(None).await.unwrap();
    let sent = client.send(Message::request(UserId::new(None), dest.clone(), Body::PingRequest)).await;
    assert_forbidden(sent, "unknown src");
    let src = client.register_user(None).await.unwrap();
    client.send(Message::request(src, dest, Body::PingRequest)).await.expect("known src");
}

/// A queue holds at most `mailbox_max_messages`: the next send is a 429 with `Retry-After`
/// (`QueueFull` through our client) until the receiver takes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_message_limit_is_a_429() {
    let server = Server::start("[limits]\nmailbox_max_messages = 3\n").await;
    let client = server.client(None).await;
    let (a, b) = (client.register_user(None).await.unwrap(), client.register_user(None).await.unwrap());
    for _ in 0..3 {
        client.send(Message::request(a.clone(), b.clone(), Body::PingRequest)).await.unwrap();
    }
    let refused = client.send(Message::request(a.clone(), b.clone(), Body::PingRequest)).await;
    assert!(matches!(&refused, Err(Error::QueueFull { message }) if message.contains("queue full")), "{refused:?}");
    let answer = raw_put(server.url(), None, &Message::request(a.clone(), b.clone(), Body::PingRequest)).await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert_eq!(answer.headers.get("retry-after").map(String::as_str), Some("1"));
    assert_eq!(server.totals().queued_messages, 3);
    assert_eq!(stats(&client, &b).await.queued, 3, "refused sends left nothing behind");
    let inbox = client.open_mailbox(&b.clone().into()).await.unwrap();
    inbox.recv(Some(PROMPT)).await.unwrap();
    client.send(Message::request(a, b, Body::PingRequest)).await.expect("room again");
}

/// A queue holds at most `mailbox_max_mb` of messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_byte_limit_is_a_429() {
    let server = Server::start("[limits]\nmailbox_max_mb = 1\n").await;
    let client = server.client(None).await;
    let (a, b) = (client.register_user(None).await.unwrap(), client.register_user(None).await.unwrap());
    for _ in 0..3 {
        client.send(big_request(&a, &b, 300 * 1024)).await.unwrap();
    }
    let refused = client.send(big_request(&a, &b, 300 * 1024)).await;
    assert!(matches!(&refused, Err(Error::QueueFull { message }) if message.contains("1 MiB")), "{refused:?}");
    assert_eq!(raw_put(server.url(), None, &big_request(&a, &b, 300 * 1024)).await.status, 429);
    // Small messages still fit, and other queues are not concerned.
    client.send(Message::request(a.clone(), b.clone(), Body::PingRequest)).await.expect("a small one fits");
    client.send(big_request(&b, &a, 300 * 1024)).await.expect("another queue");
    let totals = server.totals();
    assert_eq!(totals.queued_messages, 5);
    assert!(totals.queued_bytes > 4 * 300 * 1024 && totals.queued_bytes < 5 * 300 * 1024, "{totals:?}");
}

/// The whole store holds at most `store_max_mb`: past it every send is a 507 (`QueueFull`
/// through our client), and receiving gives the room back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_byte_limit_is_a_507() {
    let server = Server::start("[limits]\nstore_max_mb = 1\n").await;
    let client = server.client(None).await;
    let a = client.register_user(None).await.unwrap();
    let b = client.register_user(None).await.unwrap();
    let c = client.register_user(None).await.unwrap();
    client.send(big_request(&a, &b, 300 * 1024)).await.unwrap();
    client.send(big_request(&a, &b, 300 * 1024)).await.unwrap();
    client.send(big_request(&a, &c, 300 * 1024)).await.unwrap();
    let refused = client.send(big_request(&a, &c, 300 * 1024)).await;
    assert!(matches!(&refused, Err(Error::QueueFull { message }) if message.contains("store full")), "{refused:?}");
    let answer = raw_put(server.url(), None, &big_request(&a, &c, 300 * 1024)).await;
    assert_eq!(answer.status, 507, "{}", answer.body);
    let inbox = client.open_mailbox(&b.clone().into()).await.unwrap();
    inbox.recv(Some(PROMPT)).await.unwrap();
    client.send(big_request(&a, &c, 300 * 1024)).await.expect("room again after a receive");
    assert_eq!(server.totals().queued_messages, 3);
}

/// At most `mailbox_max_pending` unanswered requests are tracked per mailbox: new requests past
/// it are refused (429), responses still go through, and no accepted record is dropped (the
/// terminate answers every one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_request_limit_refuses_new_requests() {
    let server = Server::start("[limits]\nmailbox_max_pending = 2\n").await;
    let client = server.client(None).await;
    let (a, b) = (client.register_user(None).await.unwrap(), client.register_user(None).await.unwrap());
    let first = Message::request(a.clone(), b.clone(), Body::PingRequest);
    let second = Message::request(a.clone(), b.clone(), Body::PingRequest);
    client.send(first.clone()).await.unwrap();
    client.send(second.clone()).await.unwrap();
    let inbox = client.open_mailbox(&b.clone().into()).await.unwrap();
    assert_eq!(inbox.recv(Some(PROMPT)).await.unwrap().tag(), first.tag());
    assert_eq!(inbox.recv(Some(PROMPT)).await.unwrap().tag(), second.tag());
    let refused = client.send(Message::request(a.clone(), b.clone(), Body::PingRequest)).await;
    assert!(matches!(&refused, Err(Error::QueueFull { message }) if message.contains("unanswered")), "{refused:?}");
    // Responses are not requests: b answers the first, which makes room for one more.
    client.send(first.response(Body::SuccessResponse).unwrap()).await.expect("a response");
    let third = Message::request(a.clone(), b.clone(), Body::PingRequest);
    client.send(third.clone()).await.expect("room for one request");
    let seen = stats(&client, &b).await;
    assert_eq!((pending(&seen), seen.completed), (2, 1), "{seen:?}");
    client.terminate(&b.into()).await.unwrap();
    let requester = client.open_mailbox(&a.into()).await.unwrap();
    let mut answered = Vec::new();
    for _ in 0..3 {
        let message = requester.recv(Some(PROMPT)).await.unwrap();
        assert_eq!(message.header.kind, MessageKind::Response);
        answered.push((message.tag(), matches!(message.body, Body::AcademyError(_))));
    }
    answered.sort();
    let mut want = vec![(first.tag(), false), (second.tag(), true), (third.tag(), true)];
    want.sort();
    assert_eq!(answered, want, "the response, then a notice per pending request");
}

/// At most `store_max_mailboxes` mailboxes, gravestones included: a 507 for the next one;
/// re-registering an existing id stays a no-op 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_limit_is_a_507() {
    let server = Server::start("[limits]\nstore_max_mailboxes = 3\n").await;
    let client = server.client(None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.register_user(None).await.unwrap());
    }
    let refused = client.register_user(None).await;
    assert!(matches!(&refused, Err(Error::QueueFull { message }) if message.contains("3 mailboxes")), "{refused:?}");
    let again = serde_json::to_vec(&json!({"mailbox": EntityId::from(ids[0].clone()).to_json()})).unwrap();
    assert_eq!(raw(server.url(), "POST", "/mailbox", None, &again).await.status, 200, "an existing id");
    let new = serde_json::to_vec(&json!({"mailbox": EntityId::from(UserId::new(None)).to_json()})).unwrap();
    assert_eq!(raw(server.url(), "POST", "/mailbox", None, &new).await.status, 507);
    client.terminate(&ids[0].clone().into()).await.unwrap();
    assert_eq!(raw(server.url(), "POST", "/mailbox", None, &new).await.status, 507, "gravestones count");
    let totals = server.totals();
    assert_eq!((totals.active_mailboxes, totals.terminated_mailboxes), (2, 1));
}

/// A request received and never answered is forgotten after `mailbox_expiration_d`: it leaves
/// the stats, and a later terminate sends no notice for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_records_expire() {
    // 0.0001 days = 8.64 s.
    let server = Server::start("[backend]\nmailbox_expiration_d = 0.0001\n").await;
    let client = server.client(None).await;
    let (a, b) = (client.register_user(None).await.unwrap(), client.register_user(None).await.unwrap());
    client.send(Message::request(a.clone(), b.clone(), Body::PingRequest)).await.unwrap();
    let inbox = client.open_mailbox(&b.clone().into()).await.unwrap();
    inbox.recv(Some(PROMPT)).await.unwrap();
    assert_eq!(stats(&client, &b).await.in_progress, 1, "tracked while young");
    eventually("the request record expires", PROMPT, || async { stats(&client, &b).await.in_progress == 0 }).await;
    let seen = stats(&client, &b).await;
    assert_eq!((seen.incoming, seen.completed), (0, 0), "{seen:?}");
    assert_eq!(stats(&client, &a).await.outgoing, 1, "counters stay");
    client.terminate(&b.into()).await.unwrap();
    assert_eq!(server.totals().queued_messages, 0, "no notice for a forgotten request");
}

/// A gravestone is dropped after `gravestone_expiration_d`: the id is unknown again, and
/// anyone may register it anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gravestones_expire() {
    let server = Server::start(&format!("[backend]\ngravestone_expiration_d = 0.0001\n{TOKENS}")).await;
    let alice = server.client(Some("tok-alice")).await;
    let mallory = server.client(Some("tok-mallory")).await;
    let id: EntityId = alice.register_user(None).await.unwrap().into();
    alice.terminate(&id).await.unwrap();
    assert_eq!(alice.status(&id).await.unwrap(), MailboxStatus::Terminated, "a gravestone while young");
    assert_eq!(server.totals().terminated_mailboxes, 1);
    eventually("the gravestone expires", PROMPT, || async {
        alice.status(&id).await.unwrap() == MailboxStatus::Missing
    })
    .await;
    let totals = server.totals();
    assert_eq!((totals.active_mailboxes, totals.terminated_mailboxes), (0, 0), "{totals:?}");
    let body = serde_json::to_vec(&json!({"mailbox": id.to_json()})).unwrap();
    assert_eq!(raw(server.url(), "POST", "/mailbox", Some("tok-mallory"), &body).await.status, 200);
    assert_eq!(mallory.status(&id).await.unwrap(), MailboxStatus::Active, "registered anew, by its new owner");
    assert!(matches!(alice.status(&id).await, Err(Error::Forbidden { .. })));
}

/// Finding 10: a heartbeat for an id nobody created is a 200 (as Academy answers) that stores
/// nothing: the id stays unknown and free for whoever registers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_for_an_unknown_id_creates_nothing() {
    let server = Server::start(TOKENS).await;
    let alice = server.client(Some("tok-alice")).await;
    let mallory = server.client(Some("tok-mallory")).await;
    let ids: Vec<EntityId> = (0..100).map(|_| UserId::new(None).into()).collect();
    for id in &ids {
        mallory.update_heartbeat(id).await.expect("a 200 for an unknown id");
    }
    let totals = server.totals();
    assert_eq!((totals.active_mailboxes, totals.terminated_mailboxes), (0, 0), "{totals:?}");
    assert_eq!(mallory.status(&ids[0]).await.unwrap(), MailboxStatus::Missing);
    assert!(matches!(mallory.heartbeat(&ids[0]).await, Err(Error::BadEntityId { .. })));
    let body = serde_json::to_vec(&json!({"mailbox": ids[0].to_json()})).unwrap();
    assert_eq!(raw(server.url(), "POST", "/mailbox", Some("tok-alice"), &body).await.status, 200);
    assert_eq!(alice.status(&ids[0]).await.unwrap(), MailboxStatus::Active, "alice owns it");
}

/// The totals follow every change: creates, sends, receives, terminates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_follow_the_store() {
    let server = Server::start("").await;
    let client = server.client(None).await;
    let (a, b) = (client.register_user(None).await.unwrap(), client.register_user(None).await.unwrap());
    let messages: Vec<Message> = (0..10).map(|i| big_request(&a, &b, 100 * i)).collect();
    let bytes: u64 = messages.iter().map(|m| m.to_json().len() as u64).sum();
    for message in &messages {
        client.send(message.clone()).await.unwrap();
    }
    let totals = server.totals();
    assert_eq!((totals.active_mailboxes, totals.queued_messages, totals.queued_bytes), (2, 10, bytes));
    let inbox = client.open_mailbox(&b.clone().into()).await.unwrap();
    let first = inbox.recv(Some(PROMPT)).await.unwrap();
    assert_eq!(server.totals().queued_bytes, bytes - first.to_json().len() as u64);
    client.terminate(&b.into()).await.unwrap();
    let totals = server.totals();
    // b's queue is gone; a holds one notice per request.
    assert_eq!((totals.active_mailboxes, totals.terminated_mailboxes, totals.queued_messages), (1, 1, 10));
}
