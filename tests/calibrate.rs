//! Calibration end to end: the Rust answer checker against the reference
//! `check_answer.py` (every record, synthetic replies, and the baseline
//! outputs), a real `calibrate` run on the local model with interruption and
//! resume, and routing on `local_success` through a fitted success head.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use slmgate::calibrate::check::{self, Record};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_slmgate");

fn datasets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets")
}

fn answers() -> PathBuf {
    datasets().join("answers.jsonl")
}

/// Replies meant to hit every branch of every rule: right and wrong letters,
/// labels, numbers and answers, with the decorations models add.
fn synthetic_replies(r: &Record) -> Vec<String> {
    let gold = r.answers[0].clone();
    let mut v = vec![
        String::new(),
        "I don't know.".into(),
        gold.clone(),
        format!("The answer is {gold}."),
        format!("**{gold}**"),
        format!("Answer: {gold}\nBecause reasons."),
        r.prompt.chars().take(60).collect(),
    ];
    let opts = r.options.clone().unwrap_or_default();
    let letters: Vec<char> = "ABCDEFGH".chars().take(opts.len()).collect();
    for (i, o) in opts.iter().enumerate() {
        let next = &opts[(i + 1) % opts.len()];
        v.push(o.clone());
        v.push(format!("{o}, because it fits."));
        v.push(format!("not {o}"));
        v.push(format!("{o} or {next}"));
        v.push(format!("The sentiment is {o}."));
        v.push(format!("It is not {next}, it is {o}."));
        v.push(format!("I think it is a {}.", o.to_lowercase()));
        if let Some(l) = letters.get(i) {
            v.push(format!("{l}"));
            v.push(format!("({l})"));
            v.push(format!("{l}. {o}"));
            v.push(format!("{l}) {o}\n{next}"));
            v.push(format!("The correct answer is {l}: {o}"));
            v.push(format!("{}", l.to_ascii_lowercase()));
        }
    }
    if r.check == "number" {
        let g: f64 = gold.replace(',', "").parse().unwrap_or(0.0);
        v.push(format!("{}", g + 1.0));
        v.push(format!("{gold}.00"));
        v.push(format!("#### {gold}"));
        v.push(format!("She pays ${gold} after 3 weeks."));
        v.push(format!("{gold} - 3"));
        v.push("The answer is 1,234,567 in total".into());
    }
    if r.check == "contains" {
        for a in &r.answers {
            v.push(format!("It was {a} in 1999."));
            v.push(a.to_uppercase());
            v.push(format!("the {a}s"));
            v.push(format!("{}{a}", "x ".repeat(150)));
        }
    }
    v
}

