//! Small helpers shared by the scenarios.

use std::time::Duration;

use exchange_core::{Error, Mailbox, Message, Result};

/// Generous upper bound for anything that should happen "promptly": a hang detector, far above
/// the time it takes on a loaded machine (waits end as soon as the event happens).
pub(crate) const PROMPT: Duration = Duration::from_secs(30);

/// Receives with a hard outer deadline so a broken backend fails instead of hanging.
pub(crate) async fn recv(mailbox: &dyn Mailbox, timeout: Option<Duration>) -> Result<Message> {
    let outer = timeout.map_or(PROMPT, |t| t + PROMPT);
    match tokio::time::timeout(outer, mailbox.recv(timeout)).await {
        Ok(result) => result,
        Err(_) => panic!("recv on {} did not return within {outer:?}", mailbox.id()),
    }
}

/// Receives a message that must be there.
pub(crate) async fn recv_ok(mailbox: &dyn Mailbox) -> Message {
    recv(mailbox, Some(PROMPT)).await.unwrap_or_else(|e| panic!("expected a message on {}: {e}", mailbox.id()))
}

/// Asserts that a mailbox has nothing more to deliver right now.
pub(crate) async fn assert_empty(mailbox: &dyn Mailbox) {
    match recv(mailbox, Some(Duration::from_millis(200))).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected an empty mailbox, got {other:?}"),
    }
}

/// Compares two messages as JSON values (field order free, values exact).
pub(crate) fn assert_same_json(sent: &Message, received: &Message, what: &str) {
    let a: serde_json::Value = serde_json::from_str(&sent.to_json()).expect("json");
    let b: serde_json::Value = serde_json::from_str(&received.to_json()).expect("json");
    assert_eq!(a, b, "{what}: received message differs from the one sent");
}
