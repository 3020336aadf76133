//! `slmgate train`: fit the head on labelled prompts, reproducibly.
//!
//! Logistic regression for `P(hard)` and softmax regression for the category
//! on standardised [embedding, features], mini-batch Adam with a seeded
//! shuffle, single-threaded f32 arithmetic in a fixed order. The L2 strength
//! is chosen by 5-fold cross-validation *on the training file* (never dev).
//! Inputs are rounded to 1e-4 first (see `head::quantise`), so the same data
//! and seed give the same weights bit-for-bit.

use super::head::{sigmoid, HeadFile};
use crate::api::openai::ChatMessage;
use crate::config::CATEGORIES;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::Value;
use std::path::Path;

pub const EPOCHS: usize = 30;
const BATCH: usize = 64;
const LR: f32 = 0.01;
const L2_GRID: &[f32] = &[1e-4, 1e-3, 1e-2, 3e-2];

/// One labelled record (`prompt` or `messages`; `label` simple|hard; optional `category`).
#[derive(Debug, Clone)]
pub struct Example {
    pub messages: Vec<ChatMessage>,
    pub hard: Option<bool>,
    pub category: Option<String>,
    pub source: Option<String>,
    pub raw: Value,
}

pub fn read_jsonl(path: &Path) -> Result<Vec<Example>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        let messages = match v.get("messages").and_then(Value::as_array) {
            Some(ms) => ms
                .iter()
                .map(|m| ChatMessage {
                    role: m["role"].as_str().unwrap_or("user").to_string(),
                    text: m["content"].as_str().unwrap_or("").to_string(),
                })
                .collect(),
            None => match v.get("prompt").and_then(Value::as_str) {
                Some(p) => vec![ChatMessage {
                    role: "user".into(),
                    text: p.to_string(),
                }],
                None => {
                    return Err(format!(
                        "{}:{}: needs `prompt` or `messages`",
                        path.display(),
                        i + 1
                    ))
                }
            },
        };
        let hard = match v.get("label").and_then(Value::as_str) {
            Some("hard") => Some(true),
            Some("simple") => Some(false),
            Some(other) => {
                return Err(format!(
                    "{}:{}: label `{other}` is not simple|hard",
                    path.display(),
                    i + 1
                ))
            }
            None => None,
        };
        out.push(Example {
            messages,
            hard,
            category: v
                .get("category")
                .and_then(Value::as_str)
                .map(str::to_string),
            source: v.get("source").and_then(Value::as_str).map(str::to_string),
            raw: v,
        });
    }
    Ok(out)
}

struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }
    fn step(&mut self, w: &mut [f32], g: &[f32]) {
        self.t += 1;
        let (b1, b2) = (0.9f32, 0.999f32);
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for i in 0..w.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            w[i] -= LR * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8);
        }
    }
}

/// Softmax/logistic regression: `k` outputs (k = 1 means logistic on `y[i] in {0,1}`).
/// Returns weights as k × (d + 1), bias last.
fn fit_linear(xs: &[Vec<f32>], ys: &[usize], k: usize, l2: f32, seed: u64) -> Vec<Vec<f32>> {
    let d = xs.first().map_or(0, Vec::len);
    let mut w = vec![vec![0f32; d + 1]; k];
    let mut opt: Vec<Adam> = (0..k).map(|_| Adam::new(d + 1)).collect();
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..EPOCHS {
        order.shuffle(&mut rng);
        for batch in order.chunks(BATCH) {
            let mut g = vec![vec![0f32; d + 1]; k];
            for &i in batch {
                let x = &xs[i];
                let z: Vec<f32> = w
                    .iter()
                    .map(|wk| wk[..d].iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + wk[d])
                    .collect();
                // Residuals: p - y.
                let r: Vec<f32> = if k == 1 {
                    vec![sigmoid(z[0]) - ys[i] as f32]
                } else {
                    let mx = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = z.iter().map(|v| (v - mx).exp()).collect();
                    let s: f32 = e.iter().sum();
                    e.iter()
                        .enumerate()
                        .map(|(j, v)| v / s - (j == ys[i]) as u8 as f32)
                        .collect()
                };
                for (gk, rk) in g.iter_mut().zip(&r) {
                    gk[..d]
                        .iter_mut()
                        .zip(x)
                        .for_each(|(gv, xv)| *gv += rk * xv);
                    gk[d] += rk;
                }
            }
            let n = batch.len() as f32;
            for ((wk, gk), ok) in w.iter_mut().zip(g.iter_mut()).zip(opt.iter_mut()) {
                for j in 0..d {
                    gk[j] = gk[j] / n + l2 * wk[j];
                }
                gk[d] /= n;
                ok.step(wk, gk);
            }
        }
    }
    w
}

