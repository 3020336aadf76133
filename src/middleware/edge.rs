//! The client's API format, handled at one edge.
//!
//! The format is decided once, by the route the chain is mounted on
//! (`/v1/chat/completions` is OpenAI, `/v1/messages` Anthropic), and put in
//! the request extensions for `parse`, which translates the request into
//! the OpenAI pivot on the way in. On the way out this stage puts every
//! answer into the client's shape:
//! - whole answers and streams are translated from the shape the backend
//!   answered in (`ReplyShape`, set by dispatch) when it differs;
//! - error responses from any stage below are rendered in the client's
//!   format by the one error map (`GatewayError::render`);
//! - a stream that fails after its head (the body's error) ends with the
//!   client's error event, from the same map (`GatewayError::stream_event`).

use super::body::{tap, Out, Tap};
use super::dispatch::ReplyShape;
use super::meter::StreamOutcome;
use super::stage::{Stage, Staged};
use crate::api::sse::{event_data, EventSplitter};
use crate::api::ApiFormat;
use crate::error::{failure, GatewayError};
use crate::translate::{to_anthropic, to_openai, StreamTranslate};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::BodyExt;
use tower::Layer;

#[derive(Debug, Clone, Copy)]
pub struct EdgeLayer {
    client: ApiFormat,
}

impl EdgeLayer {
    /// The edge of a route whose clients speak `client`.
    pub fn new(client: ApiFormat) -> Self {
        Self { client }
    }
}

/// The edge around the next service.
pub type Edge<S> = Staged<EdgeLayer, S>;

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Staged::new(*self, inner)
    }
}

impl<B: Send + 'static> Stage<B> for EdgeLayer {
    type Carry = ();

    fn before(&self, req: &mut Request<B>) -> Result<(), Response> {
        req.extensions_mut().insert(self.client);
        Ok(())
    }

    async fn after(&self, _: (), resp: Response) -> Response {
        to_client(resp, self.client).await
    }
}

/// An answer from below in the client's shape.
pub async fn to_client(resp: Response, client: ApiFormat) -> Response {
    if let Some(e) = failure(&resp) {
        // Errors are rendered OpenAI-shaped by default.
        if client == ApiFormat::OpenAi {
            return resp;
        }
        let e = e.clone();
        return rerender(resp, e, client);
    }
    let Some(shape) = resp.extensions().get::<ReplyShape>().copied() else {
        return resp; // not an answer from a backend (a custom leaf): as is
    };
    if shape.streamed {
        let outcome = resp.extensions().get::<StreamOutcome>().cloned();
        let (parts, body) = resp.into_parts();
        return Response::from_parts(parts, stream_to(body, shape.format, client, outcome));
    }
    if shape.format == client {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let whole = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return super::body::gateway_error(e).render(client),
    };
    match whole_to(&whole, shape.format, client) {
        Ok(b) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(b))
        }
        Err(e) => e.render(client),
    }
}

/// The same error response, its body in the client's format; status,
/// headers and extensions kept.
fn rerender(resp: Response, e: GatewayError, client: ApiFormat) -> Response {
    let (parts, _) = resp.into_parts();
    let fresh = e.render(client);
    let (fresh_parts, body) = fresh.into_parts();
    let mut r = Response::from_parts(parts, body);
    r.headers_mut().remove(header::CONTENT_LENGTH);
    r.headers_mut().extend(fresh_parts.headers);
    r
}

/// A whole answer from `from`'s shape into `to`'s. An answer that cannot be
/// read is the upstream's failure (502), never an empty success.
pub fn whole_to(bytes: &[u8], from: ApiFormat, to: ApiFormat) -> Result<Bytes, GatewayError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        GatewayError::UpstreamFailed(format!("the backend answered with invalid JSON: {e}"))
    })?;
    Ok(Bytes::from(match (from, to) {
        (ApiFormat::OpenAi, ApiFormat::Anthropic) => to_anthropic::response(&v).to_string(),
        (ApiFormat::Anthropic, ApiFormat::OpenAi) => to_openai::response(&v).0.to_string(),
        _ => return Ok(Bytes::copy_from_slice(bytes)),
    }))
}

/// A streamed answer in the client's shape: events translated when the
/// backend spoke the other API; a failure ends it with the client's error
/// event instead of a broken connection.
fn stream_to(
    body: Body,
    from: ApiFormat,
    client: ApiFormat,
    outcome: Option<StreamOutcome>,
) -> Body {
    let translator: Option<Box<dyn StreamTranslate>> = match (from, client) {
        (ApiFormat::OpenAi, ApiFormat::Anthropic) => {
            Some(Box::new(to_anthropic::StreamTranslator::default()))
        }
        // Anthropic-shaped streams only answer Anthropic clients; should one
        // reach an OpenAI client, it is translated (without a usage chunk).
        (ApiFormat::Anthropic, ApiFormat::OpenAi) => {
            Some(Box::new(to_openai::StreamTranslator::new(false)))
        }
        _ => None,
    };
    tap(
        body,
        ClientStream {
            client,
            outcome,
            translator,
            splitter: EventSplitter::default(),
            ended: false,
        },
    )
}

/// Puts a stream into the client's shape as it passes.
struct ClientStream {
    client: ApiFormat,
    /// The meter's outcome of this stream, when metered.
    outcome: Option<StreamOutcome>,
    translator: Option<Box<dyn StreamTranslate>>,
    splitter: EventSplitter,
    /// An error event went out: nothing more.
    ended: bool,
}

impl ClientStream {
    /// End the stream with the client's error event; the meter below counts
    /// the request with this error's status.
    fn fail(&mut self, e: &GatewayError, out: &mut Out) {
        out.push_back(e.stream_event(self.client));
        self.ended = true;
        if let Some(o) = &self.outcome {
            o.set(e.status());
        }
    }
}

