//! Every error the gateway returns, mapped in one place to an HTTP status, a
//! closed-set kind (metric labels) and a body in the client's API format —
//! whole responses and errors that happen mid-stream alike. Messages never
//! contain secrets: upstream bodies are only passed through for upstream 4xx
//! answers, which are the upstream's words about the client's request.
//!
//! Errors travel through the middleware stack as responses: `render` puts the
//! error itself into the response extensions (`Failure`), so the layers on
//! the way out (meter, client-format edge, access log) see what failed and
//! it is logged exactly once.

use crate::api::{sse, ApiFormat};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidRequest {
        param: Option<String>,
        message: String,
    },
    #[error("Content-Type must be application/json (got `{0}`)")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    #[error("The model `{0}` does not exist; GET /v1/models lists the models and routes this gateway serves")]
    ModelNotFound(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    Unsupported(String),
    /// The caller is not allowed in (a missing or wrong credential).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not ask for this (a model its key does not allow).
    #[error("{0}")]
    Forbidden(String),
    /// The caller is over one of its limits (requests, tokens, budget), or
    /// the upstream answered 429 and no fallback took the request.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    #[error("{message}")]
    QueueFull {
        message: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    BackendUnavailable(String),
    /// A backend is at its concurrency limit, or the upstream said it is
    /// overloaded (503/529), with its `Retry-After` when it gave one.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    UpstreamTimeout(String),
    #[error("{0}")]
    UpstreamFailed(String),
    /// The upstream answered 4xx about the client's request: passed through
    /// as is to clients of the same API, translated for the other.
    #[error("upstream answered {status}")]
    UpstreamClientError {
        status: StatusCode,
        body: Bytes,
        format: ApiFormat,
    },
    /// The upstream reported a failure inside its event stream: its own
    /// `error` object, passed on unchanged to clients of its API and
    /// translated for the other.
    #[error("{message}")]
    UpstreamStreamError {
        status: StatusCode,
        error: Box<Value>,
        format: ApiFormat,
        message: String,
    },
    #[error("{0}")]
    Internal(String),
}

/// Closed set of error kinds, used as metric labels (never raw messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    TooLarge,
    RateLimited,
    Unavailable,
    Timeout,
    Upstream,
    UpstreamClient,
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Upstream => "upstream",
            ErrorKind::UpstreamClient => "upstream_client",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The error a response stands for, in its extensions (set by `render`).
#[derive(Debug, Clone)]
pub struct Failure(pub GatewayError);

impl GatewayError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        GatewayError::InvalidRequest {
            param: Some(param.to_string()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::InvalidJson(_)
            | GatewayError::InvalidRequest { .. }
            | GatewayError::Unsupported(_) => StatusCode::BAD_REQUEST,
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::ModelNotFound(_) | GatewayError::NotFound { .. } => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BackendUnavailable(_) | GatewayError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamClientError { status, .. }
            | GatewayError::UpstreamStreamError { status, .. } => *status,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            GatewayError::InvalidJson(_)
            | GatewayError::InvalidRequest { .. }
            | GatewayError::Unsupported(_)
            | GatewayError::UnsupportedMediaType(_)
            | GatewayError::MethodNotAllowed { .. } => ErrorKind::BadRequest,
            GatewayError::PayloadTooLarge(_) => ErrorKind::TooLarge,
            GatewayError::RequestTimeout(_) => ErrorKind::BadRequest,
            GatewayError::Unauthorized(_) => ErrorKind::Unauthorized,
            GatewayError::Forbidden(_) => ErrorKind::Forbidden,
            GatewayError::RateLimited { .. } => ErrorKind::RateLimited,
            GatewayError::ModelNotFound(_) | GatewayError::NotFound { .. } => ErrorKind::NotFound,
            GatewayError::QueueFull { .. } => ErrorKind::RateLimited,
            GatewayError::BackendUnavailable(_) | GatewayError::Overloaded { .. } => {
                ErrorKind::Unavailable
            }
            GatewayError::UpstreamTimeout(_) => ErrorKind::Timeout,
            GatewayError::UpstreamFailed(_) => ErrorKind::Upstream,
            GatewayError::UpstreamClientError { .. } => ErrorKind::UpstreamClient,
            GatewayError::UpstreamStreamError { status, .. } => match status.as_u16() {
                429 => ErrorKind::RateLimited,
                503 => ErrorKind::Unavailable,
                504 => ErrorKind::Timeout,
                _ => ErrorKind::Upstream,
            },
            GatewayError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// OpenAI's `error.type` and `error.code` for this error.
    fn openai_type_code(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::InvalidJson(_) => ("invalid_request_error", "invalid_json"),
            GatewayError::InvalidRequest { .. } => ("invalid_request_error", "invalid_request"),
            GatewayError::Unsupported(_) => ("invalid_request_error", "unsupported_parameter"),
            GatewayError::UnsupportedMediaType(_) => {
                ("invalid_request_error", "unsupported_media_type")
            }
            GatewayError::PayloadTooLarge(_) => ("invalid_request_error", "payload_too_large"),
            GatewayError::RequestTimeout(_) => ("invalid_request_error", "request_timeout"),
            GatewayError::Unauthorized(_) => ("invalid_request_error", "invalid_api_key"),
            GatewayError::Forbidden(_) => ("permission_error", "model_not_allowed"),
            GatewayError::RateLimited { .. } => ("rate_limit_error", "rate_limit_exceeded"),
            GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::NotFound { .. } => ("invalid_request_error", "unknown_url"),
            GatewayError::MethodNotAllowed { .. } => {
                ("invalid_request_error", "method_not_allowed")
            }
            GatewayError::QueueFull { .. } => ("rate_limit_error", "local_queue_full"),
            GatewayError::BackendUnavailable(_) => ("service_unavailable", "backend_unavailable"),
            GatewayError::Overloaded { .. } => ("service_unavailable", "backend_overloaded"),
            GatewayError::UpstreamTimeout(_) => ("timeout_error", "upstream_timeout"),
            GatewayError::UpstreamFailed(_) => ("upstream_error", "upstream_failed"),
            GatewayError::UpstreamClientError { .. } => ("invalid_request_error", "upstream_error"),
            GatewayError::UpstreamStreamError { .. } => ("upstream_error", "upstream_failed"),
            GatewayError::Internal(_) => ("server_error", "internal_error"),
        }
    }

    /// The OpenAI-shaped JSON body of one of the gateway's own errors.
    pub fn openai_body(&self) -> Value {
        let (ty, code) = self.openai_type_code();
        let param = match self {
            GatewayError::InvalidRequest { param, .. } => param.clone(),
            GatewayError::ModelNotFound(_) => Some("model".into()),
            _ => None,
        };
        json!({
            "error": { "message": self.to_string(), "type": ty, "param": param, "code": code }
        })
    }

    /// The body in the client's API format. An upstream's own 4xx body goes
    /// to clients of its API as it came (`None`: send the bytes unchanged)
    /// and is translated for the other.
    pub fn body(&self, client: ApiFormat) -> Option<Value> {
        let status = self.status().as_u16();
        match (self, client) {
            (GatewayError::UpstreamClientError { format, .. }, c) if *format == c => None,
            (GatewayError::UpstreamClientError { body, .. }, ApiFormat::OpenAi) => {
                Some(openai_from_anthropic_error(status, body))
            }
            (GatewayError::UpstreamClientError { body, .. }, ApiFormat::Anthropic) => {
                Some(anthropic_from_openai_error(status, body))
            }
            (GatewayError::UpstreamStreamError { error, format, .. }, c) => {
                Some(match (format, c) {
                    (ApiFormat::OpenAi, ApiFormat::OpenAi) => json!({ "error": error }),
                    (ApiFormat::Anthropic, ApiFormat::Anthropic) => {
                        json!({"type": "error", "error": error})
                    }
                    (ApiFormat::Anthropic, ApiFormat::OpenAi) => json!({"error": {
                    "message": error.get("message").cloned().unwrap_or(Value::Null),
                    "type": error.get("type").cloned().unwrap_or_else(|| "upstream_error".into()),
                    "param": null, "code": null}}),
                    (ApiFormat::OpenAi, ApiFormat::Anthropic) => anthropic_error_body(
                        status,
                        error
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("upstream error"),
                    ),
                })
            }
            (_, ApiFormat::OpenAi) => Some(self.openai_body()),
            (_, ApiFormat::Anthropic) => Some(anthropic_error_body(status, &self.to_string())),
        }
    }

    /// The error as a response in the client's API format, carrying itself
    /// in the extensions (`Failure`).
    pub fn render(self, client: ApiFormat) -> Response {
        let body = match (self.body(client), &self) {
            (Some(v), _) => Bytes::from(v.to_string()),
            (None, GatewayError::UpstreamClientError { body, .. }) => body.clone(),
            (None, _) => Bytes::new(),
        };
        let mut resp = Response::new(axum::body::Body::from(body));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let retry_after = match &self {
            GatewayError::QueueFull { retry_after, .. }
            | GatewayError::RateLimited { retry_after, .. } => Some(*retry_after),
            GatewayError::Overloaded { retry_after, .. } => *retry_after,
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut().insert(Failure(self));
        resp
    }

    /// The SSE event that ends a stream which failed after its head was
    /// sent, in the client's format (the status is in the event: the HTTP
    /// status line went out with the head).
    pub fn stream_event(&self, client: ApiFormat) -> Bytes {
        let body = self
            .body(client)
            .unwrap_or_else(|| Value::String(self.to_string()));
        match client {
            ApiFormat::OpenAi => sse::data_event(&body.to_string()),
            ApiFormat::Anthropic => sse::named_event("error", &body.to_string()),
        }
    }

    /// An error an upstream reported inside its event stream (Anthropic's
    /// `error` event, an OpenAI `{"error": ...}` chunk): its `error` object,
    /// in `format`'s shape. `source` names who failed ("backend `claude`",
    /// "the upstream").
    pub fn from_stream_error(source: &str, error: &Value, format: ApiFormat) -> GatewayError {
        let field = |k: &str| error.get(k).and_then(Value::as_str);
        let msg = field("message").unwrap_or("upstream error");
        let ty = field("type").or_else(|| field("code")).unwrap_or("error");
        let status = match ty {
            "overloaded_error" => StatusCode::SERVICE_UNAVAILABLE,
            "timeout_error" => StatusCode::GATEWAY_TIMEOUT,
            "rate_limit_error" | "rate_limit_exceeded" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_GATEWAY,
        };
        GatewayError::UpstreamStreamError {
            status,
            error: Box::new(error.clone()),
            format,
            message: format!("{source} failed mid-stream ({ty}): {msg}"),
        }
    }
}

/// The error a response stands for, if it is an error response.
pub fn failure(resp: &Response) -> Option<&GatewayError> {
    resp.extensions().get::<Failure>().map(|f| &f.0)
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.render(ApiFormat::OpenAi)
    }
}

/// Anthropic's error `type` for an HTTP status.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Anthropic's error body.
pub fn anthropic_error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
}

