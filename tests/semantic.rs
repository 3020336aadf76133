//! The semantic cache with the real MiniLM encoder: precision and recall on
//! the hand-made paraphrase set (`tests/data/paraphrases.jsonl`: true
//! paraphrases against near-miss traps — negations, swapped entities,
//! changed numbers, changed entities — and unrelated pairs), per threshold,
//! with and without the guards; and the layer in the request path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use slmgate::cache::guards::{compatible, Signature};

fn encoder() -> std::sync::Arc<dyn slmgate::classifier::Triage> {
    let policy = slmgate::config::Policy::from_yaml(slmgate::config::DEFAULT_POLICY).unwrap();
    slmgate::state::build_triage(&policy, &models_dir())
        .expect("the MiniLM encoder (slmgate models fetch)")
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Precision and recall per threshold; the default threshold with guards
/// must keep precision high (a wrong cached answer is worse than a miss).
#[test]
fn paraphrase_set_precision_and_recall_per_threshold() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/paraphrases.jsonl"),
    )
    .unwrap();
    let pairs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(pairs.len() >= 200, "at least 200 pairs");
    let enc = encoder();
    let scored: Vec<(f32, bool, bool, String)> = pairs
        .iter()
        .map(|p| {
            let (a, b) = (p["a"].as_str().unwrap(), p["b"].as_str().unwrap());
            let (ea, eb) = (enc.embed(a).unwrap(), enc.embed(b).unwrap());
            (
                cos(&ea, &eb),
                compatible(&Signature::of(a), &Signature::of(b)),
                p["same"].as_bool().unwrap(),
                p["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let positives = scored.iter().filter(|s| s.2).count() as f64;
    println!("| threshold | guards | precision | recall | false hits (kind) |");
    println!("|---:|---|---:|---:|---|");
    let mut at_default = (0.0, 0.0);
    for t in [0.80f32, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96] {
        for guards in [false, true] {
            let hits: Vec<_> = scored
                .iter()
                .filter(|s| s.0 >= t && (!guards || s.1))
                .collect();
            let tp = hits.iter().filter(|s| s.2).count() as f64;
            let precision = if hits.is_empty() {
                1.0
            } else {
                tp / hits.len() as f64
            };
            let recall = tp / positives;
            let mut wrong: std::collections::BTreeMap<&str, usize> = Default::default();
            for s in hits.iter().filter(|s| !s.2) {
                *wrong.entry(s.3.as_str()).or_default() += 1;
            }
            println!(
                "| {t:.2} | {} | {precision:.3} | {recall:.3} | {wrong:?} |",
                if guards { "on" } else { "off" }
            );
            if guards && (t - 0.85).abs() < 1e-6 {
                at_default = (precision, recall);
            }
        }
    }
    let (p, r) = at_default;
    assert!(p >= 0.95, "precision at the default threshold: {p}");
    assert!(r >= 0.6, "recall at the default threshold: {r}");
}

fn policy(upstream: &str) -> String {
    format!(
        r#"
version: 1
backends:
  openai:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {upstream}
    retries: {{ max_retries: 0 }}
    models:
      gpt-4o-mini: {{ input_per_mtok: 0.15, output_per_mtok: 0.60 }}
reference_model: openai/gpt-4o-mini
triage: {{ kind: model }}
routes:
  auto:
    semantic_cache: true
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
  plain:
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
cache:
  semantic: {{}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paraphrases_hit_and_traps_miss_in_the_request_path() {
    let up = openai_upstream("Paris.", 2).await;
    let app = slmgate::app(state(
        &policy(&format!("{}/v1", up.uri())),
        &[("TEST_OPENAI_KEY", SECRET)],
    ));
    let ask = |model: &str, q: &str| {
        let mut b = chat(model, q);
        b["temperature"] = json!(0);
        b
    };
    let first = complete(&app, &ask("auto", "What is the capital of France?")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-slmgate-cache"), "miss");
    let para = complete(&app, &ask("auto", "what's the capital city of France")).await;
    assert_eq!(para.header("x-slmgate-cache"), "hit", "{:?}", para.headers);
    assert_eq!(para.header("x-slmgate-cache-kind"), "semantic");
    assert_eq!(para.json()["choices"][0]["message"]["content"], "Paris.");
    let sim: f64 = para.header("x-slmgate-cache-similarity").parse().unwrap();
    assert!(sim >= 0.85, "{sim}");
    for trap in [
        "What is the capital of Spain?",
        "What is not the capital of France?",
        "Write a poem about France.",
    ] {
        let r = complete(&app, &ask("auto", trap)).await;
        assert_eq!(r.header("x-slmgate-cache"), "miss", "{trap}");
    }
    // Routes without `semantic_cache` never look; sampled requests bypass.
    let r = complete(&app, &ask("plain", "what's the capital city of France")).await;
    assert_ne!(r.header("x-slmgate-cache-kind"), "semantic");
    let r = complete(&app, &chat("auto", "what's the capital city of France")).await;
    assert_ne!(r.header("x-slmgate-cache"), "hit");
    // An earlier turn that differs is another bucket.
    let mut convo = ask("auto", "what's the capital city of France");
    convo["messages"] = json!([
        {"role": "system", "content": "Answer in German."},
        {"role": "user", "content": "what's the capital city of France"}
    ]);
    assert_eq!(
        complete(&app, &convo).await.header("x-slmgate-cache"),
        "miss"
    );
}
