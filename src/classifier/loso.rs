//! Leave-one-source-out (LOSO) evaluation: train on every source but one,
//! score the one left out, for every source; judge on prompts from sources the
//! head never saw. The headline triage metric (`slmgate eval --loso`).
//!
//! - **pooled LOSO AUC**: ROC AUC of all held-out scores together, so a score
//!   must also mean the same across sources, not only rank within one.
//! - **per source**: the AUC when the held-out source has both labels;
//!   otherwise (most sources here are all `hard` or all `simple`) its mean
//!   score and the share on the right side of 0.5.
//! - **baselines**, both fixed rules without training (so their LOSO score is
//!   their plain score): prompt length as `P(hard)` = 0.5 at 60 characters
//!   (the dataset README's "longer than 60 characters ⇒ hard"), and the
//!   hand-set features scorer (`features.rs`).

use super::train::auc;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How one held-out source scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SourceScore {
    /// Both labels present: ROC AUC.
    Auc(f64),
    /// One label only: the mean score and the share scored on its side of 0.5.
    Single { hard: bool, mean: f64, right: f64 },
}

impl SourceScore {
    pub fn of(scores: &[f64], hard: &[bool]) -> SourceScore {
        let n = hard.len().max(1) as f64;
        let pos = hard.iter().filter(|&&h| h).count();
        if pos > 0 && pos < hard.len() {
            return SourceScore::Auc(auc(scores, hard));
        }
        let label = pos > 0;
        let right = scores.iter().filter(|&&s| (s >= 0.5) == label).count() as f64 / n;
        SourceScore::Single {
            hard: label,
            mean: scores.iter().sum::<f64>() / n,
            right,
        }
    }

    /// Whether `self` does strictly better than `other` on the same prompts:
    /// a higher AUC; for one label, a larger right share, ties broken by the
    /// mean score lying further on the right side. Two perfect scores with the
    /// same mean are not "better".
    pub fn beats(&self, other: &SourceScore) -> bool {
        match (self, other) {
            (SourceScore::Auc(a), SourceScore::Auc(b)) => a > b,
            (
                SourceScore::Single { hard, mean, right },
                SourceScore::Single {
                    mean: m2,
                    right: r2,
                    ..
                },
            ) => {
                let side = |m: f64| if *hard { m } else { 1.0 - m };
                right > r2 || (right == r2 && side(*mean) > side(*m2))
            }
            _ => false,
        }
    }

    fn json(&self, prefix: &str) -> Vec<(String, Value)> {
        let k = |s: &str| {
            if prefix.is_empty() {
                s.to_string()
            } else {
                format!("{prefix}_{s}")
            }
        };
        match self {
            SourceScore::Auc(a) => vec![(k("auc"), json!(a))],
            SourceScore::Single { mean, right, .. } => vec![
                (k("auc"), Value::Null),
                (k("mean_score"), json!(mean)),
                (k("right_share"), json!(right)),
            ],
        }
    }
}

/// The length baseline: `P(hard)` from the conversation's characters, 0.5 at 60.
pub fn length_score(chars: usize) -> f64 {
    let z = 2.0 * ((1.0 + chars as f64) / 61.0).ln();
    1.0 / (1.0 + (-z).exp())
}

/// Held-out index sets, one per source, in source-name order.
pub fn folds(sources: &[String]) -> Vec<(String, Vec<usize>)> {
    let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        by.entry(s.as_str()).or_default().push(i);
    }
    by.into_iter().map(|(s, v)| (s.to_string(), v)).collect()
}

/// Out-of-source scores: for every source, `fit_score(train, test)` fits on
/// `train` (all other sources) and returns scores for `test`.
pub fn loso_scores(
    sources: &[String],
    mut fit_score: impl FnMut(&str, &[usize], &[usize]) -> Vec<f64>,
) -> Vec<f64> {
    let mut out = vec![f64::NAN; sources.len()];
    for (name, test) in folds(sources) {
        let train: Vec<usize> = (0..sources.len()).filter(|i| sources[*i] != name).collect();
        let s = fit_score(&name, &train, &test);
        for (&i, v) in test.iter().zip(s) {
            out[i] = v;
        }
    }
    out
}

