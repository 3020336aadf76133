//! Rust port of `shared/datasets/check_answer.py`, the reference checker for
//! `answers.jsonl`: did a model's free-text reply get the record right? The
//! rules (number, choice, exact_ci, contains) are in that file's docstring;
//! this port keeps its regular expressions (fancy-regex, for the lookarounds)
//! and its order of steps, and is tested against it verdict for verdict.

use fancy_regex::Regex;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::LazyLock;

/// One line of answers.jsonl (the fields the checker and calibration use).
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub id: String,
    pub prompt: String,
    pub answers: Vec<String>,
    pub check: String,
    #[serde(default)]
    pub options: Option<Vec<String>>,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub source: String,
}

fn re(p: &str) -> Regex {
    match Regex::new(p) {
        Ok(r) => r,
        Err(e) => unreachable!("checker pattern {p} does not compile: {e}"),
    }
}

static MD: LazyLock<Regex> = LazyLock::new(|| re(r"[*_`#>]+"));
static NUM: LazyLock<Regex> = LazyLock::new(|| re(r"(?<![\d.])-?\d+(?:\.\d+)?"));
static MARK: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)answer|####"));
static THOUSANDS: LazyLock<Regex> = LazyLock::new(|| re(r"(?<=\d),(?=\d{3}(?!\d))"));
static NON_WORD: LazyLock<Regex> = LazyLock::new(|| re(r"[^\w\s]"));
static ARTICLES: LazyLock<Regex> = LazyLock::new(|| re(r"\b(a|an|the)\b"));
static LETTER_ONLY: LazyLock<Regex> = LazyLock::new(|| re(r"\A[\(\[]?\s*([A-H])\s*[\)\]]?[.:]?\z"));
static ANSWER_IS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i:answer|option|choice)\s*(?i:is|would be|:)?\s*:?\s*(?i:option\s*)?[\(\[]?([A-H])(?![\w'])",
    )
});
static LEADING: LazyLock<Regex> =
    LazyLock::new(|| re(r"\A[\(\[]?([A-H])(?:[\)\]][.:]?|[.:]|\s+-)(?:\s|\z)"));
static PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\A(?:(?:the\s+)?(?:final\s+)?(?:answer|sentiment|label|classification|conclusion)(?:\s+is)?\s*[:\-]?\s*)+",
    )
});
static TRAILING: LazyLock<Regex> = LazyLock::new(|| re(r"[\s.!,;:]+\z"));
static CLAUSE: LazyLock<Regex> = LazyLock::new(|| re("[.,;:!?()\u{2013}\u{2014}]| - "));
static NEGATED: LazyLock<Regex> = LazyLock::new(|| re(r"(?:\bnot|n't)\s+(?:be\s+)?\z"));

fn nfkc(s: &str) -> String {
    let mut n = tokenizers::NormalizedString::from(s);
    n.nfkc();
    n.get().to_string()
}

fn sub(r: &Regex, s: &str, with: &str) -> String {
    r.replace_all(s, with).into_owned()
}

fn is_match(r: &Regex, s: &str) -> bool {
    r.is_match(s).unwrap_or(false)
}

/// Python's `str.split()` + `" ".join`.
fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first `n` characters (Python's `s[:n]`).
fn chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn clean_num_text(text: &str) -> String {
    sub(&THOUSANDS, &nfkc(text), "").replace(['$', '%'], " ")
}

/// The number a reply gives as its answer, or None.
pub fn extract_number(text: &str) -> Option<f64> {
    let t = clean_num_text(text);
    let last_mark = MARK.find_iter(&t).filter_map(Result::ok).last();
    if let Some(m) = last_mark {
        let window = chars(&t[m.end()..], 40);
        if let Ok(Some(n)) = NUM.find(window) {
            return n.as_str().parse().ok();
        }
    }
    NUM.find_iter(&t)
        .filter_map(Result::ok)
        .last()
        .and_then(|n| n.as_str().parse().ok())
}

fn check_number(r: &Record, text: &str) -> bool {
    let Some(x) = extract_number(text) else {
        return false;
    };
    r.answers.iter().any(|a| {
        clean_num_text(a)
            .trim()
            .parse::<f64>()
            .is_ok_and(|g| (x - g).abs() <= 1e-6 + 1e-9 * g.abs())
    })
}

fn norm_words(s: &str) -> String {
    let s = sub(&MD, &nfkc(s), "").to_lowercase();
    collapse(&sub(&NON_WORD, &s, " "))
}

fn group1(r: &Regex, s: &str) -> Option<char> {
    r.captures(s)
        .ok()
        .flatten()
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().chars().next())
}

