//! Every Prometheus metric, registered once on a registry owned by the app
//! (not the global one, so tests can build many apps). Labels come from
//! small closed sets: route/backend/model names from the policy, status
//! classes, error kinds — never raw messages or prompts.

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub const REQUESTS_TOTAL: &str = "slmgate_requests_total";
pub const REQUEST_DURATION: &str = "slmgate_request_duration_seconds";
pub const TTFT: &str = "slmgate_ttft_seconds";
pub const OVERHEAD: &str = "slmgate_overhead_seconds";
pub const TOKENS_TOTAL: &str = "slmgate_tokens_total";
pub const COST_USD_TOTAL: &str = "slmgate_cost_usd_total";
pub const SAVINGS_USD_TOTAL: &str = "slmgate_savings_usd_total";
pub const TRIAGE_DURATION: &str = "slmgate_triage_duration_seconds";
pub const TRIAGE_SCORE: &str = "slmgate_triage_score";
pub const CACHE_REQUESTS_TOTAL: &str = "slmgate_cache_requests_total";
pub const CACHE_EVICTIONS_TOTAL: &str = "slmgate_cache_evictions_total";
pub const CACHE_BYTES: &str = "slmgate_cache_bytes";
pub const CACHE_SAVED_USD_TOTAL: &str = "slmgate_cache_saved_usd_total";
pub const PII_FOUND_TOTAL: &str = "slmgate_pii_detected_total";
pub const CIRCUIT_STATE: &str = "slmgate_circuit_state";
pub const BACKEND_IN_FLIGHT: &str = "slmgate_backend_in_flight";
pub const REPLICAS_HEALTHY: &str = "slmgate_backend_replicas_healthy";
pub const PII_ACTIONS_TOTAL: &str = "slmgate_pii_actions_total";
pub const UPSTREAM_ERRORS_TOTAL: &str = "slmgate_upstream_errors_total";
pub const LOCAL_QUEUE_DEPTH: &str = "slmgate_local_queue_depth";
pub const FALLBACKS_TOTAL: &str = "slmgate_fallbacks_total";
pub const SHADOW_TOTAL: &str = "slmgate_shadow_requests_total";
pub const SHADOW_SIMILARITY: &str = "slmgate_shadow_similarity";
pub const SHADOW_AGREEMENT: &str = "slmgate_shadow_agreement_ratio";
pub const SHADOW_COST: &str = "slmgate_shadow_cost_usd_total";
pub const KEY_REQUESTS_TOTAL: &str = "slmgate_key_requests_total";
pub const KEY_TOKENS_TOTAL: &str = "slmgate_key_tokens_total";
pub const KEY_SPEND_USD_TOTAL: &str = "slmgate_key_spend_usd_total";
pub const KEY_BUDGET_REMAINING_USD: &str = "slmgate_key_budget_remaining_usd";
pub const KEY_BUDGET_USD: &str = "slmgate_key_budget_usd";
pub const KEY_LIMITED_TOTAL: &str = "slmgate_key_limited_total";
pub const STATE_ERRORS_TOTAL: &str = "slmgate_state_errors_total";
pub const POLICY_RELOADS_TOTAL: &str = "slmgate_policy_reloads_total";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub ttft: HistogramVec,
    pub overhead: Histogram,
    pub tokens: IntCounterVec,
    pub cost: CounterVec,
    pub savings: CounterVec,
    pub triage_duration: Histogram,
    pub triage_score: Histogram,
    pub cache: IntCounterVec,
    /// Entries dropped to stay within the cache's size, by cache.
    pub cache_evictions: IntCounterVec,
    /// What the cache holds now, by cache.
    pub cache_bytes: prometheus::IntGaugeVec,
    /// What hits would have cost on the target that first answered.
    pub cache_saved: CounterVec,
    /// Each cloud backend's circuit: 0 closed, 1 open, 2 half-open.
    pub circuit: prometheus::IntGaugeVec,
    /// Requests in flight per cloud backend (streams until they end).
    pub backend_in_flight: prometheus::IntGaugeVec,
    /// Replicas in rotation per self-hosted backend.
    pub replicas_healthy: prometheus::IntGaugeVec,
    /// Personal or secret data found in requests, by kind (never the data).
    pub pii_found: IntCounterVec,
    /// Requests a `pii` rule acted on, by action (local|redact|reject).
    pub pii_actions: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub local_queue_depth: IntGauge,
    pub fallbacks: IntCounterVec,
    /// Shadow samples by result: agree | disagree | error | skipped.
    pub shadow: IntCounterVec,
    pub shadow_similarity: Histogram,
    /// agree / (agree + disagree) so far.
    pub shadow_agreement: prometheus::Gauge,
    pub shadow_cost: prometheus::Counter,
    /// Per virtual key (by name; `none`: no valid key): requests by status.
    pub key_requests: IntCounterVec,
    pub key_tokens: IntCounterVec,
    pub key_spend: CounterVec,
    /// Budget left after the last reservation, by key and period (day|month).
    pub key_budget_remaining: prometheus::GaugeVec,
    /// Each key's budget by period, as the policy sets it.
    pub key_budget: prometheus::GaugeVec,
    /// Requests refused or rerouted by a limit, by key and limit
    /// (rpm|tpm|budget|model) and outcome (rejected|local).
    pub key_limited: IntCounterVec,
    /// Shared-state operations that failed, by operation.
    pub state_errors: IntCounterVec,
    pub policy_reloads: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const FAST_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let fcounter =
            |name: &str, help: &str, labels: &[&str]| -> Result<CounterVec, prometheus::Error> {
                let c = CounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let hist =
            |name: &str, help: &str, buckets: &[f64]| -> Result<Histogram, prometheus::Error> {
                let h =
                    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let hist_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let local_queue_depth = IntGauge::new(
            LOCAL_QUEUE_DEPTH,
            "Requests admitted to the local model (running + waiting)",
        )?;
        registry.register(Box::new(local_queue_depth.clone()))?;
        let shadow_agreement = prometheus::Gauge::new(
            SHADOW_AGREEMENT,
            "Share of shadow-sampled local answers that agree with the reference model",
        )?;
        registry.register(Box::new(shadow_agreement.clone()))?;
        let shadow_cost = prometheus::Counter::new(
            SHADOW_COST,
            "Dollar cost of shadow calls to the reference model",
        )?;
        registry.register(Box::new(shadow_cost.clone()))?;
        let key_budget_remaining = prometheus::GaugeVec::new(
            Opts::new(
                KEY_BUDGET_REMAINING_USD,
                "Budget left (USD) after the key's last reservation, by period",
            ),
            &["key", "period"],
        )?;
        registry.register(Box::new(key_budget_remaining.clone()))?;
        let circuit = prometheus::IntGaugeVec::new(
            Opts::new(
                CIRCUIT_STATE,
                "Circuit breaker per cloud backend: 0 closed, 1 open, 2 half-open",
            ),
            &["backend"],
        )?;
        registry.register(Box::new(circuit.clone()))?;
        let backend_in_flight = prometheus::IntGaugeVec::new(
            Opts::new(
                BACKEND_IN_FLIGHT,
                "Requests in flight per cloud backend, streams until they end",
            ),
            &["backend"],
        )?;
        registry.register(Box::new(backend_in_flight.clone()))?;
        let replicas_healthy = prometheus::IntGaugeVec::new(
            Opts::new(
                REPLICAS_HEALTHY,
                "Replicas in rotation per self-hosted backend (the rest are ejected)",
            ),
            &["backend"],
        )?;
        registry.register(Box::new(replicas_healthy.clone()))?;
        let cache_bytes = prometheus::IntGaugeVec::new(
            Opts::new(CACHE_BYTES, "Bytes held by a response cache"),
            &["cache"],
        )?;
        registry.register(Box::new(cache_bytes.clone()))?;
        let key_budget = prometheus::GaugeVec::new(
            Opts::new(
                KEY_BUDGET_USD,
                "Each key's budget (USD) by period, as the policy sets it",
            ),
            &["key", "period"],
        )?;
        registry.register(Box::new(key_budget.clone()))?;
        let m = Metrics {
            requests: counter(
                REQUESTS_TOTAL,
                "Requests by route, backend, model and HTTP status",
                &["route", "backend", "model", "status"],
            )?,
            duration: hist_vec(
                REQUEST_DURATION,
                "Whole request duration, until the last byte",
                &["backend"],
            )?,
            ttft: hist_vec(
                TTFT,
                "Time to first token (first body byte) of routed requests",
                &["backend"],
            )?,
            overhead: hist(
                OVERHEAD,
                "Time spent in the gateway itself: total minus the wait for the upstream",
                FAST_BUCKETS,
            )?,
            tokens: counter(
                TOKENS_TOTAL,
                "Tokens by backend, model and direction (input|output)",
                &["backend", "model", "direction"],
            )?,
            cost: fcounter(
                COST_USD_TOTAL,
                "Dollar cost at the policy's prices",
                &["backend", "model"],
            )?,
            savings: fcounter(
                SAVINGS_USD_TOTAL,
                "Cost avoided versus the policy's reference cloud model",
                &["backend", "model"],
            )?,
            triage_duration: hist(TRIAGE_DURATION, "Time to triage one request", FAST_BUCKETS)?,
            triage_score: hist(
                TRIAGE_SCORE,
                "Triage score distribution",
                &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
            )?,
            cache: counter(
                CACHE_REQUESTS_TOTAL,
                "Cache lookups by cache and result (hit|miss|bypass)",
                &["cache", "result"],
            )?,
            upstream_errors: counter(
                UPSTREAM_ERRORS_TOTAL,
                "Upstream failures by backend and kind",
                &["backend", "kind"],
            )?,
            local_queue_depth,
            fallbacks: counter(
                FALLBACKS_TOTAL,
                "Fallbacks taken, by from/to target and reason",
                &["from", "to", "reason"],
            )?,
            shadow: counter(
                SHADOW_TOTAL,
                "Locally answered requests also sent to the reference model, by result",
                &["result"],
            )?,
            shadow_similarity: hist(
                SHADOW_SIMILARITY,
                "Embedding cosine similarity of local and reference answers",
                &[0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0],
            )?,
            shadow_agreement,
            shadow_cost,
            key_requests: counter(
                KEY_REQUESTS_TOTAL,
                "Requests per virtual key name (none: no valid key) and HTTP status",
                &["key", "status"],
            )?,
            key_tokens: counter(
                KEY_TOKENS_TOTAL,
                "Tokens per virtual key name and direction (input|output)",
                &["key", "direction"],
            )?,
            key_spend: fcounter(
                KEY_SPEND_USD_TOTAL,
                "Dollars spent per virtual key name",
                &["key"],
            )?,
            key_budget_remaining,
            key_budget,
            cache_evictions: counter(
                CACHE_EVICTIONS_TOTAL,
                "Response cache entries evicted to stay within the size limit",
                &["cache"],
            )?,
            cache_bytes,
            circuit,
            backend_in_flight,
            replicas_healthy,
            pii_found: counter(
                PII_FOUND_TOTAL,
                "Personal or secret data found in requests, by kind",
                &["kind"],
            )?,
            pii_actions: counter(
                PII_ACTIONS_TOTAL,
                "Requests a pii rule acted on, by action",
                &["action"],
            )?,
            cache_saved: fcounter(
                CACHE_SAVED_USD_TOTAL,
                "Dollars that cache hits would have cost on the target that first answered",
                &["cache"],
            )?,
            key_limited: counter(
                KEY_LIMITED_TOTAL,
                "Requests refused or rerouted by a key's limit, by limit and outcome",
                &["key", "limit", "outcome"],
            )?,
            state_errors: counter(
                STATE_ERRORS_TOTAL,
                "Shared-state (Redis) operations that failed, by operation",
                &["op"],
            )?,
            policy_reloads: counter(
                POLICY_RELOADS_TOTAL,
                "Policy reloads (SIGHUP or file change) by result (ok|error)",
                &["result"],
            )?,
            registry,
        };
        // Series that exist from the start, at 0, so that `rate()` sees
        // their first increment.
        for r in ["ok", "error"] {
            m.policy_reloads.with_label_values(&[r]);
        }
        for op in [
            "limits",
            "tpm_add",
            "budget",
            "budget_settle",
            "usage",
            "cache_get",
            "cache_put",
        ] {
            m.state_errors.with_label_values(&[op]);
        }
        for r in ["agree", "disagree", "error", "skipped"] {
            m.shadow.with_label_values(&[r]);
        }
        Ok(m)
    }

    /// Publish the policy's key budgets (a reload replaces them).
    pub fn set_key_budgets<'a>(
        &self,
        keys: impl Iterator<Item = (&'a str, Option<f64>, Option<f64>)>,
    ) {
        self.key_budget.reset();
        for (name, day, month) in keys {
            for (period, usd) in [("day", day), ("month", month)] {
                if let Some(usd) = usd {
                    self.key_budget.with_label_values(&[name, period]).set(usd);
                }
            }
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
