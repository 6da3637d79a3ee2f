//! The HTTP transport against our own server (in-memory storage): the conformance suite, a
//! replay of every Academy capture in `fixtures/academy-1.0.0/http` (in `index.json` order), the
//! event-stream framing, and bad-input tests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use exchange_conformance::{TestBackend, fixtures};
use exchange_core::{Body, Error, Exchange, Message, UserId};
use exchange_http::HttpExchange;
use exchange_http::server::{HttpExchangeServer, ServerConfig, SpawnedServer, spawn_http_exchange, spawn_server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fresh server per test; every client is a new connection pool.
struct HttpBackend {
    server: SpawnedServer,
}

impl HttpBackend {
    async fn start() -> Self {
        HttpBackend { server: spawn_http_exchange().await.expect("start the HTTP exchange server") }
    }
}

#[async_trait]
impl TestBackend for HttpBackend {
    async fn client(&self) -> Arc<dyn Exchange> {
        Arc::new(HttpExchange::connect(self.server.url()).await.expect("connect to the HTTP exchange"))
    }
}

exchange_conformance::conformance_tests!(HttpBackend::start());

/// The same suite with clients that receive by long poll (`GET /message`) instead of streams.
mod long_poll {
    use super::*;

    struct LongPollBackend {
        server: SpawnedServer,
    }

    impl LongPollBackend {
        async fn start() -> Self {
            LongPollBackend { server: spawn_http_exchange().await.expect("start the HTTP exchange server") }
        }
    }

    #[async_trait]
    impl TestBackend for LongPollBackend {
        async fn client(&self) -> Arc<dyn Exchange> {
            let options = exchange_http::HttpOptions::default().recv_mode(exchange_http::RecvMode::LongPoll);
            Arc::new(HttpExchange::connect_with(self.server.url(), options).await.expect("connect"))
        }
    }

    exchange_conformance::conformance_tests!(LongPollBackend::start());
}

/// A server configured as the one the fixtures were captured from (20 s listen maximum,
/// 512 KiB messages), plus `extra` TOML.
async fn capture_server(extra: &str) -> SpawnedServer {
    let config = ServerConfig::from_toml(&format!(
        "port = 0\nlisten_timeout_s = 20\n{extra}\n[backend]\nmessage_size_limit_kb = 512\n"
    ))
    .expect("test config");
    spawn_server(HttpExchangeServer::new(config).expect("server")).await.expect("start server")
}

/// One raw HTTP/1.1 exchange: exact control of method, headers and body bytes.
struct RawResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl RawResponse {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn raw(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let address = url.strip_prefix("http://").expect("http url");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    // A server refusing an oversized body may answer and close before it is all written.
    let _ = stream.write_all(body).await;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut bytes))
        .await
        .expect("response within 60 s");
    assert!(read.is_ok() || !bytes.is_empty(), "{method} {path}: no response: {read:?}");
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> RawResponse {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("end of head");
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line").split(' ').nth(1).expect("status").parse().expect("status code");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|v| v == "chunked") {
        body = dechunk(&body).concat();
    }
    RawResponse { status, headers, body }
}

/// The chunks of a chunked body (the last, empty one included).
fn dechunk(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else { return chunks };
        let size = usize::from_str_radix(std::str::from_utf8(&body[..end]).expect("size"), 16).expect("hex size");
        chunks.push(body[end + 2..end + 2 + size].to_vec());
        if size == 0 {
            return chunks;
        }
        body = &body[end + 2 + size + 2..];
    }
}

/// A message's JSON as clients see it: Academy's header defaults applied, unknown header
/// fields dropped; `academy_version` removed (the server writes its own version into the
/// terminate notices it makes).
fn normalized(text: &str) -> Value {
    let message = Message::from_json(text).unwrap_or_else(|e| panic!("not a message: {e}: {text}"));
    let mut value: Value = serde_json::from_str(&message.to_json()).expect("json");
    value["header"].as_object_mut().expect("header").remove("academy_version");
    value
}