/// An OpenAI error body (from an OpenAI-compatible upstream) in Anthropic's shape.
pub fn anthropic_from_openai_error(status: u16, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("upstream answered {status}"));
    anthropic_error_body(status, &msg)
}

/// An Anthropic error body in OpenAI's shape.
pub fn openai_from_anthropic_error(status: u16, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error");
    let msg = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("upstream answered {status}"));
    let ty = e
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("upstream_error");
    json!({"error": {"message": msg, "type": ty, "param": null, "code": null}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_between_shapes() {
        let a = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let o = openai_from_anthropic_error(529, a);
        assert_eq!(o["error"]["message"], "Overloaded");
        assert_eq!(o["error"]["type"], "overloaded_error");
        let o = br#"{"error":{"message":"bad model","type":"invalid_request_error","code":null}}"#;
        let a = anthropic_from_openai_error(404, o);
        assert_eq!(
            a,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "bad model"}})
        );
        for (s, t) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (503, "overloaded_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(anthropic_error_type(s), t, "{s}");
        }
    }

    /// A stream that fails after its head ends in an error event in the
    /// client's shape, with the same status/type map as whole responses.
    #[test]
    fn mid_stream_errors_use_the_same_map() {
        let timeout = GatewayError::UpstreamTimeout("backend `x` stream timed out".into());
        let a = String::from_utf8_lossy(&timeout.stream_event(ApiFormat::Anthropic)).into_owned();
        assert!(a.starts_with("event: error\n"), "{a}");
        assert!(a.contains("timeout_error"), "{a}");
        let o = String::from_utf8_lossy(&timeout.stream_event(ApiFormat::OpenAi)).into_owned();
        let v: Value = serde_json::from_str(o.trim().trim_start_matches("data: ")).unwrap();
        assert_eq!(v["error"]["code"], "upstream_timeout");
        assert_eq!(v["error"]["type"], "timeout_error");
        let failed = GatewayError::UpstreamFailed("gone".into());
        let a = String::from_utf8_lossy(&failed.stream_event(ApiFormat::Anthropic)).into_owned();
        assert!(a.contains("api_error"), "{a}");
        let upstream = json!({"type": "overloaded_error", "message": "Overloaded"});
        let e =
            GatewayError::from_stream_error("backend `claude`", &upstream, ApiFormat::Anthropic);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.to_string().contains("Overloaded"));
        // Clients of the upstream's API get its error object unchanged.
        let a = String::from_utf8_lossy(&e.stream_event(ApiFormat::Anthropic)).into_owned();
        let v: Value =
            serde_json::from_str(a.trim().trim_start_matches("event: error\ndata: ")).unwrap();
        assert_eq!(v, json!({"type": "error", "error": upstream}));
        let o = String::from_utf8_lossy(&e.stream_event(ApiFormat::OpenAi)).into_owned();
        let v: Value = serde_json::from_str(o.trim().trim_start_matches("data: ")).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
        let limited =
            json!({"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"});
        let e = GatewayError::from_stream_error("backend `x`", &limited, ApiFormat::OpenAi);
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY, "type wins over code");
        let o = String::from_utf8_lossy(&e.stream_event(ApiFormat::OpenAi)).into_owned();
        assert!(o.contains("rate_limit_exceeded"), "passed through: {o}");
    }

    #[test]
    fn render_carries_the_error_and_retry_after() {
        let e = GatewayError::QueueFull {
            message: "full".into(),
            retry_after: Duration::from_secs(2),
        };
        let r = e.render(ApiFormat::Anthropic);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert!(matches!(failure(&r), Some(GatewayError::QueueFull { .. })));
    }
}
