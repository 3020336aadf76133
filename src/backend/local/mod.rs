//! The local backend: a quantized GGUF model served in-process by mistral.rs
//! (`engine: mistralrs`, the default) or llama.cpp (`engine: llamacpp`, cargo
//! feature `llamacpp`); both answer through the same [`Event`] stream.
//!
//! - Loads once, in the background; `/readyz` waits for it.
//! - A bounded admission count (`max_queue`) answers 429 + Retry-After (or
//!   falls back, per policy) instead of piling up work; mistral.rs batches
//!   what is admitted (`max_batch`).
//! - Every request runs on mistral.rs's *streaming* API, drained promptly
//!   into our own channel: a slow client never stalls the engine, and a
//!   client that goes away drops the stream, which cancels the sequence.
//!   (Dropping a non-streaming mistral.rs request mid-flight does not cancel
//!   it and can crash the engine thread, so we never use that API.)

mod engine;
#[cfg(feature = "llamacpp")]
mod llamacpp;
mod load;
mod reply;

use super::{BackendReply, DispatchError, ReplyBody, UsageCell};
use crate::api::openai::ParsedRequest;
use crate::config::{LocalConfig, LocalEngine, Overflow};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use engine::{budget, build_request, spawn_engine, warm_up, Event, Events};
pub use load::{check_gguf, resolve_gguf};
use load::{load_outcome, publish_load};
use mistralrs::{GgufModelBuilder, Model, TokenSource};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Clone)]
enum LoadState {
    Loading,
    Ready(Ready),
    Failed(String),
}

/// A loaded engine.
#[derive(Clone)]
enum Ready {
    Mistral(Arc<Loaded>),
    #[cfg(feature = "llamacpp")]
    Llama(Arc<llamacpp::LlamaEngine>),
}

impl Ready {
    /// An engine that loaded can still stop (llama.cpp's thread, on a panic).
    fn health(&self) -> Result<(), String> {
        match self {
            Ready::Mistral(_) => Ok(()),
            #[cfg(feature = "llamacpp")]
            Ready::Llama(e) => e.alive(),
        }
    }
}

struct Loaded {
    model: Model,
    /// The model's context length, when the GGUF states it.
    ctx: Option<usize>,
}

pub struct LocalBackend {
    name: String,
    path: PathBuf,
    cfg: LocalConfig,
    state: watch::Receiver<LoadState>,
    inflight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

/// A chat message's role as both engines' templates know it: `developer`
/// is a system message, anything unknown a user one.
fn chat_role(r: &str) -> &'static str {
    match r {
        "system" | "developer" => "system",
        "assistant" => "assistant",
        _ => "user",
    }
}

/// The completion budget for a `prompt`-token prompt in a `ctx`-token
/// context: the `want`ed tokens, clamped to what is left; a prompt that fills
/// the context is the client's error.
fn fit_context(prompt: usize, ctx: usize, want: usize) -> Result<usize, String> {
    if prompt >= ctx {
        return Err(format!(
            "the prompt is {prompt} tokens; the local model's context is {ctx} tokens"
        ));
    }
    Ok(want.min(ctx - prompt))
}

/// Holds one admission slot; released on drop (end of generation or client gone).
struct Slot {
    inflight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        self.metrics.local_queue_depth.dec();
    }
}

