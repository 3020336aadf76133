//! Read the body: only JSON (415 otherwise), at most the policy's
//! `server.max_body_bytes` (413, checked against `Content-Length` before a
//! byte is read and again while reading). The stages below get the whole
//! body as `Bytes`.

use super::{take_ready, ResponseFuture};
use crate::error::GatewayError;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy)]
pub struct ReadBodyLayer {
    limit: usize,
    timeout: std::time::Duration,
}

impl ReadBodyLayer {
    /// Bodies above `limit` bytes are refused; one that takes over 30 s to
    /// arrive gets 408.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            timeout: std::time::Duration::from_secs(30),
        }
    }

    /// The longest a body may take to arrive.
    pub fn with_timeout(self, timeout: std::time::Duration) -> Self {
        Self { timeout, ..self }
    }
}

impl<S> Layer<S> for ReadBodyLayer {
    type Service = ReadBody<S>;
    fn layer(&self, inner: S) -> ReadBody<S> {
        ReadBody {
            inner,
            limit: self.limit,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReadBody<S> {
    inner: S,
    limit: usize,
    timeout: std::time::Duration,
}

impl<S> Service<Request> for ReadBody<S>
where
    S: Service<Request<Bytes>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (limit, timeout) = (self.limit, self.timeout);
        let mut inner = take_ready(&mut self.inner);
        Box::pin(async move {
            let version = req.version();
            // A client that stops sending mid-body does not hold us forever.
            let read = tokio::time::timeout(timeout, read(req, limit)).await;
            let read = read.unwrap_or(Err(GatewayError::RequestTimeout(timeout.as_secs())));
            match read {
                Ok(req) => inner.call(req).await,
                Err(e) => Ok(refused(e, version)),
            }
        })
    }
}

/// A refusal before the body was read through. Over HTTP/1 it closes the
/// connection and says so: the unread rest of the body cannot be told from
/// the next request, and hyper closes a connection it could not drain, so a
/// client that kept it for its next request would lose that one.
fn refused(e: GatewayError, version: http::Version) -> Response {
    let mut resp = e.into_response();
    if version < http::Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}

/// At most this many bytes of a refused body are read and dropped before the
/// answer, for at most [`DRAIN_TIME`]: see [`discard`].
const DRAIN_MAX: usize = 16 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// The request with its whole body.
pub async fn read(req: Request, limit: usize) -> Result<Request<Bytes>, GatewayError> {
    check_content_type(req.headers())?;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|&len| len > limit) {
        if len <= DRAIN_MAX {
            discard(body, DRAIN_MAX).await;
        }
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let mut body = body;
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| GatewayError::InvalidRequest {
            param: None,
            message: format!("could not read the request body: {e}"),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if out.len() + data.len() > limit {
            discard(body, DRAIN_MAX.saturating_sub(out.len() + data.len())).await;
            return Err(GatewayError::PayloadTooLarge(limit));
        }
        out.extend_from_slice(&data);
    }
    Ok(Request::from_parts(parts, out.freeze()))
}

/// Reads and drops up to `max` more bytes of a refused body (for at most
/// [`DRAIN_TIME`]). Most HTTP/1 clients write the whole body before they read
/// the answer: answering at once and closing the connection under a client
/// still writing makes it fail with a broken pipe or a reset instead of
/// seeing the 413. Bodies declared larger than [`DRAIN_MAX`] are not drained.
async fn discard(mut body: axum::body::Body, max: usize) {
    let drain = async {
        let mut n = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            n += frame.data_ref().map_or(0, |d| d.len());
            if n > max {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

/// Reject anything that is not `application/json` (parameters like charset allowed).
pub fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType(if ct.is_empty() {
            "none".into()
        } else {
            ct.chars().take(100).collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::testing::{mock_inner, never};
    use axum::body::Body;
    use tower::ServiceExt;

    fn post(ct: &str, body: &'static str) -> Request {
        Request::post("/")
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn passes_the_whole_body_within_the_limit() {
        let (svc, mut handle) = mock_inner::<Request<Bytes>>();
        let svc = ReadBodyLayer::new(1024).layer(svc);
        let call = tokio::spawn(svc.oneshot(post("application/json; charset=utf-8", "{}")));
        let (req, reply) = handle.next_request().await.expect("forwarded");
        assert_eq!(req.body(), "{}");
        reply.send_response(Response::new(Body::empty()));
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }

    #[tokio::test]
    async fn refuses_wrong_types_and_big_bodies_without_calling_inner() {
        let svc = ReadBodyLayer::new(4).layer(never::<Request<Bytes>>());
        let r = svc.clone().oneshot(post("text/plain", "{}")).await.unwrap();
        assert_eq!(r.status(), 415);
        assert_eq!(
            r.headers()[header::CONNECTION],
            "close",
            "the body was not read"
        );
        let r = svc
            .oneshot(post("application/json", "[1,2,3]"))
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        let mut h2 = post("application/json", "[1,2,3]");
        *h2.version_mut() = http::Version::HTTP_2;
        let r = ReadBodyLayer::new(4)
            .layer(never::<Request<Bytes>>())
            .oneshot(h2)
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert!(
            r.headers().get(header::CONNECTION).is_none(),
            "no connection headers in HTTP/2"
        );
    }

    /// A body over the limit is read through (up to `DRAIN_MAX`) before the 413,
    /// with or without a `Content-Length`: HTTP/1 clients that write the whole
    /// body before reading would otherwise see a broken pipe, not the answer.
    #[tokio::test]
    async fn reads_a_refused_body_through_before_answering() {
        use futures::StreamExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        for declared in [true, false] {
            let polled = Arc::new(AtomicUsize::new(0));
            let p = polled.clone();
            let chunks = futures::stream::iter(0..8).map(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 1024]))
            });
            let mut req = Request::post("/").header("content-type", "application/json");
            if declared {
                req = req.header("content-length", "8192");
            }
            let req = req.body(Body::from_stream(chunks)).unwrap();
            let r = ReadBodyLayer::new(2048)
                .layer(never::<Request<Bytes>>())
                .oneshot(req)
                .await
                .unwrap();
            assert_eq!(r.status(), 413);
            assert_eq!(polled.load(Ordering::SeqCst), 8, "declared {declared}");
        }
    }
}
