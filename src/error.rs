//! Every error the gateway returns, mapped to an HTTP status and a body in
//! the client's API format in one place. Messages never contain secrets:
//! upstream bodies are only passed through for upstream 4xx answers, which
//! are the upstream's words about the client's request.

use crate::api::ApiFormat;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
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
    #[error("The model `{0}` does not exist; GET /v1/models lists the models and routes this gateway serves")]
    ModelNotFound(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{message}")]
    QueueFull {
        message: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    BackendUnavailable(String),
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
    #[error("{0}")]
    Internal(String),
}

/// Closed set of error kinds, used as metric labels (never raw messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
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
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::ModelNotFound(_) | GatewayError::NotFound { .. } => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamClientError { status, .. } => *status,
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
            GatewayError::ModelNotFound(_) | GatewayError::NotFound { .. } => ErrorKind::NotFound,
            GatewayError::QueueFull { .. } => ErrorKind::RateLimited,
            GatewayError::BackendUnavailable(_) => ErrorKind::Unavailable,
            GatewayError::UpstreamTimeout(_) => ErrorKind::Timeout,
            GatewayError::UpstreamFailed(_) => ErrorKind::Upstream,
            GatewayError::UpstreamClientError { .. } => ErrorKind::UpstreamClient,
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
            GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::NotFound { .. } => ("invalid_request_error", "unknown_url"),
            GatewayError::MethodNotAllowed { .. } => {
                ("invalid_request_error", "method_not_allowed")
            }
            GatewayError::QueueFull { .. } => ("rate_limit_error", "local_queue_full"),
            GatewayError::BackendUnavailable(_) => ("service_unavailable", "backend_unavailable"),
            GatewayError::UpstreamTimeout(_) => ("timeout_error", "upstream_timeout"),
            GatewayError::UpstreamFailed(_) => ("upstream_error", "upstream_failed"),
            GatewayError::UpstreamClientError { .. } => ("invalid_request_error", "upstream_error"),
            GatewayError::Internal(_) => ("server_error", "internal_error"),
        }
    }

    /// The OpenAI-shaped JSON body.
    pub fn openai_body(&self) -> serde_json::Value {
        let (ty, code) = self.openai_type_code();
        let param = match self {
            GatewayError::InvalidRequest { param, .. } => param.clone(),
            GatewayError::ModelNotFound(_) => Some("model".into()),
            _ => None,
        };
        serde_json::json!({
            "error": { "message": self.to_string(), "type": ty, "param": param, "code": code }
        })
    }
}

/// Marker put into response extensions so the error is logged exactly once (by the trace layer).
#[derive(Debug, Clone)]
pub struct LoggedError(pub ErrorKind, pub String);

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.render(ApiFormat::OpenAi)
    }
}

impl GatewayError {
    /// The error as a response in the client's API format.
    pub fn render(self, client: ApiFormat) -> Response {
        let status = self.status();
        let json = |v: serde_json::Value| axum::Json(v).into_response();
        let mut resp = match (&self, client) {
            (GatewayError::UpstreamClientError { body, format, .. }, c) if *format == c => {
                let mut r = Response::new(axum::body::Body::from(body.clone()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            (GatewayError::UpstreamClientError { body, .. }, ApiFormat::OpenAi) => json(
                crate::translate::to_openai::error_from_anthropic(status.as_u16(), body),
            ),
            (GatewayError::UpstreamClientError { body, .. }, ApiFormat::Anthropic) => json(
                crate::translate::to_anthropic::error_from_openai(status.as_u16(), body),
            ),
            (_, ApiFormat::OpenAi) => json(self.openai_body()),
            (_, ApiFormat::Anthropic) => json(crate::translate::to_anthropic::error_body(
                status.as_u16(),
                &self.to_string(),
            )),
        };
        *resp.status_mut() = status;
        if let GatewayError::QueueFull { retry_after, .. } = &self {
            let secs = retry_after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut()
            .insert(LoggedError(self.kind(), self.to_string()));
        resp
    }
}
