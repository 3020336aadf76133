//! `P(local succeeds | prompt)`: a logistic head on the triage encoder's fast
//! input ([static MiniLM embedding, cheap features], the same vector the
//! triage fast head sees, so serving it costs one dot product), fitted on
//! calibration outcomes. The trade-off curve comes from out-of-fold
//! predictions, so it says what the head does on prompts it was not fitted on.

use super::check::Record;
use super::Outcome;
use crate::api::openai::ChatMessage;
use crate::classifier::encoder::Encoder;
use crate::classifier::model::fast_input;
use crate::classifier::train::{auc, fit, fit_l2, l2_grid};
use crate::config::CATEGORIES;
use std::collections::BTreeMap;

pub use crate::classifier::success::{CurvePoint, SuccessHead};

fn user(prompt: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: "user".into(),
        text: prompt.into(),
    }]
}

/// Keep-the-top-k curve over (score, correct), every 5% of traffic.
pub fn curve(scored: &[(f64, bool)]) -> Vec<CurvePoint> {
    let mut s = scored.to_vec();
    s.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = s.len();
    let mut out = Vec::new();
    for step in 1..=20 {
        let k = (n * step).div_ceil(20).max(1).min(n);
        if k == 0
            || out
                .iter()
                .any(|p: &CurvePoint| p.local_share == k as f64 / n as f64)
        {
            continue;
        }
        let correct = s[..k].iter().filter(|x| x.1).count();
        out.push(CurvePoint {
            threshold: s[k - 1].0,
            local_share: k as f64 / n as f64,
            local_accuracy: correct as f64 / k as f64,
        });
    }
    out
}

/// Fit on every record with an outcome; 5-fold out-of-fold scores for the curve.
pub fn train(
    encoder: &Encoder,
    records: &[Record],
    outcomes: &BTreeMap<String, Outcome>,
    target: &str,
    seed: u64,
) -> Result<SuccessHead, String> {
    let mut rows: Vec<(&Record, bool)> = records
        .iter()
        .filter_map(|r| outcomes.get(&r.id).map(|o| (r, o.correct)))
        .collect();
    // Calibration order interleaves sources, and folds are taken by index:
    // shuffle (seeded) so no fold holds whole sources.
    {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        rows.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }
    let pos = rows.iter().filter(|r| r.1).count();
    if rows.len() < 20 || pos < 5 || rows.len() - pos < 5 {
        return Err(format!(
            "too few outcomes to fit a success head: {} prompts, {pos} correct (need >= 20, with >= 5 right and 5 wrong)",
            rows.len()
        ));
    }
    let xs: Vec<Vec<f32>> = rows
        .iter()
        .map(|(r, _)| fast_input(encoder, &user(&r.prompt)).0)
        .collect();
    let ys: Vec<bool> = rows.iter().map(|r| r.1).collect();
    let cats: Vec<usize> = rows
        .iter()
        .map(|(r, _)| {
            CATEGORIES
                .iter()
                .position(|c| *c == r.category)
                .unwrap_or(0)
        })
        .collect();
    let inputs = ["static", "features"];
    let sources: Vec<String> = rows.iter().map(|(r, _)| r.source.clone()).collect();
    // Leave-one-source-out picks the L2 strength (a source the head never saw
    // is what a new deployment looks like), when there are >= 3 sources.
    let n_sources = crate::classifier::loso::folds(&sources).len();
    let loso_for = |l2: f32| {
        crate::classifier::loso::loso_scores(&sources, |_, tr, te| {
            let pick = |v: &[usize]| -> (Vec<Vec<f32>>, Vec<bool>, Vec<usize>) {
                (
                    v.iter().map(|&i| xs[i].clone()).collect(),
                    v.iter().map(|&i| ys[i]).collect(),
                    v.iter().map(|&i| cats[i]).collect(),
                )
            };
            let (xt, yt, ct) = pick(tr);
            let head = fit_l2(&xt, &yt, &ct, seed, &inputs, l2);
            te.iter().map(|&i| head.predict(&xs[i]).0 as f64).collect()
        })
    };
    let (l2, loso) = if n_sources >= 3 {
        let mut best: Option<(f64, f32, Vec<f64>)> = None;
        for &l2 in l2_grid() {
            let s = loso_for(l2);
            let a = auc(&s, &ys);
            tracing::info!(l2, loso_auc = a, "success head: leave-one-source-out");
            if best.as_ref().is_none_or(|b| a > b.0) {
                best = Some((a, l2, s));
            }
        }
        match best {
            Some((_, l2, s)) => (l2, Some(s)),
            None => (l2_grid()[0], None),
        }
    } else {
        (0.0, None)
    };
    let fit_one = |xt: &[Vec<f32>], yt: &[bool], ct: &[usize]| {
        if loso.is_some() {
            fit_l2(xt, yt, ct, seed, &inputs, l2)
        } else {
            fit(xt, yt, ct, seed, &inputs)
        }
    };
    let folds = 5;
    let mut oof = vec![0f64; rows.len()];
    for f in 0..folds {
        let tr: Vec<usize> = (0..rows.len()).filter(|i| i % folds != f).collect();
        let xt: Vec<Vec<f32>> = tr.iter().map(|&i| xs[i].clone()).collect();
        let yt: Vec<bool> = tr.iter().map(|&i| ys[i]).collect();
        let ct: Vec<usize> = tr.iter().map(|&i| cats[i]).collect();
        let head = fit_one(&xt, &yt, &ct);
        for i in (0..rows.len()).filter(|i| i % folds == f) {
            oof[i] = head.predict(&xs[i]).0 as f64;
        }
    }
    let scored: Vec<(f64, bool)> = oof.iter().copied().zip(ys.iter().copied()).collect();
    let loso_by_source = loso.as_ref().map(|s| loso_table(s, &ys, &sources));
    Ok(SuccessHead {
        version: 1,
        target: target.to_string(),
        n: rows.len(),
        base_rate: pos as f64 / rows.len() as f64,
        cv_auc: auc(&oof, &ys),
        loso_auc: loso.as_ref().map(|s| auc(s, &ys)),
        loso_by_source,
        curve: curve(&scored),
        head: fit_one(&xs, &ys, &cats),
    })
}

