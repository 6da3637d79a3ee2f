//! Lua scripts: each exchange operation is one atomic `EVALSHA` (one network round trip) that
//! reads and writes exactly the keys and values Academy's transport writes with several commands.

use std::sync::LazyLock;

use redis::Script;

/// Status codes the scripts return first.
pub(crate) const MISSING: i64 = 0;
/// The mailbox is terminated.
pub(crate) const TERMINATED: i64 = 1;
/// The mailbox is active (and the operation was done).
pub(crate) const ACTIVE: i64 = 2;

/// The close sentinel Academy pushes into a terminated mailbox's queue.
pub(crate) const CLOSED: &[u8] = b"<CLOSED>";

/// Send: status check, request tracking and `RPUSH` in one step.
///
/// KEYS: `active:<dest>`, `queue:<dest>`, the tracking key (`request:<dest>:<tag>` for a
/// request, `request:<src>:<tag>` for a response), the counter (`outgoing:<src>` or
/// `completions:<src>`), `active:<src>`. ARGV: `1` for a request / `0` for a response, message
/// JSON, header JSON. The counter is raised only for a registered sender, so a forged or unknown
/// `src` leaves no key behind.
pub(crate) static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('GET', KEYS[1])
if not status then return 0 end
if status ~= 'ACTIVE' then return 1 end
local tracked
if ARGV[1] == '1' then
  redis.call('SET', KEYS[3], ARGV[3])
  tracked = true
else
  tracked = redis.call('DEL', KEYS[3]) == 1
end
if tracked and redis.call('EXISTS', KEYS[5]) == 1 then redis.call('INCRBY', KEYS[4], 1) end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 2
",
    )
});

/// Status check and request tracking of a large send, which pushes the message with a plain
/// `RPUSH` in the same `MULTI` (a megabyte through Lua's argument list costs Redis more than
/// the whole `RPUSH`). Sent with `EVAL` (never `NOSCRIPT` inside the transaction).
///
/// KEYS and ARGV as [`SEND`] without the message: `active:<dest>`, tracking key, counter,
/// `active:<src>`; flag, header JSON.
pub(crate) const TRACK: &str = r"
local status = redis.call('GET', KEYS[1])
if not status then return 0 end
if status ~= 'ACTIVE' then return 1 end
local tracked
if ARGV[1] == '1' then
  redis.call('SET', KEYS[2], ARGV[2])
  tracked = true
else
  tracked = redis.call('DEL', KEYS[2]) == 1
end
if tracked and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[3], 1) end
return 2
";

/// Ends a large send's `MULTI`: takes the just-pushed message back out of a mailbox that is not
/// active (the transaction is atomic, so it is the last element). KEYS: `active:`, `queue:`.
pub(crate) const UNDO_PUSH: &str = r"
if redis.call('GET', KEYS[1]) ~= 'ACTIVE' then redis.call('RPOP', KEYS[2]) end
return 0
";

/// Receive without blocking: status check, then pop up to ARGV[1] messages or ARGV[2] bytes.
///
/// KEYS: `active:<uid>`, `queue:<uid>`. Returns `{status, message...}`. A `<CLOSED>` sentinel
/// stops the batch and stays at the head of the queue.
pub(crate) static POP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('GET', KEYS[1])
if not status then return {0} end
if status ~= 'ACTIVE' then return {1} end
local out = {2}
local bytes = 0
local budget = tonumber(ARGV[2])
for i = 1, tonumber(ARGV[1]) do
  local m = redis.call('LPOP', KEYS[2])
  if not m then break end
  if m == '<CLOSED>' then
    redis.call('LPUSH', KEYS[2], m)
    if #out == 1 then return {1} end
    break
  end
  out[#out + 1] = m
  bytes = bytes + #m
  if bytes >= budget then break end
end
return out
",
    )
});

/// Puts messages taken but not delivered back at the head of an active mailbox's queue.
///
/// KEYS: `active:<uid>`, `queue:<uid>`. ARGV: the messages, oldest first.
pub(crate) static UNPOP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= 'ACTIVE' then return 0 end
for i = #ARGV, 1, -1 do redis.call('LPUSH', KEYS[2], ARGV[i]) end
return #ARGV
",
    )
});

