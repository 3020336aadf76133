//! Dispatch, the leaf: try the decision's targets in order. A target that is
//! unavailable or fails before its first byte hands over to the next one;
//! errors about the client's own request end the walk. The answer goes up
//! in the shape the backend gave it (`ReplyShape`; the edge translates),
//! with what the meter needs (`Dispatched`) in its extensions.

use super::{missing, put_header, ResponseFuture};
use crate::api::openai::ParsedRequest;
use crate::api::ApiFormat;
use crate::backend::{Backend, BackendReply, Backends, DispatchError, ReplyBody, UsageCell};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::cost::Usage;
use crate::policy::{RouteDecision, Target};
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::Service;
use tracing::field::Empty;
use tracing::Instrument;

/// How the answer's usage becomes known.
#[derive(Debug, Clone)]
pub enum ReplyUsage {
    /// A whole answer: known now.
    Whole(Usage),
    /// A stream: known when it ends.
    Streamed(Arc<UsageCell>),
}

/// What answered, for the meter (response extension).
#[derive(Debug, Clone)]
pub struct Dispatched {
    /// The decision whose targets were tried...
    pub decision: Arc<RouteDecision>,
    /// ...and the one that answered.
    pub index: usize,
    /// `openai`, `anthropic` or `local`.
    pub backend_kind: &'static str,
    /// Time spent waiting on the backend before the answer's head.
    pub upstream_wait: Duration,
    pub usage: ReplyUsage,
}

impl Dispatched {
    /// The target that answered.
    pub fn target(&self) -> &Target {
        &self.decision.targets[self.index]
    }
}

/// The API shape of an answer's body and whether it is a stream (response
/// extension, read by the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyShape {
    pub format: ApiFormat,
    pub streamed: bool,
}

/// The leaf service: the policy's backends.
#[derive(Clone)]
pub struct Dispatch {
    backends: Arc<Backends>,
    metrics: Arc<Metrics>,
}

impl Dispatch {
    pub fn new(backends: Arc<Backends>, metrics: Arc<Metrics>) -> Self {
        Self { backends, metrics }
    }
}

impl<B> Service<Request<B>> for Dispatch
where
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        let span = tracing::debug_span!("dispatch", backend = Empty, model = Empty);
        let fut = async move {
            let (Some(parsed), Some(decision)) = (
                req.extensions().get::<ParsedRequest>(),
                req.extensions().get::<Arc<RouteDecision>>(),
            ) else {
                return Ok(missing(
                    "the parsed request or route decision",
                    "DecideLayer",
                ));
            };
            let mut notes = Vec::new();
            let done = this.run(parsed, decision, &mut notes).await;
            let mut resp = match done {
                Ok((index, kind, reply)) => {
                    let target = &decision.targets[index];
                    let span = tracing::Span::current();
                    span.record("backend", target.backend.as_str());
                    span.record("model", target.model.as_str());
                    answer(decision.clone(), index, kind, reply)
                }
                Err(e) => e.into_response(),
            };
            if !notes.is_empty() {
                put_header(resp.headers_mut(), "x-slmgate-fallback", &notes.join("; "));
            }
            Ok(resp)
        };
        Box::pin(fut.instrument(span))
    }
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

/// The refusal of a backend at its concurrency limit.
fn shed(backend: &str, max: usize) -> DispatchError {
    DispatchError::retryable(
        "overloaded",
        GatewayError::Overloaded {
            message: format!(
                "backend `{backend}` is at its concurrency limit ({max} requests in flight)"
            ),
            retry_after: Some(Duration::from_secs(1)),
        },
    )
}

