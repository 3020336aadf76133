//! The trained triage: MiniLM embedding + cheap features -> head.

use super::encoder::Encoder;
use super::head::{cheap_features, quantise, HeadFile};
use super::{last_user_text, Triage, TriageResult};
use crate::api::openai::ChatMessage;
use crate::policy::CATEGORIES;
use std::path::Path;

/// The head trained by `slmgate train` from ../shared/datasets/train.jsonl.
pub const HEAD_JSON: &str = include_str!("head.json");

pub struct ModelTriage {
    encoder: Encoder,
    head: HeadFile,
    cats: Vec<&'static str>,
}

impl ModelTriage {
    pub fn load(encoder_dir: &Path) -> Result<ModelTriage, String> {
        let head: HeadFile =
            serde_json::from_str(HEAD_JSON).map_err(|e| format!("embedded triage head: {e}"))?;
        Self::with_head(Encoder::load(encoder_dir)?, head)
    }

    pub fn with_head(encoder: Encoder, head: HeadFile) -> Result<ModelTriage, String> {
        let cats = head
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
            head,
            cats,
        })
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The head's raw input for a conversation.
    pub fn input(encoder: &Encoder, messages: &[ChatMessage]) -> Result<Vec<f32>, String> {
        let (mut x, user_tokens) = encoder.embed(last_user_text(messages))?;
        x.extend(cheap_features(messages, user_tokens));
        quantise(&mut x);
        Ok(x)
    }
}

impl Triage for ModelTriage {
    fn triage(&self, messages: &[ChatMessage]) -> TriageResult {
        match Self::input(&self.encoder, messages) {
            Ok(x) => {
                let (p, c) = self.head.predict(&x);
                TriageResult {
                    score: p as f64,
                    category: self.cats.get(c).copied().unwrap_or("chat"),
                }
            }
            Err(e) => {
                // Never fail a request over triage: say so, and use the transparent scorer.
                tracing::warn!(error = %e, "triage encoder failed; using features-based triage");
                super::features::FeatureTriage.triage(messages)
            }
        }
    }
    fn name(&self) -> &'static str {
        "minilm"
    }
}