/// The `--loso --json` report: `loso_auc`, `baselines.{length,features}.loso_auc`,
/// `by_source{src: {n, hard, auc, length_auc, features_auc, ...}}`.
pub fn report(
    scores: &[f64],
    length: &[f64],
    features: &[f64],
    hard: &[bool],
    sources: &[String],
) -> Value {
    let mut by_source = serde_json::Map::new();
    let mut wins = 0;
    let folds = folds(sources);
    for (name, idx) in &folds {
        let h: Vec<bool> = idx.iter().map(|&i| hard[i]).collect();
        let pick = |v: &[f64]| -> Vec<f64> { idx.iter().map(|&i| v[i]).collect() };
        let ours = SourceScore::of(&pick(scores), &h);
        let len = SourceScore::of(&pick(length), &h);
        let feat = SourceScore::of(&pick(features), &h);
        let beats = ours.beats(&len) && ours.beats(&feat);
        wins += beats as usize;
        let mut o = serde_json::Map::new();
        o.insert("n".into(), json!(idx.len()));
        o.insert("hard".into(), json!(h.iter().filter(|&&x| x).count()));
        for (k, v) in ours
            .json("")
            .into_iter()
            .chain(len.json("length"))
            .chain(feat.json("features"))
        {
            o.insert(k, v);
        }
        o.insert("beats_both".into(), json!(beats));
        by_source.insert(name.clone(), Value::Object(o));
    }
    json!({
        "n": hard.len(),
        "hard": hard.iter().filter(|&&h| h).count(),
        "sources": folds.len(),
        "loso_auc": auc(scores, hard),
        "accuracy": accuracy(scores, hard),
        "sources_beating_both": wins,
        "share_of_sources_beating_both": wins as f64 / folds.len().max(1) as f64,
        "baselines": {
            "length": {"loso_auc": auc(length, hard), "accuracy": accuracy(length, hard)},
            "features": {"loso_auc": auc(features, hard), "accuracy": accuracy(features, hard)},
        },
        "by_source": by_source,
    })
}

/// Share of prompts on the right side of 0.5.
pub fn accuracy(scores: &[f64], hard: &[bool]) -> f64 {
    let ok = scores
        .iter()
        .zip(hard)
        .filter(|(s, h)| (**s >= 0.5) == **h)
        .count();
    ok as f64 / hard.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_prompt_is_scored_by_a_head_that_never_saw_its_source() {
        let src = names(&["b", "a", "b", "c", "a"]);
        let f = folds(&src);
        assert_eq!(
            f,
            vec![
                ("a".to_string(), vec![1, 4]),
                ("b".to_string(), vec![0, 2]),
                ("c".to_string(), vec![3])
            ]
        );
        let mut calls = Vec::new();
        let scores = loso_scores(&src, |name, train, test| {
            assert!(train.iter().all(|&i| src[i] != name), "leak of {name}");
            assert!(test.iter().all(|&i| src[i] == name));
            assert_eq!(train.len() + test.len(), src.len());
            calls.push(name.to_string());
            test.iter().map(|&i| i as f64).collect()
        });
        assert_eq!(calls, ["a", "b", "c"]);
        assert_eq!(scores, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn single_label_sources_report_mean_and_right_share() {
        let s = SourceScore::of(&[0.9, 0.6, 0.2, 0.7], &[true; 4]);
        assert_eq!(
            s,
            SourceScore::Single {
                hard: true,
                mean: 0.6,
                right: 0.75
            }
        );
        let s = SourceScore::of(&[0.9, 0.1], &[false, false]);
        assert_eq!(
            s,
            SourceScore::Single {
                hard: false,
                mean: 0.5,
                right: 0.5
            }
        );
        assert_eq!(
            SourceScore::of(&[0.1, 0.9], &[false, true]),
            SourceScore::Auc(1.0)
        );
    }

    #[test]
    fn beating_a_baseline() {
        let hi = SourceScore::Single {
            hard: false,
            mean: 0.2,
            right: 1.0,
        };
        let lo = SourceScore::Single {
            hard: false,
            mean: 0.4,
            right: 1.0,
        };
        assert!(hi.beats(&lo), "same share, mean further on the simple side");
        assert!(!lo.beats(&hi));
        assert!(!hi.beats(&hi), "a tie is not a win");
        assert!(SourceScore::Auc(0.8).beats(&SourceScore::Auc(0.7)));
        assert!(!SourceScore::Auc(0.7).beats(&SourceScore::Auc(0.7)));
    }

    #[test]
    fn pooled_auc_punishes_scores_that_mean_different_things_per_source() {
        // Each source alone is single-label; a scorer that puts source a's
        // simple prompts above source b's hard ones ranks them all wrongly.
        let src = names(&["a", "a", "b", "b"]);
        let hard = [false, false, true, true];
        let good = [0.2, 0.3, 0.7, 0.8];
        let bad = [0.7, 0.8, 0.2, 0.3];
        let r = report(&good, &bad, &bad, &hard, &src);
        assert_eq!(r["loso_auc"], 1.0);
        assert_eq!(r["baselines"]["length"]["loso_auc"], 0.0);
        assert_eq!(r["by_source"]["a"]["auc"], Value::Null);
        assert_eq!(r["by_source"]["a"]["right_share"], 1.0);
        assert_eq!(r["by_source"]["b"]["length_right_share"], 0.0);
        assert_eq!(r["sources_beating_both"], 2);
        assert!(length_score(60) > 0.49 && length_score(60) < 0.51);
        assert!(length_score(10) < 0.1 && length_score(600) > 0.9);
    }
}