impl LocalBackend {
    /// Check the file now and start loading it in the background.
    pub fn start(
        name: &str,
        cfg: &LocalConfig,
        models_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let path = resolve_gguf(&cfg.gguf, models_dir);
        check_gguf(&path).map_err(|e| format!("backend `{name}`: {e}"))?;
        let (tx, rx) = watch::channel(LoadState::Loading);
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (max_batch, prefix_cache) = (cfg.max_batch(), cfg.prefix_cache);
        let (bname, shown) = (name.to_string(), path.display().to_string());
        if cfg.engine == LocalEngine::Llamacpp {
            Self::start_llamacpp(path.clone(), max_batch, bname, shown, tx);
            return Ok(Self::new(name, path, cfg, rx, metrics));
        }
        tokio::spawn(async move {
            let t0 = Instant::now();
            // mistral.rs treats a model id that is not an existing directory as a
            // hub id: always hand it the absolute directory, checked above.
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            let builder = GgufModelBuilder::new(dir.to_string_lossy(), vec![file])
                .with_token_source(TokenSource::None)
                .with_force_cpu()
                .with_max_num_seqs(max_batch)
                .with_prefix_cache_n((prefix_cache > 0).then_some(prefix_cache));
            // Some malformed files panic inside the loader: contain it in a task.
            let built = tokio::spawn(async move { builder.build().await }).await;
            let r = match load_outcome(&shown, built) {
                Ok(model) => {
                    let ctx = model.max_sequence_length().ok().flatten();
                    warm_up(&model).await;
                    Ok((Ready::Mistral(Arc::new(Loaded { model, ctx })), ctx))
                }
                Err(e) => Err(e),
            };
            publish_load(&tx, &bname, &shown, LocalEngine::Mistralrs, t0, r);
        });
        Ok(Self::new(name, path, cfg, rx, metrics))
    }

