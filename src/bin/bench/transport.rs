//! Raw transport scenarios: `throughput`, `rtt`, `payload`, `fanin`. Messages are built and
//! matched the way a real client does: fresh ids and tags, responses checked by tag.

use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::{ActionRequest, ActionResponse, Body, Error, Exchange, Mailbox, Message, Result, Strategy, UserId};
use serde_json::json;

use crate::Args;
use crate::measure::{CpuWindow, emit, lat_stats, round};

/// One participant: a client of the exchange with its own user mailbox.
struct Peer {
    exchange: Arc<dyn Exchange>,
    id: UserId,
    mailbox: Box<dyn Mailbox>,
}

impl Peer {
    async fn new(args: &Args, name: &str) -> Result<Peer> {
        let exchange = args.connect().await?;
        let id = exchange.register_user(Some(name)).await?;
        let mailbox = exchange.open_mailbox(&id.clone().into()).await?;
        Ok(Peer { exchange, id, mailbox })
    }

    async fn recv(&self) -> Result<Message> {
        self.mailbox.recv(Some(Duration::from_secs(60))).await
    }

    async fn close(self) {
        let _ = self.mailbox.close().await;
        let _ = self.exchange.terminate(&self.id.into()).await;
    }
}

fn ping(src: &UserId, dest: &UserId) -> Message {
    Message::request(src.clone(), dest.clone(), Body::PingRequest)
}

/// One-way: N sends A -> B, then N receives on B.
pub(crate) async fn throughput(args: &Args) -> Result<()> {
    let n = args.n_or(if args.backend == "local" { 1_000_000 } else { 10_000 });
    let a = Peer::new(args, "bench-A").await?;
    let b = Peer::new(args, "bench-B").await?;
    for _ in 0..args.warmup_or(100) {
        a.exchange.send(ping(&a.id, &b.id)).await?;
        b.recv().await?;
    }
    let send = CpuWindow::start(args);
    for _ in 0..n {
        a.exchange.send(ping(&a.id, &b.id)).await?;
    }
    let send = send.stop();
    let recv = CpuWindow::start(args);
    for _ in 0..n {
        b.recv().await?;
    }
    let recv = recv.stop();
    let total = (send.wall + recv.wall).as_secs_f64();
    emit(
        args,
        "throughput",
        json!({
            "n": n,
            "msgs_per_s": round(n as f64 / total, 1),
            "send_msgs_per_s": round(n as f64 / send.wall.as_secs_f64(), 1),
            "recv_msgs_per_s": round(n as f64 / recv.wall.as_secs_f64(), 1),
            "send": send.fields(n),
            "recv": recv.fields(n),
        }),
    );
    a.close().await;
    b.close().await;
    Ok(())
}

/// Answers every request on `peer`: pings with success, action requests by echoing the first
/// positional argument.
fn spawn_echo(peer: Peer) -> tokio::task::JoinHandle<Peer> {
    tokio::spawn(async move {
        loop {
            let request = match peer.mailbox.recv(None).await {
                Ok(m) => m,
                Err(_) => return peer,
            };
            let body = match &request.body {
                Body::ActionRequest(action) => match action.args::<Vec<String>>() {
                    Ok(mut args) if !args.is_empty() => match ActionResponse::json(&args.swap_remove(0)) {
                        Ok(response) => Body::ActionResponse(response),
                        Err(_) => return peer,
                    },
                    _ => return peer,
                },
                _ => Body::SuccessResponse,
            };
            let Ok(reply) = request.response(body) else { return peer };
            if peer.exchange.send(reply).await.is_err() {
                return peer;
            }
        }
    })
}

/// Sends `make()` N times from A to an echo on B, timing each round trip.
async fn round_trips(
    args: &Args,
    n: usize,
    warmup: usize,
    make: impl Fn(&UserId, &UserId) -> Message,
    check: impl Fn(&Message) -> Result<()>,
) -> Result<(Vec<Duration>, CpuWindow)> {
    let a = Peer::new(args, "bench-A").await?;
    let b = Peer::new(args, "bench-B").await?;
    let b_id = b.id.clone();
    let echo = spawn_echo(b);
    let one = async |lat: Option<&mut Vec<Duration>>| -> Result<()> {
        let request = make(&a.id, &b_id);
        let started = Instant::now();
        a.exchange.send(request.clone()).await?;
        let response = a.recv().await?;
        if let Some(lat) = lat {
            lat.push(started.elapsed());
        }
        if response.tag() != request.tag() {
            return Err(Error::codec("response tag mismatch"));
        }
        check(&response)
    };
    for _ in 0..warmup {
        one(None).await?;
    }
    let mut lat = Vec::with_capacity(n);
    let window = CpuWindow::start(args);
    for _ in 0..n {
        one(Some(&mut lat)).await?;
    }
    let window = window.stop();
    let _ = a.exchange.terminate(&b_id.clone().into()).await;
    if let Ok(b) = echo.await {
        b.close().await;
    }
    a.close().await;
    Ok((lat, window))
}

