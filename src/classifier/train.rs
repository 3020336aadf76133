//! `slmgate train`: fit the head on labelled prompts, reproducibly.
//!
//! Logistic regression for `P(hard)` and softmax regression for the category
//! on standardised [embedding, features], mini-batch Adam with a seeded
//! shuffle, single-threaded f32 arithmetic in a fixed order. The L2 strength
//! is chosen by 5-fold cross-validation *on the training file* (never dev).
//! Inputs are rounded to 1e-4 first (see `head::quantise`), so the same data
//! and seed give the same weights bit-for-bit.

use super::head::{sigmoid, HeadFile};
pub use super::train_config::{Balance, TrainConfig, EPOCHS, LEGACY_FEATURES};
use crate::api::openai::ChatMessage;
use crate::config::CATEGORIES;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::Value;
use std::path::Path;

const BATCH: usize = 64;
const LR: f32 = 0.01;
const L2_GRID: &[f32] = &[1e-4, 1e-3, 1e-2, 3e-2];
/// L2 of the category softmax (what 5-fold CV picked for the head before LOSO).
const CATEGORY_L2: f32 = 1e-2;

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
/// `sw`: per-example weights (mean 1); `l2`: per-dimension L2 strength;
/// `off`: per-example logit offsets (k = 1 only). Returns weights as
/// k × (d + 1), bias last.
fn fit_linear(xs: &[Vec<f32>], ys: &[usize], k: usize, fit: &Fitting, seed: u64) -> Vec<Vec<f32>> {
    let d = xs.first().map_or(0, Vec::len);
    let mut w = vec![vec![0f32; d + 1]; k];
    let mut opt: Vec<Adam> = (0..k).map(|_| Adam::new(d + 1)).collect();
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..fit.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(BATCH) {
            let mut g = vec![vec![0f32; d + 1]; k];
            for &i in batch {
                let x = &xs[i];
                let sw = fit.weights.get(i).copied().unwrap_or(1.0);
                let z: Vec<f32> = w
                    .iter()
                    .map(|wk| wk[..d].iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + wk[d])
                    .collect();
                // Residuals: p - y, weighted.
                let r: Vec<f32> = if k == 1 {
                    let off = fit.offsets.get(i).copied().unwrap_or(0.0);
                    vec![sw * (sigmoid(z[0] + off) - ys[i] as f32)]
                } else {
                    let mx = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = z.iter().map(|v| (v - mx).exp()).collect();
                    let s: f32 = e.iter().sum();
                    e.iter()
                        .enumerate()
                        .map(|(j, v)| sw * (v / s - (j == ys[i]) as u8 as f32))
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
                    gk[j] = gk[j] / n + fit.l2.get(j).copied().unwrap_or(0.0) * wk[j];
                }
                gk[d] /= n;
                ok.step(wk, gk);
            }
        }
    }
    w
}

