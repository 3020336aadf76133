//! Any OpenAI-compatible chat-completions API. The request body is the
//! client's, with only `model` (and, for streams, `stream_options`) changed;
//! streams are passed through event by event, the usage chunk recorded.

use super::http::{Auth, EventMapper, Upstream};
use super::sse::{self, Filtered};
use super::{BackendReply, DispatchError, ReplyBody};
use crate::api::openai::ParsedRequest;
use crate::api::ApiFormat;
use crate::config::Cloud;
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

pub struct OpenAiBackend {
    up: Upstream,
    /// The local tier on another machine (`self_hosted: true`).
    pub self_hosted: bool,
}

/// What a whole answer is read for: valid JSON, and its usage (read
/// leniently: a null or odd count is 0, never a failure).
#[derive(Deserialize)]
struct UsageOnly {
    usage: Option<Value>,
}

/// Forward OpenAI events; record usage, strip the usage chunk when the
/// client did not ask for it. An error chunk is the upstream's failure.
struct PassThrough {
    backend: String,
    wants_usage: bool,
    usage: Option<Usage>,
    /// `[DONE]` came.
    done: bool,
    /// For the estimate: the prompt's tokens, and the chunks so far (about
    /// one token each).
    prompt_estimate: u64,
    chunks: u64,
}

impl EventMapper for PassThrough {
    fn event(&mut self, event: Bytes) -> Result<Vec<Bytes>, GatewayError> {
        self.done |= sse::is_done(&event);
        self.chunks += 1;
        match sse::filter_openai_event(event, self.wants_usage, &mut self.usage) {
            Filtered::Forward(b) => Ok(vec![b]),
            Filtered::Drop => Ok(vec![]),
            Filtered::Failed(e) => {
                let source = format!("backend `{}`", self.backend);
                Err(GatewayError::from_stream_error(
                    &source,
                    &e,
                    ApiFormat::OpenAi,
                ))
            }
        }
    }

    /// `[DONE]` came: the answer is complete, stop reading.
    fn is_done(&self) -> bool {
        self.done
    }

    fn estimate(&self) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: self.chunks.saturating_sub(1),
        })
    }

    /// A stream that ends without `[DONE]` was cut off.
    fn end(&mut self) -> Result<Vec<Bytes>, GatewayError> {
        if self.done {
            return Ok(vec![]);
        }
        Err(GatewayError::UpstreamFailed(format!(
            "backend `{}`: the upstream stream ended early",
            self.backend
        )))
    }
    fn take_usage(&mut self) -> Option<Usage> {
        self.usage.take()
    }
}

impl OpenAiBackend {
    /// `env` looks up environment variables (injected so tests need not touch the process env).
    pub fn new(
        name: &str,
        cfg: &Cloud<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let auth = Auth {
            header: http::header::AUTHORIZATION,
            prefix: "Bearer ",
        };
        let up = Upstream::new(
            name,
            cfg,
            "/chat/completions",
            auth,
            &[],
            ApiFormat::OpenAi,
            env,
        )?;
        Ok(Self {
            up,
            self_hosted: false,
        })
    }

    pub fn availability(&self) -> Result<(), DispatchError> {
        self.up.availability()
    }

    pub fn replicas(&self) -> &std::sync::Arc<super::replicas::Replicas> {
        self.up.replicas()
    }

    fn body(&self, req: &ParsedRequest, model: &str) -> Result<Bytes, DispatchError> {
        let mut raw = req.raw.clone();
        raw.insert("model".into(), Value::String(model.to_string()));
        if req.stream {
            // Ask for the usage chunk so streams are metered; stripped again
            // for clients that did not ask for it.
            let opts = raw
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        serde_json::to_vec(&raw).map(Bytes::from).map_err(|e| {
            DispatchError::fatal(
                "internal",
                GatewayError::Internal(format!("encoding request: {e}")),
            )
        })
    }

    pub async fn chat(
        &self,
        req: &ParsedRequest,
        model: &str,
    ) -> Result<BackendReply, DispatchError> {
        self.up.availability()?;
        let sent = self.up.send(self.body(req, model)?, req.stream).await?;
        let started = sent.started;
        if req.stream {
            let mapper = PassThrough {
                backend: self.up.name.clone(),
                wants_usage: req.include_usage,
                usage: None,
                done: false,
                prompt_estimate: super::prompt_estimate(req),
                chunks: 0,
            };
            return Ok(self.up.stream_reply(sent, mapper, ApiFormat::OpenAi));
        }
        let bytes = self.up.read_full(sent).await?;
        // An answer that is not JSON is the upstream's failure (502, or the
        // next fallback), never an empty success — whatever the client speaks.
        let usage = serde_json::from_slice::<UsageOnly>(&bytes)
            .map_err(|e| {
                DispatchError::retryable(
                    "bad_response",
                    GatewayError::UpstreamFailed(format!(
                        "backend `{}` answered with invalid JSON: {e}",
                        self.up.name
                    )),
                )
            })
            .map(|u| {
                u.usage
                    .as_ref()
                    .and_then(sse::usage_from)
                    .unwrap_or_default()
            })?;
        Ok(BackendReply {
            format: ApiFormat::OpenAi,
            body: ReplyBody::Full { bytes, usage },
            upstream_wait: started.elapsed(),
        })
    }
}
