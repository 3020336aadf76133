//! OpenAI chat-completions wire types: the parsed view of a request (the raw
//! JSON is kept for pass-through) and the response/chunk shapes the local
//! backend produces.

use serde::Serialize;
use serde_json::{Map, Value};

/// One message, with its text flattened (text parts joined by newlines).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub text: String,
}

/// A validated chat-completions request. `raw` is forwarded upstream untouched
/// except for `model` and `stream_options`.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub raw: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// The client asked for the final usage chunk.
    pub include_usage: bool,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub n: u64,
    pub has_tools: bool,
    pub logprobs: bool,
    /// The original body of a `/v1/messages` request.
    pub native: Option<std::sync::Arc<super::AnthropicBody>>,
}

#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: UsageBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: String,
    pub logprobs: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct UsageBody {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Serialize)]
pub struct ChatChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub finish_reason: Option<&'a str>,
    pub logprobs: Option<()>,
}

#[derive(Debug, Serialize, Default)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

impl UsageBody {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// The assistant text of a chat.completion body ("" when it has none).
pub fn completion_text(v: &serde_json::Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

/// Seconds since the Unix epoch, for `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