/// The option letter a reply picks (A, B, ...) or None.
pub fn extract_choice(text: &str, options: &[String]) -> Option<char> {
    let letters: Vec<char> = "ABCDEFGH".chars().take(options.len()).collect();
    let ok = |c: Option<char>| c.filter(|c| letters.contains(c));
    let t = sub(&MD, &nfkc(text), "");
    let t = t.trim();
    let first = t.split('\n').next().unwrap_or("").trim();
    for cand in [t, first] {
        if let Some(c) = ok(group1(&LETTER_ONLY, cand)) {
            return Some(c);
        }
    }
    if let Some(c) = ok(group1(&ANSWER_IS, t)) {
        return Some(c);
    }
    if let Some(c) = ok(group1(&LEADING, t)) {
        return Some(c);
    }
    let body = format!(" {} ", norm_words(t));
    let normed: Vec<String> = options.iter().map(|o| norm_words(o)).collect();
    let found: Vec<usize> = (0..options.len())
        .filter(|&i| !normed[i].is_empty() && body.contains(&format!(" {} ", normed[i])))
        .collect();
    let found: Vec<usize> = found
        .iter()
        .copied()
        .filter(|&i| {
            !found
                .iter()
                .any(|&j| j != i && normed[j].contains(&normed[i]))
        })
        .collect();
    match found.as_slice() {
        [i] => letters.get(*i).copied(),
        _ => None,
    }
}

fn check_choice(r: &Record, text: &str) -> bool {
    let gold = r
        .answers
        .first()
        .map(|a| a.trim().to_uppercase())
        .unwrap_or_default();
    extract_choice(text, r.options.as_deref().unwrap_or(&[])).is_some_and(|c| gold == c.to_string())
}

const QUOTES: &[char] = &[' ', '\t', '"', '\'', '“', '”', '‘', '’', '(', ')', '[', ']'];

fn norm_label(s: &str) -> String {
    let s = sub(&MD, &nfkc(s), "").to_lowercase();
    let s = s.trim().trim_matches(QUOTES);
    let s = sub(&PREFIX, s, "");
    let s = s.trim_matches(QUOTES);
    sub(&TRAILING, s, "")
}

fn starts_with_label(line: &str, label: &str) -> bool {
    line == label
        || is_match(
            &re(&format!(r"\A{}(?![a-z0-9])", fancy_regex::escape(label))),
            line,
        )
}

/// Labels occurring in body as whole words, not right after "not" / "n't".
fn labels_in(body: &str, labels: &[String]) -> BTreeSet<String> {
    let mut hits = BTreeSet::new();
    for lab in labels {
        let r = re(&format!(
            r"(?<![a-z0-9]){}(?![a-z0-9])",
            fancy_regex::escape(lab)
        ));
        for m in r.find_iter(body).filter_map(Result::ok) {
            if !is_match(&NEGATED, &body[..m.start()]) {
                hits.insert(lab.clone());
            }
        }
    }
    hits
}

fn check_exact_ci(r: &Record, text: &str) -> bool {
    let accepted: Vec<String> = r.answers.iter().map(|a| norm_label(a)).collect();
    let labels: Vec<String> = r
        .options
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|o| norm_label(o))
        .collect();
    let t = nfkc(text);
    let line = t
        .split('\n')
        .map(norm_label)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let clause = match CLAUSE.find(&line) {
        Ok(Some(m)) => &line[..m.start()],
        _ => line.as_str(),
    };
    if labels_in(clause, &labels).len() > 1 {
        return false; // "positive or negative", "true or false? true"
    }
    if accepted
        .iter()
        .any(|a| !a.is_empty() && starts_with_label(&line, a))
    {
        return true;
    }
    if labels.is_empty()
        || labels
            .iter()
            .any(|l| !l.is_empty() && starts_with_label(&line, l))
    {
        return false;
    }
    let hits = labels_in(&sub(&MD, &t, "").to_lowercase(), &labels);
    hits.len() == 1 && hits.iter().all(|h| accepted.contains(h))
}

fn norm_qa(s: &str) -> String {
    let s = nfkc(s).to_lowercase();
    let s = sub(&NON_WORD, &s, " ");
    collapse(&sub(&ARTICLES, &s, " "))
}

fn check_contains(r: &Record, text: &str) -> bool {
    let head_all = sub(&MD, &nfkc(text), "");
    let head = chars(&head_all, 300);
    let body = format!(" {} ", norm_qa(head));
    let lower = head.to_lowercase();
    r.answers.iter().any(|a| {
        let g = norm_qa(a);
        if g.chars().count() >= 2 {
            body.contains(&format!(" {g} "))
        } else {
            let raw = nfkc(a).trim().to_lowercase();
            !a.trim().is_empty()
                && is_match(
                    &re(&format!(r"(?<![\w]){}(?![\w+])", fancy_regex::escape(&raw))),
                    &lower,
                )
        }
    })
}

/// True iff `reply` answers `record` correctly (unknown check kinds: false).
pub fn check(record: &Record, reply: &str) -> bool {
    match record.check.as_str() {
        "number" => check_number(record, reply),
        "choice" => check_choice(record, reply),
        "exact_ci" => check_exact_ci(record, reply),
        "contains" => check_contains(record, reply),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
