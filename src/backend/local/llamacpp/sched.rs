//! The llama.cpp engine thread: continuous batching over `n_seq` slots.
//!
//! Each step builds one batch: the next token of every running sequence,
//! then prompt chunks of admitted ones (up to `N_BATCH` tokens in all), and
//! decodes it. Every slot has a KV cache of its own (llama.cpp's per-sequence
//! streams, as llama-server lays them out: a token attends over its own
//! sequence only, measured +25% aggregate over one shared cache at 8 long
//! prompts), sized for a whole request (`submit` clamps prompt + completion
//! to it), so a request is admitted whenever a slot is free and a running
//! sequence never runs out of cache. A slot keeps the KV cache of its last
//! sequence: a new request whose prompt shares a prefix with it (the chat
//! template's system prompt, a conversation's earlier turns) prefills only
//! the rest.

use super::{Job, Sampling};
use crate::backend::local::engine::Event;
use crate::backend::stop::StopFilter;
use crate::policy::cost::Usage;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;

/// Tokens decoded per step (prompt chunks + one per running sequence).
const N_BATCH: usize = 512;

/// A running request.
struct Seq {
    job: Job,
    sampler: LlamaSampler,
    /// Tokens in this slot's KV cache (the prompt's, then the generated ones fed back).
    n_past: usize,
    n_prompt: usize,
    n_gen: usize,
    /// The token sampled last, to feed at the next step.
    next: Option<LlamaToken>,
    /// Bytes of a UTF-8 character split across tokens.
    pending: Vec<u8>,
    stop: StopFilter,
    /// What this step feeds it.
    fed: Fed,
    /// Index of this sequence's logits in the current batch.
    logits_at: Option<i32>,
}

impl Seq {
    /// The sequence's last event: why it ended and what it used.
    fn finished(&self, reason: &str) -> Event {
        Event::Finish {
            reason: reason.into(),
            usage: Usage {
                prompt_tokens: self.n_prompt as u64,
                completion_tokens: self.n_gen as u64,
            },
        }
    }
}

/// What one step fed a sequence.
#[derive(Clone, Copy)]
enum Fed {
    Nothing,
    /// The token sampled last.
    Token(LlamaToken),
    /// Prompt tokens up to (not including) this position.
    Prompt(usize),
}

#[derive(Default)]
struct Slot {
    /// The tokens this slot's KV cache holds (its last sequence's).
    cached: Vec<LlamaToken>,
    seq: Option<Seq>,
}

fn sampler(s: &Sampling) -> LlamaSampler {
    if s.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    // Temperature first, then nucleus, as OpenAI and mistral.rs apply them.
    let mut chain = vec![LlamaSampler::temp(s.temperature)];
    if s.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(s.top_p.max(0.0), 1));
    }
    chain.push(LlamaSampler::dist(s.seed));
    LlamaSampler::chain_simple(chain)
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    slots: Vec<Slot>,
}

