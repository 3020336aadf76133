//! Everything that produces Anthropic Messages shapes: OpenAI requests for the
//! Anthropic backend; responses, stream events and errors for clients of
//! `POST /v1/messages`.

mod response;
mod stream;

pub use response::response;
pub use stream::StreamTranslator;

use super::{bad, expect, split_data_url, str_field};
use crate::api::type_name;
use crate::error::GatewayError;
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
