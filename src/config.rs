//! Strict YAML policy structs. Parsing rejects unknown fields; `validate()`
//! then checks cross references and returns messages that name the field and
//! the fix. Nothing here touches the environment or the network.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::Path;

/// The policy compiled into the binary (`policies/default.yaml`).
pub const DEFAULT_POLICY: &str = include_str!("../policies/default.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: u32,
    #[serde(default)]
    pub server: ServerConfig,
    pub backends: BTreeMap<String, BackendConfig>,
    /// `backend/model` whose price is "what always-cloud would have cost".
    pub reference_model: Option<String>,
    #[serde(default)]
    pub triage: TriageConfig,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// Per-target fallbacks for explicit model requests: `backend/model -> [backend/model]`.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Send a share of locally answered requests to a cloud model as well
    /// (off the request path) and export how often the answers agree.
    pub shadow: Option<ShadowConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Share of locally answered requests sampled, in [0, 1].
    pub sample_rate: f64,
    /// `backend/model` to compare against; default `reference_model`.
    pub target: Option<String>,
    /// Shadow calls in flight at once; samples beyond it are skipped.
    #[serde(default = "default_shadow_in_flight")]
    pub max_in_flight: usize,
    /// Answers whose embedding cosine similarity reaches this agree.
    #[serde(default = "default_agree_threshold")]
    pub agree_threshold: f64,
}

fn default_shadow_in_flight() -> usize {
    4
}
fn default_agree_threshold() -> f64 {
    0.8
}

impl ShadowConfig {
    /// The target to shadow with (validated to exist).
    pub fn target<'a>(&'a self, p: &'a Policy) -> Option<&'a str> {
        self.target.as_deref().or(p.reference_model.as_deref())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Request bodies above this size get a 413.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run on after SIGTERM/ctrl-c.
    pub shutdown_grace_secs: u64,
    /// Log prompt text at debug level (off by default: prompts are user data).
    pub log_prompts: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            shutdown_grace_secs: 30,
            log_prompts: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendConfig {
    Openai(OpenAiConfig),
    Anthropic(AnthropicConfig),
    Local(LocalConfig),
}

/// What every cloud backend's config has: where and how to send.
pub struct Cloud<'a> {
    pub api_key_env: &'a str,
    pub base_url_env: Option<&'a str>,
    pub base_url: Option<&'a str>,
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
    /// The cloud part of the config; `None` for the local backend.
    pub fn cloud(&self) -> Option<Cloud<'_>> {
        match self {
            BackendConfig::Openai(c) => Some(c.cloud()),
            BackendConfig::Anthropic(c) => Some(c.cloud()),
            BackendConfig::Local(_) => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Environment variable holding the API key (never logged).
    pub api_key_env: String,
    /// Environment variable that overrides `base_url` when set.
    pub base_url_env: Option<String>,
    pub base_url: Option<String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retries: Retries,
    pub models: BTreeMap<String, ModelConfig>,
}

/// Anthropic's Messages API. Every field but `models` has the public API's default.
#[derive(Debug, Clone, Deserialize)]
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
    pub models: BTreeMap<String, ModelConfig>,
}

impl OpenAiConfig {
    pub fn cloud(&self) -> Cloud<'_> {
        Cloud {
            api_key_env: &self.api_key_env,
            base_url_env: self.base_url_env.as_deref(),
            base_url: self.base_url.as_deref(),
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
fn cloud_max_tokens() -> u64 {
    4096
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// GGUF file; relative paths resolve against the models dir.
    pub gguf: String,
    /// Requests admitted at once (running + waiting); beyond it `on_full` applies.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Sequences mistral.rs runs at once. 1 (serial) is fastest on CPU: measured,
    /// mistral.rs's batching of unequal sequences costs more than it saves there.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
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
fn default_max_batch() -> usize {
    1
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

#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TriageConfig {
    pub kind: TriageKind,
    /// MiniLM files (`model.safetensors`, `tokenizer.json`, `config.json`);
    /// relative paths resolve against the models dir. Default `minilm`.
    pub encoder_dir: String,
    /// Triage results cached by a hash of the normalised conversation.
    pub cache_size: u64,
    pub cache_ttl_secs: u64,
    /// Encoder runs at once, on the blocking pool (never on the async workers).
    pub max_concurrency: usize,
    /// Success head written by `slmgate calibrate --head-out`; a relative path
    /// is looked up next to the policy file first, then in the models dir.
    /// Enables `min_local_success` tiers.
    pub local_success_head: Option<String>,
}

impl Default for TriageConfig {
    fn default() -> Self {
        Self {
            kind: TriageKind::Features,
            encoder_dir: "minilm".into(),
            cache_size: 10_000,
            cache_ttl_secs: 3_600,
            max_concurrency: 2,
            local_success_head: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TriageKind {
    /// Transparent features-based scorer (length, code, math, question words).
    #[default]
    Features,
    /// all-MiniLM-L6-v2 embeddings + the trained head (`src/classifier/head.json`).
    Model,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub tiers: Vec<Tier>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    /// Tier applies when `min_score <= score`.
    pub min_score: Option<f64>,
    /// Tier applies when `score < max_score`.
    pub max_score: Option<f64>,
    /// Tier applies when the triage category is one of these.
    pub categories: Option<Vec<String>>,
    /// Tier applies when the calibrated `P(local succeeds)` is at least this
    /// (needs `triage.local_success_head`).
    pub min_local_success: Option<f64>,
    pub target: String,
}

impl Tier {
    pub fn is_catch_all(&self) -> bool {
        self.min_score.is_none()
            && self.max_score.is_none()
            && self.categories.is_none()
            && self.min_local_success.is_none()
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

impl Policy {
    /// Parse YAML strictly and validate it.
    pub fn from_yaml(text: &str) -> Result<Policy, String> {
        let policy: Policy =
            serde_yaml::from_str(text).map_err(|e| format!("policy does not parse: {e}"))?;
        crate::policy::validate::validate(&policy)?;
        Ok(policy)
    }

    pub fn from_file(path: &Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read policy file {}: {e}", path.display()))?;
        let mut p = Self::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        // A success head shipped next to its policy file is found there.
        if let (Some(h), Some(dir)) = (&p.triage.local_success_head, path.parent()) {
            let beside = dir.join(h);
            if Path::new(h).is_relative() && beside.exists() {
                let abs = std::path::absolute(&beside).unwrap_or(beside);
                p.triage.local_success_head = Some(abs.display().to_string());
            }
        }
        Ok(p)
    }

    pub fn embedded_default() -> Result<Policy, String> {
        Self::from_yaml(DEFAULT_POLICY)
    }
}
