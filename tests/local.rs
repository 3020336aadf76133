//! The local backend against the real SmolLM2-135M model (no mock). Needs
//! `slmgate models fetch` first (the test script does it). All tests share one
//! loaded model on one runtime, so the model loads once.
//!
//! The engine is mistral.rs unless `SLMGATE_TEST_ENGINE=llamacpp` (a build
//! with `--features llamacpp`; scripts/test runs this file both ways).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use slmgate::state::AppState;
use std::sync::{Arc, LazyLock};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;

static RT: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});
static STATE: OnceCell<Arc<AppState>> = OnceCell::const_new();
static SMALL_QUEUE: OnceCell<Arc<AppState>> = OnceCell::const_new();

/// The engine under test: `mistralrs` (default) or `llamacpp`.
fn engine() -> String {
    std::env::var("SLMGATE_TEST_ENGINE").unwrap_or_else(|_| "mistralrs".into())
}

fn yaml(max_queue: usize) -> String {
    let gguf = smollm2_gguf();
    format!(
        r#"
version: 1
backends:
  cloud:
    kind: openai
    api_key_env: NO_SUCH_KEY_SET
    base_url: http://127.0.0.1:9/v1
    models:
      gpt-4o-mini: {{ input_per_mtok: 0.15, output_per_mtok: 0.60 }}
  local:
    kind: local
    engine: {}
    gguf: {}
    max_queue: {max_queue}
    retry_after_secs: 2
    models:
      local: {{ aliases: [smollm2-135m-instruct], input_per_mtok: 0, output_per_mtok: 0 }}
reference_model: cloud/gpt-4o-mini
routes:
  auto:
    tiers:
      - {{ name: simple, max_score: 0.5, target: local/local }}
      - {{ name: hard, target: cloud/gpt-4o-mini }}
    fallbacks: [local/local]
"#,
        engine(),
        gguf.display()
    )
}

async fn shared() -> axum::Router {
    let s = STATE
        .get_or_init(|| async {
            let s = state(&yaml(64), &[]);
            s.wait_ready().await.expect("model loads");
            s
        })
        .await;
    slmgate::app(s.clone())
}

