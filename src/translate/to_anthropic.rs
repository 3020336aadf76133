//! Everything that produces Anthropic Messages shapes: OpenAI requests for the
//! Anthropic backend; responses, stream events and errors for clients of
//! `POST /v1/messages`.

use super::{bad, expect, named_event, split_data_url, stop_reason, str_field};
use crate::error::GatewayError;
use crate::middleware::parse::type_name;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Sampling hints with no Anthropic equivalent: dropped (as the SDKs' own
/// compatibility layers do). Anything else unknown is dropped too; what would
/// change the answer's shape (n > 1, logprobs, audio, JSON mode) is rejected.
fn unsupported(raw: &Map<String, Value>) -> Option<String> {
    if raw.get("n").and_then(Value::as_u64).unwrap_or(1) > 1 {
        return Some("`n` > 1 is not supported by Anthropic backends".into());
    }
    if raw.get("logprobs").and_then(Value::as_bool) == Some(true)
        || raw.get("top_logprobs").is_some_and(|v| !v.is_null())
    {
        return Some("`logprobs` is not supported by Anthropic backends".into());
    }
    if let Some(rf) = raw.get("response_format").and_then(|v| v.get("type")) {
        if rf != "text" {
            return Some(format!(
                "`response_format` {rf} is not supported by Anthropic backends"
            ));
        }
    }
    if raw
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x != "text"))
    {
        return Some("audio output is not supported by Anthropic backends".into());
    }
    None
}

/// OpenAI chat-completions body -> Anthropic Messages body for `model`.
/// `Err(Unsupported)` for parameters Anthropic cannot honour (another target
/// may), `Err(InvalidRequest)` for malformed input.
pub fn request(
    raw: &Map<String, Value>,
    model: &str,
    default_max_tokens: u64,
) -> Result<Map<String, Value>, GatewayError> {
    if let Some(why) = unsupported(raw) {
        return Err(GatewayError::Unsupported(why));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let msgs = raw
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages[{i}]");
        let m = expect(m, &p, "an object")?;
        let role = str_field(m, "role", &p)?;
        match role {
            "system" | "developer" => system.push(text_of(m.get("content"), &p)?),
            "user" => messages
                .push(json!({"role": "user", "content": user_content(m.get("content"), &p)?})),
            "assistant" => messages.push(assistant(m, &p)?),
            "tool" => {
                let id = str_field(m, "tool_call_id", &p)?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": text_of(m.get("content"), &p)?});
                // Consecutive tool results answer one assistant turn: one user message.
                match messages.last_mut() {
                    Some(last) if is_tool_results(last) => {
                        if let Some(Value::Array(c)) = last.get_mut("content") {
                            c.push(block);
                        }
                    }
                    _ => messages.push(json!({"role": "user", "content": [block]})),
                }
            }
            other => {
                return Err(GatewayError::Unsupported(format!(
                    "`{p}.role` `{other}` is not supported by Anthropic backends"
                )))
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    let max = raw
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| raw.get("max_tokens").and_then(Value::as_u64))
        .unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), max.into());
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    out.insert("messages".into(), messages.into());
    if let Some(t) = raw.get("temperature").and_then(Value::as_f64) {
        // OpenAI allows up to 2, Anthropic up to 1.
        out.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(t) = raw.get("top_p").filter(|v| v.is_number()) {
        out.insert("top_p".into(), t.clone());
    }
    let (sendable, _) = split_stops(raw);
    if !sendable.is_empty() {
        out.insert("stop_sequences".into(), json!(sendable));
    }
    if raw.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), true.into());
    }
    if let Some(tools) = raw
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        out.insert("tools".into(), self::tools(tools)?);
    }
    if let Some(tc) = tool_choice(raw)? {
        out.insert("tool_choice".into(), tc);
    }
    if let Some(Value::String(u)) = raw.get("user") {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    Ok(out)
}

/// OpenAI `stop` as (stop sequences Anthropic accepts, whitespace-only ones
/// it rejects — such as the common "\n" — which the gateway applies itself).
pub fn split_stops(raw: &Map<String, Value>) -> (Vec<String>, Vec<String>) {
    let all: Vec<String> = match raw.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    };
    let (ws, sendable): (Vec<String>, Vec<String>) = all
        .into_iter()
        .filter(|s| !s.is_empty())
        .partition(|s| s.trim().is_empty());
    (sendable, ws)
}

fn is_tool_results(m: &Value) -> bool {
    m.get("role") == Some(&json!("user"))
        && m.get("content").and_then(Value::as_array).is_some_and(|c| {
            c.iter()
                .all(|b| b.get("type") == Some(&json!("tool_result")))
        })
}

/// Text of a string or text-parts content (system and tool messages).
fn text_of(v: Option<&Value>, p: &str) -> Result<String, GatewayError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|x| x.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")),
        Some(v) => Err(bad(
            &format!("{p}.content"),
            format!(
                "`{p}.content` must be a string or an array of parts, got {}",
                type_name(v)
            ),
        )),
    }
}