/// The request body of a capture: its JSON, its raw text, or the elided huge bodies rebuilt.
fn request_body(file: &str, request: &Value) -> Vec<u8> {
    match file {
        // "a ~600 KiB message JSON (an action-request whose pargs hold one 600 KiB string)"
        "message-put-too-large.json" => {
            let big = "x".repeat(600 * 1024);
            let message = json!({"header": {
                "src": {"uid": "00000000-0000-4000-8000-000000000101", "name": "alice", "role": "user"},
                "dest": {"uid": "00000000-0000-4000-8000-000000000201", "name": "calc", "role": "agent"},
                "tag": "00000000-0000-0000-0000-0000000000ff", "label": null, "kind": "request",
                "protocol_version": "1.1", "academy_version": "1.0.0"},
                "body": {"action": "add", "serialization": "json", "pargs": big, "kargs": "{}", "kind": "action-request"}});
            serde_json::to_vec(&json!({"message": message.to_string()})).expect("json")
        }
        // "1.2 MiB JSON body"
        "message-put-body-over-1mib.json" => {
            serde_json::to_vec(&json!({"message": "y".repeat(1_200 * 1024)})).expect("json")
        }
        _ => match (request.get("json"), request.get("raw_body")) {
            (Some(body), _) => serde_json::to_vec(body).expect("json"),
            (None, Some(Value::String(text))) => text.clone().into_bytes(),
            _ => Vec::new(),
        },
    }
}

/// Replays the captures of `dir` (`index.json` order, then the `extra` ones) against `url` and
/// checks statuses and JSON bodies. `differences` maps a file to our status and the reason.
async fn replay(url: &str, dir: &Path, differences: &[(&str, u16, &str)]) -> usize {
    let index: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).expect("index")).expect("index json");
    let mut files: Vec<String> = index.iter().map(|e| e["file"].as_str().expect("file").to_owned()).collect();
    let mut extras: Vec<String> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| {
            f.ends_with(".json") && f != "index.json" && !f.starts_with("listen-get-stream") && !files.contains(f)
        })
        .collect();
    extras.sort();
    files.extend(extras);
    for file in &files {
        let capture: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).expect("capture")).expect("capture json");
        let request = &capture["request"];
        let method = request["method"].as_str().expect("method");
        let path = request["path"].as_str().expect("path");
        let mut headers: Vec<(String, String)> = request
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
            .unwrap_or_default();
        if request.get("json").is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        if file == "mailbox-get-no-content-type.json" {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        }
        let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = request_body(file, request);
        let response = raw(url, method, path, &header_refs, &body).await;
        let expected = &capture["response"];
        let difference = differences.iter().find(|(f, _, _)| f == file);
        let want = difference.map_or_else(|| expected["status"].as_u64().expect("status") as u16, |d| d.1);
        assert_eq!(response.status, want, "{file}: status (body {:?})", response.text());
        if difference.is_some() || response.status != 200 {
            if response.status >= 400 {
                let content_type = response.headers.get("content-type").map(String::as_str);
                assert_eq!(content_type, Some("text/plain; charset=utf-8"), "{file}: error content type");
            }
            if response.status == 405 {
                assert!(response.headers.contains_key("allow"), "{file}: 405 without Allow");
            }
            continue;
        }
        match &expected["body"] {
            Value::String(text) if text.is_empty() => {
                assert!(response.body.is_empty(), "{file}: expected an empty body");
                assert!(!response.headers.contains_key("content-type"), "{file}: empty answers have no content type");
            }
            Value::Object(want) => {
                assert_eq!(
                    response.headers.get("content-type").map(String::as_str),
                    Some("application/json; charset=utf-8"),
                    "{file}: content type"
                );
                let got: Value = serde_json::from_slice(&response.body).expect("json answer");
                if let Some(Value::String(message)) = want.get("message") {
                    assert_eq!(
                        normalized(got["message"].as_str().expect("message string")),
                        normalized(message),
                        "{file}"
                    );
                } else if want.contains_key("heartbeat") && !want["heartbeat"].is_null() {
                    let age = got["heartbeat"].as_f64().expect("heartbeat seconds");
                    assert!((0.0..10.0).contains(&age), "{file}: heartbeat {age}");
                } else {
                    assert_eq!(&got, &expected["body"], "{file}: body");
                }
            }
            other => panic!("{file}: unexpected capture body {other}"),
        }
    }
    files.len()
}

