//! The local model's answer in OpenAI's shapes: a whole chat.completion, or
//! the chunk stream (role, content..., finish, optional usage, [DONE]); a
//! generation that fails mid-stream ends the stream with the error.

use super::engine::{Event, Events};
use super::Slot;
use crate::api::openai::{
    unix_now, AssistantMessage, ChatChunk, ChatCompletion, Choice, ChunkChoice, Delta,
    ParsedRequest, UsageBody,
};
use crate::api::sse;
use crate::backend::stop::{cut_at_stop, StopFilter};
use crate::backend::{EventStream, UsageCell};
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;

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

/// Non-streamed: the whole chat.completion body and its usage.
pub(super) async fn whole(
    events: &mut Events,
    req: &ParsedRequest,
    id: String,
    model_id: &str,
    backend: &str,
) -> Result<(Bytes, Usage), String> {
    let (text, reason, usage) = collect(events, &req.stop).await?;
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
        system_fingerprint: Some(format!("slmgate-local-{backend}")),
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    Ok((Bytes::from(bytes), usage))
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
pub(super) fn stream(
    mut events: Events,
    slot: Slot,
    req: &ParsedRequest,
    id: String,
    model: String,
    cell: Arc<UsageCell>,
) -> EventStream {
    let stops = req.stop.clone();
    let wants_usage = req.include_usage;
    let prompt_estimate = crate::backend::prompt_estimate(req);
    let s = async_stream::stream! {
        let _slot = slot;
        let created = unix_now();
        let mut filter = StopFilter::new(&stops);
        let mut generated = 0u64;
        yield Ok(chunk_json(&id, &model, created, Delta { role: Some("assistant"), content: Some("") }, None));
        loop {
            match events.next().await {
                Event::Delta(d) => {
                    // mistral.rs streams a token at a time: count them until
                    // it reports the usage (a client may leave before).
                    generated += 1;
                    cell.estimate(Usage { prompt_tokens: prompt_estimate, completion_tokens: generated });
                    let out = filter.push(&d);
                    if !out.is_empty() {
                        yield Ok(chunk_json(&id, &model, created, Delta { role: None, content: Some(&out) }, None));
                    }
                }
                Event::Finish { reason, usage } => {
                    let rest = filter.finish();
                    if !rest.is_empty() {
                        yield Ok(chunk_json(&id, &model, created, Delta { role: None, content: Some(&rest) }, None));
                    }
                    cell.set(usage);
                    let fr = finish_reason(&reason, filter.stopped());
                    yield Ok(chunk_json(&id, &model, created, Delta::default(), Some(&fr)));
                    if wants_usage {
                        let c = ChatChunk {
                            id: &id, object: "chat.completion.chunk", created, model: &model, choices: vec![],
                            usage: Some(UsageBody::new(usage.prompt_tokens, usage.completion_tokens)),
                        };
                        yield Ok(sse::data_event(&serde_json::to_string(&c).unwrap_or_default()));
                    }
                    yield Ok(Bytes::from_static(sse::DONE));
                    break;
                }
                Event::Invalid(m) | Event::Failed(m) => {
                    tracing::warn!(error = %m, "local generation failed mid-stream");
                    yield Err(GatewayError::UpstreamFailed(format!("local model failed: {m}")));
                    break;
                }
            }
        }
    };
    s.boxed()
}
