//! Stop strings over a stream of text deltas. mistral.rs stops generating at
//! a stop string but may already have streamed (part of) it, so deltas pass
//! through here: text that could still be the start of a stop string is held
//! back until it is clear, and the stop string itself never reaches the client.

pub struct StopFilter {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopFilter {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether there is any stop string to watch for.
    pub fn is_active(&self) -> bool {
        !self.stops.is_empty()
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Feed a delta; returns the text that is safe to emit now.
    pub fn push(&mut self, delta: &str) -> String {
        if self.stopped {
            return String::new();
        }
        if self.stops.is_empty() {
            return delta.to_string();
        }
        self.held.push_str(delta);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let out = self.held[..pos].to_string();
            self.held.clear();
            return out;
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }

    /// The generation ended: release whatever was held back.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`
/// (cut at char boundaries).
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

/// Cut a complete text at its first stop string. Returns whether it was cut.
pub fn cut_at_stop(text: &mut String, stops: &[String]) -> bool {
    match stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        Some(pos) => {
            text.truncate(pos);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stop_split_across_deltas_is_removed() {
        let mut f = StopFilter::new(&["END".into()]);
        let mut out = f.push("hello E");
        out += &f.push("N");
        assert_eq!(out, "hello ");
        out += &f.push("D and more");
        assert!(f.stopped());
        assert_eq!(out + &f.finish(), "hello ");
        let mut g = StopFilter::new(&["END".into()]);
        let s = g.push("hello EN") + &g.finish();
        assert_eq!(s, "hello EN", "held text is released at the end");
    }

    proptest! {
        /// Streaming through the filter equals cutting the whole text at once.
        #[test]
        fn streaming_equals_whole_text(
            text in "[abc ]{0,60}",
            stops in proptest::collection::vec("[abc]{1,3}", 0..3),
            cuts in proptest::collection::vec(0usize..60, 0..8),
        ) {
            let mut want = text.clone();
            cut_at_stop(&mut want, &stops);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).collect();
            points.sort_unstable();
            let mut f = StopFilter::new(&stops);
            let mut got = String::new();
            let mut last = 0;
            for p in points.into_iter().chain([text.len()]) {
                got += &f.push(&text[last..p]);
                last = p;
            }
            got += &f.finish();
            prop_assert_eq!(got, want);
        }
    }
}
