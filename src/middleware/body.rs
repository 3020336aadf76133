//! Response bodies as the stages on the way out see them: data chunks
//! (whole JSON answers are one chunk, SSE answers one or more events per
//! chunk) or the failure that ended them. A backend's mid-stream failure
//! travels as the body's error, carrying the `GatewayError` itself.
//!
//! A stage that needs to see a streamed body as it passes (the meter, the
//! client-format edge, shadow sampling) wraps it in `Tapped` with a `Tap`:
//! one small `http_body::Body` per stage, polled straight through.

use crate::error::GatewayError;
use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// What goes out next, in order.
pub type Out = VecDeque<Bytes>;

/// What a stage does with a body as it passes.
pub trait Tap: Send + Unpin + 'static {
    /// A data chunk: push what goes out instead (usually the chunk itself).
    fn data(&mut self, chunk: Bytes, out: &mut Out);
    /// The body failed: push a last chunk and return `None` to end the body
    /// there, or return the failure to pass it on.
    fn failed(&mut self, e: GatewayError, out: &mut Out) -> Option<GatewayError>;
    /// The body ended: push what goes after its last chunk.
    fn end(&mut self, _out: &mut Out) {}
    /// Nothing more goes out (e.g. an error event was sent): the body ends
    /// after what is queued, and the body below is dropped unread.
    fn finished(&self) -> bool {
        false
    }
}

/// A body with a tap on it. Dropping it (the client went away) drops the tap.
pub struct Tapped<T> {
    inner: Body,
    tap: T,
    out: Out,
    failure: Option<GatewayError>,
    done: bool,
}

/// Put `tap` on `body`.
pub fn tap(body: Body, tap: impl Tap) -> Body {
    Body::new(Tapped {
        inner: body,
        tap,
        out: VecDeque::new(),
        failure: None,
        done: false,
    })
}

impl<T: Tap> http_body::Body for Tapped<T> {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if let Some(e) = this.failure.take() {
                return Poll::Ready(Some(Err(e)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.tap.data(data, &mut this.out);
                    }
                    if this.tap.finished() {
                        this.done = true;
                        this.inner = Body::empty();
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    this.failure = this.tap.failed(gateway_error(e), &mut this.out);
                }
                None => {
                    this.done = true;
                    this.tap.end(&mut this.out);
                }
            }
        }
    }
}

/// The `GatewayError` a body error stands for (bodies re-wrapped by several
/// layers nest axum's error type).
pub fn gateway_error(e: axum::Error) -> GatewayError {
    let mut inner = e.into_inner();
    loop {
        match inner.downcast::<axum::Error>() {
            Ok(nested) => inner = nested.into_inner(),
            Err(other) => {
                inner = other;
                break;
            }
        }
    }
    match inner.downcast::<GatewayError>() {
        Ok(g) => *g,
        Err(other) => GatewayError::UpstreamFailed(format!("the answer broke off: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// Passes everything on, counting what it saw.
    struct Count(usize);
    impl Tap for Count {
        fn data(&mut self, chunk: Bytes, out: &mut Out) {
            self.0 += 1;
            out.push_back(chunk);
        }
        fn failed(&mut self, e: GatewayError, _: &mut Out) -> Option<GatewayError> {
            Some(e)
        }
    }

    /// A failure survives being tapped by several layers.
    #[tokio::test]
    async fn mid_stream_failures_keep_their_error() {
        let inner = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"data: 1\n\n")),
            Err(GatewayError::UpstreamTimeout("slow".into())),
        ]);
        let body = tap(tap(Body::from_stream(inner), Count(0)), Count(0));
        let mut s = body.into_data_stream();
        assert_eq!(s.next().await.unwrap().unwrap(), "data: 1\n\n");
        let e = gateway_error(s.next().await.unwrap().unwrap_err());
        assert!(matches!(e, GatewayError::UpstreamTimeout(m) if m == "slow"));
        assert!(s.next().await.is_none());
    }
}
