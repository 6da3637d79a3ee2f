//! The HTTP server's connection-level limits against clients that are slow, silent, greedy or
//! gone: header, idle and body timeouts, the connection cap, the shutdown deadline, durations
//! from the network, and event streams nobody reads.

use std::time::{Duration, Instant};

use exchange_core::{Body, EntityId, Exchange, Message};
use exchange_http::server::{HttpExchangeServer, ServerConfig, SpawnedServer, spawn_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Hang detector for things that must happen within a (short, configured) limit.
const DEADLINE: Duration = Duration::from_secs(30);

const USER: &str = r#"{\"uid\":\"00000000-0000-4000-8000-0000000004{N}\",\"name\":null,\"role\":\"user\"}"#;

fn user(n: u32) -> String {
    USER.replace("{N}", &format!("{n:02}"))
}

async fn server(toml: &str) -> SpawnedServer {
    let config = ServerConfig::from_toml(&format!("port = 0\n{toml}")).expect("test config");
    spawn_server(HttpExchangeServer::new(config).expect("server")).await.expect("start server")
}

fn address(server: &SpawnedServer) -> String {
    server.url().trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// Reads until the server closes the connection; the bytes it sent. Fails after [`DEADLINE`].
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return bytes,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the server kept the connection open for {DEADLINE:?}"),
        }
    }
}

/// The `mailbox` field of a request body: a JSON string holding the id's JSON.
fn mailbox_field(id: &EntityId) -> String {
    serde_json::to_string(&id.to_json()).unwrap()
}

fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Silent connections, heads trickled a byte at a time and idle keep-alive connections are all
/// closed once the header timeout passes; the trickle does not extend it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_heads_are_closed_after_the_header_timeout() {
    let server = server("[limits]\nheader_timeout_s = 1").await;
    let address = address(&server);
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(&address).await.unwrap());
    }
    let head = b"GET /mailbox HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let trickle = {
        let address = address.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            let started = Instant::now();
            for byte in head.iter().cycle() {
                if stream.write_all(&[*byte]).await.is_err() {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(started.elapsed() < DEADLINE, "a trickled head was held for {DEADLINE:?}");
            }
            unreachable!()
        })
    };
    // A connection that served one request, then idles.
    let mut kept = TcpStream::connect(&address).await.unwrap();
    let body = format!(r#"{{"mailbox": "{}"}}"#, user(1));
    kept.write_all(request("GET", "/mailbox", &body).as_bytes()).await.unwrap();
    let answer = until_closed(&mut kept).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    for stream in &mut silent {
        assert!(until_closed(stream).await.is_empty());
    }
    let held = trickle.await.unwrap();
    assert!(held >= Duration::from_millis(900), "closed after {held:?}, before the timeout");
}

/// A body that does not arrive within the body timeout is answered 408 and the connection
/// closed, even when it trickles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_answered_408_and_closed() {
    let server = server("[limits]\nbody_timeout_s = 1").await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream
        .write_all(b"PUT /message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"message\": \"")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let (mut read, mut write) = stream.into_split();
        let feeding = async {
            loop {
                if write.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let mut answer = Vec::new();
        tokio::select! {
            () = feeding => {}
            _ = read.read_to_end(&mut answer) => {}
        }
        answer
    });
    let answer = tokio::time::timeout(DEADLINE, writer).await.expect("the slow body was held").unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // The client still works.
    let client = server.client();
    client.register_user(None).await.unwrap();
}

