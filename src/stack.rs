//! The one middleware stack, outermost first, each layer with why it sits where it does.

use crate::error::GatewayError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::time::Instant;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

pub fn wrap(router: Router) -> Router {
    router.layer(
        ServiceBuilder::new()
            // Outermost: log every request once, with the error kind the inner
            // layers left in the response extensions (never the prompt).
            .layer(axum::middleware::from_fn(access_log))
            // A panic anywhere below becomes an OpenAI-shaped 500, never a
            // dropped connection; it is then logged once by access_log.
            .layer(CatchPanicLayer::custom(
                |_: Box<dyn std::any::Any + Send>| {
                    GatewayError::Internal("internal error (panic); see the gateway log".into())
                        .into_response()
                },
            )),
    )
}

async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if let Some(e) = resp.extensions().get::<crate::error::LoggedError>() {
        tracing::warn!(%method, %path, status, ms, kind = e.0.as_str(), error = %e.1, "request failed");
    } else if path != "/metrics" && path != "/healthz" && path != "/readyz" {
        tracing::info!(%method, %path, status, ms,
            backend = %h("x-slmgate-backend"), model = %h("x-slmgate-model"), route = %h("x-slmgate-route"),
            "request");
    }
    resp
}
