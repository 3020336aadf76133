//! The local backend: a quantized GGUF model served in-process by mistral.rs.
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

use super::stop::{cut_at_stop, StopFilter};
use super::{sse, BackendReply, DispatchError, ReplyBody, UsageCell};
use crate::api::openai::{
    unix_now, AssistantMessage, ChatChunk, ChatCompletion, ChatMessage, Choice, ChunkChoice, Delta,
    ParsedRequest, UsageBody,
};
use crate::config::{LocalConfig, Overflow};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::cost::Usage;
use bytes::Bytes;
use futures::StreamExt;
use mistralrs::{
    GgufModelBuilder, Model, RequestBuilder, Response, SamplingParams, StopTokens, TextMessageRole,
    TextMessages, TokenSource,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[derive(Clone)]
enum LoadState {
    Loading,
    Ready(Arc<Loaded>),
    Failed(String),
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

/// Resolve a policy's GGUF path against the models dir.
pub fn resolve_gguf(gguf: &str, models_dir: &Path) -> PathBuf {
    let p = Path::new(gguf);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        models_dir.join(p)
    }
}

/// Cheap sanity check before the (slow) load: present, a file, GGUF magic.
pub fn check_gguf(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let hint = "run `slmgate models fetch` (or point the policy's `gguf` at an existing file)";
    let mut f = std::fs::File::open(path).map_err(|e| {
        format!(
            "GGUF file {} cannot be opened ({e}); {hint}",
            path.display()
        )
    })?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|_| format!("GGUF file {} is truncated; {hint}", path.display()))?;
    if &magic != b"GGUF" {
        return Err(format!(
            "{} is not a GGUF file (bad magic); {hint}",
            path.display()
        ));
    }
    Ok(())
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

/// What the engine said, forwarded from the engine-draining task.
enum Event {
    Delta(String),
    Finish { reason: String, usage: Usage },
    Invalid(String),
    Failed(String),
}

/// The engine's events for one request, with one event of look-ahead.
struct Events {
    peeked: Option<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    async fn next(&mut self) -> Event {
        match self.peeked.take() {
            Some(e) => e,
            None => self
                .rx
                .recv()
                .await
                .unwrap_or(Event::Failed("engine closed the stream".into())),
        }
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
        let (max_batch, prefix_cache) = (cfg.max_batch, cfg.prefix_cache);
        let (bname, shown) = (name.to_string(), path.display().to_string());
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
            let state = match tokio::spawn(async move { builder.build().await }).await {
                Ok(Ok(model)) => {
                    let ctx = model.max_sequence_length().ok().flatten();
                    warm_up(&model).await;
                    tracing::info!(backend = %bname, file = %shown, ctx, secs = t0.elapsed().as_secs_f64(), "local model loaded");
                    LoadState::Ready(Arc::new(Loaded { model, ctx }))
                }
                Ok(Err(e)) => LoadState::Failed(format!("loading {shown} failed: {e}")),
                Err(e) => LoadState::Failed(format!("loading {shown} crashed: {e}")),
            };
            if let LoadState::Failed(e) = &state {
                tracing::error!(backend = %bname, error = %e, "local model failed to load");
            }
            let _ = tx.send(state);
        });
        Ok(Self {
            name: name.to_string(),
            path,
            cfg: cfg.clone(),
            state: rx,
            inflight: Arc::new(AtomicUsize::new(0)),
            metrics,
        })
    }

    pub fn ready(&self) -> Result<(), String> {
        match &*self.state.borrow() {
            LoadState::Ready(_) => Ok(()),
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

    fn loaded(&self) -> Result<Arc<Loaded>, DispatchError> {
        match &*self.state.borrow() {
            LoadState::Ready(l) => Ok(l.clone()),
            LoadState::Loading => Err(DispatchError::retryable(
                "loading",
                GatewayError::BackendUnavailable(format!(
                    "local backend `{}` is still loading its model",
                    self.name
                )),
            )),
            LoadState::Failed(e) => Err(DispatchError::retryable(
                "unavailable",
                GatewayError::BackendUnavailable(format!(
                    "local backend `{}` is unavailable: {e}",
                    self.name
                )),
            )),
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
        let max_len = budget(&loaded, req, self.cfg.default_max_tokens).await?;
        let request = build_request(req, max_len);
        let mut events = Events {
            peeked: None,
            rx: spawn_engine(loaded, request),
        };
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
            let events = sse_stream(events, slot, req, id, model_id.to_string(), usage.clone());
            return Ok(BackendReply {
                format: crate::api::ApiFormat::OpenAi,
                body: ReplyBody::Stream { events, usage },
                upstream_wait: started.elapsed(),
            });
        }
        let (text, reason, usage) = collect(&mut events, &req.stop).await.map_err(|m| {
            DispatchError::retryable(
                "model_error",
                GatewayError::UpstreamFailed(format!("local model failed: {m}")),
            )
        })?;
        drop(slot);
        let body = ChatCompletion {
            id,
            object: "chat.completion",
            created: unix_now(),
            model: model_id.to_string(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                },
                finish_reason: reason,
                logprobs: None,
            }],
            usage: UsageBody::new(usage.prompt_tokens, usage.completion_tokens),
            system_fingerprint: Some(format!("slmgate-local-{}", self.name)),
        };
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| DispatchError::fatal("internal", GatewayError::Internal(e.to_string())))?;
        Ok(BackendReply {
            format: crate::api::ApiFormat::OpenAi,
            body: ReplyBody::Full {
                bytes: Bytes::from(bytes),
                usage,
            },
            upstream_wait: started.elapsed(),
        })
    }
}

