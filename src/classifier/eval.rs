//! `slmgate eval`: how well a triage score routes.
//!
//! - `--data`: labelled simple/hard prompts -> accuracy, ROC AUC, per-category
//!   accuracy, a cost/quality table (cloud share vs share of hard prompts
//!   caught), CPT(90%)/CPT(95%) with their thresholds, and baselines.
//! - `--outcomes`: RouteLLM's strong-vs-weak outcomes -> per benchmark the
//!   PGR curve, APGR, CPT(50%)/CPT(80%), next to random routing.

use super::train::auc;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Smallest cloud share whose top-scored prompts catch `target` of the hard
/// ones; with the score threshold that achieves it (send score >= threshold).
pub fn cpt(scores: &[f64], hard: &[bool], target: f64) -> (f64, f64) {
    let order = by_score_desc(scores);
    let total = hard.iter().filter(|&&h| h).count().max(1) as f64;
    let mut caught = 0usize;
    for (k, &i) in order.iter().enumerate() {
        caught += hard[i] as usize;
        if caught as f64 / total >= target - 1e-12 {
            return ((k + 1) as f64 / scores.len() as f64, scores[i]);
        }
    }
    (1.0, order.last().map_or(0.0, |&i| scores[i]))
}

fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// Rows of (cloud share, share of hard prompts caught, threshold).
pub fn tradeoff(scores: &[f64], hard: &[bool]) -> Vec<(f64, f64, f64)> {
    let order = by_score_desc(scores);
    let total = hard.iter().filter(|&&h| h).count().max(1) as f64;
    let n = scores.len();
    (1..=20)
        .map(|step| {
            let share = step as f64 * 0.05;
            let k = ((share * n as f64).round() as usize).clamp(1, n.max(1));
            let caught = order[..k.min(order.len())]
                .iter()
                .filter(|&&i| hard[i])
                .count() as f64
                / total;
            (share, caught, order.get(k - 1).map_or(0.0, |&i| scores[i]))
        })
        .collect()
}

pub fn random_scores(n: usize, seed: u64) -> Vec<f64> {
    use rand::Rng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f64>()).collect()
}

/// Summary of one scorer on labelled data.
pub fn summarise(scores: &[f64], hard: &[bool]) -> Value {
    let (c90, t90) = cpt(scores, hard, 0.90);
    let (c95, t95) = cpt(scores, hard, 0.95);
    json!({
        "auc": auc(scores, hard),
        "cpt90": c90, "cpt90_threshold": t90,
        "cpt95": c95, "cpt95_threshold": t95,
    })
}

