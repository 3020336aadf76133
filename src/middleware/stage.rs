//! The shape most stages share: look at the request before the rest of the
//! chain runs — or answer it right there — then work on the answer on its
//! way out. A stage says what it does in those two places (`Stage`);
//! `Staged` is the one tower `Service` that runs any of them around the
//! next service, and each stage's `...Layer` is the tower `Layer` that puts
//! it into a chain. `before` does not wait on anything, so the next
//! service is called right away, from `call` (no clone of the chain below
//! per request); stages that must wait first (reading the body, triage on
//! the blocking pool) have services of their own.

use super::ResponseFuture;
use axum::response::Response;
use http::Request;
use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};
use tower::Service;

pub trait Stage<B>: Clone + Send + Sync + 'static {
    /// What `before` hands to `after` (a start time, a verdict, ...).
    type Carry: Send + 'static;

    /// Runs first. `Err(response)` answers the request without the rest of
    /// the chain (an error response, a cached answer, ...).
    // The early answer is a whole `Response` by design (it is what the
    // chain returns); it is the rare path, so its size costs nothing.
    #[allow(clippy::result_large_err)]
    fn before(&self, req: &mut Request<B>) -> Result<Self::Carry, Response>;

    /// Runs on the answer of the rest of the chain.
    fn after(&self, carry: Self::Carry, resp: Response) -> impl Future<Output = Response> + Send;
}

/// A stage around the next service.
#[derive(Debug, Clone)]
pub struct Staged<T, S> {
    stage: T,
    inner: S,
}

impl<T, S> Staged<T, S> {
    pub fn new(stage: T, inner: S) -> Self {
        Self { stage, inner }
    }
}

impl<T, S, B> Service<Request<B>> for Staged<T, S>
where
    T: Stage<B>,
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let carry = match self.stage.before(&mut req) {
            Ok(c) => c,
            Err(answer) => return Box::pin(std::future::ready(Ok(answer))),
        };
        let next = self.inner.call(req);
        let stage = self.stage.clone();
        Box::pin(async move {
            let Ok(resp) = next.await;
            Ok(stage.after(carry, resp).await)
        })
    }
}

/// A stage whose look at the request waits on something (the blocking
/// pool, the shared store) before the next service can be called.
pub trait AsyncStage<B>: Clone + Send + Sync + 'static {
    type Carry: Send + 'static;

    /// Runs first; `Err(response)` answers the request right there.
    fn before(
        &self,
        req: &mut Request<B>,
    ) -> impl Future<Output = Result<Self::Carry, Response>> + Send;

    /// Runs on the answer of the rest of the chain.
    fn after(&self, carry: Self::Carry, resp: Response) -> Response;
}

/// An `AsyncStage` around the next service. The next service is called
/// after `before` finished, so the one driven to readiness is taken and a
/// clone left for the next request (the chain below such a stage is short).
#[derive(Debug, Clone)]
pub struct AsyncStaged<T, S> {
    stage: T,
    inner: S,
}

impl<T, S> AsyncStaged<T, S> {
    pub fn new(stage: T, inner: S) -> Self {
        Self { stage, inner }
    }
}

impl<T, S, B> Service<Request<B>> for AsyncStaged<T, S>
where
    T: AsyncStage<B>,
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let stage = self.stage.clone();
        let mut inner = super::take_ready(&mut self.inner);
        Box::pin(async move {
            let carry = match stage.before(&mut req).await {
                Ok(c) => c,
                Err(answer) => return Ok(answer),
            };
            let Ok(resp) = inner.call(req).await;
            Ok(stage.after(carry, resp))
        })
    }
}
