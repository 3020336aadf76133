//! Anthropic answers in OpenAI's shape: whole messages and their usage.

use crate::api::openai::unix_now;
use crate::policy::cost::Usage;
use crate::translate::finish_reason;
use serde_json::{json, Value};

/// Anthropic usage -> ours (cache reads and writes are input tokens too).
/// Sums saturate: the counts are the upstream's word, and may be absurd.
pub fn usage(u: Option<&Value>) -> Usage {
    let tok = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        prompt_tokens: tok("input_tokens")
            .saturating_add(tok("cache_creation_input_tokens"))
            .saturating_add(tok("cache_read_input_tokens")),
        completion_tokens: tok("output_tokens"),
    }
}

/// Fold the usage an Anthropic stream event carries into `u`: all of it at
/// `message_start`, output (and, from newer APIs, input) at `message_delta`.
pub fn track_usage(u: &mut Usage, event: &Value) {
    match event["type"].as_str() {
        Some("message_start") => *u = usage(event["message"].get("usage")),
        Some("message_delta") => {
            let d = event.get("usage");
            if let Some(o) = d.and_then(|d| d["output_tokens"].as_u64()) {
                u.completion_tokens = o;
            }
            if d.and_then(|d| d["input_tokens"].as_u64()).is_some() {
                u.prompt_tokens = usage(d).prompt_tokens;
            }
        }
        _ => {}
    }
}

pub(super) fn usage_json(u: Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens)})
}

/// Anthropic message -> OpenAI chat.completion (and its usage).
pub fn response(a: &Value) -> (Value, Usage) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in a
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {"name": b.get("name").cloned().unwrap_or(Value::Null),
                             "arguments": b.get("input").cloned().unwrap_or_else(|| json!({})).to_string()},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }});
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let u = usage(a.get("usage"));
    let finish = a
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason)
        .unwrap_or("stop");
    let v = json!({
        "id": a.get("id").cloned().unwrap_or_else(|| "chatcmpl".into()),
        "object": "chat.completion",
        "created": unix_now(),
        "model": a.get("model").cloned().unwrap_or_else(|| "".into()),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage_json(u),
    });
    (v, u)
}
