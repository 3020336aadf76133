//! The request path, one tower `Layer` + `Service` per stage, each in a file
//! of its own. `src/stack.rs` puts them in order (outermost first):
//!
//! ```text
//! access_log -> catch panic -> edge -> meter -> read_body -> parse
//!   -> triage -> decide -> [shadow] -> dispatch (leaf)
//! ```
//!
//! Every service here answers `Response` and never fails (`Infallible`):
//! a stage that rejects a request answers with `GatewayError::render`'s
//! response, which carries the error in its extensions, so the layers on
//! the way out (meter, edge, access log) see what failed. Per-request state
//! travels as typed request extensions, set by the stage that knows it:
//!
//! | extension | set by | read by |
//! |---|---|---|
//! | `RequestId`, `Started` | access_log | meter, (logs) |
//! | `ApiFormat` (the client's) | edge | parse |
//! | `ParsedRequest`, `Arc<Requested>` | parse | triage, decide, shadow, dispatch |
//! | `TriageResult` | triage | decide |
//! | `Arc<RouteDecision>` | decide | shadow, dispatch (and, on the response, meter) |
//! | response: `Dispatched`, `ReplyShape` | dispatch | meter, shadow, edge |

pub mod access_log;
pub mod auth;
pub mod body;
pub mod budget;
pub mod cache;
pub mod catch_panic;
pub mod decide;
pub mod dispatch;
pub mod edge;
pub mod limits;
pub mod meter;
pub mod parse;
pub mod privacy;
pub mod read_body;
pub mod semantic;
pub mod shadow;
pub mod stage;
pub mod triage;

use crate::error::GatewayError;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::convert::Infallible;
use std::time::Instant;

/// What every stage's service returns.
pub type ResponseFuture = BoxFuture<'static, Result<Response, Infallible>>;

/// The request's id: the client's `x-request-id`, or one made up for it.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// When the gateway first saw the request (latency and overhead start here).
#[derive(Debug, Clone, Copy)]
pub struct Started(pub Instant);

/// What an answered request used, told to the stages that count it (limits
/// add tokens, budgets settle a reservation) once the meter knows: right
/// away for a whole answer, at the end of a stream (or when the client left).
pub trait Settle: Send + Sync {
    fn settle(&self, usage: crate::policy::cost::Usage, cost: rust_decimal::Decimal);
}

/// The settlements a response carries (response extension); the meter runs
/// each once.
#[derive(Clone, Default)]
pub struct Settlements(pub Vec<std::sync::Arc<dyn Settle>>);

impl Settlements {
    /// Add `s` to what `resp` carries.
    pub fn add(resp: &mut Response, s: std::sync::Arc<dyn Settle>) {
        match resp.extensions_mut().get_mut::<Settlements>() {
            Some(all) => all.0.push(s),
            None => {
                resp.extensions_mut().insert(Settlements(vec![s]));
            }
        }
    }

    pub fn run(&self, usage: crate::policy::cost::Usage, cost: rust_decimal::Decimal) {
        for s in &self.0 {
            s.settle(usage, cost);
        }
    }
}

/// A stage's service calls its inner one from a boxed future: take the
/// service that was driven to readiness, leave a clone for the next call.
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// The answer a stage gives when a stage it depends on is missing from the
/// chain (an embedding mistake, never a client error).
pub(crate) fn missing(what: &str, layer: &str) -> Response {
    GatewayError::Internal(format!(
        "{what} is missing: put `{layer}` before this layer in the chain"
    ))
    .into_response()
}

/// Set an `x-slmgate-*` header; header values must be visible ASCII, so
/// anything else is replaced (and the value cut at 1024 characters).
pub(crate) fn put_header(h: &mut HeaderMap, name: &'static str, value: &str) {
    let clean = value.len() <= 1024 && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    let v = if clean {
        HeaderValue::from_str(value)
    } else {
        let cleaned: String = value
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(1024)
            .collect();
        HeaderValue::from_str(&cleaned)
    };
    if let Ok(v) = v {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// Stand-ins for the next stage in the stages' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use axum::response::Response;
    use std::convert::Infallible;
    use tokio::sync::{mpsc, oneshot};
    use tower::{Layer, Service, ServiceExt};

    /// What the mock next stage received, and the way to answer it.
    pub struct Handle<R> {
        rx: mpsc::UnboundedReceiver<(R, oneshot::Sender<Response>)>,
    }

    /// Answers one request that reached the mock.
    pub struct Reply(oneshot::Sender<Response>);

    impl Reply {
        pub fn send_response(self, r: Response) {
            let _ = self.0.send(r);
        }
    }

    impl<R> Handle<R> {
        /// The next request that reached the next stage (`None` once every
        /// clone of the service is gone).
        pub async fn next_request(&mut self) -> Option<(R, Reply)> {
            self.rx.recv().await.map(|(r, tx)| (r, Reply(tx)))
        }
    }

    /// The next stage as a mock: a nameable service type.
    pub type Next<R> = tower::util::BoxCloneService<R, Response, Infallible>;

    /// A mock next stage: the test sees what reached it and answers for it.
    pub fn mock_inner<R: Send + 'static>() -> (Next<R>, Handle<R>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = tower::service_fn(move |req: R| {
            let (reply, answer) = oneshot::channel();
            let sent = tx.send((req, reply));
            async move {
                assert!(sent.is_ok(), "the test dropped its handle");
                Ok::<_, Infallible>(answer.await.expect("the test answers every request"))
            }
        });
        (tower::util::BoxCloneService::new(svc), Handle { rx })
    }

    /// Send `req` through `layer` in front of a mock next stage: what
    /// reached the next stage, and the answer (the mock answers 200, empty).
    pub async fn through<L, R>(layer: L, req: R) -> (R, Response)
    where
        R: Send + 'static,
        L: Layer<Next<R>>,
        L::Service: Service<R, Response = Response, Error = Infallible> + Send + 'static,
        <L::Service as Service<R>>::Future: Send,
    {
        let (svc, mut handle) = mock_inner::<R>();
        let call = tokio::spawn(layer.layer(svc).oneshot(req));
        let (seen, reply) = handle
            .next_request()
            .await
            .expect("the request reached the next stage");
        reply.send_response(Response::new(axum::body::Body::empty()));
        let Ok(resp) = call.await.expect("the stage did not panic");
        (seen, resp)
    }

    /// A next stage that must not be reached.
    pub fn never<R: Send + 'static>(
    ) -> impl Service<R, Response = Response, Error = Infallible, Future = impl Send> + Clone + Send
    {
        tower::service_fn(|_: R| async {
            panic!("a refused request must not reach the next stage");
            #[allow(unreachable_code)]
            Ok::<Response, Infallible>(Response::new(axum::body::Body::empty()))
        })
    }
}
