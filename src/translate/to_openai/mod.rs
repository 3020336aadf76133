//! Everything that produces OpenAI chat-completions shapes: `/v1/messages`
//! requests (then routed like any chat request), and the Anthropic backend's
//! responses, stream events and errors.

mod response;
mod stream;

pub use response::{response, track_usage, usage};
pub use stream::StreamTranslator;

use super::{bad, expect, str_field};
use crate::api::type_name;
use crate::error::GatewayError;
use serde_json::{json, Map, Value};

/// Anthropic Messages body -> OpenAI chat-completions body, and what had to
/// be left out (blocks and tools only Anthropic has: such a request can only
/// go to an Anthropic backend, which gets the original body). Validates what
/// the Messages API requires (`model`, `max_tokens`, `messages`).
pub fn request(
    a: &Map<String, Value>,
) -> Result<(Map<String, Value>, Option<String>), GatewayError> {
    let mut lost: Vec<String> = Vec::new();
    let mut out = Map::new();
    match a.get("model") {
        Some(Value::String(s)) if !s.is_empty() => out.insert("model".into(), s.clone().into()),
        _ => {
            return Err(bad(
                "model",
                "`model` is required and must be a non-empty string",
            ))
        }
    };
    match a.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|x| x >= 1) => out.insert("max_tokens".into(), v.clone()),
        None | Some(Value::Null) => return Err(bad("max_tokens", "`max_tokens` is required")),
        Some(v) => {
            return Err(bad(
                "max_tokens",
                format!("`max_tokens` must be an integer >= 1, got {v}"),
            ))
        }
    };
    let mut messages = Vec::new();
    match a.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text = blocks_text(blocks, "system")?;
            messages.push(json!({"role": "system", "content": text}));
        }
        Some(v) => {
            return Err(bad(
                "system",
                format!(
                    "`system` must be a string or an array of text blocks, got {}",
                    type_name(v)
                ),
            ))
        }
    }
    let msgs = match a.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(bad(
                "messages",
                "`messages` must contain at least one message",
            ))
        }
        None | Some(Value::Null) => return Err(bad("messages", "`messages` is required")),
        Some(v) => {
            return Err(bad(
                "messages",
                format!("`messages` must be an array, got {}", type_name(v)),
            ))
        }
    };
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages[{i}]");
        let m = expect(m, &p, "an object")?;
        match str_field(m, "role", &p)? {
            "user" => user(m.get("content"), &p, &mut messages, &mut lost)?,
            "assistant" => messages.push(assistant(m.get("content"), &p, &mut lost)?),
            other => {
                return Err(bad(
                    &format!("{p}.role"),
                    format!("`{p}.role` `{other}` is not one of user, assistant"),
                ))
            }
        }
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = a.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(v) = a.get("stop_sequences").filter(|v| !v.is_null()) {
        out.insert("stop".into(), v.clone());
    }
    if let Some(v) = a.get("stream").filter(|v| !v.is_null()) {
        out.insert("stream".into(), v.clone());
        if v == &Value::Bool(true) {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    match a.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(t)) => {
            if !t.is_empty() {
                out.insert("tools".into(), tools(t, &mut lost)?);
            }
        }
        Some(v) => {
            return Err(bad(
                "tools",
                format!("`tools` must be an array, got {}", type_name(v)),
            ))
        }
    }
    if let Some(tc) = a.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = tool_choice(tc)?;
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
        if !parallel {
            out.insert("parallel_tool_calls".into(), false.into());
        }
    }
    if let Some(u) = a
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), u.into());
    }
    lost.sort();
    lost.dedup();
    if !lost.is_empty() && !messages.iter().any(|m| m["role"] != "system") {
        // Only untranslatable content: an empty turn keeps the OpenAI view valid
        // (for triage); only an Anthropic backend will be sent the request.
        messages.push(json!({"role": "user", "content": ""}));
    }
    out.insert("messages".into(), messages.into());
    Ok((out, (!lost.is_empty()).then(|| lost.join("; "))))
}

fn blocks_text(blocks: &[Value], p: &str) -> Result<String, GatewayError> {
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("{p}[{j}]");
        let b = expect(b, &bp, "an object")?;
        if b.get("type").and_then(Value::as_str) == Some("text") {
            parts.push(str_field(b, "text", &bp)?);
        }
    }
    Ok(parts.join("\n"))
}

