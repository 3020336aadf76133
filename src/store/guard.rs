//! The store as the request path uses it: the policy's choice of where the
//! counters live, and what happens when Redis cannot answer — admit and
//! count it (`open`, logged at most once a minute) or refuse with 503
//! (`closed`). Every call is bounded by the client's timeout, so a dead
//! Redis costs `timeout_ms`, never a hang, and the next call reconnects.

use super::{Store, StoreError};
use crate::config::{FailMode, Policy};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Shared {
    pub store: Store,
    fail: FailMode,
    metrics: Arc<Metrics>,
    /// When a store failure was last logged (ms since the epoch).
    logged: AtomicU64,
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
        })
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
        match self.fail {
            FailMode::Open => Ok(None),
            FailMode::Closed => Err(GatewayError::BackendUnavailable(format!(
                "{e}; limits cannot be checked (state.on_unavailable: closed)"
            ))),
        }
    }
}