/// One tiny generation at load: it exercises the kernels once and leaves the
/// chat template's fixed prefix (its default system prompt) in mistral.rs's
/// prefix cache, so the first real request only prefills its own tokens.
async fn warm_up(model: &Model) {
    let req = RequestBuilder::new()
        .add_message(TextMessageRole::User, "hi")
        .set_sampling(SamplingParams {
            max_len: Some(1),
            ..SamplingParams::deterministic()
        });
    if let Ok(mut s) = model.stream_chat_request(req).await {
        while let Some(r) = s.next().await {
            if let Response::Chunk(c) = &r {
                if c.choices.iter().any(|x| x.finish_reason.is_some()) {
                    break;
                }
            } else {
                break;
            }
        }
    }
}

fn role(r: &str) -> TextMessageRole {
    match r {
        "system" | "developer" => TextMessageRole::System,
        "assistant" => TextMessageRole::Assistant,
        _ => TextMessageRole::User,
    }
}

/// Completion budget: the client's `max_tokens` (or the default), clamped so
/// prompt + completion fits the context. Prompts that might not fit are
/// counted exactly with the model's own template; others skip that round trip.
async fn budget(
    loaded: &Arc<Loaded>,
    req: &ParsedRequest,
    default: u64,
) -> Result<usize, DispatchError> {
    let want = req.max_tokens.unwrap_or(default) as usize;
    let Some(ctx) = loaded.ctx else {
        return Ok(want);
    };
    // Byte-level BPE: a token covers at least one byte; add room for template tokens.
    let bound: usize = req
        .messages
        .iter()
        .map(|m| m.text.len() + 16)
        .sum::<usize>()
        + 32;
    if bound + want <= ctx {
        return Ok(want);
    }
    let msgs = req.messages.iter().fold(TextMessages::new(), |t, m| {
        t.add_message(role(&m.role), &m.text)
    });
    let l = loaded.clone();
    // Never drop a mistral.rs tokenize future mid-flight (see module docs): own it in a task.
    let counted = tokio::spawn(async move {
        l.model
            .tokenize(either::Either::Left(msgs), None, true, true, None)
            .await
            .map(|t| t.len())
    })
    .await;
    let prompt = match counted {
        Ok(Ok(n)) => n,
        _ => bound,
    };
    if prompt >= ctx {
        return Err(DispatchError::fatal(
            "invalid",
            GatewayError::invalid(
                "messages",
                format!("the prompt is {prompt} tokens; the local model's context is {ctx} tokens"),
            ),
        ));
    }
    Ok(want.min(ctx - prompt))
}

fn build_request(req: &ParsedRequest, max_len: usize) -> RequestBuilder {
    let mut rb = RequestBuilder::new();
    for ChatMessage { role: r, text } in &req.messages {
        rb = rb.add_message(role(r), text);
    }
    rb.set_sampling(SamplingParams {
        // OpenAI's default temperature is 1; 0 means greedy decoding.
        temperature: Some(req.temperature.unwrap_or(1.0)),
        top_p: req.top_p,
        max_len: Some(max_len),
        stop_toks: (!req.stop.is_empty()).then(|| StopTokens::Seqs(req.stop.clone())),
        n_choices: 1,
        ..SamplingParams::neutral()
    })
}

