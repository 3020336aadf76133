//! Shadow sampling: a configured share of locally answered requests is also
//! sent to a cloud model, off the request path (the client's answer never
//! waits for it; samples beyond `max_in_flight` are skipped). The two
//! answers are compared by the cosine similarity of their MiniLM embeddings,
//! and agreement is exported as metrics — the quality cost of the money
//! saved, measured on live traffic.

use crate::api::openai::ParsedRequest;
use crate::backend::ReplyBody;
use crate::config::Policy;
use crate::policy::{cost, Target};
use crate::state::AppState;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct Shadow {
    pub target: Target,
    pub sample_rate: f64,
    pub agree_threshold: f64,
    permits: Arc<Semaphore>,
}

impl Shadow {
    /// From a validated policy.
    pub fn from_policy(p: &Policy) -> Option<Shadow> {
        let s = p.shadow.as_ref()?;
        Some(Shadow {
            target: Target::parse(s.target(p)?)?,
            sample_rate: s.sample_rate,
            agree_threshold: s.agree_threshold,
            permits: Arc::new(Semaphore::new(s.max_in_flight.max(1))),
        })
    }

    /// Draw whether this request is sampled.
    pub fn sample(&self) -> bool {
        self.sample_rate > 0.0 && rand::random::<f64>() < self.sample_rate
    }
}

/// The shadow request to send for this answer, when it is sampled: only
/// answers from a local backend are.
pub fn pick(state: &AppState, backend: &str, req: &ParsedRequest) -> Option<ParsedRequest> {
    let sh = state.shadow.as_ref()?;
    let local = state
        .backends
        .get(backend)
        .is_some_and(|b| b.kind() == "local");
    (local && sh.sample()).then(|| req.clone())
}

/// The assistant text of an OpenAI chat.completion body.
pub fn completion_text(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .map(|v| crate::api::openai::completion_text(&v).to_string())
        .unwrap_or_default()
}

/// Pass OpenAI stream events through untouched, collecting the text; when
/// the stream has ended, shadow it.
pub fn tee(
    state: Arc<AppState>,
    req: ParsedRequest,
    events: BoxStream<'static, Bytes>,
) -> BoxStream<'static, Bytes> {
    let s = async_stream::stream! {
        let mut text = String::new();
        let mut events = events;
        while let Some(ev) = events.next().await {
            if let Some(d) = crate::backend::sse::event_data(&ev) {
                if let Ok(v) = serde_json::from_str::<Value>(&d) {
                    if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                        text.push_str(t);
                    }
                }
            }
            yield ev;
        }
        spawn(state, req, text);
    };
    s.boxed()
}

/// Start the shadow call in the background (or count it as skipped).
pub fn spawn(state: Arc<AppState>, req: ParsedRequest, local_text: String) {
    let Some(sh) = &state.shadow else {
        return;
    };
    let Ok(permit) = sh.permits.clone().try_acquire_owned() else {
        state.metrics.shadow.with_label_values(&["skipped"]).inc();
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let m = &state.metrics;
        match compare(&state, req, local_text).await {
            Ok(sim) => {
                m.shadow_similarity.observe(sim);
                let agree = state
                    .shadow
                    .as_ref()
                    .is_some_and(|s| sim >= s.agree_threshold);
                m.shadow
                    .with_label_values(&[if agree { "agree" } else { "disagree" }])
                    .inc();
                let a = m.shadow.with_label_values(&["agree"]).get() as f64;
                let d = m.shadow.with_label_values(&["disagree"]).get() as f64;
                m.shadow_agreement.set(a / (a + d).max(1.0));
            }
            Err(e) => {
                tracing::warn!(error = %e, "shadow request failed");
                m.shadow.with_label_values(&["error"]).inc();
            }
        }
    });
}

async fn compare(
    state: &Arc<AppState>,
    mut req: ParsedRequest,
    local: String,
) -> Result<f64, String> {
    let sh = state.shadow.as_ref().ok_or("no shadow configured")?;
    let backend = state
        .backends
        .get(&sh.target.backend)
        .ok_or("shadow backend missing")?;
    let model = state
        .model_config(&sh.target)
        .ok_or("shadow model missing")?;
    // The local model answered it, so its OpenAI view is complete.
    req.native = None;
    req.stream = false;
    req.include_usage = false;
    req.raw.insert("stream".into(), Value::Bool(false));
    req.raw.remove("stream_options");
    let upstream = model.upstream_name.as_deref().unwrap_or(&sh.target.model);
    let reply = backend
        .chat(&req, upstream)
        .await
        .map_err(|e| e.error.to_string())?;
    let ReplyBody::Full { bytes, usage } = reply.body else {
        return Err("shadow reply was streamed".into());
    };
    state
        .metrics
        .shadow_cost
        .inc_by(cost::to_f64(cost::cost(model, usage)));
    let theirs = completion_text(&bytes);
    let _permit = state
        .triage_permits
        .acquire()
        .await
        .map_err(|e| e.to_string())?;
    let triage = state.triage.clone();
    tokio::task::spawn_blocking(move || {
        let a = triage.embed(&local)?;
        let b = triage.embed(&theirs)?;
        Some(a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum::<f64>())
    })
    .await
    .map_err(|e| e.to_string())?
    .ok_or_else(|| "the triage encoder cannot embed answers".to_string())
}
