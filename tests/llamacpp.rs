//! What only the llama.cpp engine (`engine: llamacpp`, cargo feature
//! `llamacpp`) promises beyond the shared local suite (tests/local.rs, which
//! scripts/test runs on both engines): per-request seeds, and its context
//! limit answered as a client error. Real SmolLM2-135M, no mock.
#![cfg(feature = "llamacpp")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

fn yaml() -> String {
    let gguf = smollm2_gguf();
    format!(
        r#"
version: 1
backends:
  local:
    kind: local
    engine: llamacpp
    gguf: {}
    models:
      local: {{ input_per_mtok: 0, output_per_mtok: 0 }}
routes:
  auto:
    tiers:
      - {{ name: all, target: local/local }}
"#,
        gguf.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sampling_repeats_and_an_oversized_prompt_is_a_400() {
    let s = state(&yaml(), &[]);
    s.wait_ready().await.expect("model loads");
    let app = slmgate::app(s);

    // Sampled (temperature 1) but seeded: the same seed gives the same answer,
    // also while another request runs beside it.
    let body = |seed: u64| {
        json!({"model": "local", "temperature": 1.0, "seed": seed, "max_tokens": 24,
               "messages": [{"role": "user", "content": "Tell me something about cats."}]})
    };
    let text = |r: &Reply| {
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = complete(&app, &body(42)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let other = {
        let app = app.clone();
        tokio::spawn(async move { complete(&app, &body(7)).await })
    };
    let again = complete(&app, &body(42)).await;
    assert_eq!(text(&again), text(&first));
    assert_eq!(other.await.unwrap().status, 200);

    // Past a slot's context (8,192 tokens / 8 slots, at least 2,048): the
    // client's error, in its format.
    let long = "word ".repeat(3000);
    let r = complete(
        &app,
        &json!({"model": "local", "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("the local model's context is 2048 tokens"),
        "{msg}"
    );
}
