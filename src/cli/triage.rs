//! `slmgate triage | train | eval`: the triage model from the command line.

use crate::classifier::eval::{data_report, outcomes_report, random_scores};
use crate::classifier::features::FeatureTriage;
use crate::classifier::head::HeadsFile;
use crate::classifier::model::ModelTriage;
use crate::classifier::train::{fit_with, read_jsonl, Example, TrainConfig, LEGACY_FEATURES};
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

/// Fast and full inputs of every example (contextual embeddings through the file cache).
pub struct Inputs {
    pub fast: Vec<Vec<f32>>,
    pub full: Vec<Vec<f32>>,
    pub hard: Vec<bool>,
    pub cats: Vec<usize>,
    pub sources: Vec<String>,
}

pub fn inputs(examples: &[Example]) -> Result<Inputs, String> {
    use crate::classifier::embed_cache::{default_path, EmbedCache};
    use crate::classifier::head::quantise;
    use crate::classifier::model::fast_input;
    let encoder = crate::classifier::encoder::Encoder::load(&encoder_dir())?;
    let mut cache = EmbedCache::open(default_path());
    let cached = cache.len();
    let n = examples.len();
    let mut out = Inputs {
        fast: Vec::with_capacity(n),
        full: Vec::with_capacity(n),
        hard: Vec::with_capacity(n),
        cats: Vec::with_capacity(n),
        sources: Vec::with_capacity(n),
    };
    for (i, e) in examples.iter().enumerate() {
        progress("embedding", i + 1, n);
        let Some(h) = e.hard else {
            return Err(format!("record {} has no label (simple|hard)", i + 1));
        };
        let c = e
            .category
            .as_deref()
            .and_then(|c| CATEGORIES.iter().position(|k| *k == c));
        let (x, ids) = fast_input(&encoder, &e.messages);
        let mut full = cache.contextual_of(&encoder, &ids)?;
        quantise(&mut full);
        full.extend_from_slice(&x);
        out.full.push(full);
        out.fast.push(x);
        out.hard.push(h);
        out.cats.push(c.unwrap_or(0));
        out.sources
            .push(e.source.clone().unwrap_or_else(|| "unknown".into()));
    }
    cache.flush()?;
    tracing::debug!(cached, now = cache.len(), "embedding cache");
    Ok(out)
}

fn pick<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&i| v[i].clone()).collect()
}

/// Fit both heads of the cascade on `idx` of `inp`.
fn fit_heads(
    inp: &Inputs,
    idx: &[usize],
    cfg: &TrainConfig,
    seed: u64,
    categories: bool,
) -> HeadsFile {
    let hard = pick(&inp.hard, idx);
    let cats = pick(&inp.cats, idx);
    let sources: Vec<&str> = idx.iter().map(|&i| inp.sources[i].as_str()).collect();
    // Legacy: drop the task features (and prior) at the end of each input.
    let cut = |x: &Vec<f32>| {
        let drop = crate::classifier::head::FEATURES.len() - LEGACY_FEATURES;
        x[..x.len() - if cfg.legacy { drop } else { 0 }].to_vec()
    };
    let fit = |xs: &[Vec<f32>], blocks: &[&str]| {
        fit_with(
            &idx.iter().map(|&i| cut(&xs[i])).collect::<Vec<_>>(),
            &hard,
            &cats,
            &sources,
            cfg,
            seed,
            blocks,
            categories,
        )
    };
    HeadsFile {
        version: 3,
        encoder: "all-MiniLM-L6-v2".into(),
        seed,
        band: cfg.band,
        fast: fit(&inp.fast, &["static", "features"]),
        full: fit(&inp.full, &["contextual", "static", "features"]),
        train: Some(cfg.clone()),
    }
}

pub fn train(data: &Path, out: &Path, seed: u64) -> Result<(), String> {
    let examples = read_jsonl(data)?;
    let inp = inputs(&examples)?;
    let cfg = TrainConfig::from_env()?;
    let all: Vec<usize> = (0..examples.len()).collect();
    let heads = fit_heads(&inp, &all, &cfg, seed, true);
    let text = serde_json::to_string(&heads).map_err(|e| e.to_string())? + "\n";
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "wrote {} (n={}, {cfg:?}, seed={seed})",
        out.display(),
        examples.len()
    );
    Ok(())
}

