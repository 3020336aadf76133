//! A chat-completions request validated: JSON, and the types of the fields
//! the gateway interprets (each error names the field). Fields it does not
//! interpret are kept untouched in `raw`.

use super::openai::{ChatMessage, ParsedRequest};
use super::type_name;
use crate::error::GatewayError;
use serde_json::{Map, Value};

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Parse a JSON object body.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(GatewayError::InvalidRequest {
            param: None,
            message: format!(
                "request body must be a JSON object, got {}",
                type_name(&other)
            ),
        }),
        Err(e) => Err(GatewayError::InvalidJson(e.to_string())),
    }
}

fn field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

fn wrong(param: &str, expected: &str, got: &Value) -> GatewayError {
    GatewayError::invalid(
        param,
        format!("`{param}` must be {expected}, got {}", type_name(got)),
    )
}

fn opt_bool(m: &Map<String, Value>, k: &str) -> Result<Option<bool>, GatewayError> {
    field(m, k)
        .map(|v| v.as_bool().ok_or_else(|| wrong(k, "a boolean", v)))
        .transpose()
}

fn opt_num(m: &Map<String, Value>, k: &str, lo: f64, hi: f64) -> Result<Option<f64>, GatewayError> {
    let Some(v) = field(m, k) else {
        return Ok(None);
    };
    let x = v.as_f64().ok_or_else(|| wrong(k, "a number", v))?;
    if !(lo..=hi).contains(&x) {
        return Err(GatewayError::invalid(
            k,
            format!("`{k}` must be between {lo} and {hi}, got {x}"),
        ));
    }
    Ok(Some(x))
}

fn opt_uint(m: &Map<String, Value>, k: &str, min: u64) -> Result<Option<u64>, GatewayError> {
    let Some(v) = field(m, k) else {
        return Ok(None);
    };
    let x = v
        .as_u64()
        .ok_or_else(|| wrong(k, "a non-negative integer", v))?;
    if x < min {
        return Err(GatewayError::invalid(
            k,
            format!("`{k}` must be at least {min}, got {x}"),
        ));
    }
    Ok(Some(x))
}

