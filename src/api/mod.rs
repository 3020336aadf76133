//! Wire types of the APIs slmgate speaks.

pub mod openai;
pub mod request;
pub mod sse;

/// A `/v1/messages` request as the client sent it: Anthropic backends send
/// it on unchanged (but for `model`), so nothing only Anthropic has is lost.
#[derive(Debug, Clone)]
pub struct AnthropicBody {
    pub body: serde_json::Map<String, serde_json::Value>,
    /// What the OpenAI view of the request had to leave out (e.g. `document`
    /// blocks); set means only Anthropic backends may answer it.
    pub untranslatable: Option<String>,
    /// The client's `anthropic-beta` header, sent on with the body.
    pub beta: Option<http::HeaderValue>,
}

/// The API shape a client speaks (entry point) or an upstream answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    /// OpenAI chat completions (`/v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

/// How a JSON value's type reads in an error message ("a string", ...).
pub fn type_name(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
