//! Shadow sampling (present only when the policy configures `shadow`): a
//! share of locally answered requests is also sent to a cloud model, off
//! the request path — the client's answer never waits for it, and samples
//! beyond `max_in_flight` are skipped. The two answers are compared by the
//! cosine similarity of their MiniLM embeddings and agreement is exported
//! as metrics: the quality cost of the money saved, on live traffic.

use super::body::{gateway_error, tap, Out, Tap};
use super::dispatch::{Dispatched, ReplyShape};
use super::stage::{Stage, Staged};
use crate::api::openai::ParsedRequest;
use crate::api::sse::event_data;
use crate::backend::{Backends, ReplyBody};
use crate::classifier::serve::Triager;
use crate::config::Policy;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::cost::{self, Prices};
use crate::policy::Target;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tower::Layer;

/// The shadow configuration with what a comparison needs.
pub struct Shadow {
    pub target: Target,
    pub sample_rate: f64,
    pub agree_threshold: f64,
    permits: Arc<Semaphore>,
    backends: Arc<Backends>,
    triager: Arc<Triager>,
    metrics: Arc<Metrics>,
    prices: Arc<Prices>,
}

impl Shadow {
    /// From a validated policy; `None` when it configures no shadowing.
    pub fn from_policy(
        p: &Policy,
        backends: Arc<Backends>,
        triager: Arc<Triager>,
        metrics: Arc<Metrics>,
        prices: Arc<Prices>,
    ) -> Option<Shadow> {
        let s = p.shadow.as_ref()?;
        Some(Shadow {
            target: Target::parse(s.target(p)?)?,
            sample_rate: s.sample_rate,
            agree_threshold: s.agree_threshold,
            permits: Arc::new(Semaphore::new(s.max_in_flight.max(1))),
            backends,
            triager,
            metrics,
            prices,
        })
    }

    /// Draw whether this request is sampled.
    fn sample(&self) -> bool {
        self.sample_rate > 0.0 && rand::random::<f64>() < self.sample_rate
    }
}

#[derive(Clone)]
pub struct ShadowLayer {
    shadow: Arc<Shadow>,
}

impl ShadowLayer {
    pub fn new(shadow: Arc<Shadow>) -> Self {
        Self { shadow }
    }
}

/// Shadow sampling around the next service.
pub type ShadowStage<S> = Staged<ShadowLayer, S>;

impl<S> Layer<S> for ShadowLayer {
    type Service = ShadowStage<S>;
    fn layer(&self, inner: S) -> ShadowStage<S> {
        Staged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> Stage<B> for ShadowLayer {
    /// The request, when this one is sampled.
    type Carry = Option<ParsedRequest>;

    fn before(&self, req: &mut Request<B>) -> Result<Option<ParsedRequest>, Response> {
        // Drawn before the answer is known; only local answers are shadowed,
        // so the sampled share of local answers is still `sample_rate`.
        Ok(self
            .shadow
            .sample()
            .then(|| req.extensions().get::<ParsedRequest>().cloned())
            .flatten())
    }

    async fn after(&self, sampled: Option<ParsedRequest>, resp: Response) -> Response {
        let local = resp
            .extensions()
            .get::<Dispatched>()
            .is_some_and(|d| d.backend_kind == "local");
        match sampled {
            Some(req) if local && resp.status().is_success() => {
                tee(resp, self.shadow.clone(), req).await
            }
            _ => resp,
        }
    }
}

/// Pass the answer through untouched, keeping a copy; when it has ended,
/// shadow it with its text. A whole answer is at hand already: it is read
/// and sent on as it was (its length known, as without sampling).
async fn tee(resp: Response, shadow: Arc<Shadow>, req: ParsedRequest) -> Response {
    let streamed = resp
        .extensions()
        .get::<ReplyShape>()
        .is_some_and(|s| s.streamed);
    let (parts, body) = resp.into_parts();
    if !streamed {
        let whole = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return gateway_error(e).into_response(),
        };
        spawn(shadow, req, answer_text(&whole, false));
        return Response::from_parts(parts, axum::body::Body::from(whole));
    }
    let kept = Kept {
        sample: Some((shadow, req)),
        copy: BytesMut::new(),
    };
    Response::from_parts(parts, tap(body, kept))
}

/// A copy of a streamed answer as it passes, shadowed when it ended.
struct Kept {
    sample: Option<(Arc<Shadow>, ParsedRequest)>,
    copy: BytesMut,
}

impl Tap for Kept {
    fn data(&mut self, chunk: Bytes, out: &mut Out) {
        self.copy.extend_from_slice(&chunk);
        out.push_back(chunk);
    }

