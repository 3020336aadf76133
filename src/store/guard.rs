//! The store as the request path uses it: the policy's choice of where the
//! counters live, and what happens when Redis cannot answer — admit and
//! count it (`open`, logged at most once a minute) or refuse with 503
//! (`closed`). Every call is bounded by the client's timeout, so a dead
//! Redis costs `timeout_ms`, never a hang, and the next call reconnects.

use super::{Store, StoreError};
use crate::config::{FailMode, Policy};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Shared {
    pub store: Store,
    fail: FailMode,
    metrics: Arc<Metrics>,
    /// When a store failure was last logged (ms since the epoch).
    logged: AtomicU64,
    /// Settles still on their way to the store.
    pending: Arc<Pending>,
}

#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    done: tokio::sync::Notify,
}

/// Held by a settle on its way to the store; `Shared::drain` waits for it.
pub struct PendingGuard(Arc<Pending>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

impl Shared {
    /// The policy's store: Redis with `state: {redis_url}`, else this process.
    pub fn new(policy: &Policy, metrics: Arc<Metrics>) -> Result<Shared, String> {
        let (store, fail) = match &policy.state {
            Some(s) => (
                Store::Redis(super::RedisStore::new(
                    &s.redis_url,
                    Duration::from_millis(s.timeout_ms),
                )?),
                s.on_unavailable,
            ),
            None => (Store::memory(), FailMode::Open),
        };
        Ok(Shared {
            store,
            fail,
            metrics,
            logged: AtomicU64::new(0),
            pending: Arc::default(),
        })
    }

    /// Count a settle in flight until the guard drops.
    pub fn pending(&self) -> PendingGuard {
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        PendingGuard(self.pending.clone())
    }

    /// Wait (at most `limit`) for the settles in flight to reach the store,
    /// so a shutdown does not lose what the last answers cost.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = self.pending.done.notified();
            if self.pending.count.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                let left = self.pending.count.load(Ordering::Acquire);
                tracing::warn!(
                    left,
                    "settles still pending at shutdown; their leases expire instead"
                );
                return;
            }
        }
    }

    /// The store's answer; when it has none, `Ok(None)` (fail-open: carry
    /// on without it) or a 503 (fail-closed).
    pub fn judge<T>(
        &self,
        op: &'static str,
        r: Result<T, StoreError>,
    ) -> Result<Option<T>, GatewayError> {
        let e = match r {
            Ok(v) => return Ok(Some(v)),
            Err(e) => e,
        };
        self.judge_soft(op, e);
        match self.fail {
            FailMode::Open => Ok(None),
            // The client is not told where the state lives.
            FailMode::Closed => Err(GatewayError::BackendUnavailable(
                "shared state unavailable: limits cannot be checked (state.on_unavailable: closed)"
                    .into(),
            )),
        }
    }

    /// Count and (at most once a minute) log a failure that changes nothing
    /// for the request (a cache lookup, a settle being retried).
    pub fn judge_soft(&self, op: &'static str, e: StoreError) {
        self.metrics.state_errors.with_label_values(&[op]).inc();
        let now = super::now_ms();
        let last = self.logged.load(Ordering::Relaxed);
        if now >= last + 60_000
            && self
                .logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(op, error = %e, fail = ?self.fail, "shared state unavailable (logged at most once a minute)");
        }
    }
}
