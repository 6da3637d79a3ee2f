//! Registering, terminating and the errors around them (checklist items 1 to 9, 18).

use std::time::{Duration, Instant};

use exchange_core::{AgentId, AgentRegistration, Body, EntityId, Error, ErrorCode, Exchange, MailboxStatus, Message};
use uuid::Uuid;

use crate::TestBackend;
use crate::support::{PROMPT, assert_empty, recv, recv_ok};

fn ping(src: impl Into<EntityId>, dest: impl Into<EntityId>) -> Message {
    Message::request(src, dest, Body::PingRequest)
}

async fn agent(exchange: &dyn Exchange, behaviors: &[&str]) -> AgentId {
    exchange.register_agent(AgentRegistration::new(behaviors.iter().copied())).await.expect("register agent")
}

/// Item 1: a registered mailbox is active, with no heartbeat yet.
pub async fn register_user_and_agent_are_active(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user: EntityId = ex.register_user(Some("alice")).await.unwrap().into();
    let agent: EntityId = agent(&*ex, &["demo.Calculator"]).await.into();
    for id in [&user, &agent] {
        assert_eq!(ex.status(id).await.unwrap(), MailboxStatus::Active, "{id}");
        assert_eq!(ex.heartbeat(id).await.unwrap(), None, "{id}: no heartbeat before the first update");
    }
    assert_eq!(user.name(), Some("alice"));
}

/// Registering an existing id again returns it and keeps its behaviours.
pub async fn register_existing_agent_is_a_noop(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let behavior = format!("test.Original{}", Uuid::new_v4().simple());
    let id = agent(&*ex, &[&behavior]).await;
    let again = ex.register_agent(AgentRegistration::new(["test.Other"]).with_id(id.clone())).await.unwrap();
    assert_eq!(again, id);
    assert_eq!(ex.discover(&behavior, false).await.unwrap(), vec![id.clone()]);
    assert_eq!(ex.status(&id.into()).await.unwrap(), MailboxStatus::Active);
}

/// Item 18: re-registering a terminated id leaves it terminated (a gravestone).
pub async fn reregister_terminated_agent_stays_terminated(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let id = agent(&*ex, &["test.Gone"]).await;
    let entity: EntityId = id.clone().into();
    ex.terminate(&entity).await.unwrap();
    ex.register_agent(AgentRegistration::new(["test.Gone"]).with_id(id)).await.unwrap();
    assert_eq!(ex.status(&entity).await.unwrap(), MailboxStatus::Terminated);
}

/// Item 2: every operation on an unknown id says so.
pub async fn unknown_mailbox_is_a_bad_entity(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user = ex.register_user(None).await.unwrap();
    let ghost: EntityId = AgentId::new(Some("ghost")).into();
    assert!(matches!(ex.send(ping(user.clone(), ghost.clone())).await, Err(Error::BadEntityId { .. })));
    assert!(matches!(ex.open_mailbox(&ghost).await, Err(Error::BadEntityId { .. })));
    assert!(matches!(ex.heartbeat(&ghost).await, Err(Error::BadEntityId { .. })));
    assert!(matches!(ex.stats(&ghost).await, Err(Error::BadEntityId { .. })));
    assert_eq!(ex.status(&ghost).await.unwrap(), MailboxStatus::Missing);
    // A heartbeat update never fails and does not create the mailbox.
    ex.update_heartbeat(&ghost).await.unwrap();
    assert_eq!(ex.status(&ghost).await.unwrap(), MailboxStatus::Missing);
}

/// Item 3: requests and responses to a terminated mailbox fail with the terminated error.
pub async fn send_to_terminated_mailbox_fails(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user = ex.register_user(None).await.unwrap();
    let target = agent(&*ex, &["test.Target"]).await;
    let request = ping(user.clone(), target.clone());
    ex.terminate(&target.clone().into()).await.unwrap();
    match ex.send(request.clone()).await {
        Err(Error::MailboxTerminated { id }) => assert_eq!(id, target),
        other => panic!("expected MailboxTerminated, got {other:?}"),
    }
    // A response whose destination is terminated.
    let back = ping(target.clone(), user.clone());
    ex.terminate(&user.clone().into()).await.unwrap();
    let response = back.response(Body::SuccessResponse).unwrap();
    assert!(matches!(ex.send(response).await, Err(Error::MailboxTerminated { .. })));
}

/// Item 4: receiving from a terminated mailbox fails, and queued messages are discarded.
pub async fn recv_on_terminated_mailbox_fails_even_with_queued_messages(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user = ex.register_user(None).await.unwrap();
    let target = ex.register_user(None).await.unwrap();
    let mailbox = ex.open_mailbox(&target.clone().into()).await.unwrap();
    for _ in 0..3 {
        ex.send(ping(user.clone(), target.clone())).await.unwrap();
    }
    ex.terminate(&target.clone().into()).await.unwrap();
    assert!(matches!(recv(&*mailbox, Some(PROMPT)).await, Err(Error::MailboxTerminated { .. })));
    assert!(matches!(ex.open_mailbox(&target.clone().into()).await, Err(Error::MailboxTerminated { .. })));
    assert_eq!(ex.status(&target.into()).await.unwrap(), MailboxStatus::Terminated);
}

