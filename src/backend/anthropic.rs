//! Anthropic's Messages API as a backend for OpenAI-shaped requests: the
//! request is translated (`translate::to_anthropic`), the answer and its
//! event stream translated back (`translate::to_openai`).

use super::http::{Auth, EventMapper, Upstream};
use super::sse;
use super::{BackendReply, DispatchError, ReplyBody, UsageCell};
use crate::api::openai::ParsedRequest;
use crate::api::ApiFormat;
use crate::config::AnthropicConfig;
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use crate::translate::{to_anthropic, to_openai};
use bytes::Bytes;
use http::HeaderName;
use serde_json::Value;
use std::sync::Arc;

pub struct AnthropicBackend {
    up: Upstream,
    default_max_tokens: u64,
}

/// Anthropic events -> OpenAI chunks.
struct Translate {
    t: to_openai::StreamTranslator,
    reported: bool,
}

impl EventMapper for Translate {
    fn event(&mut self, event: Bytes) -> Vec<Bytes> {
        match sse::event_data(&event) {
            Some(data) => self.t.push(&data),
            None => vec![],
        }
    }
    fn take_usage(&mut self) -> Option<Usage> {
        (self.t.finished && !std::mem::replace(&mut self.reported, true)).then(|| self.t.usage())
    }
}

impl AnthropicBackend {
    pub fn new(
        name: &str,
        cfg: &AnthropicConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let auth = Auth {
            header: HeaderName::from_static("x-api-key"),
            prefix: "",
        };
        let fixed = [(
            HeaderName::from_static("anthropic-version"),
            cfg.version.as_str(),
        )];
        let up = Upstream::new(
            name,
            &cfg.cloud(),
            "/v1/messages",
            auth,
            &fixed,
            ApiFormat::Anthropic,
            env,
        )?;
        Ok(Self {
            up,
            default_max_tokens: cfg.default_max_tokens,
        })
    }

    pub fn availability(&self) -> Result<(), DispatchError> {
        self.up.availability()
    }

    pub async fn chat(
        &self,
        req: &ParsedRequest,
        model: &str,
    ) -> Result<BackendReply, DispatchError> {
        self.up.availability()?;
        let body =
            to_anthropic::request(&req.raw, model, self.default_max_tokens).map_err(|e| {
                match e {
                    // Another target may support what Anthropic cannot.
                    GatewayError::Unsupported(_) => DispatchError::retryable("unsupported", e),
                    e => DispatchError::fatal("client_error", e),
                }
            })?;
        let body = serde_json::to_vec(&body).map(Bytes::from).map_err(|e| {
            DispatchError::fatal(
                "internal",
                GatewayError::Internal(format!("encoding request: {e}")),
            )
        })?;
        let sent = self.up.send(body, req.stream).await?;
        let started = sent.started;
        if req.stream {
            let usage = Arc::new(UsageCell::default());
            let mapper = Translate {
                t: to_openai::StreamTranslator::new(req.include_usage),
                reported: false,
            };
            let events = self.up.stream(sent, mapper, usage.clone());
            return Ok(BackendReply {
                body: ReplyBody::Stream { events, usage },
                upstream_wait: started.elapsed(),
            });
        }
        let bytes = self.up.read_full(sent).await?;
        let msg: Value = serde_json::from_slice(&bytes).map_err(|e| {
            DispatchError::retryable(
                "bad_response",
                GatewayError::UpstreamFailed(format!(
                    "backend `{}` answered with invalid JSON: {e}",
                    self.up.name
                )),
            )
        })?;
        let (v, usage) = to_openai::response(&msg);
        Ok(BackendReply {
            body: ReplyBody::Full {
                bytes: Bytes::from(v.to_string()),
                usage,
            },
            upstream_wait: started.elapsed(),
        })
    }
}
