//! Anthropic's Messages API as a backend for OpenAI-shaped requests: the
//! request is translated (`translate::to_anthropic`), the answer and its
//! event stream translated back (`translate::to_openai`).

use super::http::{Auth, EventMapper, Upstream};
use super::stop::StopFilter;
use super::{BackendReply, DispatchError, ReplyBody};
use crate::api::openai::ParsedRequest;
use crate::api::{sse, ApiFormat};
use crate::config::AnthropicConfig;
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use crate::translate::{to_anthropic, to_openai};
use bytes::Bytes;
use http::HeaderName;
use serde_json::{json, Value};

pub struct AnthropicBackend {
    up: Upstream,
    default_max_tokens: u64,
}

/// Anthropic events -> OpenAI chunks, with the stop strings Anthropic does
/// not accept (whitespace-only) applied here.
struct Translate {
    backend: String,
    /// Events so far and the prompt's estimated tokens (for `estimate`).
    events: u64,
    prompt_estimate: u64,
    t: to_openai::StreamTranslator,
    stops: StopFilter,
    /// Cut at one of our stop strings: the answer is complete.
    cut: bool,
}

impl Translate {
    /// One OpenAI chunk through the stop filter.
    fn filter(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        let Some(v) = sse::event_data(&chunk).and_then(|d| serde_json::from_str::<Value>(&d).ok())
        else {
            out.push(chunk); // [DONE]
            return;
        };
        let choice = &v["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str() {
            let mut delta = choice["delta"].clone(); // the role too, on the first chunk
            delta["content"] = self.stops.push(text).into();
            out.push(self.t.chunk(delta, None));
            if !self.stops.stopped() {
                return;
            }
            self.cut = true;
            out.push(self.t.chunk(json!({}), Some("stop")));
            if self.t.include_usage {
                out.push(self.t.usage_chunk());
            }
            out.push(Bytes::from_static(sse::DONE));
            self.t.finished = true;
            return;
        }
        if !choice["finish_reason"].is_null() {
            let rest = self.stops.finish();
            if !rest.is_empty() {
                out.push(self.t.chunk(json!({"content": rest}), None));
            }
        }
        out.push(chunk); // role, tool calls, finish, usage
    }
}

impl EventMapper for Translate {
    fn event(&mut self, event: Bytes) -> Result<Vec<Bytes>, GatewayError> {
        self.events += 1;
        if self.cut {
            return Ok(vec![]);
        }
        let chunks = match sse::event_data(&event) {
            Some(data) => self.t.push(&data).map_err(|e| self.named(e))?,
            None => vec![],
        };
        if !self.stops.is_active() {
            return Ok(chunks);
        }
        let mut out = Vec::with_capacity(chunks.len());
        for c in chunks {
            if !self.cut {
                self.filter(c, &mut out);
            }
        }
        Ok(out)
    }
    fn is_done(&self) -> bool {
        self.cut
    }
    fn take_usage(&mut self) -> Option<Usage> {
        self.t.finished.then(|| self.t.usage())
    }
    fn estimate(&self) -> Option<Usage> {
        Some(so_far(self.t.usage(), self.prompt_estimate, self.events))
    }
    fn end(&mut self) -> Result<Vec<Bytes>, GatewayError> {
        use crate::translate::StreamTranslate;
        self.t.finish().map_err(|e| self.named(e))
    }
}

impl Translate {
    /// The translator's "the upstream" becomes this backend's name.
    fn named(&self, e: GatewayError) -> GatewayError {
        rename(e, &self.backend)
    }
}

/// Usage so far of an Anthropic stream: `message_start` gives the input
/// tokens; output is counted at the end, so until then about one token per
/// event (three are not text: start, block start, ping).
fn so_far(u: Usage, prompt_estimate: u64, events: u64) -> Usage {
    Usage {
        prompt_tokens: if u.prompt_tokens > 0 {
            u.prompt_tokens
        } else {
            prompt_estimate
        },
        completion_tokens: u.completion_tokens.max(events.saturating_sub(3)),
    }
}

/// Name the backend in a mid-stream failure's message.
fn rename(e: GatewayError, backend: &str) -> GatewayError {
    let named = |m: String| m.replacen("the upstream", &format!("backend `{backend}`"), 1);
    match e {
        GatewayError::UpstreamFailed(m) => GatewayError::UpstreamFailed(named(m)),
        GatewayError::UpstreamTimeout(m) => GatewayError::UpstreamTimeout(named(m)),
        GatewayError::BackendUnavailable(m) => GatewayError::BackendUnavailable(named(m)),
        GatewayError::UpstreamStreamError {
            status,
            error,
            format,
            message,
        } => GatewayError::UpstreamStreamError {
            status,
            error,
            format,
            message: named(message),
        },
        e => e,
    }
}

