//! Policy sections for callers: virtual keys (stored as salted hashes,
//! written by `slmgate keys add`), the shared state that limits and budgets
//! count in, and what a spent budget does.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

/// One virtual key. The plaintext key (`sk-slm-<id>-<secret>`) is shown
/// once by `slmgate keys add`; the policy keeps its public `id` and
/// `hash` = `sha256:<salt hex>:<SHA-256(salt ‖ secret) hex>`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: String,
    pub hash: String,
    /// Routes and models this key may name (client-visible ids; absent: all).
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u64>,
    /// USD per UTC day / calendar month.
    #[serde(default, deserialize_with = "de_usd")]
    pub budget_usd_day: Option<Decimal>,
    #[serde(default, deserialize_with = "de_usd")]
    pub budget_usd_month: Option<Decimal>,
    /// May read `GET /v1/keys`.
    #[serde(default)]
    pub admin: bool,
}

impl KeyConfig {
    pub fn has_budget(&self) -> bool {
        self.budget_usd_day.is_some() || self.budget_usd_month.is_some()
    }
}

/// Where limits and budgets count (absent: in this process).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `redis://[:password@]host:port[/db]`: counters shared by every
    /// replica that names the same Redis.
    pub redis_url: String,
    /// The longest a request waits for Redis.
    #[serde(default = "default_state_timeout")]
    pub timeout_ms: u64,
    /// When Redis cannot answer: `open` admits (counted in
    /// `slmgate_state_errors_total`, logged once a minute), `closed` answers 503.
    #[serde(default)]
    pub on_unavailable: FailMode,
}

impl std::fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfig")
            .field(
                "redis_url",
                &crate::store::resp::redact_url(&self.redis_url),
            )
            .field("timeout_ms", &self.timeout_ms)
            .field("on_unavailable", &self.on_unavailable)
            .finish()
    }
}

fn default_state_timeout() -> u64 {
    250
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Open,
    Closed,
}

/// What a request whose key has spent its cloud budget does.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnBudgetExhausted {
    /// Go to the local model ($0): the free path is never blocked.
    #[default]
    Local,
    /// 429 with `Retry-After`.
    Reject,
}

fn de_usd<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        I(i64),
        F(f64),
        S(String),
    }
    let text = match Option::<Num>::deserialize(d)? {
        None => return Ok(None),
        Some(Num::I(i)) => i.to_string(),
        Some(Num::F(f)) => f.to_string(),
        Some(Num::S(s)) => s,
    };
    text.parse::<Decimal>()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not an amount in USD: {e}")))
}