/// Run the request on the engine and drain its stream into an unbounded channel.
fn spawn_engine(loaded: Arc<Loaded>, request: RequestBuilder) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = match loaded.model.stream_chat_request(request).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Event::Failed(e.to_string()));
                return;
            }
        };
        while let Some(r) = stream.next().await {
            let (ev, last) = match r {
                Response::Chunk(c) => {
                    let mut delta = String::new();
                    let mut finish = None;
                    for ch in c.choices {
                        if let Some(t) = ch.delta.content {
                            delta.push_str(&t);
                        }
                        if ch.finish_reason.is_some() {
                            finish = ch.finish_reason;
                        }
                    }
                    if !delta.is_empty() && tx.send(Event::Delta(delta)).is_err() {
                        break; // client gone: dropping the stream cancels the sequence
                    }
                    match finish {
                        Some(reason) => {
                            let usage = c.usage.map(|u| Usage {
                                prompt_tokens: u.prompt_tokens as u64,
                                completion_tokens: u.completion_tokens as u64,
                            });
                            (
                                Event::Finish {
                                    reason,
                                    usage: usage.unwrap_or_default(),
                                },
                                true,
                            )
                        }
                        None => continue,
                    }
                }
                Response::ModelError(m, _) => (Event::Failed(m), true),
                Response::ValidationError(e) => (Event::Invalid(e.to_string()), true),
                Response::InternalError(e) => (Event::Failed(e.to_string()), true),
                _ => continue,
            };
            if tx.send(ev).is_err() || last {
                break;
            }
        }
    });
    rx
}

/// OpenAI's finish_reason: `length` when the token budget ran out, else `stop`
/// (EOS, a stop string — ours or the engine's — or a cancel).
fn finish_reason(engine: &str, stopped_by_us: bool) -> String {
    if engine == "length" && !stopped_by_us {
        "length"
    } else {
        "stop"
    }
    .to_string()
}

/// Non-streamed: gather the whole answer.
async fn collect(events: &mut Events, stops: &[String]) -> Result<(String, String, Usage), String> {
    let mut text = String::new();
    loop {
        match events.next().await {
            Event::Delta(d) => text.push_str(&d),
            Event::Finish { reason, usage } => {
                let cut = cut_at_stop(&mut text, stops);
                return Ok((text, finish_reason(&reason, cut), usage));
            }
            Event::Invalid(m) | Event::Failed(m) => return Err(m),
        }
    }
}

fn chunk_json(
    id: &str,
    model: &str,
    created: u64,
    delta: Delta<'_>,
    finish: Option<&str>,
) -> Bytes {
    let c = ChatChunk {
        id,
        object: "chat.completion.chunk",
        created,
        model,
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
            logprobs: None,
        }],
        usage: None,
    };
    sse::data_event(&serde_json::to_string(&c).unwrap_or_default())
}

/// Streamed: OpenAI chunks (role, content..., finish, optional usage, [DONE]).
fn sse_stream(
    mut events: Events,
    slot: Slot,
    req: &ParsedRequest,
    id: String,
    model: String,
    cell: Arc<UsageCell>,
) -> futures::stream::BoxStream<'static, Bytes> {
    let stops = req.stop.clone();
    let wants_usage = req.include_usage;
    let s = async_stream::stream! {
        let _slot = slot;
        let created = unix_now();
        let mut filter = StopFilter::new(&stops);
        yield chunk_json(&id, &model, created, Delta { role: Some("assistant"), content: Some("") }, None);
        loop {
            match events.next().await {
                Event::Delta(d) => {
                    let out = filter.push(&d);
                    if !out.is_empty() {
                        yield chunk_json(&id, &model, created, Delta { role: None, content: Some(&out) }, None);
                    }
                }
                Event::Finish { reason, usage } => {
                    let rest = filter.finish();
                    if !rest.is_empty() {
                        yield chunk_json(&id, &model, created, Delta { role: None, content: Some(&rest) }, None);
                    }
                    cell.set(usage);
                    let fr = finish_reason(&reason, filter.stopped());
                    yield chunk_json(&id, &model, created, Delta::default(), Some(&fr));
                    if wants_usage {
                        let c = ChatChunk {
                            id: &id, object: "chat.completion.chunk", created, model: &model, choices: vec![],
                            usage: Some(UsageBody::new(usage.prompt_tokens, usage.completion_tokens)),
                        };
                        yield sse::data_event(&serde_json::to_string(&c).unwrap_or_default());
                    }
                    yield Bytes::from_static(sse::DONE);
                    break;
                }
                Event::Invalid(m) | Event::Failed(m) => {
                    tracing::warn!(error = %m, "local generation failed mid-stream");
                    yield super::http::error_event(&format!("local model failed: {m}"), "model_error");
                    break;
                }
            }
        }
    };
    s.boxed()
}
