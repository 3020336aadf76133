//! The second in-process engine (`engine: llamacpp`, cargo feature
//! `llamacpp`): llama.cpp through the `llama-cpp-2` crate.
//!
//! One OS thread owns the llama.cpp context and runs continuous batching
//! (`sched.rs`): every step decodes one token for each running sequence plus
//! a chunk of any new prompt, so a new request starts while others stream.
//! Requests are rendered with the GGUF's own chat template and tokenized on
//! the caller's task, then handed to that thread; it answers with the same
//! [`Event`]s as the mistral.rs engine, so the queue, stop strings, SSE and
//! usage code are shared.

mod sched;

use super::engine::Event;
use super::{chat_role as role, fit_context};
use crate::api::openai::{ChatMessage, ParsedRequest};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// KV cache per slot: the model's trained context up to `MAX_CTX`, split
/// between the `max_batch` slots as llama-server splits `-c` between its
/// `--parallel` slots, but never below `MIN_SEQ_CTX` (then more in all).
const MAX_CTX: u32 = 8192;
const MIN_SEQ_CTX: u32 = 2048;

/// llama.cpp's process-wide initialisation happens once.
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// How a conversation becomes the prompt text: the GGUF's Jinja template
/// (`tokenizer.chat_template`) set up as mistral.rs sets it up (Python string
/// methods, `trim_blocks`/`lstrip_blocks`, the same rewrites), else — or when
/// it fails to render — llama.cpp's built-in renderer, which recognises the
/// common templates.
struct Template {
    jinja: Option<Jinja>,
    builtin: Option<LlamaChatTemplate>,
}

struct Jinja {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

impl Template {
    fn load(model: &LlamaModel) -> Result<Self, String> {
        let jinja = model
            .meta_val_str("tokenizer.chat_template")
            .ok()
            .and_then(|src| {
                let mut env = minijinja::Environment::new();
                env.set_unknown_method_callback(
                    minijinja_contrib::pycompat::unknown_method_callback,
                );
                env.set_lstrip_blocks(true);
                env.set_trim_blocks(true);
                env.add_function(
                    "raise_exception",
                    |m: String| -> Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            m,
                        ))
                    },
                );
                env.add_template_owned("chat", jinja_rewrites(&src)).ok()?;
                Some(Jinja {
                    env,
                    bos: token_text(model, model.vocab().bos()),
                    eos: token_text(model, model.vocab().eos()),
                })
            });
        let builtin = model.chat_template(None).ok();
        if jinja.is_none() && builtin.is_none() {
            return Err("the GGUF has no usable chat template".into());
        }
        Ok(Self { jinja, builtin })
    }
}

/// mistral.rs's rewrites of Python-only syntax: `[::-1]` and descending ranges.
fn jinja_rewrites(src: &str) -> String {
    let t = src.replace("[::-1]", "|reverse");
    match fancy_regex::Regex::new(r"range\((?P<expr>[^,]+),\s*-1,\s*-1\)") {
        Ok(re) => re
            .replace_all(&t, |c: &fancy_regex::Captures| {
                format!("range({})|reverse", &c["expr"])
            })
            .into_owned(),
        Err(_) => t,
    }
}

/// Sampling for one sequence.
pub(super) struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u32,
}

/// One request, tokenized, for the engine thread.
pub(super) struct Job {
    pub tokens: Vec<LlamaToken>,
    pub max_len: usize,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    pub tx: mpsc::UnboundedSender<Event>,
}

pub(super) struct LlamaEngine {
    model: Arc<LlamaModel>,
    template: Template,
    jobs: std::sync::mpsc::Sender<Job>,
    /// Cleared when the engine thread ends (it only ends by panicking).
    alive: Arc<AtomicBool>,
    /// Tokens of KV cache per slot: one request's prompt + completion must fit.
    pub(super) ctx: usize,
}

