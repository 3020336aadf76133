//! `slmgate triage | train | eval`: the triage model from the command line.

use crate::classifier::eval::{data_report, outcomes_report, random_scores};
use crate::classifier::features::FeatureTriage;
use crate::classifier::model::ModelTriage;
use crate::classifier::train::{fit, read_jsonl, Example};
use crate::classifier::{Triage, TriageResult};
use crate::config::CATEGORIES;
use crate::state::{models_dir, AppState, StateOptions};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

fn encoder_dir() -> PathBuf {
    models_dir().join("minilm")
}

/// Progress on stderr, on one line, only for terminals.
fn progress(label: &str, i: usize, n: usize) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() && (i.is_multiple_of(50) || i == n) {
        eprint!("\r{label}: {i}/{n}");
        if i == n {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }
}

/// Triage every example; also returns each call's latency in ms.
fn triage_all(t: &dyn Triage, examples: &[Example], label: &str) -> (Vec<TriageResult>, Vec<f64>) {
    let n = examples.len();
    let mut ms = Vec::with_capacity(n);
    let res = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            progress(label, i + 1, n);
            let t0 = std::time::Instant::now();
            let r = t.triage(&e.messages);
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            r
        })
        .collect();
    (res, ms)
}

fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

pub async fn triage(policy: Option<PathBuf>, prompt: String, json: bool) -> Result<(), String> {
    let policy = super::serve::load_policy(policy.as_deref())?;
    let opts = StateOptions {
        start_local: false,
        ..StateOptions::from_process()
    };
    let state = AppState::new(policy, opts)?;
    let msgs = vec![crate::api::openai::ChatMessage {
        role: "user".into(),
        text: prompt,
    }];
    let requested = state
        .routing
        .resolve("auto")
        .ok_or("the policy has no `auto` route")?;
    let verdict = state.triage.triage(&msgs, requested.is_explicit()).await;
    let decision = crate::middleware::decide::decide(requested, &verdict);
    let v = crate::dry_run::explain(&verdict, &decision, state.triage.name());
    if json {
        let mut out = serde_json::json!({"score": v["score"], "category": v["category"], "route": v["route"], "target": v["target"]});
        if !v["local_success"].is_null() {
            out["local_success"] = v["local_success"].clone();
        }
        println!("{out}");
    } else {
        println!(
            "score {:.4}  category {}  route {} -> {}  (triage: {})",
            v["score"].as_f64().unwrap_or(0.0),
            v["category"].as_str().unwrap_or(""),
            v["route"].as_str().unwrap_or(""),
            v["target"].as_str().unwrap_or("none"),
            v["triage"].as_str().unwrap_or("")
        );
        if let Some(p) = v["local_success"].as_f64() {
            println!("P(local model answers well) {p:.3}");
        }
    }
    Ok(())
}

/// The uncertainty band of the fast head inside which the full head decides.
pub const BAND: [f32; 2] = [0.1, 0.9];

pub fn train(data: &Path, out: &Path, seed: u64) -> Result<(), String> {
    use crate::classifier::head::HeadsFile;
    use crate::classifier::model::{fast_input, full_input};
    let examples = read_jsonl(data)?;
    let encoder = crate::classifier::encoder::Encoder::load(&encoder_dir())?;
    let (mut fast, mut full) = (Vec::new(), Vec::new());
    let (mut hard, mut cats) = (Vec::new(), Vec::new());
    let n = examples.len();
    for (i, e) in examples.iter().enumerate() {
        progress("embedding", i + 1, n);
        let Some(h) = e.hard else {
            return Err(format!("record {} has no label", i + 1));
        };
        let c = e
            .category
            .as_deref()
            .and_then(|c| CATEGORIES.iter().position(|k| *k == c));
        let (x, ids) = fast_input(&encoder, &e.messages);
        full.push(full_input(&encoder, &x, &ids)?);
        fast.push(x);
        hard.push(h);
        cats.push(c.unwrap_or(0));
    }
    let heads = HeadsFile {
        version: 2,
        encoder: "all-MiniLM-L6-v2".into(),
        seed,
        band: BAND,
        fast: fit(&fast, &hard, &cats, seed, &["static", "features"]),
        full: fit(
            &full,
            &hard,
            &cats,
            seed,
            &["contextual", "static", "features"],
        ),
    };
    let text = serde_json::to_string(&heads).map_err(|e| e.to_string())? + "\n";
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "wrote {} (n={n}, l2 fast={} full={}, seed={seed})",
        out.display(),
        heads.fast.l2,
        heads.full.l2
    );
    Ok(())
}

