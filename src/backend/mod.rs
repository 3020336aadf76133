//! Backends answer a parsed chat request for one concrete model: the local
//! model in-process, or a cloud API over reqwest. Each returns the OpenAI
//! body (whole, or as client-ready SSE events) plus the usage for metering.
//! A stream that fails after its head yields the failure as an error item;
//! the client-format edge turns it into the client's error event.

pub mod anthropic;
pub mod breaker;
pub mod defaults;
pub mod http;
pub mod limit;
pub mod local;
pub mod openai;
pub mod replicas;
pub mod sse;
pub mod stop;

use crate::api::openai::ParsedRequest;
use crate::config::{BackendConfig, ModelConfig, Policy, Target};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::cost::Usage;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A streamed answer: client-ready SSE events, or the failure that ended it.
pub type EventStream = BoxStream<'static, Result<Bytes, GatewayError>>;

/// Usage learned while a stream runs; read when it ends. Until the
/// upstream reports it (its last chunk), an estimate of what was generated
/// so far stands in, so a stream the client abandons is still counted.
#[derive(Debug, Default)]
pub struct UsageCell(Mutex<(Option<Usage>, bool)>);

impl UsageCell {
    /// The upstream's own count.
    pub fn set(&self, u: Usage) {
        if let Ok(mut g) = self.0.lock() {
            *g = (Some(u), true);
        }
    }
    /// An estimate, kept only until the real count arrives.
    pub fn estimate(&self, u: Usage) {
        if let Ok(mut g) = self.0.lock() {
            if !g.1 {
                g.0 = Some(u);
            }
        }
    }
    pub fn get(&self) -> Option<Usage> {
        self.0.lock().ok().and_then(|g| g.0)
    }
    /// Whether the upstream's own count arrived (the stream ran to its end).
    pub fn reported(&self) -> bool {
        self.0.lock().is_ok_and(|g| g.1)
    }
}

/// Prompt tokens of a request, estimated (about four characters a token,
/// plus a few per message for the chat template).
pub fn prompt_estimate(req: &ParsedRequest) -> u64 {
    let chars: usize = req.messages.iter().map(|m| m.text.chars().count()).sum();
    (chars as u64).div_ceil(4) + 4 * req.messages.len() as u64
}

pub enum ReplyBody {
    /// A complete OpenAI JSON body.
    Full { bytes: Bytes, usage: Usage },
    /// Client-ready SSE events; the stream ends with `data: [DONE]`.
    Stream {
        events: EventStream,
        usage: Arc<UsageCell>,
    },
}

pub struct BackendReply {
    pub body: ReplyBody,
    /// The API shape of `body`: OpenAI, except an Anthropic backend answering
    /// a `/v1/messages` request natively.
    pub format: crate::api::ApiFormat,
    /// Time spent waiting on the backend before the reply was ready to send
    /// (whole body, or the stream's head).
    pub upstream_wait: Duration,
}

/// Why a target failed; `reason` is a closed-set metric label.
#[derive(Debug)]
pub struct DispatchError {
    pub reason: &'static str,
    pub error: GatewayError,
    /// Whether the next fallback may be tried (false for the client's own errors).
    pub fallback_ok: bool,
}

impl DispatchError {
    pub fn retryable(reason: &'static str, error: GatewayError) -> Self {
        Self {
            reason,
            error,
            fallback_ok: true,
        }
    }
    pub fn fatal(reason: &'static str, error: GatewayError) -> Self {
        Self {
            reason,
            error,
            fallback_ok: false,
        }
    }
}

pub enum Backend {
    OpenAi(openai::OpenAiBackend),
    Anthropic(anthropic::AnthropicBackend),
    Local(local::LocalBackend),
}

impl Backend {
    /// Ok when requests can be sent now; otherwise why not (names the fix).
    pub fn availability(&self) -> Result<(), DispatchError> {
        match self {
            Backend::OpenAi(b) => b.availability(),
            Backend::Anthropic(b) => b.availability(),
            Backend::Local(b) => b.availability(),
        }
    }

    /// `local` for the in-process model and self-hosted servers.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::OpenAi(b) if b.self_hosted => "local",
            Backend::OpenAi(_) => "openai",
            Backend::Anthropic(_) => "anthropic",
            Backend::Local(_) => "local",
        }
    }

    pub async fn chat(
        &self,
        req: &ParsedRequest,
        model: &str,
    ) -> Result<BackendReply, DispatchError> {
        match self {
            Backend::OpenAi(b) => b.chat(req, model).await,
            Backend::Anthropic(b) => b.chat(req, model).await,
            Backend::Local(b) => b.chat(req, model).await,
        }
    }
}

/// Looks up an environment variable (injected so tests need not touch the process env).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where the outside world comes in: environment lookups and the models dir.
pub struct Environment {
    pub env: EnvLookup,
    pub models_dir: PathBuf,
}

impl Environment {
    /// The process environment and `$SLMGATE_MODELS_DIR` (default `./models`).
    pub fn from_process() -> Self {
        Self {
            env: Box::new(|k| std::env::var(k).ok()),
            models_dir: models_dir(),
        }
    }
}