/// Flatten a message's `content` to text. Arrays of parts keep their text parts.
fn content_text(
    i: usize,
    v: Option<&Value>,
    role: &str,
    has_calls: bool,
) -> Result<String, GatewayError> {
    let param = format!("messages[{i}].content");
    match v {
        None | Some(Value::Null) if role == "assistant" && has_calls => Ok(String::new()),
        None | Some(Value::Null) => Err(GatewayError::invalid(
            &param,
            format!("`{param}` is required"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let Some(obj) = p.as_object() else {
                    return Err(wrong(&format!("{param}[{j}]"), "an object", p));
                };
                match obj.get("type").and_then(Value::as_str) {
                    Some("text") => match obj.get("text") {
                        Some(Value::String(t)) => out.push(t.as_str()),
                        other => {
                            return Err(wrong(
                                &format!("{param}[{j}].text"),
                                "a string",
                                other.unwrap_or(&Value::Null),
                            ))
                        }
                    },
                    Some(_) => {}
                    None => {
                        return Err(GatewayError::invalid(
                            &format!("{param}[{j}].type"),
                            format!("`{param}[{j}].type` is required"),
                        ))
                    }
                }
            }
            Ok(out.join("\n"))
        }
        Some(other) => Err(wrong(
            &param,
            "a string or an array of content parts",
            other,
        )),
    }
}

/// Validate a chat-completions body and extract what routing needs.
pub fn chat_request(body: &[u8]) -> Result<ParsedRequest, GatewayError> {
    chat_request_map(json_object(body)?)
}

/// Validate a chat-completions object (parsed, or translated from another API).
pub fn chat_request_map(raw: Map<String, Value>) -> Result<ParsedRequest, GatewayError> {
    let model = match raw.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(GatewayError::invalid("model", "`model` is required"))
        }
        Some(v) => return Err(wrong("model", "a string", v)),
    };
    let msgs = match raw.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(GatewayError::invalid(
                "messages",
                "`messages` must contain at least one message",
            ))
        }
        None | Some(Value::Null) => {
            return Err(GatewayError::invalid("messages", "`messages` is required"))
        }
        Some(v) => return Err(wrong("messages", "an array", v)),
    };
    let mut messages = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let Some(obj) = m.as_object() else {
            return Err(wrong(&format!("messages[{i}]"), "an object", m));
        };
        let role = match obj.get("role") {
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.clone(),
            Some(Value::String(r)) => {
                return Err(GatewayError::invalid(
                    &format!("messages[{i}].role"),
                    format!(
                        "`messages[{i}].role` `{r}` is not one of {}",
                        ROLES.join(", ")
                    ),
                ))
            }
            None | Some(Value::Null) => {
                return Err(GatewayError::invalid(
                    &format!("messages[{i}].role"),
                    format!("`messages[{i}].role` is required"),
                ))
            }
            Some(v) => return Err(wrong(&format!("messages[{i}].role"), "a string", v)),
        };
        let has_calls = field(obj, "tool_calls").is_some() || field(obj, "function_call").is_some();
        let text = content_text(i, obj.get("content"), &role, has_calls)?;
        messages.push(ChatMessage { role, text });
    }
    let stream = opt_bool(&raw, "stream")?.unwrap_or(false);
    let include_usage = match field(&raw, "stream_options") {
        None => false,
        Some(Value::Object(o)) => opt_bool(o, "include_usage")
            .map_err(|_| {
                GatewayError::invalid(
                    "stream_options.include_usage",
                    "`stream_options.include_usage` must be a boolean",
                )
            })?
            .unwrap_or(false),
        Some(v) => return Err(wrong("stream_options", "an object", v)),
    };
    let stop = match field(&raw, "stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong("stop", "a string or an array of strings", s))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(wrong("stop", "a string or an array of strings", v)),
    };
    let max_tokens = match opt_uint(&raw, "max_completion_tokens", 1)? {
        Some(x) => Some(x),
        None => opt_uint(&raw, "max_tokens", 1)?,
    };
    let seed = match field(&raw, "seed") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .map(|s| s as u64)
                .ok_or_else(|| wrong("seed", "an integer", v))?,
        ),
    };
    let tools = field(&raw, "tools");
    if let Some(t) = tools {
        if !t.is_array() {
            return Err(wrong("tools", "an array", t));
        }
    }
    Ok(ParsedRequest {
        model,
        stream,
        include_usage,
        max_tokens,
        temperature: opt_num(&raw, "temperature", 0.0, 2.0)?,
        top_p: opt_num(&raw, "top_p", 0.0, 1.0)?,
        stop,
        seed,
        n: opt_uint(&raw, "n", 1)?.unwrap_or(1),
        has_tools: tools
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
            || field(&raw, "functions").is_some(),
        logprobs: opt_bool(&raw, "logprobs")?.unwrap_or(false)
            || field(&raw, "top_logprobs").is_some(),
        messages,
        raw,
        native: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> GatewayError {
        chat_request(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn accepts_parts_and_keeps_unknown_fields() {
        let r = chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]},{"role":"assistant","content":null,"tool_calls":[]}],"seed":7,"response_format":{"type":"json_object"},"stream":true,"stream_options":{"include_usage":true},"stop":"x"}"#,
        )
        .expect("valid");
        assert_eq!(r.messages[0].text, "a\nb");
        assert!(r.stream && r.include_usage);
        assert_eq!(r.seed, Some(7));
        assert_eq!(r.stop, vec!["x"]);
        assert!(r.raw.contains_key("response_format"));
    }

    #[test]
    fn rejects_bad_inputs_with_the_field_named() {
        for (body, needle) in [
            ("[1]", "JSON object"),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "`model`"),
            (r#"{"model":"m"}"#, "`messages`"),
            (r#"{"model":"m","messages":[]}"#, "at least one"),
            (r#"{"model":"m","messages":"hi"}"#, "`messages`"),
            (
                r#"{"model":3,"messages":[{"role":"user","content":"x"}]}"#,
                "`model`",
            ),
            (
                r#"{"model":"m","messages":[{"role":"boss","content":"x"}]}"#,
                "role",
            ),
            (r#"{"model":"m","messages":[{"role":"user"}]}"#, "content"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "`stream`",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":[1]}"#,
                "stop",
            ),
        ] {
            let e = err(body);
            assert_eq!(e.status(), 400, "{body}");
            assert!(e.to_string().contains(needle), "{body}: {e}");
        }
        assert!(matches!(err("{nope"), GatewayError::InvalidJson(_)));
    }
}
