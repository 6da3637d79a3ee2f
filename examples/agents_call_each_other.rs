//! Run with: cargo run --example agents_call_each_other [-- EXCHANGE_URL]
//!
//! Two agents play a rally: each `hit` calls the other agent's `hit` until the count runs
//! out, so both serve a request while waiting on the other one. The second player finds the
//! first by discovery.

use exchange::agent::{Actions, Agent};
use exchange::{ACADEMY_AGENT_BASE, AgentId, Manager};

/// A player returns the ball to its opponent.
struct Player {
    name: &'static str,
}

impl Agent for Player {
    fn behaviors(&self) -> Vec<String> {
        vec!["examples.Player".into(), ACADEMY_AGENT_BASE.into()]
    }

    fn actions(&self, actions: &mut Actions<Self>) {
        actions.add("hit", |agent, (remaining, opponent): (u32, AgentId)| async move {
            println!("{} hits ({remaining} left), called by {:?}", agent.name, agent.caller().map(ToString::to_string));
            if remaining == 0 {
                return Ok(vec![agent.name.to_owned()]);
            }
            let me = agent.id().clone();
            let mut rally: Vec<String> = agent.handle(&opponent).call("hit", (remaining - 1, me)).await?;
            rally.push(agent.name.to_owned());
            Ok(rally)
        });
    }
}

#[tokio::main]
async fn main() -> exchange::Result<()> {
    exchange::init_logs();
    let url = std::env::args().nth(1).or_else(|| std::env::var("EXCHANGE_URL").ok()).unwrap_or("local://".into());
    let manager = Manager::new(exchange::connect(&url).await?).await?;
    let alice = manager.launch(Player { name: "alice" }).await?;
    let bob = manager.launch(Player { name: "bob" }).await?;
    alice.ping().await?;
    bob.ping().await?;
    let players = manager.client().discover("examples.Player", false).await?;
    println!("discovered {} players", players.len());
    let rally: Vec<String> = bob.call("hit", (5, alice.agent_id())).await?;
    println!("rally, last hit first: {rally:?}");
    manager.close().await
}