/// Anthropic events passed through untouched (a `/v1/messages` client);
/// usage read from `message_start` and `message_delta`. An `error` event is
/// the upstream's failure, returned as such.
struct Native {
    backend: String,
    usage: Usage,
    done: bool,
    events: u64,
    prompt_estimate: u64,
}

impl EventMapper for Native {
    fn event(&mut self, event: Bytes) -> Result<Vec<Bytes>, GatewayError> {
        self.events += 1;
        if let Some(v) =
            sse::event_data(&event).and_then(|d| serde_json::from_str::<Value>(&d).ok())
        {
            to_openai::track_usage(&mut self.usage, &v);
            match v["type"].as_str() {
                Some("message_stop") => self.done = true,
                Some("error") => {
                    self.done = true;
                    let source = format!("backend `{}`", self.backend);
                    return Err(GatewayError::from_stream_error(
                        &source,
                        &v["error"],
                        ApiFormat::Anthropic,
                    ));
                }
                _ => {}
            }
        }
        Ok(vec![event])
    }
    fn take_usage(&mut self) -> Option<Usage> {
        self.done.then_some(self.usage)
    }
    fn estimate(&self) -> Option<Usage> {
        Some(so_far(self.usage, self.prompt_estimate, self.events))
    }
    fn end(&mut self) -> Result<Vec<Bytes>, GatewayError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(vec![]);
        }
        Err(GatewayError::UpstreamFailed(format!(
            "backend `{}`: the upstream stream ended early",
            self.backend
        )))
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
        if let Some(native) = &req.native {
            return self
                .native(native, req.stream, model, super::prompt_estimate(req))
                .await;
        }
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
        let (_, gateway_stops) = to_anthropic::split_stops(&req.raw);
        let sent = self.up.send(body, req.stream).await?;
        let started = sent.started;
        if req.stream {
            let mapper = Translate {
                backend: self.up.name.clone(),
                events: 0,
                prompt_estimate: super::prompt_estimate(req),
                t: to_openai::StreamTranslator::new(req.include_usage),
                stops: StopFilter::new(&gateway_stops),
                cut: false,
            };
            return Ok(self.up.stream_reply(sent, mapper, ApiFormat::OpenAi));
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
        let (mut v, usage) = to_openai::response(&msg);
        cut_at_stops(&mut v, &gateway_stops);
        Ok(BackendReply {
            format: ApiFormat::OpenAi,
            body: ReplyBody::Full {
                bytes: Bytes::from(v.to_string()),
                usage,
            },
            upstream_wait: started.elapsed(),
        })
    }
}

impl AnthropicBackend {
    /// A `/v1/messages` request: the client's body as is (but for `model`),
    /// the answer in Anthropic's shape.
    async fn native(
        &self,
        native: &crate::api::AnthropicBody,
        stream: bool,
        model: &str,
        prompt_estimate: u64,
    ) -> Result<BackendReply, DispatchError> {
        let mut body = native.body.clone();
        body.insert("model".into(), model.into());
        let bytes = serde_json::to_vec(&body).map(Bytes::from).map_err(|e| {
            DispatchError::fatal(
                "internal",
                GatewayError::Internal(format!("encoding request: {e}")),
            )
        })?;
        let mut extra = http::HeaderMap::new();
        if let Some(b) = &native.beta {
            extra.insert(HeaderName::from_static("anthropic-beta"), b.clone());
        }
        let sent = self.up.send_with(bytes, stream, &extra).await?;
        let started = sent.started;
        if stream {
            let mapper = Native {
                backend: self.up.name.clone(),
                usage: Usage::default(),
                done: false,
                events: 0,
                prompt_estimate,
            };
            return Ok(self.up.stream_reply(sent, mapper, ApiFormat::Anthropic));
        }
        let bytes = self.up.read_full(sent).await?;
        let usage = serde_json::from_slice::<Value>(&bytes)
            .map(|v| to_openai::usage(v.get("usage")))
            .unwrap_or_default();
        Ok(BackendReply {
            body: ReplyBody::Full { bytes, usage },
            format: ApiFormat::Anthropic,
            upstream_wait: started.elapsed(),
        })
    }
}

/// Apply the whitespace-only stop strings to a whole answer: cut the text at
/// the first one and report `stop`.
fn cut_at_stops(v: &mut Value, stops: &[String]) {
    let msg = &mut v["choices"][0]["message"];
    let Some(text) = msg["content"].as_str() else {
        return;
    };
    if let Some(pos) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        msg["content"] = text[..pos].to_string().into();
        if v["choices"][0]["finish_reason"] != "tool_calls" {
            v["choices"][0]["finish_reason"] = "stop".into();
        }
    }
}