/// The reference checker's verdicts for (record, reply) pairs.
fn reference_verdicts(pairs: &[(Value, String)], dir: &Path) -> Vec<bool> {
    let input = dir.join("pairs.jsonl");
    let body: String = pairs
        .iter()
        .map(|(r, t)| json!({"record": r, "reply": t}).to_string() + "\n")
        .collect();
    std::fs::write(&input, body).unwrap();
    let script = "import json,sys\nsys.path.insert(0, sys.argv[1])\nfrom check_answer import check\n\
        out=[check(d['record'], d['reply']) for d in map(json.loads, open(sys.argv[2], encoding='utf-8'))]\n\
        print(json.dumps(out))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(datasets())
        .arg(&input)
        .output()
        .expect("python3 runs the reference checker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn checker_agrees_with_the_reference_on_every_record() {
    let text = std::fs::read_to_string(answers()).unwrap();
    let raw: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(raw.len(), 2680);
    let mut pairs = Vec::new();
    let mut ours = Vec::new();
    for v in &raw {
        let r: Record = serde_json::from_value(v.clone()).unwrap();
        for t in synthetic_replies(&r) {
            ours.push(check::check(&r, &t));
            pairs.push((v.clone(), t));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let theirs = reference_verdicts(&pairs, dir.path());
    let diff: Vec<String> = pairs
        .iter()
        .zip(ours.iter().zip(&theirs))
        .filter(|(_, (a, b))| a != b)
        .take(10)
        .map(|((r, t), (a, b))| format!("{} {:?}: rust {a}, reference {b}", r["id"], t))
        .collect();
    assert!(
        diff.is_empty(),
        "{} pairs, disagreements:\n{}",
        pairs.len(),
        diff.join("\n")
    );
    let right = ours.iter().filter(|x| **x).count();
    assert!(
        right > pairs.len() / 10 && right < pairs.len() * 9 / 10,
        "both verdicts occur: {right}"
    );
}

#[test]
fn checker_agrees_with_the_reference_on_the_baseline_outputs() {
    let recs: std::collections::HashMap<String, Value> = std::fs::read_to_string(answers())
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let outputs =
        std::fs::read_to_string(datasets().join("baselines/smollm2-q41-sample-outputs.jsonl"))
            .unwrap();
    let pairs: Vec<(Value, String)> = outputs
        .lines()
        .map(|l| {
            let o: Value = serde_json::from_str(l).unwrap();
            (
                recs[o["id"].as_str().unwrap()].clone(),
                o["output"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(pairs.len(), 300);
    let ours: Vec<bool> = pairs
        .iter()
        .map(|(r, t)| check::check(&serde_json::from_value(r.clone()).unwrap(), t))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(ours, reference_verdicts(&pairs, dir.path()));
    assert_eq!(
        ours.iter().filter(|x| **x).count(),
        67,
        "the baseline README's 67/300"
    );
}

fn calibrate(args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("calibrate")
        .args(args)
        .env("SLMGATE_MODELS_DIR", models_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every kept line is whole"))
        .collect()
}

/// A real run on the local model: interrupted (SIGKILL) part-way, resumed,
/// then summarised with the contract's keys.
#[test]
fn calibrate_runs_the_real_model_and_resumes_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outcomes.jsonl");
    let out_s = out.to_str().unwrap();
    let data = answers();
    let data_s = data.to_str().unwrap();
    let limit = "20";
    let mut child = calibrate(&["--data", data_s, "--out", out_s, "--limit", limit, "--json"]);
    let deadline = Instant::now() + Duration::from_secs(300);
    while lines(&out).len() < 3 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A torn line, as a kill mid-write would leave.
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut f, br#"{"id":"half"#).unwrap();
    let done_before = lines_lossy(&out);
    assert!(done_before >= 3);

    let v = finish(calibrate(&[
        "--data", data_s, "--out", out_s, "--limit", limit, "--json",
    ]));
    assert_eq!(v["n"], 20, "{v}");
    assert_eq!(v["resumed"].as_u64().unwrap() as usize, done_before, "{v}");
    assert_eq!(v["ran"].as_u64().unwrap() as usize + done_before, 20, "{v}");
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let by = v["by_source"].as_object().unwrap();
    assert_eq!(by.len(), 10, "--limit interleaves sources: {v}");
    for (src, s) in by {
        assert_eq!(s["n"], 2, "{src}");
        assert!(
            s["accuracy"].as_f64().is_some() && s["chance"].as_f64().is_some(),
            "{src}: {s}"
        );
    }
    assert_eq!(by["gsm8k-test"]["chance"], 0.0);
    let rows = lines(&out);
    assert_eq!(rows.len(), 20, "torn line dropped, nothing run twice");
    let ids: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 20);
    // Each verdict is the checker's verdict on the kept output.
    let recs: Vec<Record> = slmgate::calibrate::read_records(&data).unwrap();
    for row in &rows {
        let r = recs.iter().find(|r| r.id == row["id"]).unwrap();
        assert_eq!(
            check::check(r, row["output"].as_str().unwrap()),
            row["correct"]
        );
        assert!(row["completion_tokens"].as_u64().unwrap() <= 64);
    }
    let correct = rows.iter().filter(|r| r["correct"] == true).count();
    assert!((acc - correct as f64 / 20.0).abs() < 1e-9);
}

fn lines_lossy(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .count()
}

/// Outcomes for the first `n` selected records, correct exactly on the two
/// classification sources (test data for the routing mechanism).
fn fabricated_outcomes(path: &Path, n: usize) {
    let recs = slmgate::calibrate::select(
        slmgate::calibrate::read_records(&answers()).unwrap(),
        Some(n),
    );
    let body: String = recs
        .iter()
        .map(|r| {
            let ok = r.category == "classification";
            json!({"id": r.id, "source": r.source, "category": r.category, "correct": ok,
                   "output": "x", "completion_tokens": 1, "ms": 1})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, body).unwrap();
}

#[tokio::test]
async fn routes_on_local_success_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outcomes.jsonl");
    let head = dir.path().join("success.json");
    fabricated_outcomes(&out, 200);
    // Every prompt already has an outcome: nothing runs, the head is fitted.
    let v = finish(calibrate(&[
        "--data",
        answers().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--limit",
        "200",
        "--json",
        "--head-out",
        head.to_str().unwrap(),
        "--target-accuracy",
        "0.9",
    ]));
    assert_eq!(v["ran"], 0, "{v}");
    assert_eq!(
        v["by_source"]["sentiment-labelled-sentences"]["accuracy"],
        1.0
    );
    let h = &v["success_head"];
    assert!(h["cv_auc"].as_f64().unwrap() > 0.9, "{h}");
    let threshold = h["threshold"].as_f64().expect("a threshold for 90%");
    assert!(h["local_accuracy_at_threshold"].as_f64().unwrap() >= 0.9);
    assert!(h["curve"].as_array().unwrap().len() >= 10);

    let policy = format!(
        r#"
version: 1
backends:
  cloud:
    kind: openai
    api_key_env: NONE
    base_url: http://127.0.0.1:9/v1
    models:
      big: {{ input_per_mtok: 1, output_per_mtok: 2 }}
      small: {{ input_per_mtok: 0.1, output_per_mtok: 0.2 }}
triage:
  kind: model
  local_success_head: {}
routes:
  auto:
    tiers:
      - {{ name: local-ok, min_local_success: {threshold}, target: cloud/small }}
      - {{ name: rest, target: cloud/big }}
"#,
        head.display()
    );
    let app = slmgate::app(state(&policy, &[]));
    let ask = |prompt: &str| post_json("/v1/triage", &json!({"prompt": prompt}));
    let r = send(&app, ask("\"The food was cold and the waiter was rude.\"\n\nAnswer with one word: positive or negative.")).await;
    let v = r.json();
    assert_eq!(v["route"], "auto:local-ok", "{v}");
    assert!(v["local_success"].as_f64().unwrap() >= threshold, "{v}");
    let r = send(&app, ask("A baker sells 23 cakes a day at $4 each and pays $30 a day for rent. How much does she earn in a week? Solve the problem. You may show your working, but finish with a final line of the form \"Answer: <number>\".")).await;
    let v = r.json();
    assert_eq!(v["route"], "auto:rest", "{v}");
    assert!(v["local_success"].as_f64().unwrap() < threshold, "{v}");

    // A tier on local_success without a head is a policy error naming the fix.
    let bad = policy.replace(&format!("  local_success_head: {}\n", head.display()), "");
    let e = slmgate::config::Policy::from_yaml(&bad).unwrap_err();
    assert!(
        e.contains("min_local_success") && e.contains("local_success_head"),
        "{e}"
    );
}
