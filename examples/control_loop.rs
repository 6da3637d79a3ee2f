//! Run with: cargo run --example control_loop [-- EXCHANGE_URL]
//!
//! An agent with a control loop (runs until shutdown), a timer loop and an event loop; the
//! user watches its progress through an action, wakes the event loop, then shuts it down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use exchange::agent::{Actions, Agent, Context, Loops};
use exchange::{ACADEMY_AGENT_BASE, BoxError, Manager};
use tokio::sync::Notify;

/// Counts work done by its loops.
#[derive(Default)]
struct Worker {
    steps: AtomicU64,
    ticks: AtomicU64,
    events: AtomicU64,
    wake: Arc<Notify>,
}

#[exchange::async_trait]
impl Agent for Worker {
    fn behaviors(&self) -> Vec<String> {
        vec!["examples.Worker".into(), ACADEMY_AGENT_BASE.into()]
    }

    fn actions(&self, actions: &mut Actions<Self>) {
        actions
            .add("progress", |agent, ()| async move {
                let load = |c: &AtomicU64| c.load(Ordering::SeqCst);
                Ok((load(&agent.steps), load(&agent.ticks), load(&agent.events)))
            })
            .add("wake", |agent, ()| async move {
                agent.wake.notify_one();
                Ok(())
            });
    }

    fn loops(&self, loops: &mut Loops<Self>) {
        loops
            .control("work", |agent| async move {
                while !agent.is_shutting_down() {
                    agent.steps.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(())
            })
            .timer("tick", Duration::from_millis(100), |agent| async move {
                agent.ticks.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .event("on_wake", self.wake.clone(), |agent| async move {
                agent.events.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
    }

    async fn startup(&self, ctx: &Context<Self>) -> Result<(), BoxError> {
        println!("{} starting", ctx.id());
        Ok(())
    }

    async fn shutdown(&self, ctx: &Context<Self>) -> Result<(), BoxError> {
        println!("{} stopping after {} steps", ctx.id(), self.steps.load(Ordering::SeqCst));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> exchange::Result<()> {
    exchange::init_logs();
    let url = std::env::args().nth(1).or_else(|| std::env::var("EXCHANGE_URL").ok()).unwrap_or("local://".into());
    let manager = Manager::new(exchange::connect(&url).await?).await?;
    let worker = manager.launch(Worker::default()).await?;
    worker.ping().await?;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        worker.call::<()>("wake", ()).await?;
        let (steps, ticks, events): (u64, u64, u64) = worker.call("progress", ()).await?;
        println!("steps={steps} ticks={ticks} events={events}");
    }
    worker.shutdown(None).await?;
    manager.wait(worker.agent_id(), Some(Duration::from_secs(10))).await?;
    println!("worker status: {:?}", worker.status().await?);
    manager.close().await
}
