//! Anthropic event streams in OpenAI's shape (an Anthropic backend's
//! streamed answers for OpenAI-shaped requests).

use super::response::{track_usage, usage_json};
use crate::api::openai::unix_now;
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use crate::translate::finish_reason;
use bytes::Bytes;
use serde_json::{json, Value};

/// Anthropic event stream -> OpenAI chunk stream. Feed each event's name and
/// data to `push`; it yields client-ready `data:` events, `[DONE]` included.
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    usage: Usage,
    /// Anthropic block index -> OpenAI tool-call index.
    tools: Vec<(u64, u64)>,
    pub include_usage: bool,
    pub finished: bool,
}

impl StreamTranslator {
    pub fn new(include_usage: bool) -> Self {
        Self {
            id: "chatcmpl".into(),
            model: String::new(),
            created: unix_now(),
            usage: Usage::default(),
            tools: Vec::new(),
            include_usage,
            finished: false,
        }
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// An OpenAI chunk of this stream.
    pub fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        crate::translate::data_event(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        }))
    }

    /// The final usage-only chunk (for clients that asked for it).
    pub fn usage_chunk(&self) -> Bytes {
        crate::translate::data_event(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [], "usage": usage_json(self.usage),
        }))
    }

    /// One Anthropic event's `data:` payload. An `error` event is the
    /// upstream's failure, returned as such.
    pub fn push(&mut self, data: &str) -> Result<Vec<Bytes>, GatewayError> {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Ok(vec![]);
        };
        track_usage(&mut self.usage, &v);
        let mut out = Vec::new();
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = v.get("message");
                if let Some(id) = m.and_then(|m| m.get("id")).and_then(Value::as_str) {
                    self.id = id.to_string();
                }
                if let Some(model) = m.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    self.model = model.to_string();
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            Some("content_block_start") => {
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let b = v.get("content_block");
                match b.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = b
                            .and_then(|b| b.get("text"))
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            out.push(self.chunk(json!({"content": t}), None));
                        }
                    }
                    Some("tool_use") => {
                        let k = self.tools.len() as u64;
                        self.tools.push((idx, k));
                        let input = b
                            .and_then(|b| b.get("input"))
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()));
                        let args = input.map(Value::to_string).unwrap_or_default();
                        out.push(self.chunk(json!({"tool_calls": [{"index": k, "id": b.and_then(|b| b.get("id")), "type": "function",
                            "function": {"name": b.and_then(|b| b.get("name")), "arguments": args}}]}), None));
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let d = v.get("delta");
                match d.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d
                            .and_then(|d| d.get("text"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if !t.is_empty() {
                            out.push(self.chunk(json!({"content": t}), None));
                        }
                    }
                    Some("input_json_delta") => {
                        let part = d
                            .and_then(|d| d.get("partial_json"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if let Some(&(_, k)) = self.tools.iter().find(|(i, _)| *i == idx) {
                            if !part.is_empty() {
                                out.push(self.chunk(json!({"tool_calls": [{"index": k, "function": {"arguments": part}}]}), None));
                            }
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(s) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    out.push(self.chunk(json!({}), Some(finish_reason(s))));
                }
            }
            Some("message_stop") => {
                if self.include_usage {
                    out.push(self.usage_chunk());
                }
                out.push(Bytes::from_static(crate::api::sse::DONE));
                self.finished = true;
            }
            Some("error") => {
                self.finished = true;
                return Err(GatewayError::from_stream_error(
                    "the upstream",
                    v.get("error").unwrap_or(&Value::Null),
                    crate::api::ApiFormat::Anthropic,
                ));
            }
            _ => {} // ping and future event types
        }
        Ok(out)
    }
}
