//! Probe: load the GGUF through mistral.rs and report prefill/decode speed
//! from the engine's own usage stats.
//! `cargo run --release --example local_speed -- FILE.gguf`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mistralrs::{GgufModelBuilder, RequestBuilder, SamplingParams, TextMessageRole, TokenSource};
use std::time::Instant;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let file = std::env::args().nth(1).expect("gguf path");
    let path = std::fs::canonicalize(&file)?;
    let t0 = Instant::now();
    let dir = path.parent().unwrap().to_string_lossy().to_string();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let model = GgufModelBuilder::new(dir, vec![name])
        .with_token_source(TokenSource::None)
        .with_force_cpu()
        .build()
        .await?;
    println!("{file}: load {:.2}s", t0.elapsed().as_secs_f64());
    let long = "Summarize the following text in one sentence. ".to_string()
        + &"The quick brown fox jumps over the lazy dog near the river bank. ".repeat(16);
    for (label, prompt) in [
        ("short", "What is the capital of Japan?"),
        ("long", long.as_str()),
    ] {
        for _ in 0..3 {
            let req = RequestBuilder::new()
                .add_message(TextMessageRole::User, prompt)
                .set_sampling(SamplingParams {
                    temperature: Some(0.0),
                    max_len: Some(64),
                    ..SamplingParams::neutral()
                });
            let t = Instant::now();
            let r = model.send_chat_request(req).await?;
            let u = &r.usage;
            println!(
                "{label}: prompt {} tok, completion {} tok, prefill {:.1} tok/s, decode {:.1} tok/s, wall {:.2}s",
                u.prompt_tokens, u.completion_tokens, u.avg_prompt_tok_per_sec, u.avg_compl_tok_per_sec,
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
