//! A panic anywhere below becomes a 500 in the client's format (logged once
//! by the access log above), never a dropped connection or a dead worker.

use super::ResponseFuture;
use crate::api::ApiFormat;
use crate::error::GatewayError;
use axum::extract::Request;
use axum::response::Response;
use futures::FutureExt;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// `client`: the format of the route's clients; `None` reads it from the
/// request (`/v1/messages` or an `anthropic-version` header: Anthropic).
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer {
    client: Option<ApiFormat>,
}

impl CatchPanicLayer {
    pub fn new(client: Option<ApiFormat>) -> Self {
        Self { client }
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic {
            inner,
            client: self.client,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
    client: Option<ApiFormat>,
}

/// Anthropic clients (by path or header) get errors in Anthropic's shape.
pub fn client_format(req: &Request) -> ApiFormat {
    if req.uri().path().starts_with("/v1/messages")
        || req.headers().contains_key("anthropic-version")
    {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    }
}

fn panicked(client: ApiFormat) -> Response {
    GatewayError::Internal("internal error (panic); see the gateway log".into()).render(client)
}

impl<S> Service<Request> for CatchPanic<S>
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

    fn call(&mut self, req: Request) -> Self::Future {
        let client = self.client.unwrap_or_else(|| client_format(&req));
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => Box::pin(async move {
                Ok(AssertUnwindSafe(fut)
                    .catch_unwind()
                    .await
                    .map_or_else(|_| panicked(client), |Ok(r)| r))
            }),
            Err(_) => Box::pin(async move { Ok(panicked(client)) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panic_is_a_500_in_the_clients_format() {
        let boom = tower::service_fn(|_: Request| async {
            if true {
                panic!("boom");
            }
            Ok::<Response, Infallible>(Response::new(Body::empty()))
        });
        let r = CatchPanicLayer::new(Some(ApiFormat::Anthropic))
            .layer(boom)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        assert!(matches!(
            crate::error::failure(&r),
            Some(GatewayError::Internal(_))
        ));
        let r = CatchPanicLayer::default()
            .layer(boom)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
    }
}
