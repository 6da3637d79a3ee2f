//! Delivery: order, concurrency, exact round trips (checklist items 10 and 11).

use std::collections::HashMap;
use std::sync::Arc;

use exchange_core::{Body, EntityId, Error, Exchange, Message, UserId};
use uuid::Uuid;

use crate::TestBackend;
use crate::fixtures;
use crate::support::{PROMPT, assert_empty, assert_same_json, recv, recv_ok};

/// Item 10: one sender's messages arrive in the order sent.
pub async fn messages_are_fifo(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let a = ex.register_user(None).await.unwrap();
    let b = ex.register_user(None).await.unwrap();
    let inbox = ex.open_mailbox(&b.clone().into()).await.unwrap();
    let sent: Vec<Message> = (0..100).map(|_| Message::request(a.clone(), b.clone(), Body::PingRequest)).collect();
    for m in &sent {
        ex.send(m.clone()).await.unwrap();
    }
    for m in &sent {
        assert_eq!(recv_ok(&*inbox).await.tag(), m.tag());
    }
    assert_empty(&*inbox).await;
}

/// Item 10 under load: 16 senders x 1,000 messages into one mailbox; nothing lost or
/// duplicated, and each sender's order kept.
pub async fn concurrent_senders_lose_nothing(backend: &impl TestBackend) {
    const SENDERS: usize = 16;
    const PER_SENDER: usize = 1_000;
    let ex = backend.client().await;
    let sink = ex.register_user(Some("sink")).await.unwrap();
    let inbox = ex.open_mailbox(&sink.clone().into()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let client = backend.client().await;
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let me = client.register_user(None).await.unwrap();
            let mut tags = Vec::with_capacity(PER_SENDER);
            for _ in 0..PER_SENDER {
                let m = Message::request(me.clone(), sink.clone(), Body::PingRequest);
                tags.push(m.tag());
                client.send(m).await.unwrap();
            }
            (me, tags)
        }));
    }
    let mut received: HashMap<UserId, Vec<Uuid>> = HashMap::new();
    for _ in 0..SENDERS * PER_SENDER {
        let m = recv_ok(&*inbox).await;
        let EntityId::UserId(src) = m.header.src.clone() else { panic!("unexpected sender {}", m.header.src) };
        received.entry(src).or_default().push(m.tag());
    }
    for task in tasks {
        let (sender, tags) = task.await.expect("sender task");
        assert_eq!(received.get(&sender), Some(&tags), "messages of {sender} lost, duplicated or reordered");
    }
    assert_empty(&*inbox).await;
}

