//! The features-based placeholder triage: a transparent hand-set logistic
//! score over length, code, math and question-word features, and keyword
//! rules for the category. It is what it says — no trained weights — and is
//! replaced by the MiniLM head once that lands; it stays as a baseline and as
//! the fallback a policy can select explicitly (`triage: {kind: features}`).

use super::{last_user_text, Triage, TriageResult};
use crate::api::openai::ChatMessage;

pub struct FeatureTriage;

/// Cheap, explainable features of a prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    pub approx_tokens: f64,
    pub code: bool,
    pub math_density: f64,
    pub reasoning_words: usize,
    pub constraints: usize,
    pub turns: usize,
}

const REASONING: &[&str] = &[
    "prove",
    "proof",
    "derive",
    "step by step",
    "explain why",
    "analyze",
    "analyse",
    "compare",
    "trade-off",
    "tradeoff",
    "optimize",
    "design",
    "implement",
    "algorithm",
    "evaluate",
    "justify",
    "critique",
    "architecture",
    "complexity",
    "theorem",
];
const CODE_HINTS: &[&str] = &[
    "```",
    "def ",
    "fn ",
    "function ",
    "class ",
    "#include",
    "import ",
    "select ",
    "console.log",
    "public static",
    "=> {",
    "();",
    "python",
    "javascript",
    "rust",
    "sql",
    "regex",
    "code",
];

pub fn features(messages: &[ChatMessage]) -> Features {
    let text = last_user_text(messages);
    let lower = text.to_lowercase();
    let all_chars: usize = messages.iter().map(|m| m.text.len()).sum();
    let math_chars = text
        .chars()
        .filter(|c| c.is_ascii_digit() || "+-*/^=<>∑∫√π".contains(*c))
        .count();
    Features {
        approx_tokens: all_chars as f64 / 4.0,
        code: CODE_HINTS.iter().any(|h| lower.contains(h)),
        math_density: if text.is_empty() {
            0.0
        } else {
            math_chars as f64 / text.chars().count() as f64
        },
        reasoning_words: REASONING.iter().filter(|w| lower.contains(*w)).count(),
        constraints: lower.matches('\n').count().min(20)
            + [" must ", " should ", " at least ", " exactly ", " without "]
                .iter()
                .filter(|w| lower.contains(*w))
                .count(),
        turns: messages
            .iter()
            .filter(|m| m.role == "user" || m.role == "assistant")
            .count(),
    }
}

/// Hand-set logistic score; weights chosen by inspection, not trained.
pub fn score(f: &Features) -> f64 {
    let z = -2.2
        + 0.55 * (1.0 + f.approx_tokens).ln()
        + if f.code { 1.2 } else { 0.0 }
        + 4.0 * f.math_density.min(0.5)
        + 0.9 * f.reasoning_words.min(3) as f64
        + 0.15 * f.constraints as f64
        + 0.1 * f.turns.saturating_sub(1).min(10) as f64;
    1.0 / (1.0 + (-z).exp())
}

pub fn category(messages: &[ChatMessage], f: &Features) -> &'static str {
    let lower = last_user_text(messages).to_lowercase();
    let has = |ws: &[&str]| ws.iter().any(|w| lower.contains(w));
    if f.code {
        "code"
    } else if has(&["summarize", "summarise", "summary", "tl;dr", "tldr"]) {
        "summarization"
    } else if has(&[
        "rewrite",
        "rephrase",
        "paraphrase",
        "translate",
        "proofread",
        "fix the grammar",
    ]) {
        "rewriting"
    } else if has(&["extract", "list all", "find all", "pull out"]) {
        "extraction"
    } else if has(&[
        "classify",
        "categorize",
        "categorise",
        "sentiment",
        "which category",
        "label",
    ]) {
        "classification"
    } else if has(&[
        "poem", "story", "song", "haiku", "limerick", "fiction", "creative",
    ]) {
        "creative"
    } else if f.math_density > 0.15
        || has(&[
            "solve",
            "equation",
            "integral",
            "calculate",
            "how many",
            "probability",
        ])
    {
        "math"
    } else if f.reasoning_words > 0 || has(&["why ", "reason"]) {
        "reasoning"
    } else if has(&["what", "who", "when", "where", "which", "how", "?"]) {
        "qa"
    } else {
        "chat"
    }
}

impl Triage for FeatureTriage {
    fn triage(&self, messages: &[ChatMessage]) -> TriageResult {
        let f = features(messages);
        TriageResult {
            score: score(&f),
            category: category(messages, &f),
            local_success: None,
        }
    }
    fn name(&self) -> &'static str {
        "features"
    }
    fn is_cheap(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(t: &str) -> Vec<ChatMessage> {
        vec![ChatMessage {
            role: "user".into(),
            text: t.into(),
        }]
    }

    #[test]
    fn simple_is_low_and_hard_is_high() {
        let t = FeatureTriage;
        let easy = t.triage(&user("What is the capital of Japan?"));
        assert!(easy.score < 0.5, "{easy:?}");
        assert_eq!(easy.category, "qa");
        let hard = t.triage(&user(
            "Prove step by step that the sum of the first n odd numbers is n^2, then implement \
             an algorithm in Rust that verifies it for n <= 10^6 and analyze its complexity.",
        ));
        assert!(hard.score > 0.5, "{hard:?}");
        assert_eq!(hard.category, "code");
        assert_eq!(
            t.triage(&user("Write a haiku about rain")).category,
            "creative"
        );
    }

    #[test]
    fn score_is_bounded() {
        let t = FeatureTriage;
        for s in ["", "x", &"12+34=".repeat(5000)] {
            let r = t.triage(&user(s));
            assert!((0.0..=1.0).contains(&r.score));
        }
        assert!((0.0..=1.0).contains(&t.triage(&[]).score));
    }
}
