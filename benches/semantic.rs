//! Semantic cache lookups as the index grows: 1k, 10k and 100k entries of
//! 384-dim unit vectors (MiniLM's size), all in one bucket (the worst case:
//! every entry is scanned), the query near one of them. The sign-bit
//! prefilter scans everything; exact cosines are computed for 16 entries.
//! `cargo bench --bench semantic`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use slmgate::api::ApiFormat;
use slmgate::cache::guards::Signature;
use slmgate::cache::semantic::SemanticIndex;
use slmgate::cache::Entry;
use slmgate::policy::cost::Usage;
use slmgate::policy::Target;
use std::sync::Arc;
use std::time::Duration;

const DIM: usize = 384;

/// A small deterministic generator (no dependency for this).
struct Lcg(u64);
impl Lcg {
    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIM)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }
}

fn bench(c: &mut Criterion) {
    let entry = Arc::new(Entry {
        format: ApiFormat::OpenAi,
        streamed: false,
        chunks: vec![bytes::Bytes::from_static(b"{}")],
        usage: Usage::default(),
        route: "auto".into(),
        target: Target {
            backend: "openai".into(),
            model: "gpt-4o-mini".into(),
        },
    });
    let sig = Signature::of("what is the capital of france");
    let mut g = c.benchmark_group("semantic_lookup");
    for n in [1_000usize, 10_000, 100_000] {
        let idx = SemanticIndex::new(n, Duration::from_secs(3600));
        let mut rng = Lcg(7);
        let mut target = Vec::new();
        for i in 0..n {
            let v = rng.unit();
            if i == n / 2 {
                target = v.clone();
            }
            idx.insert(1, &v, sig.clone(), entry.clone());
        }
        // The query: the middle entry, nudged.
        let mut q: Vec<f32> = target
            .iter()
            .zip(rng.unit())
            .map(|(a, b)| a + 0.05 * b)
            .collect();
        let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        q.iter_mut().for_each(|x| *x /= norm);
        assert!(idx.lookup(1, &q, Some(&sig), 0.85).is_some());
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| idx.lookup(1, &q, Some(&sig), 0.85))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
