//! `cargo run --example requant -- SRC.gguf DST.gguf q8_0|q4_0`
#![allow(clippy::unwrap_used, clippy::expect_used)]
use candle_core::quantized::GgmlDType;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let to = slmgate::requant::parse_dtype(&a[3]).expect("q8_0 or q4_0");
    let t = std::time::Instant::now();
    let n =
        slmgate::requant::requantize(a[1].as_ref(), a[2].as_ref(), GgmlDType::Q4_1, to).unwrap();
    println!(
        "{n} tensors re-quantized in {:.2}s",
        t.elapsed().as_secs_f64()
    );
}