    /// A failed answer is not compared.
    fn failed(&mut self, e: GatewayError, _: &mut Out) -> Option<GatewayError> {
        self.sample = None;
        Some(e)
    }

    fn end(&mut self, _: &mut Out) {
        if let Some((shadow, req)) = self.sample.take() {
            let text = answer_text(&std::mem::take(&mut self.copy).freeze(), true);
            spawn(shadow, req, text);
        }
    }
}

/// The assistant text of a whole OpenAI answer, or of its chunk stream.
pub fn answer_text(body: &Bytes, streamed: bool) -> String {
    if !streamed {
        return serde_json::from_slice::<Value>(body)
            .map(|v| crate::api::openai::completion_text(&v).to_string())
            .unwrap_or_default();
    }
    let mut text = String::new();
    for ev in body
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"data:"))
    {
        if let Some(v) = event_data(ev).and_then(|d| serde_json::from_str::<Value>(&d).ok()) {
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
        }
    }
    text
}

/// Start the shadow call in the background (or count it as skipped).
fn spawn(shadow: Arc<Shadow>, req: ParsedRequest, local_text: String) {
    let m = shadow.metrics.clone();
    let Ok(permit) = shadow.permits.clone().try_acquire_owned() else {
        m.shadow.with_label_values(&["skipped"]).inc();
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        match compare(&shadow, req, local_text).await {
            Ok(sim) => {
                m.shadow_similarity.observe(sim);
                let agree = sim >= shadow.agree_threshold;
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

async fn compare(sh: &Shadow, mut req: ParsedRequest, local: String) -> Result<f64, String> {
    let backend = sh
        .backends
        .get(&sh.target.backend)
        .ok_or("shadow backend missing")?;
    let model = sh.prices.model(&sh.target).ok_or("shadow model missing")?;
    // Shadow calls never take a place live traffic needs, nor call a
    // backend whose circuit is not closed.
    let _permit = match sh.backends.limit(&sh.target.backend) {
        Some(l) => Some(
            l.try_acquire()
                .ok_or("shadow target at its concurrency limit")?,
        ),
        None => None,
    };
    if sh
        .backends
        .breaker(&sh.target.backend)
        .is_some_and(|b| b.state() != crate::backend::breaker::State::Closed)
    {
        return Err("shadow target's circuit is not closed".into());
    }
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
    sh.metrics
        .shadow_cost
        .inc_by(cost::to_f64(cost::cost(model, usage)));
    let theirs = answer_text(&bytes, false);
    let engine = sh.triager.engine().clone();
    sh.triager
        .off_runtime(move || {
            let a = engine.embed(&local)?;
            let b = engine.embed(&theirs)?;
            Some(a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum::<f64>())
        })
        .await
        .flatten()
        .ok_or_else(|| "the triage encoder cannot embed answers".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_text_of_whole_and_streamed_answers() {
        let whole = Bytes::from_static(
            br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Tokyo."}}]}"#,
        );
        assert_eq!(answer_text(&whole, false), "Tokyo.");
        let streamed = Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"To\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"kyo.\"}}]}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(answer_text(&streamed, true), "Tokyo.");
    }
}