    fn new(
        name: &str,
        path: PathBuf,
        cfg: &LocalConfig,
        state: watch::Receiver<LoadState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            name: name.to_string(),
            path,
            cfg: cfg.clone(),
            state,
            inflight: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// Load through llama.cpp on a blocking thread (a build without the
    /// `llamacpp` feature says so; `slmgate check` refuses such a policy first).
    fn start_llamacpp(
        path: PathBuf,
        max_batch: usize,
        bname: String,
        shown: String,
        tx: watch::Sender<LoadState>,
    ) {
        #[cfg(feature = "llamacpp")]
        tokio::spawn(async move {
            let t0 = Instant::now();
            let loaded =
                tokio::task::spawn_blocking(move || llamacpp::LlamaEngine::load(&path, max_batch))
                    .await;
            let r = load_outcome(&shown, loaded).map(|e| {
                let ctx = Some(e.ctx);
                (Ready::Llama(Arc::new(e)), ctx)
            });
            publish_load(&tx, &bname, &shown, LocalEngine::Llamacpp, t0, r);
        });
        #[cfg(not(feature = "llamacpp"))]
        {
            let _ = (path, max_batch, bname, shown);
            let _ = tx.send(LoadState::Failed(
                "engine `llamacpp` needs a build with `--features llamacpp`".into(),
            ));
        }
    }

    pub fn ready(&self) -> Result<(), String> {
        match &*self.state.borrow() {
            LoadState::Ready(r) => r.health(),
            LoadState::Loading => Err(format!("loading {}", self.path.display())),
            LoadState::Failed(e) => Err(e.clone()),
        }
    }

    pub async fn wait_loaded(&self) -> Result<(), String> {
        let mut rx = self.state.clone();
        let state = rx
            .wait_for(|s| !matches!(s, LoadState::Loading))
            .await
            .map_err(|_| "loader task ended".to_string())?
            .clone();
        match state {
            LoadState::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    fn loaded(&self) -> Result<Ready, DispatchError> {
        let unavailable = |e: &str| {
            DispatchError::retryable(
                "unavailable",
                GatewayError::BackendUnavailable(format!(
                    "local backend `{}` is unavailable: {e}",
                    self.name
                )),
            )
        };
        match &*self.state.borrow() {
            LoadState::Ready(l) => match l.health() {
                Ok(()) => Ok(l.clone()),
                Err(e) => Err(unavailable(&e)),
            },
            LoadState::Loading => Err(DispatchError::retryable(
                "loading",
                GatewayError::BackendUnavailable(format!(
                    "local backend `{}` is still loading its model",
                    self.name
                )),
            )),
            LoadState::Failed(e) => Err(unavailable(e)),
        }
    }

    pub fn availability(&self) -> Result<(), DispatchError> {
        self.loaded().map(|_| ())
    }

    fn unsupported(&self, req: &ParsedRequest) -> Result<(), DispatchError> {
        let what = if req.has_tools {
            Some("`tools`/`functions` (the local model cannot call tools)")
        } else if req.n > 1 {
            Some("`n` > 1")
        } else if req.logprobs {
            Some("`logprobs`")
        } else {
            None
        };
        match what {
            None => Ok(()),
            Some(w) => Err(DispatchError {
                reason: "unsupported",
                error: GatewayError::Unsupported(format!(
                    "local backend `{}` does not support {w}",
                    self.name
                )),
                fallback_ok: self.cfg.on_unsupported == Overflow::Fallback,
            }),
        }
    }

    fn admit(&self) -> Result<Slot, DispatchError> {
        let prev = self.inflight.fetch_add(1, Ordering::AcqRel);
        self.metrics.local_queue_depth.inc();
        let slot = Slot {
            inflight: self.inflight.clone(),
            metrics: self.metrics.clone(),
        };
        if prev >= self.cfg.max_queue {
            drop(slot);
            return Err(DispatchError {
                reason: "queue_full",
                error: GatewayError::QueueFull {
                    message: format!(
                        "local backend `{}` is at capacity ({} requests admitted); retry shortly",
                        self.name, self.cfg.max_queue
                    ),
                    retry_after: Duration::from_secs(self.cfg.retry_after_secs),
                },
                fallback_ok: self.cfg.on_full == Overflow::Fallback,
            });
        }
        Ok(slot)
    }

    pub async fn chat(
        &self,
        req: &ParsedRequest,
        model_id: &str,
    ) -> Result<BackendReply, DispatchError> {
        let loaded = self.loaded()?;
        self.unsupported(req)?;
        let slot = self.admit()?;
        let started = Instant::now();
        let rx = match loaded {
            Ready::Mistral(loaded) => {
                let max_len = budget(&loaded, req, self.cfg.default_max_tokens).await?;
                spawn_engine(loaded, build_request(req, max_len))
            }
            #[cfg(feature = "llamacpp")]
            Ready::Llama(e) => e.submit(req, self.cfg.default_max_tokens).await,
        };
        let mut events = Events { peeked: None, rx };
        // Wait for the first event so request errors still get a proper status.
        match events.next().await {
            Event::Invalid(m) => {
                return Err(DispatchError::fatal(
                    "invalid",
                    GatewayError::invalid("messages", m),
                ));
            }
            Event::Failed(m) => {
                return Err(DispatchError::retryable(
                    "model_error",
                    GatewayError::UpstreamFailed(format!("local model failed: {m}")),
                ));
            }
            e => events.peeked = Some(e),
        }
        let id = format!("chatcmpl-{:016x}", rand::random::<u64>());
        if req.stream {
            let usage = Arc::new(UsageCell::default());
            let events = reply::stream(events, slot, req, id, model_id.to_string(), usage.clone());
            return Ok(BackendReply {
                format: crate::api::ApiFormat::OpenAi,
                body: ReplyBody::Stream { events, usage },
                upstream_wait: started.elapsed(),
            });
        }
        let (bytes, usage) = reply::whole(&mut events, req, id, model_id, &self.name)
            .await
            .map_err(|m| {
                DispatchError::retryable(
                    "model_error",
                    GatewayError::UpstreamFailed(format!("local model failed: {m}")),
                )
            })?;
        drop(slot);
        Ok(BackendReply {
            format: crate::api::ApiFormat::OpenAi,
            body: ReplyBody::Full { bytes, usage },
            upstream_wait: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_completion_budget_fits_the_context() {
        assert_eq!(fit_context(100, 2048, 64), Ok(64));
        assert_eq!(fit_context(2000, 2048, 1024), Ok(48));
        let e = fit_context(2048, 2048, 1).unwrap_err();
        assert_eq!(
            e,
            "the prompt is 2048 tokens; the local model's context is 2048 tokens"
        );
        assert_eq!(chat_role("developer"), "system");
        assert_eq!(chat_role("tool"), "user");
    }
}