fn token_text(model: &LlamaModel, t: LlamaToken) -> String {
    if t.0 < 0 {
        return String::new(); // the vocab has no such token
    }
    model
        .vocab()
        .text(t)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl LlamaEngine {
    /// Load the model and start the engine thread (blocking: call off the runtime).
    pub(super) fn load(path: &Path, max_batch: usize) -> Result<Self, String> {
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| e.to_string())?;
        let model = Arc::new(model);
        let train = model.n_ctx_train().clamp(512, MAX_CTX);
        let ctx = (train / max_batch.max(1) as u32).max(MIN_SEQ_CTX.min(train));
        let template = Template::load(&model)?;
        let (jobs, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let m = model.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let guard = Alive(alive.clone());
        std::thread::Builder::new()
            .name("llamacpp-engine".into())
            .spawn(move || {
                let _guard = guard;
                sched::run(backend, m, ctx, max_batch, rx, ready_tx)
            })
            .map_err(|e| e.to_string())?;
        ready_rx
            .recv()
            .map_err(|_| "the llama.cpp engine thread ended while starting".to_string())??;
        Ok(Self {
            model,
            template,
            jobs,
            alive,
            ctx: ctx as usize,
        })
    }

    /// Whether the engine thread still runs.
    pub(super) fn alive(&self) -> Result<(), String> {
        if self.alive.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err("the llama.cpp engine thread stopped (see the log)".into())
        }
    }

    fn render(&self, messages: &[ChatMessage]) -> Result<String, String> {
        let jinja = self.template.jinja.as_ref().map(|j| {
            let messages: Vec<_> = messages
                .iter()
                .map(|m| minijinja::context! { role => role(&m.role), content => m.text.as_str() })
                .collect();
            j.env.get_template("chat").and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => j.bos.as_str(),
                    eos_token => j.eos.as_str(),
                })
            })
        });
        let jinja_err = match jinja {
            Some(Ok(p)) => return Ok(p),
            Some(Err(e)) => Some(e.to_string()),
            None => None,
        };
        let Some(tmpl) = &self.template.builtin else {
            return Err(format!(
                "the model's chat template failed: {}",
                jinja_err.unwrap_or_default()
            ));
        };
        let chat = messages
            .iter()
            .map(|m| LlamaChatMessage::new(role(&m.role).into(), m.text.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a message cannot be passed to llama.cpp: {e}"))?;
        self.model
            .apply_chat_template(tmpl, &chat, true)
            .map_err(|e| format!("the model's chat template failed: {e}"))
    }

    /// The prompt's tokens, or why the request cannot run.
    fn tokens(&self, messages: &[ChatMessage]) -> Result<Vec<LlamaToken>, String> {
        let prompt = self.render(messages)?;
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        // A template that writes the BOS itself, plus llama.cpp adding one: keep one.
        if tokens.len() > 1 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
            tokens.remove(0);
        }
        if tokens.is_empty() {
            return Err("the prompt is empty after the chat template".into());
        }
        Ok(tokens)
    }

    /// Render and tokenize the request (off the async workers: a long prompt
    /// takes a while), clamp its budget to the context, and queue it on the
    /// engine thread. Errors come back as the first event.
    pub(super) async fn submit(
        self: Arc<Self>,
        req: &ParsedRequest,
        default_max: u64,
    ) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        let want = req.max_tokens.unwrap_or(default_max).max(1) as usize;
        let sampling = Sampling {
            temperature: req.temperature.unwrap_or(1.0) as f32,
            top_p: req.top_p.unwrap_or(1.0) as f32,
            // llama.cpp reads u32::MAX as "pick a random seed".
            seed: req
                .seed
                .map(|s| (s as u32).min(u32::MAX - 1))
                .unwrap_or_else(rand::random),
        };
        let stop = req.stop.clone();
        let messages = req.messages.clone();
        let this = self.clone();
        let tokens = tokio::task::spawn_blocking(move || this.tokens(&messages)).await;
        let tokens = match tokens {
            Ok(Ok(t)) => t,
            Ok(Err(m)) => {
                let _ = tx.send(Event::Invalid(m));
                return rx;
            }
            Err(e) => {
                let _ = tx.send(Event::Failed(format!("tokenizing failed: {e}")));
                return rx;
            }
        };
        let max_len = match fit_context(tokens.len(), self.ctx, want) {
            Ok(n) => n,
            Err(m) => {
                let _ = tx.send(Event::Invalid(m));
                return rx;
            }
        };
        let job = Job {
            max_len,
            tokens,
            sampling,
            stop,
            tx,
        };
        if let Err(e) = self.jobs.send(job) {
            let _ =
                e.0.tx
                    .send(Event::Failed("the llama.cpp engine has stopped".into()));
        }
        rx
    }
}

/// Clears the engine's `alive` flag when its thread ends, panic or not.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
