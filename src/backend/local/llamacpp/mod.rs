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
use crate::api::openai::ParsedRequest;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// Upper bound on the KV cache (tokens, shared by all running sequences).
const MAX_CTX: u32 = 8192;

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

/// How a conversation becomes the prompt text.
enum Template {
    /// The GGUF's Jinja template (`tokenizer.chat_template`), rendered here
    /// exactly as the mistral.rs engine renders it.
    Jinja {
        env: Box<minijinja::Environment<'static>>,
        bos: String,
        eos: String,
    },
    /// llama.cpp's built-in renderer (it recognises the common templates).
    Builtin(LlamaChatTemplate),
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
    /// Tokens of KV cache: one request's prompt + completion must fit.
    pub(super) ctx: usize,
}

fn role(r: &str) -> &'static str {
    match r {
        "system" | "developer" => "system",
        "assistant" => "assistant",
        _ => "user",
    }
}

fn token_text(model: &LlamaModel, t: LlamaToken) -> String {
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
        let ctx = model.n_ctx_train().clamp(512, MAX_CTX);
        let template = match model.meta_val_str("tokenizer.chat_template") {
            Ok(src) => {
                let mut env = minijinja::Environment::new();
                env.add_function(
                    "raise_exception",
                    |m: String| -> Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            m,
                        ))
                    },
                );
                match env.add_template_owned("chat", src) {
                    Ok(()) => Template::Jinja {
                        env: Box::new(env),
                        bos: token_text(&model, model.vocab().bos()),
                        eos: token_text(&model, model.vocab().eos()),
                    },
                    Err(_) => {
                        Template::Builtin(model.chat_template(None).map_err(|e| e.to_string())?)
                    }
                }
            }
            Err(_) => Template::Builtin(model.chat_template(None).map_err(|e| e.to_string())?),
        };
        let (jobs, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let m = model.clone();
        std::thread::Builder::new()
            .name("llamacpp-engine".into())
            .spawn(move || sched::run(backend, m, ctx, max_batch, rx, ready_tx))
            .map_err(|e| e.to_string())?;
        ready_rx
            .recv()
            .map_err(|_| "the llama.cpp engine thread ended while starting".to_string())??;
        Ok(Self {
            model,
            template,
            jobs,
            ctx: ctx as usize,
        })
    }

    fn render(&self, req: &ParsedRequest) -> Result<String, String> {
        match &self.template {
            Template::Jinja { env, bos, eos } => {
                let messages: Vec<_> = req
                    .messages
                    .iter()
                    .map(|m| minijinja::context! { role => role(&m.role), content => m.text })
                    .collect();
                let t = env.get_template("chat").map_err(|e| e.to_string())?;
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => bos,
                    eos_token => eos,
                })
                .map_err(|e| format!("the model's chat template failed: {e}"))
            }
            Template::Builtin(tmpl) => {
                let chat = req
                    .messages
                    .iter()
                    .map(|m| LlamaChatMessage::new(role(&m.role).into(), m.text.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("a message cannot be passed to llama.cpp: {e}"))?;
                self.model
                    .apply_chat_template(tmpl, &chat, true)
                    .map_err(|e| format!("the model's chat template failed: {e}"))
            }
        }
    }

    /// Render and tokenize the request, clamp its budget to the context, and
    /// queue it on the engine thread. Errors come back as the first event.
    pub(super) fn submit(
        &self,
        req: &ParsedRequest,
        default_max: u64,
    ) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        let prompt = match self.render(req) {
            Ok(p) => p,
            Err(m) => {
                let _ = tx.send(Event::Invalid(m));
                return rx;
            }
        };
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        // A template that writes the BOS itself, plus llama.cpp adding one: keep one.
        if tokens.len() > 1 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
            tokens.remove(0);
        }
        if tokens.len() >= self.ctx {
            let _ = tx.send(Event::Invalid(format!(
                "the prompt is {} tokens; the local model's context is {} tokens",
                tokens.len(),
                self.ctx
            )));
            return rx;
        }
        let want = req.max_tokens.unwrap_or(default_max).max(1) as usize;
        let job = Job {
            max_len: want.min(self.ctx - tokens.len()),
            tokens,
            sampling: Sampling {
                temperature: req.temperature.unwrap_or(1.0) as f32,
                top_p: req.top_p.unwrap_or(1.0) as f32,
                seed: req.seed.map(|s| s as u32).unwrap_or_else(rand::random),
            },
            stop: req.stop.clone(),
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
