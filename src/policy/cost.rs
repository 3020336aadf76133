//! Dollar cost from token counts, in decimal arithmetic (never f64 sums).

use crate::config::{ModelConfig, Policy, Target};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::sync::Arc;

/// Token usage as reported by the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

const MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// Cost in USD of `usage` at `model`'s prices (per million tokens).
pub fn cost(model: &ModelConfig, usage: Usage) -> Decimal {
    (Decimal::from(usage.prompt_tokens) * model.input_per_mtok
        + Decimal::from(usage.completion_tokens) * model.output_per_mtok)
        / MILLION
}

/// What the reference model would have cost minus what was paid (never negative:
/// a request routed to something dearer than the reference saves nothing).
pub fn savings(actual: Decimal, reference: Option<&ModelConfig>, usage: Usage) -> Decimal {
    match reference {
        Some(r) => (cost(r, usage) - actual).max(Decimal::ZERO),
        None => Decimal::ZERO,
    }
}

/// For Prometheus counters, which are f64.
pub fn to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// The prices of a policy's models and of its reference model.
pub struct Prices {
    policy: Arc<Policy>,
    reference: Option<ModelConfig>,
}

impl Prices {
    pub fn new(policy: Arc<Policy>) -> Prices {
        let reference = policy
            .reference_model
            .as_deref()
            .and_then(Target::parse)
            .and_then(|r| {
                policy
                    .backends
                    .get(&r.backend)?
                    .models()
                    .get(&r.model)
                    .cloned()
            });
        Prices { policy, reference }
    }

    /// A target's prices.
    pub fn model(&self, t: &Target) -> Option<&ModelConfig> {
        self.policy.backends.get(&t.backend)?.models().get(&t.model)
    }

    /// What `usage` on `t` cost, and what it saved against the reference model.
    pub fn cost(&self, t: &Target, usage: Usage) -> (Decimal, Decimal) {
        let paid = self.model(t).map(|p| cost(p, usage)).unwrap_or_default();
        (paid, savings(paid, self.reference.as_ref(), usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn m(i: &str, o: &str) -> ModelConfig {
        ModelConfig {
            input_per_mtok: Decimal::from_str(i).expect("dec"),
            output_per_mtok: Decimal::from_str(o).expect("dec"),
            aliases: vec![],
            upstream_name: None,
            defaults: None,
        }
    }

    #[test]
    fn list_prices() {
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 500,
        };
        // gpt-4o-mini: 1000 * 0.15/1e6 + 500 * 0.60/1e6 = 0.00015 + 0.0003
        assert_eq!(cost(&m("0.15", "0.60"), u).to_string(), "0.00045");
        assert_eq!(
            savings(Decimal::ZERO, Some(&m("2.50", "10")), u).to_string(),
            "0.0075"
        );
        assert_eq!(
            savings(Decimal::ONE, Some(&m("2.50", "10")), u),
            Decimal::ZERO
        );
        assert_eq!(savings(Decimal::ZERO, None, u), Decimal::ZERO);
    }

    proptest! {
        #[test]
        fn cost_is_additive_and_exact(a in 0u64..10_000_000, b in 0u64..10_000_000, c in 0u64..10_000_000) {
            let model = m("0.15", "0.60");
            let whole = cost(&model, Usage { prompt_tokens: a + b, completion_tokens: c });
            let parts = cost(&model, Usage { prompt_tokens: a, completion_tokens: 0 })
                + cost(&model, Usage { prompt_tokens: b, completion_tokens: c });
            prop_assert_eq!(whole, parts);
            prop_assert!(whole >= Decimal::ZERO);
        }
    }
}
