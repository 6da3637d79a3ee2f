//! The Redis exchange under faults (server crash and restart, killed connections, no server),
//! plus its key layout, namespaces and taken-ahead messages. Each test runs its own
//! `redis-server`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use exchange_conformance::redis_server::RedisServer;
use exchange_core::{AgentRegistration, Body, EntityId, Error, Exchange, MailboxStatus, Message};
use exchange_redis::RedisExchange;
use uuid::Uuid;

/// Receive limit for a message that must arrive: a hang detector with a wide margin.
const PROMPT: Duration = Duration::from_secs(30);

fn ping(src: impl Into<EntityId>, dest: impl Into<EntityId>) -> Message {
    Message::request(src, dest, Body::PingRequest)
}

/// A plain connection for inspecting and preparing the keyspace. redis-rs's default 500 ms
/// response timeout would fail slow setup scripts on a busy machine: this one waits.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection_with_config(&config).await.unwrap()
}

/// Kill -9 and restart (AOF, `appendfsync always`) while a receiver is blocked and senders
/// send: every message whose send returned Ok is received exactly once, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_loses_no_acknowledged_message() {
    let mut server = RedisServer::start_durable();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let sender = ex.register_user(Some("sender")).await.unwrap();
    let sink = ex.register_user(Some("sink")).await.unwrap();
    let parked = ex.register_user(Some("parked")).await.unwrap();
    // Messages that wait in a queue across the crash.
    let mut parked_tags = Vec::new();
    for _ in 0..20 {
        let m = ping(sender.clone(), parked.clone());
        parked_tags.push(m.tag());
        ex.send(m).await.unwrap();
    }

    let inbox = ex.open_mailbox(&sink.clone().into()).await.unwrap();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (received, stop) = (received.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match inbox.recv(Some(Duration::from_millis(500))).await {
                    Ok(m) => received.lock().unwrap().push(m.tag()),
                    Err(Error::Timeout { .. }) => {}
                    Err(e) => panic!("receive failed across the restart: {e}"),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sending = Arc::new(AtomicBool::new(true));
    let senders = {
        let (ex, sender, sink, sending) = (ex.clone(), sender.clone(), sink.clone(), sending.clone());
        tokio::spawn(async move {
            let (mut ok, mut unknown) = (Vec::new(), Vec::new());
            while sending.load(Ordering::SeqCst) {
                let m = ping(sender.clone(), sink.clone());
                let tag = m.tag();
                match tokio::time::timeout(Duration::from_secs(20), ex.send(m)).await {
                    Ok(Ok(())) => ok.push(tag),
                    Ok(Err(e)) => {
                        assert!(e.is_retryable(), "unexpected send error {e}");
                        unknown.push(tag);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => panic!("send hung across the restart"),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, unknown)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sending.store(false, Ordering::SeqCst);
    let (ok, unknown) = senders.await.unwrap();
    assert!(!ok.is_empty() && !unknown.is_empty(), "the senders did not run across the outage");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: HashSet<Uuid> = received.lock().unwrap().iter().copied().collect();
        if ok.iter().all(|t| got.contains(t)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    receiver.await.unwrap();

    let received = received.lock().unwrap().clone();
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for tag in &received {
        *counts.entry(*tag).or_default() += 1;
    }
    let missing = ok.iter().filter(|t| !counts.contains_key(t)).count();
    assert_eq!(missing, 0, "{missing} of {} acknowledged messages lost; log:\n{}", ok.len(), server.log());
    assert!(counts.values().all(|&n| n == 1), "a message was received twice");
    let sent: HashSet<Uuid> = ok.iter().chain(&unknown).copied().collect();
    assert!(received.iter().all(|t| sent.contains(t)), "received a message nobody sent");

    let parked_inbox = ex.open_mailbox(&parked.into()).await.unwrap();
    for tag in parked_tags {
        assert_eq!(parked_inbox.recv(Some(PROMPT)).await.unwrap().tag(), tag);
    }
}

/// No server: a clear error naming the URL, in bounded time.
#[tokio::test]
async fn unreachable_server_is_a_prompt_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    let result = RedisExchange::builder(&url).connect_timeout(Duration::from_secs(1)).connect().await;
    let elapsed = started.elapsed();
    match result {
        Err(e @ Error::Unavailable { .. }) => assert!(e.to_string().contains(&url), "{e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    // The facade's form and a malformed URL.
    assert!(matches!(RedisExchange::connect("redis://[::1").await, Err(Error::Config { .. })));
}

/// Connections killed under running commands (`CLIENT KILL`): errors, never a hang; the
/// exchange works again afterwards. A send is bounded by the reconnect attempts (3 x the 5 s
/// connect timeout) plus the 30 s response timeout: the hang detector is above that sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_fail_commands_without_hanging() {
    let server = RedisServer::start();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let a = ex.register_user(None).await.unwrap();
    let b = ex.register_user(None).await.unwrap();
    let idle = ex.register_user(None).await.unwrap();
    let idle_inbox = ex.open_mailbox(&idle.clone().into()).await.unwrap();
    let blocked = tokio::spawn(async move { idle_inbox.recv(Some(Duration::from_secs(3))).await });
    let payload = "x".repeat(64 * 1024);
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (ex, a, b, payload, running) = (ex.clone(), a.clone(), b.clone(), payload.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            while running.load(Ordering::SeqCst) {
                let body = Body::ActionRequest(exchange_core::ActionRequest::json("echo", &[&payload], &()).unwrap());
                match tokio::time::timeout(
                    Duration::from_secs(90),
                    ex.send(Message::request(a.clone(), b.clone(), body)),
                )
                .await
                {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(e)) => {
                        assert!(e.is_retryable(), "{e}");
                        failed += 1;
                    }
                    Err(_) => panic!("send hung after CLIENT KILL"),
                }
            }
            (ok, failed)
        }));
    }
    // Keep the target queue short so Redis' memory does not grow with the machine's speed.
    let drain = {
        let (ex, b, running) = (ex.clone(), b.clone(), running.clone());
        tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                let Ok(inbox) = ex.open_mailbox(&b.clone().into()).await else { continue };
                while running.load(Ordering::SeqCst) {
                    if let Err(e) = inbox.recv(Some(Duration::from_millis(200))).await {
                        if !matches!(e, Error::Timeout { .. }) {
                            break;
                        }
                    }
                }
            }
        })
    };
    let mut admin = raw(&server).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    running.store(false, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed += f;
    }
    assert!(failed > 0 && ok > 0, "ok {ok}, failed {failed}");
    tokio::time::timeout(Duration::from_secs(90), drain).await.expect("draining receive hung").unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), blocked).await.expect("blocked receive hung").unwrap();
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    // Everything works again.
    let inbox = ex.open_mailbox(&idle.clone().into()).await.unwrap();
    ex.send(ping(a, idle)).await.unwrap();
    inbox.recv(Some(PROMPT)).await.unwrap();
}

