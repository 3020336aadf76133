//! Counters that limits and budgets keep per caller: in this process, or in
//! Redis so that every replica sees the same numbers. Both keep the same
//! semantics, each operation atomic (a Lua script in Redis, one lock in
//! memory), and every key expires, so nothing grows without bound.
//!
//! - requests per minute: a sliding-window log (admitted requests in any
//!   60 s never exceed the limit);
//! - tokens per minute: six 10-second buckets (checked before, added after);
//! - budgets: per day and per month, `spent` and `reserved` in micro-dollars;
//!   a request reserves its maximum cost atomically against both periods,
//!   settles the real cost when it is known, releases the rest.

pub mod guard;
mod memory;
pub mod resp;

use resp::{Client, Endpoint, RedisError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the counters live.
pub enum Store {
    Memory(memory::Memory),
    Redis(RedisStore),
}

/// The store could not answer (Redis down or too slow).
#[derive(Debug, Clone, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub struct StoreError(pub String);

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        StoreError(e.to_string())
    }
}

/// A limit's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the limit: try again after this long.
    No {
        retry_after: Duration,
    },
}

/// The budget periods a reservation counts against (UTC day and month).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    pub day: String,
    pub month: String,
}

impl Periods {
    pub fn now() -> Periods {
        let days = now_ms() / 86_400_000;
        let (y, m, d) = civil_from_days(days as i64);
        Periods {
            day: format!("{y:04}-{m:02}-{d:02}"),
            month: format!("{y:04}-{m:02}"),
        }
    }
}

/// Budget limits in micro-dollars (`None`: no limit for that period).
#[derive(Debug, Clone, Copy, Default)]
pub struct BudgetLimits {
    pub day: Option<i64>,
    pub month: Option<i64>,
}

/// A reservation's outcome, with what is left of each limited budget
/// (micro-dollars, after the reservation when it was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub ok: bool,
    pub day_left: Option<i64>,
    pub month_left: Option<i64>,
}

/// Spent and reserved micro-dollars of one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub spent: i64,
    pub reserved: i64,
}

/// What a key has used so far.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub requests_last_minute: i64,
    pub tokens_last_minute: i64,
    pub day: Spend,
    pub month: Spend,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const RPM_WINDOW_MS: u64 = 60_000;
const TPM_BUCKET_MS: u64 = 10_000;

/// Admit one request under `limit` per minute (sliding log of the last 60 s).
const RPM: &str = r#"
local now = tonumber(ARGV[1]); local limit = tonumber(ARGV[2]); local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"#;

/// Tokens in the six 10 s buckets of the last minute; over `limit`: the
/// wait until the oldest bucket drops out, else 0.
const TPM_CHECK: &str = r#"
local limit = tonumber(ARGV[1]); local wait = tonumber(ARGV[2]); local total = 0
for i = 1, #KEYS do total = total + tonumber(redis.call('GET', KEYS[i]) or '0') end
if total >= limit then return wait end
return 0
"#;

/// Reserve ARGV[1] micro-dollars against the day (KEYS[1]) and month
/// (KEYS[2]) budgets, limits ARGV[2]/ARGV[3] (-1: none). Returns
/// {verdict, day left, month left}: verdict 0 (reserved), or 1 (day) / 2
/// (month) for the budget that would be overspent; left -1 when no limit.
const RESERVE: &str = r#"
local amount = tonumber(ARGV[1])
local limits = { tonumber(ARGV[2]), tonumber(ARGV[3]) }
local used = {}
local verdict = 0
for i = 1, 2 do
  used[i] = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
    + tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')
  if verdict == 0 and limits[i] >= 0 and used[i] + amount > limits[i] then verdict = i end
end
if verdict == 0 then
  for i = 1, 2 do
    redis.call('HINCRBY', KEYS[i], 'reserved', amount)
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[3 + i]))
    used[i] = used[i] + amount
  end
end
local left = {}
for i = 1, 2 do
  if limits[i] >= 0 then left[i] = limits[i] - used[i] else left[i] = -1 end
end
return { verdict, left[1], left[2] }
"#;

/// Settle a reservation: release ARGV[1], add the real cost ARGV[2].
const SETTLE: &str = r#"
for i = 1, 2 do
  redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[1]))
  redis.call('HINCRBY', KEYS[i], 'spent', tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 + i]))
end
return 0
"#;

/// Budget keys live a little longer than their period.
const DAY_TTL_MS: u64 = 2 * 86_400_000;
const MONTH_TTL_MS: u64 = 40 * 86_400_000;

pub struct RedisStore {
    client: Client,
}

impl RedisStore {
    /// A store on `redis_url`; nothing is connected until the first command.
    pub fn new(redis_url: &str, timeout: Duration) -> Result<RedisStore, String> {
        Ok(RedisStore {
            client: Client::new(Endpoint::parse(redis_url)?, timeout, 16),
        })
    }
}

