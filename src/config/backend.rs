//! Backend sections of a policy: where each backend is, how to reach it, and
//! the models (with prices) it serves.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendConfig {
    Openai(OpenAiConfig),
    Anthropic(AnthropicConfig),
    Local(LocalConfig),
}

/// What every cloud backend's config has: where and how to send.
pub struct Cloud<'a> {
    /// Empty: no key is sent (a self-hosted server without auth).
    pub api_key_env: &'a str,
    pub base_url_env: Option<&'a str>,
    pub base_url: Option<&'a str>,
    /// Several replicas of one server (instead of `base_url`).
    pub base_urls: &'a [String],
    pub eject: &'a Eject,
    pub timeouts: &'a Timeouts,
    pub retries: &'a Retries,
}

impl BackendConfig {
    pub fn models(&self) -> &BTreeMap<String, ModelConfig> {
        match self {
            BackendConfig::Openai(c) => &c.models,
            BackendConfig::Anthropic(c) => &c.models,
            BackendConfig::Local(c) => &c.models,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Openai(_) => "openai",
            BackendConfig::Anthropic(_) => "anthropic",
            BackendConfig::Local(_) => "local",
        }
    }
    /// Whether the backend is the local tier: in-process, or self-hosted.
    pub fn is_local(&self) -> bool {
        match self {
            BackendConfig::Openai(c) => c.self_hosted,
            BackendConfig::Anthropic(_) => false,
            BackendConfig::Local(_) => true,
        }
    }
    /// The concurrency limit of a cloud backend (a local one has its queue).
    pub fn max_concurrency(&self) -> Option<usize> {
        match self {
            BackendConfig::Openai(c) => Some(c.max_concurrency),
            BackendConfig::Anthropic(c) => Some(c.max_concurrency),
            BackendConfig::Local(_) => None,
        }
    }
    /// The cloud part of the config; `None` for the local backend.
    pub fn cloud(&self) -> Option<Cloud<'_>> {
        match self {
            BackendConfig::Openai(c) => Some(c.cloud()),
            BackendConfig::Anthropic(c) => Some(c.cloud()),
            BackendConfig::Local(_) => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Environment variable holding the API key (never logged); may be left
    /// out for a self-hosted server that wants none.
    #[serde(default)]
    pub api_key_env: String,
    /// Environment variable that overrides `base_url` when set.
    pub base_url_env: Option<String>,
    pub base_url: Option<String>,
    /// Replicas of one self-hosted server (vLLM, SGLang, llama-server,
    /// Ollama, TGI, another slmgate), balanced by least outstanding requests.
    #[serde(default)]
    pub base_urls: Vec<String>,
    /// A server of our own (the local tier on other machines): counts as
    /// local in routing, metrics and the `x-slmgate-backend-kind` header.
    #[serde(default)]
    pub self_hosted: bool,
    /// When a replica is taken out of rotation, and for how long.
    #[serde(default)]
    pub eject: Eject,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retries: Retries,
    /// Requests in flight to this backend at most (streams count until they
    /// end); one more is shed at once: to the fallback, else 503.
    #[serde(default = "cloud_max_concurrency")]
    pub max_concurrency: usize,
    pub models: BTreeMap<String, ModelConfig>,
}

/// Anthropic's Messages API. Every field but `models` has the public API's default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    /// Environment variable holding the API key (never logged).
    #[serde(default = "anthropic_key_env")]
    pub api_key_env: String,
    /// Environment variable that overrides `base_url` when set (the SDK's
    /// convention: no `/v1`; the gateway appends `/v1/messages`).
    #[serde(default = "anthropic_base_url_env")]
    pub base_url_env: Option<String>,
    #[serde(default = "anthropic_base_url")]
    pub base_url: String,
    /// Sent as the `anthropic-version` header.
    #[serde(default = "anthropic_version")]
    pub version: String,
    /// `max_tokens` is required by the Messages API; used when the OpenAI
    /// client sets none.
    #[serde(default = "cloud_max_tokens")]
    pub default_max_tokens: u64,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retries: Retries,
    /// As for OpenAI-compatible backends.
    #[serde(default = "cloud_max_concurrency")]
    pub max_concurrency: usize,
    pub models: BTreeMap<String, ModelConfig>,
}

impl OpenAiConfig {
    pub fn cloud(&self) -> Cloud<'_> {
        Cloud {
            api_key_env: &self.api_key_env,
            base_url_env: self.base_url_env.as_deref(),
            base_url: self.base_url.as_deref(),
            base_urls: &self.base_urls,
            eject: &self.eject,
            timeouts: &self.timeouts,
            retries: &self.retries,
        }
    }
}

impl AnthropicConfig {
    pub fn cloud(&self) -> Cloud<'_> {
        Cloud {
            api_key_env: &self.api_key_env,
            base_url_env: self.base_url_env.as_deref(),
            base_url: Some(&self.base_url),
            base_urls: &[],
            eject: &NO_EJECT,
            timeouts: &self.timeouts,
            retries: &self.retries,
        }
    }
}

