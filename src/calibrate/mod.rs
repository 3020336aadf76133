//! Calibration: what does the configured local model actually get right?
//! `slmgate calibrate` runs a backend over prompts with checkable answers
//! (`answers.jsonl`), checks each reply with the reference rules
//! (`check.rs`, a port of `check_answer.py`), keeps per-prompt outcomes
//! (resumable), reports accuracy per source against the chance baseline,
//! and fits `P(local succeeds | prompt)` (`success.rs`) for routing.

pub mod check;
mod progress;
pub mod run;
pub mod success;

use check::Record;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One prompt's result, one JSON line in the `--out` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub source: String,
    pub category: String,
    pub correct: bool,
    pub output: String,
    pub completion_tokens: u64,
    pub ms: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub accuracy: f64,
    /// The best score a constant reply ("A", "yes", "positive", ...) gets on
    /// the same records: 0 for open answers.
    pub chance: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n: usize,
    pub accuracy: f64,
    pub by_source: BTreeMap<String, Stats>,
    pub by_category: BTreeMap<String, Stats>,
}

/// Read answers.jsonl; errors name the line.
pub fn read_records(path: &Path) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| format!("{}:{}: not an answers record: {e}", path.display(), i + 1))
        })
        .collect()
}

/// The first `limit` records in an order that interleaves the sources
/// (first of each source, then second of each, ...), so a small `--limit`
/// still covers every source. Deterministic: file order within a source.
pub fn select(records: Vec<Record>, limit: Option<usize>) -> Vec<Record> {
    let mut by_source: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for r in records {
        by_source.entry(r.source.clone()).or_default().push(r);
    }
    let mut queues: Vec<std::vec::IntoIter<Record>> =
        by_source.into_values().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for q in &mut queues {
            if let Some(r) = q.next() {
                out.push(r);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out.truncate(limit.unwrap_or(usize::MAX));
    out
}

/// Candidate constant replies for a record: its letters, or its labels.
fn constant_replies(r: &Record) -> Vec<String> {
    let opts = r.options.as_deref().unwrap_or(&[]);
    match r.check.as_str() {
        "choice" => "ABCDEFGH"
            .chars()
            .take(opts.len())
            .map(String::from)
            .collect(),
        "exact_ci" => opts.to_vec(),
        _ => vec![],
    }
}

fn stats<'a>(rows: impl Iterator<Item = (&'a Record, bool)>) -> Stats {
    let rows: Vec<(&Record, bool)> = rows.collect();
    let n = rows.len();
    let correct = rows.iter().filter(|(_, ok)| *ok).count();
    let mut candidates: Vec<String> = rows.iter().flat_map(|(r, _)| constant_replies(r)).collect();
    candidates.sort();
    candidates.dedup();
    let chance = candidates
        .iter()
        .map(|c| rows.iter().filter(|(r, _)| check::check(r, c)).count())
        .max()
        .unwrap_or(0);
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    Stats {
        n,
        accuracy: frac(correct),
        chance: frac(chance),
    }
}

/// Accuracy overall, per source and per category, over the records that have an outcome.
pub fn summarise(records: &[Record], outcomes: &BTreeMap<String, Outcome>) -> Summary {
    let rows: Vec<(&Record, bool)> = records
        .iter()
        .filter_map(|r| outcomes.get(&r.id).map(|o| (r, o.correct)))
        .collect();
    let group = |key: fn(&Record) -> &str| {
        let mut m: BTreeMap<String, Vec<(&Record, bool)>> = BTreeMap::new();
        for (r, ok) in &rows {
            m.entry(key(r).to_string()).or_default().push((r, *ok));
        }
        m.into_iter()
            .map(|(k, v)| (k, stats(v.into_iter())))
            .collect::<BTreeMap<_, _>>()
    };
    let all = stats(rows.iter().copied());
    Summary {
        n: all.n,
        accuracy: all.accuracy,
        by_source: group(|r| &r.source),
        by_category: group(|r| &r.category),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, source: &str, check: &str, answer: &str, options: &[&str]) -> Record {
        Record {
            id: id.into(),
            prompt: format!("prompt {id}"),
            answers: vec![answer.into()],
            check: check.into(),
            options: (!options.is_empty()).then(|| options.iter().map(|s| s.to_string()).collect()),
            category: "qa".into(),
            source: source.into(),
        }
    }

    #[test]
    fn select_interleaves_sources_and_summary_counts_chance() {
        let recs = vec![
            rec("a1", "a", "choice", "A", &["x", "y"]),
            rec("a2", "a", "choice", "A", &["x", "y"]),
            rec("a3", "a", "choice", "B", &["x", "y"]),
            rec("b1", "b", "number", "3", &[]),
        ];
        let ids: Vec<String> = select(recs.clone(), Some(3))
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["a1", "b1", "a2"]);
        let outcome = |id: &str, correct| Outcome {
            id: id.into(),
            source: String::new(),
            category: String::new(),
            correct,
            output: String::new(),
            completion_tokens: 1,
            ms: 1,
        };
        let outs: BTreeMap<String, Outcome> = [("a1", true), ("a3", true), ("b1", false)]
            .into_iter()
            .map(|(id, ok)| (id.to_string(), outcome(id, ok)))
            .collect();
        let s = summarise(&recs, &outs);
        assert_eq!(s.n, 3);
        assert!((s.accuracy - 2.0 / 3.0).abs() < 1e-9);
        // Source a, evaluated a1 (gold A) and a3 (gold B): "A" scores 1/2.
        assert_eq!(
            s.by_source["a"],
            Stats {
                n: 2,
                accuracy: 1.0,
                chance: 0.5
            }
        );
        assert_eq!(
            s.by_source["b"],
            Stats {
                n: 1,
                accuracy: 0.0,
                chance: 0.0
            }
        );
    }
}
