//! Backends answer a parsed chat request for one concrete model: the local
//! model in-process, or a cloud API over reqwest. Each returns the OpenAI
//! body (whole, or as client-ready SSE events) plus the usage for metering.

pub mod anthropic;
pub mod http;
pub mod local;
pub mod openai;
pub mod sse;
pub mod stop;

use crate::api::openai::ParsedRequest;
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Usage learned while a stream runs; read when it ends.
#[derive(Debug, Default)]
pub struct UsageCell(Mutex<Option<Usage>>);

impl UsageCell {
    pub fn set(&self, u: Usage) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(u);
        }
    }
    pub fn get(&self) -> Option<Usage> {
        self.0.lock().ok().and_then(|g| *g)
    }
}

pub enum ReplyBody {
    /// A complete OpenAI JSON body.
    Full { bytes: Bytes, usage: Usage },
    /// Client-ready SSE events; the stream ends with `data: [DONE]`.
    Stream {
        events: BoxStream<'static, Bytes>,
        usage: Arc<UsageCell>,
    },
}

pub struct BackendReply {
    pub body: ReplyBody,
    /// The API shape of `body`: OpenAI, except an Anthropic backend answering
    /// a `/v1/messages` request natively.
    pub format: crate::api::ApiFormat,
    /// Time spent waiting on the backend before the reply was ready to send
    /// (whole body, or the stream's head).
    pub upstream_wait: Duration,
}

/// Why a target failed; `reason` is a closed-set metric label.
#[derive(Debug)]
pub struct DispatchError {
    pub reason: &'static str,
    pub error: GatewayError,
    /// Whether the next fallback may be tried (false for the client's own errors).
    pub fallback_ok: bool,
}

impl DispatchError {
    pub fn retryable(reason: &'static str, error: GatewayError) -> Self {
        Self {
            reason,
            error,
            fallback_ok: true,
        }
    }
    pub fn fatal(reason: &'static str, error: GatewayError) -> Self {
        Self {
            reason,
            error,
            fallback_ok: false,
        }
    }
}

pub enum Backend {
    OpenAi(openai::OpenAiBackend),
    Anthropic(anthropic::AnthropicBackend),
    Local(local::LocalBackend),
}

impl Backend {
    /// Ok when requests can be sent now; otherwise why not (names the fix).
    pub fn availability(&self) -> Result<(), DispatchError> {
        match self {
            Backend::OpenAi(b) => b.availability(),
            Backend::Anthropic(b) => b.availability(),
            Backend::Local(b) => b.availability(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Backend::OpenAi(_) => "openai",
            Backend::Anthropic(_) => "anthropic",
            Backend::Local(_) => "local",
        }
    }

    pub async fn chat(
        &self,
        req: &ParsedRequest,
        model: &str,
    ) -> Result<BackendReply, DispatchError> {
        match self {
            Backend::OpenAi(b) => b.chat(req, model).await,
            Backend::Anthropic(b) => b.chat(req, model).await,
            Backend::Local(b) => b.chat(req, model).await,
        }
    }
}
