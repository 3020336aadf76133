//! Talking to mistral.rs: the request we build, the context budget, and the
//! task that drains the engine's stream into our own channel (so a slow
//! client never stalls the engine, and dropping the receiver cancels the
//! sequence).

use super::Loaded;
use crate::api::openai::{ChatMessage, ParsedRequest};
use crate::backend::DispatchError;
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use mistralrs::{
    Model, RequestBuilder, Response, SamplingParams, StopTokens, TextMessageRole, TextMessages,
};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the engine said, forwarded from the engine-draining task.
pub(super) enum Event {
    Delta(String),
    Finish { reason: String, usage: Usage },
    Invalid(String),
    Failed(String),
}

/// The engine's events for one request, with one event of look-ahead.
pub(super) struct Events {
    pub(super) peeked: Option<Event>,
    pub(super) rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    pub(super) async fn next(&mut self) -> Event {
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

/// One tiny generation at load: it exercises the kernels once and leaves the
/// chat template's fixed prefix (its default system prompt) in mistral.rs's
/// prefix cache, so the first real request only prefills its own tokens.
pub(super) async fn warm_up(model: &Model) {
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
    match super::chat_role(r) {
        "system" => TextMessageRole::System,
        "assistant" => TextMessageRole::Assistant,
        _ => TextMessageRole::User,
    }
}

/// Completion budget: the client's `max_tokens` (or the default), clamped so
/// prompt + completion fits the context. Prompts that might not fit are
/// counted exactly with the model's own template; others skip that round trip.
pub(super) async fn budget(
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
    super::fit_context(prompt, ctx, want)
        .map_err(|m| DispatchError::fatal("invalid", GatewayError::invalid("messages", m)))
}

pub(super) fn build_request(req: &ParsedRequest, max_len: usize) -> RequestBuilder {
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
pub(super) fn spawn_engine(
    loaded: Arc<Loaded>,
    request: RequestBuilder,
) -> mpsc::UnboundedReceiver<Event> {
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
