//! Response caches: which requests may be answered from a cache, how big
//! and how long-lived it is, and whether replicas share it.

use serde::Deserialize;

/// `cache:` in the policy (absent: no response cache).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The exact cache: a hit needs the same request (model or route,
    /// messages, every parameter that changes the answer).
    pub exact: Option<ExactCacheConfig>,
    /// The semantic cache (used by routes with `semantic_cache: true`): a
    /// hit needs the same request except the last user message, whose
    /// meaning must be close enough (and its numbers, negations, directions
    /// and names the same).
    pub semantic: Option<SemanticCacheConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SemanticCacheConfig {
    /// Cosine similarity of the last user messages' embeddings at or above
    /// which an answer is reused.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Entries kept (the oldest is replaced).
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// Also require the same numbers, negation, directional words and
    /// names (see `src/cache/guards.rs`); off: similarity alone.
    #[serde(default = "default_true")]
    pub guards: bool,
    /// Largest cached answer, in bytes.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
}

fn default_threshold() -> f32 {
    0.85
}
fn default_max_entries() -> usize {
    10_000
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExactCacheConfig {
    /// Which requests are cached, unless their route says otherwise.
    #[serde(default)]
    pub mode: CacheMode,
    /// The most the cached answers take in memory, in bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Answers bigger than this are not cached.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// How long an answer stays cached.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// Serve one virtual key's cached answers to another (off: each key has
    /// its own entries).
    #[serde(default)]
    pub share_across_keys: bool,
    /// Also keep answers in Redis (`state.redis_url`), so replicas share
    /// hits; this process's cache stays in front.
    #[serde(default)]
    pub shared: bool,
}

impl Default for ExactCacheConfig {
    fn default() -> Self {
        ExactCacheConfig {
            mode: CacheMode::default(),
            max_bytes: default_max_bytes(),
            max_entry_bytes: default_max_entry_bytes(),
            ttl_secs: default_ttl(),
            share_across_keys: false,
            shared: false,
        }
    }
}

/// Which requests a cache answers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// None.
    Off,
    /// Those whose answer is deterministic enough: `temperature: 0` or a
    /// `seed`.
    #[default]
    Deterministic,
    /// Every request, sampled ones too.
    Always,
}

fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_max_entry_bytes() -> u64 {
    1 << 20
}
fn default_ttl() -> u64 {
    3600
}
