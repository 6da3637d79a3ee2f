//! What the agent runtime and handles log: a span per served action and per call, with
//! Academy's field names (`academy.agent_id`, `academy.action`, `academy.action_tag`), the
//! latency, and the error of a failed action.

use std::sync::{Arc, Mutex};

use exchange_conformance::agents::Calculator;
use exchange_conformance::log_capture;
use exchange_conformance::{LocalBackend, TestBackend};
use exchange_core::{Error, Manager};
use serde_json::Value;
use tracing_subscriber::filter::LevelFilter;

/// Every log line of this test binary, as JSON, at debug and above.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    log_capture::install(LevelFilter::DEBUG)
}

/// The one event of `message` in span `span` about `action` of `agent`.
fn event(message: &str, span: &str, agent: &str, action: &str) -> Value {
    let found = log_capture::lines(|l| {
        l["fields"]["message"] == message
            && l["span"]["name"] == span
            && l["span"]["academy.agent_id"] == agent
            && l["span"]["academy.action"] == action
    });
    assert_eq!(found.len(), 1, "expected one {message:?} event for {action}, got {found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_leave_runtime_and_handle_events_with_academy_fields() {
    logs();
    let backend = LocalBackend::start().await;
    let manager = Manager::new(backend.client().await).await.unwrap();
    let calc = manager.launch(Calculator::default()).await.unwrap();
    let agent = calc.agent_id().to_string();
    assert_eq!(calc.call::<i64>("add", (2, 3)).await.unwrap(), 5);
    match calc.call::<()>("fail", ("ValueError: boom",)).await {
        Err(Error::Remote { message }) => assert!(message.contains("boom"), "{message}"),
        other => panic!("expected the action's error, got {other:?}"),
    }
    // The runtime logs before it answers, and the handle after its answer: all are in by now.

    let started = log_capture::lines(|l| {
        l["fields"]["message"] == "agent starting" && l["fields"]["academy.agent_id"] == agent.as_str()
    });
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["level"], "INFO");
    assert!(started[0]["fields"]["exchange"].as_str().unwrap().contains("LocalExchange"), "{}", started[0]);

    let served = event("action completed", "action", &agent, "add");
    assert_eq!(served["level"], "DEBUG");
    assert!(served["fields"]["latency_ms"].as_f64().unwrap() >= 0.0, "{served}");
    assert_eq!(served["span"]["academy.src"], manager.client().id().to_string());
    let tag = served["span"]["academy.action_tag"].as_str().unwrap().to_owned();

    let called = event("call completed", "call", &agent, "add");
    assert_eq!(called["level"], "DEBUG");
    assert!(called["fields"]["latency_ms"].as_f64().unwrap() >= 0.0, "{called}");
    assert_eq!(called["span"]["academy.action_tag"], tag.as_str(), "both sides name the same request");

    let failed = event("action failed", "action", &agent, "fail");
    assert_eq!(failed["level"], "WARN");
    assert!(failed["fields"]["error"].as_str().unwrap().contains("boom"), "{failed}");
    let call_failed = event("call failed", "call", &agent, "fail");
    assert!(call_failed["fields"]["error"].as_str().unwrap().contains("boom"), "{call_failed}");
    assert!(call_failed["fields"]["latency_ms"].is_number(), "{call_failed}");
    manager.close().await.unwrap();
}
