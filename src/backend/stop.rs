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
        // Where a stop string could still begin: a suffix of the held text
        // that is a prefix of some stop (the longest suffix starts earliest).
        let pending = self
            .stops
            .iter()
            .map(|s| self.held.len() - longest_suffix_prefix(&self.held, s))
            .min()
            .unwrap_or(self.held.len());
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        match found {
            // A whole stop string, and no other one could begin before it.
            Some(pos) if pos <= pending => {
                self.stopped = true;
                let out = self.held[..pos].to_string();
                self.held.clear();
                out
            }
            // Nothing can stop before `pending` (a stop found after it may
            // still lose to a longer one that begins there): release the rest.
            _ => {
                let out = self.held[..pending].to_string();
                self.held.drain(..pending);
                out
            }
        }
    }

    /// The generation ended: release whatever was held back, up to a stop
    /// string it holds.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let mut rest = std::mem::take(&mut self.held);
        self.stopped = cut_at_stop(&mut rest, &self.stops);
        rest
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

    /// A short stop found first must not win over a longer one that began
    /// earlier and is only completed by the next delta.
    #[test]
    fn the_earliest_stop_wins_across_deltas() {
        let stops = ["bcc".to_string(), "c".to_string()];
        let mut f = StopFilter::new(&stops);
        let out = f.push(" abc") + &f.push("ca a") + &f.finish();
        assert_eq!(out, " a");
        assert!(f.stopped());
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
