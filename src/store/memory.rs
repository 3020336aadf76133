//! The counters in this process: the same semantics as the Redis scripts,
//! each operation under one lock, entries dropped when they expire.

use super::{BudgetLimits, Reserved, Spend, Usage};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Default)]
pub struct Memory {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Admission times of the last window, per key.
    logs: HashMap<String, VecDeque<u64>>,
    /// Integer counters with their expiry (ms since the epoch).
    counters: HashMap<String, (i64, u64)>,
    /// Budget periods: spent and reserved, with their expiry.
    budgets: HashMap<String, (Spend, u64)>,
    /// When expired entries were last swept.
    swept: u64,
}

impl Inner {
    /// Drop what has expired, at most once a second.
    fn sweep(&mut self, now: u64, window: u64) {
        if now < self.swept + 1_000 {
            return;
        }
        self.swept = now;
        self.logs.retain(|_, log| {
            while log.front().is_some_and(|&t| t + window <= now) {
                log.pop_front();
            }
            !log.is_empty()
        });
        self.counters.retain(|_, (_, exp)| *exp > now);
        self.budgets.retain(|_, (_, exp)| *exp > now);
    }

    fn counter(&self, key: &str, now: u64) -> i64 {
        self.counters
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map_or(0, |(v, _)| *v)
    }

    fn spend(&self, key: &str, now: u64) -> Spend {
        self.budgets
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map_or(Spend::default(), |(s, _)| *s)
    }
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// 0 when admitted, else the wait in ms.
    pub fn admit_request(&self, key: &str, limit: u64, now: u64, window: u64) -> u64 {
        let mut g = self.lock();
        g.sweep(now, window);
        let log = g.logs.entry(key.to_string()).or_default();
        while log.front().is_some_and(|&t| t + window <= now) {
            log.pop_front();
        }
        if (log.len() as u64) < limit {
            log.push_back(now);
            return 0;
        }
        log.front()
            .map_or(1, |&t| (t + window).saturating_sub(now).max(1))
    }

    /// 0 when the counters sum under `limit`, else `wait`.
    pub fn check_tokens(&self, keys: &[String], limit: u64, wait: u64) -> u64 {
        let now = super::now_ms();
        let g = self.lock();
        let total: i64 = keys.iter().map(|k| g.counter(k, now)).sum();
        if total >= limit as i64 {
            wait
        } else {
            0
        }
    }

    pub fn add(&self, key: &str, n: i64, expires: u64) {
        let now = super::now_ms();
        let mut g = self.lock();
        let v = g.counter(key, now) + n;
        g.counters.insert(key.to_string(), (v, expires));
    }

    pub fn reserve(
        &self,
        keys: &[String; 2],
        amount: i64,
        limits: BudgetLimits,
        ttls: [u64; 2],
    ) -> Reserved {
        let now = super::now_ms();
        let mut g = self.lock();
        let limits = [limits.day, limits.month];
        let used: Vec<i64> = keys
            .iter()
            .map(|k| {
                let s = g.spend(k, now);
                s.spent + s.reserved
            })
            .collect();
        let ok = used
            .iter()
            .zip(limits)
            .all(|(u, l)| l.is_none_or(|l| u + amount <= l));
        if ok {
            for (k, ttl) in keys.iter().zip(ttls) {
                let mut s = g.spend(k, now);
                s.reserved += amount;
                g.budgets.insert(k.clone(), (s, now + ttl));
            }
        }
        let after = |i: usize| used[i] + if ok { amount } else { 0 };
        Reserved {
            ok,
            day_left: limits[0].map(|l| l - after(0)),
            month_left: limits[1].map(|l| l - after(1)),
        }
    }

    pub fn settle(&self, keys: &[String; 2], reserved: i64, spent: i64, ttls: [u64; 2]) {
        let now = super::now_ms();
        let mut g = self.lock();
        for (k, ttl) in keys.iter().zip(ttls) {
            let mut s = g.spend(k, now);
            s.reserved -= reserved;
            s.spent += spent;
            g.budgets.insert(k.clone(), (s, now + ttl));
        }
    }

    pub fn usage(
        &self,
        rpm: &str,
        tpm: &[String],
        budgets: [&String; 2],
        now: u64,
        window: u64,
    ) -> Usage {
        let g = self.lock();
        Usage {
            requests_last_minute: g.logs.get(rpm).map_or(0, |l| {
                l.iter().filter(|&&t| t + window > now).count() as i64
            }),
            tokens_last_minute: tpm.iter().map(|k| g.counter(k, now)).sum(),
            day: g.spend(budgets[0], now),
            month: g.spend(budgets[1], now),
        }
    }
}
