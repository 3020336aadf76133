//! AppState: the parts every layer of the request path is built from,
//! constructed once from a validated policy. Layers take the parts they
//! need (the triager, the backends, the metrics), never the whole state.

use crate::backend::{Backends, Environment};
use crate::classifier::serve::Triager;
use crate::classifier::{
    features::FeatureTriage, model::ModelTriage, success::SuccessHead, Triage,
};
use crate::config::{Policy, TriageKind};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::middleware::shadow::Shadow;
use crate::policy::cost::Prices;
use crate::policy::Routing;
use crate::store::guard::Shared;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::backend::{models_dir, EnvLookup};

pub struct AppState {
    pub policy: Arc<Policy>,
    /// Model ids and routes, with every decision prebuilt.
    pub routing: Arc<Routing>,
    pub triage: Arc<Triager>,
    pub backends: Arc<Backends>,
    pub metrics: Arc<Metrics>,
    /// Model prices and the reference model's (what always-cloud would cost).
    pub prices: Arc<Prices>,
    /// Shadow sampling, when the policy configures it: one per gateway, so
    /// `max_in_flight` holds across its chat paths.
    pub shadow: Option<Arc<Shadow>>,
    /// Virtual keys (empty: the gateway is open).
    pub keys: Arc<Keys>,
    /// Where limits and budgets count (this process, or Redis).
    pub shared: Arc<Shared>,
    /// The exact response cache, when the policy has one.
    pub cache: Option<Arc<crate::cache::ExactCache>>,
    /// The semantic cache, when the policy has one.
    pub semantic: Option<Arc<crate::middleware::semantic::SemanticCache>>,
    /// When this state was built (start, or the reload that made it).
    pub loaded_at: std::time::SystemTime,
}

/// Where the outside world comes in: environment lookups and the models dir.
pub struct StateOptions {
    pub env: EnvLookup,
    pub models_dir: PathBuf,
    /// Load local models (false for dry-run commands such as `slmgate triage`).
    pub start_local: bool,
}

impl StateOptions {
    /// The process environment and `$SLMGATE_MODELS_DIR` (default `./models`).
    pub fn from_process() -> Self {
        let e = Environment::from_process();
        Self {
            env: e.env,
            models_dir: e.models_dir,
            start_local: true,
        }
    }
}

/// The policy's triage; a missing encoder is a startup error that says how to fix it.
pub fn build_triage(policy: &Policy, models_dir: &Path) -> Result<Arc<dyn Triage>, String> {
    Ok(match policy.triage.kind {
        TriageKind::Features => Arc::new(FeatureTriage),
        TriageKind::Model => {
            let dir = models_dir.join(&policy.triage.encoder_dir);
            let mut t = ModelTriage::load(&dir).map_err(|e| format!("triage encoder: {e}"))?;
            if let Some(p) = &policy.triage.local_success_head {
                t = t.with_success(SuccessHead::load(&models_dir.join(p))?);
            }
            Arc::new(t)
        }
    })
}

impl AppState {
    /// Build backends (local models start loading in the background; `ready()`
    /// says when they are done). Must run inside a tokio runtime.
    pub fn new(policy: Policy, opts: StateOptions) -> Result<Arc<AppState>, String> {
        Self::build(policy, opts, None)
    }

    /// The state for a new policy, keeping what did not change: the metrics,
    /// every backend whose config is the same (its connections, a loaded
    /// local model), the triage (its encoder and cache) and the shared
    /// counters when their config is the same.
    pub fn reload(&self, policy: Policy, opts: StateOptions) -> Result<Arc<AppState>, String> {
        Self::build(policy, opts, Some(self))
    }

    fn build(
        policy: Policy,
        opts: StateOptions,
        old: Option<&AppState>,
    ) -> Result<Arc<AppState>, String> {
        let metrics = match old {
            Some(o) => o.metrics.clone(),
            None => Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?),
        };
        let policy = Arc::new(policy);
        let env = Environment {
            env: opts.env,
            models_dir: opts.models_dir,
        };
        let backends = Arc::new(Backends::build(
            policy.clone(),
            &env,
            &metrics,
            opts.start_local,
            old.map(|o| &*o.backends),
        )?);
        let triage = match old.filter(|o| o.policy.triage == policy.triage) {
            Some(o) => o.triage.clone(),
            None => {
                let engine = build_triage(&policy, &env.models_dir)?;
                Arc::new(Triager::new(engine, &policy.triage, metrics.clone()))
            }
        };
        let prices = Arc::new(Prices::new(policy.clone()));
        let shadow = Shadow::from_policy(
            &policy,
            backends.clone(),
            triage.clone(),
            metrics.clone(),
            prices.clone(),
        )
        .map(Arc::new);
        let shared = match old.filter(|o| o.policy.state == policy.state) {
            Some(o) => o.shared.clone(),
            None => Arc::new(Shared::new(&policy, metrics.clone())?),
        };
        // Kept across a reload whose cache and state config did not change.
        let cache = match old
            .filter(|o| o.policy.cache == policy.cache && o.policy.state == policy.state)
        {
            Some(o) => o.cache.clone(),
            None => policy
                .cache
                .as_ref()
                .and_then(|c| c.exact.clone())
                .map(|exact| {
                    Arc::new(crate::cache::ExactCache::new(
                        exact,
                        Some(shared.clone()),
                        metrics.clone(),
                    ))
                }),
        };
        let semantic_config = policy.cache.as_ref().and_then(|c| c.semantic.clone());
        let semantic = match old.filter(|o| {
            o.policy.cache.as_ref().and_then(|c| c.semantic.as_ref()) == semantic_config.as_ref()
                && Arc::ptr_eq(&o.triage, &triage)
        }) {
            Some(o) => o.semantic.clone(),
            None => semantic_config
                .map(|c| Arc::new(crate::middleware::semantic::SemanticCache::new(c))),
        };
        {
            use rust_decimal::prelude::ToPrimitive;
            let usd = |d: &Option<rust_decimal::Decimal>| d.and_then(|d| d.to_f64());
            metrics.set_key_budgets(policy.keys.iter().map(|(name, k)| {
                (
                    name.as_str(),
                    usd(&k.budget_usd_day),
                    usd(&k.budget_usd_month),
                )
            }));
        }
        Ok(Arc::new(AppState {
            keys: Arc::new(Keys::new(&policy)),
            shared,
            cache,
            semantic,
            routing: Arc::new(Routing::new(&policy)),
            triage,
            backends,
            prices,
            shadow,
            policy,
            metrics,
            loaded_at: std::time::SystemTime::now(),
        }))
    }

    /// Ok once every local model has loaded; otherwise what is still pending.
    pub fn ready(&self) -> Result<(), String> {
        self.backends.ready()
    }

    /// Wait until local models are loaded (or one failed: then its error).
    pub async fn wait_ready(&self) -> Result<(), String> {
        self.backends.wait_ready().await
    }
}
