//! Wire types of the APIs slmgate speaks.

pub mod openai;

/// The API shape a client speaks (entry point) or an upstream answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    /// OpenAI chat completions (`/v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}
