//! Triage as served on the request path: the scorer, a cache of its results
//! (by a hash of the normalised conversation), a bound on encoder runs at
//! once, and where each call runs — inline when it costs microseconds, on
//! the blocking pool when it runs the contextual encoder (milliseconds).

use super::features::FeatureTriage;
use super::{Triage, TriageResult};
use crate::api::openai::ChatMessage;
use crate::config::TriageConfig;
use crate::metrics::Metrics;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Conversations up to this many bytes of text are triaged inline.
pub const INLINE_MAX: usize = 16 * 1024;

pub struct Triager {
    engine: Arc<dyn Triage>,
    /// Results of the full (routing) triage by conversation hash.
    cache: moka::future::Cache<u64, TriageResult>,
    /// Bounds encoder runs on the blocking pool.
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// Hash of roles and whitespace-collapsed, lower-cased texts.
pub fn cache_key(messages: &[ChatMessage]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for m in messages {
        m.role.hash(&mut h);
        for w in m.text.split_whitespace() {
            for c in w.chars().flat_map(char::to_lowercase) {
                c.hash(&mut h);
            }
            ' '.hash(&mut h);
        }
        0u8.hash(&mut h);
    }
    h.finish()
}

impl Triager {
    pub fn new(engine: Arc<dyn Triage>, cfg: &TriageConfig, metrics: Arc<Metrics>) -> Triager {
        Triager {
            engine,
            cache: moka::future::Cache::builder()
                .max_capacity(cfg.cache_size)
                .time_to_live(Duration::from_secs(cfg.cache_ttl_secs.max(1)))
                .build(),
            permits: Arc::new(Semaphore::new(cfg.max_concurrency.max(1))),
            metrics,
        }
    }

    /// The scorer's short name (`features`, `minilm`).
    pub fn name(&self) -> &'static str {
        self.engine.name()
    }

    pub fn engine(&self) -> &Arc<dyn Triage> {
        &self.engine
    }

    /// Score a conversation, with metrics. `quick`: the score only labels
    /// the answer (explicit model requests), so the cheaper estimate will do,
    /// uncached. Microsecond work (a cheap scorer, the quick estimate of a
    /// conversation up to `INLINE_MAX` bytes) runs inline: it costs less than
    /// a cache lookup or a thread hop; anything bigger goes to the blocking
    /// pool, so a huge prompt never stalls the async workers.
    pub async fn triage(&self, messages: &[ChatMessage], quick: bool) -> TriageResult {
        let t0 = Instant::now();
        let r = if quick || self.engine.is_cheap() {
            let size: usize = messages.iter().map(|m| m.text.len()).sum();
            if size <= INLINE_MAX {
                self.engine.triage_quick(messages)
            } else {
                let engine = self.engine.clone();
                let msgs = messages.to_vec();
                self.off_runtime(move || engine.triage_quick(&msgs))
                    .await
                    .unwrap_or_else(|| FeatureTriage.triage(messages))
            }
        } else {
            self.cached(messages).await
        };
        self.metrics
            .triage_duration
            .observe(t0.elapsed().as_secs_f64());
        self.metrics.triage_score.observe(r.score);
        r
    }

    async fn cached(&self, messages: &[ChatMessage]) -> TriageResult {
        let key = cache_key(messages);
        let m = &self.metrics;
        if let Some(hit) = self.cache.get(&key).await {
            m.cache.with_label_values(&["triage", "hit"]).inc();
            return hit;
        }
        m.cache.with_label_values(&["triage", "miss"]).inc();
        let engine = self.engine.clone();
        let msgs = messages.to_vec();
        let r = self
            .off_runtime(move || engine.triage(&msgs))
            .await
            .unwrap_or_else(|| FeatureTriage.triage(messages));
        self.cache.insert(key, r.clone()).await;
        r
    }

    /// Run encoder work on the blocking pool, at most `max_concurrency` at
    /// once; `None` when it could not run (the caller falls back).
    pub async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.permits.acquire().await.ok()?;
        match tokio::task::spawn_blocking(work).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "triage task failed; using features-based triage");
                None
            }
        }
    }
}