/// Registers an agent unless the id exists (a terminated id stays terminated).
///
/// KEYS: `active:<uid>`, `agent:<uid>`. ARGV: comma-joined behaviours. Returns 1 if created.
pub(crate) static REGISTER_AGENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], 'ACTIVE', 'NX') then
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
",
    )
});

/// `SCAN` calls one script makes at most (`COUNT 1000` each): a huge keyspace is walked in
/// several round trips instead of stalling Redis in one script.
pub(crate) const SCAN_BUDGET: usize = 16;

/// Terminates: `INACTIVE`, queue emptied and closed, agent key removed; then takes pending
/// request headers out (the caller answers them), scanning from cursor ARGV[2] for at most
/// ARGV[3] `SCAN` calls. Returns `{next cursor, header...}` (cursor `0`: done). Called again
/// with the returned cursor it only continues the scan. A terminated mailbox returns `{0}`.
///
/// KEYS: `active:<uid>`, `queue:<uid>`, `agent:<uid>`. ARGV: request key pattern, cursor, budget.
pub(crate) static TERMINATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == '0' then
  if redis.call('GET', KEYS[1]) == 'INACTIVE' then return {'0'} end
  redis.call('SET', KEYS[1], 'INACTIVE')
  redis.call('DEL', KEYS[2])
  redis.call('RPUSH', KEYS[2], '<CLOSED>')
  redis.call('DEL', KEYS[3])
end
local out = {'0'}
local cursor = ARGV[2]
for i = 1, tonumber(ARGV[3]) do
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    local h = redis.call('GET', k)
    if h then
      redis.call('DEL', k)
      out[#out + 1] = h
    end
  end
  if cursor == '0' then break end
end
out[1] = cursor
return out
",
    )
});

/// Writes Redis `TIME` as Python's `str(float)` of the seconds (`"1795547336.627962"`), only
/// for a known mailbox (Academy writes it for any id: a key nobody ever deletes).
///
/// KEYS: `active:<uid>`, `heartbeat:<uid>`. Returns 0 for an unknown id.
pub(crate) static UPDATE_HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local frac = (string.format('%06d', tonumber(t[2])):gsub('0+$', ''))
if frac == '' then frac = '0' end
redis.call('SET', KEYS[2], t[1] .. '.' .. frac)
return 1
",
    )
});

/// Heartbeat status. KEYS: `active:<uid>`, `heartbeat:<uid>`. Returns `{status}` or
/// `{2, heartbeat, now_secs, now_micros}`.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('GET', KEYS[1])
if not status then return {0} end
if status ~= 'ACTIVE' then return {1} end
local hb = redis.call('GET', KEYS[2])
if not hb then return {2} end
local t = redis.call('TIME')
return {2, hb, t[1], t[2]}
",
    )
});

/// Raw counters. KEYS: `active:<uid>`, `queue:<uid>`, `completions:<uid>`, `outgoing:<uid>`.
/// ARGV: the request key pattern, budget. Returns `{status, queued, completed, outgoing,
/// cursor, pending}`; a cursor other than `0` is continued with [`COUNT_KEYS`].
pub(crate) static STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('GET', KEYS[1])
if not status then return {0} end
local queued = 0
local code = 1
if status == 'ACTIVE' then
  queued = redis.call('LLEN', KEYS[2])
  code = 2
end
local completed = tonumber(redis.call('GET', KEYS[3]) or '0')
local outgoing = tonumber(redis.call('GET', KEYS[4]) or '0')
local pending = 0
local cursor = '0'
for i = 1, tonumber(ARGV[2]) do
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  pending = pending + #r[2]
  if cursor == '0' then break end
end
return {code, queued, completed, outgoing, cursor, pending}
",
    )
});

/// Counts keys matching ARGV[1] from cursor ARGV[2] for at most ARGV[3] `SCAN` calls.
/// Returns `{next cursor, count}`.
pub(crate) static COUNT_KEYS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
local cursor = ARGV[2]
for i = 1, tonumber(ARGV[3]) do
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  n = n + #r[2]
  if cursor == '0' then break end
end
return {cursor, n}
",
    )
});
