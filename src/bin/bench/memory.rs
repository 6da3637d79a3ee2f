//! `memory`: server memory with many open mailboxes and many queued messages.

use std::sync::Arc;
use std::time::Duration;

use exchange::{ActionRequest, Body, Mailbox, Message, Result, UserId};
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
/// 1 KiB of payload into them round robin, and reports the servers' RSS before, after, and 3 s
/// and 18 s after every message was received again (the requests stay unanswered, as records).
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<Option<u64>> = args.server_pids().iter().map(|p| rss_kib(*p)).collect();
    drain(opened, n).await?;
    // Closed handles keep their stream open for the client's 2 s handover.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drained: Vec<Option<u64>> = args.server_pids().iter().map(|p| rss_kib(*p)).collect();
    // Allocators give freed memory back over seconds (jemalloc's decay is 10 s).
    tokio::time::sleep(Duration::from_secs(15)).await;
    let servers: serde_json::Map<String, serde_json::Value> = args
        .server_pids()
        .iter()
        .zip(before.into_iter().zip(after).zip(drained))
        .filter_map(|(pid, ((before, after), drained))| {
            let (before, after, drained, settled) = (before?, after?, drained?, rss_kib(*pid)?);
            let growth = after.saturating_sub(before) as f64 * 1024.0;
            Some((
                pid.to_string(),
                json!({
                    "rss_before_kib": before,
                    "rss_after_kib": after,
                    "rss_after_drain_kib": drained,
                    "rss_after_drain_18s_kib": settled,
                    "growth_per_payload_byte": round(growth / (n * SIZE) as f64, 3),
                    "growth_per_message_bytes": round(growth / n as f64, 1),
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
    for id in mailboxes.iter() {
        exchange.terminate(&id.clone().into()).await?;
    }
    exchange.terminate(&sender.into()).await
}

/// Receives the `n` messages queued round robin into `opened`, 16 mailboxes at a time, and
/// closes every handle.
async fn drain(opened: Vec<Box<dyn Mailbox>>, n: usize) -> Result<()> {
    const WORKERS: usize = 16;
    let count = opened.len();
    let mut shares: Vec<Vec<(usize, Box<dyn Mailbox>)>> = (0..WORKERS).map(|_| Vec::new()).collect();
    for (i, mailbox) in opened.into_iter().enumerate() {
        shares[i % WORKERS].push((i, mailbox));
    }
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            tokio::spawn(async move {
                for (i, mailbox) in share {
                    // Message k went to mailbox k % count.
                    let messages = n / count + usize::from(i < n % count);
                    for _ in 0..messages {
                        mailbox.recv(Some(Duration::from_secs(30))).await?;
                    }
                }
                Ok::<(), exchange::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| exchange::Error::config(format!("receiver panicked: {e}")))??;
    }
    Ok(())
}
