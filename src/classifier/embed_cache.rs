//! A file cache of contextual MiniLM embeddings for `train` and `eval --loso`:
//! the encoder pass (~20 ms a prompt on 2 cores) is the slow part of training,
//! and LOSO fits a head per source over the same prompts. Keyed by sha256 of
//! the encoder id and the token ids the encoder sees, so a different
//! tokenisation or truncation rule never reuses an entry. Records are
//! `[32-byte key][DIM little-endian f32]`, appended.
//!
//! Where: `$SLMGATE_EMBED_CACHE`, else `target/slmgate-embed-cache-v1.bin` when
//! `target/` exists (a cargo checkout), else the temp dir.

use super::encoder::{head_tail, Encoder, DIM, HEAD, TAIL};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

const REC: usize = 32 + DIM * 4;

pub struct EmbedCache {
    path: PathBuf,
    map: HashMap<[u8; 32], Vec<f32>>,
    fresh: Vec<([u8; 32], Vec<f32>)>,
}

pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SLMGATE_EMBED_CACHE") {
        return PathBuf::from(p);
    }
    let target = PathBuf::from("target");
    let dir = if target.is_dir() {
        target
    } else {
        std::env::temp_dir()
    };
    dir.join("slmgate-embed-cache-v1.bin")
}

fn key(ids: &[u32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"all-MiniLM-L6-v2/contextual/v1");
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().into()
}

impl EmbedCache {
    /// Open (an unreadable or torn file just starts empty or keeps its whole records).
    pub fn open(path: PathBuf) -> EmbedCache {
        let bytes = std::fs::read(&path).unwrap_or_default();
        let mut map = HashMap::new();
        for rec in bytes.chunks_exact(REC) {
            let mut k = [0u8; 32];
            k.copy_from_slice(&rec[..32]);
            let v = rec[32..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            map.insert(k, v);
        }
        if !bytes.len().is_multiple_of(REC) {
            // A torn tail from an interrupted run: rewrite whole records only.
            let _ = std::fs::write(&path, &bytes[..bytes.len() - bytes.len() % REC]);
        }
        EmbedCache {
            path,
            map,
            fresh: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The contextual embedding of a turn's ids (the truncation rule applied).
    pub fn contextual_of(&mut self, encoder: &Encoder, ids: &[u32]) -> Result<Vec<f32>, String> {
        let sel = head_tail(ids, HEAD, TAIL);
        let k = key(&sel);
        if let Some(v) = self.map.get(&k) {
            return Ok(v.clone());
        }
        let v = encoder.contextual(&sel)?;
        self.map.insert(k, v.clone());
        self.fresh.push((k, v.clone()));
        if self.fresh.len() >= 256 {
            self.flush()?;
        }
        Ok(v)
    }

    /// Append new entries to the file.
    pub fn flush(&mut self) -> Result<(), String> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(self.fresh.len() * REC);
        for (k, v) in self.fresh.drain(..) {
            buf.extend_from_slice(&k);
            v.iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&buf))
            .map_err(|e| format!("embedding cache {}: {e}", self.path.display()))
    }
}
