//! Counters that limits and budgets keep per caller: in this process, or in
//! Redis so that every replica sees the same numbers. Both keep the same
//! semantics, each operation atomic (a Lua script in Redis, one lock in
//! memory), and every key expires, so nothing grows without bound.
//!
//! - requests per minute: a sliding-window log (admitted requests in any
//!   60 s never exceed the limit);
//! - tokens per minute: six 10-second buckets (checked before, added after);
//! - budgets: per day and per month, in micro-dollars: `spent`, and the
//!   reservations in flight as *leases* (a sorted set scored by deadline).
//!   A request reserves its maximum cost atomically against both periods
//!   and settles the real cost when it is known. Settling removes the lease
//!   and adds the cost only if the lease was still there, so a settle can
//!   be retried safely; a lease whose settle never comes (a crash, Redis
//!   gone at the wrong moment) expires at its deadline instead of holding
//!   the budget for the rest of the month.
//!
//! Every key of one caller shares the hash tag `{name}`, so the scripts'
//! keys sit in one slot on a Redis Cluster too.

pub mod guard;
mod memory;
pub mod resp;
mod scripts;

use resp::{Client, Endpoint, RedisError};
use scripts::{ADD, LEASED, LIMITS, RESERVE_BODY, SETTLE, USAGE_BODY};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one usage report may add to a token counter: an upstream that
/// reports an absurd count (2^64) must not wrap a counter negative (which
/// would lift the key's TPM limit) nor overflow Redis's INCRBY.
const MAX_TOKEN_COUNT: u64 = 1 << 40;

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
/// (micro-dollars, after the reservation when it was made; negative when
/// already overspent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub ok: bool,
    /// The budget that refused it, when one did.
    pub refused_by: Option<Period>,
    pub day_left: Option<i64>,
    pub month_left: Option<i64>,
}

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

/// How long a reservation holds the budget if it is never settled.
pub const LEASE_MS: u64 = 3_600_000;

/// Ms from `now` to the start of the next UTC day (`Period::Day`) or month.
pub fn until_next(period: Period, now: u64) -> u64 {
    let day_ms = 86_400_000;
    let to_tomorrow = day_ms - now % day_ms;
    match period {
        Period::Day => to_tomorrow,
        Period::Month => {
            let mut days = now / day_ms + 1;
            while civil_from_days(days as i64).2 != 1 {
                days += 1;
            }
            days * day_ms - now
        }
    }
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

/// Budget keys live a little longer than their period (day, month).
const TTLS: [u64; 2] = [2 * 86_400_000, 40 * 86_400_000];

/// One request's reservation: a unique member and its amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub member: String,
    pub amount: i64,
}

