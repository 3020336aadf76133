//! `slmgate calibrate`: run one backend over checkable prompts at
//! temperature 0 with bounded concurrency, append each outcome to the
//! `--out` file as it completes (so an interrupted run keeps its results
//! and the next run resumes where it stopped), with a progress line and ETA.

use super::check::{self, Record};
use super::progress::Progress;
use super::{read_records, select, summarise, Outcome, Summary};
use crate::backend::{Backend, Environment, ReplyBody};
use crate::config::Policy;
use crate::metrics::Metrics;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub struct Options {
    pub data: PathBuf,
    pub out: PathBuf,
    pub limit: Option<usize>,
    /// Backend to calibrate (default: the policy's first local backend).
    pub backend: Option<String>,
    /// Model of that backend (default: its first).
    pub model: Option<String>,
    pub concurrency: usize,
    /// Completion budget per prompt (the baseline used 64).
    pub max_tokens: u64,
}

/// What the run did, for the report.
pub struct Report {
    pub summary: Summary,
    pub backend: String,
    pub model: String,
    pub ran: usize,
    pub resumed: usize,
    pub failed: usize,
    pub wall_secs: f64,
    /// The prompts this run covered, and every outcome in the `--out` file.
    pub records: Vec<Record>,
    pub outcomes: BTreeMap<String, Outcome>,
}

/// Outcomes already in `path` (a torn last line from an interrupted run is
/// cut off the file).
pub fn load_outcomes(path: &Path) -> Result<BTreeMap<String, Outcome>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut out = BTreeMap::new();
    let mut kept = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') {
            break; // the torn last line of an interrupted run
        }
        kept += line.len();
        if line.trim().is_empty() {
            continue;
        }
        let o: Outcome = serde_json::from_str(line.trim_end()).map_err(|e| {
            format!(
                "{}:{}: not a calibration outcome ({e}); use another --out file",
                path.display(),
                i + 1
            )
        })?;
        out.insert(o.id.clone(), o);
    }
    if kept < text.len() {
        // Cut the torn line off in place (appends then start on a fresh line).
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(kept as u64));
        f.map_err(|e| format!("cannot truncate {}: {e}", path.display()))?;
    }
    Ok(out)
}

/// Pick the backend and the model id to send.
fn pick(
    policy: &Policy,
    wanted: Option<&str>,
    model: Option<&str>,
) -> Result<(String, String), String> {
    let (name, cfg) = match wanted {
        Some(n) => policy
            .backends
            .get_key_value(n)
            .ok_or_else(|| format!("--backend {n}: no such backend in the policy"))?,
        None => policy
            .backends
            .iter()
            .find(|(_, c)| c.kind() == "local")
            .ok_or("the policy has no local backend; name one with --backend")?,
    };
    let (id, m) = match model {
        Some(m) => cfg
            .models()
            .get_key_value(m)
            .ok_or_else(|| format!("--model {m}: backend `{name}` has no such model"))?,
        None => cfg
            .models()
            .iter()
            .next()
            .ok_or_else(|| format!("backend `{name}` has no models"))?,
    };
    Ok((
        name.clone(),
        m.upstream_name.clone().unwrap_or_else(|| id.clone()),
    ))
}

async fn ask(
    backend: &Backend,
    model: &str,
    r: &Record,
    max_tokens: u64,
) -> Result<(String, u64), String> {
    let body = json!({"model": model, "temperature": 0, "max_tokens": max_tokens,
                      "messages": [{"role": "user", "content": r.prompt}]});
    let Value::Object(raw) = body else {
        return Err("request is not an object".into());
    };
    let req = crate::api::request::chat_request_map(raw).map_err(|e| e.to_string())?;
    let reply = backend
        .chat(&req, model)
        .await
        .map_err(|e| e.error.to_string())?;
    let ReplyBody::Full { bytes, usage } = reply.body else {
        return Err("backend streamed a non-streamed request".into());
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("reply is not JSON: {e}"))?;
    let text = crate::api::openai::completion_text(&v).to_string();
    Ok((text, usage.completion_tokens))
}