impl Tap for ClientStream {
    fn data(&mut self, chunk: Bytes, out: &mut Out) {
        if self.ended {
            return;
        }
        let Some(t) = self.translator.as_mut() else {
            out.push_back(chunk);
            return;
        };
        for ev in self.splitter.push(&chunk) {
            let Some(data) = event_data(&ev) else {
                continue;
            };
            match t.push(&data) {
                Ok(events) => out.extend(events),
                Err(e) => return self.fail(&e, out),
            }
        }
    }

    fn failed(&mut self, e: GatewayError, out: &mut Out) -> Option<GatewayError> {
        if !self.ended {
            self.fail(&e, out);
        }
        None
    }

    fn end(&mut self, out: &mut Out) {
        if self.ended {
            return;
        }
        if let Some(t) = self.translator.as_mut() {
            match t.finish() {
                Ok(events) => out.extend(events),
                Err(e) => self.fail(&e, out),
            }
        }
    }

    fn finished(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request;
    use futures::StreamExt;
    use serde_json::json;
    use std::convert::Infallible;
    use tower::ServiceExt;

    fn streamed(events: Vec<Result<Bytes, GatewayError>>) -> Response {
        let mut r = Response::new(Body::from_stream(futures::stream::iter(events)));
        r.extensions_mut().insert(ReplyShape {
            format: ApiFormat::OpenAi,
            streamed: true,
        });
        r
    }

    async fn text(r: Response) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// An error from below is rendered in the client's format, status kept.
    #[tokio::test]
    async fn errors_are_rendered_in_the_clients_format() {
        let leaf = tower::service_fn(|_req: Request| async {
            Ok::<_, Infallible>(GatewayError::PayloadTooLarge(10).into_response())
        });
        use axum::response::IntoResponse;
        let anthropic = EdgeLayer::new(ApiFormat::Anthropic).layer(leaf);
        let r = anthropic
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "request_too_large");
        let openai = EdgeLayer::new(ApiFormat::OpenAi).layer(leaf);
        let r = openai.oneshot(Request::new(Body::empty())).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(v["error"]["code"], "payload_too_large");
    }

    /// The edge tells the stages below which format the client speaks.
    #[tokio::test]
    async fn the_client_format_is_decided_once_for_the_stages_below() {
        let leaf = tower::service_fn(|req: Request| async move {
            let f = req.extensions().get::<ApiFormat>().copied();
            assert_eq!(f, Some(ApiFormat::Anthropic));
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let svc = EdgeLayer::new(ApiFormat::Anthropic).layer(leaf);
        svc.oneshot(Request::new(Body::empty())).await.unwrap();
    }

    /// A stream failing mid-way ends with the client's error event.
    #[tokio::test]
    async fn mid_stream_failures_become_the_clients_error_event() {
        let chunk = json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]});
        let events = || {
            vec![
                Ok(crate::api::sse::data_event(&chunk.to_string())),
                Err(GatewayError::UpstreamTimeout(
                    "backend `x` stream timed out".into(),
                )),
            ]
        };
        let openai = text(to_client(streamed(events()), ApiFormat::OpenAi).await).await;
        assert!(openai.starts_with("data: {\"id\":\"c\""), "{openai}");
        assert!(openai.contains("\"code\":\"upstream_timeout\""), "{openai}");
        assert!(!openai.contains("[DONE]"));
        let anthropic = text(to_client(streamed(events()), ApiFormat::Anthropic).await).await;
        assert!(
            anthropic.contains("event: content_block_delta"),
            "{anthropic}"
        );
        assert!(anthropic.contains("event: error\n"), "{anthropic}");
        assert!(anthropic.contains("timeout_error"), "{anthropic}");
        assert!(!anthropic.contains("message_stop"));
    }

    /// Once the client's error event went out, the edge ends the stream and
    /// stops reading the backend (it would otherwise wait for an upstream
    /// that may never finish), and tells the meter the status to count.
    #[tokio::test]
    async fn a_failure_found_at_the_edge_ends_the_stream_there() {
        let chunk = json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]});
        let failing = json!({"error": {"message": "boom", "type": "server_error"}});
        let events = futures::stream::iter(vec![
            Ok::<_, GatewayError>(crate::api::sse::data_event(&chunk.to_string())),
            Ok(crate::api::sse::data_event(&failing.to_string())),
        ])
        .chain(futures::stream::pending());
        let mut r = Response::new(Body::from_stream(events));
        r.extensions_mut().insert(ReplyShape {
            format: ApiFormat::OpenAi,
            streamed: true,
        });
        let outcome = StreamOutcome::default();
        r.extensions_mut().insert(outcome.clone());
        let body = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            text(to_client(r, ApiFormat::Anthropic).await),
        )
        .await
        .expect("the stream ends after the error event");
        assert!(
            body.contains("event: error\n") && body.contains("boom"),
            "{body}"
        );
        assert_eq!(outcome.get(), Some(http::StatusCode::BAD_GATEWAY));
    }

    /// Whole OpenAI answers reach Anthropic clients translated.
    #[tokio::test]
    async fn whole_answers_are_translated() {
        let body = json!({"id":"x","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Tokyo."},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}});
        let mut r = Response::new(Body::from(body.to_string()));
        r.extensions_mut().insert(ReplyShape {
            format: ApiFormat::OpenAi,
            streamed: false,
        });
        let v: serde_json::Value =
            serde_json::from_str(&text(to_client(r, ApiFormat::Anthropic).await).await).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0]["text"], "Tokyo.");
        assert_eq!(v["usage"]["output_tokens"], 2);
    }
}