/// Item 10: with two receivers on one mailbox, each message is delivered exactly once.
pub async fn each_message_goes_to_one_receiver(backend: &impl TestBackend) {
    const N: usize = 200;
    let ex = backend.client().await;
    let a = ex.register_user(None).await.unwrap();
    let b: EntityId = ex.register_user(None).await.unwrap().into();
    let first: Arc<dyn exchange_core::Mailbox> = ex.open_mailbox(&b).await.unwrap().into();
    let second: Arc<dyn exchange_core::Mailbox> = backend.client().await.open_mailbox(&b).await.unwrap().into();
    let mut expected = Vec::new();
    for _ in 0..N {
        let m = Message::request(a.clone(), b.clone(), Body::PingRequest);
        expected.push(m.tag());
        ex.send(m).await.unwrap();
    }
    let drain = |mailbox: Arc<dyn exchange_core::Mailbox>| {
        tokio::spawn(async move {
            let mut tags = Vec::new();
            loop {
                match recv(&*mailbox, Some(std::time::Duration::from_millis(500))).await {
                    Ok(m) => tags.push(m.tag()),
                    Err(Error::Timeout { .. }) => return tags,
                    Err(e) => panic!("receive failed: {e}"),
                }
            }
        })
    };
    let (one, two) = (drain(first), drain(second));
    let mut got = one.await.unwrap();
    got.extend(two.await.unwrap());
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

/// Item 11: every message fixture (every body kind, json and opaque pickle payloads) arrives
/// equal, as a JSON value, to what was sent.
pub async fn every_body_kind_round_trips(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let a = ex.register_user(Some("alice")).await.unwrap();
    let b = ex.register_user(Some("bob")).await.unwrap();
    let inbox = ex.open_mailbox(&b.clone().into()).await.unwrap();
    for (path, text) in fixtures::messages() {
        let mut message = Message::from_json(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        // Address it between live mailboxes; everything else stays as captured.
        message.header.src = a.clone().into();
        message.header.dest = b.clone().into();
        ex.send(message.clone()).await.unwrap_or_else(|e| panic!("{path}: send failed: {e}"));
        let received = recv_ok(&*inbox).await;
        assert_same_json(&message, &received, &path);
    }
}

/// Item 11: a body of a kind no one here knows is passed through unchanged.
pub async fn unknown_body_kinds_pass_through(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let a = ex.register_user(None).await.unwrap();
    let b = ex.register_user(None).await.unwrap();
    let inbox = ex.open_mailbox(&b.clone().into()).await.unwrap();
    let template = Message::request(a, b, Body::PingRequest).to_json();
    let text = template.replace(
        r#""body":{"kind":"ping-request"}"#,
        r#""body":{"kind":"future-request","data":[1, 2.5, "x"],"nested":{"k":null}}"#,
    );
    let message = Message::from_json(&text).unwrap();
    assert!(matches!(message.body, Body::Other(_)));
    ex.send(message.clone()).await.unwrap();
    let received = tokio::time::timeout(PROMPT, inbox.recv(None)).await.expect("in time").unwrap();
    assert_same_json(&message, &received, "unknown body kind");
}

/// Item 15 across the exchange: ids compare by role and uid, never by name.
pub async fn ids_compare_by_role_and_uid(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let named = ex
        .register_agent(exchange_core::AgentRegistration::new([format!("test.Named{}", Uuid::new_v4().simple())]))
        .await
        .unwrap();
    let entity: EntityId = named.clone().into();
    let renamed = exchange_core::AgentId::from_parts(named.uid(), Some("another name"));
    assert_eq!(named, renamed);
    assert_eq!(ex.status(&renamed.into()).await.unwrap(), exchange_core::MailboxStatus::Active);
    let as_user: EntityId = UserId::from_parts(named.uid(), named.name()).into();
    assert_ne!(entity, as_user);
}

/// 1,000 mailboxes registered and open at once all receive.
pub async fn thousand_mailboxes_open_at_once(backend: &impl TestBackend) {
    const N: usize = 1_000;
    let ex = backend.client().await;
    let sender = ex.register_user(None).await.unwrap();
    let mut boxes = Vec::with_capacity(N);
    for _ in 0..N {
        let id = ex.register_user(None).await.unwrap();
        let mailbox = ex.open_mailbox(&id.clone().into()).await.unwrap();
        boxes.push((id, mailbox));
    }
    for (id, _) in &boxes {
        ex.send(Message::request(sender.clone(), id.clone(), Body::PingRequest)).await.unwrap();
    }
    for (id, mailbox) in &boxes {
        assert_eq!(recv_ok(&**mailbox).await.dest(), &EntityId::from(id.clone()));
    }
}

/// Two clients of one exchange see each other's mailboxes and messages.
pub async fn clients_share_one_exchange(backend: &impl TestBackend) {
    let one: Arc<dyn Exchange> = backend.client().await;
    let two: Arc<dyn Exchange> = backend.client().await;
    let a = one.register_user(None).await.unwrap();
    let b = two.register_user(None).await.unwrap();
    let inbox = two.open_mailbox(&b.clone().into()).await.unwrap();
    let m = Message::request(a.clone(), b.clone(), Body::PingRequest);
    one.send(m.clone()).await.unwrap();
    assert_eq!(recv_ok(&*inbox).await.tag(), m.tag());
    two.terminate(&a.clone().into()).await.unwrap();
    assert_eq!(one.status(&a.into()).await.unwrap(), exchange_core::MailboxStatus::Terminated);
}
