//! OpenAI chunk streams in Anthropic's event shape (for `/v1/messages`
//! clients answered by an OpenAI-shaped backend).

use crate::error::GatewayError;
use crate::translate::{named_event, stop_reason};
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq)]
enum Block {
    Text,
    /// An OpenAI tool call, by its `index`.
    Tool(u64),
}

/// OpenAI chunk stream -> Anthropic event stream. Feed every `data:` payload
/// to `push`; call `finish` when the upstream stream ends.
#[derive(Default)]
pub struct StreamTranslator {
    started: bool,
    done: bool,
    /// `[DONE]` or a `finish_reason` arrived: the answer is complete.
    complete: bool,
    open: Option<(u64, Block)>,
    next_index: u64,
    stop: Option<&'static str>,
    input_tokens: u64,
    output_tokens: u64,
}

impl StreamTranslator {
    /// One OpenAI chunk's `data:` payload. An error chunk is the upstream's
    /// failure, returned as such (the client-format edge renders it).
    pub fn push(&mut self, data: &str) -> Result<Vec<Bytes>, GatewayError> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        if data.trim() == "[DONE]" {
            self.complete = true;
            return self.finish();
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Ok(out);
        };
        if let Some(e) = v.get("error").filter(|e| e.is_object()) {
            self.done = true;
            return Err(GatewayError::from_stream_error(
                "the upstream",
                e,
                crate::api::ApiFormat::OpenAi,
            ));
        }
        self.start(&v, &mut out);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.input_tokens = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
            self.output_tokens = u
                .get("completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Ok(out);
        };
        let delta = choice.get("delta");
        if let Some(t) = delta.and_then(|d| d.get("content")).and_then(Value::as_str) {
            if !t.is_empty() {
                let idx =
                    self.open_block(Block::Text, json!({"type": "text", "text": ""}), &mut out);
                out.push(named_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": t}}),
                ));
            }
        }
        for tc in delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let k = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = tc.get("function");
            let block = json!({
                "type": "tool_use",
                "id": tc.get("id").cloned().unwrap_or_else(|| format!("toolu_{k}").into()),
                "name": f.and_then(|f| f.get("name")).cloned().unwrap_or_else(|| "".into()),
                "input": {},
            });
            let idx = self.open_block(Block::Tool(k), block, &mut out);
            if let Some(a) = f.and_then(|f| f.get("arguments")).and_then(Value::as_str) {
                if !a.is_empty() {
                    out.push(named_event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": idx, "delta": {"type": "input_json_delta", "partial_json": a}}),
                    ));
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(stop_reason(f));
            self.complete = true;
        }
        Ok(out)
    }

    fn start(&mut self, v: &Value, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(named_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": v.get("id").cloned().unwrap_or_else(|| "msg".into()),
                "type": "message", "role": "assistant",
                "model": v.get("model").cloned().unwrap_or_else(|| "".into()),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
    }

    /// The index of the open block of this kind, opening it (and closing
    /// the previous one) when needed.
    fn open_block(&mut self, kind: Block, start: Value, out: &mut Vec<Bytes>) -> u64 {
        if let Some((idx, k)) = self.open {
            if k == kind {
                return idx;
            }
        }
        self.close_block(out);
        let idx = self.next_index;
        self.next_index += 1;
        self.open = Some((idx, kind));
        out.push(named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": idx, "content_block": start}),
        ));
        idx
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some((idx, _)) = self.open.take() {
            out.push(named_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": idx}),
            ));
        }
    }

    /// Close the message (idempotent). A stream cut off upstream is an
    /// error: a truncated answer is never passed off as whole.
    pub fn finish(&mut self) -> Result<Vec<Bytes>, GatewayError> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        self.done = true;
        if !self.complete {
            return Err(GatewayError::UpstreamFailed(
                "the upstream stream ended before the answer was complete".into(),
            ));
        }
        self.start(&Value::Null, &mut out);
        self.close_block(&mut out);
        out.push(named_event(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}}),
        ));
        out.push(named_event(
            "message_stop",
            &json!({"type": "message_stop"}),
        ));
        Ok(out)
    }
}
