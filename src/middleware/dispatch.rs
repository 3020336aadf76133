//! Dispatch stage: try the decision's targets in order. A target that is
//! unavailable or fails before its first byte hands over to the next one;
//! errors about the client's own request end the walk.

use crate::api::openai::ParsedRequest;
use crate::backend::{Backend, BackendReply, DispatchError};
use crate::error::GatewayError;
use crate::policy::{RouteDecision, Target};
use crate::state::AppState;

pub struct Dispatched {
    pub target: Target,
    pub reply: BackendReply,
    /// One note per fallback taken: `from -> to: reason: message`.
    pub fallbacks: Vec<String>,
}

/// A `/v1/messages` request with parts only Anthropic understands cannot
/// go to another kind of backend (the next target may be Anthropic).
fn native_only(req: &ParsedRequest, backend: &Backend, target: &Target) -> Option<DispatchError> {
    let what = req.native.as_ref()?.untranslatable.as_ref()?;
    (backend.kind() != "anthropic").then(|| {
        DispatchError::retryable(
            "unsupported",
            GatewayError::Unsupported(format!(
                "{what} can only be sent to an Anthropic backend; `{target}` is {}",
                backend.kind()
            )),
        )
    })
}

pub async fn run(
    state: &AppState,
    req: &ParsedRequest,
    decision: &RouteDecision,
) -> Result<Dispatched, GatewayError> {
    let mut notes = Vec::new();
    let mut last = GatewayError::Internal("routing produced no target".into());
    for (i, target) in decision.targets.iter().enumerate() {
        let (Some(backend), Some(model)) = (
            state.backends.get(&target.backend),
            state.model_config(target),
        ) else {
            continue;
        };
        let upstream_name = model.upstream_name.as_deref().unwrap_or(&target.model);
        let outcome = match native_only(req, backend, target) {
            Some(e) => Err(e),
            None => backend.availability(),
        };
        let outcome = match outcome {
            Ok(()) => backend.chat(req, upstream_name).await,
            Err(e) => Err(e),
        };
        let err = match outcome {
            Ok(reply) => {
                return Ok(Dispatched {
                    target: target.clone(),
                    reply,
                    fallbacks: notes,
                });
            }
            Err(e) => e,
        };
        state
            .metrics
            .upstream_errors
            .with_label_values(&[target.backend.as_str(), err.reason])
            .inc();
        tracing::warn!(target = %target, reason = err.reason, error = %err.error, "target failed");
        if !err.fallback_ok {
            return Err(err.error);
        }
        if let Some(next) = decision.targets.get(i + 1) {
            state
                .metrics
                .fallbacks
                .with_label_values(&[
                    target.to_string().as_str(),
                    next.to_string().as_str(),
                    err.reason,
                ])
                .inc();
            notes.push(format!("{target} -> {next}: {}: {}", err.reason, err.error));
        }
        last = err.error;
    }
    Err(last)
}
