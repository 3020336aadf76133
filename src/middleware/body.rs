//! Response bodies as the stages on the way out see them: a stream of
//! chunks (whole JSON answers are one chunk, SSE answers one or more events
//! per chunk) or the failure that ended it. A backend's mid-stream failure
//! travels as the body's error, carrying the `GatewayError` itself.

use crate::error::GatewayError;
use axum::body::Body;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

/// The chunks of a response body.
pub type Chunks = BoxStream<'static, Result<Bytes, GatewayError>>;

/// A body as its chunks (the body's errors back as `GatewayError`s).
pub fn chunks(body: Body) -> Chunks {
    body.into_data_stream()
        .map(|r| r.map_err(gateway_error))
        .boxed()
}

/// Chunks as a body again.
pub fn from_chunks(
    chunks: impl futures::Stream<Item = Result<Bytes, GatewayError>> + Send + 'static,
) -> Body {
    Body::from_stream(chunks)
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
    use http_body_util::BodyExt;

    /// A failure survives being re-wrapped by several layers.
    #[tokio::test]
    async fn mid_stream_failures_keep_their_error() {
        let inner = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"data: 1\n\n")),
            Err(GatewayError::UpstreamTimeout("slow".into())),
        ]);
        let body = from_chunks(chunks(from_chunks(inner)));
        let mut s = chunks(body);
        assert_eq!(s.next().await.unwrap().unwrap(), "data: 1\n\n");
        let e = s.next().await.unwrap().unwrap_err();
        assert!(matches!(e, GatewayError::UpstreamTimeout(m) if m == "slow"));
        let whole = Body::from("{}").collect().await.unwrap().to_bytes();
        assert_eq!(whole, "{}");
    }
}