pub fn eval(data: Option<PathBuf>, outcomes: Option<PathBuf>, json: bool) -> Result<(), String> {
    let model = ModelTriage::load(&encoder_dir())?;
    if let Some(path) = data {
        let ex = read_jsonl(&path)?;
        if ex.iter().any(|e| e.hard.is_none()) {
            return Err(format!(
                "{}: every record needs `label` (simple|hard)",
                path.display()
            ));
        }
        let hard: Vec<bool> = ex.iter().map(|e| e.hard.unwrap_or(false)).collect();
        let (res, ms) = triage_all(&model, &ex, "triage");
        let scores: Vec<f64> = res.iter().map(|r| r.score).collect();
        let predicted: Vec<&str> = res.iter().map(|r| r.category).collect();
        let length: Vec<f64> = ex
            .iter()
            .map(|e| e.messages.iter().map(|m| m.text.len()).sum::<usize>() as f64)
            .collect();
        let features: Vec<f64> = ex
            .iter()
            .map(|e| FeatureTriage.triage(&e.messages).score)
            .collect();
        let baselines = [
            ("random", random_scores(ex.len(), 0)),
            ("length", length),
            ("features", features),
        ];
        let cats: Vec<Option<String>> = ex.iter().map(|e| e.category.clone()).collect();
        let mut report = data_report(&scores, &hard, &cats, &predicted, &baselines);
        let calls = model
            .calls
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        report["latency_ms_p50"] = serde_json::json!(percentile(&ms, 0.5));
        report["latency_ms_p90"] = serde_json::json!(percentile(&ms, 0.9));
        report["full_encoder_share"] = serde_json::json!(
            model.full_calls.load(std::sync::atomic::Ordering::Relaxed) as f64 / calls as f64
        );
        print_report(&report, json, print_data_table);
    }
    if let Some(path) = outcomes {
        let ex = read_jsonl(&path)?;
        let (res, _) = triage_all(&model, &ex, "triage");
        let scores: Vec<f64> = res.iter().map(|r| r.score).collect();
        let raws: Vec<Value> = ex.into_iter().map(|e| e.raw).collect();
        let report = outcomes_report(&raws, &scores, 0);
        print_report(&report, json, print_outcomes_table);
    }
    Ok(())
}

fn print_report(v: &Value, json: bool, table: fn(&Value)) {
    if json {
        println!("{v}");
    } else {
        table(v);
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn print_data_table(v: &Value) {
    println!(
        "n {}  hard {}  accuracy {:.3}  ROC AUC {:.3}  category accuracy {:.3}",
        v["n"],
        v["hard"],
        f(&v["accuracy"]),
        f(&v["auc"]),
        f(&v["category_accuracy"])
    );
    println!(
        "contextual encoder needed for {:.1}% of prompts; triage latency p50 {:.2} ms, p90 {:.2} ms",
        100.0 * f(&v["full_encoder_share"]),
        f(&v["latency_ms_p50"]),
        f(&v["latency_ms_p90"])
    );
    println!(
        "CPT(90%) {:.1}% cloud at score >= {:.3}   CPT(95%) {:.1}% cloud at score >= {:.3}",
        100.0 * f(&v["cpt90"]),
        f(&v["cpt90_threshold"]),
        100.0 * f(&v["cpt95"]),
        f(&v["cpt95_threshold"])
    );
    println!("\n| scorer | ROC AUC | CPT(90%) | CPT(95%) |\n|---|---:|---:|---:|");
    println!(
        "| minilm head | {:.3} | {:.1}% | {:.1}% |",
        f(&v["auc"]),
        100.0 * f(&v["cpt90"]),
        100.0 * f(&v["cpt95"])
    );
    if let Some(b) = v["baselines"].as_object() {
        for (name, s) in b {
            println!(
                "| {name} | {:.3} | {:.1}% | {:.1}% |",
                f(&s["auc"]),
                100.0 * f(&s["cpt90"]),
                100.0 * f(&s["cpt95"])
            );
        }
    }
    println!("\n| cloud share | hard caught | threshold |\n|---:|---:|---:|");
    for r in v["tradeoff"].as_array().into_iter().flatten() {
        println!(
            "| {:.0}% | {:.1}% | {:.3} |",
            100.0 * f(&r["cloud_share"]),
            100.0 * f(&r["hard_caught"]),
            f(&r["threshold"])
        );
    }
    println!("\n| category | n | routing accuracy | category accuracy |\n|---|---:|---:|---:|");
    for (c, r) in v["per_category"].as_object().into_iter().flatten() {
        println!(
            "| {c} | {} | {:.3} | {:.3} |",
            r["n"],
            f(&r["accuracy"]),
            f(&r["category_accuracy"])
        );
    }
}

fn print_outcomes_table(v: &Value) {
    println!("| benchmark | n | APGR | random APGR | CPT(50%) | CPT(80%) |\n|---|---:|---:|---:|---:|---:|");
    for (s, r) in v.as_object().into_iter().flatten() {
        println!(
            "| {s} | {} | {:.3} | {:.3} | {:.1}% | {:.1}% |",
            r["n"],
            f(&r["apgr"]),
            f(&r["random_apgr"]),
            100.0 * f(&r["cpt50"]),
            100.0 * f(&r["cpt80"])
        );
    }
}