/// Every capture of `fixtures/academy-1.0.0/http`, in order, against our server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_academy_captures() {
    // Deliberate differences (spec §3.3/§3.4 recommendations): deterministic input errors are
    // 400 with the reason, never 500 (Academy's 500s are retried by its client as transient);
    // removing a share from a never-shared mailbox is a no-op 200 like any other absent group.
    let differences = [
        ("mailbox-post-malformed-json.json", 400, "malformed JSON is a client error"),
        ("mailbox-post-empty-body.json", 400, "an empty body is a client error"),
        ("message-get-timeout-string.json", 400, "ill-typed timeout"),
        ("message-get-timeout-null.json", 400, "ill-typed timeout"),
        ("message-get-json-array-body.json", 400, "a non-object body is a client error"),
        ("share-delete-never-shared.json", 200, "removing an absent group is a no-op"),
    ];
    let server = capture_server("").await;
    let count = replay(server.url(), &fixtures::root().join("http"), &differences).await;
    assert!(count >= 80, "only {count} captures replayed");
}

/// Every capture of `fixtures/academy-1.0.0/http/auth` with the same token table as the stub
/// authenticator used for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_academy_auth_captures() {
    // Deliberate difference (spec §3.4 DELETE): terminate notifies requesters with server
    // authority, so the owner's terminate succeeds and the other client's requester gets its
    // code-0 notice instead of waiting into a 408.
    let differences = [
        ("mailbox-delete-owner-terminate-with-pending-request-from-other-client.json", 200, "server authority"),
        ("message-get-requester-recv-after-terminate.json", 200, "the notice arrives"),
    ];
    let server = capture_server(
        r#"[auth]
method = "token"
[auth.tokens.tok-alice]
client_id = "alice-id"
groups = ["group-1"]
[auth.tokens.tok-bob]
client_id = "bob-id"
groups = ["group-1", "group-2"]
[auth.tokens.tok-carol]
client_id = "carol-id"
"#,
    )
    .await;
    let count = replay(server.url(), &fixtures::root().join("http/auth"), &differences).await;
    assert_eq!(count, 33);
}

const LISTENER: &str = r#"{"uid":"00000000-0000-4000-8000-000000000301","name":"listener","role":"user"}"#;

/// Event-stream framing as in `listen-get-stream-timeout.json`: one `data:` chunk per message,
/// `: ping` after 15 s, the stream ends when the per-message timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_stream_frames_like_academy() {
    let server = capture_server("").await;
    let capture: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures::root().join("http/listen-get-stream-timeout.json")).expect("capture"),
    )
    .expect("json");
    let url = server.url();
    let post = serde_json::to_vec(&json!({"mailbox": LISTENER})).expect("json");
    assert_eq!(raw(url, "POST", "/mailbox", &[], &post).await.status, 200);
    let sender = r#"{"uid":"00000000-0000-4000-8000-000000000302","name":"sender","role":"agent"}"#;
    assert_eq!(
        raw(url, "POST", "/mailbox", &[], &serde_json::to_vec(&json!({"mailbox": sender})).unwrap()).await.status,
        200
    );
    let chunks: Vec<String> = capture["response"]["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    for chunk in &chunks[..2] {
        let message = chunk.strip_prefix("data: ").and_then(|c| c.strip_suffix("\r\n\r\n")).expect("data chunk");
        let put = serde_json::to_vec(&json!({"message": message})).expect("json");
        assert_eq!(raw(url, "PUT", "/message", &[], &put).await.status, 200);
    }
    let started = Instant::now();
    let listen = serde_json::to_vec(&json!({"mailbox": LISTENER, "timeout": 16})).expect("json");
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "GET /mailbox/listen HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        listen.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&listen).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(15) && elapsed < Duration::from_secs(25), "stream lasted {elapsed:?}");
    let response = parse_response(&bytes);
    assert_eq!(response.status, 200);
    for (name, value) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("x-accel-buffering", "no"),
        ("transfer-encoding", "chunked"),
    ] {
        assert_eq!(response.headers.get(name).map(String::as_str), Some(value), "header {name}");
    }
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let got: Vec<String> = dechunk(&bytes[split + 4..]).into_iter().map(|c| String::from_utf8(c).unwrap()).collect();
    assert_eq!(got, chunks, "chunks");
}