fn rpm_key(name: &str) -> String {
    format!("slmgate:rpm:{name}")
}
fn tpm_keys(name: &str, now: u64) -> Vec<String> {
    let b = now / TPM_BUCKET_MS;
    (0..6)
        .map(|i| format!("slmgate:tpm:{name}:{}", b - i))
        .collect()
}
fn budget_keys(name: &str, p: &Periods) -> [String; 2] {
    [
        format!("slmgate:budget:{name}:{}", p.day),
        format!("slmgate:budget:{name}:{}", p.month),
    ]
}
/// How long until the oldest 10 s bucket of the window drops out.
fn tpm_wait(now: u64) -> u64 {
    TPM_BUCKET_MS - now % TPM_BUCKET_MS
}

impl Store {
    /// In this process only.
    pub fn memory() -> Store {
        Store::Memory(memory::Memory::default())
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// Admit one request under `limit` requests per minute.
    pub async fn admit_request(&self, name: &str, limit: u64) -> Result<Admit, StoreError> {
        let now = now_ms();
        let wait = match self {
            Store::Memory(m) => m.admit_request(name, limit, now, RPM_WINDOW_MS),
            Store::Redis(r) => {
                let member = format!("{now}-{:016x}", rand::random::<u64>());
                let reply = r
                    .client
                    .eval(
                        RPM,
                        &[&rpm_key(name)],
                        &[
                            &now.to_string(),
                            &limit.to_string(),
                            &RPM_WINDOW_MS.to_string(),
                            &member,
                        ],
                    )
                    .await?;
                reply.as_int().unwrap_or(0).max(0) as u64
            }
        };
        Ok(admit(wait))
    }

    /// Whether the tokens of the last minute are still under `limit`.
    pub async fn check_tokens(&self, name: &str, limit: u64) -> Result<Admit, StoreError> {
        let now = now_ms();
        let wait = match self {
            Store::Memory(m) => m.check_tokens(&tpm_keys(name, now), limit, tpm_wait(now)),
            Store::Redis(r) => {
                let keys = tpm_keys(name, now);
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                let reply = r
                    .client
                    .eval(
                        TPM_CHECK,
                        &keys,
                        &[&limit.to_string(), &tpm_wait(now).to_string()],
                    )
                    .await?;
                reply.as_int().unwrap_or(0).max(0) as u64
            }
        };
        Ok(admit(wait))
    }

    /// Count `tokens` used now.
    pub async fn add_tokens(&self, name: &str, tokens: u64) -> Result<(), StoreError> {
        let now = now_ms();
        let key = &tpm_keys(name, now)[0];
        match self {
            Store::Memory(m) => m.add(key, tokens as i64, now + 7 * TPM_BUCKET_MS),
            Store::Redis(r) => {
                let n = tokens.to_string();
                let ttl = (7 * TPM_BUCKET_MS).to_string();
                r.client
                    .cmd(&[b"INCRBY", key.as_bytes(), n.as_bytes()])
                    .await?;
                r.client
                    .cmd(&[b"PEXPIRE", key.as_bytes(), ttl.as_bytes()])
                    .await?;
            }
        }
        Ok(())
    }

    /// Reserve `amount` micro-dollars; not `ok` when a budget would be
    /// overspent (nothing reserved then).
    pub async fn reserve(
        &self,
        name: &str,
        periods: &Periods,
        amount: i64,
        limits: BudgetLimits,
    ) -> Result<Reserved, StoreError> {
        let keys = budget_keys(name, periods);
        match self {
            Store::Memory(m) => Ok(m.reserve(&keys, amount, limits, [DAY_TTL_MS, MONTH_TTL_MS])),
            Store::Redis(r) => {
                let reply = r
                    .client
                    .eval(
                        RESERVE,
                        &[&keys[0], &keys[1]],
                        &[
                            &amount.to_string(),
                            &limits.day.unwrap_or(-1).to_string(),
                            &limits.month.unwrap_or(-1).to_string(),
                            &DAY_TTL_MS.to_string(),
                            &MONTH_TTL_MS.to_string(),
                        ],
                    )
                    .await?;
                let n = |i: usize| reply.items().get(i).and_then(|r| r.as_int());
                let left = |i: usize| n(i).filter(|&v| v >= 0);
                Ok(Reserved {
                    ok: n(0) == Some(0),
                    day_left: left(1),
                    month_left: left(2),
                })
            }
        }
    }

    /// Release a reservation of `reserved` and count `spent` instead.
    pub async fn settle(
        &self,
        name: &str,
        periods: &Periods,
        reserved: i64,
        spent: i64,
    ) -> Result<(), StoreError> {
        let keys = budget_keys(name, periods);
        match self {
            Store::Memory(m) => m.settle(&keys, reserved, spent, [DAY_TTL_MS, MONTH_TTL_MS]),
            Store::Redis(r) => {
                r.client
                    .eval(
                        SETTLE,
                        &[&keys[0], &keys[1]],
                        &[
                            &reserved.to_string(),
                            &spent.to_string(),
                            &DAY_TTL_MS.to_string(),
                            &MONTH_TTL_MS.to_string(),
                        ],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Settle right away when the counters are in this process (`false`:
    /// they are in Redis, call `settle`).
    pub fn settle_local(&self, name: &str, periods: &Periods, reserved: i64, spent: i64) -> bool {
        match self {
            Store::Memory(m) => {
                m.settle(
                    &budget_keys(name, periods),
                    reserved,
                    spent,
                    [DAY_TTL_MS, MONTH_TTL_MS],
                );
                true
            }
            Store::Redis(_) => false,
        }
    }

    /// Count tokens right away when the counters are in this process.
    pub fn add_tokens_local(&self, name: &str, tokens: u64) -> bool {
        match self {
            Store::Memory(m) => {
                let now = now_ms();
                m.add(
                    &tpm_keys(name, now)[0],
                    tokens as i64,
                    now + 7 * TPM_BUCKET_MS,
                );
                true
            }
            Store::Redis(_) => false,
        }
    }

    /// A key's usage now.
    pub async fn usage(&self, name: &str) -> Result<Usage, StoreError> {
        let now = now_ms();
        let periods = Periods::now();
        let [day, month] = budget_keys(name, &periods);
        let tpm = tpm_keys(name, now);
        match self {
            Store::Memory(m) => {
                Ok(m.usage(&rpm_key(name), &tpm, [&day, &month], now, RPM_WINDOW_MS))
            }
            Store::Redis(r) => {
                let c = &r.client;
                let from = now.saturating_sub(RPM_WINDOW_MS).to_string();
                let requests = c
                    .cmd(&[
                        b"ZCOUNT",
                        rpm_key(name).as_bytes(),
                        from.as_bytes(),
                        b"+inf",
                    ])
                    .await?
                    .as_int()
                    .unwrap_or(0);
                let mut tokens = 0;
                for k in &tpm {
                    tokens += c.cmd(&[b"GET", k.as_bytes()]).await?.as_int().unwrap_or(0);
                }
                let mut spend = [Spend::default(); 2];
                for (s, k) in spend.iter_mut().zip([&day, &month]) {
                    let reply = c
                        .cmd(&[b"HMGET", k.as_bytes(), b"spent", b"reserved"])
                        .await?;
                    let items = reply.items();
                    s.spent = items.first().and_then(|r| r.as_int()).unwrap_or(0);
                    s.reserved = items.get(1).and_then(|r| r.as_int()).unwrap_or(0);
                }
                Ok(Usage {
                    requests_last_minute: requests,
                    tokens_last_minute: tokens,
                    day: spend[0],
                    month: spend[1],
                })
            }
        }
    }
}

fn admit(wait_ms: u64) -> Admit {
    if wait_ms == 0 {
        Admit::Yes
    } else {
        Admit::No {
            retry_after: Duration::from_millis(wait_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
    }

    #[tokio::test]
    async fn memory_store_limits_and_budgets() {
        let s = Store::memory();
        for _ in 0..3 {
            assert_eq!(s.admit_request("k", 3).await.unwrap(), Admit::Yes);
        }
        assert!(matches!(
            s.admit_request("k", 3).await.unwrap(),
            Admit::No { .. }
        ));
        assert_eq!(s.admit_request("other", 3).await.unwrap(), Admit::Yes);
        s.add_tokens("k", 90).await.unwrap();
        assert_eq!(s.check_tokens("k", 100).await.unwrap(), Admit::Yes);
        s.add_tokens("k", 10).await.unwrap();
        assert!(matches!(
            s.check_tokens("k", 100).await.unwrap(),
            Admit::No { .. }
        ));
        let p = Periods::now();
        let lim = BudgetLimits {
            day: Some(100),
            month: Some(1000),
        };
        let r = s.reserve("k", &p, 60, lim).await.unwrap();
        assert!(r.ok);
        assert_eq!((r.day_left, r.month_left), (Some(40), Some(940)));
        assert!(
            !s.reserve("k", &p, 60, lim).await.unwrap().ok,
            "60 + 60 > 100"
        );
        s.settle("k", &p, 60, 30).await.unwrap();
        assert!(
            s.reserve("k", &p, 60, lim).await.unwrap().ok,
            "30 spent + 60 <= 100"
        );
        let u = s.usage("k").await.unwrap();
        assert_eq!((u.day.spent, u.day.reserved), (30, 60));
        assert_eq!(u.requests_last_minute, 3);
        assert_eq!(u.tokens_last_minute, 100);
    }
}