pub async fn run(policy: &Policy, env: &Environment, opts: &Options) -> Result<Report, String> {
    let records = read_records(&opts.data)?;
    let chosen = select(records, opts.limit);
    let mut outcomes = load_outcomes(&opts.out)?;
    let resumed = chosen
        .iter()
        .filter(|r| outcomes.contains_key(&r.id))
        .count();
    let pending: Vec<Record> = chosen
        .iter()
        .filter(|r| !outcomes.contains_key(&r.id))
        .cloned()
        .collect();
    let (name, model) = pick(policy, opts.backend.as_deref(), opts.model.as_deref())?;
    let started = Instant::now();
    let mut failed = 0;
    if !pending.is_empty() {
        let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
        let cfg = &policy.backends[&name];
        let backend = Arc::new(Backend::from_config(&name, cfg, env, metrics)?);
        if let Backend::Local(l) = &*backend {
            l.wait_loaded()
                .await
                .map_err(|e| format!("backend `{name}`: {e}"))?;
        }
        eprintln!(
            "calibrate: {} prompts on {name}/{model} ({resumed} already in {}), concurrency {}",
            pending.len(),
            opts.out.display(),
            opts.concurrency
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.out)
            .map_err(|e| format!("cannot open {}: {e}", opts.out.display()))?;
        let mut progress = Progress {
            total: pending.len(),
            done: 0,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last_line: 0,
        };
        let max_tokens = opts.max_tokens;
        let mut results = futures::stream::iter(pending.into_iter().map(|r| {
            let (backend, model) = (backend.clone(), model.clone());
            async move {
                let t = Instant::now();
                let res = ask(&backend, &model, &r, max_tokens).await;
                (r, res, t.elapsed().as_millis() as u64)
            }
        }))
        .buffer_unordered(opts.concurrency.max(1));
        let mut correct = 0;
        let mut streak = 0;
        while let Some((r, res, ms)) = results.next().await {
            match res {
                Ok((output, completion_tokens)) => {
                    streak = 0;
                    let o = Outcome {
                        correct: check::check(&r, &output),
                        id: r.id.clone(),
                        source: r.source.clone(),
                        category: r.category.clone(),
                        output,
                        completion_tokens,
                        ms,
                    };
                    correct += o.correct as usize;
                    // One write per line, then flush: an interruption loses at most this line.
                    let line = serde_json::to_string(&o).map_err(|e| e.to_string())? + "\n";
                    file.write_all(line.as_bytes())
                        .and_then(|_| file.flush())
                        .map_err(|e| format!("cannot write {}: {e}", opts.out.display()))?;
                    outcomes.insert(o.id.clone(), o);
                }
                Err(e) => {
                    failed += 1;
                    streak += 1;
                    eprintln!("\ncalibrate: {}: {e} (left for the next run)", r.id);
                    if streak >= 10 {
                        return Err(format!("10 prompts in a row failed; last error: {e}"));
                    }
                }
            }
            progress.tick(correct);
        }
    }
    Ok(Report {
        summary: summarise(&chosen, &outcomes),
        backend: name,
        model,
        ran: chosen.len() - resumed - failed,
        resumed,
        failed,
        wall_secs: started.elapsed().as_secs_f64(),
        records: chosen,
        outcomes,
    })
}