impl Dispatch {
    /// Walk the targets; `notes` gets one line per fallback taken.
    async fn run(
        &self,
        req: &ParsedRequest,
        decision: &RouteDecision,
        notes: &mut Vec<String>,
    ) -> Result<(usize, &'static str, BackendReply), GatewayError> {
        let mut last = GatewayError::Internal("routing produced no target".into());
        for (i, target) in decision.targets.iter().enumerate() {
            let (Some(backend), Some(model)) = (
                self.backends.get(&target.backend),
                self.backends.model(target),
            ) else {
                continue;
            };
            let upstream_name = model.upstream_name.as_deref().unwrap_or(&target.model);
            let mut outcome = match native_only(req, backend, target) {
                Some(e) => Err(e),
                None => backend.availability(),
            };
            // A backend at its concurrency limit sheds the request at once
            // (checked before the breaker, which may let this one through
            // as its probe and must then hear how it went).
            let limit = self.backends.limit(&target.backend);
            let permit = match (&outcome, limit) {
                (Ok(()), Some(l)) => match l.try_acquire() {
                    Some(p) => Some(p),
                    None => {
                        outcome = Err(shed(&target.backend, l.max()));
                        None
                    }
                },
                _ => None,
            };
            // An open circuit answers at once: no timeout waited for.
            let breaker = self.backends.breaker(&target.backend);
            let outcome = outcome.and_then(|()| match breaker {
                Some(b) if !b.allow() => Err(DispatchError::retryable(
                    "circuit_open",
                    GatewayError::BackendUnavailable(format!(
                        "backend `{}`: circuit open after repeated failures",
                        target.backend
                    )),
                )),
                _ => Ok(()),
            });
            // Recorded below; given back if this future is dropped first.
            let pending = breaker
                .filter(|_| outcome.is_ok())
                .map(|b| crate::backend::breaker::Pending::new(b));
            let outcome = match outcome {
                Ok(()) => {
                    // The model's default sampling, for what the client left out.
                    let defaulted = model
                        .defaults
                        .as_ref()
                        .and_then(|d| crate::backend::defaults::apply(d, req));
                    backend
                        .chat(defaulted.as_ref().unwrap_or(req), upstream_name)
                        .await
                }
                Err(e) => Err(e),
            };
            if let (Some(b), Some(p)) = (breaker, pending) {
                // The client's own errors say the upstream is up.
                p.record(outcome.as_ref().map_or_else(|e| !e.fallback_ok, |_| true));
                self.metrics
                    .circuit
                    .with_label_values(&[target.backend.as_str()])
                    .set(b.state().code());
            }
            let err = match outcome {
                Ok(reply) => {
                    let reply = match permit {
                        Some(p) => p.hold(reply),
                        None => reply,
                    };
                    return Ok((i, backend.kind(), reply));
                }
                Err(e) => e,
            };
            self.metrics
                .upstream_errors
                .with_label_values(&[target.backend.as_str(), err.reason])
                .inc();
            tracing::warn!(target = %target, reason = err.reason, error = %err.error, "target failed");
            if !err.fallback_ok {
                return Err(err.error);
            }
            if let Some(next) = decision.targets.get(i + 1) {
                self.metrics
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
}

/// The backend's reply as a response: its body as it came, the `x-slmgate-*`
/// headers of what answered, `Dispatched` and `ReplyShape` in the extensions.
pub(crate) fn answer(
    decision: Arc<RouteDecision>,
    index: usize,
    kind: &'static str,
    reply: BackendReply,
) -> Response {
    let target = &decision.targets[index];
    let (body, usage, content_type, streamed) = match reply.body {
        ReplyBody::Full { bytes, usage } => (
            Body::from(bytes),
            ReplyUsage::Whole(usage),
            "application/json",
            false,
        ),
        ReplyBody::Stream { events, usage } => (
            Body::from_stream(events),
            ReplyUsage::Streamed(usage),
            "text/event-stream",
            true,
        ),
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if streamed {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    put_header(h, "x-slmgate-backend", &target.backend);
    put_header(h, "x-slmgate-model", &target.model);
    put_header(h, "x-slmgate-backend-kind", kind);
    // No cache answered or looked (a cache layer above says otherwise).
    put_header(h, "x-slmgate-cache", "bypass");
    r.extensions_mut().insert(ReplyShape {
        format: reply.format,
        streamed,
    });
    r.extensions_mut().insert(Dispatched {
        decision,
        index,
        backend_kind: kind,
        upstream_wait: reply.upstream_wait,
        usage,
    });
    r
}
