//! AppState: everything a request needs, built once from a validated policy.

use crate::backend::{
    anthropic::AnthropicBackend, local::LocalBackend, openai::OpenAiBackend, Backend,
};
use crate::classifier::{features::FeatureTriage, model::ModelTriage, Triage, TriageResult};
use crate::config::{BackendConfig, ModelConfig, Policy, TriageKind};
use crate::metrics::Metrics;
use crate::policy::{ModelIndex, Target};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub struct AppState {
    pub policy: Arc<Policy>,
    pub index: ModelIndex,
    pub triage: Arc<dyn Triage>,
    /// Triage results by hash of the normalised conversation.
    pub triage_cache: moka::future::Cache<u64, TriageResult>,
    /// Bounds encoder runs on the blocking pool.
    pub triage_permits: Arc<tokio::sync::Semaphore>,
    pub backends: HashMap<String, Arc<Backend>>,
    pub metrics: Arc<Metrics>,
    /// Prices of the policy's reference model (what always-cloud would cost).
    pub reference: Option<ModelConfig>,
    /// Shadow sampling of local answers, when configured.
    pub shadow: Option<crate::middleware::shadow::Shadow>,
}

/// Looks up an environment variable (injected so tests need not touch the process env).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

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
        Self {
            env: Box::new(|k| std::env::var(k).ok()),
            models_dir: models_dir(),
            start_local: true,
        }
    }
}

/// `$SLMGATE_MODELS_DIR`, or `models/` in the working directory.
pub fn models_dir() -> PathBuf {
    std::env::var_os("SLMGATE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// The policy's triage; a missing encoder is a startup error that says how to fix it.
pub fn build_triage(
    policy: &Policy,
    models_dir: &std::path::Path,
) -> Result<Arc<dyn Triage>, String> {
    Ok(match policy.triage.kind {
        TriageKind::Features => Arc::new(FeatureTriage),
        TriageKind::Model => {
            let dir = models_dir.join(&policy.triage.encoder_dir);
            let mut t = ModelTriage::load(&dir).map_err(|e| format!("triage encoder: {e}"))?;
            if let Some(p) = &policy.triage.local_success_head {
                let head = crate::calibrate::success::SuccessHead::load(&models_dir.join(p))?;
                t = t.with_success(head);
            }
            Arc::new(t)
        }
    })
}

/// One backend from its config (a local model starts loading in the background).
pub fn build_backend(
    name: &str,
    cfg: &BackendConfig,
    opts: &StateOptions,
    metrics: Arc<Metrics>,
) -> Result<Backend, String> {
    Ok(match cfg {
        BackendConfig::Openai(c) => {
            Backend::OpenAi(OpenAiBackend::new(name, &c.cloud(), &*opts.env)?)
        }
        BackendConfig::Anthropic(c) => {
            Backend::Anthropic(AnthropicBackend::new(name, c, &*opts.env)?)
        }
        BackendConfig::Local(c) => {
            Backend::Local(LocalBackend::start(name, c, &opts.models_dir, metrics)?)
        }
    })
}

impl AppState {
    /// Build backends (local models start loading in the background; `ready()`
    /// says when they are done). Must run inside a tokio runtime.
    pub fn new(policy: Policy, opts: StateOptions) -> Result<Arc<AppState>, String> {
        let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
        let mut backends = HashMap::new();
        for (name, cfg) in &policy.backends {
            let b = build_backend(name, cfg, &opts, metrics.clone())?;
            backends.insert(name.clone(), Arc::new(b));
        }
        let triage = build_triage(&policy, &opts.models_dir)?;
        let t = &policy.triage;
        let triage_cache = moka::future::Cache::builder()
            .max_capacity(t.cache_size)
            .time_to_live(std::time::Duration::from_secs(t.cache_ttl_secs.max(1)))
            .build();
        let triage_permits = Arc::new(tokio::sync::Semaphore::new(t.max_concurrency.max(1)));
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
        Ok(Arc::new(AppState {
            reference,
            shadow: crate::middleware::shadow::Shadow::from_policy(&policy),
            triage_cache,
            triage_permits,
            index: ModelIndex::new(&policy),
            policy: Arc::new(policy),
            triage,
            backends,
            metrics,
        }))
    }

    pub fn model_config(&self, t: &Target) -> Option<&ModelConfig> {
        self.policy.backends.get(&t.backend)?.models().get(&t.model)
    }

    /// Ok once every local model has loaded; otherwise what is still pending.
    pub fn ready(&self) -> Result<(), String> {
        for (name, b) in &self.backends {
            if let Backend::Local(l) = &**b {
                l.ready().map_err(|e| format!("backend `{name}`: {e}"))?;
            }
        }
        Ok(())
    }

    /// Wait until local models are loaded (or one failed: then its error).
    pub async fn wait_ready(&self) -> Result<(), String> {
        for (name, b) in &self.backends {
            if let Backend::Local(l) = &**b {
                l.wait_loaded()
                    .await
                    .map_err(|e| format!("backend `{name}`: {e}"))?;
            }
        }
        Ok(())
    }
}