/// Keys, values and counters exactly as Academy's transport writes them (spec §4.1).
#[tokio::test]
async fn keys_follow_academy_layout() {
    let server = RedisServer::start();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let mut conn = raw(&server).await;
    let user = ex.register_user(Some("alice")).await.unwrap();
    let agent = ex
        .register_agent(AgentRegistration::new(["__main__.Calculator", "academy.agent.Agent"]).with_name("calc"))
        .await
        .unwrap();
    let get = async |conn: &mut redis::aio::MultiplexedConnection, key: String| -> Option<String> {
        redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
    };
    assert_eq!(get(&mut conn, format!("active:{}", user.uid())).await.as_deref(), Some("ACTIVE"));
    assert_eq!(
        get(&mut conn, format!("agent:{}", agent.uid())).await.as_deref(),
        Some("__main__.Calculator,academy.agent.Agent")
    );
    let request = ping(user.clone(), agent.clone());
    ex.send(request.clone()).await.unwrap();
    let tracked = get(&mut conn, format!("request:{}:{}", agent.uid(), request.tag())).await.unwrap();
    assert_eq!(tracked, serde_json::to_string(&request.header).unwrap());
    assert_eq!(get(&mut conn, format!("outgoing:{}", user.uid())).await.as_deref(), Some("1"));
    let queued: Vec<String> =
        redis::cmd("LRANGE").arg(format!("queue:{}", agent.uid())).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(queued, vec![request.to_json()]);

    ex.update_heartbeat(&user.clone().into()).await.unwrap();
    let beat = get(&mut conn, format!("heartbeat:{}", user.uid())).await.unwrap();
    let (secs, frac) = beat.split_once('.').expect("seconds.fraction");
    assert!(secs.len() >= 10 && secs.bytes().all(|b| b.is_ascii_digit()), "{beat}");
    assert!((1..=6).contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit()), "{beat}");
    // A heartbeat for an id nobody registered writes nothing (Academy's would leave a key
    // without expiry).
    let ghost = exchange_core::UserId::new(None);
    ex.update_heartbeat(&ghost.clone().into()).await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("*{}*", ghost.uid())).query_async(&mut conn).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    ex.terminate(&agent.clone().into()).await.unwrap();
    assert_eq!(get(&mut conn, format!("active:{}", agent.uid())).await.as_deref(), Some("INACTIVE"));
    assert_eq!(get(&mut conn, format!("agent:{}", agent.uid())).await, None);
    assert_eq!(get(&mut conn, format!("request:{}:{}", agent.uid(), request.tag())).await, None);
    let closed: Vec<String> =
        redis::cmd("LRANGE").arg(format!("queue:{}", agent.uid())).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(closed, vec!["<CLOSED>".to_owned()]);
    let notice: Vec<String> =
        redis::cmd("LRANGE").arg(format!("queue:{}", user.uid())).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(notice, vec![Message::terminated_notice(&request.header).unwrap().to_json()]);
}

