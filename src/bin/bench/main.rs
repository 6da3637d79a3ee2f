//! Whole-system benchmark: prints one JSON object per result line, with the scenario names and
//! fields of Academy's anchor script (`shared/bench/academy_bench.py`) so figures compare line
//! for line.
//!
//! Run with: `cargo run --profile dist --features bench --bin bench -- --backend local --scenario all`

mod limits;
mod measure;
mod memory;
mod stack;
mod transport;

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};

use crate::measure::emit;

/// Scenarios, in the anchor script's order.
const SCENARIOS: &[&str] = &["throughput", "rtt", "payload", "fanin", "stack-seq", "stack-conc"];

/// Command-line arguments (names follow the anchor script).
#[derive(Parser, Debug, Clone)]
#[command(about = "Benchmark an exchange backend; prints JSON lines")]
pub(crate) struct Args {
    /// Backend label: local, redis or http.
    #[arg(long, default_value = "local")]
    backend: String,
    /// Exchange URL (default: a named in-process exchange for `local`).
    #[arg(long)]
    url: Option<String>,
    /// Comma-separated scenarios, or "all".
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Iterations / messages (default per scenario, as the anchor).
    #[arg(long)]
    n: Option<usize>,
    /// Label written in the `backend` field (default: --backend).
    #[arg(long)]
    label: Option<String>,
    /// Repetition index written in the output.
    #[arg(long, default_value_t = 0)]
    rep: u32,
    /// Warm-up iterations.
    #[arg(long)]
    warmup: Option<usize>,
    /// Payload sizes in bytes (payload scenario).
    #[arg(long, default_value = "1024,65536,1048576")]
    sizes: String,
    /// Calls in flight (stack-conc).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Senders (fanin).
    #[arg(long, default_value_t = 16)]
    senders: usize,
    /// Comma-separated PIDs (exchange server, redis-server) whose CPU time is sampled.
    #[arg(long, default_value = "")]
    server_pids: String,
    /// HTTP only: receive over the event stream (`sse`, the default) or one long poll per
    /// message (`longpoll`).
    #[arg(long, default_value = "sse")]
    recv_mode: String,
    /// Redis whose `connected_clients` limits-redis-clients reports (`redis://host:port`, the
    /// storage of the server at --url).
    #[arg(long)]
    redis_url: Option<String>,
    /// Mailboxes to open (memory).
    #[arg(long, default_value_t = 10_000)]
    mailboxes: usize,
}

impl Args {
    pub(crate) fn url(&self) -> String {
        self.url.clone().unwrap_or_else(|| match self.backend.as_str() {
            "redis" => "redis://127.0.0.1:6391".into(),
            "http" => "http://127.0.0.1:8791".into(),
            _ => "local://bench".into(),
        })
    }

    pub(crate) fn label(&self) -> String {
        match (&self.label, self.recv_mode.as_str()) {
            (Some(label), _) => label.clone(),
            (None, "sse") => self.backend.clone(),
            (None, mode) => format!("{}-{mode}", self.backend),
        }
    }

    pub(crate) fn n_or(&self, default: usize) -> usize {
        self.n.unwrap_or(default)
    }

    pub(crate) fn warmup_or(&self, default: usize) -> usize {
        self.warmup.unwrap_or(default)
    }

    pub(crate) fn server_pids(&self) -> Vec<u32> {
        self.server_pids.split(',').filter_map(|p| p.trim().parse().ok()).collect()
    }

    /// A new client of the exchange under test.
    pub(crate) async fn connect(&self) -> exchange::Result<Arc<dyn exchange::Exchange>> {
        match self.recv_mode.as_str() {
            "sse" => exchange::connect(&self.url()).await,
            #[cfg(feature = "http")]
            "longpoll" => {
                let options = exchange::http::HttpOptions::default().recv_mode(exchange::http::RecvMode::LongPoll);
                Ok(Arc::new(exchange::http::HttpExchange::connect_with(&self.url(), options).await?))
            }
            other => Err(exchange::Error::config(format!(
                "--recv-mode {other:?} is not available (sse, or longpoll with the http feature)"
            ))),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let scenarios: Vec<String> = if args.scenario == "all" {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenario.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
    };
    let mut failed = false;
    for scenario in scenarios {
        let started = Instant::now();
        // On a worker thread, as a deployed task would run (the main thread is not a worker).
        let task = {
            let (args, scenario) = (args.clone(), scenario.clone());
            tokio::spawn(async move { run(&args, &scenario).await })
        };
        let result = task.await.unwrap_or_else(|e| Err(exchange::Error::config(format!("scenario panicked: {e}"))));
        if let Err(e) = result {
            failed = true;
            emit(&args, &scenario, json!({ "error": e.to_string() }));
        }
        emit(
            &args,
            "invocation",
            json!({ "args": scenario, "elapsed_s": (started.elapsed().as_secs_f64() * 1e3).round() / 1e3 }),
        );
    }
    if failed {
        std::process::exit(1);
    }
}

async fn run(args: &Args, scenario: &str) -> exchange::Result<()> {
    match scenario {
        "throughput" => transport::throughput(args).await,
        "rtt" => transport::rtt(args).await,
        "payload" => transport::payload(args).await,
        "fanin" => transport::fanin(args).await,
        "stack-seq" | "stack-conc" => stack::stack(args, scenario).await,
        // Not part of "all": it fills the exchange on purpose.
        "memory" => memory::memory(args).await,
        // Not part of "all": HTTP servers only, and it takes a minute.
        "limits" => limits::limits(args).await,
        // Not part of "all": an HTTP server with Redis storage, which it fills with agents.
        "limits-redis-discover" => limits::redis_discover(args).await,
        // Not part of "all": an HTTP server with Redis storage, and --redis-url.
        "limits-redis-clients" => limits::redis_clients(args).await,
        other => Err(exchange::Error::config(format!(
            "unknown scenario {other:?}; known: {SCENARIOS:?}, memory, limits, limits-redis-discover and limits-redis-clients"
        ))),
    }
}

/// Adds `fields` to a JSON object.
pub(crate) fn merge(mut base: Value, fields: Value) -> Value {
    if let (Value::Object(base), Value::Object(fields)) = (&mut base, fields) {
        base.extend(fields);
    }
    base
}