/// Per held-out source: n, correct, and the AUC (or the mean score when all
/// outcomes of the source are the same).
pub fn loso_table(scores: &[f64], correct: &[bool], sources: &[String]) -> serde_json::Value {
    use crate::classifier::loso::{folds, SourceScore};
    let mut out = serde_json::Map::new();
    for (name, idx) in folds(sources) {
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let c: Vec<bool> = idx.iter().map(|&i| correct[i]).collect();
        let k = c.iter().filter(|&&x| x).count();
        let v = match SourceScore::of(&s, &c) {
            SourceScore::Auc(a) => serde_json::json!({"n": idx.len(), "correct": k, "auc": a}),
            SourceScore::Single { mean, .. } => {
                serde_json::json!({"n": idx.len(), "correct": k, "auc": null, "mean_score": mean})
            }
        };
        out.insert(name, v);
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_keeps_the_most_likely_first() {
        let scored: Vec<(f64, bool)> = (0..100).map(|i| (i as f64 / 100.0, i >= 50)).collect();
        let c = curve(&scored);
        assert_eq!(c.len(), 20);
        assert_eq!(c[0].local_share, 0.05);
        assert_eq!(c[0].local_accuracy, 1.0);
        assert_eq!(c[9].local_accuracy, 1.0, "the top half is all correct");
        assert_eq!(c[19].local_share, 1.0);
        assert_eq!(c[19].local_accuracy, 0.5);
        let head = SuccessHead {
            version: 1,
            target: "t".into(),
            n: 100,
            base_rate: 0.5,
            cv_auc: 1.0,
            loso_auc: None,
            loso_by_source: None,
            curve: c,
            head: crate::classifier::train::fit(
                &[vec![0.0], vec![1.0]],
                &[false, true],
                &[0, 0],
                1,
                &["static"],
            ),
        };
        let p = head.threshold_for(0.9).expect("reachable");
        assert_eq!(
            p.local_share, 0.55,
            "largest share with >= 90% accuracy: 50/55"
        );
        assert!(head.threshold_for(1.01).is_none());
    }
}
