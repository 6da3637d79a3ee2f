//! Run with: cargo run --example user_calls_actor [-- EXCHANGE_URL]
//!
//! A user launches a stateful counter agent and calls its actions through a handle. The
//! exchange is in-process by default; pass a URL (or set `EXCHANGE_URL`) to use another
//! backend, e.g. `cargo run --features redis --example user_calls_actor -- redis://127.0.0.1:6379`.

use std::sync::atomic::{AtomicI64, Ordering};

use exchange::agent::{Actions, Agent};
use exchange::{ACADEMY_AGENT_BASE, Manager};

/// A counter: its state lives in the agent, callers change it through actions.
#[derive(Default)]
struct Counter {
    value: AtomicI64,
}

impl Agent for Counter {
    fn behaviors(&self) -> Vec<String> {
        vec!["examples.Counter".into(), ACADEMY_AGENT_BASE.into()]
    }

    fn actions(&self, actions: &mut Actions<Self>) {
        actions
            .add(
                "increment",
                |agent, (by,): (i64,)| async move { Ok(agent.value.fetch_add(by, Ordering::SeqCst) + by) },
            )
            .add("get", |agent, ()| async move { Ok(agent.value.load(Ordering::SeqCst)) })
            .add("reset", |agent, ()| async move {
                agent.value.store(0, Ordering::SeqCst);
                Ok(())
            });
    }
}

#[tokio::main]
async fn main() -> exchange::Result<()> {
    exchange::init_logs();
    let url = std::env::args().nth(1).or_else(|| std::env::var("EXCHANGE_URL").ok()).unwrap_or("local://".into());
    let manager = Manager::new(exchange::connect(&url).await?).await?;
    let counter = manager.launch(Counter::default()).await?;

    println!("ping: {:?}", counter.ping().await?);
    for by in [1, 2, 3] {
        let value: i64 = counter.call("increment", (by,)).await?;
        println!("increment({by}) -> {value}");
    }
    println!("get() -> {}", counter.call::<i64>("get", ()).await?);
    match counter.call::<i64>("no_such_action", ()).await {
        Err(e) => println!("unknown action -> {e}"),
        Ok(v) => println!("unexpected result {v}"),
    }
    println!("status: {:?}", counter.status().await?);
    manager.close().await?;
    println!("status after close: {:?}", counter.status().await?);
    Ok(())
}