/// A send "from" an id nobody registered, small or large (the `MULTI` path), is delivered but
/// counts nothing: it leaves no `outgoing:` or `completions:` key, which would never expire.
#[tokio::test]
async fn unknown_src_leaves_no_counter() {
    let server = RedisServer::start();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let mut conn = raw(&server).await;
    let dest = ex.register_user(None).await.unwrap();
    let ghost = exchange_core::UserId::new(None);
    let request = ping(ghost.clone(), dest.clone());
    ex.send(request.clone()).await.unwrap();
    let large = exchange_core::ActionRequest::json("echo", &["x".repeat(64 * 1024)], &serde_json::json!({})).unwrap();
    ex.send(Message::request(ghost.clone(), dest.clone(), Body::ActionRequest(large))).await.unwrap();
    let mut response = request.response(Body::SuccessResponse).unwrap();
    response.header.dest = dest.clone().into();
    ex.send(response).await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("*{}*", ghost.uid())).query_async(&mut conn).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let queued: i64 = redis::cmd("LLEN").arg(format!("queue:{}", dest.uid())).query_async(&mut conn).await.unwrap();
    assert_eq!(queued, 3, "the messages themselves are delivered, as Academy's transport does");
    // A registered sender is counted, on both paths.
    let user = ex.register_user(None).await.unwrap();
    ex.send(ping(user.clone(), dest.clone())).await.unwrap();
    let large = exchange_core::ActionRequest::json("echo", &["x".repeat(64 * 1024)], &serde_json::json!({})).unwrap();
    ex.send(Message::request(user.clone(), dest, Body::ActionRequest(large))).await.unwrap();
    let outgoing: Option<String> =
        redis::cmd("GET").arg(format!("outgoing:{}", user.uid())).query_async(&mut conn).await.unwrap();
    assert_eq!(outgoing.as_deref(), Some("2"));
}

