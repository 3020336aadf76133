//! OpenAI <-> Anthropic translation, one module per direction: `to_anthropic`
//! produces Anthropic shapes (requests for the Anthropic backend; responses,
//! streams and errors for `/v1/messages` clients) and `to_openai` produces
//! OpenAI shapes. Everything both formats can express survives a round trip
//! (property-tested below); what only one side has is dropped or rejected
//! with a 400 that names the field.

pub mod to_anthropic;
pub mod to_openai;

use crate::api::type_name;
use crate::error::GatewayError;
use serde_json::{Map, Value};

/// A stream translator: feed each event's `data:` payload, then `finish`
/// when the upstream stream has ended. Failures (an upstream error event, a
/// stream cut off before its end) come back as errors, which the caller
/// renders in its client's format.
pub trait StreamTranslate: Send + 'static {
    fn push(&mut self, data: &str) -> Result<Vec<bytes::Bytes>, GatewayError>;
    fn finish(&mut self) -> Result<Vec<bytes::Bytes>, GatewayError>;
}

impl StreamTranslate for to_anthropic::StreamTranslator {
    fn push(&mut self, data: &str) -> Result<Vec<bytes::Bytes>, GatewayError> {
        to_anthropic::StreamTranslator::push(self, data)
    }
    fn finish(&mut self) -> Result<Vec<bytes::Bytes>, GatewayError> {
        to_anthropic::StreamTranslator::finish(self)
    }
}

impl StreamTranslate for to_openai::StreamTranslator {
    fn push(&mut self, data: &str) -> Result<Vec<bytes::Bytes>, GatewayError> {
        to_openai::StreamTranslator::push(self, data)
    }
    /// An upstream that ended without `message_stop` broke off.
    fn finish(&mut self) -> Result<Vec<bytes::Bytes>, GatewayError> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(vec![]);
        }
        Err(GatewayError::UpstreamFailed(
            "the upstream stream ended early".into(),
        ))
    }
}

/// OpenAI `finish_reason` -> Anthropic `stop_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// `data:`-only SSE event (OpenAI streams).
pub fn data_event(v: &Value) -> bytes::Bytes {
    crate::api::sse::data_event(&v.to_string())
}

/// Named SSE event (Anthropic streams).
pub fn named_event(name: &str, v: &Value) -> bytes::Bytes {
    crate::api::sse::named_event(name, &v.to_string())
}

fn bad(param: &str, msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid(param, msg)
}

fn expect<'a>(
    v: &'a Value,
    param: &str,
    what: &str,
) -> Result<&'a Map<String, Value>, GatewayError> {
    v.as_object().ok_or_else(|| {
        bad(
            param,
            format!("`{param}` must be {what}, got {}", type_name(v)),
        )
    })
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str, param: &str) -> Result<&'a str, GatewayError> {
    match m.get(k) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(bad(
            &format!("{param}.{k}"),
            format!("`{param}.{k}` is required"),
        )),
        Some(v) => Err(bad(
            &format!("{param}.{k}"),
            format!("`{param}.{k}` must be a string, got {}", type_name(v)),
        )),
    }
}

/// `data:<media>;base64,<data>` -> (media, data).
fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (media, data) = rest.split_once(";base64,")?;
    Some((media, data))
}

#[cfg(test)]
mod tests;
