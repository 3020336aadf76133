//! Decide: the policy's route for this request — the target, then its
//! fallbacks — from what was asked for (`Requested`) and the triage verdict.
//! The decision (`Arc<RouteDecision>`, prebuilt per policy) goes into the
//! request for dispatch and onto the answer (`x-slmgate-route`, and the
//! extensions, where the meter reads the route label).

use super::stage::{Stage, Staged};
use super::{missing, put_header};
use crate::classifier::TriageResult;
use crate::policy::{Requested, RouteDecision};
use axum::response::Response;
use http::Request;
use std::sync::Arc;
use tower::Layer;
use tracing::field::Empty;

#[derive(Debug, Clone, Copy, Default)]
pub struct DecideLayer;

/// The decide stage around the next service.
pub type Decide<S> = Staged<DecideLayer, S>;

impl<S> Layer<S> for DecideLayer {
    type Service = Decide<S>;
    fn layer(&self, inner: S) -> Decide<S> {
        Staged::new(*self, inner)
    }
}

/// The decision for a request whose `Requested` and `TriageResult` are known.
pub fn decide(requested: &Requested, t: &TriageResult) -> Arc<RouteDecision> {
    requested.decide(t.score, t.category, t.local_success)
}

impl<B: Send + 'static> Stage<B> for DecideLayer {
    type Carry = Arc<RouteDecision>;

    fn before(&self, req: &mut Request<B>) -> Result<Arc<RouteDecision>, Response> {
        let (Some(requested), Some(t)) = (
            req.extensions().get::<Arc<Requested>>(),
            req.extensions().get::<TriageResult>(),
        ) else {
            return Err(missing(
                "the parsed request or triage verdict",
                "TriageLayer",
            ));
        };
        let span = tracing::debug_span!("decide", route = Empty);
        let decision = span.in_scope(|| decide(requested, t));
        span.record("route", decision.route.as_str());
        req.extensions_mut().insert(decision.clone());
        Ok(decision)
    }

    async fn after(&self, decision: Arc<RouteDecision>, mut resp: Response) -> Response {
        put_header(resp.headers_mut(), "x-slmgate-route", &decision.route);
        resp.extensions_mut().insert(decision);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;
    use crate::middleware::testing::{never, through};
    use crate::policy::Routing;
    use tower::ServiceExt;

    fn routing() -> Routing {
        Routing::new(
            &Policy::from_yaml(
                r#"
version: 1
backends:
  cloud: { kind: openai, api_key_env: K, base_url: "http://x/v1", models: { big: { input_per_mtok: 1, output_per_mtok: 1 }, small: { input_per_mtok: 0, output_per_mtok: 0 } } }
routes:
  auto:
    tiers:
      - { name: simple, max_score: 0.5, target: cloud/small }
      - { name: hard, target: cloud/big }
    fallbacks: [cloud/small]
"#,
            )
            .unwrap(),
        )
    }

    fn req(model: &str, score: f64) -> Request<()> {
        let mut r = Request::new(());
        r.extensions_mut()
            .insert(routing().resolve(model).unwrap().clone());
        r.extensions_mut().insert(TriageResult {
            score,
            category: "qa",
            local_success: None,
        });
        r
    }

    #[tokio::test]
    async fn routes_by_score_and_labels_the_answer() {
        for (score, route, first) in [
            (0.2, "auto:simple", "cloud/small"),
            (0.8, "auto:hard", "cloud/big"),
        ] {
            let (r, resp) = through(DecideLayer, req("auto", score)).await;
            let d = r.extensions().get::<Arc<RouteDecision>>().unwrap().clone();
            assert_eq!(d.route, route);
            assert_eq!(d.targets[0].to_string(), first);
            assert_eq!(resp.headers()["x-slmgate-route"], route);
            assert_eq!(resp.extensions().get::<Arc<RouteDecision>>(), Some(&d));
        }
    }

    #[tokio::test]
    async fn explicit_models_go_direct_with_their_fallbacks() {
        let (r, _) = through(DecideLayer, req("big", 0.0)).await;
        let d = r.extensions().get::<Arc<RouteDecision>>().unwrap();
        assert_eq!(d.route, "direct");
        assert_eq!(d.targets[0].to_string(), "cloud/big");
    }

    #[tokio::test]
    async fn needs_triage_first() {
        let r = DecideLayer
            .layer(never::<Request<()>>())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
    }
}