/// Ping/pong A -> B -> A.
pub(crate) async fn rtt(args: &Args) -> Result<()> {
    let n = args.n_or(if args.backend == "local" { 100_000 } else { 2_000 });
    let check = |m: &Message| match m.body {
        Body::SuccessResponse => Ok(()),
        _ => Err(Error::codec(format!("unexpected response {m}"))),
    };
    let (lat, window) = round_trips(args, n, args.warmup_or(100), ping, check).await?;
    let fields = json!({ "n": n, "rtt_per_s": round(n as f64 / window.wall.as_secs_f64(), 1) });
    emit(args, "rtt", crate::merge(crate::merge(fields, lat_stats(&lat)), window.fields(n)));
    Ok(())
}

/// A text of `size` printable ASCII characters that differs from run to run.
fn payload_text(size: usize) -> String {
    let mut state = exchange::Uuid::new_v4().as_u128() as u64 | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(state % 64) as usize] as char
        })
        .collect()
}

/// Round trips of an action request carrying `size` bytes, echoed back in the response.
pub(crate) async fn payload(args: &Args) -> Result<()> {
    for size in args.sizes.split(',').filter_map(|s| s.trim().parse::<usize>().ok()) {
        let n = args.n.unwrap_or(match size {
            1024 => 500,
            65536 => 200,
            1048576 => 30,
            _ => 100,
        });
        let text = payload_text(size);
        let request = ActionRequest::json("echo", &[&text], &json!({}))?;
        let make = |src: &UserId, dest: &UserId| {
            Message::request(src.clone(), dest.clone(), Body::ActionRequest(request.clone()))
        };
        let wire_bytes = make(&UserId::new(None), &UserId::new(None)).to_json().len();
        let check = |m: &Message| match &m.body {
            Body::ActionResponse(r) if r.serialization == Strategy::Json && r.result::<String>()?.len() == size => {
                Ok(())
            }
            _ => Err(Error::codec(format!("unexpected response {m}"))),
        };
        let fields = json!({ "size": size, "wire_bytes": wire_bytes, "n": n });
        match round_trips(args, n, args.warmup_or(10).min(10), make, check).await {
            Ok((lat, window)) => {
                let wall = window.wall.as_secs_f64();
                let rates = json!({
                    "rtt_per_s": round(n as f64 / wall, 1),
                    "payload_MBps": round(2.0 * size as f64 * n as f64 / wall / 1e6, 2),
                });
                emit(
                    args,
                    "payload",
                    crate::merge(crate::merge(crate::merge(fields, lat_stats(&lat)), rates), window.fields(n)),
                );
            }
            Err(e) => emit(args, "payload", crate::merge(fields, json!({ "error": e.to_string() }))),
        }
    }
    Ok(())
}

/// `--senders` clients send to one receiver concurrently; rate until all are received.
pub(crate) async fn fanin(args: &Args) -> Result<()> {
    let k = args.senders.max(1);
    let per = args.n_or(if args.backend == "local" { 1_000_000 } else { 10_000 }) / k;
    let total = per * k;
    let sink = Peer::new(args, "bench-sink").await?;
    let mut senders = Vec::with_capacity(k);
    for i in 0..k {
        let peer = Peer::new(args, &format!("bench-s{i}")).await?;
        peer.exchange.send(ping(&peer.id, &sink.id)).await?;
        sink.recv().await?;
        senders.push(peer);
    }
    let window = CpuWindow::start(args);
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|peer| {
            let dest = sink.id.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    peer.exchange.send(ping(&peer.id, &dest)).await?;
                }
                Ok::<Peer, Error>(peer)
            })
        })
        .collect();
    for _ in 0..total {
        sink.recv().await?;
    }
    let elapsed = started.elapsed();
    let window = window.stop();
    for task in tasks {
        if let Ok(Ok(peer)) = task.await {
            peer.close().await;
        }
    }
    sink.close().await;
    let fields = json!({ "n": total, "senders": k, "msgs_per_s": round(total as f64 / elapsed.as_secs_f64(), 1) });
    emit(args, "fanin", crate::merge(fields, window.fields(total)));
    Ok(())
}
