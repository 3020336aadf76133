//! Strict YAML policy structs. Parsing rejects unknown fields; `validate()`
//! then checks cross references and returns messages that name the field and
//! the fix. Nothing here touches the environment or the network.

mod backend;
mod cache;
mod keys;
mod privacy;
mod target;
pub mod validate;

pub use backend::{
    AnthropicConfig, BackendConfig, Cloud, Eject, LocalConfig, LocalEngine, ModelConfig,
    OpenAiConfig, Overflow, Retries, SamplingDefaults, Timeouts,
};
pub use cache::{CacheConfig, CacheMode, ExactCacheConfig, SemanticCacheConfig};
pub use keys::{FailMode, KeyConfig, OnBudgetExhausted, StateConfig};
pub use privacy::{PiiAction, PiiRule};
pub use target::{Target, CATEGORIES};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The policy compiled into the binary (`policies/default.yaml`).
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.yaml");

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
    /// Virtual keys by name. None: the gateway is open (local development).
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
    /// Where limits and budgets count; absent: in this process.
    pub state: Option<StateConfig>,
    /// What a request does when its key's cloud budget is spent.
    #[serde(default)]
    pub on_budget_exhausted: OnBudgetExhausted,
    /// Response caches; absent: none.
    pub cache: Option<CacheConfig>,
    /// Circuit breakers of the cloud backends.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// What to do with personal or secret data in requests to explicit
    /// models and routes without a `pii` rule of their own.
    pub pii: Option<PiiRule>,
    /// sha256 of the YAML text this policy was parsed from (set by
    /// `from_yaml`; shown by `GET /v1/policy` and logged on reload).
    #[serde(skip)]
    pub source_hash: Option<String>,
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

/// Circuit breakers of the cloud backends (`breaker:` in the policy).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open it.
    pub failures: u32,
    /// ... or this share of failed calls in the current window,
    pub ratio: f64,
    /// ... once the window has at least this many calls.
    pub min_requests: u32,
    pub window_secs: u64,
    /// How long it stays open before a probe is let through.
    pub open_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            ratio: 0.5,
            min_requests: 20,
            window_secs: 30,
            open_secs: 15,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Request bodies above this size get a 413.
    pub max_body_bytes: usize,
    /// The longest a client may take to send a request's headers, and then
    /// its body (408 for a body that stalls).
    pub client_timeout_secs: u64,
    /// How long in-flight requests may run on after SIGTERM/ctrl-c.
    pub shutdown_grace_secs: u64,
    /// Log prompt text at debug level (off by default: prompts are user data).
    pub log_prompts: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            client_timeout_secs: 30,
            shutdown_grace_secs: 30,
            log_prompts: false,
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
    /// Which of this route's requests the caches answer (default:
    /// `cache.exact.mode`).
    pub cache: Option<CacheMode>,
    /// Look this route's requests up in the semantic cache (`cache.semantic`).
    #[serde(default)]
    pub semantic_cache: bool,
    /// What to do with personal or secret data in this route's requests.
    pub pii: Option<PiiRule>,
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

impl Policy {
    /// Parse YAML strictly and validate it.
    pub fn from_yaml(text: &str) -> Result<Policy, String> {
        let mut policy: Policy =
            serde_yaml::from_str(text).map_err(|e| format!("policy does not parse: {e}"))?;
        validate::validate(&policy)?;
        policy.source_hash = Some({
            use sha2::Digest;
            sha2::Sha256::digest(text.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        });
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