fn local(prompt: &str, extra: Value) -> Value {
    let mut b = json!({"model": "local", "temperature": 0, "messages": [{"role": "user", "content": prompt}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[test]
fn factual_answer_at_temperature_zero() {
    RT.block_on(async {
        let app = shared().await;
        let r = complete(
            &app,
            &local("What is the capital of Japan?", json!({"max_tokens": 24})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-slmgate-backend"), "local");
        assert_eq!(r.header("x-slmgate-cost-usd"), "0");
        let v = r.json();
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(text.contains("Tokyo"), "{text}");
        assert_eq!(v["model"], "local");
        let u = &v["usage"];
        assert!(u["prompt_tokens"].as_u64().unwrap() > 5);
        let c = u["completion_tokens"].as_u64().unwrap();
        assert!((1..=24).contains(&c));
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap() + c
        );
    });
}

#[test]
fn max_tokens_ends_with_length() {
    RT.block_on(async {
        let app = shared().await;
        let r = complete(
            &app,
            &local(
                "Write a long story about a dragon.",
                json!({"max_tokens": 5}),
            ),
        )
        .await;
        let v = r.json();
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 5);
    });
}

/// An answer that hits `max_tokens` halfway through a multi-byte character
/// (here: the model starts a zero-width space) still ends properly. Found by
/// calibration (`nq-open-dev-2684`); mistral.rs used to close the stream
/// without its final chunk (vendor/PATCHES.md).
#[test]
fn an_answer_cut_inside_a_multibyte_character_still_finishes() {
    RT.block_on(async {
        let app = shared().await;
        let prompt = "which foreign currency option is the\u{200b} right but not the\u{200b} obligation to buy foreign\u{200b} currency?\n\nAnswer with just the answer (a name, date, number or short phrase), no explanation.";
        for stream in [false, true] {
            let r = complete(&app, &local(prompt, json!({"max_tokens": 64, "stream": stream}))).await;
            assert_eq!(r.status, 200, "stream {stream}: {}", r.body);
            if stream {
                assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"), "{}", r.body);
            } else {
                let v = r.json();
                assert!(v["choices"][0]["finish_reason"].is_string(), "{v}");
                assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
            }
        }
    });
}

#[test]
fn streamed_answer_has_chunks_final_chunk_and_usage() {
    RT.block_on(async {
        let app = shared().await;
        let body = local(
            "What is 2 + 2?",
            json!({"stream": true, "max_tokens": 16, "stream_options": {"include_usage": true}}),
        );
        let r = complete(&app, &body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), "text/event-stream");
        let chunks = r.chunks();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(!text.trim().is_empty());
        let fin = &chunks[chunks.len() - 2];
        assert!(
            matches!(
                fin["choices"][0]["finish_reason"].as_str(),
                Some("stop" | "length")
            ),
            "{fin}"
        );
        let usage = &chunks[chunks.len() - 1];
        assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
        assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "local"));
    });
}

#[test]
fn stop_strings_are_honoured() {
    RT.block_on(async {
        let app = shared().await;
        let base = local("What is the capital of Japan?", json!({"max_tokens": 24}));
        let full = complete(&app, &base).await.json();
        let text = full["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let stop = "Tokyo";
        assert!(text.contains(stop), "{text}");
        let mut b = base.clone();
        b["stop"] = json!([stop]);
        let cut = complete(&app, &b).await.json();
        let got = cut["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(got, &text[..text.find(stop).unwrap()]);
        assert_eq!(cut["choices"][0]["finish_reason"], "stop");
        b["stream"] = json!(true);
        let r = complete(&app, &b).await;
        let streamed: String = r
            .sse_data()
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(streamed, got);
    });
}

#[test]
fn eight_concurrent_requests_complete() {
    RT.block_on(async {
        let app = shared().await;
        let prompts = [
            "What is 2 + 2?",
            "Name a color.",
            "What is the capital of Japan?",
            "Say hello.",
            "Name a fruit.",
            "What is 3 + 5?",
            "Name an animal.",
            "What day comes after Monday?",
        ];
        let tasks: Vec<_> = prompts
            .iter()
            .map(|p| {
                let app = app.clone();
                let body = local(p, json!({"max_tokens": 12}));
                tokio::spawn(async move { complete(&app, &body).await })
            })
            .collect();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r.json()["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
        }
    });
}

#[test]
fn full_queue_answers_429_with_retry_after() {
    RT.block_on(async {
        let s = SMALL_QUEUE
            .get_or_init(|| async {
                let s = state(&yaml(1), &[]);
                s.wait_ready().await.expect("model loads");
                s
            })
            .await;
        let app = slmgate::app(s.clone());
        // Hold the only slot with a long stream, read slowly.
        let long = local(
            "Write a very long story about the sea.",
            json!({"stream": true, "max_tokens": 200, "temperature": 0}),
        );
        let resp =
            tower::ServiceExt::oneshot(app.clone(), post_json("/v1/chat/completions", &long))
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
        let r = complete(&app, &local("Hi", json!({"max_tokens": 4}))).await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.header("retry-after"), "2");
        assert_eq!(r.json()["error"]["code"], "local_queue_full");
        // Dropping the stream (client gone) frees the slot.
        drop(resp);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let r = complete(&app, &local("Hi", json!({"max_tokens": 4}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
    });
}

#[test]
fn auto_without_cloud_key_falls_back_to_local_and_says_why() {
    RT.block_on(async {
        let app = shared().await;
        let hard = "Prove step by step that there are infinitely many primes, then implement an algorithm \
                    in Rust that verifies it and analyze its complexity.";
        let r = complete(&app, &json!({"model": "auto", "max_tokens": 8,
            "messages": [{"role": "user", "content": hard}]})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-slmgate-route"), "auto:hard");
        assert_eq!(r.header("x-slmgate-backend"), "local");
        let fb = r.header("x-slmgate-fallback");
        assert!(fb.contains("cloud/gpt-4o-mini -> local/local") && fb.contains("NO_SUCH_KEY_SET"), "{fb}");
        // Simple prompts go local directly, without a fallback.
        let r = complete(&app, &json!({"model": "auto", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hi"}]})).await;
        assert_eq!(r.header("x-slmgate-route"), "auto:simple");
        assert!(r.header("x-slmgate-fallback").is_empty());
    });
}

/// A prompt longer than the context is the client's error (400, in its
/// format), on either engine — not a failed or truncated generation.
#[test]
fn a_prompt_past_the_context_is_a_400() {
    RT.block_on(async {
        let app = shared().await;
        let r = complete(
            &app,
            &local(&"word ".repeat(9000), json!({"max_tokens": 4})),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body);
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("tokens; the local model's context is"),
            "{msg}"
        );
    });
}

#[test]
fn unsupported_parameters_are_400() {
    RT.block_on(async {
        let app = shared().await;
        for extra in [
            json!({"n": 2}),
            json!({"logprobs": true}),
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
        ] {
            let r = complete(&app, &local("Hi", extra.clone())).await;
            assert_eq!(r.status, 400, "{extra}: {}", r.body);
            assert_eq!(r.json()["error"]["code"], "unsupported_parameter");
        }
    });
}

#[test]
fn missing_or_corrupt_gguf_is_a_clear_startup_error() {
    RT.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.gguf");
        std::fs::write(&bad, b"not a model").unwrap();
        for (file, needle) in [
            (dir.path().join("none.gguf"), "cannot be opened"),
            (bad, "not a GGUF file"),
        ] {
            let y = yaml(4).replace(
                &models_dir()
                    .join(slmgate::fetch::SMOLLM2_GGUF)
                    .display()
                    .to_string(),
                &file.display().to_string(),
            );
            let policy = slmgate::config::Policy::from_yaml(&y).unwrap();
            let err = AppState::new(
                policy,
                slmgate::state::StateOptions {
                    env: Box::new(|_| None),
                    models_dir: models_dir(),
                    start_local: true,
                },
            )
            .err()
            .expect("startup error");
            assert!(
                err.contains(needle) && err.contains("slmgate models fetch"),
                "{err}"
            );
        }
    });
}

/// The real model's answers are cached like any other: the second identical
/// request (whole or streamed) is served from the cache, the same bytes.
#[test]
fn the_local_models_answers_are_cached() {
    RT.block_on(async {
        let s = state(&format!("{}\ncache:\n  exact: {{}}\n", yaml(64)), &[]);
        s.wait_ready().await.expect("model loads");
        let app = slmgate::app(s);
        let body = local("Name a colour of the sky.", json!({"max_tokens": 12}));
        let first = complete(&app, &body).await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.header("x-slmgate-cache"), "miss");
        assert_eq!(first.header("x-slmgate-backend"), "local");
        let second = complete(&app, &body).await;
        assert_eq!(second.header("x-slmgate-cache"), "hit");
        assert_eq!(second.header("x-slmgate-backend"), "cache");
        assert_eq!(second.header("x-slmgate-cache-origin"), "local/local");
        assert_eq!(second.body, first.body);

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let first = complete(&app, &streamed).await;
        assert_eq!(first.header("x-slmgate-cache"), "miss");
        let second = complete(&app, &streamed).await;
        assert_eq!(second.header("x-slmgate-cache"), "hit");
        let text = |r: &Reply| -> String {
            r.chunks()
                .iter()
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(String::from)
                })
                .collect()
        };
        assert!(!text(&first).is_empty());
        assert_eq!(text(&second), text(&first));
    });
}

/// Concurrent requests share the engine: a short request sent while a long
/// stream is generating finishes before that stream does (continuous
/// batching), and both are whole. mistral.rs runs one sequence at a time by
/// default (`max_batch: 1`), so it is given 4 here.
#[test]
fn a_short_request_finishes_while_a_long_stream_runs() {
    RT.block_on(async {
        let y = yaml(64).replace(
            "    max_queue: 64\n",
            "    max_queue: 64\n    max_batch: 4\n",
        );
        let s = state(&y, &[]);
        s.wait_ready().await.expect("model loads");
        let app = slmgate::app(s);
        let long = local(
            "Write a very long story about the sea.",
            json!({"stream": true, "max_tokens": 400}),
        );
        let resp =
            tower::ServiceExt::oneshot(app.clone(), post_json("/v1/chat/completions", &long))
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let reader = tokio::spawn(async move {
            use http_body_util::BodyExt;
            let mut body = resp.into_body();
            let mut all = Vec::new();
            while let Some(f) = body.frame().await {
                if let Ok(d) = f.unwrap().into_data() {
                    all.extend_from_slice(&d);
                }
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            String::from_utf8(all).unwrap()
        });
        let r = complete(&app, &local("Say hello.", json!({"max_tokens": 4}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "the short request waited for the long stream to end"
        );
        let long = reader.await.unwrap();
        assert!(long.trim_end().ends_with("data: [DONE]"), "{long}");
    });
}

/// The engine swaps KV caches between sequences (several in flight, one
/// decoded per step) and restores cached prompt prefixes (every prompt
/// shares the chat template's system header): greedy answers must not depend
/// on what ran before or beside them. Sequential answers, then the same
/// prompts all at once, then sequential again. mistral.rs (one sequence per
/// step) must give identical answers all three times; llama.cpp batches the
/// concurrent ones, whose sums may round differently, so only its two
/// sequential rounds must match. Its own model instance, so other tests'
/// requests do not interleave.
#[test]
fn greedy_answers_do_not_depend_on_what_ran_before() {
    RT.block_on(async {
        let s = state(&yaml(64), &[]);
        s.wait_ready().await.expect("model loads");
        let app = slmgate::app(s);
        let prompts = [
            "What is the capital of Japan?",
            "Name three colours of the rainbow.",
            "What is the capital of Japan? Answer in one word.",
            "Write one sentence about the sea.",
        ];
        let answer = |app: axum::Router, p: &'static str| async move {
            let r = complete(&app, &local(p, json!({"max_tokens": 20}))).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let text = r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(!text.is_empty(), "{p}");
            text
        };
        let mut first = Vec::new();
        for p in prompts {
            first.push(answer(app.clone(), p).await);
        }
        let together: Vec<_> = prompts
            .iter()
            .chain(prompts.iter())
            .map(|p| tokio::spawn(answer(app.clone(), p)))
            .collect();
        let mut concurrent = Vec::new();
        for t in together {
            concurrent.push(t.await.unwrap());
        }
        let mut again = Vec::new();
        for p in prompts {
            again.push(answer(app.clone(), p).await);
        }
        assert_eq!(
            again, first,
            "sequential answers changed after other requests"
        );
        if engine() == "mistralrs" {
            let expected: Vec<_> = first.iter().chain(first.iter()).cloned().collect();
            assert_eq!(
                concurrent, expected,
                "concurrent answers differ from sequential ones"
            );
        }
    });
}
