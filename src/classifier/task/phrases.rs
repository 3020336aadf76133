//! Words of a prompt and whole-word phrase counts over them, through an
//! index built once per text (`Joined`): each word's first position and, for
//! every position, the next one holding the same word.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Lower-case ASCII words (`[a-z0-9]+`, with an `'s`-style tail kept).
pub fn words(lower: &str) -> Vec<&str> {
    let b = lower.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    while i < b.len() {
        if !alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i + 1 < b.len() && b[i] == b'\'' && b[i + 1].is_ascii_lowercase() {
            i += 1;
            while i < b.len() && b[i].is_ascii_lowercase() {
                i += 1;
            }
        }
        out.push(&lower[start..i]);
    }
    out
}

/// Words indexed for whole-word phrase counts: each word's first position,
/// and for every position the next one holding the same word.
pub(super) struct Joined<'a> {
    words: Vec<&'a str>,
    first: HashMap<&'a str, u32, BuildHasherDefault<Fnv>>,
    next_same: Vec<u32>,
}

/// No further position (`Joined::next_same`).
const NONE: u32 = u32::MAX;

pub(super) fn joined<'a>(ws: &[&'a str]) -> Joined<'a> {
    let mut first = HashMap::with_capacity_and_hasher(ws.len(), Default::default());
    let mut next_same = vec![NONE; ws.len()];
    for (i, w) in ws.iter().enumerate().rev() {
        if let Some(later) = first.insert(*w, i as u32) {
            next_same[i] = later;
        }
    }
    Joined {
        words: ws.to_vec(),
        first,
        next_same,
    }
}

/// Non-overlapping whole-word occurrences of each phrase, summed. As in a
/// search for ` phrase ` in the words joined by single spaces, two matches
/// do not share the space between them: after a match ending at word `e`,
/// the next may start at word `e + 2`.
pub(super) fn count(j: &Joined, phrases: &[&str]) -> f32 {
    let mut n = 0usize;
    for p in phrases {
        let mut parts = p.split(' ');
        let Some(&start) = parts.next().and_then(|w| j.first.get(w)) else {
            continue;
        };
        // `parts` now holds the phrase's words after the first.
        let (mut i, mut allowed) = (start, 0u32);
        while i != NONE {
            let at = i as usize;
            if i >= allowed {
                let mut end = at;
                let whole = parts.clone().all(|w| {
                    end += 1;
                    j.words.get(end) == Some(&w)
                });
                if whole {
                    n += 1;
                    allowed = end as u32 + 2;
                }
            }
            i = j.next_same[at];
        }
    }
    n as f32
}

/// FNV-1a, for the short words of one prompt (no untrusted-key flooding
/// matters here: a prompt's own words, indexed once and dropped).
pub(super) struct Fnv(u64);

impl Default for Fnv {
    /// The FNV-1a offset basis.
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