/// The whole command: run, report, and (with `head_out`) fit and save the success head.
pub async fn command(
    policy: &Policy,
    env: &Environment,
    opts: &Options,
    head_out: Option<&Path>,
    target_accuracy: f64,
    json_out: bool,
) -> Result<(), String> {
    let models_dir = env.models_dir.clone();
    let rep = run(policy, env, opts).await?;
    let ppm = if rep.wall_secs > 0.0 && rep.ran > 0 {
        rep.ran as f64 * 60.0 / rep.wall_secs
    } else {
        0.0
    };
    let mut v = serde_json::to_value(&rep.summary).map_err(|e| e.to_string())?;
    v["backend"] = json!(rep.backend);
    v["model"] = json!(rep.model);
    v["ran"] = json!(rep.ran);
    v["resumed"] = json!(rep.resumed);
    v["failed"] = json!(rep.failed);
    v["wall_secs"] = json!((rep.wall_secs * 10.0).round() / 10.0);
    v["prompts_per_min"] = json!((ppm * 10.0).round() / 10.0);
    v["out"] = json!(opts.out.display().to_string());
    if let Some(path) = head_out {
        let enc_dir = models_dir.join(&policy.triage.encoder_dir);
        let encoder = crate::classifier::encoder::Encoder::load(&enc_dir)?;
        let target = format!("{}/{}", rep.backend, rep.model);
        let head = super::success::train(&encoder, &rep.records, &rep.outcomes, &target, 42)?;
        let text = serde_json::to_string(&head).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let pick = head.threshold_for(target_accuracy);
        v["success_head"] = json!({
            "path": path.display().to_string(),
            "n": head.n, "base_rate": head.base_rate, "cv_auc": head.cv_auc,
            "loso_auc": head.loso_auc, "loso_by_source": head.loso_by_source,
            "curve": head.curve,
            "target_accuracy": target_accuracy,
            "threshold": pick.map(|p| p.threshold),
            "local_share_at_threshold": pick.map(|p| p.local_share),
            "local_accuracy_at_threshold": pick.map(|p| p.local_accuracy),
        });
    }
    if json_out {
        println!("{v}");
        return Ok(());
    }
    let s = &rep.summary;
    println!(
        "{} on {} prompts: accuracy {:.3} ({} run now, {} resumed, {} failed; {:.0} s, {:.1} prompts/min)",
        v["model"].as_str().unwrap_or(""),
        s.n,
        s.accuracy,
        rep.ran,
        rep.resumed,
        rep.failed,
        rep.wall_secs,
        ppm
    );
    println!(
        "{:<32} {:>5} {:>9} {:>7}",
        "source", "n", "accuracy", "chance"
    );
    for (k, st) in &s.by_source {
        println!(
            "{k:<32} {:>5} {:>9.3} {:>7.3}",
            st.n, st.accuracy, st.chance
        );
    }
    if let Some(h) = v.get("success_head") {
        if let Some(a) = h["loso_auc"].as_f64() {
            println!("success head, leave-one-source-out: pooled AUC {a:.3}");
            println!(
                "{:<32} {:>5} {:>8} {:>7}",
                "held-out source", "n", "correct", "AUC"
            );
            for (s, r) in h["loso_by_source"].as_object().into_iter().flatten() {
                let auc = r["auc"]
                    .as_f64()
                    .map_or_else(|| "-".to_string(), |a| format!("{a:.3}"));
                let n = r["n"].as_u64().unwrap_or(0);
                let correct = r["correct"].as_u64().unwrap_or(0);
                println!("{s:<32} {n:>5} {correct:>8} {auc:>7}");
            }
        }
        println!(
            "success head: out-of-fold AUC {:.3}, base rate {:.3}; written to {}",
            h["cv_auc"].as_f64().unwrap_or(0.0),
            h["base_rate"].as_f64().unwrap_or(0.0),
            h["path"].as_str().unwrap_or("")
        );
        println!(
            "{:>10} {:>12} {:>15}",
            "threshold", "local share", "local accuracy"
        );
        for p in h["curve"].as_array().into_iter().flatten() {
            println!(
                "{:>10.3} {:>12.2} {:>15.3}",
                p["threshold"].as_f64().unwrap_or(0.0),
                p["local_share"].as_f64().unwrap_or(0.0),
                p["local_accuracy"].as_f64().unwrap_or(0.0)
            );
        }
        match h["threshold"].as_f64() {
            Some(t) => println!(
                "for {:.0}% local accuracy: route with `min_local_success: {t:.3}` (keeps {:.0}% local)",
                target_accuracy * 100.0,
                h["local_share_at_threshold"].as_f64().unwrap_or(0.0) * 100.0
            ),
            None => println!("no threshold reaches {:.0}% local accuracy", target_accuracy * 100.0),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_a_corrupt_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.jsonl");
        let line = r#"{"id":"a","source":"s","category":"c","correct":true,"output":"x","completion_tokens":1,"ms":2}"#;
        std::fs::write(&p, format!("{line}\n{{\"id\":\"b")).unwrap();
        let got = load_outcomes(&p).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{line}\n"));
        std::fs::write(&p, format!("{{\"id\": 1}}\n{line}\n")).unwrap();
        let e = load_outcomes(&p).unwrap_err();
        assert!(e.contains(":1:"), "{e}");
        assert!(
            std::fs::read_to_string(&p).unwrap().contains(line),
            "nothing deleted"
        );
    }
}
