//! The Lua scripts that keep each counter operation atomic in Redis (the
//! same semantics as `memory.rs`, documented in `mod.rs`).

/// A key's request and token rates in one round trip: KEYS[1] the rpm log,
/// KEYS[2..] the tpm buckets; ARGV = now, rpm limit (-1: none), window,
/// member, tpm limit (-1: none), tpm wait. Tokens are checked first (they
/// count nothing), then the request is admitted into the log. Returns
/// {0, 0}, or {1 (rpm) | 2 (tpm), wait ms}.
pub const LIMITS: &str = r#"
local now = tonumber(ARGV[1]); local rpm = tonumber(ARGV[2]); local window = tonumber(ARGV[3])
local tpm = tonumber(ARGV[5])
if tpm >= 0 then
  local total = 0
  for i = 2, #KEYS do total = total + tonumber(redis.call('GET', KEYS[i]) or '0') end
  if total >= tpm then return {2, tonumber(ARGV[6])} end
end
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, math.max(1, tonumber(oldest[2]) + window - now)}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
return {0, 0}
"#;

/// Add ARGV[1] to the counter KEYS[1], which expires ARGV[2] ms later.
pub const ADD: &str = r#"
redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 0
"#;

/// Reserved micro-dollars of one period: the live leases of KEYS[i]
/// (members `id:amount`, scored by deadline), expired ones dropped.
pub const LEASED: &str = r#"
local function leased(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local sum = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    sum = sum + tonumber(string.match(m, ':(%d+)$') or '0')
  end
  return sum
end
"#;

/// Reserve ARGV[1] micro-dollars against the day and month budgets
/// (KEYS[1]/KEYS[2]: spent; KEYS[3]/KEYS[4]: leases), limits ARGV[2]/ARGV[3]
/// (-1: none), as lease ARGV[8] until ARGV[7]. Returns {verdict, day left,
/// month left}: verdict 0 (reserved), or 1 (day) / 2 (month) for the budget
/// that would be overspent; left is a string (it may be negative) or false
/// when there is no limit.
pub const RESERVE_BODY: &str = r#"
local amount = tonumber(ARGV[1])
local limits = { tonumber(ARGV[2]), tonumber(ARGV[3]) }
local now = tonumber(ARGV[6])
local used = {}
local verdict = 0
for i = 1, 2 do
  used[i] = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0') + leased(KEYS[2 + i], now)
  if verdict == 0 and limits[i] >= 0 and used[i] + amount > limits[i] then verdict = i end
end
if verdict == 0 then
  for i = 1, 2 do
    redis.call('ZADD', KEYS[2 + i], tonumber(ARGV[7]), ARGV[8])
    redis.call('PEXPIRE', KEYS[2 + i], math.max(tonumber(ARGV[3 + i]), tonumber(ARGV[7]) - now))
    used[i] = used[i] + amount
  end
end
local left = {}
for i = 1, 2 do
  if limits[i] >= 0 then left[i] = tostring(limits[i] - used[i]) else left[i] = false end
end
return { verdict, left[1], left[2] }
"#;

/// Settle lease ARGV[1]: remove it and, if it was still there, add the real
/// cost ARGV[2] to the period's spend. Returns 1 when it was settled now.
pub const SETTLE: &str = r#"
local settled = 0
for i = 1, 2 do
  if redis.call('ZREM', KEYS[2 + i], ARGV[1]) == 1 then
    settled = 1
    redis.call('HINCRBY', KEYS[i], 'spent', tonumber(ARGV[2]))
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 + i]))
  end
end
return settled
"#;

/// A key's usage in one round trip: KEYS = rpm log, day spent, month spent,
/// day leases, month leases, then the tpm buckets; ARGV = now, window.
/// Returns {requests, tokens, day spent, day reserved, month spent, month
/// reserved}.
pub const USAGE_BODY: &str = r#"
local now = tonumber(ARGV[1])
local requests = redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[2])), '+inf')
local tokens = 0
for i = 6, #KEYS do tokens = tokens + tonumber(redis.call('GET', KEYS[i]) or '0') end
local out = { requests, tokens }
for i = 1, 2 do
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[1 + i], 'spent') or '0')
  out[#out + 1] = leased(KEYS[3 + i], now)
end
return out
"#;
