//! The Lua scripts of the Redis storage: each write that touches several keys is one script, so
//! a failure (a timeout, a lost connection) leaves all of it done or none of it.

use std::sync::LazyLock;

use redis::Script;

/// One send: checks the destination, tracks the request (or completes it, for a response),
/// counts it for the sender, queues it and remembers its tag and digest for a while, so that a
/// retry of the same message is answered as stored without storing it twice.
///
/// KEYS: `active:<dest>`, `queue:<dest>`, `sent:<dest>:<tag>`, the request record
/// (`request:<dest>:<tag>` for a request, `request:<src>:<tag>` for a response), the sender's
/// counter (`outgoing:<src>` for a request, `completions:<src>` for a response).
/// ARGV: the message, `request` or `response`, the header JSON (requests; empty otherwise), the
/// queue and request TTL (s), the counter TTL (s), the message's digest, the digest's TTL (s).
/// Returns `stored`, `duplicate`, `unknown` or `terminated`.
pub(super) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local state = redis.call('GET', KEYS[1])
if not state then return 'unknown' end
if redis.call('GET', KEYS[3]) == ARGV[6] then return 'duplicate' end
if state ~= 'ACTIVE' then return 'terminated' end
if ARGV[2] == 'request' then
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[4])
  redis.call('INCRBY', KEYS[5], 1)
  redis.call('EXPIRE', KEYS[5], ARGV[5])
elseif redis.call('DEL', KEYS[4]) == 1 then
  redis.call('INCRBY', KEYS[5], 1)
  redis.call('EXPIRE', KEYS[5], ARGV[5])
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4], 'NX')
redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7])
return 'stored'
",
    )
});

/// Terminate notices, a batch at a time: each request record still present is deleted and its
/// notice queued in the same step, so every notice is delivered once even when a terminate is
/// interrupted and retried. Requesters that are unknown or terminated get nothing.
///
/// KEYS: per notice, the request record, `active:<requester>` and `queue:<requester>`.
/// ARGV: the queue TTL (s), then per notice its JSON (empty: only drop the record).
/// Returns the number of notices queued.
pub(super) static NOTICES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local queued = 0
for i = 2, #ARGV do
  local k = (i - 2) * 3
  if redis.call('DEL', KEYS[k + 1]) == 1 and ARGV[i] ~= ''
      and redis.call('GET', KEYS[k + 2]) == 'ACTIVE' then
    redis.call('RPUSH', KEYS[k + 3], ARGV[i])
    redis.call('EXPIRE', KEYS[k + 3], ARGV[1], 'NX')
    queued = queued + 1
  end
end
return queued
",
    )
});

/// Puts messages back at the head of an active queue, oldest first.
///
/// KEYS: `active:<uid>`, `queue:<uid>`. ARGV: the queue TTL (s), then the messages in delivery
/// order. Returns the number of messages put back.
pub(super) static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= 'ACTIVE' then return 0 end
for i = #ARGV, 2, -1 do redis.call('LPUSH', KEYS[2], ARGV[i]) end
redis.call('EXPIRE', KEYS[2], ARGV[1], 'NX')
return #ARGV - 1
",
    )
});

/// A heartbeat of a registered mailbox (active or terminated): Redis `TIME` as Academy writes
/// it (`<seconds>.<microseconds>`), and the registration keys' TTLs refreshed. An unknown id
/// writes nothing.
///
/// KEYS: `active:<uid>`, `heartbeat:<uid>`, then the other registration keys (TTL refreshed).
/// ARGV: the TTL (s). Returns 1 if written, 0 for an unknown id.
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = redis.call('TIME')
redis.call('SET', KEYS[2], now[1] .. '.' .. string.format('%06d', tonumber(now[2])))
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return 1
",
    )
});
