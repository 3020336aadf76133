//! Triage stage: score and categorise the request, and record the metrics.

use crate::api::openai::ChatMessage;
use crate::classifier::TriageResult;
use crate::state::AppState;
use std::time::Instant;

pub fn run(state: &AppState, messages: &[ChatMessage]) -> TriageResult {
    let t0 = Instant::now();
    let r = state.triage.triage(messages);
    state
        .metrics
        .triage_duration
        .observe(t0.elapsed().as_secs_f64());
    state.metrics.triage_score.observe(r.score);
    r
}