impl Lease {
    pub fn new(amount: i64) -> Lease {
        Lease {
            member: format!("{:016x}:{amount}", rand::random::<u64>()),
            amount,
        }
    }
}

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
    format!("slmgate:{{{name}}}:rpm")
}
fn tpm_keys(name: &str, now: u64) -> Vec<String> {
    let b = now / TPM_BUCKET_MS;
    (0..6)
        .map(|i| format!("slmgate:{{{name}}}:tpm:{}", b - i))
        .collect()
}
/// Day spent, month spent, day leases, month leases.
fn budget_keys(name: &str, p: &Periods) -> [String; 4] {
    [
        format!("slmgate:{{{name}}}:spent:{}", p.day),
        format!("slmgate:{{{name}}}:spent:{}", p.month),
        format!("slmgate:{{{name}}}:leases:{}", p.day),
        format!("slmgate:{{{name}}}:leases:{}", p.month),
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

    /// A key's rates in one step: refused by its tokens of the last minute
    /// (`tpm`, checked first) or its requests (`rpm`, the request counted
    /// when admitted). `Some((limit, wait))` when refused.
    pub async fn admit(
        &self,
        name: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> Result<Option<(&'static str, Duration)>, StoreError> {
        let now = now_ms();
        let refused = match self {
            Store::Memory(m) => {
                let t = tpm.map_or(0, |l| {
                    m.check_tokens(&tpm_keys(name, now), l, tpm_wait(now))
                });
                if t > 0 {
                    Some(("tpm", t))
                } else {
                    let r = rpm.map_or(0, |l| {
                        m.admit_request(&rpm_key(name), l, now, RPM_WINDOW_MS)
                    });
                    (r > 0).then_some(("rpm", r))
                }
            }
            Store::Redis(r) => {
                let rpm_key = rpm_key(name);
                let buckets = tpm_keys(name, now);
                let mut keys: Vec<&str> = vec![&rpm_key];
                keys.extend(buckets.iter().map(String::as_str));
                let member = format!("{now}-{:016x}", rand::random::<u64>());
                let limit = |l: Option<u64>| l.map_or(-1, |l| l as i64).to_string();
                let reply = r
                    .client
                    .eval(
                        LIMITS,
                        &keys,
                        &[
                            &now.to_string(),
                            &limit(rpm),
                            &RPM_WINDOW_MS.to_string(),
                            &member,
                            &limit(tpm),
                            &tpm_wait(now).to_string(),
                        ],
                    )
                    .await?;
                let n = |i: usize| reply.items().get(i).and_then(|r| r.as_int()).unwrap_or(0);
                match n(0) {
                    1 => Some(("rpm", n(1).max(1) as u64)),
                    2 => Some(("tpm", n(1).max(1) as u64)),
                    _ => None,
                }
            }
        };
        Ok(refused.map(|(l, ms)| (l, Duration::from_millis(ms))))
    }

    /// Count `tokens` used now.
    pub async fn add_tokens(&self, name: &str, tokens: u64) -> Result<(), StoreError> {
        let tokens = tokens.min(MAX_TOKEN_COUNT);
        let now = now_ms();
        let key = &tpm_keys(name, now)[0];
        match self {
            Store::Memory(m) => m.add(key, tokens as i64, now + 7 * TPM_BUCKET_MS),
            Store::Redis(r) => {
                let ttl = (7 * TPM_BUCKET_MS).to_string();
                r.client
                    .eval(ADD, &[key], &[&tokens.to_string(), &ttl])
                    .await?;
            }
        }
        Ok(())
    }

    /// Reserve `amount` micro-dollars as `lease` (unique per request); not
    /// `ok` when a budget would be overspent (nothing reserved then).
    pub async fn reserve(
        &self,
        name: &str,
        periods: &Periods,
        lease: &Lease,
        limits: BudgetLimits,
    ) -> Result<Reserved, StoreError> {
        let keys = budget_keys(name, periods);
        let now = now_ms();
        let deadline = now + LEASE_MS;
        match self {
            Store::Memory(m) => Ok(m.reserve(&keys, lease, limits, now, deadline, TTLS)),
            Store::Redis(r) => {
                let script = format!("{LEASED}{RESERVE_BODY}");
                let reply = r
                    .client
                    .eval(
                        &script,
                        &[&keys[0], &keys[1], &keys[2], &keys[3]],
                        &[
                            &lease.amount.to_string(),
                            &limits.day.unwrap_or(-1).to_string(),
                            &limits.month.unwrap_or(-1).to_string(),
                            &TTLS[0].to_string(),
                            &TTLS[1].to_string(),
                            &now.to_string(),
                            &deadline.to_string(),
                            &lease.member,
                        ],
                    )
                    .await?;
                let items = reply.items();
                let verdict = items.first().and_then(|r| r.as_int());
                let left = |i: usize| items.get(i).and_then(|r| r.as_int());
                Ok(Reserved {
                    ok: verdict == Some(0),
                    refused_by: match verdict {
                        Some(1) => Some(Period::Day),
                        Some(2) => Some(Period::Month),
                        _ => None,
                    },
                    day_left: left(1),
                    month_left: left(2),
                })
            }
        }
    }

    /// Settle `lease` with the real cost `spent`: the lease is released and
    /// the cost counted, once (a repeated settle does nothing).
    pub async fn settle(
        &self,
        name: &str,
        periods: &Periods,
        lease: &Lease,
        spent: i64,
    ) -> Result<(), StoreError> {
        let keys = budget_keys(name, periods);
        match self {
            Store::Memory(m) => m.settle(&keys, lease, spent, TTLS),
            Store::Redis(r) => {
                r.client
                    .eval(
                        SETTLE,
                        &[&keys[0], &keys[1], &keys[2], &keys[3]],
                        &[
                            &lease.member,
                            &spent.to_string(),
                            &TTLS[0].to_string(),
                            &TTLS[1].to_string(),
                        ],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Settle right away when the counters are in this process (`false`:
    /// they are in Redis, call `settle`).
    pub fn settle_local(&self, name: &str, periods: &Periods, lease: &Lease, spent: i64) -> bool {
        match self {
            Store::Memory(m) => {
                m.settle(&budget_keys(name, periods), lease, spent, TTLS);
                true
            }
            Store::Redis(_) => false,
        }
    }

    /// Count tokens right away when the counters are in this process.
    pub fn add_tokens_local(&self, name: &str, tokens: u64) -> bool {
        let tokens = tokens.min(MAX_TOKEN_COUNT);
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

    /// A blob from Redis (`None`: absent, or counters in this process).
    pub async fn blob_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(_) => Ok(None),
            Store::Redis(r) => match r.client.cmd(&[b"GET", key.as_bytes()]).await? {
                resp::Reply::Bulk(b) => Ok(b),
                _ => Ok(None),
            },
        }
    }

    /// Put a blob into Redis for `ttl_ms` (nothing with counters in this
    /// process).
    pub async fn blob_set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreError> {
        if let Store::Redis(r) = self {
            let ttl = ttl_ms.to_string();
            r.client
                .cmd(&[b"SET", key.as_bytes(), value, b"PX", ttl.as_bytes()])
                .await?;
        }
        Ok(())
    }

    /// A key's usage now.
    pub async fn usage(&self, name: &str) -> Result<Usage, StoreError> {
        let now = now_ms();
        let periods = Periods::now();
        let budget = budget_keys(name, &periods);
        let tpm = tpm_keys(name, now);
        match self {
            Store::Memory(m) => Ok(m.usage(&rpm_key(name), &tpm, &budget, now, RPM_WINDOW_MS)),
            Store::Redis(r) => {
                let rpm = rpm_key(name);
                let mut keys: Vec<&str> = vec![&rpm];
                keys.extend(budget.iter().map(String::as_str));
                keys.extend(tpm.iter().map(String::as_str));
                let script = format!("{LEASED}{USAGE_BODY}");
                let reply = r
                    .client
                    .eval(
                        &script,
                        &keys,
                        &[&now.to_string(), &RPM_WINDOW_MS.to_string()],
                    )
                    .await?;
                let n = |i: usize| reply.items().get(i).and_then(|r| r.as_int()).unwrap_or(0);
                Ok(Usage {
                    requests_last_minute: n(0),
                    tokens_last_minute: n(1),
                    day: Spend {
                        spent: n(2),
                        reserved: n(3),
                    },
                    month: Spend {
                        spent: n(4),
                        reserved: n(5),
                    },
                })
            }
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
            assert_eq!(s.admit("k", Some(3), None).await.unwrap(), None);
        }
        assert_eq!(s.admit("k", Some(3), None).await.unwrap().unwrap().0, "rpm");
        assert_eq!(s.admit("other", Some(3), None).await.unwrap(), None);
        s.add_tokens("k", 90).await.unwrap();
        assert_eq!(s.admit("k", None, Some(100)).await.unwrap(), None);
        s.add_tokens("k", 10).await.unwrap();
        assert_eq!(
            s.admit("k", None, Some(100)).await.unwrap().unwrap().0,
            "tpm"
        );
        let p = Periods::now();
        let lim = BudgetLimits {
            day: Some(100),
            month: Some(1000),
        };
        let first = Lease::new(60);
        let r = s.reserve("k", &p, &first, lim).await.unwrap();
        assert!(r.ok);
        assert_eq!((r.day_left, r.month_left), (Some(40), Some(940)));
        let refused = s.reserve("k", &p, &Lease::new(60), lim).await.unwrap();
        assert!(!refused.ok, "60 + 60 > 100");
        assert_eq!(refused.refused_by, Some(Period::Day));
        s.settle("k", &p, &first, 30).await.unwrap();
        s.settle("k", &p, &first, 30).await.unwrap(); // a retry counts once
        assert!(
            s.reserve("k", &p, &Lease::new(60), lim).await.unwrap().ok,
            "30 spent + 60 <= 100"
        );
        let u = s.usage("k").await.unwrap();
        assert_eq!((u.day.spent, u.day.reserved), (30, 60));
        assert_eq!(u.requests_last_minute, 3);
        assert_eq!(u.tokens_last_minute, 100);
    }

    #[tokio::test]
    async fn rates_in_one_step_tokens_first() {
        let s = Store::memory();
        assert_eq!(s.admit("k", Some(2), Some(100)).await.unwrap(), None);
        s.add_tokens("k", 100).await.unwrap();
        let (limit, wait) = s.admit("k", Some(2), Some(100)).await.unwrap().unwrap();
        assert_eq!(limit, "tpm");
        assert!(wait.as_millis() > 0);
        // Refused by its tokens, the request was not counted against rpm.
        assert_eq!(s.admit("k", Some(2), None).await.unwrap(), None);
        let (limit, _) = s.admit("k", Some(2), None).await.unwrap().unwrap();
        assert_eq!(limit, "rpm");
    }

    #[test]
    fn leases_expire_and_over_budget_is_reported() {
        let m = memory::Memory::default();
        let keys = budget_keys("k", &Periods::now());
        let lim = BudgetLimits {
            day: Some(100),
            month: None,
        };
        let now = now_ms();
        let lost = Lease::new(90);
        assert!(m.reserve(&keys, &lost, lim, now, now + 1_000, TTLS).ok);
        assert!(
            !m.reserve(&keys, &Lease::new(20), lim, now, now + 1_000, TTLS)
                .ok
        );
        // Its settle never came: once past its deadline the lease is gone.
        let later = now + 2_000;
        let r = m.reserve(&keys, &Lease::new(20), lim, later, later + 1_000, TTLS);
        assert!(r.ok, "the expired lease no longer holds the budget");
        assert_eq!((r.day_left, r.month_left), (Some(80), None));
        // A settle that comes after expiry does not count twice.
        m.settle(&keys, &lost, 90, TTLS);
        let over = m.reserve(&keys, &Lease::new(1), lim, later, later + 1_000, TTLS);
        assert_eq!(over.day_left, Some(79));
    }

    #[test]
    fn budget_periods_restart_at_utc_midnight_and_the_first() {
        let day = 86_400_000;
        // 2026-11-29T12:00Z: tomorrow in 12 h, December in 2.5 days.
        let now = 20_786 * day + day / 2;
        assert_eq!(until_next(Period::Day, now), day / 2);
        assert_eq!(until_next(Period::Month, now), day + day / 2);
        // 2024-02-29 (leap year): March 1st is next.
        let leap = 19_782 * day;
        assert_eq!(until_next(Period::Month, leap), day);
    }
}
