//! slmgate inside your own axum service.
//!
//! - The whole gateway nested under `/llm`, next to your own routes, with a
//!   layer of your own in its chat path: chat requests must name their team
//!   in an `x-team` header (refusals are metered and logged like any other
//!   answer, because the layer sits inside slmgate's chain).
//! - slmgate's parse, triage and decide stages alone in front of your own
//!   handler (`POST /route`): it gets the triage verdict and the policy's
//!   route as request extensions and decides what to do with them.
//!
//! ```sh
//! cargo run --release --example embed -- [POLICY.yaml]   # default: the embedded policy
//! curl localhost:3000/hello
//! curl localhost:3000/llm/v1/chat/completions -H 'x-team: search' -H 'content-type: application/json' \
//!   -d '{"model":"auto","messages":[{"role":"user","content":"What is the capital of Japan?"}]}'
//! curl localhost:3000/route -H 'content-type: application/json' \
//!   -d '{"model":"auto","messages":[{"role":"user","content":"Prove that sqrt(2) is irrational"}]}'
//! ```
//! An OpenAI SDK points its base URL at `http://127.0.0.1:3000/llm/v1`.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post_service};
use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use slmgate::classifier::TriageResult;
use slmgate::error::GatewayError;
use slmgate::middleware::decide::DecideLayer;
use slmgate::middleware::parse::ParseLayer;
use slmgate::middleware::read_body::ReadBodyLayer;
use slmgate::middleware::triage::TriageLayer;
use slmgate::policy::RouteDecision;
use slmgate::Gateway;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceBuilder};

/// Your service: your routes, slmgate under `/llm`, and slmgate's routing
/// in front of a handler of yours.
pub fn app(gateway: Gateway) -> Router {
    let parts = gateway.state().clone();
    let route_only = ServiceBuilder::new()
        .layer(ReadBodyLayer::new(1 << 20))
        .layer(ParseLayer::new(parts.routing.clone(), false))
        .layer(TriageLayer::new(parts.triage.clone()))
        .layer(DecideLayer)
        .service_fn(where_would_it_go);
    Router::new()
        .route("/hello", get(|| async { "hello from my own service" }))
        .route("/route", post_service(route_only))
        .nest_service("/llm", gateway.with_layer(RequireTeamLayer))
}

/// A handler of yours behind slmgate's parse, triage and decide stages.
async fn where_would_it_go(req: Request<Bytes>) -> Result<Response, Infallible> {
    let (Some(t), Some(d)) = (
        req.extensions().get::<TriageResult>(),
        req.extensions().get::<Arc<RouteDecision>>(),
    ) else {
        // The stages answer bad requests themselves; this is not reached.
        return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response());
    };
    let target = d.targets.first().map(|t| t.to_string());
    Ok(axum::Json(serde_json::json!({
        "score": t.score, "category": t.category, "route": d.route, "target": target,
    }))
    .into_response())
}

/// Your own layer in slmgate's chat path: requests must carry `x-team`.
#[derive(Debug, Clone, Copy)]
pub struct RequireTeamLayer;

impl<S> Layer<S> for RequireTeamLayer {
    type Service = RequireTeam<S>;
    fn layer(&self, inner: S) -> RequireTeam<S> {
        RequireTeam { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequireTeam<S> {
    inner: S,
}

impl<S> Service<Request> for RequireTeam<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.headers().contains_key("x-team") {
            return Box::pin(self.inner.call(req));
        }
        // A `GatewayError` answer: slmgate's edge above this layer renders it
        // in the client's format (OpenAI or Anthropic) and the meter counts it.
        let r = GatewayError::Unauthorized("name your team in the x-team header".into())
            .into_response();
        Box::pin(async move { Ok(r) })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    slmgate::telemetry::init();
    let policy = match std::env::args().nth(1) {
        Some(p) => slmgate::config::Policy::from_file(std::path::Path::new(&p)),
        None => slmgate::config::Policy::embedded_default(),
    }
    .map_err(anyhow::Error::msg)?;
    let opts = slmgate::state::StateOptions::from_process();
    let gateway = Gateway::from_policy(policy, opts).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    eprintln!("embed example on http://127.0.0.1:3000 (slmgate under /llm)");
    axum::serve(listener, app(gateway)).await?;
    Ok(())
}
