//! Triage: scores a request's complexity (`score = P(hard)` in [0,1]) and
//! names its category. The policy routes on both.

pub mod embed_cache;
pub mod encoder;
pub mod eval;
pub mod features;
pub mod head;
pub mod loso;
pub mod model;
pub mod serve;
pub mod success;
pub mod task;
pub mod train;
pub mod train_config;
pub mod wordpiece;

use crate::api::openai::ChatMessage;

#[derive(Debug, Clone, PartialEq)]
pub struct TriageResult {
    pub score: f64,
    pub category: &'static str,
    /// `P(local model answers well)`, when a calibrated success head is loaded.
    pub local_success: Option<f64>,
}

/// A request-complexity scorer. Implementations must be cheap to call from
/// the request path or do their heavy work off the async runtime.
pub trait Triage: Send + Sync {
    fn triage(&self, messages: &[ChatMessage]) -> TriageResult;
    /// Short name for logs and `/v1/triage` (e.g. `features`).
    fn name(&self) -> &'static str;
    /// A cheaper estimate, for when the score only labels the response (explicit
    /// model requests) rather than choosing the route.
    fn triage_quick(&self, messages: &[ChatMessage]) -> TriageResult {
        self.triage(messages)
    }
    /// Cheap enough (microseconds) to run inline on the async runtime, uncached.
    fn is_cheap(&self) -> bool {
        false
    }
    /// A sentence embedding (unit length) of `text`, when this triage has an
    /// encoder (used to compare answers). Blocking: call off the async runtime.
    fn embed(&self, _text: &str) -> Option<Vec<f32>> {
        None
    }
}

/// The text triage looks at: the last user turn, the system prompt and a
/// count of earlier turns (a long conversation is itself a signal).
pub fn last_user_text(messages: &[ChatMessage]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .or(messages.last())
        .map(|m| m.text.as_str())
        .unwrap_or("")
}
