//! The counters in this process: the same semantics as the Redis scripts,
//! each operation under one lock, entries dropped when they expire.

use super::{BudgetLimits, Lease, Period, Reserved, Spend, Usage};
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
    /// Budget periods: spent, with its expiry.
    spent: HashMap<String, (i64, u64)>,
    /// Budget periods' leases: member -> (amount, deadline).
    leases: HashMap<String, HashMap<String, (i64, u64)>>,
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
        self.spent.retain(|_, (_, exp)| *exp > now);
        self.leases.retain(|_, l| {
            l.retain(|_, (_, deadline)| *deadline > now);
            !l.is_empty()
        });
    }

    fn counter(&self, key: &str, now: u64) -> i64 {
        self.counters
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map_or(0, |(v, _)| *v)
    }

    /// A period's spend and live reservations (`keys`: spent, leases).
    fn spend(&self, spent: &str, leases: &str, now: u64) -> Spend {
        Spend {
            spent: self
                .spent
                .get(spent)
                .filter(|(_, exp)| *exp > now)
                .map_or(0, |(v, _)| *v),
            reserved: self.leases.get(leases).map_or(0, |l| {
                l.values()
                    .filter(|(_, deadline)| *deadline > now)
                    .map(|(a, _)| a)
                    .sum()
            }),
        }
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
        g.sweep(now, super::RPM_WINDOW_MS);
        let v = g.counter(key, now).saturating_add(n);
        g.counters.insert(key.to_string(), (v, expires));
    }

    /// `keys`: day spent, month spent, day leases, month leases.
    pub fn reserve(
        &self,
        keys: &[String; 4],
        lease: &Lease,
        limits: BudgetLimits,
        now: u64,
        deadline: u64,
        ttls: [u64; 2],
    ) -> Reserved {
        let mut g = self.lock();
        g.sweep(now, super::RPM_WINDOW_MS);
        let limits = [limits.day, limits.month];
        let used: Vec<i64> = (0..2)
            .map(|i| {
                let s = g.spend(&keys[i], &keys[2 + i], now);
                s.spent + s.reserved
            })
            .collect();
        let refused = (0..2).find(|&i| limits[i].is_some_and(|l| used[i] + lease.amount > l));
        let ok = refused.is_none();
        if ok {
            for i in 0..2 {
                g.leases
                    .entry(keys[2 + i].clone())
                    .or_default()
                    .insert(lease.member.clone(), (lease.amount, deadline));
                let exp = now + ttls[i];
                if let Some(s) = g.spent.get_mut(&keys[i]) {
                    s.1 = s.1.max(exp);
                }
            }
        }
        let after = |i: usize| used[i] + if ok { lease.amount } else { 0 };
        Reserved {
            ok,
            refused_by: refused.map(|i| if i == 0 { Period::Day } else { Period::Month }),
            day_left: limits[0].map(|l| l - after(0)),
            month_left: limits[1].map(|l| l - after(1)),
        }
    }

    /// Release `lease` and count `spent`, once.
    pub fn settle(&self, keys: &[String; 4], lease: &Lease, spent: i64, ttls: [u64; 2]) {
        let now = super::now_ms();
        let mut g = self.lock();
        g.sweep(now, super::RPM_WINDOW_MS);
        for i in 0..2 {
            let held = g
                .leases
                .get_mut(&keys[2 + i])
                .and_then(|l| l.remove(&lease.member))
                .is_some();
            if held {
                let v = g
                    .spent
                    .get(&keys[i])
                    .filter(|(_, e)| *e > now)
                    .map_or(0, |x| x.0);
                g.spent.insert(keys[i].clone(), (v + spent, now + ttls[i]));
            }
        }
    }

    pub fn usage(
        &self,
        rpm: &str,
        tpm: &[String],
        budgets: &[String; 4],
        now: u64,
        window: u64,
    ) -> Usage {
        let g = self.lock();
        Usage {
            requests_last_minute: g.logs.get(rpm).map_or(0, |l| {
                l.iter().filter(|&&t| t + window > now).count() as i64
            }),
            tokens_last_minute: tpm.iter().map(|k| g.counter(k, now)).sum(),
            day: g.spend(&budgets[0], &budgets[2], now),
            month: g.spend(&budgets[1], &budgets[3], now),
        }
    }
}
