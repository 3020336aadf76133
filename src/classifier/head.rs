//! The trained head: standardised [MiniLM embedding, cheap features] ->
//! logistic `P(hard)` and a softmax over categories. Weights live in
//! `src/classifier/head.json` (committed, compiled in), written by `slmgate train`.

use super::features;
use crate::api::openai::ChatMessage;
use serde::{Deserialize, Serialize};

/// Names of the cheap features, in input order (after the embedding).
pub const FEATURES: &[&str] = &[
    "ln_user_tokens",
    "ln_total_chars",
    "turns",
    "has_system",
    "code",
    "math_density",
    "reasoning_words",
    "constraints",
    "ln_lines",
    "questions",
    // Task demands (`task::TASK_FEATURES`), then the task prior (an offset).
    "logic",
    "math_steps",
    "latex",
    "code_task",
    "multihop",
    "apply",
    "essay",
    "long_write",
    "constraints",
    "puzzle",
    "transform",
    "given_long",
    "short_q",
    "compare_q",
    "one_liner",
    "ln_ask",
    "chat",
    "task_prior",
];

/// Position of `task_prior` within the features.
pub const PRIOR_FEATURE: usize = 27;

/// Two heads in a cascade: `fast` sees [static embedding, features] (~15-45 µs);
/// only when its `P(hard)` falls inside `band` does `full` run, which adds the
/// contextual MiniLM embedding (~20 ms on 2 cores).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadsFile {
    pub version: u32,
    pub encoder: String,
    pub seed: u64,
    pub band: [f32; 2],
    pub fast: HeadFile,
    pub full: HeadFile,
    /// The training choices (`slmgate train` reproduces the file from them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<super::train_config::TrainConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadFile {
    /// Input blocks in order: `contextual` (384), `static` (384), `features`.
    pub inputs: Vec<String>,
    pub l2: f32,
    pub epochs: usize,
    pub n_train: usize,
    pub features: Vec<String>,
    pub categories: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub hard_w: Vec<f32>,
    pub hard_b: f32,
    /// categories × dims
    pub cat_w: Vec<Vec<f32>>,
    pub cat_b: Vec<f32>,
    /// Index of an input added to the `P(hard)` logit as is (weight 1,
    /// not learned): the hand-set task prior.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// What the offset input is multiplied by.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub offset_scale: f32,
}

fn one() -> f32 {
    1.0
}

fn is_one(v: &f32) -> bool {
    *v == 1.0
}

/// Cheap features of a conversation; `user_tokens` from the encoder's tokenizer.
pub fn cheap_features(messages: &[ChatMessage], user_tokens: usize) -> Vec<f32> {
    let f = features::features(messages);
    let text = super::last_user_text(messages);
    let task = super::task::cues(text);
    let mut v = vec![
        (1.0 + user_tokens as f32).ln(),
        (1.0 + messages.iter().map(|m| m.text.len()).sum::<usize>() as f32).ln(),
        f.turns.min(10) as f32,
        messages
            .iter()
            .any(|m| m.role == "system" || m.role == "developer") as u8 as f32,
        f.code as u8 as f32,
        f.math_density as f32,
        f.reasoning_words.min(3) as f32,
        f.constraints.min(10) as f32,
        (1.0 + text.lines().count() as f32).ln(),
        text.matches('?').count().min(5) as f32,
    ];
    v.extend(task.vector());
    v.push(task.prior());
    v
}

/// Round to a 1e-4 grid so tiny float differences between machines (thread
/// splits in the matmul) cannot change the trained weights.
pub fn quantise(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = (*x * 1e4).round() / 1e4);
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl HeadFile {
    pub fn standardise(&self, x: &[f32]) -> Vec<f32> {
        x.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }

    /// `P(hard)` and the category for a raw input vector.
    pub fn predict(&self, x: &[f32]) -> (f32, usize) {
        let z = self.standardise(x);
        let dot = |w: &[f32]| w.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>();
        let offset = self.offset.and_then(|k| x.get(k)).copied().unwrap_or(0.0) * self.offset_scale;
        let p = sigmoid(dot(&self.hard_w) + self.hard_b + offset);
        let cat = self
            .cat_w
            .iter()
            .zip(&self.cat_b)
            .map(|(w, b)| dot(w) + b)
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, s)| {
                if s > best.1 {
                    (i, s)
                } else {
                    best
                }
            })
            .0;
        (p, cat)
    }
}