/// The listen route accepts Academy's client default `timeout: 60` (inclusive maximum).
#[tokio::test]
async fn listen_accepts_sixty_seconds_by_default() {
    let server = spawn_http_exchange().await.unwrap();
    let user = server.client().register_user(None).await.unwrap();
    server.client().send(Message::request(user.clone(), user.clone(), Body::PingRequest)).await.unwrap();
    let body =
        serde_json::to_vec(&json!({"mailbox": exchange_core::EntityId::from(user.clone()).to_json(), "timeout": 60}))
            .unwrap();
    let ok = raw(server.url(), "GET", "/message", &[], &body).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let over = serde_json::to_vec(&json!({"mailbox": exchange_core::EntityId::from(user).to_json(), "timeout": 60.5}))
        .unwrap();
    assert_eq!(raw(server.url(), "GET", "/mailbox/listen", &[], &over).await.status, 400);
}

/// Bad input of every shape answers 4xx with a reason, never 5xx, and the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_cleanly() {
    let server = spawn_http_exchange().await.unwrap();
    let url = server.url();
    let user = exchange_core::EntityId::from(server.client().register_user(None).await.unwrap()).to_json();
    let id_json = serde_json::to_string(&user).unwrap();
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("POST", "/mailbox", "{\"mailbox\": ".into(), 400),
        ("POST", "/mailbox", "".into(), 400),
        ("POST", "/mailbox", "[1,2]".into(), 400),
        ("POST", "/mailbox", "\"text\"".into(), 400),
        ("POST", "/mailbox", "{}".into(), 400),
        ("POST", "/mailbox", "{\"mailbox\": 5}".into(), 400),
        ("POST", "/mailbox", "{\"mailbox\": \"{\\\"uid\\\":\\\"nope\\\",\\\"role\\\":\\\"user\\\"}\"}".into(), 400),
        ("POST", "/mailbox", "{\"mailbox\": \"not json\"}".into(), 400),
        ("POST", "/mailbox", format!("{{\"mailbox\": {id_json}, \"agent\": 3}}"), 400),
        ("POST", "/mailbox", "\u{0}\u{1}binary".into(), 400),
        ("PUT", "/message", "{\"message\": \"{}\"}".into(), 400),
        ("PUT", "/message", "{\"message\": \"{\\\"header\\\": 1, \\\"body\\\": {}}\"}".into(), 400),
        ("PUT", "/message", "{\"message\": {\"header\": {}}}".into(), 400),
        ("PUT", "/message", "{\"msg\": \"x\"}".into(), 400),
        ("GET", "/message", format!("{{\"mailbox\": {id_json}, \"timeout\": -1}}"), 400),
        ("GET", "/message", format!("{{\"mailbox\": {id_json}, \"timeout\": \"soon\"}}"), 400),
        ("GET", "/message", format!("{{\"mailbox\": {id_json}, \"timeout\": 1e9}}"), 400),
        ("GET", "/mailbox/listen", format!("{{\"mailbox\": {id_json}, \"timeout\": 0}}"), 400),
        ("GET", "/discover", "{\"agent\": 1, \"allow_subclasses\": true}".into(), 400),
        ("GET", "/discover", "{\"agent\": \"x\"}".into(), 400),
        ("POST", "/mailbox/share", format!("{{\"mailbox\": {id_json}}}"), 400),
        ("GET", "/mailbox/stats", "{\"mailbox\": null}".into(), 400),
        ("GET", "/nope", "{}".into(), 404),
        ("GET", "/mailbox/nope", "{}".into(), 404),
        ("PATCH", "/message", "{}".into(), 405),
        ("POST", "/discover", "{}".into(), 405),
        ("PUT", "/mailbox/stats", "{}".into(), 405),
    ];
    for (method, path, body, want) in &cases {
        let response = raw(url, method, path, &[("Content-Type", "application/json")], body.as_bytes()).await;
        assert_eq!(response.status, *want, "{method} {path} {body:?}: {}", response.text());
        assert!(!response.body.is_empty(), "{method} {path}: errors carry a reason");
    }
    // Oversized: a body over the default body limit (2 × 2 MiB + 64 KiB) and a message over 2 MiB.
    let huge = vec![b' '; 5 * 1024 * 1024];
    assert_eq!(raw(url, "PUT", "/message", &[], &huge).await.status, 413);
    let src = server.client().register_user(None).await.unwrap();
    let dest: UserId = serde_json::from_str(&user).unwrap();
    let args = vec!["z".repeat(2 * 1024 * 1024 + 10)];
    let big = Message::request(
        src.clone(),
        dest.clone(),
        Body::ActionRequest(exchange_core::ActionRequest::json("echo", &args, &json!({})).unwrap()),
    );
    assert!(matches!(server.client().send(big).await, Err(Error::MessageTooLarge { .. })));
    // A 1 MiB payload is accepted by default.
    let args = vec!["z".repeat(1024 * 1024)];
    let ok = Message::request(
        src.clone(),
        dest.clone(),
        Body::ActionRequest(exchange_core::ActionRequest::json("echo", &args, &json!({})).unwrap()),
    );
    server.client().send(ok).await.expect("a 1 MiB payload fits the default limit");
    // 10,000 sends to unknown mailboxes.
    let client = server.client().clone();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        let src = src.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..2_500 {
                let ghost = UserId::new(None);
                let sent = client.send(Message::request(src.clone(), ghost, Body::PingRequest)).await;
                assert!(matches!(sent, Err(Error::BadEntityId { .. })), "{sent:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Still up and serving.
    let inbox = client.open_mailbox(&dest.clone().into()).await.unwrap();
    assert!(matches!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap().body, Body::ActionRequest(_)));
    client.send(Message::request(src, dest, Body::PingRequest)).await.unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap().body, Body::PingRequest);
}

