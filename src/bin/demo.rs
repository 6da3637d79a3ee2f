//! Demo: a calculator service and a user talking through an exchange with Academy's messages.
//!
//! Run with: `cargo run` (in-process exchange), or `cargo run --features full -- redis://127.0.0.1:6379`
//! (any exchange URL).

use std::time::Duration;

use exchange::{
    ACADEMY_AGENT_BASE, ActionRequest, ActionResponse, AgentRegistration, Body, Exchange, Message, Result, UserError,
};
use serde_json::json;

/// Serves `add` and `mul` requests until its mailbox is terminated.
async fn calculator(exchange: std::sync::Arc<dyn Exchange>, mailbox: Box<dyn exchange::Mailbox>) -> Result<()> {
    loop {
        let request = match mailbox.recv(None).await {
            Ok(m) => m,
            Err(exchange::Error::MailboxTerminated { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let body = match &request.body {
            Body::ActionRequest(action) => answer(action),
            Body::PingRequest => Body::SuccessResponse,
            _ => continue,
        };
        exchange.send(request.response(body)?).await?;
    }
}

fn answer(action: &ActionRequest) -> Body {
    let result = action.args::<(f64, f64)>().and_then(|(a, b)| match action.action.as_str() {
        "add" => ActionResponse::json(&(a + b)),
        "mul" => ActionResponse::json(&(a * b)),
        other => Err(exchange::Error::codec(format!("unknown action {other:?}"))),
    });
    match result {
        Ok(response) => Body::ActionResponse(response),
        Err(e) => Body::UserError(UserError::json(format!("ValueError: {e}\n"))),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "local://".to_owned());
    let exchange = exchange::connect(&url).await?;
    println!("exchange: {url}");

    let agent = exchange
        .register_agent(AgentRegistration::new(["demo.Calculator", ACADEMY_AGENT_BASE]).with_name("calculator"))
        .await?;
    let service = tokio::spawn(calculator(exchange.clone(), exchange.open_mailbox(&agent.clone().into()).await?));
    let user = exchange.register_user(Some("alice")).await?;
    let inbox = exchange.open_mailbox(&user.clone().into()).await?;
    println!("registered {agent} and {user}");

    let found = exchange.discover("demo.Calculator", false).await?;
    println!("discover(demo.Calculator) -> {found:?}");

    for (action, args) in [("add", json!([2, 3])), ("mul", json!([6, 7])), ("div", json!([1, 0]))] {
        let request = ActionRequest::json(action, &args, &json!({}))?;
        let message = Message::request(user.clone(), agent.clone(), Body::ActionRequest(request));
        println!("-> {}", message.to_json());
        exchange.send(message).await?;
        let reply = inbox.recv(Some(Duration::from_secs(5))).await?;
        match &reply.body {
            Body::ActionResponse(r) => println!("<- {action}{args} = {}", r.result::<f64>()?),
            Body::UserError(e) => println!("<- {action}{args} failed: {}", e.text().trim_end()),
            other => println!("<- unexpected {other:?}"),
        }
    }
    println!("stats of the calculator: {:?}", exchange.stats(&agent.clone().into()).await?);

    exchange.terminate(&agent.into()).await?;
    exchange.terminate(&user.into()).await?;
    service.await.expect("calculator task")?;
    println!("done");
    Ok(())
}