/// Map `f` over `0..n` on up to `threads` threads (results in order).
fn par_map<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = f(i);
                if let Ok(mut o) = out.lock() {
                    o[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// `eval --loso`: a cascade trained per fold on every other source.
pub fn eval_loso(paths: &[PathBuf], json: bool) -> Result<(), String> {
    use crate::classifier::loso;
    let mut ex = Vec::new();
    for p in paths {
        ex.extend(read_jsonl(p)?);
    }
    if let Some(i) = ex
        .iter()
        .position(|e| e.hard.is_none() || e.source.is_none())
    {
        return Err(format!(
            "record {} has no `label` (simple|hard) or no `source`; --loso needs both",
            i + 1
        ));
    }
    let inp = inputs(&ex)?;
    let cfg = TrainConfig::from_env()?;
    let folds = loso::folds(&inp.sources);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t0 = std::time::Instant::now();
    // Per fold: (test indices, fast scores, full scores).
    let per_fold = par_map(folds.len(), threads, |k| {
        let (name, test) = &folds[k];
        let train: Vec<usize> = (0..ex.len()).filter(|&i| &inp.sources[i] != name).collect();
        let heads = fit_heads(&inp, &train, &cfg, 42, false);
        let fast: Vec<f64> = test
            .iter()
            .map(|&i| heads.fast.predict(&inp.fast[i]).0 as f64)
            .collect();
        let full: Vec<f64> = test
            .iter()
            .map(|&i| heads.full.predict(&inp.full[i]).0 as f64)
            .collect();
        (test.clone(), fast, full)
    });
    let n = ex.len();
    let (mut fast, mut full) = (vec![0f64; n], vec![0f64; n]);
    for (test, f, u) in &per_fold {
        for (j, &i) in test.iter().enumerate() {
            fast[i] = f[j];
            full[i] = u[j];
        }
    }
    let [lo, hi] = cfg.band;
    let in_band = |p: f64| p >= lo as f64 && p <= hi as f64;
    let cascade: Vec<f64> = (0..n)
        .map(|i| if in_band(fast[i]) { full[i] } else { fast[i] })
        .collect();
    let length: Vec<f64> = ex
        .iter()
        .map(|e| loso::length_score(e.messages.iter().map(|m| m.text.chars().count()).sum()))
        .collect();
    let features: Vec<f64> = ex
        .iter()
        .map(|e| FeatureTriage.triage(&e.messages).score)
        .collect();
    if let Some(path) = std::env::var_os("SLMGATE_LOSO_DUMP") {
        // Per-prompt held-out scores, for looking at what a fold got wrong.
        let lines: String = (0..n)
            .map(|i| {
                let c = crate::classifier::task::cues(crate::classifier::last_user_text(&ex[i].messages));
                let cues: serde_json::Map<String, serde_json::Value> = crate::classifier::task::TASK_FEATURES
                    .iter()
                    .zip(c.vector())
                    .filter(|(_, v)| *v != 0.0)
                    .map(|(k, v)| (k.to_string(), serde_json::json!((v * 100.0).round() / 100.0)))
                    .collect();
                serde_json::json!({"id": ex[i].raw.get("id"), "source": inp.sources[i], "hard": inp.hard[i],
                    "fast": fast[i], "full": full[i], "length": length[i], "features": features[i],
                    "prior": c.prior(), "cues": cues})
                    .to_string()
                    + "\n"
            })
            .collect();
        std::fs::write(&path, lines).map_err(|e| format!("SLMGATE_LOSO_DUMP: {e}"))?;
    }
    let mut report = loso::report(&cascade, &length, &features, &inp.hard, &inp.sources);
    report["variants"] = serde_json::json!({
        "fast_head": {"loso_auc": crate::classifier::train::auc(&fast, &inp.hard)},
        "full_head": {"loso_auc": crate::classifier::train::auc(&full, &inp.hard)},
        "cascade": {"loso_auc": report["loso_auc"]},
    });
    report["full_encoder_share"] =
        serde_json::json!(fast.iter().filter(|&&p| in_band(p)).count() as f64 / n.max(1) as f64);
    report["config"] = serde_json::to_value(&cfg).map_err(|e| e.to_string())?;
    report["fit_secs"] = serde_json::json!(t0.elapsed().as_secs_f64());
    print_report(&report, json, print_loso_table);
    Ok(())
}

pub fn eval(
    data: Vec<PathBuf>,
    outcomes: Option<PathBuf>,
    json: bool,
    loso: bool,
) -> Result<(), String> {
    if loso {
        return eval_loso(&data, json);
    }
    let model = ModelTriage::load(&encoder_dir())?;
    if data.len() > 1 {
        return Err("--data takes one file without --loso".into());
    }
    if let Some(path) = data.into_iter().next() {
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

fn print_loso_table(v: &Value) {
    let b = &v["baselines"];
    println!(
        "leave-one-source-out over {} sources, {} prompts ({} hard): pooled ROC AUC {:.3} (length {:.3}, features {:.3}); \
         above both baselines on {} of {} sources",
        v["sources"],
        v["n"],
        v["hard"],
        f(&v["loso_auc"]),
        f(&b["length"]["loso_auc"]),
        f(&b["features"]["loso_auc"]),
        v["sources_beating_both"],
        v["sources"]
    );
    println!(
        "fast head alone {:.3}, full head alone {:.3}; full encoder on {:.1}% of prompts",
        f(&v["variants"]["fast_head"]["loso_auc"]),
        f(&v["variants"]["full_head"]["loso_auc"]),
        100.0 * f(&v["full_encoder_share"])
    );
    println!(
        "\nAUC where a source has both labels; else mean score / share on the right side of 0.5."
    );
    println!("| held-out source | n | label | ours | length | features | above both |\n|---|---:|---|---:|---:|---:|:-:|");
    let cell = |r: &Value, p: &str| {
        let k = |s: &str| {
            if p.is_empty() {
                s.to_string()
            } else {
                format!("{p}_{s}")
            }
        };
        match r[k("auc")].as_f64() {
            Some(a) => format!("{a:.3}"),
            None => format!(
                "{:.2} / {:.0}%",
                f(&r[k("mean_score")]),
                100.0 * f(&r[k("right_share")])
            ),
        }
    };
    for (s, r) in v["by_source"].as_object().into_iter().flatten() {
        let n = r["n"].as_u64().unwrap_or(0);
        let h = r["hard"].as_u64().unwrap_or(0);
        let label = if h == 0 {
            "simple"
        } else if h == n {
            "hard"
        } else {
            "both"
        };
        println!(
            "| {s} | {n} | {label} | {} | {} | {} | {} |",
            cell(r, ""),
            cell(r, "length"),
            cell(r, "features"),
            if r["beats_both"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        );
    }
}