/// TLS from certificate and key files; the client trusts a CA file, or skips verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_from_cert_and_key_files() {
    let dir = std::env::temp_dir().join(format!("exchange-http-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = exchange_conformance::tls::self_signed_cert(&dir);
    let config = ServerConfig::from_toml(&format!(
        "port = 0\ncertfile = {:?}\nkeyfile = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    ))
    .unwrap();
    let server = spawn_server(HttpExchangeServer::new(config).unwrap()).await;
    // The helper's own client does not trust the certificate: it cannot start.
    assert!(server.is_err(), "a client without the CA must refuse the server");
    let bound = HttpExchangeServer::new(
        ServerConfig::from_toml(&format!(
            "port = 0\ncertfile = {:?}\nkeyfile = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ))
        .unwrap(),
    )
    .unwrap()
    .bind()
    .await
    .unwrap();
    let url = bound.url();
    assert!(url.starts_with("https://"), "{url}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    let trusted = HttpExchange::connect_with(&url, exchange_http::HttpOptions::default().ca_file(&cert)).await.unwrap();
    let user = trusted.register_user(None).await.unwrap();
    let inbox = trusted.open_mailbox(&user.clone().into()).await.unwrap();
    trusted.send(Message::request(user.clone(), user.clone(), Body::PingRequest)).await.unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap().body, Body::PingRequest);
    let unverified =
        HttpExchange::connect_with(&url, exchange_http::HttpOptions::default().verify_tls(false)).await.unwrap();
    assert_eq!(unverified.status(&user.into()).await.unwrap(), exchange_core::MailboxStatus::Active);
    assert!(HttpExchange::connect(&url).await.is_err(), "an unknown certificate is refused by default");
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bearer tokens through the client: 401 and 403 map to `Unauthorized` and `Forbidden`,
/// another client's mailbox is off limits, and discover skips it silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_through_the_client() {
    let server = capture_server(
        "[auth]\nmethod = \"token\"\n[auth.tokens.tok-alice]\nclient_id = \"alice\"\n[auth.tokens.tok-bob]\nclient_id = \"bob\"\n",
    )
    .await;
    let url = server.url();
    let anonymous = HttpExchange::connect(url).await;
    assert!(matches!(anonymous, Err(Error::Unauthorized { .. })), "{anonymous:?}");
    let wrong = HttpExchange::connect_with(url, exchange_http::HttpOptions::default().bearer_token("nope")).await;
    assert!(matches!(wrong, Err(Error::Forbidden { .. })), "{wrong:?}");
    let alice =
        HttpExchange::connect_with(url, exchange_http::HttpOptions::default().bearer_token("tok-alice")).await.unwrap();
    let bob = HttpExchange::connect_with(
        url,
        exchange_http::HttpOptions::default().header("Authorization", "Bearer tok-bob"),
    )
    .await
    .unwrap();
    let agent = alice.register_agent(exchange_core::AgentRegistration::new(["test.Private"])).await.unwrap();
    let bob_user = bob.register_user(None).await.unwrap();
    let sent = bob.send(Message::request(bob_user.clone(), agent.clone(), Body::PingRequest)).await;
    assert!(matches!(sent, Err(Error::Forbidden { .. })), "{sent:?}");
    assert!(matches!(bob.open_mailbox(&agent.clone().into()).await, Err(Error::Forbidden { .. })));
    assert!(bob.discover("test.Private", false).await.unwrap().is_empty());
    assert_eq!(alice.discover("test.Private", false).await.unwrap(), vec![agent.clone()]);
    // Sending needs access to the destination, whatever the source.
    let sent = alice.send(Message::request(agent.clone(), bob_user, Body::PingRequest)).await;
    assert!(matches!(sent, Err(Error::Forbidden { .. })), "{sent:?}");
    assert!(matches!(bob.terminate(&agent.clone().into()).await, Err(Error::Forbidden { .. })));
    alice.terminate(&agent.into()).await.unwrap();
}

/// A server mounted under a base path, and a client whose URL carries it; a wrong base path is
/// a configuration error at connect time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_path_in_url() {
    let server = capture_server("path_prefix = \"/v1\"").await;
    assert!(server.url().ends_with("/v1"), "{}", server.url());
    let client = HttpExchange::connect(server.url()).await.unwrap();
    let user = client.register_user(None).await.unwrap();
    let inbox = client.open_mailbox(&user.clone().into()).await.unwrap();
    client.send(Message::request(user.clone(), user, Body::PingRequest)).await.unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap().body, Body::PingRequest);
    let root = server.url().trim_end_matches("/v1").to_owned();
    let wrong = HttpExchange::connect(&root).await;
    assert!(matches!(wrong, Err(Error::Config { .. })), "{wrong:?}");
    let wrong = HttpExchange::connect(&format!("{root}/v2")).await;
    assert!(matches!(wrong, Err(Error::Config { .. })), "{wrong:?}");
}

/// Resident memory of this process (the in-process server lives here), in KiB.
fn own_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).expect("VmRSS value")
}

/// Clients that open connections and go silent (nothing sent, or half a request head, or a
/// head that announces a body never sent) do not stop the server from serving others, and
/// cost bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_starve_the_server() {
    const SILENT: usize = 300;
    let server = spawn_http_exchange().await.unwrap();
    let client = server.client().clone();
    let address = server.url().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let before = own_rss_kib();
    let mut silent = Vec::with_capacity(SILENT);
    for i in 0..SILENT {
        let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
        match i % 3 {
            0 => {}
            1 => stream.write_all(b"PUT /message HTTP/1.1\r\nHost: x\r\n").await.unwrap(),
            _ => stream
                .write_all(b"PUT /message HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{\"mess")
                .await
                .unwrap(),
        }
        silent.push(stream);
    }
    // Everyone else is still served, promptly.
    let started = Instant::now();
    let a = client.register_user(None).await.unwrap();
    let b = client.register_user(None).await.unwrap();
    let inbox = client.open_mailbox(&b.clone().into()).await.unwrap();
    for _ in 0..100 {
        client.send(Message::request(a.clone(), b.clone(), Body::PingRequest)).await.unwrap();
        assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap().body, Body::PingRequest);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "served slowly: {:?}", started.elapsed());
    let growth_kib = own_rss_kib().saturating_sub(before);
    assert!(growth_kib < 64 * 1024, "{SILENT} silent connections grew memory by {growth_kib} KiB");
    drop(silent);
}
