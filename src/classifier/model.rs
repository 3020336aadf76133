//! The trained triage: MiniLM embedding + cheap features -> head.

use super::encoder::Encoder;
use super::head::{cheap_features, quantise, HeadsFile};
use super::{last_user_text, Triage, TriageResult};
use crate::api::openai::ChatMessage;
use crate::config::CATEGORIES;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The head trained by `slmgate train` from ../shared/datasets/train.jsonl.
pub const HEAD_JSON: &str = include_str!("head.json");

pub struct ModelTriage {
    encoder: Encoder,
    heads: HeadsFile,
    cats: Vec<&'static str>,
    /// Calibrated `P(local succeeds)` (`slmgate calibrate --head-out`).
    success: Option<super::success::SuccessHead>,
    /// Calls, and calls that needed the contextual encoder (for `eval`).
    pub calls: AtomicU64,
    pub full_calls: AtomicU64,
}

/// [static embedding, cheap features] and the turn's token ids.
pub fn fast_input(encoder: &Encoder, messages: &[ChatMessage]) -> (Vec<f32>, Vec<u32>) {
    let (mut x, ids) = encoder.static_embed(last_user_text(messages));
    x.extend(cheap_features(messages, ids.len()));
    quantise(&mut x);
    (x, ids)
}

/// [contextual embedding, fast input].
pub fn full_input(encoder: &Encoder, fast: &[f32], ids: &[u32]) -> Result<Vec<f32>, String> {
    let mut x = encoder.contextual_of(ids)?;
    quantise(&mut x);
    x.extend_from_slice(fast);
    Ok(x)
}

impl ModelTriage {
    pub fn load(encoder_dir: &Path) -> Result<ModelTriage, String> {
        let heads: HeadsFile =
            serde_json::from_str(HEAD_JSON).map_err(|e| format!("embedded triage head: {e}"))?;
        Self::with_heads(Encoder::load(encoder_dir)?, heads)
    }

    pub fn with_heads(encoder: Encoder, heads: HeadsFile) -> Result<ModelTriage, String> {
        let cats = heads
            .full
            .categories
            .iter()
            .map(|c| {
                CATEGORIES
                    .iter()
                    .find(|k| *k == c)
                    .copied()
                    .ok_or(format!("head has unknown category {c}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ModelTriage {
            encoder,
            heads,
            cats,
            success: None,
            calls: AtomicU64::new(0),
            full_calls: AtomicU64::new(0),
        })
    }

    /// Also predict `local_success` with this head.
    pub fn with_success(mut self, head: super::success::SuccessHead) -> Self {
        self.success = Some(head);
        self
    }

    pub fn heads(&self) -> &HeadsFile {
        &self.heads
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn run(&self, messages: &[ChatMessage], quick: bool) -> Result<TriageResult, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (fast, ids) = fast_input(&self.encoder, messages);
        let local_success = self.success.as_ref().map(|s| s.predict(&fast));
        let (mut p, mut c) = self.heads.fast.predict(&fast);
        let [lo, hi] = self.heads.band;
        if !quick && p >= lo && p <= hi {
            self.full_calls.fetch_add(1, Ordering::Relaxed);
            (p, c) = self
                .heads
                .full
                .predict(&full_input(&self.encoder, &fast, &ids)?);
        }
        Ok(TriageResult {
            score: p as f64,
            category: self.cats.get(c).copied().unwrap_or("chat"),
            local_success,
        })
    }
}

impl Triage for ModelTriage {
    fn triage(&self, messages: &[ChatMessage]) -> TriageResult {
        self.run(messages, false).unwrap_or_else(|e| {
            // Never fail a request over triage: say so, and use the transparent scorer.
            tracing::warn!(error = %e, "triage encoder failed; using features-based triage");
            super::features::FeatureTriage.triage(messages)
        })
    }
    fn triage_quick(&self, messages: &[ChatMessage]) -> TriageResult {
        // The fast head alone (never the contextual encoder): ~15-45 µs.
        self.run(messages, true)
            .unwrap_or_else(|_| super::features::FeatureTriage.triage(messages))
    }
    fn name(&self) -> &'static str {
        "minilm"
    }
    fn embed(&self, text: &str) -> Option<Vec<f32>> {
        let ids = self.encoder.tokenize(text);
        self.encoder.contextual(&ids[..ids.len().min(254)]).ok()
    }
}