/// What one call of `fit_linear` needs beyond the data.
struct Fitting {
    epochs: usize,
    weights: Vec<f32>,
    l2: Vec<f32>,
    offsets: Vec<f32>,
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

/// Per-example weights (mean 1) for `balance`.
pub fn balance_weights(hard: &[bool], sources: &[&str], balance: Balance) -> Vec<f32> {
    let n = hard.len();
    let mut w = vec![1f64; n];
    if balance == Balance::Source {
        let mut groups: std::collections::HashMap<(&str, bool), usize> = Default::default();
        for (s, h) in sources.iter().zip(hard) {
            *groups.entry((s, *h)).or_default() += 1;
        }
        for (i, (s, h)) in sources.iter().zip(hard).enumerate() {
            w[i] = 1.0 / groups[&(*s, *h)] as f64;
        }
    }
    if balance != Balance::None {
        for label in [false, true] {
            let total: f64 = (0..n).filter(|&i| hard[i] == label).map(|i| w[i]).sum();
            for i in (0..n).filter(|&i| hard[i] == label) {
                w[i] /= 2.0 * total.max(1e-12);
            }
        }
    }
    let mean = w.iter().sum::<f64>() / n.max(1) as f64;
    w.iter().map(|v| (v / mean.max(1e-12)) as f32).collect()
}

/// Fit one head with the old defaults (L2 by 5-fold CV, unweighted, no
/// prior): the success head (`slmgate calibrate`) and tests.
pub fn fit(xs: &[Vec<f32>], hard: &[bool], cats: &[usize], seed: u64, inputs: &[&str]) -> HeadFile {
    let (mean, std) = standardiser(xs);
    let zs = standardise_all(xs, &mean, &std);
    let ys: Vec<usize> = hard.iter().map(|&h| h as usize).collect();
    let d = mean.len();
    let plain = |l2: f32, idx: &[usize]| Fitting {
        epochs: EPOCHS,
        weights: vec![1.0; idx.len()],
        l2: vec![l2; d],
        offsets: Vec::new(),
    };
    // 5-fold CV on the training data picks the L2 strength.
    let folds = 5;
    let mut best = (f64::NEG_INFINITY, L2_GRID[0]);
    for &l2 in L2_GRID {
        let mut aucs = Vec::new();
        for f in 0..folds {
            let (tr, te): (Vec<usize>, Vec<usize>) = (0..zs.len()).partition(|i| i % folds != f);
            let xt: Vec<Vec<f32>> = tr.iter().map(|&i| zs[i].clone()).collect();
            let yt: Vec<usize> = tr.iter().map(|&i| ys[i]).collect();
            let w = &fit_linear(&xt, &yt, 1, &plain(l2, &tr), seed)[0];
            let s: Vec<f64> = te.iter().map(|&i| dot1(w, &zs[i]) as f64).collect();
            let h: Vec<bool> = te.iter().map(|&i| hard[i]).collect();
            aucs.push(auc(&s, &h));
        }
        let m = aucs.iter().sum::<f64>() / folds as f64;
        tracing::info!(l2, cv_auc = m, "cross-validation");
        if m > best.0 {
            best = (m, l2);
        }
    }
    let all: Vec<usize> = (0..zs.len()).collect();
    let fitting = plain(best.1, &all);
    finish(
        xs.len(),
        mean,
        std,
        &zs,
        &ys,
        cats,
        &fitting,
        best.1,
        None,
        seed,
        inputs,
        true,
    )
}

/// Fit one head with a given L2, unweighted, no prior (no inner CV).
pub fn fit_l2(
    xs: &[Vec<f32>],
    hard: &[bool],
    cats: &[usize],
    seed: u64,
    inputs: &[&str],
    l2: f32,
) -> HeadFile {
    let (mean, std) = standardiser(xs);
    let zs = standardise_all(xs, &mean, &std);
    let ys: Vec<usize> = hard.iter().map(|&h| h as usize).collect();
    let fitting = Fitting {
        epochs: EPOCHS,
        weights: Vec::new(),
        l2: vec![l2; mean.len()],
        offsets: Vec::new(),
    };
    finish(
        xs.len(),
        mean,
        std,
        &zs,
        &ys,
        cats,
        &fitting,
        l2,
        None,
        seed,
        inputs,
        true,
    )
}

/// The L2 grid the heads are selected over.
pub fn l2_grid() -> &'static [f32] {
    L2_GRID
}

fn dot1(w: &[f32], z: &[f32]) -> f32 {
    let d = w.len() - 1;
    w[..d].iter().zip(z).map(|(a, b)| a * b).sum::<f32>() + w[d]
}

fn standardise_all(xs: &[Vec<f32>], mean: &[f32], std: &[f32]) -> Vec<Vec<f32>> {
    xs.iter()
        .map(|x| {
            x.iter()
                .zip(mean.iter().zip(std))
                .map(|(v, (m, s))| (v - m) / s)
                .collect()
        })
        .collect()
}

/// Fit one triage head with `cfg`. `sources` feeds source balancing;
/// `categories`: also fit the category softmax (not needed to score folds).
#[allow(clippy::too_many_arguments)]
pub fn fit_with(
    xs: &[Vec<f32>],
    hard: &[bool],
    cats: &[usize],
    sources: &[&str],
    cfg: &TrainConfig,
    seed: u64,
    inputs: &[&str],
    categories: bool,
) -> HeadFile {
    let (mut mean, mut std) = standardiser(xs);
    let d = mean.len();
    let n_feat = if cfg.legacy {
        LEGACY_FEATURES
    } else {
        super::head::FEATURES.len()
    }
    .min(d);
    let offset = (cfg.prior && !cfg.legacy && n_feat == super::head::FEATURES.len())
        .then_some(d - n_feat + super::head::PRIOR_FEATURE);
    if let Some(k) = offset {
        // The prior enters as is, never as a learned input.
        (mean[k], std[k]) = (0.0, f32::INFINITY);
    }
    let zs = standardise_all(xs, &mean, &std);
    if let Some(k) = offset {
        std[k] = 1.0;
    }
    let ys: Vec<usize> = hard.iter().map(|&h| h as usize).collect();
    let l2: Vec<f32> = (0..d)
        .map(|j| if j < d - n_feat { cfg.emb_l2 } else { cfg.l2 })
        .collect();
    let fitting = Fitting {
        epochs: cfg.epochs,
        weights: balance_weights(hard, sources, cfg.balance),
        l2,
        offsets: offset.map_or_else(Vec::new, |k| {
            xs.iter().map(|x| x[k] * cfg.prior_scale).collect()
        }),
    };
    let mut head = finish(
        xs.len(),
        mean,
        std,
        &zs,
        &ys,
        cats,
        &fitting,
        cfg.l2,
        offset,
        seed,
        inputs,
        categories,
    );
    head.offset_scale = cfg.prior_scale;
    head
}

