//! `memory`: server memory with many open mailboxes and many queued messages.

use std::sync::Arc;

use exchange::{ActionRequest, Body, Message, Result, UserId};
use serde_json::json;

use crate::Args;
use crate::measure::{emit, round};

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Registers `--mailboxes` mailboxes (default 10,000), queues N (default 100,000) requests of
/// 1 KiB of payload into them round robin, and reports the servers' RSS before and after.
pub(crate) async fn memory(args: &Args) -> Result<()> {
    const SIZE: usize = 1024;
    const SENDERS: usize = 16;
    let n = args.n_or(100_000);
    let exchange = args.connect().await?;
    let sender = exchange.register_user(Some("bench-memory")).await?;
    let before: Vec<Option<u64>> = args.server_pids().iter().map(|p| rss_kib(*p)).collect();
    let mut mailboxes = Vec::with_capacity(args.mailboxes);
    for _ in 0..args.mailboxes {
        mailboxes.push(exchange.register_user(None).await?);
    }
    let mut opened = Vec::with_capacity(mailboxes.len());
    for id in &mailboxes {
        opened.push(exchange.open_mailbox(&id.clone().into()).await?);
    }
    let request = ActionRequest::json("echo", &["x".repeat(SIZE)], &json!({}))?;
    let wire_bytes =
        Message::request(sender.clone(), mailboxes[0].clone(), Body::ActionRequest(request.clone())).to_json().len();
    let mailboxes: Arc<Vec<UserId>> = Arc::new(mailboxes);
    let tasks: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (exchange, sender, mailboxes, request) =
                (exchange.clone(), sender.clone(), mailboxes.clone(), request.clone());
            tokio::spawn(async move {
                for i in (s..n).step_by(SENDERS) {
                    let dest = mailboxes[i % mailboxes.len()].clone();
                    exchange.send(Message::request(sender.clone(), dest, Body::ActionRequest(request.clone()))).await?;
                }
                Ok::<(), exchange::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| exchange::Error::config(format!("sender panicked: {e}")))??;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let servers: serde_json::Map<String, serde_json::Value> = args
        .server_pids()
        .iter()
        .zip(before)
        .filter_map(|(pid, before)| {
            let (before, after) = (before?, rss_kib(*pid)?);
            let growth = after.saturating_sub(before) as f64 * 1024.0;
            Some((
                pid.to_string(),
                json!({
                    "rss_before_kib": before,
                    "rss_after_kib": after,
                    "growth_per_payload_byte": round(growth / (n * SIZE) as f64, 3),
                }),
            ))
        })
        .collect();
    emit(
        args,
        "memory",
        json!({
            "mailboxes": args.mailboxes, "messages": n, "payload_bytes": n * SIZE,
            "wire_bytes_per_message": wire_bytes, "servers": servers,
        }),
    );
    drop(opened);
    for id in mailboxes.iter() {
        exchange.terminate(&id.clone().into()).await?;
    }
    exchange.terminate(&sender.into()).await
}