/// A user turn: tool results become OpenAI `tool` messages (first, as they
/// answer the previous assistant turn), the rest one user message.
fn user(
    content: Option<&Value>,
    p: &str,
    out: &mut Vec<Value>,
    lost: &mut Vec<String>,
) -> Result<(), GatewayError> {
    let blocks = match content {
        Some(Value::String(s)) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        None | Some(Value::Null) => {
            return Err(bad(
                &format!("{p}.content"),
                format!("`{p}.content` is required"),
            ))
        }
        Some(v) => {
            return Err(bad(
                &format!("{p}.content"),
                format!(
                    "`{p}.content` must be a string or an array of blocks, got {}",
                    type_name(v)
                ),
            ))
        }
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("{p}.content[{j}]");
        let b = expect(b, &bp, "an object")?;
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": str_field(b, "text", &bp)?})),
            Some("image") => match image_url(b, &bp)? {
                Some(url) => parts.push(json!({"type": "image_url", "image_url": {"url": url}})),
                None => lost.push("images from the Files API".into()),
            },
            Some("tool_result") => {
                let text = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(c)) => {
                        if c.iter()
                            .any(|x| x.get("type").and_then(Value::as_str) != Some("text"))
                        {
                            lost.push("non-text tool results".into());
                        }
                        blocks_text(c, &format!("{bp}.content"))?
                    }
                    Some(v) => {
                        return Err(bad(
                            &format!("{bp}.content"),
                            format!(
                                "`{bp}.content` must be a string or an array of blocks, got {}",
                                type_name(v)
                            ),
                        ))
                    }
                };
                out.push(json!({"role": "tool", "tool_call_id": str_field(b, "tool_use_id", &bp)?, "content": text}));
            }
            Some(other) => lost.push(format!("`{other}` content blocks")),
            None => {
                return Err(bad(
                    &format!("{bp}.type"),
                    format!("`{bp}.type` is required"),
                ))
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// The image as an OpenAI URL; None for sources OpenAI cannot take (files).
fn image_url(b: &Map<String, Value>, p: &str) -> Result<Option<String>, GatewayError> {
    let sp = format!("{p}.source");
    let s = expect(b.get("source").unwrap_or(&Value::Null), &sp, "an object")?;
    match str_field(s, "type", &sp)? {
        "base64" => Ok(Some(format!(
            "data:{};base64,{}",
            str_field(s, "media_type", &sp)?,
            str_field(s, "data", &sp)?
        ))),
        "url" => Ok(Some(str_field(s, "url", &sp)?.to_string())),
        "file" => Ok(None),
        other => Err(bad(
            &format!("{sp}.type"),
            format!("image source type `{other}` is not supported"),
        )),
    }
}

fn assistant(
    content: Option<&Value>,
    p: &str,
    lost: &mut Vec<String>,
) -> Result<Value, GatewayError> {
    let blocks = match content {
        Some(Value::String(s)) => return Ok(json!({"role": "assistant", "content": s})),
        Some(Value::Array(b)) => b,
        _ => {
            return Err(bad(
                &format!("{p}.content"),
                format!("`{p}.content` must be a string or an array of blocks"),
            ))
        }
    };
    let mut text = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("{p}.content[{j}]");
        let b = expect(b, &bp, "an object")?;
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push(str_field(b, "text", &bp)?),
            Some("tool_use") => calls.push(json!({
                "id": str_field(b, "id", &bp)?,
                "type": "function",
                "function": {
                    "name": str_field(b, "name", &bp)?,
                    "arguments": b.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
                },
            })),
            // Reasoning blocks are the model's own; other models cannot use them.
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => lost.push(format!("`{other}` content blocks")),
            None => {
                return Err(bad(
                    &format!("{bp}.type"),
                    format!("`{bp}.type` is required"),
                ))
            }
        }
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.join("").into() }});
    if !calls.is_empty() {
        m["tool_calls"] = calls.into();
    }
    Ok(m)
}

fn tools(t: &[Value], lost: &mut Vec<String>) -> Result<Value, GatewayError> {
    let mut out = Vec::with_capacity(t.len());
    for (i, tool) in t.iter().enumerate() {
        let p = format!("tools[{i}]");
        let tool = expect(tool, &p, "an object")?;
        if let Some(ty) = tool
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| *t != "custom")
        {
            lost.push(format!("server tool `{ty}`"));
            continue;
        }
        let mut f = Map::new();
        f.insert("name".into(), str_field(tool, "name", &p)?.into());
        if let Some(d) = tool.get("description").filter(|d| d.is_string()) {
            f.insert("description".into(), d.clone());
        }
        f.insert(
            "parameters".into(),
            tool.get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        );
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Value::Array(out))
}

/// -> (OpenAI tool_choice, parallel tool calls allowed).
fn tool_choice(tc: &Value) -> Result<(Option<Value>, bool), GatewayError> {
    let o = expect(tc, "tool_choice", "an object")?;
    let parallel = o.get("disable_parallel_tool_use") != Some(&Value::Bool(true));
    let choice = match o.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            json!({"type": "function", "function": {"name": str_field(o, "name", "tool_choice")?}})
        }
        _ => {
            return Err(bad(
                "tool_choice.type",
                "`tool_choice.type` must be one of auto, any, tool, none",
            ))
        }
    };
    Ok((Some(choice), parallel))
}