/// Past the connection cap, new connections get a clean 503 and are closed; connections
/// already served keep working, and once others close, new ones are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_cleanly() {
    let server = server("[limits]\nmax_connections = 20").await;
    let address = address(&server);
    // The in-process client holds one pooled connection already; take the rest.
    let mut kept = TcpStream::connect(&address).await.unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let mut first = [0u8; 12];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {
                assert_eq!(&first[..n], &b"HTTP/1.1 503"[..n], "{:?}", String::from_utf8_lossy(&first[..n]));
                assert!(until_closed(&mut stream).await.windows(11).any(|w| w == b"retry-after"));
                refused += 1;
            }
            Ok(_) => panic!("a connection was closed without an answer"),
            Err(_) => held.push(stream),
        }
    }
    assert!(refused >= 20, "only {refused} of 40 connections past the cap were refused");
    assert!(held.len() <= 19, "{} connections held past a cap of 20", held.len());
    // A connection the server already accepted is still served, twice (keep-alive).
    for _ in 0..2 {
        let body = format!(r#"{{"mailbox": "{}"}}"#, user(2));
        kept.write_all(request("GET", "/mailbox", &body).as_bytes()).await.unwrap();
        let mut answer = [0u8; 512];
        let n = tokio::time::timeout(DEADLINE, kept.read(&mut answer)).await.unwrap().unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
    }
    drop(held);
    drop(kept);
    let started = Instant::now();
    loop {
        let fresh = exchange_http::HttpExchange::new(server.url(), exchange_http::HttpOptions::default()).unwrap();
        if fresh.register_user(None).await.is_ok() {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "no connection was served after the others closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A shutdown ends after its deadline even while clients hold half a request head, half a
/// body, or an event stream they do not read; their connections are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drops_stuck_clients_after_its_deadline() {
    let config = ServerConfig::from_toml("port = 0\n[limits]\nshutdown_timeout_s = 1").unwrap();
    let bound = HttpExchangeServer::new(config).unwrap().bind().await.unwrap();
    let address = bound.local_addr().to_string();
    let url = bound.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    let client = exchange_http::HttpExchange::connect(&url).await.unwrap();
    let reader = client.register_user(None).await.unwrap();
    let payload = "p".repeat(4096);
    for _ in 0..300 {
        let body = Body::ActionRequest(exchange_core::ActionRequest::json("echo", &[&payload], &()).unwrap());
        client.send(Message::request(reader.clone(), reader.clone(), body)).await.unwrap();
    }
    let mut stuck = Vec::new();
    let mut half_head = TcpStream::connect(&address).await.unwrap();
    half_head.write_all(b"PUT /message HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    stuck.push(half_head);
    let mut half_body = TcpStream::connect(&address).await.unwrap();
    half_body.write_all(b"PUT /message HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mes").await.unwrap();
    stuck.push(half_body);
    let mut unread = TcpStream::connect(&address).await.unwrap();
    let listen = format!(r#"{{"mailbox": {}, "timeout": 60}}"#, mailbox_field(&reader.clone().into()));
    unread.write_all(request("GET", "/mailbox/listen", &listen).as_bytes()).await.unwrap();
    stuck.push(unread);
    // Let the server take all three in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, serving).await.expect("shutdown hung").unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "ended after {:?}, before its deadline",
        started.elapsed()
    );
    for stream in &mut stuck {
        until_closed(stream).await;
    }
}

/// Durations from the network or the config are validated or saturated: nothing overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_are_refused_or_saturated() {
    for toml in ["listen_timeout_s = 1e19", "listen_timeout_s = inf", "[limits]\nheader_timeout_s = 1e19"] {
        let refused = ServerConfig::from_toml(toml);
        assert!(refused.is_err(), "{toml} accepted");
    }
    let server = server("listen_timeout_s = 86400").await;
    let client = server.client();
    let id = client.register_user(None).await.unwrap();
    let mailbox = mailbox_field(&id.clone().into());
    let address = address(&server);
    for timeout in ["1e19", "1e308", "-1", "0"] {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let body = format!(r#"{{"mailbox": {mailbox}, "timeout": {timeout}}}"#);
        let mut head = request("GET", "/message", &body);
        head = head.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = until_closed(&mut stream).await;
        assert!(answer.starts_with(b"HTTP/1.1 400"), "timeout {timeout}: {}", String::from_utf8_lossy(&answer));
    }
    // The largest accepted timeout waits without overflowing; a message ends the wait.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let body = format!(r#"{{"mailbox": {mailbox}, "timeout": 86400}}"#);
    stream.write_all(request("GET", "/message", &body).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send(Message::request(id.clone(), id.clone(), Body::PingRequest)).await.unwrap();
    let mut answer = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut answer)).await.unwrap().unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
}

/// Sends `count` pings into `dest`'s mailbox, in order unless `concurrently`; their tags.
async fn fill(
    client: &exchange_http::HttpExchange,
    dest: &exchange_core::UserId,
    count: usize,
    concurrently: bool,
) -> Vec<uuid::Uuid> {
    let messages: Vec<Message> =
        (0..count).map(|_| Message::request(dest.clone(), dest.clone(), Body::PingRequest)).collect();
    let tags = messages.iter().map(Message::tag).collect();
    if concurrently {
        let sends = messages.chunks(count.div_ceil(8)).map(|chunk| async move {
            for message in chunk {
                client.send(message.clone()).await.unwrap();
            }
        });
        futures::future::join_all(sends).await;
    } else {
        for message in messages {
            client.send(message).await.unwrap();
        }
    }
    tags
}

/// A client that opens an event stream and reads nothing (academy-py's kind: no
/// acknowledgements) takes only what fits the connection's small buffers out of the mailbox,
/// so closing it loses a bounded number of messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_event_stream_takes_a_bounded_number_of_messages() {
    const QUEUED: usize = 20_000;
    let server = server("").await;
    let client = server.client();
    let reader = client.register_user(None).await.unwrap();
    fill(client, &reader, QUEUED, true).await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    let body = format!(r#"{{"mailbox": {}, "timeout": 60}}"#, mailbox_field(&reader.clone().into()));
    stream.write_all(request("GET", "/mailbox/listen", &body).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(stream);
    // The stream notices the closed connection at its next write at the latest (a ping).
    let started = Instant::now();
    let mut last = None;
    loop {
        let queued = client.stats(&reader.clone().into()).await.unwrap().queued;
        if last == Some(queued) && started.elapsed() > Duration::from_secs(1) {
            let lost = QUEUED as u64 - queued;
            assert!(lost <= 1_000, "{lost} of {QUEUED} messages left the queue into an unread stream");
            return;
        }
        last = Some(queued);
        assert!(started.elapsed() < DEADLINE, "the queue kept shrinking");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Our client acknowledges what it handed out: a handle that closes after taking some messages
/// leaves exactly the rest, in order, for the next reader (another client here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_handle_leaves_exactly_the_rest() {
    let server = server("").await;
    let client = server.client();
    let reader = client.register_user(None).await.unwrap();
    let tags = fill(client, &reader, 2_000, false).await;
    let first = client.open_mailbox(&reader.clone().into()).await.unwrap();
    for tag in &tags[..100] {
        assert_eq!(first.recv(Some(DEADLINE)).await.unwrap().tag(), *tag);
    }
    first.close().await.unwrap();
    let other = exchange_http::HttpExchange::connect(server.url()).await.unwrap();
    let second = other.open_mailbox(&reader.clone().into()).await.unwrap();
    for tag in &tags[100..] {
        assert_eq!(second.recv(Some(DEADLINE)).await.unwrap().tag(), *tag, "a message was lost or reordered");
    }
    let extra = second.recv(Some(Duration::from_millis(300))).await;
    assert!(matches!(extra, Err(exchange_core::Error::Timeout { .. })), "a message came twice: {extra:?}");
}

/// A client that dies without closing (its runtime dropped mid-stream) loses nothing it had not
/// handed out: the server puts every unacknowledged message back, and the next reader gets them
/// (plus, at most, redeliveries of what the dead client handed out after its last acknowledgement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_client_loses_no_message() {
    let server = server("").await;
    let client = server.client();
    let reader = client.register_user(None).await.unwrap();
    let tags = fill(client, &reader, 2_000, false).await;
    let (url, id) = (server.url().to_owned(), reader.clone());
    let handed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let handed = runtime.block_on(async {
            let dying = exchange_http::HttpExchange::connect(&url).await.unwrap();
            let inbox = dying.open_mailbox(&id.into()).await.unwrap();
            let mut handed = Vec::new();
            for _ in 0..100 {
                handed.push(inbox.recv(Some(DEADLINE)).await.unwrap().tag());
            }
            // Leak the handle so nothing runs on the way out: the runtime just stops.
            std::mem::forget(inbox);
            std::mem::forget(dying);
            handed
        });
        runtime.shutdown_background();
        handed
    })
    .join()
    .unwrap();
    let other = exchange_http::HttpExchange::connect(server.url()).await.unwrap();
    let inbox = other.open_mailbox(&reader.clone().into()).await.unwrap();
    let mut got = std::collections::HashSet::new();
    let rest: std::collections::HashSet<_> = tags[100..].iter().copied().collect();
    while !rest.is_subset(&got) {
        match inbox.recv(Some(DEADLINE)).await {
            Ok(message) => {
                assert!(got.insert(message.tag()), "a message came twice to the same client");
            }
            Err(e) => panic!("{} of {} messages never arrived: {e}", rest.difference(&got).count(), rest.len()),
        }
    }
    let redelivered: Vec<_> = got.iter().filter(|t| !rest.contains(t)).collect();
    assert!(redelivered.iter().all(|t| handed.contains(t)), "received a message nobody sent");
}
