//! Request id and access log: the outermost stage of every route.
//!
//! Takes the client's `x-request-id` when it is a sane token (else makes
//! one), keeps it in the request extensions (`RequestId`) with the time the
//! request arrived (`Started`) and echoes it in the response. Opens the
//! request's tracing span — id, method, path, then route, backend, model and
//! status once known; never the prompt — in which every stage's span nests,
//! and logs the request once when its answer head is ready, with the error
//! kind and message the inner stages left in the response (`Failure`).

use super::{RequestId, ResponseFuture, Started};
use crate::error::failure;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderName, HeaderValue};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

/// The client's id when it is 1–128 visible ASCII characters; else a new one.
fn request_id(req: &Request) -> HeaderValue {
    req.headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(new_id)
}

/// 16 random hex digits.
fn new_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = rand::random::<u64>();
    let mut id = [0u8; 16];
    for d in id.iter_mut().rev() {
        *d = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

/// Probes and scrapes are not worth a log line each.
fn is_probe(path: &str) -> bool {
    matches!(path, "/metrics" | "/healthz" | "/readyz")
}

impl<S> Service<Request> for AccessLog<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let id = request_id(&req);
        let method = req.method().clone();
        let uri = req.uri().clone();
        let path = uri.path();
        let span = tracing::info_span!("request",
            id = %String::from_utf8_lossy(id.as_bytes()), %method, %path,
            route = Empty, backend = Empty, model = Empty, status = Empty);
        req.extensions_mut().insert(RequestId(id.clone()));
        req.extensions_mut().insert(Started(started));
        let next = span.in_scope(|| self.inner.call(req));
        let fut = async move {
            let Ok(mut resp) = next.await;
            log(&resp, &method, uri.path(), started);
            resp.headers_mut().insert(REQUEST_ID, id);
            Ok(resp)
        };
        Box::pin(fut.instrument(span))
    }
}

fn log(resp: &Response, method: &http::Method, path: &str, started: Instant) {
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (route, backend, model) = (
        h("x-slmgate-route"),
        h("x-slmgate-backend"),
        h("x-slmgate-model"),
    );
    let span = tracing::Span::current();
    for (k, v) in [("route", route), ("backend", backend), ("model", model)] {
        if !v.is_empty() {
            span.record(k, v);
        }
    }
    span.record("status", status);
    if let Some(e) = failure(resp) {
        tracing::warn!(%method, %path, status, ms, kind = e.kind().as_str(), error = %e, "request failed");
    } else if !is_probe(path) {
        tracing::info!(%method, %path, status, ms, %backend, %model, %route, "request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn echoes_a_sane_request_id_and_makes_one_otherwise() {
        let svc = AccessLogLayer.layer(tower::service_fn(|req: Request| async move {
            let id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
            assert!(req.extensions().get::<Started>().is_some());
            let mut r = Response::new(Body::empty());
            if let Some(id) = id {
                r.headers_mut().insert("seen", id);
            }
            Ok::<_, Infallible>(r)
        }));
        let req = Request::builder()
            .header("x-request-id", "abc-123")
            .body(Body::empty())
            .unwrap();
        let r = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(r.headers()["x-request-id"], "abc-123");
        assert_eq!(r.headers()["seen"], "abc-123", "stages see the id");
        let req = Request::builder()
            .header("x-request-id", "has space")
            .body(Body::empty())
            .unwrap();
        let r = svc.oneshot(req).await.unwrap();
        let made = r.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(made.len(), 16, "{made}");
        assert_eq!(r.headers()["seen"], made);
    }
}