impl Engine<'_> {
    fn clear(&mut self, i: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
        self.slots[i].cached.clear();
    }

    /// Start `job` on a free slot (the one whose cache shares the longest
    /// prefix with its prompt), or give it back when none is free.
    fn admit(&mut self, job: Job) -> Result<(), Job> {
        let Some(i) = (0..self.slots.len())
            .filter(|&i| self.slots[i].seq.is_none())
            .max_by_key(|&i| common_prefix(&self.slots[i].cached, &job.tokens))
        else {
            return Err(job);
        };
        // Reuse the shared prefix; at least the last prompt token is decoded again
        // (its logits start the answer).
        let keep = common_prefix(&self.slots[i].cached, &job.tokens)
            .min(job.tokens.len().saturating_sub(1));
        let trimmed = matches!(
            self.ctx
                .clear_kv_cache_seq(Some(i as u32), Some(keep as u32), None),
            Ok(true)
        );
        // With sliding-window attention the cache may have dropped the
        // sequence's earliest positions: then the prefix is not whole, start over.
        if !trimmed || (keep > 0 && self.ctx.kv_cache_seq_pos_min(i as i32) > 0) {
            self.clear(i);
        }
        let keep = self.slots[i].cached.len().min(keep);
        self.slots[i].cached.truncate(keep);
        self.slots[i].seq = Some(Seq {
            sampler: sampler(&job.sampling),
            stop: StopFilter::new(&job.stop),
            n_past: keep,
            n_prompt: job.tokens.len(),
            n_gen: 0,
            next: None,
            pending: Vec::new(),
            fed: Fed::Nothing,
            logits_at: None,
            job,
        });
        Ok(())
    }

    /// End slot `i`'s sequence; `ev` is its last word (none when the client left).
    fn finish(&mut self, i: usize, ev: Option<Event>) {
        if let Some(q) = self.slots[i].seq.take() {
            if let Some(ev) = ev {
                if !q.pending.is_empty() {
                    let rest = String::from_utf8_lossy(&q.pending).into_owned();
                    let _ = q.job.tx.send(Event::Delta(rest));
                }
                let _ = q.job.tx.send(ev);
            }
            let mut cached = q.job.tokens;
            cached.truncate(q.n_past);
            self.slots[i].cached = cached;
        }
    }

    /// One decode step over every running sequence (nothing when idle).
    fn step(&mut self, batch: &mut LlamaBatch) {
        batch.clear();
        let mut budget = N_BATCH;
        // Running sequences first: one token each.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(q) = slot.seq.as_mut() else { continue };
            q.logits_at = None;
            q.fed = Fed::Nothing;
            if let Some(t) = q.next {
                if batch.add(t, q.n_past as i32, &[i as i32], true).is_ok() {
                    q.logits_at = Some(batch.n_tokens() - 1);
                    q.fed = Fed::Token(t);
                    budget -= 1;
                }
            }
        }
        // Then prompt chunks, oldest slot first.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(q) = slot.seq.as_mut() else { continue };
            if q.next.is_some() || q.n_past >= q.n_prompt || budget == 0 {
                continue;
            }
            let end = q.n_prompt.min(q.n_past + budget);
            for p in q.n_past..end {
                let last = p + 1 == q.n_prompt;
                let _ = batch.add(q.job.tokens[p], p as i32, &[i as i32], last);
                if last {
                    q.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            q.fed = Fed::Prompt(end);
            budget -= end - q.n_past;
        }
        if batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(batch) {
            let msg = format!("llama.cpp decode failed: {e}");
            for i in 0..self.slots.len() {
                if self.slots[i].seq.is_some() {
                    self.finish(i, Some(Event::Failed(msg.clone())));
                    self.clear(i);
                }
            }
            return;
        }
        for i in 0..self.slots.len() {
            self.after_decode(i);
        }
    }

    /// Account for what slot `i` just decoded; sample where it has logits.
    fn after_decode(&mut self, i: usize) {
        let Some(q) = self.slots[i].seq.as_mut() else {
            return;
        };
        match q.fed {
            Fed::Nothing => return,
            Fed::Token(t) => {
                q.next = None;
                q.job.tokens.push(t);
                q.n_past += 1;
            }
            Fed::Prompt(end) => q.n_past = end,
        }
        let Some(at) = q.logits_at else {
            return;
        };
        let token = q.sampler.sample(&self.ctx, at);
        let vocab = self.model.vocab();
        if vocab.is_eog(token) {
            let ev = q.finished("stop");
            self.finish(i, Some(ev));
            return;
        }
        q.n_gen += 1;
        q.pending.extend(vocab.token_to_piece(token, false, None));
        let text = match std::str::from_utf8(&q.pending) {
            Ok(s) => {
                let s = s.to_string();
                q.pending.clear();
                s
            }
            Err(e) if e.error_len().is_none() && q.pending.len() - e.valid_up_to() < 4 => {
                let s = String::from_utf8_lossy(&q.pending[..e.valid_up_to()]).into_owned();
                q.pending.drain(..e.valid_up_to());
                s
            }
            Err(_) => String::from_utf8_lossy(&std::mem::take(&mut q.pending)).into_owned(),
        };
        let _ = q.stop.push(&text);
        if !text.is_empty() && q.job.tx.send(Event::Delta(text)).is_err() {
            self.finish(i, None); // the client left
            return;
        }
        let reason = if q.stop.stopped() {
            Some("stop")
        } else if q.n_gen >= q.job.max_len {
            Some("length")
        } else {
            None
        };
        match reason {
            Some(r) => {
                let ev = q.finished(r);
                self.finish(i, Some(ev));
            }
            None => q.next = Some(token),
        }
    }
}

/// The engine thread's body: build the context (`seq_ctx` tokens of KV cache
/// for each of `n_seq` slots), say so, then serve jobs until every sender is gone.
pub(super) fn run(
    backend: &'static LlamaBackend,
    model: Arc<LlamaModel>,
    seq_ctx: u32,
    n_seq: usize,
    jobs: Receiver<Job>,
    ready: Sender<Result<(), String>>,
) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(seq_ctx * n_seq as u32))
        .with_n_batch(N_BATCH as u32)
        .with_n_ubatch(N_BATCH as u32)
        .with_n_seq_max(n_seq as u32)
        .with_kv_unified(false)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("llama.cpp context: {e}")));
            return;
        }
    };
    let mut engine = Engine {
        model: &model,
        ctx,
        slots: (0..n_seq).map(|_| Slot::default()).collect(),
    };
    let mut batch = LlamaBatch::new(N_BATCH, n_seq as i32);
    let _ = ready.send(Ok(()));
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        let running = engine.slots.iter().any(|s| s.seq.is_some());
        if !running && waiting.is_empty() {
            match jobs.recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => return,
            }
        }
        loop {
            match jobs.try_recv() {
                Ok(j) => waiting.push_back(j),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if waiting.is_empty() && !running {
                        return;
                    }
                    break;
                }
            }
        }
        // Requests whose client already left are dropped unseen.
        waiting.retain(|j| !j.tx.is_closed());
        for i in 0..engine.slots.len() {
            if engine.slots[i]
                .seq
                .as_ref()
                .is_some_and(|q| q.job.tx.is_closed())
            {
                engine.finish(i, None);
            }
        }
        // First come, first served: with every slot busy, the rest wait in order.
        while let Some(job) = waiting.pop_front() {
            if let Err(job) = engine.admit(job) {
                waiting.push_front(job);
                break;
            }
        }
        engine.step(&mut batch);
    }
}
