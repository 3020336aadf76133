//! Triage latency: the whole MiniLM triage of a 256-token prompt, the encoder
//! at several token budgets, and a cache hit through the serving path.
//! `cargo bench --bench triage` (needs `slmgate models fetch`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use slmgate::api::openai::ChatMessage;
use slmgate::classifier::encoder::Encoder;
use slmgate::classifier::model::ModelTriage;
use slmgate::classifier::Triage;
use std::path::PathBuf;

fn models() -> PathBuf {
    std::env::var_os("SLMGATE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

fn prompt_256(enc: &Encoder) -> String {
    let base = "Explain how a hash map handles collisions, compare open addressing with chaining, \
                and give the expected lookup cost under a load factor of 0.75. ";
    let mut p = String::new();
    while enc.tokenize(&p).len() < 256 {
        p.push_str(base);
    }
    p
}

fn bench(c: &mut Criterion) {
    let t = ModelTriage::load(&models().join("minilm"))
        .expect("models/minilm: run `slmgate models fetch`");
    let prompt = prompt_256(t.encoder());
    let msgs = vec![ChatMessage {
        role: "user".into(),
        text: prompt.clone(),
    }];
    c.bench_function("triage_256_tokens", |b| b.iter(|| t.triage(&msgs)));
    // The cascade's two paths, whatever this prompt's score is.
    use slmgate::classifier::model::{fast_input, full_input};
    c.bench_function("triage_fast_path_256_tokens", |b| {
        b.iter(|| t.heads().fast.predict(&fast_input(t.encoder(), &msgs).0))
    });
    c.bench_function("triage_full_path_256_tokens", |b| {
        b.iter(|| {
            let (x, ids) = fast_input(t.encoder(), &msgs);
            t.heads()
                .full
                .predict(&full_input(t.encoder(), &x, &ids).unwrap())
        })
    });
    let ids = t.encoder().tokenize(&prompt);
    for n in [8usize, 64] {
        c.bench_function(&format!("encoder_contextual_{n}_tokens"), |b| {
            b.iter(|| t.encoder().contextual(&ids[..n]))
        });
    }
    c.bench_function("encoder_static_256_tokens", |b| {
        b.iter(|| t.encoder().static_mean(&ids))
    });
    c.bench_function("tokenize_256_tokens", |b| {
        b.iter(|| t.encoder().tokenize(&prompt))
    });

    // A cache hit through the serving path (moka lookup + metrics).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy = slmgate::config::Policy::from_yaml(
        "version: 1\nbackends:\n  c:\n    kind: openai\n    api_key_env: X\n    base_url: http://127.0.0.1:9/v1\n    models:\n      m: { input_per_mtok: 1, output_per_mtok: 1 }\ntriage: { kind: model }\nroutes:\n  auto:\n    tiers: [{ name: all, target: c/m }]\n",
    )
    .unwrap();
    let opts = slmgate::state::StateOptions {
        env: Box::new(|_| None),
        models_dir: models(),
        start_local: false,
    };
    let state = rt.block_on(async { slmgate::state::AppState::new(policy, opts).unwrap() });
    rt.block_on(state.triage.triage(&msgs, false));
    c.bench_function("triage_cache_hit_256_tokens", |b| {
        b.iter(|| rt.block_on(state.triage.triage(&msgs, false)))
    });

    // The quick path explicit-model requests take (it only labels the
    // answer): inline, uncached, through the serving path with its metrics.
    let short = vec![ChatMessage {
        role: "user".into(),
        text: QUICK_PROMPT.into(),
    }];
    assert_eq!(QUICK_PROMPT.len(), 300);
    c.bench_function("triage_quick_300_chars", |b| {
        b.iter(|| rt.block_on(state.triage.triage(&short, true)))
    });
    c.bench_function("triage_quick_engine_300_chars", |b| {
        b.iter(|| t.triage_quick(&short))
    });
    c.bench_function("tokenize_300_chars", |b| {
        b.iter(|| t.encoder().tokenize(QUICK_PROMPT))
    });
    // The same through the `tokenizers` crate (what the quick path used before).
    c.bench_function("tokenize_full_300_chars", |b| {
        b.iter(|| t.encoder().tokenize_full(QUICK_PROMPT))
    });
}

/// A typical short chat prompt, exactly 300 characters.
const QUICK_PROMPT: &str = "I'm planning a three-day trip to Kyoto in early April with my parents, who don't walk much. Could you suggest a relaxed itinerary with a few temples, a garden or two, and good places for lunch near each stop? Please keep travel between places short and mention if anything needs booking ahead of time";

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
