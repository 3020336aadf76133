//! Server-sent events: an incremental splitter for upstream bodies and the
//! usage-chunk handling of OpenAI streams (record usage; strip the usage-only
//! chunk again when the client did not ask for it).

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::policy::cost::Usage;

/// Splits a byte stream into complete SSE events (terminated by a blank line).
#[derive(Default)]
pub struct EventSplitter {
    buf: BytesMut,
}

impl EventSplitter {
    /// Feed bytes; returns the complete events now available, each including
    /// its terminating blank line.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = find_event_end(&self.buf) {
            out.push(self.buf.split_to(end).freeze());
        }
        out
    }

    /// Whatever is left when the upstream closed (an event without its blank line).
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = self.buf.split().freeze();
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// Index just past the first "\n\n" or "\r\n\r\n".
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
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

/// Usage found in an OpenAI chunk, if any.
pub fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?.as_object()?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// What to do with one upstream OpenAI stream event.
#[derive(Debug, PartialEq)]
pub enum Filtered {
    /// Forward these bytes (the original event, or a rewritten one).
    Forward(Bytes),
    /// Drop the event (a usage-only chunk the client did not ask for).
    Drop,
}

/// Inspect one OpenAI stream event: record usage, strip it when not asked for.
/// Only events that mention "usage" are parsed, so ordinary chunks pass at
/// the cost of a substring search.
pub fn filter_openai_event(
    event: Bytes,
    client_wants_usage: bool,
    usage: &mut Option<Usage>,
) -> Filtered {
    if !contains(&event, b"\"usage\"") {
        return Filtered::Forward(event);
    }
    let Some(data) = event_data(&event) else {
        return Filtered::Forward(event);
    };
    let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
        return Filtered::Forward(event);
    };
    if let Some(u) = usage_of(&v) {
        *usage = Some(u);
    } else {
        return Filtered::Forward(event);
    }
    if client_wants_usage {
        return Filtered::Forward(event);
    }
    let no_choices = v
        .get("choices")
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty());
    if no_choices {
        return Filtered::Drop;
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("usage");
    }
    Filtered::Forward(Bytes::from(format!("data: {v}\n\n")))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Format one SSE data event.
pub fn data_event(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usage_chunk_is_recorded_and_stripped() {
        let mut u = None;
        let ev = Bytes::from_static(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
        );
        assert_eq!(
            filter_openai_event(ev.clone(), false, &mut u),
            Filtered::Drop
        );
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4
            })
        );
        assert_eq!(
            filter_openai_event(ev.clone(), true, &mut u),
            Filtered::Forward(ev)
        );
        let with_choice = Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
        );
        match filter_openai_event(with_choice, false, &mut u) {
            Filtered::Forward(b) => assert!(!contains(&b, b"usage")),
            Filtered::Drop => panic!("must keep the choices"),
        }
        let null_usage = Bytes::from_static(b"data: {\"choices\":[{}],\"usage\":null}\n\n");
        assert_eq!(
            filter_openai_event(null_usage.clone(), false, &mut u),
            Filtered::Forward(null_usage)
        );
    }

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
