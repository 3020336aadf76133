//! `pii:` rules: what to do with requests that carry personal or secret data.

use crate::privacy::detect::PiiKind;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PiiRule {
    pub action: PiiAction,
    /// The kinds the rule is about (absent: all of them).
    pub kinds: Option<Vec<PiiKind>>,
}

impl PiiRule {
    pub fn covers(&self, k: PiiKind) -> bool {
        self.kinds.as_ref().is_none_or(|ks| ks.contains(&k))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// Answered by the decision's local targets (else the policy's local model).
    Local,
    /// Replaced by `[KIND]` before any backend sees it.
    Redact,
    /// Refused with 400.
    Reject,
}

impl PiiAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PiiAction::Local => "local",
            PiiAction::Redact => "redact",
            PiiAction::Reject => "reject",
        }
    }
}