/// Namespaces keep clients of one server apart; the default is Academy's unprefixed layout.
#[tokio::test]
async fn namespaces_isolate_clients() {
    let server = RedisServer::start();
    let plain = RedisExchange::connect(&server.url()).await.unwrap();
    let a = RedisExchange::builder(&server.url()).namespace("team-a").connect().await.unwrap();
    let b = RedisExchange::builder(&server.url()).namespace("team-b").connect().await.unwrap();
    assert_eq!(a.namespace(), Some("team-a"));
    let behavior = format!("t{}.Worker", Uuid::new_v4().simple());
    let worker: EntityId = a.register_agent(AgentRegistration::new([behavior.clone()])).await.unwrap().into();
    assert_eq!(a.discover(&behavior, false).await.unwrap().len(), 1);
    assert!(b.discover(&behavior, false).await.unwrap().is_empty());
    assert!(plain.discover(&behavior, false).await.unwrap().is_empty());
    assert_eq!(b.status(&worker).await.unwrap(), MailboxStatus::Missing);
    assert!(matches!(b.open_mailbox(&worker).await, Err(Error::BadEntityId { .. })));
    let user = plain.register_user(None).await.unwrap();
    assert_eq!(a.status(&user.clone().into()).await.unwrap(), MailboxStatus::Missing);

    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    assert!(keys.contains(&format!("team-a:active:{}", worker.uid())), "{keys:?}");
    assert!(keys.contains(&format!("team-a:agent:{}", worker.uid())), "{keys:?}");
    assert!(keys.contains(&format!("active:{}", user.uid())), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("team-a:") || k.starts_with("active:")), "{keys:?}");
}

/// Messages a handle took ahead go back to the queue when it closes, and are dropped when
/// another client terminates the mailbox.
#[tokio::test]
async fn taken_ahead_messages_are_returned_or_dropped() {
    let server = RedisServer::start();
    let strict = RedisExchange::builder(&server.url()).prefetch_max_age(Duration::ZERO).connect().await.unwrap();
    let other = RedisExchange::connect(&server.url()).await.unwrap();
    let src = strict.register_user(None).await.unwrap();
    let dest = strict.register_user(None).await.unwrap();
    let sent: Vec<Message> = (0..10).map(|_| ping(src.clone(), dest.clone())).collect();
    for m in &sent {
        strict.send(m.clone()).await.unwrap();
    }
    let first = strict.open_mailbox(&dest.clone().into()).await.unwrap();
    assert_eq!(first.recv(Some(PROMPT)).await.unwrap().tag(), sent[0].tag());
    let stats = strict.stats(&dest.clone().into()).await.unwrap();
    assert_eq!((stats.queued, stats.in_progress), (9, 1), "taken-ahead messages count as queued");
    first.close().await.unwrap();
    let second = other.open_mailbox(&dest.clone().into()).await.unwrap();
    for m in &sent[1..] {
        assert_eq!(second.recv(Some(PROMPT)).await.unwrap().tag(), m.tag());
    }

    // Dropped without close: also returned.
    for m in &sent {
        strict.send(m.clone()).await.unwrap();
    }
    let third = strict.open_mailbox(&dest.clone().into()).await.unwrap();
    third.recv(Some(PROMPT)).await.unwrap();
    drop(third);
    for m in &sent[1..] {
        assert_eq!(second.recv(Some(PROMPT)).await.unwrap().tag(), m.tag());
    }

    // Terminated by another client: the taken-ahead messages are never handed out.
    for m in &sent {
        strict.send(m.clone()).await.unwrap();
    }
    let fourth = strict.open_mailbox(&dest.clone().into()).await.unwrap();
    fourth.recv(Some(PROMPT)).await.unwrap();
    other.terminate(&dest.clone().into()).await.unwrap();
    let after = fourth.recv(Some(PROMPT)).await;
    assert!(matches!(after, Err(Error::MailboxTerminated { .. })), "{after:?}");
}

/// `redis+unix://` URLs reach a server on its Unix socket.
#[tokio::test]
async fn unix_socket_urls_connect() {
    let socket = std::env::temp_dir().join(format!("exchange-redis-{}.sock", Uuid::new_v4().simple()));
    let path = socket.to_str().unwrap().to_owned();
    let server = RedisServer::start_with(&["--save", "", "--appendonly", "no", "--unixsocket", &path]);
    let ex = RedisExchange::connect(&format!("redis+unix://{path}")).await.unwrap();
    let user: EntityId = ex.register_user(None).await.unwrap().into();
    assert_eq!(ex.status(&user).await.unwrap(), MailboxStatus::Active);
    let inbox = ex.open_mailbox(&user).await.unwrap();
    ex.send(ping(user.clone(), user.clone())).await.unwrap();
    inbox.recv(Some(PROMPT)).await.unwrap();
    drop(server);
    let _ = std::fs::remove_file(&socket);
}

