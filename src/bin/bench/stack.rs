//! Agent-stack scenarios: `stack-seq` (N sequential calls) and `stack-conc` (N calls, 64 in
//! flight) of an echo action through manager + agent runtime + handle, as the anchor script's
//! `sc_stack`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use exchange::agent::{Actions, Agent};
use exchange::{ACADEMY_AGENT_BASE, Error, Handle, Manager, Result};
use serde_json::json;

use crate::Args;
use crate::measure::{CpuWindow, emit, lat_stats, round};

/// The anchor's `Echo` agent: returns its argument.
struct Echo;

impl Agent for Echo {
    fn behaviors(&self) -> Vec<String> {
        vec!["bench.Echo".into(), ACADEMY_AGENT_BASE.into()]
    }

    fn actions(&self, actions: &mut Actions<Self>) {
        actions.add("echo", |_agent, (x,): (i64,)| async move { Ok(x) });
    }
}

async fn echo(handle: &Handle, i: i64) -> Result<Duration> {
    let started = Instant::now();
    let got: i64 = handle.call("echo", (i,)).await?;
    if got != i {
        return Err(Error::codec(format!("echo returned {got} for {i}")));
    }
    Ok(started.elapsed())
}

/// `stack-seq` or `stack-conc`.
pub(crate) async fn stack(args: &Args, kind: &str) -> Result<()> {
    let local = args.backend == "local";
    let n = args.n_or(match (local, kind) {
        (true, _) => 200_000,
        (false, "stack-seq") => 1000,
        (false, _) => 2000,
    });
    let manager = Manager::new(args.connect().await?).await?;
    let handle = manager.launch(Echo).await?;
    let first = echo(&handle, -1).await?;
    for i in 0..args.warmup_or(if local { 10_000 } else { 100 }) {
        echo(&handle, i as i64).await?;
    }
    let mut fields = json!({ "n": n, "executor": "tokio" });
    let (window, lat) = if kind == "stack-seq" {
        let mut lat = Vec::with_capacity(n);
        let window = CpuWindow::start(args);
        for i in 0..n {
            lat.push(echo(&handle, i as i64).await?);
        }
        (window.stop(), lat)
    } else {
        fields["concurrency"] = json!(args.concurrency);
        let next = Arc::new(AtomicUsize::new(0));
        let window = CpuWindow::start(args);
        let workers: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| {
                let (handle, next) = (handle.clone(), next.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(n / 32 + 1);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok::<_, Error>(lat);
                        }
                        lat.push(echo(&handle, i as i64).await?);
                    }
                })
            })
            .collect();
        let mut lat = Vec::with_capacity(n);
        for worker in workers {
            lat.extend(worker.await.map_err(|e| Error::config(format!("bench worker failed: {e}")))??);
        }
        (window.stop(), lat)
    };
    fields["calls_per_s"] = json!(round(n as f64 / window.wall.as_secs_f64(), 1));
    fields = crate::merge(fields, lat_stats(&lat));
    fields["first_call_ms"] = json!(round(first.as_secs_f64() * 1e3, 1));
    emit(args, kind, crate::merge(fields, window.fields(n)));
    manager.close().await
}
