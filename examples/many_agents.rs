//! Run with: cargo run --example many_agents [-- EXCHANGE_URL [COUNT]]
//!
//! Launches many agents, gives each a piece of work concurrently, and collects the results.

use std::time::Instant;

use exchange::agent::{Actions, Agent};
use exchange::{ACADEMY_AGENT_BASE, Manager};

/// Sums the squares of a range.
struct Squarer;

impl Agent for Squarer {
    fn behaviors(&self) -> Vec<String> {
        vec!["examples.Squarer".into(), ACADEMY_AGENT_BASE.into()]
    }

    fn actions(&self, actions: &mut Actions<Self>) {
        actions.add("sum_squares", |_agent, (from, to): (u64, u64)| async move {
            Ok((from..to).map(|x| x * x).sum::<u64>())
        });
    }
}

#[tokio::main]
async fn main() -> exchange::Result<()> {
    exchange::init_logs();
    let mut args = std::env::args().skip(1);
    let url = args.next().or_else(|| std::env::var("EXCHANGE_URL").ok()).unwrap_or("local://".into());
    let count: u64 = args.next().and_then(|c| c.parse().ok()).unwrap_or(100);
    let manager = Manager::new(exchange::connect(&url).await?).await?;

    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..count {
        handles.push(manager.launch(Squarer).await?);
    }
    println!("launched {} agents in {:?}", manager.running().len(), started.elapsed());

    let chunk = 1000;
    let calls = handles.iter().enumerate().map(|(i, h)| {
        let from = i as u64 * chunk;
        h.call::<u64>("sum_squares", (from, from + chunk))
    });
    let parts = futures::future::try_join_all(calls).await?;
    let total: u64 = parts.iter().sum();
    let expected: u64 = (0..count * chunk).map(|x| x * x).sum();
    println!("sum of squares below {}: {total} (expected {expected})", count * chunk);
    assert_eq!(total, expected);

    manager.close().await?;
    println!("all done in {:?}", started.elapsed());
    Ok(())
}
