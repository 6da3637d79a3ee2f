//! Heartbeats and stats (checklist items 13 and 14).

use std::time::Duration;

use exchange_core::{AgentRegistration, Body, EntityId, Error, MailboxStats, Message};

use crate::TestBackend;
use crate::support::recv_ok;

/// Item 13: after an update the heartbeat is a small non-negative age that grows.
pub async fn heartbeat_reports_elapsed_time(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let id: EntityId = ex.register_user(None).await.unwrap().into();
    ex.update_heartbeat(&id).await.unwrap();
    let first = ex.heartbeat(&id).await.unwrap().expect("a heartbeat after the update");
    assert!(first < Duration::from_secs(5), "age {first:?}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let later = ex.heartbeat(&id).await.unwrap().expect("still there");
    assert!(later > first, "age did not grow: {first:?} then {later:?}");
    assert!(later >= Duration::from_millis(100), "age {later:?} after sleeping 150 ms");
}

/// Item 13: heartbeats of unknown and terminated mailboxes fail with those errors.
pub async fn heartbeat_of_unknown_or_terminated_mailbox_fails(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let unknown: EntityId = exchange_core::UserId::new(None).into();
    assert!(matches!(ex.heartbeat(&unknown).await, Err(Error::BadEntityId { .. })));
    let id: EntityId = ex.register_user(None).await.unwrap().into();
    ex.update_heartbeat(&id).await.unwrap();
    ex.terminate(&id).await.unwrap();
    assert!(matches!(ex.heartbeat(&id).await, Err(Error::MailboxTerminated { .. })));
}

/// Item 14: stats after N requests sent, M answered, K still queued.
pub async fn stats_follow_academy_formulas(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let user = ex.register_user(None).await.unwrap();
    let agent = ex.register_agent(AgentRegistration::new(["test.Counted"])).await.unwrap();
    let agent_inbox = ex.open_mailbox(&agent.clone().into()).await.unwrap();
    let user_inbox = ex.open_mailbox(&user.clone().into()).await.unwrap();
    // N = 5 requests; the agent takes 3 and answers 2 (M = 2); K = 2 stay queued.
    for _ in 0..5 {
        ex.send(Message::request(user.clone(), agent.clone(), Body::PingRequest)).await.unwrap();
    }
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(recv_ok(&*agent_inbox).await);
    }
    for request in &taken[..2] {
        ex.send(request.response(Body::SuccessResponse).unwrap()).await.unwrap();
        recv_ok(&*user_inbox).await;
    }
    // pending = 3 (1 in progress + 2 queued), completed = 2, queued = 2.
    let expected = MailboxStats { incoming: 5, outgoing: 0, completed: 2, in_progress: 1, queued: 2 };
    assert_eq!(ex.stats(&agent.into()).await.unwrap(), expected);
    let user_stats = ex.stats(&user.into()).await.unwrap();
    assert_eq!(user_stats, MailboxStats { incoming: 0, outgoing: 5, completed: 0, in_progress: 0, queued: 0 });
}