/// The full `--data` report.
pub fn data_report(
    scores: &[f64],
    hard: &[bool],
    categories: &[Option<String>],
    predicted_categories: &[&str],
    baselines: &[(&str, Vec<f64>)],
) -> Value {
    let n = scores.len();
    let correct = |i: usize| (scores[i] >= 0.5) == hard[i];
    let accuracy = (0..n).filter(|&i| correct(i)).count() as f64 / n.max(1) as f64;
    let mut per_cat: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (i, cat) in categories.iter().enumerate().take(n) {
        let c = cat.clone().unwrap_or_else(|| "unknown".into());
        let e = per_cat.entry(c.clone()).or_default();
        e.0 += 1;
        e.1 += correct(i) as usize;
        e.2 += (predicted_categories.get(i) == Some(&c.as_str())) as usize;
    }
    let labelled_cats = categories.iter().filter(|c| c.is_some()).count();
    let cat_hits = (0..n)
        .filter(|&i| {
            categories[i]
                .as_deref()
                .is_some_and(|c| predicted_categories.get(i) == Some(&c))
        })
        .count();
    let mut out = summarise(scores, hard);
    out["n"] = json!(n);
    out["hard"] = json!(hard.iter().filter(|&&h| h).count());
    out["accuracy"] = json!(accuracy);
    out["category_accuracy"] = json!(if labelled_cats > 0 {
        cat_hits as f64 / labelled_cats as f64
    } else {
        0.0
    });
    out["per_category"] = per_cat
        .into_iter()
        .map(|(c, (k, ok, cat_ok))| (c, json!({"n": k, "accuracy": ok as f64 / k as f64, "category_accuracy": cat_ok as f64 / k as f64})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    out["tradeoff"] = tradeoff(scores, hard)
        .into_iter()
        .map(|(s, c, t)| json!({"cloud_share": s, "hard_caught": c, "threshold": t}))
        .collect::<Vec<_>>()
        .into();
    out["baselines"] = baselines
        .iter()
        .map(|(name, s)| (name.to_string(), summarise(s, hard)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    out
}

/// Quality when the top-`k` scored prompts go to the strong model.
fn pgr_curve(scores: &[f64], strong: &[f64], weak: &[f64], points: usize) -> Vec<(f64, f64)> {
    let n = scores.len();
    let order = by_score_desc(scores);
    let q_weak: f64 = weak.iter().sum();
    let q_strong: f64 = strong.iter().sum();
    let gap = q_strong - q_weak;
    let mut gains = vec![0f64; n + 1];
    for (k, &i) in order.iter().enumerate() {
        gains[k + 1] = gains[k] + strong[i] - weak[i];
    }
    (0..=points)
        .map(|p| {
            let share = p as f64 / points as f64;
            let k = (share * n as f64).round() as usize;
            let pgr = if gap.abs() < 1e-12 {
                1.0
            } else {
                gains[k.min(n)] / gap
            };
            (share, pgr)
        })
        .collect()
}

/// APGR (area under the PGR curve over cloud share) and CPT(x) from a curve.
fn apgr_cpt(curve: &[(f64, f64)], targets: &[f64]) -> (f64, Vec<f64>) {
    let area = curve
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum();
    let cpts = targets
        .iter()
        .map(|t| {
            curve
                .iter()
                .find(|(_, p)| *p >= t - 1e-12)
                .map_or(1.0, |(s, _)| *s)
        })
        .collect();
    (area, cpts)
}

/// Per benchmark: APGR, CPT(50%), CPT(80%) of `scores`, and the random baseline.
pub fn outcomes_report(records: &[Value], scores: &[f64], seed: u64) -> Value {
    let mut by_source: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_source
            .entry(r["source"].as_str().unwrap_or("unknown").to_string())
            .or_default()
            .push(i);
    }
    let metric = |r: &Value, which: &str| -> f64 {
        match r.get(format!("{which}_correct")) {
            Some(Value::Bool(b)) => *b as u8 as f64,
            _ => r
                .get(format!("{which}_score"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        }
    };
    let mut out = serde_json::Map::new();
    for (source, idx) in by_source {
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let strong: Vec<f64> = idx.iter().map(|&i| metric(&records[i], "strong")).collect();
        let weak: Vec<f64> = idx.iter().map(|&i| metric(&records[i], "weak")).collect();
        let curve = pgr_curve(&s, &strong, &weak, 100);
        let (apgr, c) = apgr_cpt(&curve, &[0.5, 0.8]);
        // Random routing, averaged over seeded shuffles.
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut rand_apgr = 0.0;
        let trials = 20;
        for _ in 0..trials {
            let mut perm: Vec<f64> = (0..s.len()).map(|i| i as f64).collect();
            perm.shuffle(&mut rng);
            rand_apgr += apgr_cpt(&pgr_curve(&perm, &strong, &weak, 100), &[]).0;
        }
        out.insert(
            source,
            json!({
                "n": idx.len(), "apgr": apgr, "cpt50": c[0], "cpt80": c[1],
                "random_apgr": rand_apgr / trials as f64,
                "strong_quality": strong.iter().sum::<f64>() / idx.len().max(1) as f64,
                "weak_quality": weak.iter().sum::<f64>() / idx.len().max(1) as f64,
                "pgr_curve": curve.iter().step_by(10).map(|(s, p)| json!([s, p])).collect::<Vec<_>>(),
            }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpt_and_tradeoff() {
        let scores = [0.9, 0.8, 0.7, 0.2, 0.1];
        let hard = [true, false, true, false, true];
        let (share, thr) = cpt(&scores, &hard, 0.66);
        assert_eq!((share, thr), (0.6, 0.7));
        assert_eq!(cpt(&scores, &hard, 1.0).0, 1.0);
        let t = tradeoff(&scores, &hard);
        assert_eq!(t.last().map(|r| r.1), Some(1.0));
    }

    #[test]
    fn perfect_router_beats_random() {
        let recs: Vec<Value> = (0..100)
            .map(|i| json!({"source": "b", "strong_correct": true, "weak_correct": i % 2 == 0}))
            .collect();
        // Perfect scores: the prompts the weak model fails score highest.
        let scores: Vec<f64> = (0..100)
            .map(|i| if i % 2 == 0 { 0.0 } else { 1.0 })
            .collect();
        let r = outcomes_report(&recs, &scores, 1);
        let b = &r["b"];
        assert!(b["apgr"].as_f64().unwrap() > 0.7, "{b}");
        assert!(
            (b["random_apgr"].as_f64().unwrap() - 0.5).abs() < 0.1,
            "{b}"
        );
        assert!(b["cpt50"].as_f64().unwrap() <= 0.26);
    }
}
