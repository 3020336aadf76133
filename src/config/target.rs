//! The vocabulary routing speaks in: `backend/model` targets and triage categories.

use std::fmt;

/// Triage categories the policy may route on.
pub const CATEGORIES: &[&str] = &[
    "chat",
    "extraction",
    "classification",
    "summarization",
    "rewriting",
    "creative",
    "qa",
    "reasoning",
    "math",
    "code",
];

/// A concrete `backend/model` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub backend: String,
    pub model: String,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        let (b, m) = s.split_once('/')?;
        (!b.is_empty() && !m.is_empty()).then(|| Target {
            backend: b.to_string(),
            model: m.to_string(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.model)
    }
}
