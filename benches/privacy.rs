//! The cost of scanning a prompt for personal and secret data, per KB:
//! ordinary prose with a few findings, at 1 KB and 16 KB.
//! `cargo bench --bench privacy`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use slmgate::privacy::detect::detect;

fn text(bytes: usize) -> String {
    let para = "Please rewrite this support reply so it sounds friendlier. The customer wrote \
                on 2024-05-02 about order 1234567890123456, shipped with version 2.4.1 of the app. \
                Reach them at jane.doe@example.com or +1 415 555 0132; the server at 192.0.2.10 \
                logged the error. Keep it under 120 words and do not promise a refund. ";
    let mut t = String::new();
    while t.len() < bytes {
        t.push_str(para);
    }
    t.truncate(bytes);
    t
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pii_detect");
    for kb in [1usize, 16] {
        let t = text(kb * 1024);
        assert!(!detect(&t).is_empty());
        g.throughput(Throughput::Bytes(t.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{kb}KB")),
            &t,
            |b, t| b.iter(|| detect(t)),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
