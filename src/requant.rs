//! Re-quantize a GGUF file once, at fetch time, into a format whose CPU
//! kernels candle vectorises. The shipped SmolLM2 file is Q4_1, for which
//! candle has no AVX2 dot product (only Q4_0, Q8_0 and the K-quants have one),
//! so prefill and decode run on scalar code. Q8_0 keeps every Q4_1 value
//! almost exactly (8-bit blocks of 32 represent the 4-bit levels with
//! sub-percent error) and runs on AVX2 kernels. Measured in README.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use std::path::Path;

/// GGUF `general.file_type` codes (llama.cpp's LLAMA_FTYPE_MOSTLY_*).
fn file_type(dt: GgmlDType) -> Option<u32> {
    match dt {
        GgmlDType::Q4_0 => Some(2),
        GgmlDType::Q4_1 => Some(3),
        GgmlDType::Q8_0 => Some(7),
        _ => None,
    }
}

/// Parse `q8_0` / `q4_0`.
pub fn parse_dtype(s: &str) -> Option<GgmlDType> {
    match s.to_ascii_lowercase().as_str() {
        "q8_0" => Some(GgmlDType::Q8_0),
        "q4_0" => Some(GgmlDType::Q4_0),
        _ => None,
    }
}

/// Rewrite every tensor stored in `from` as `to` (other tensors are copied).
/// Writes `dst` atomically (via a `.part` file). Returns how many tensors changed.
pub fn requantize(src: &Path, dst: &Path, from: GgmlDType, to: GgmlDType) -> Result<usize, String> {
    let err = |e: candle_core::Error| format!("re-quantizing {}: {e}", src.display());
    let mut f = std::fs::File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let content = gguf_file::Content::read(&mut f).map_err(err)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut changed = 0;
    for name in names {
        let t = content.tensor(&mut f, name, &Device::Cpu).map_err(err)?;
        let cols = t.shape().dims().last().copied().unwrap_or(0);
        let t = if t.dtype() == from && cols % to.block_size() == 0 {
            changed += 1;
            QTensor::quantize(&t.dequantize(&Device::Cpu).map_err(err)?, to).map_err(err)?
        } else {
            t
        };
        tensors.push((name.clone(), t));
    }
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let (Some(code), Some(entry)) = (
        file_type(to),
        metadata.iter_mut().find(|(k, _)| k == "general.file_type"),
    ) {
        entry.1 = gguf_file::Value::U32(code);
    }
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let part = dst.with_extension("part");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?,
    );
    let md: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &md, &ts).map_err(err)?;
    drop(out);
    std::fs::rename(&part, dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn values(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A CPU tensor of `dims` filled by [`values`].
    fn random(dims: &[usize], seed: &mut u64) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(values(n, seed), dims, &Device::Cpu).unwrap()
    }

    /// Q8_0 weights (what `requantize` writes) go through candle's tiled
    /// prompt kernel whenever more than one row comes in
    /// (vendor/patches/candle-core/0001). Every row must come out exactly as
    /// the one-row (decode) path computes it, for shapes that leave partial
    /// tiles, and close to the f32 product.
    #[test]
    fn q8_0_prompt_matmul_equals_the_decode_path_row_by_row() {
        let mut seed = 7;
        for (m, k, n) in [
            (2, 64, 4),
            (3, 96, 7),
            (5, 32, 1),
            (37, 576, 192),
            (9, 1536, 66),
        ] {
            let w = random(&[n, k], &mut seed);
            let x = random(&[m, k], &mut seed);
            let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
            let mm = QMatMul::from_qtensor(q).unwrap();
            assert!(
                matches!(mm, QMatMul::QTensor(_)),
                "{m}x{k}x{n}: not quantized"
            );
            let all = mm.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let exact = x.matmul(&w.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
            // Input quantization error grows with sqrt(k); 0.02 * sqrt(k) is ~7 sigma.
            let tol = 0.02 * (k as f32).sqrt();
            for (r, (row, ex)) in all.iter().zip(&exact).enumerate() {
                let one = mm.forward(&x.narrow(0, r, 1).unwrap()).unwrap();
                let one = one.to_vec2::<f32>().unwrap().remove(0);
                assert_eq!(
                    row, &one,
                    "{m}x{k}x{n}: row {r} differs from the one-row path"
                );
                for (c, (a, e)) in row.iter().zip(ex).enumerate() {
                    assert!(
                        (a - e).abs() <= tol,
                        "{m}x{k}x{n} [{r},{c}]: {a} vs f32 {e}"
                    );
                }
            }
        }
    }

    /// Prompt rows (an input `(batch, seq_len > 1, k)`) of Q8_0 weights run the
    /// interleaved kernel on CPUs with AVX-512 VNNI
    /// (vendor/patches/candle-core/0003): per output, for each block in order,
    /// `acc = fma(d_x * d_w, exact integer dot, acc)`. Checked exactly against
    /// that arithmetic written out (elsewhere: against the reference path), for
    /// shapes with partial tiles and groups; a row must not depend on the rows
    /// run with it; and close to the f32 product.
    #[test]
    fn q8_0_prompt_rows_match_their_reference_and_each_other() {
        let mut seed = 11;
        #[cfg(target_arch = "x86_64")]
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        #[cfg(not(target_arch = "x86_64"))]
        let vnni = false;
        // IEEE half to f32 (normal, subnormal and zero: what Q8_0 scales are).
        fn half(bits: u16) -> f32 {
            let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
            let exp = i32::from((bits >> 10) & 0x1f);
            let frac = f32::from(bits & 0x3ff);
            match exp {
                0 => sign * frac * 2f32.powi(-24),
                _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
            }
        }
        // A Q8_0 tensor's bytes, block by block: (scale, 32 quants).
        fn blocks(q: &QTensor) -> Vec<(f32, Vec<i32>)> {
            q.data()
                .unwrap()
                .chunks_exact(34)
                .map(|b| {
                    let d = half(u16::from_le_bytes([b[0], b[1]]));
                    (d, b[2..].iter().map(|&v| v as i8 as i32).collect())
                })
                .collect()
        }
        for (m, k, n) in [
            (2, 64, 8),
            (3, 96, 7),
            (5, 32, 17),
            (13, 576, 40),
            (9, 1536, 66),
        ] {
            let w = random(&[n, k], &mut seed);
            let x = random(&[1, m, k], &mut seed);
            let qw = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
            let wb = blocks(&qw);
            let mm = QMatMul::from_qtensor(qw).unwrap();
            let all = mm.forward(&x).unwrap().squeeze(0).unwrap();
            let all = all.to_vec2::<f32>().unwrap();
            let x2 = x.squeeze(0).unwrap();
            let xb = blocks(&QTensor::quantize(&x2, GgmlDType::Q8_0).unwrap());
            let kb = k / 32;
            let rows2 = mm.forward(&x2).unwrap().to_vec2::<f32>().unwrap();
            let exact = x2
                .matmul(&w.t().unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let tol = 0.02 * (k as f32).sqrt();
            for r in 0..m {
                for c in 0..n {
                    let want = if vnni {
                        let mut acc = 0f32;
                        for b in 0..kb {
                            let (dx, qx) = &xb[r * kb + b];
                            let (dw, qw) = &wb[c * kb + b];
                            let dot: i32 = qx.iter().zip(qw).map(|(a, b)| a * b).sum();
                            acc = (dx * dw).mul_add(dot as f32, acc);
                        }
                        acc
                    } else {
                        rows2[r][c]
                    };
                    assert_eq!(all[r][c], want, "{m}x{k}x{n} [{r},{c}]");
                    let e = exact[r][c];
                    assert!(
                        (want - e).abs() <= tol,
                        "{m}x{k}x{n} [{r},{c}]: {want} vs f32 {e}"
                    );
                }
                // The same row run with another one, as a prompt of two.
                let o = if r + 1 < m { r } else { r - 1 };
                let pair = mm.forward(&x.narrow(1, o, 2).unwrap()).unwrap();
                let pair = pair.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
                assert_eq!(
                    pair[r - o],
                    all[r],
                    "{m}x{k}x{n}: row {r} depends on the rows with it"
                );
            }
        }
    }
}
