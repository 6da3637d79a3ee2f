//! The discover index: agent uids by registration sequence in the sorted set
//! `exchange-server:agents` (sequence counter `exchange-server:agents:seq`), written by our
//! servers at create and removed at terminate, so discover reads the agents in order instead
//! of scanning the keyspace. Academy's server never writes these keys (its patterns never match
//! `exchange-server:*`); the agents it registers are added by a paced background pass over
//! `agent:*` ([`reconcile_forever`]).

use std::time::Duration;

use redis::RedisResult;
use redis::aio::ConnectionManager;
use uuid::Uuid;

/// The sorted set: member = agent uid, score = registration sequence.
pub(super) const AGENTS: &str = "exchange-server:agents";
/// The counter the sequence comes from.
const SEQUENCE: &str = "exchange-server:agents:seq";
/// Keys per `MGET` and per `SCAN` step.
const CHUNK: usize = 1000;
/// Pause between two `SCAN` steps of a reconcile pass, so it never hogs Redis.
const STEP_PAUSE: Duration = Duration::from_millis(10);

/// Takes the next sequence number and indexes `ARGV[1]` with it.
static ADD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local seq = redis.call('INCR', KEYS[1])
return redis.call('ZADD', KEYS[2], seq, ARGV[1])
",
    )
});

/// Indexes a newly created agent at the end of the registration order (a re-created one,
/// whose keys had expired, moves there).
pub(super) async fn add(conn: &mut ConnectionManager, uid: Uuid) -> RedisResult<()> {
    ADD.key(SEQUENCE).key(AGENTS).arg(uid.to_string()).invoke_async(conn).await
}

/// Adds the removal of `uid` from the index to a pipeline (terminate).
pub(super) fn remove(pipe: &mut redis::Pipeline, uid: Uuid) {
    pipe.zrem(AGENTS, uid.to_string()).ignore();
}

/// Indexed agents in registration order, each with the behaviour names of its `agent:` key.
/// Entries whose key is gone (terminated by Academy's server, or expired) are dropped from the
/// index on the way.
pub(super) async fn agents(conn: &mut ConnectionManager) -> RedisResult<Vec<(Uuid, String)>> {
    let members: Vec<String> = redis::cmd("ZRANGE").arg(AGENTS).arg(0).arg(-1).query_async(conn).await?;
    let mut pipe = redis::pipe();
    for chunk in members.chunks(CHUNK) {
        pipe.cmd("MGET").arg(chunk.iter().map(|uid| format!("agent:{uid}")).collect::<Vec<_>>());
    }
    let names: Vec<Vec<Option<String>>> = if members.is_empty() { Vec::new() } else { pipe.query_async(conn).await? };
    let mut found = Vec::with_capacity(members.len());
    let mut stale = Vec::new();
    for (member, names) in members.iter().zip(names.into_iter().flatten()) {
        match (Uuid::parse_str(member), names) {
            (Ok(uid), Some(names)) => found.push((uid, names)),
            _ => stale.push(member.as_str()),
        }
    }
    if !stale.is_empty() {
        let _: i64 = redis::cmd("ZREM").arg(AGENTS).arg(&stale).query_async(conn).await?;
    }
    Ok(found)
}

/// One pass over `agent:*` (`SCAN`, [`CHUNK`] keys a step, paced): indexes the agents that are
/// not indexed yet, at the end of the order. Returns how many were added.
async fn reconcile(conn: &mut ConnectionManager) -> RedisResult<u64> {
    let mut cursor: u64 = 0;
    let mut added = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("agent:*")
            .arg("COUNT")
            .arg(CHUNK)
            .query_async(conn)
            .await?;
        let uids: Vec<&str> =
            keys.iter().filter_map(|key| key.strip_prefix("agent:")).filter(|u| Uuid::parse_str(u).is_ok()).collect();
        if !uids.is_empty() {
            let mut pipe = redis::pipe();
            for uid in &uids {
                pipe.zscore(AGENTS, *uid);
            }
            let scores: Vec<Option<f64>> = pipe.query_async(conn).await?;
            let missing: Vec<&str> =
                uids.iter().zip(scores).filter(|(_, score)| score.is_none()).map(|(uid, _)| *uid).collect();
            if !missing.is_empty() {
                // Numbers for the whole batch at once; `NX` keeps one created meanwhile.
                let last: u64 = redis::cmd("INCRBY").arg(SEQUENCE).arg(missing.len()).query_async(conn).await?;
                let first = last + 1 - missing.len() as u64;
                let mut add = redis::cmd("ZADD");
                add.arg(AGENTS).arg("NX");
                for (n, uid) in missing.iter().enumerate() {
                    add.arg(first + n as u64).arg(*uid);
                }
                added += add.query_async::<u64>(conn).await?;
            }
        }
        if next == 0 {
            return Ok(added);
        }
        cursor = next;
        tokio::time::sleep(STEP_PAUSE).await;
    }
}

/// Reconciles at start and then every `interval`, until the task is aborted. Failures (Redis
/// unreachable) are logged and the next pass tries again.
pub(super) async fn reconcile_forever(mut conn: ConnectionManager, interval: Duration) {
    loop {
        match reconcile(&mut conn).await {
            Ok(0) => {}
            Ok(added) => tracing::info!(added, "indexed agents registered by other servers"),
            Err(e) => tracing::debug!(error = %e, "agent index reconcile failed; retrying next pass"),
        }
        tokio::time::sleep(interval).await;
    }
}