fn user_content(v: Option<&Value>, p: &str) -> Result<Value, GatewayError> {
    let Some(Value::Array(parts)) = v else {
        return Ok(text_of(v, p)?.into());
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let pp = format!("{p}.content[{j}]");
        let part = expect(part, &pp, "an object")?;
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                blocks.push(json!({"type": "text", "text": str_field(part, "text", &pp)?}))
            }
            Some("image_url") => {
                let url = match part.get("image_url") {
                    Some(Value::String(s)) => s.as_str(),
                    Some(Value::Object(o)) => str_field(o, "url", &format!("{pp}.image_url"))?,
                    _ => {
                        return Err(bad(
                            &format!("{pp}.image_url"),
                            format!("`{pp}.image_url.url` is required"),
                        ))
                    }
                };
                let source = match split_data_url(url) {
                    Some((media, data)) => {
                        json!({"type": "base64", "media_type": media, "data": data})
                    }
                    None => json!({"type": "url", "url": url}),
                };
                blocks.push(json!({"type": "image", "source": source}));
            }
            Some(other) => {
                return Err(GatewayError::Unsupported(format!(
                    "`{pp}.type` `{other}` is not supported by Anthropic backends"
                )))
            }
            None => {
                return Err(bad(
                    &format!("{pp}.type"),
                    format!("`{pp}.type` is required"),
                ))
            }
        }
    }
    Ok(Value::Array(blocks))
}

fn assistant(m: &Map<String, Value>, p: &str) -> Result<Value, GatewayError> {
    let text = text_of(m.get("content"), p)?;
    let calls = match m.get("tool_calls") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => return Ok(json!({"role": "assistant", "content": text})),
    };
    let mut blocks = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for (j, c) in calls.iter().enumerate() {
        let cp = format!("{p}.tool_calls[{j}]");
        let c = expect(c, &cp, "an object")?;
        let f = expect(
            c.get("function").unwrap_or(&Value::Null),
            &format!("{cp}.function"),
            "an object",
        )?;
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
        let input: Value =
            match serde_json::from_str(if args.trim().is_empty() { "{}" } else { args }) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(bad(
                        &format!("{cp}.function.arguments"),
                        format!(
                            "`{cp}.function.arguments` must be a JSON object encoded as a string"
                        ),
                    ))
                }
            };
        blocks.push(json!({
            "type": "tool_use",
            "id": str_field(c, "id", &cp)?,
            "name": str_field(f, "name", &format!("{cp}.function"))?,
            "input": input,
        }));
    }
    Ok(json!({"role": "assistant", "content": blocks}))
}

fn tools(tools: &[Value]) -> Result<Value, GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let p = format!("tools[{i}]");
        let t = expect(t, &p, "an object")?;
        if t.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
            return Err(GatewayError::Unsupported(format!(
                "`{p}.type` must be `function` for Anthropic backends"
            )));
        }
        let f = expect(
            t.get("function").unwrap_or(&Value::Null),
            &format!("{p}.function"),
            "an object",
        )?;
        let mut tool = Map::new();
        tool.insert(
            "name".into(),
            str_field(f, "name", &format!("{p}.function"))?.into(),
        );
        if let Some(d) = f.get("description").filter(|d| d.is_string()) {
            tool.insert("description".into(), d.clone());
        }
        let schema = f
            .get("parameters")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        tool.insert("input_schema".into(), schema);
        out.push(Value::Object(tool));
    }
    Ok(Value::Array(out))
}

fn tool_choice(raw: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    let mut tc = match raw.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => {
                return Err(bad(
                    "tool_choice",
                    format!("`tool_choice` `{other}` is not one of auto, required, none"),
                ))
            }
        }),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice", "`tool_choice.function.name` is required"))?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(v) => {
            return Err(bad(
                "tool_choice",
                format!(
                    "`tool_choice` must be a string or an object, got {}",
                    type_name(v)
                ),
            ))
        }
    };
    if raw.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = tc.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(o) = c.as_object_mut() {
            o.insert("disable_parallel_tool_use".into(), true.into());
        }
    }
    Ok(tc)
}

/// OpenAI chat.completion -> Anthropic message.
pub fn response(v: &Value) -> Value {
    let choice = v.get("choices").and_then(|c| c.get(0));
    let msg = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(t) = msg.and_then(|m| m.get("content")).and_then(Value::as_str) {
        if !t.is_empty() {
            content.push(json!({"type": "text", "text": t}));
        }
    }
    for c in msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let f = c.get("function");
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": c.get("id").cloned().unwrap_or_else(|| "toolu".into()),
            "name": f.and_then(|f| f.get("name")).cloned().unwrap_or_else(|| "".into()),
            "input": parse_input(args),
        }));
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let usage = v.get("usage");
    let tok = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    json!({
        "id": v.get("id").cloned().unwrap_or_else(|| "msg".into()),
        "type": "message",
        "role": "assistant",
        "model": v.get("model").cloned().unwrap_or_else(|| "".into()),
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": {"input_tokens": tok("prompt_tokens"), "output_tokens": tok("completion_tokens")},
    })
}

/// Tool arguments are a JSON string in OpenAI and an object in Anthropic.
fn parse_input(args: &str) -> Value {
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        _ if args.trim().is_empty() => json!({}),
        _ => json!({"arguments": args}),
    }
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
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

pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// An OpenAI error body (from an OpenAI-compatible upstream) in Anthropic's shape.
pub fn error_from_openai(status: u16, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("upstream answered {status}"));
    error_body(status, &msg)
}

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
    pub fn push(&mut self, data: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if data.trim() == "[DONE]" {
            self.complete = true;
            return self.finish();
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return out;
        };
        if let Some(e) = v.get("error") {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error");
            let status = if e.get("code").and_then(Value::as_str) == Some("upstream_timeout") {
                504
            } else {
                502
            };
            out.push(named_event("error", &error_body(status, msg)));
            self.done = true;
            return out;
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
            return out;
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
        out
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

    /// Close the message (idempotent).
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.done = true;
        self.start(&Value::Null, &mut out);
        self.close_block(&mut out);
        if !self.complete {
            // Cut off upstream: say so, never pass a truncated answer off as whole.
            let e = error_body(
                502,
                "the upstream stream ended before the answer was complete",
            );
            out.push(named_event("error", &e));
            return out;
        }
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
        out
    }
}
