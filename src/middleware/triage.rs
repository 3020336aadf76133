//! Triage stage: score and categorise the request, off the async runtime,
//! cached by a hash of the normalised conversation, with metrics.

use crate::api::openai::ChatMessage;
use crate::classifier::{features::FeatureTriage, Triage, TriageResult};
use crate::state::AppState;
use std::hash::{Hash, Hasher};
use std::time::Instant;

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

/// `quick`: the score only labels the response (explicit model requests), so
/// the cheaper estimate is enough; it is not cached.
pub async fn run(state: &AppState, messages: &[ChatMessage], quick: bool) -> TriageResult {
    let t0 = Instant::now();
    let m = &state.metrics;
    // A microsecond scorer costs less than a cache lookup or a thread hop.
    let r = if state.triage.is_cheap() {
        state.triage.triage(messages)
    } else if quick {
        compute(state, messages, true).await
    } else {
        cached(state, messages).await
    };
    m.triage_duration.observe(t0.elapsed().as_secs_f64());
    m.triage_score.observe(r.score);
    r
}

async fn cached(state: &AppState, messages: &[ChatMessage]) -> TriageResult {
    let key = cache_key(messages);
    let m = &state.metrics;
    if let Some(hit) = state.triage_cache.get(&key).await {
        m.cache.with_label_values(&["triage", "hit"]).inc();
        return hit;
    }
    m.cache.with_label_values(&["triage", "miss"]).inc();
    let r = compute(state, messages, false).await;
    state.triage_cache.insert(key, r.clone()).await;
    r
}

async fn compute(state: &AppState, messages: &[ChatMessage], quick: bool) -> TriageResult {
    let Ok(_permit) = state.triage_permits.acquire().await else {
        return FeatureTriage.triage(messages);
    };
    let triage = state.triage.clone();
    let msgs = messages.to_vec();
    let work = move || {
        if quick {
            triage.triage_quick(&msgs)
        } else {
            triage.triage(&msgs)
        }
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "triage task failed; using features-based triage");
            FeatureTriage.triage(messages)
        }
    }
}