/// Large messages (pushed by a plain `RPUSH` inside a transaction) keep every send rule.
#[tokio::test]
async fn large_messages_keep_send_semantics() {
    let server = RedisServer::start();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let mut conn = raw(&server).await;
    let user = ex.register_user(None).await.unwrap();
    let target = ex.register_user(None).await.unwrap();
    let inbox = ex.open_mailbox(&target.clone().into()).await.unwrap();
    let text = "y".repeat(100_000);
    let big = |dest: EntityId| {
        let body = Body::ActionRequest(exchange_core::ActionRequest::json("echo", &[&text], &()).unwrap());
        Message::request(user.clone(), dest, body)
    };
    let request = big(target.clone().into());
    ex.send(request.clone()).await.unwrap();
    let got = inbox.recv(Some(PROMPT)).await.unwrap();
    assert_eq!(got.to_json(), request.to_json());
    let tracked: Option<String> = redis::cmd("GET")
        .arg(format!("request:{}:{}", target.uid(), request.tag()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(tracked.is_some(), "large request tracked");

    let ghost: EntityId = exchange_core::AgentId::new(None).into();
    assert!(matches!(ex.send(big(ghost.clone())).await, Err(Error::BadEntityId { .. })));
    let exists: i64 = redis::cmd("EXISTS").arg(format!("queue:{}", ghost.uid())).query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 0, "no queue created for an unknown mailbox");

    ex.terminate(&target.clone().into()).await.unwrap();
    assert!(matches!(ex.send(big(target.clone().into())).await, Err(Error::MailboxTerminated { .. })));
    let queue: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("queue:{}", target.uid()))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(queue, vec!["<CLOSED>".to_owned()]);
    let asked = Message::request(target.clone(), user.clone(), Body::PingRequest);
    let answer = exchange_core::ActionResponse::json(&text).unwrap();
    let response = asked.response(Body::ActionResponse(answer)).unwrap();
    assert!(matches!(ex.send(response).await, Err(Error::MailboxTerminated { .. })));
}

/// Passwords, ACL users and database numbers in the URL; the password never shows.
#[tokio::test]
async fn url_credentials_and_database() {
    let server = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--requirepass",
        "s3cret",
        "--user",
        "alice",
        "on",
        ">wonder",
        "~*",
        "&*",
        "+@all",
    ]);
    let port = server.port();
    match RedisExchange::connect(&format!("redis://127.0.0.1:{port}")).await {
        Err(e @ Error::Unavailable { .. }) => assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}"),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
    match RedisExchange::connect(&format!("redis://alice:wrong@127.0.0.1:{port}")).await {
        Err(e) => assert!(!e.to_string().contains("wrong"), "password shown in {e}"),
        Ok(_) => panic!("a wrong password connected"),
    }
    let ex = RedisExchange::connect(&format!("redis://:s3cret@127.0.0.1:{port}/2")).await.unwrap();
    assert!(!format!("{ex:?}").contains("s3cret"), "{ex:?}");
    let user = ex.register_user(None).await.unwrap();
    let alice = RedisExchange::connect(&format!("redis://alice:wonder@127.0.0.1:{port}/2")).await.unwrap();
    assert_eq!(alice.status(&user.clone().into()).await.unwrap(), MailboxStatus::Active);
    let db0 = RedisExchange::connect(&format!("redis://alice:wonder@127.0.0.1:{port}")).await.unwrap();
    assert_eq!(db0.status(&user.into()).await.unwrap(), MailboxStatus::Missing);
}