/// `$SLMGATE_MODELS_DIR`, or `models/` in the working directory.
pub fn models_dir() -> PathBuf {
    std::env::var_os("SLMGATE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

impl Backend {
    /// One backend from its config (a local model starts loading in the
    /// background; must run inside a tokio runtime).
    pub fn from_config(
        name: &str,
        cfg: &BackendConfig,
        env: &Environment,
        metrics: Arc<Metrics>,
    ) -> Result<Backend, String> {
        Ok(match cfg {
            BackendConfig::Openai(c) => {
                let mut b = openai::OpenAiBackend::new(name, &c.cloud(), &*env.env)?;
                b.self_hosted = c.self_hosted;
                if c.self_hosted || c.base_urls.len() > 1 {
                    b.replicas()
                        .attach_gauge(metrics.replicas_healthy.with_label_values(&[name]));
                }
                Backend::OpenAi(b)
            }
            BackendConfig::Anthropic(c) => {
                Backend::Anthropic(anthropic::AnthropicBackend::new(name, c, &*env.env)?)
            }
            BackendConfig::Local(c) => Backend::Local(local::LocalBackend::start(
                name,
                c,
                &env.models_dir,
                metrics,
            )?),
        })
    }
}

/// Every backend of a policy by name, with the models (and prices) it serves.
pub struct Backends {
    map: HashMap<String, Arc<Backend>>,
    breakers: HashMap<String, Arc<breaker::Breaker>>,
    limits: HashMap<String, Arc<limit::Limit>>,
    policy: Arc<Policy>,
}

impl Backends {
    /// Build the backends a policy names; `start_local: false` leaves local
    /// backends out (dry-run commands that never generate).
    pub fn new(
        policy: Arc<Policy>,
        env: &Environment,
        metrics: &Arc<Metrics>,
        start_local: bool,
    ) -> Result<Backends, String> {
        Self::build(policy, env, metrics, start_local, None)
    }

    /// The same, reusing every backend of `old` whose config is unchanged.
    pub fn build(
        policy: Arc<Policy>,
        env: &Environment,
        metrics: &Arc<Metrics>,
        start_local: bool,
        old: Option<&Backends>,
    ) -> Result<Backends, String> {
        let mut map = HashMap::new();
        let mut breakers = HashMap::new();
        let mut limits = HashMap::new();
        for (name, cfg) in &policy.backends {
            if !start_local && matches!(cfg, BackendConfig::Local(_)) {
                continue;
            }
            let same = old.and_then(|o| {
                let before = o.policy.backends.get(name)?;
                (before == cfg).then(|| o.map.get(name).cloned()).flatten()
            });
            let reused = same.is_some();
            let b = match same {
                Some(b) => b,
                None => Arc::new(Backend::from_config(name, cfg, env, metrics.clone())?),
            };
            // Cloud backends get a breaker (kept across a reload that leaves
            // the backend and the breaker settings as they were).
            if !matches!(cfg, BackendConfig::Local(_)) {
                let kept = old
                    .filter(|o| o.policy.breaker == policy.breaker)
                    .and_then(|o| o.breakers.get(name))
                    .filter(|_| reused)
                    .cloned();
                let br =
                    kept.unwrap_or_else(|| Arc::new(breaker::Breaker::new(policy.breaker.clone())));
                metrics
                    .circuit
                    .with_label_values(&[name.as_str()])
                    .set(br.state().code());
                breakers.insert(name.clone(), br);
            }
            if let Some(max) = cfg.max_concurrency() {
                // A reused backend keeps its count of requests in flight.
                let kept = old
                    .and_then(|o| o.limits.get(name))
                    .filter(|_| reused)
                    .cloned();
                let gauge = metrics
                    .backend_in_flight
                    .with_label_values(&[name.as_str()]);
                let l = kept.unwrap_or_else(|| limit::Limit::new(max, gauge));
                limits.insert(name.clone(), l);
            }
            map.insert(name.clone(), b);
        }
        Ok(Backends {
            map,
            breakers,
            limits,
            policy,
        })
    }

    /// A cloud backend's circuit breaker.
    pub fn breaker(&self, name: &str) -> Option<&Arc<breaker::Breaker>> {
        self.breakers.get(name)
    }

    /// A cloud backend's concurrency limit.
    pub fn limit(&self, name: &str) -> Option<&Arc<limit::Limit>> {
        self.limits.get(name)
    }

    /// Healthy and total replicas of every self-hosted or multi-replica backend.
    pub fn replicas(&self) -> std::collections::BTreeMap<&str, (usize, usize)> {
        self.map
            .iter()
            .filter_map(|(n, b)| match &**b {
                Backend::OpenAi(o) if o.self_hosted || o.replicas().len() > 1 => {
                    Some((n.as_str(), (o.replicas().healthy(), o.replicas().len())))
                }
                _ => None,
            })
            .collect()
    }

    /// Every breaker's state, by backend name.
    pub fn circuits(&self) -> std::collections::BTreeMap<&str, breaker::State> {
        self.breakers
            .iter()
            .map(|(n, b)| (n.as_str(), b.state()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.map.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Backend>)> {
        self.map.iter()
    }

    /// A target's model config (prices, upstream name).
    pub fn model(&self, t: &Target) -> Option<&ModelConfig> {
        self.policy.backends.get(&t.backend)?.models().get(&t.model)
    }

    /// Ok once every local model has loaded; otherwise what is still pending.
    pub fn ready(&self) -> Result<(), String> {
        for (name, b) in &self.map {
            if let Backend::Local(l) = &**b {
                l.ready().map_err(|e| format!("backend `{name}`: {e}"))?;
            }
        }
        Ok(())
    }

    /// Wait until local models are loaded (or one failed: then its error).
    pub async fn wait_ready(&self) -> Result<(), String> {
        for (name, b) in &self.map {
            if let Backend::Local(l) = &**b {
                l.wait_loaded()
                    .await
                    .map_err(|e| format!("backend `{name}`: {e}"))?;
            }
        }
        Ok(())
    }
}
