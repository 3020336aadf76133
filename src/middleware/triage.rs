//! Triage: score the request's difficulty and name its category
//! (`TriageResult`), for the policy to route on. A request for an explicit
//! model is routed by name, so its score only labels the answer: it gets
//! the quick estimate, inline. The verdict goes back on the answer as
//! `x-slmgate-triage-score` / `x-slmgate-triage-category`.

use super::stage::{AsyncStage, AsyncStaged};
use super::{missing, put_header};
use crate::api::openai::ParsedRequest;
use crate::classifier::serve::Triager;
use crate::classifier::TriageResult;
use crate::policy::Requested;
use axum::response::Response;
use http::Request;
use std::sync::Arc;
use tower::Layer;
use tracing::field::Empty;
use tracing::Instrument;

#[derive(Clone)]
pub struct TriageLayer {
    triager: Arc<Triager>,
}

impl TriageLayer {
    pub fn new(triager: Arc<Triager>) -> Self {
        Self { triager }
    }
}

/// The triage stage around the next service (the full triage waits for
/// the blocking pool before the next service can be called).
pub type TriageStage<S> = AsyncStaged<TriageLayer, S>;

impl<S> Layer<S> for TriageLayer {
    type Service = TriageStage<S>;
    fn layer(&self, inner: S) -> TriageStage<S> {
        AsyncStaged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> AsyncStage<B> for TriageLayer {
    type Carry = TriageResult;

    async fn before(&self, req: &mut Request<B>) -> Result<TriageResult, Response> {
        let Some(parsed) = req.extensions().get::<ParsedRequest>() else {
            return Err(missing("the parsed request", "ParseLayer"));
        };
        let quick = req
            .extensions()
            .get::<Arc<Requested>>()
            .is_some_and(|r| r.is_explicit());
        let span = tracing::debug_span!("triage", quick, score = Empty, category = Empty);
        let verdict = self
            .triager
            .triage(&parsed.messages, quick)
            .instrument(span.clone())
            .await;
        span.record("score", verdict.score);
        span.record("category", verdict.category);
        req.extensions_mut().insert(verdict.clone());
        Ok(verdict)
    }

    fn after(&self, verdict: TriageResult, mut resp: Response) -> Response {
        label(&mut resp, &verdict);
        resp
    }
}

fn label(resp: &mut Response, t: &TriageResult) {
    let h = resp.headers_mut();
    put_header(h, "x-slmgate-triage-score", &format!("{:.4}", t.score));
    put_header(h, "x-slmgate-triage-category", t.category);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::chat_request;
    use crate::classifier::{features::FeatureTriage, Triage};
    use crate::config::TriageConfig;
    use crate::metrics::Metrics;
    use crate::middleware::testing::{never, through};
    use tower::ServiceExt;

    /// A scorer that says which path it took.
    struct Marked;
    impl Triage for Marked {
        fn triage(&self, _: &[crate::api::openai::ChatMessage]) -> TriageResult {
            TriageResult {
                score: 0.9,
                category: "math",
                local_success: None,
            }
        }
        fn triage_quick(&self, _: &[crate::api::openai::ChatMessage]) -> TriageResult {
            TriageResult {
                score: 0.1,
                category: "chat",
                local_success: None,
            }
        }
        fn name(&self) -> &'static str {
            "marked"
        }
        fn is_cheap(&self) -> bool {
            false
        }
    }

    fn triager(engine: Arc<dyn Triage>) -> Arc<Triager> {
        let metrics = Arc::new(Metrics::new().unwrap());
        Arc::new(Triager::new(engine, &TriageConfig::default(), metrics))
    }

    fn parsed(prompt: &str) -> Request<()> {
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt}]});
        let mut r = Request::new(());
        r.extensions_mut()
            .insert(chat_request(body.to_string().as_bytes()).unwrap());
        r
    }

    #[tokio::test]
    async fn puts_the_verdict_in_the_request_and_on_the_answer() {
        let layer = TriageLayer::new(triager(Arc::new(FeatureTriage)));
        let prompt = "Prove that there are infinitely many primes, step by step.";
        let (r, resp) = through(layer, parsed(prompt)).await;
        let t = r
            .extensions()
            .get::<TriageResult>()
            .cloned()
            .expect("verdict");
        assert!(t.score > 0.0 && t.score < 1.0);
        assert_eq!(
            resp.headers()["x-slmgate-triage-score"],
            format!("{:.4}", t.score).as_str()
        );
        assert_eq!(resp.headers()["x-slmgate-triage-category"], t.category);
    }

    /// Explicit models only need the label: the quick estimate.
    #[tokio::test]
    async fn explicit_models_get_the_quick_estimate() {
        let p = crate::config::Policy::from_yaml(
            "version: 1\nbackends:\n  c: { kind: openai, api_key_env: K, base_url: 'http://x', models: { m: { input_per_mtok: 0, output_per_mtok: 0 } } }\n",
        )
        .unwrap();
        let routing = crate::policy::Routing::new(&p);
        // A prompt past `INLINE_MAX` takes the same path, off the async workers.
        let big = "word ".repeat(crate::classifier::serve::INLINE_MAX / 4);
        for (explicit, prompt, want) in [
            (true, "hi", 0.1),
            (true, big.as_str(), 0.1),
            (false, "hi", 0.9),
        ] {
            let mut req = parsed(prompt);
            if explicit {
                req.extensions_mut()
                    .insert(routing.resolve("m").unwrap().clone());
            }
            let (r, _) = through(TriageLayer::new(triager(Arc::new(Marked))), req).await;
            assert_eq!(r.extensions().get::<TriageResult>().unwrap().score, want);
        }
    }

    #[tokio::test]
    async fn needs_a_parsed_request() {
        let svc = TriageLayer::new(triager(Arc::new(FeatureTriage))).layer(never::<Request<()>>());
        let r = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(r.status(), 500);
    }
}