fn anthropic_key_env() -> String {
    "ANTHROPIC_API_KEY".into()
}
fn anthropic_base_url_env() -> Option<String> {
    Some("ANTHROPIC_BASE_URL".into())
}
fn anthropic_base_url() -> String {
    "https://api.anthropic.com".into()
}
fn anthropic_version() -> String {
    "2023-06-01".into()
}
fn cloud_max_concurrency() -> usize {
    512
}
fn cloud_max_tokens() -> u64 {
    4096
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// GGUF file; relative paths resolve against the models dir.
    pub gguf: String,
    /// The in-process engine: `mistralrs` (default) or `llamacpp`.
    #[serde(default)]
    pub engine: LocalEngine,
    /// Requests admitted at once (running + waiting); beyond it `on_full` applies.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Sequences the engine runs at once. Default 1 for mistral.rs (serial is
    /// fastest on CPU: measured, its batching of unequal sequences costs more
    /// than it saves there) and 8 for llama.cpp (continuous batching).
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// Finished sequences whose KV cache mistral.rs keeps for prefix reuse (0 = off).
    /// Each holds a whole KV cache (~40 MB for a 300-token SmolLM2 sequence); every
    /// chat shares the template's system-prompt prefix, so a few entries suffice.
    #[serde(default = "default_prefix_cache")]
    pub prefix_cache: usize,
    #[serde(default)]
    pub on_full: Overflow,
    /// What to do with parameters the local model cannot honour (tools, n>1, logprobs).
    #[serde(default)]
    pub on_unsupported: Overflow,
    /// Seconds suggested in `Retry-After` when the queue is full.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// Completion budget when the client sets no `max_tokens` (small models can ramble).
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
    pub models: BTreeMap<String, ModelConfig>,
}

fn default_max_queue() -> usize {
    64
}
impl LocalConfig {
    /// `max_batch`, or the engine's default.
    pub fn max_batch(&self) -> usize {
        self.max_batch.unwrap_or(match self.engine {
            // 1: mistral.rs's batching lost requests at 8 concurrent long
            // prompts in benches/local.sh (README, Benchmarks).
            LocalEngine::Mistralrs => 1,
            LocalEngine::Llamacpp => 8,
        })
    }
}
fn default_prefix_cache() -> usize {
    4
}
fn default_retry_after() -> u64 {
    1
}
fn default_max_tokens() -> u64 {
    1024
}

/// The in-process engine of a `kind: local` backend.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LocalEngine {
    #[default]
    Mistralrs,
    /// llama.cpp through `llama-cpp-2` (cargo feature `llamacpp`); a build
    /// without the feature refuses a policy naming it.
    Llamacpp,
}

/// What happens when the local backend cannot take a request.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Answer with an error (429 for a full queue, 400 for unsupported parameters).
    #[default]
    Reject,
    /// Follow the route's fallbacks (usually to the cloud).
    Fallback,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(deserialize_with = "de_price")]
    pub input_per_mtok: Decimal,
    #[serde(deserialize_with = "de_price")]
    pub output_per_mtok: Decimal,
    /// Other ids clients may use for this model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Model name sent upstream, when it differs from the id clients use.
    pub upstream_name: Option<String>,
    /// Sampling for the fields a request leaves out.
    pub defaults: Option<SamplingDefaults>,
}

/// A model's default sampling (`defaults:` on a model entry): used only for
/// the fields a request leaves out, so a bare request gets the model's best
/// behaviour and a client's own choice always wins.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplingDefaults {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub connect_ms: u64,
    /// Until the upstream's response head arrives.
    pub first_byte_ms: u64,
    /// Longest silence between two chunks of a streamed body.
    pub idle_ms: u64,
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            first_byte_ms: 60_000,
            idle_ms: 60_000,
            total_ms: 600_000,
        }
    }
}

/// Passive health of a backend's replicas (`base_urls`): a replica that
/// fails `failures` times in a row (connect errors, resets, timeouts, 5xx)
/// is ejected for `secs`, doubled at each ejection in a row up to
/// `max_secs`, and probed (`GET <base>/models`) before it takes requests again.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Eject {
    pub failures: u32,
    pub secs: f64,
    pub max_secs: f64,
}

impl Default for Eject {
    fn default() -> Self {
        Eject {
            failures: 3,
            secs: 5.0,
            max_secs: 60.0,
        }
    }
}

static NO_EJECT: Eject = Eject {
    failures: 3,
    secs: 5.0,
    max_secs: 60.0,
};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Extra attempts on connect errors, 429 and 5xx before the first byte.
    pub max_retries: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial_backoff_ms: 100,
            max_backoff_ms: 2_000,
        }
    }
}

fn de_price<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        I(i64),
        F(f64),
        S(String),
    }
    let text = match Num::deserialize(d)? {
        Num::I(i) => i.to_string(),
        // f64's Display is the shortest round-trip form: 0.15 stays "0.15".
        Num::F(f) => f.to_string(),
        Num::S(s) => s,
    };
    text.parse::<Decimal>()
        .map_err(|e| serde::de::Error::custom(format!("price `{text}` is not a decimal: {e}")))
}