/// `rediss://` with a private CA: the whole round trip over TLS.
#[tokio::test]
async fn tls_urls_connect_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the TLS test needs the openssl command (apt-get install openssl)");
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca"]
            .into_iter()
            .chain(["-keyout", &path("ca.key"), "-out", &path("ca.pem")])
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &path("server.key"),
        "-out",
        &path("server.csr"),
    ]);
    std::fs::write(path("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &path("ext.cnf"),
        "-out",
        &path("server.pem"),
    ]);
    let server =
        RedisServer::start_tls(std::path::Path::new(&path("server.pem")), std::path::Path::new(&path("server.key")));
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let ca = std::fs::read(path("ca.pem")).unwrap();
    let ex = RedisExchange::builder(&url).tls_root_certificate(ca).connect().await.unwrap();
    let user: EntityId = ex.register_user(None).await.unwrap().into();
    let inbox = ex.open_mailbox(&user).await.unwrap();
    ex.send(ping(user.clone(), user.clone())).await.unwrap();
    inbox.recv(Some(PROMPT)).await.unwrap();
    // Without the CA the server's certificate is not trusted: a clear error, no hang.
    let untrusted = RedisExchange::builder(&url).connect_timeout(Duration::from_secs(2)).connect().await;
    assert!(matches!(untrusted, Err(Error::Unavailable { .. })), "{untrusted:?}");
}

/// A receive keeps reconnecting for `reconnect_timeout`, then reports the lost server; sends
/// fail at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_server_is_reported_after_reconnect_timeout() {
    let mut server = RedisServer::start();
    let ex = RedisExchange::builder(&server.url()).reconnect_timeout(Duration::from_secs(1)).connect().await.unwrap();
    let user: EntityId = ex.register_user(None).await.unwrap().into();
    let inbox = ex.open_mailbox(&user).await.unwrap();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let result = inbox.recv(Some(Duration::from_secs(30))).await;
        (result, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    let (result, waited) = tokio::time::timeout(Duration::from_secs(15), waiting).await.expect("receive hung").unwrap();
    assert!(matches!(result, Err(Error::Unavailable { .. })), "{result:?}");
    assert!(waited < Duration::from_secs(10), "reported after {waited:?}");
    let sent =
        tokio::time::timeout(Duration::from_secs(10), ex.send(ping(user.clone(), user))).await.expect("send hung");
    assert!(matches!(sent, Err(Error::Unavailable { .. })), "{sent:?}");
}

/// In a big keyspace, terminate and stats walk the request keys over several bounded scripts
/// and still answer and count every pending request.
#[tokio::test]
async fn big_keyspaces_are_scanned_in_steps() {
    let server = RedisServer::start();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let mut conn = raw(&server).await;
    let _: i64 = redis::cmd("EVAL")
        .arg("for i = 1, 60000 do redis.call('SET', 'filler:' .. i, 'x') end return 1")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let user = ex.register_user(None).await.unwrap();
    let agent = ex.register_agent(AgentRegistration::new(["test.Busy"])).await.unwrap();
    let inbox = ex.open_mailbox(&user.clone().into()).await.unwrap();
    let mut tags = Vec::new();
    for _ in 0..40 {
        let m = ping(user.clone(), agent.clone());
        tags.push(m.tag());
        ex.send(m).await.unwrap();
    }
    let stats = ex.stats(&agent.clone().into()).await.unwrap();
    assert_eq!((stats.incoming, stats.queued), (40, 40));
    ex.terminate(&agent.into()).await.unwrap();
    let mut answered = Vec::new();
    for _ in 0..40 {
        answered.push(inbox.recv(Some(PROMPT)).await.unwrap().tag());
    }
    answered.sort();
    tags.sort();
    assert_eq!(answered, tags);
}

/// A receive with a zero or tiny timeout takes a waiting message without blocking.
#[tokio::test]
async fn tiny_timeouts_take_waiting_messages() {
    let server = RedisServer::start();
    let ex = RedisExchange::connect(&server.url()).await.unwrap();
    let user: EntityId = ex.register_user(None).await.unwrap().into();
    let inbox = ex.open_mailbox(&user).await.unwrap();
    assert!(matches!(inbox.recv(Some(Duration::from_micros(100))).await, Err(Error::Timeout { .. })));
    let sent = ping(user.clone(), user.clone());
    ex.send(sent.clone()).await.unwrap();
    let mut got = None;
    for _ in 0..100 {
        match inbox.recv(Some(Duration::from_micros(500))).await {
            Ok(m) => {
                got = Some(m);
                break;
            }
            Err(Error::Timeout { .. }) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got.expect("the waiting message").tag(), sent.tag());
}
