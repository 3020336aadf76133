//! OpenAI answers in Anthropic's shape (for `/v1/messages` clients).

use crate::translate::stop_reason;
use serde_json::{json, Value};

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
