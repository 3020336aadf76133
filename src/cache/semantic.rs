//! The semantic cache's index: a fixed-capacity ring of entries (the oldest
//! is overwritten), each with its bucket (a hash of everything in the
//! request except the last user message: model, parameters, caller, earlier
//! turns), the last user message's unit-length embedding, its sign bits and
//! its `Signature`. A lookup scans the (bucket, stored-at) heads and the sign
//! bits (Hamming distance: 6 × u64 per 384-dim entry), keeps the nearest
//! `CANDIDATES`, then computes the exact cosine (and the guards) for those
//! only. Cost: O(n) for the scan, about 4.2 ns an entry here, plus
//! O(CANDIDATES × d): 11 µs at 1k entries, 49 µs at 10k, 0.43 ms at 100k,
//! all in one bucket (`BENCH=semantic benches/triage.sh`). Memory: d × 4 + 64 +
//! 16 bytes an entry besides the answer (1.6 KB at d = 384).

use super::guards::{compatible, Signature};
use super::Entry;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Exact cosines computed per lookup.
const CANDIDATES: usize = 16;

struct Slot {
    signature: Signature,
    entry: Arc<Entry>,
}

struct Ring {
    dim: usize,
    words: usize,
    slots: Vec<Option<Slot>>,
    /// Per slot: its bucket and when it was stored (ms since `epoch`, 0:
    /// empty), apart from the slots so the scan reads 16 bytes + the code.
    heads: Vec<(u64, u64)>,
    codes: Vec<u64>,
    vecs: Vec<f32>,
    next: usize,
}

pub struct SemanticIndex {
    ring: RwLock<Option<Ring>>,
    epoch: Instant,
    capacity: usize,
    ttl: Duration,
}

/// A neighbour that passed the threshold and the guards.
pub struct Found {
    pub entry: Arc<Entry>,
    pub similarity: f32,
}

