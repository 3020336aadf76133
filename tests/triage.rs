//! The trained triage end to end: the real MiniLM encoder and the committed
//! head, the CLI contract (`triage`, `eval`, `train`), and `/v1/triage`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_slmgate");

fn datasets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets")
}

fn slmgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("SLMGATE_MODELS_DIR", models_dir())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first `per_source` records of each source of a JSONL file, as a temp file.
fn subset(file: &str, per_source: usize) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(datasets().join(file)).unwrap();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut out = String::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let n = seen
            .entry(v["source"].as_str().unwrap_or("").to_string())
            .or_default();
        if *n < per_source {
            *n += 1;
            out += line;
            out.push('\n');
        }
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), out).unwrap();
    f
}

#[test]
fn triage_cli_json_contract() {
    let (ok, out, err) = slmgate(&["triage", "--json", "What is the capital of Japan?"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let score = v["score"].as_f64().unwrap();
    assert!((0.0..0.5).contains(&score), "{v}");
    assert!(
        v["category"].is_string() && v["route"] == "auto:simple",
        "{v}"
    );
    let (ok, out, _) = slmgate(&[
        "triage",
        "--json",
        "Write a Python function that parses a CSV file with quoted fields and embedded newlines, \
         handles malformed rows, and then prove its running time is linear in the input size.",
    ]);
    assert!(ok);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["score"].as_f64().unwrap() > 0.5, "{v}");
    assert_eq!(v["route"], "auto:hard");
}

#[test]
fn eval_data_json_contract_and_quality() {
    let f = subset("dev.jsonl", 12);
    let (ok, out, err) = slmgate(&["eval", "--data", f.path().to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    for k in ["n", "auc", "accuracy", "cpt90", "cpt95"] {
        assert!(v[k].is_number(), "{k} in {v}");
    }
    for b in ["random", "length", "features"] {
        assert!(v["baselines"][b]["auc"].is_number(), "{b}");
    }
    assert!(v["n"].as_u64().unwrap() > 100);
    // The trained head must beat the length-only baseline clearly on real prompts.
    let (auc, len_auc) = (
        v["auc"].as_f64().unwrap(),
        v["baselines"]["length"]["auc"].as_f64().unwrap(),
    );
    assert!(
        auc > 0.9 && auc > len_auc + 0.1,
        "auc {auc} vs length {len_auc}"
    );
}

#[test]
fn eval_loso_json_contract() {
    // Two files, as for train + dev; every source held out once.
    let (a, b) = (subset("train.jsonl", 6), subset("dev.jsonl", 3));
    let (ok, out, err) = slmgate(&[
        "eval",
        "--loso",
        "--data",
        a.path().to_str().unwrap(),
        "--data",
        b.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    for k in [
        &v["loso_auc"],
        &v["baselines"]["length"]["loso_auc"],
        &v["baselines"]["features"]["loso_auc"],
    ] {
        let x = k.as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&x), "{v}");
    }
    let by = v["by_source"].as_object().unwrap();
    assert!(by.len() >= 20, "{v}");
    // A mixed source reports AUCs; a one-label source its mean and right share.
    for (src, r) in by {
        let keys: &[&str] = if r["auc"].is_null() {
            &[
                "n",
                "mean_score",
                "right_share",
                "length_right_share",
                "features_right_share",
            ]
        } else {
            &["n", "auc", "length_auc", "features_auc"]
        };
        for k in keys {
            assert!(r[*k].is_number(), "{src}.{k}: {r}");
        }
    }
    assert!(by["gsm8k"]["auc"].is_null(), "gsm8k is all hard");
    // Without a source field there is nothing to hold out.
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "{\"prompt\": \"hi\", \"label\": \"simple\"}\n").unwrap();
    let (ok, _, err) = slmgate(&["eval", "--loso", "--data", f.path().to_str().unwrap()]);
    assert!(!ok && err.contains("source"), "{err}");
}

#[test]
fn eval_outcomes_json_contract() {
    let f = subset("routellm_outcomes.jsonl", 40);
    let (ok, out, err) = slmgate(&["eval", "--outcomes", f.path().to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    for src in ["routellm-mmlu", "routellm-gsm8k", "routellm-mt-bench"] {
        let r = &v[src];
        assert_eq!(r["n"], 40, "{src}: {v}");
        for k in ["cpt50", "cpt80"] {
            let x = r[k].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&x), "{src}.{k} = {x}");
        }
        // PGR is gain / (strong - weak) over the whole set: where the weak model
        // wins some prompts and the total gap is small (40 MT-bench prompts),
        // the area can exceed 1. It must still be a number.
        for k in ["apgr", "random_apgr"] {
            assert!(r[k].as_f64().is_some_and(f64::is_finite), "{src}.{k}: {r}");
        }
    }
}

#[test]
fn train_is_reproducible_bit_for_bit() {
    let data = subset("train.jsonl", 8);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    for out in [&a, &b] {
        let (ok, _, err) = slmgate(&[
            "train",
            "--data",
            data.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--seed",
            "3",
        ]);
        assert!(ok, "{err}");
    }
    let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(
        x == y && !x.is_empty(),
        "same data and seed must give the same head"
    );
    let heads: slmgate::classifier::head::HeadsFile = serde_json::from_slice(&x).unwrap();
    assert_eq!(heads.seed, 3);
    assert_eq!(
        heads.full.hard_w.len(),
        384 * 2 + slmgate::classifier::head::FEATURES.len()
    );
}

const MODEL_POLICY: &str = r#"
version: 1
backends:
  cloud:
    kind: openai
    api_key_env: TRIAGE_TEST_KEY
    base_url_env: TRIAGE_TEST_URL
    base_url: http://127.0.0.1:9/v1
    models:
      big: { input_per_mtok: 2.5, output_per_mtok: 10 }
      small: { input_per_mtok: 0.15, output_per_mtok: 0.6 }
triage: { kind: model, cache_size: 100, cache_ttl_secs: 60 }
routes:
  auto:
    tiers:
      - { name: simple, max_score: 0.5, target: cloud/small }
      - { name: hard, target: cloud/big }
"#;

#[tokio::test]
async fn triage_endpoint_is_a_dry_run_and_routes_use_the_model() {
    use wiremock::{matchers::body_partial_json, Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(body_partial_json(json!({"model": "small"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        ))
        .expect(3)
        .mount(&server)
        .await;
    let url = format!("{}/v1", server.uri());
    let app = slmgate::app(state(
        MODEL_POLICY,
        &[("TRIAGE_TEST_KEY", "k"), ("TRIAGE_TEST_URL", &url)],
    ));
    let r = send(
        &app,
        post_json(
            "/v1/triage",
            &json!({"prompt": "Translate 'good morning' into French."}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["route"], "auto:simple", "{v}");
    assert_eq!(v["target"], "cloud/small");
    assert_eq!(v["triage"], "minilm");
    let r = send(&app, post_json("/v1/triage", &json!({"messages": "nope"}))).await;
    assert_eq!(r.status, 400);
    // A routed request carries the score and category; the second identical one hits the cache.
    for _ in 0..2 {
        let r = send(
            &app,
            post_json(
                "/v1/chat/completions",
                &chat("auto", "Translate 'good morning' into French."),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-slmgate-route"), "auto:simple");
        assert!(!r.header("x-slmgate-triage-category").is_empty());
    }
    // Explicit models only label the response: quick triage, not cached.
    let r = complete(
        &app,
        &chat("small", "Name three prime numbers larger than one hundred."),
    )
    .await;
    assert_eq!(r.header("x-slmgate-route"), "direct");
    assert!(!r.header("x-slmgate-triage-score").is_empty());
    let m = send(
        &app,
        http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .body;
    assert!(
        m.contains(r#"slmgate_cache_requests_total{cache="triage",result="miss"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"slmgate_cache_requests_total{cache="triage",result="hit"} 2"#),
        "{m}"
    );
}

#[test]
fn missing_encoder_refuses_to_start_unless_features_are_selected() {
    let policy = slmgate::config::Policy::from_yaml(MODEL_POLICY).unwrap();
    let opts = slmgate::state::StateOptions {
        env: Box::new(|_| None),
        models_dir: PathBuf::from("/nonexistent"),
        start_local: true,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async { slmgate::state::AppState::new(policy, opts).err().unwrap() });
    assert!(
        err.contains("slmgate models fetch") && err.contains("kind: features"),
        "{err}"
    );
}

/// The encoder's fast WordPiece path gives exactly the full tokenizer's ids:
/// every prompt of the datasets, plus generated text full of punctuation,
/// control characters, long words and added tokens.
#[test]
fn fast_tokenizer_matches_the_full_one() {
    use proptest::prelude::*;
    let enc = slmgate::classifier::encoder::Encoder::load(&models_dir().join("minilm")).unwrap();
    assert!(
        enc.has_fast_tokenizer(),
        "MiniLM's tokenizer takes the fast path"
    );
    let mut checked = 0;
    for file in ["train.jsonl", "dev.jsonl", "answers.jsonl"] {
        let text = std::fs::read_to_string(datasets().join(file)).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let mut texts = vec![];
            if let Some(p) = v["prompt"].as_str() {
                texts.push(p.to_string());
            }
            for m in v["messages"].as_array().into_iter().flatten() {
                texts.extend(m["content"].as_str().map(str::to_string));
            }
            for t in texts {
                assert_eq!(enc.tokenize(&t), enc.tokenize_full(&t), "{t:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 9000, "{checked} texts");
    let mut runner = proptest::test_runner::TestRunner::default();
    let strategy = proptest::string::string_regex(
        "([ -~\t\n\r\x0b\x0c\x01\x7f]|\\[MASK\\]|\\[cls\\]|supercalifragilisticexpialidocious){0,80}",
    )
    .unwrap();
    runner
        .run(&strategy, |t| {
            prop_assert_eq!(enc.tokenize(&t), enc.tokenize_full(&t), "{:?}", t);
            Ok(())
        })
        .unwrap();
    let long = "x".repeat(150) + " ok";
    assert_eq!(enc.tokenize(&long), enc.tokenize_full(&long));
}