/// Item 5: a receive blocked when the mailbox is terminated wakes with the terminated error.
pub async fn terminate_wakes_blocked_receiver(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let target: EntityId = ex.register_user(None).await.unwrap().into();
    let mailbox = ex.open_mailbox(&target).await.unwrap();
    let waiter = tokio::spawn(async move { recv(&*mailbox, None).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "recv returned before anything happened");
    let started = Instant::now();
    ex.terminate(&target).await.unwrap();
    let result = waiter.await.expect("receiver task");
    assert!(matches!(result, Err(Error::MailboxTerminated { .. })), "got {result:?}");
    assert!(started.elapsed() < PROMPT, "woke after {:?}", started.elapsed());
}

/// Item 6: terminating twice is fine and changes nothing.
pub async fn terminate_is_idempotent(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user = ex.register_user(None).await.unwrap();
    let target: EntityId = agent(&*ex, &["test.Twice"]).await.into();
    let inbox = ex.open_mailbox(&user.clone().into()).await.unwrap();
    ex.send(ping(user.clone(), target.clone())).await.unwrap();
    ex.terminate(&target).await.unwrap();
    ex.terminate(&target).await.unwrap();
    assert_eq!(ex.status(&target).await.unwrap(), MailboxStatus::Terminated);
    // The pending request was answered exactly once.
    recv_ok(&*inbox).await;
    assert_empty(&*inbox).await;
}

/// Item 7: terminating an unknown id succeeds; the id stays unknown (or, on backends that
/// keep Academy's Redis layout, becomes a gravestone).
pub async fn terminate_unknown_id(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user = ex.register_user(None).await.unwrap();
    let ghost: EntityId = AgentId::new(None).into();
    ex.terminate(&ghost).await.unwrap();
    let sent = ex.send(ping(user, ghost.clone())).await;
    if backend.quirks().terminate_unknown_leaves_gravestone {
        assert_eq!(ex.status(&ghost).await.unwrap(), MailboxStatus::Terminated);
        assert!(matches!(sent, Err(Error::MailboxTerminated { .. })), "got {sent:?}");
    } else {
        assert_eq!(ex.status(&ghost).await.unwrap(), MailboxStatus::Missing);
        assert!(matches!(sent, Err(Error::BadEntityId { .. })), "got {sent:?}");
    }
}

/// Item 8: every request pending at termination (queued or taken) gets exactly one code-0
/// error response with its tag and label; terminated requesters are skipped.
pub async fn terminate_answers_pending_requests(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user = ex.register_user(Some("requester")).await.unwrap();
    let gone = ex.register_user(Some("gone")).await.unwrap();
    let target = agent(&*ex, &["test.Busy"]).await;
    let user_inbox = ex.open_mailbox(&user.clone().into()).await.unwrap();
    let target_inbox = ex.open_mailbox(&target.clone().into()).await.unwrap();

    let label = Uuid::new_v4();
    let requests: Vec<Message> = (0..3).map(|_| ping(user.clone(), target.clone()).with_label(label)).collect();
    for request in &requests {
        ex.send(request.clone()).await.unwrap();
    }
    // One more request that gets answered: it must not be answered again.
    let answered = ping(user.clone(), target.clone());
    ex.send(answered.clone()).await.unwrap();
    // A request whose requester is terminated before the target: skipped silently.
    ex.send(ping(gone.clone(), target.clone())).await.unwrap();
    ex.terminate(&gone.into()).await.unwrap();

    // Take the first request (now "in progress"), answer the fourth.
    let taken = recv_ok(&*target_inbox).await;
    assert_eq!(taken.tag(), requests[0].tag());
    ex.send(answered.response(Body::SuccessResponse).unwrap()).await.unwrap();
    let reply = recv_ok(&*user_inbox).await;
    assert_eq!(reply.tag(), answered.tag());

    ex.terminate(&target.clone().into()).await.unwrap();
    let mut tags = Vec::new();
    for _ in 0..requests.len() {
        let notice = recv_ok(&*user_inbox).await;
        assert!(!notice.is_request());
        assert_eq!(notice.header.label, Some(label));
        assert_eq!(notice.src(), &EntityId::from(target.clone()));
        match &notice.body {
            Body::AcademyError(e) => {
                assert_eq!(e.error_code, ErrorCode::MailboxTerminated);
                assert_eq!(e.mailbox_id.as_ref(), Some(&EntityId::from(target.clone())));
            }
            other => panic!("expected academy-error-response, got {other:?}"),
        }
        tags.push(notice.tag());
    }
    tags.sort();
    let mut expected: Vec<Uuid> = requests.iter().map(Message::tag).collect();
    expected.sort();
    assert_eq!(tags, expected);
    assert_empty(&*user_inbox).await;
}

/// Item 9: a receive with a timeout and no message times out after about that time.
pub async fn recv_times_out(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user: EntityId = ex.register_user(None).await.unwrap().into();
    let mailbox = ex.open_mailbox(&user).await.unwrap();
    let started = Instant::now();
    let result = recv(&*mailbox, Some(Duration::from_millis(300))).await;
    let waited = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout { .. })), "got {result:?}");
    assert!(waited >= Duration::from_millis(250), "timed out early, after {waited:?}");
    assert!(waited < PROMPT, "timed out late, after {waited:?}");
    // The mailbox still works after a timeout.
    ex.send(ping(user.clone(), user.clone())).await.unwrap();
    recv_ok(&*mailbox).await;
}

/// A closed handle stops receiving; the mailbox itself stays active.
pub async fn closed_mailbox_handle_stops_receiving(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user: EntityId = ex.register_user(None).await.unwrap().into();
    let mailbox = ex.open_mailbox(&user).await.unwrap();
    mailbox.close().await.unwrap();
    assert!(matches!(recv(&*mailbox, Some(PROMPT)).await, Err(Error::Closed { .. })));
    assert_eq!(ex.status(&user).await.unwrap(), MailboxStatus::Active);
    ex.send(ping(user.clone(), user.clone())).await.unwrap();
    let reopened = ex.open_mailbox(&user).await.unwrap();
    recv_ok(&*reopened).await;
}
