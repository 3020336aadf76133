//! Server-sent events framing: an incremental splitter for byte streams and
//! the event shapes both APIs use (`data:`-only for OpenAI, named events for
//! Anthropic).

use bytes::{Bytes, BytesMut};

/// Splits a byte stream into complete SSE events (terminated by a blank line).
#[derive(Default)]
pub struct EventSplitter {
    buf: BytesMut,
    /// How far `buf` is known to hold no event end (so a large event
    /// arriving in small pieces is scanned once, not once per piece).
    scanned: usize,
}

impl EventSplitter {
    /// Feed bytes; returns the complete events now available, each including
    /// its terminating blank line.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        // An end ("\n\n" or "\n\r\n") may start up to 2 bytes back.
        let mut from = self.scanned.saturating_sub(2);
        while let Some(end) = find_event_end(&self.buf, from) {
            out.push(self.buf.split_to(end).freeze());
            from = 0;
        }
        self.scanned = self.buf.len();
        out
    }

    /// Whatever is left when the upstream closed (an event without its blank line).
    pub fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        let rest = self.buf.split().freeze();
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// Index just past the first "\n\n" or "\r\n\r\n" starting at or after `from`.
fn find_event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The `data:` payload of an event (multi-line data joined by '\n').
pub fn event_data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => data = Some(rest.to_string()),
            }
        }
    }
    data
}

/// Format one SSE data event.
pub fn data_event(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Named SSE event (Anthropic streams).
pub fn named_event(name: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However the upstream body is cut into chunks, the same events come out.
        #[test]
        fn splitting_is_independent_of_chunking(
            events in proptest::collection::vec("[a-z0-9 {}:\"]{0,40}", 1..8),
            cuts in proptest::collection::vec(0usize..400, 0..10),
            crlf in any::<bool>(),
        ) {
            let sep = if crlf { "\r\n\r\n" } else { "\n\n" };
            let body: String = events.iter().map(|e| format!("data: {e}{sep}")).collect();
            let bytes = body.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut s = EventSplitter::default();
            let mut got = Vec::new();
            let mut last = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                got.extend(s.push(&bytes[last..p]));
                last = p;
            }
            prop_assert!(s.finish().is_none());
            let datas: Vec<String> = got.iter().map(|e| event_data(e).unwrap_or_default()).collect();
            let want: Vec<String> = events.iter().map(|e| e.trim_end_matches('\r').to_string()).collect();
            prop_assert_eq!(datas, want);
        }
    }
}
