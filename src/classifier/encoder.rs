//! all-MiniLM-L6-v2 sentence embeddings with candle-transformers' BERT.
//!
//! What the encoder sees (the truncation rule):
//! - the **last user turn** only; earlier turns and the system prompt reach the
//!   head through cheap features (turn count, lengths), not the embedding;
//! - its WordPiece tokens, cut to the first `HEAD` and the last `TAIL` tokens
//!   when longer (instructions sit at the start, the actual question often at
//!   the end), wrapped in [CLS] … [SEP];
//! - contextual embedding: mean-pooled last hidden states, L2-normalised;
//! - a *static* embedding of the whole turn (up to `STATIC_MAX` tokens):
//!   the mean of MiniLM's input word vectors, L2-normalised — it sees the
//!   part the truncation dropped, at almost no cost.

use super::wordpiece::FastWordPiece;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use tokenizers::Tokenizer;

pub const HEAD: usize = 48;
pub const TAIL: usize = 16;
pub const STATIC_MAX: usize = 1024;
pub const DIM: usize = 384;

pub struct Encoder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// The same ids for ASCII text, at a fraction of the cost.
    fast: Option<FastWordPiece>,
    /// vocab × DIM word vectors, row-major.
    words: Vec<f32>,
    cls: u32,
    sep: u32,
}

/// The token ids the contextual encoder sees: head + tail of `ids`.
pub fn head_tail(ids: &[u32], head: usize, tail: usize) -> Vec<u32> {
    if ids.len() <= head + tail {
        ids.to_vec()
    } else {
        ids[..head]
            .iter()
            .chain(&ids[ids.len() - tail..])
            .copied()
            .collect()
    }
}

fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl Encoder {
    /// Load from a directory with `model.safetensors`, `tokenizer.json`, `config.json`.
    pub fn load(dir: &Path) -> Result<Encoder, String> {
        let hint = "run `slmgate models fetch`, or select `triage: {kind: features}` in the policy";
        let read = |f: &str| {
            std::fs::read(dir.join(f))
                .map_err(|e| format!("{}: {e}; {hint}", dir.join(f).display()))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| format!("{}: {e}", dir.join("tokenizer.json").display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("tokenizer: {e}"))?;
        let vb = VarBuilder::from_buffered_safetensors(
            read("model.safetensors")?,
            DType::F32,
            &Device::Cpu,
        )
        .map_err(|e| format!("{}: {e}", dir.join("model.safetensors").display()))?;
        let words = [
            "embeddings.word_embeddings.weight",
            "bert.embeddings.word_embeddings.weight",
        ]
        .iter()
        .find_map(|k| vb.get((config.vocab_size, config.hidden_size), k).ok())
        .ok_or("model.safetensors has no word embeddings")?;
        let words = words
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        let model = BertModel::load(vb, &config).map_err(|e| format!("loading MiniLM: {e}"))?;
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or(format!("tokenizer lacks {t}"))
        };
        Ok(Encoder {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            fast: FastWordPiece::new(&tokenizer),
            model,
            tokenizer,
            words,
        })
    }

    /// WordPiece ids of `text`, without [CLS]/[SEP].
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        match self.fast.as_ref().and_then(|f| f.encode(text)) {
            Some(ids) => ids,
            None => self.tokenize_full(text),
        }
    }

    /// The same through the full `tokenizers` pipeline (any text).
    pub fn tokenize_full(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// Whether ASCII text takes the fast tokenizer.
    pub fn has_fast_tokenizer(&self) -> bool {
        self.fast.is_some()
    }

    /// Contextual embedding of already-selected ids (without [CLS]/[SEP]).
    pub fn contextual(&self, ids: &[u32]) -> Result<Vec<f32>, String> {
        let mut input = Vec::with_capacity(ids.len() + 2);
        input.push(self.cls);
        input.extend_from_slice(ids);
        input.push(self.sep);
        let n = input.len();
        let run = || -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::from_vec(input.clone(), (1, n), &Device::Cpu)?;
            let types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &types, None)?; // (1, n, DIM)
            (hidden.sum(1)? / n as f64)?.squeeze(0)?.to_vec1::<f32>()
        };
        let mut v = run().map_err(|e| e.to_string())?;
        l2_normalise(&mut v);
        Ok(v)
    }

    /// Mean of input word vectors over up to STATIC_MAX ids.
    pub fn static_mean(&self, ids: &[u32]) -> Vec<f32> {
        let mut v = vec![0f32; DIM];
        let ids = &ids[..ids.len().min(STATIC_MAX)];
        for &id in ids {
            let row = id as usize * DIM;
            if let Some(w) = self.words.get(row..row + DIM) {
                v.iter_mut().zip(w).for_each(|(a, b)| *a += b);
            }
        }
        l2_normalise(&mut v);
        v
    }

    /// Static embedding of one user turn, with its token ids (for `contextual_of`).
    pub fn static_embed(&self, text: &str) -> (Vec<f32>, Vec<u32>) {
        let ids = self.tokenize(text);
        (self.static_mean(&ids), ids)
    }

    /// Contextual embedding of a turn's ids under the truncation rule.
    pub fn contextual_of(&self, ids: &[u32]) -> Result<Vec<f32>, String> {
        self.contextual(&head_tail(ids, HEAD, TAIL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_tail_keeps_both_ends() {
        let ids: Vec<u32> = (0..100).collect();
        let t = head_tail(&ids, 3, 2);
        assert_eq!(t, vec![0, 1, 2, 98, 99]);
        assert_eq!(head_tail(&ids[..4], 3, 2), vec![0, 1, 2, 3]);
    }
}