#[allow(clippy::too_many_arguments)]
fn finish(
    n: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    zs: &[Vec<f32>],
    ys: &[usize],
    cats: &[usize],
    fitting: &Fitting,
    l2: f32,
    offset: Option<usize>,
    seed: u64,
    inputs: &[&str],
    categories: bool,
) -> HeadFile {
    let mut hw = fit_linear(zs, ys, 1, fitting, seed).remove(0);
    let hard_b = hw.pop().unwrap_or(0.0);
    let (cat_w, cat_b): (Vec<Vec<f32>>, Vec<f32>) = if categories {
        // The category softmax keeps its own, light L2: routing policies read
        // the category, and LOSO selects only the P(hard) choices.
        let plain = Fitting {
            epochs: fitting.epochs,
            weights: Vec::new(),
            l2: vec![CATEGORY_L2; fitting.l2.len()],
            offsets: Vec::new(),
        };
        fit_linear(zs, cats, CATEGORIES.len(), &plain, seed)
            .into_iter()
            .map(|mut w| {
                let b = w.pop().unwrap_or(0.0);
                (w, b)
            })
            .unzip()
    } else {
        (Vec::new(), Vec::new())
    };
    HeadFile {
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        l2,
        epochs: fitting.epochs,
        n_train: n,
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
        offset,
        offset_scale: 1.0,
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

    #[test]
    fn balance_weights_equalise_labels_and_sources() {
        let hard = [true, true, true, false];
        let src = ["a", "a", "b", "c"];
        let w = balance_weights(&hard, &src, Balance::Class);
        let total =
            |label: bool| -> f32 { (0..4).filter(|&i| hard[i] == label).map(|i| w[i]).sum() };
        assert!((total(true) - total(false)).abs() < 1e-5, "{w:?}");
        let w = balance_weights(&hard, &src, Balance::Source);
        assert!(
            (w[0] - w[1]).abs() < 1e-6 && (w[0] * 2.0 - w[2]).abs() < 1e-5,
            "{w:?}"
        );
        assert!((w.iter().sum::<f32>() - 4.0).abs() < 1e-4, "mean 1");
        assert_eq!(balance_weights(&hard, &src, Balance::None), vec![1.0; 4]);
    }

    #[test]
    fn the_prior_enters_as_an_offset_and_is_not_learned() {
        use crate::classifier::head::{FEATURES, PRIOR_FEATURE};
        let d = FEATURES.len();
        // One informative feature; the prior column pushes everything up by 2.
        let xs: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                let mut x = vec![0f32; d];
                x[0] = (i % 2) as f32;
                x[PRIOR_FEATURE] = 2.0;
                x
            })
            .collect();
        let hard: Vec<bool> = (0..200).map(|i| i % 2 == 1).collect();
        let src = vec!["s"; 200];
        // Enough steps for the intercept to travel to -3 (the scaled prior).
        let cfg = TrainConfig {
            epochs: 400,
            l2: 1e-3,
            ..TrainConfig::default()
        };
        let h = fit_with(&xs, &hard, &[0; 200], &src, &cfg, 1, &["features"], false);
        assert_eq!(h.offset, Some(PRIOR_FEATURE));
        assert_eq!(h.hard_w[PRIOR_FEATURE], 0.0);
        // The intercept learned to cancel the offset: the fit is still calibrated.
        let (p0, _) = h.predict(&xs[0]);
        let (p1, _) = h.predict(&xs[1]);
        assert!(p0 < 0.5 && p1 > 0.5, "{p0} {p1}");
        let mut shifted = xs[0].clone();
        shifted[PRIOR_FEATURE] = 8.0;
        assert!(h.predict(&shifted).0 > p0, "a larger prior raises P(hard)");
    }
}