fn sign_bits(v: &[f32], words: usize, out: &mut [u64]) {
    for w in out.iter_mut().take(words) {
        *w = 0;
    }
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / 64] |= 1 << (i % 64);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl SemanticIndex {
    pub fn new(capacity: usize, ttl: Duration) -> SemanticIndex {
        SemanticIndex {
            ring: RwLock::new(None),
            epoch: Instant::now(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Ms since the index was made, from 1 (0 marks an empty slot).
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// How many entries are held (expired ones included until overwritten).
    pub fn len(&self) -> usize {
        let g = self.ring.read().unwrap_or_else(|p| p.into_inner());
        g.as_ref()
            .map_or(0, |r| r.slots.iter().filter(|s| s.is_some()).count())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep `entry` for the query embedding `v` (unit length).
    pub fn insert(&self, bucket: u64, v: &[f32], signature: Signature, entry: Arc<Entry>) {
        let mut g = self.ring.write().unwrap_or_else(|p| p.into_inner());
        let ring = g.get_or_insert_with(|| {
            let dim = v.len();
            let words = dim.div_ceil(64);
            Ring {
                dim,
                words,
                slots: (0..self.capacity).map(|_| None).collect(),
                heads: vec![(0, 0); self.capacity],
                codes: vec![0; self.capacity * words],
                vecs: vec![0.0; self.capacity * dim],
                next: 0,
            }
        });
        if v.len() != ring.dim {
            return;
        }
        let i = ring.next;
        ring.next = (i + 1) % self.capacity;
        let (d, w) = (ring.dim, ring.words);
        ring.vecs[i * d..(i + 1) * d].copy_from_slice(v);
        sign_bits(v, w, &mut ring.codes[i * w..(i + 1) * w]);
        ring.heads[i] = (bucket, self.now_ms());
        ring.slots[i] = Some(Slot { signature, entry });
    }

    /// The most similar live entry of `bucket` whose cosine is at least
    /// `threshold` and whose signature equals `signature` (when guarded).
    pub fn lookup(
        &self,
        bucket: u64,
        v: &[f32],
        signature: Option<&Signature>,
        threshold: f32,
    ) -> Option<Found> {
        let g = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let ring = g.as_ref()?;
        if v.len() != ring.dim {
            return None;
        }
        let w = ring.words;
        let mut q = vec![0u64; w];
        sign_bits(v, w, &mut q);
        // The nearest by Hamming distance, as (distance, slot).
        let mut best: Vec<(u32, usize)> = Vec::with_capacity(CANDIDATES + 1);
        let now = self.now_ms();
        let ttl = self.ttl.as_millis() as u64;
        for (i, &(b, born)) in ring.heads.iter().enumerate() {
            if b != bucket || born == 0 || now.saturating_sub(born) > ttl {
                continue;
            }
            let code = &ring.codes[i * w..(i + 1) * w];
            let h: u32 = code.iter().zip(&q).map(|(a, b)| (a ^ b).count_ones()).sum();
            if best.len() < CANDIDATES || h < best[best.len() - 1].0 {
                let at = best.partition_point(|(d, _)| *d <= h);
                best.insert(at, (h, i));
                best.truncate(CANDIDATES);
            }
        }
        let d = ring.dim;
        best.into_iter()
            .filter_map(|(_, i)| {
                let s = ring.slots[i].as_ref()?;
                let sim = dot(v, &ring.vecs[i * d..(i + 1) * d]);
                let guarded = || signature.is_none_or(|sig| compatible(sig, &s.signature));
                (sim >= threshold && guarded()).then(|| Found {
                    entry: s.entry.clone(),
                    similarity: sim,
                })
            })
            .max_by(|a, b| a.similarity.total_cmp(&b.similarity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiFormat;
    use crate::policy::cost::Usage;
    use crate::policy::Target;

    fn entry(n: u8) -> Arc<Entry> {
        Arc::new(Entry {
            format: ApiFormat::OpenAi,
            streamed: false,
            chunks: vec![bytes::Bytes::from(vec![n])],
            usage: Usage::default(),
            route: "r".into(),
            target: Target {
                backend: "b".into(),
                model: "m".into(),
            },
        })
    }

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn nearest_above_threshold_in_the_same_bucket() {
        let idx = SemanticIndex::new(3, Duration::from_secs(60));
        let a = unit(vec![1.0, 0.0, 0.1]);
        let b = unit(vec![0.0, 1.0, 0.0]);
        let sig = Signature::default();
        idx.insert(1, &a, sig.clone(), entry(1));
        idx.insert(1, &b, sig.clone(), entry(2));
        idx.insert(2, &a, sig.clone(), entry(3));
        let q = unit(vec![1.0, 0.05, 0.1]);
        let hit = idx.lookup(1, &q, Some(&sig), 0.9).unwrap();
        assert_eq!(&hit.entry.chunks[0][..], &[1]);
        assert!(hit.similarity > 0.99);
        assert!(idx
            .lookup(1, &unit(vec![0.0, 0.0, 1.0]), None, 0.9)
            .is_none());
        assert!(idx.lookup(3, &q, None, 0.5).is_none(), "other bucket");
        let other = Signature::of("turn off 5 lights");
        assert!(idx.lookup(1, &q, Some(&other), 0.9).is_none(), "guarded");
        // The ring overwrites the oldest.
        idx.insert(1, &b, sig.clone(), entry(4));
        assert_eq!(idx.len(), 3);
        assert!(
            idx.lookup(1, &q, Some(&sig), 0.9).is_none(),
            "entry 1 was overwritten"
        );
    }

    #[test]
    fn entries_expire() {
        let idx = SemanticIndex::new(4, Duration::from_millis(0));
        let a = unit(vec![1.0, 0.0]);
        idx.insert(1, &a, Signature::default(), entry(1));
        std::thread::sleep(Duration::from_millis(2));
        assert!(idx.lookup(1, &a, None, 0.5).is_none());
    }
}