/// Rank-based ROC AUC (ties get half credit).
pub fn auc(scores: &[f64], hard: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0f64, 0);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += idx[i..=j].iter().filter(|&&k| hard[k]).count() as f64 * avg;
        i = j + 1;
    }
    let pos = hard.iter().filter(|&&h| h).count() as f64;
    let neg = hard.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn standardiser(xs: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let d = xs.first().map_or(0, Vec::len);
    let n = xs.len().max(1) as f64;
    let mut mean = vec![0f64; d];
    for x in xs {
        mean.iter_mut().zip(x).for_each(|(m, v)| *m += *v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; d];
    for x in xs {
        var.iter_mut()
            .zip(x.iter().zip(&mean))
            .for_each(|(s, (v, m))| *s += (*v as f64 - m).powi(2));
    }
    let std = var
        .iter()
        .map(|s| ((s / n).sqrt() as f32).max(1e-3))
        .collect();
    (mean.iter().map(|m| *m as f32).collect(), std)
}

/// Fit one head. `xs` are raw inputs (the blocks named in `inputs`) for labelled examples.
pub fn fit(xs: &[Vec<f32>], hard: &[bool], cats: &[usize], seed: u64, inputs: &[&str]) -> HeadFile {
    let (mean, std) = standardiser(xs);
    let zs: Vec<Vec<f32>> = xs
        .iter()
        .map(|x| {
            x.iter()
                .zip(mean.iter().zip(&std))
                .map(|(v, (m, s))| (v - m) / s)
                .collect()
        })
        .collect();
    let ys: Vec<usize> = hard.iter().map(|&h| h as usize).collect();
    // 5-fold CV on the training data picks the L2 strength.
    let folds = 5;
    let mut best = (f64::NEG_INFINITY, L2_GRID[0]);
    for &l2 in L2_GRID {
        let mut aucs = Vec::new();
        for f in 0..folds {
            let (tr, te): (Vec<usize>, Vec<usize>) = (0..zs.len()).partition(|i| i % folds != f);
            let xt: Vec<Vec<f32>> = tr.iter().map(|&i| zs[i].clone()).collect();
            let yt: Vec<usize> = tr.iter().map(|&i| ys[i]).collect();
            let w = &fit_linear(&xt, &yt, 1, l2, seed)[0];
            let d = w.len() - 1;
            let s: Vec<f64> = te
                .iter()
                .map(|&i| {
                    (w[..d].iter().zip(&zs[i]).map(|(a, b)| a * b).sum::<f32>() + w[d]) as f64
                })
                .collect();
            let h: Vec<bool> = te.iter().map(|&i| hard[i]).collect();
            aucs.push(auc(&s, &h));
        }
        let m = aucs.iter().sum::<f64>() / folds as f64;
        tracing::info!(l2, cv_auc = m, "cross-validation");
        if m > best.0 {
            best = (m, l2);
        }
    }
    let l2 = best.1;
    let mut hw = fit_linear(&zs, &ys, 1, l2, seed).remove(0);
    let hard_b = hw.pop().unwrap_or(0.0);
    let cw = fit_linear(&zs, cats, CATEGORIES.len(), l2, seed);
    let (cat_w, cat_b): (Vec<Vec<f32>>, Vec<f32>) = cw
        .into_iter()
        .map(|mut w| {
            let b = w.pop().unwrap_or(0.0);
            (w, b)
        })
        .unzip();
    HeadFile {
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        l2,
        epochs: EPOCHS,
        n_train: xs.len(),
        features: super::head::FEATURES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        categories: CATEGORIES.iter().map(|s| s.to_string()).collect(),
        mean,
        std,
        hard_w: hw,
        hard_b,
        cat_w,
        cat_b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_definition() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.75
        );
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), 0.5);
        assert_eq!(auc(&[0.9, 0.1], &[true, false]), 1.0);
    }

    #[test]
    fn fit_separates_a_separable_problem_reproducibly() {
        let xs: Vec<Vec<f32>> = (0..200)
            .map(|i| vec![(i % 10) as f32, ((i * 7) % 13) as f32])
            .collect();
        let hard: Vec<bool> = xs.iter().map(|x| x[0] >= 5.0).collect();
        let cats: Vec<usize> = xs.iter().map(|x| if x[0] >= 5.0 { 9 } else { 0 }).collect();
        let a = fit(&xs, &hard, &cats, 7, &["features"]);
        assert_eq!(
            a,
            fit(&xs, &hard, &cats, 7, &["features"]),
            "same seed, same weights"
        );
        let scores: Vec<f64> = xs.iter().map(|x| a.predict(x).0 as f64).collect();
        assert!(auc(&scores, &hard) > 0.99);
        assert_eq!(a.predict(&[9.0, 1.0]).1, 9);
    }
}
