//! Personal and secret data in text, found by a hand-written scanner (no
//! regex engine): one pass for tokens (emails, IP addresses, secrets) and
//! one for runs of digits and separators (cards, phones, SSNs), plus IBANs.
//! Checksums where the format has one (Luhn for cards, mod 97 for IBANs) and
//! the rules that tell near-misses apart: dates, version strings, order
//! numbers, commit hashes and UUIDs are not flagged.

mod numbers;

use numbers::{digit_runs, ibans};

use serde::{Deserialize, Serialize};

/// What kind of data a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    Secret,
}

impl PiiKind {
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Card,
        PiiKind::Iban,
        PiiKind::Ssn,
        PiiKind::Ip,
        PiiKind::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Iban => "iban",
            PiiKind::Ssn => "ssn",
            PiiKind::Ip => "ip",
            PiiKind::Secret => "secret",
        }
    }
}

/// One finding: its kind and byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

/// Everything found in `text`, in order, without overlaps.
pub fn detect(text: &str) -> Vec<Finding> {
    let mut found = Vec::new();
    tokens(text, &mut found);
    digit_runs(text, &mut found);
    ibans(text, &mut found);
    found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut out: Vec<Finding> = Vec::with_capacity(found.len());
    for f in found {
        if out.last().is_none_or(|l| f.start >= l.end) {
            out.push(f);
        }
    }
    out
}

/// `text` with every finding replaced by `[KIND]`.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        out.push_str(&text[at..f.start]);
        out.push('[');
        out.push_str(&f.kind.as_str().to_ascii_uppercase());
        out.push(']');
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

fn is_sep(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ',' | ';' | '(' | ')' | '<' | '>' | '"' | '\'' | '[' | ']' | '{' | '}' | '`' | '|'
        )
}

/// Whitespace-separated tokens, trimmed of surrounding punctuation.
fn tokens(text: &str, found: &mut Vec<Finding>) {
    let mut prev_word = String::new();
    let mut start = None;
    let bytes_end = text.len();
    let mut iter = text.char_indices().peekable();
    loop {
        let next = iter.next();
        let boundary = match next {
            Some((_, c)) => is_sep(c),
            None => true,
        };
        match (start, boundary) {
            (None, false) => start = next.map(|(i, _)| i),
            (Some(s), true) => {
                let e = next.map_or(bytes_end, |(i, _)| i);
                let raw = &text[s..e];
                let trimmed = raw.trim_end_matches(['.', ':', '!', '?', '=']);
                let lead = trimmed.len() - trimmed.trim_start_matches(['=', ':']).len();
                let tok = &trimmed[lead..];
                if !tok.is_empty() {
                    if let Some(kind) = classify_token(tok, &prev_word) {
                        found.push(Finding {
                            kind,
                            start: s + lead,
                            end: s + lead + tok.len(),
                        });
                    }
                    prev_word = tok.to_ascii_lowercase();
                }
                start = None;
            }
            _ => {}
        }
        if next.is_none() {
            break;
        }
    }
}

fn classify_token(tok: &str, prev: &str) -> Option<PiiKind> {
    // `key=value`: the value.
    let tok = tok.rsplit('=').next().unwrap_or(tok);
    if tok.is_empty() {
        return None;
    }
    if is_email(tok) {
        return Some(PiiKind::Email);
    }
    if is_ip(tok, prev) {
        return Some(PiiKind::Ip);
    }
    if is_secret(tok) || (prev == "bearer" && is_token(tok)) {
        return Some(PiiKind::Secret);
    }
    None
}

/// After "Bearer": a credential of 20+ token characters (a JWT included).
fn is_token(t: &str) -> bool {
    t.len() >= 20
        && t.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=')
        })
        && t.chars().any(|c| c.is_ascii_digit())
}

fn is_email(t: &str) -> bool {
    let Some((local, domain)) = t.rsplit_once('@') else {
        return false;
    };
    let local = local.rsplit(':').next().unwrap_or(local); // mailto:
    !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-'))
        && domain.contains('.')
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        && domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
        && !domain.starts_with('.')
        && !domain.contains("..")
}

fn is_ip(tok: &str, prev: &str) -> bool {
    if tok.starts_with(['v', 'V']) {
        return false; // v1.2.3.4
    }
    // The host of a URL, or what follows `user@`.
    let t = match tok.split_once("://") {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest),
        None => tok,
    };
    let t = t.rsplit('@').next().unwrap_or(t);
    // host:port, [v6]:port
    let bare = t.trim_start_matches('[');
    let bare = bare.split(']').next().unwrap_or(bare);
    if bare.parse::<std::net::Ipv6Addr>().is_ok() && bare.contains("::") || {
        let groups = bare.split(':').count();
        groups >= 6 && bare.parse::<std::net::Ipv6Addr>().is_ok()
    } {
        return true;
    }
    let host = bare.split(['/', ':']).next().unwrap_or(bare);
    let parts: Vec<&str> = host.split('.').collect();
    let v4 = parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.chars().all(|c| c.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        });
    v4 && !matches!(
        prev,
        "version" | "v" | "ver" | "release" | "build" | "firmware"
    )
}

/// Provider key prefixes, and the shortest key each starts.
const PREFIXES: &[(&str, usize)] = &[
    ("sk-ant-", 24),
    ("sk-proj-", 24),
    ("sk-", 20),
    ("ghp_", 30),
    ("gho_", 30),
    ("ghs_", 30),
    ("github_pat_", 30),
    ("xoxb-", 20),
    ("xoxp-", 20),
    ("xoxa-", 20),
    ("glpat-", 20),
    ("AKIA", 20),
    ("ASIA", 20),
    ("AIza", 35),
    ("hf_", 30),
    ("rk_live_", 20),
    ("sk_live_", 20),
    ("pk_live_", 20),
];

fn is_secret(t: &str) -> bool {
    let t = t.trim_end_matches(['.', ',']);
    // A JSON Web Token: base64url header `eyJ...`, payload, signature.
    if t.starts_with("eyJ") && t.split('.').count() == 3 && t.len() >= 40 {
        return true;
    }
    let key_chars = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    };
    for (p, min) in PREFIXES {
        if let Some(rest) = t.strip_prefix(p) {
            if t.len() >= *min && key_chars(rest) && rest.chars().any(|c| c.is_ascii_digit()) {
                return true;
            }
        }
    }
    // A long token of mixed letters and digits with high entropy.
    if t.len() < 24 || t.len() > 256 {
        return false;
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '='))
    {
        return false;
    }
    if t.contains("//") || t.starts_with('/') || t.matches('/').count() > 2 {
        return false; // paths and URLs
    }
    let hex = t.chars().all(|c| c.is_ascii_hexdigit());
    if hex || is_uuid(t) {
        return false; // hashes, commit ids, UUIDs
    }
    let digits = t.chars().filter(char::is_ascii_digit).count();
    let upper = t.chars().filter(char::is_ascii_uppercase).count();
    let lower = t.chars().filter(char::is_ascii_lowercase).count();
    if digits < 2 || (upper + lower) < 8 || (upper < 2 && digits < 4) || lower < 2 && digits < 4 {
        return false;
    }
    entropy(t) >= 3.6
}

fn is_uuid(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Shannon entropy in bits per character.
fn entropy(t: &str) -> f64 {
    let mut counts = [0u32; 128];
    let mut n = 0u32;
    for b in t.bytes().filter(|b| b.is_ascii()) {
        counts[b as usize] += 1;
        n += 1;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / f64::from(n);
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(t: &str) -> Vec<PiiKind> {
        detect(t).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn finds_each_kind_and_redacts_it() {
        use PiiKind::*;
        assert_eq!(kinds("mail jane.doe+x@example.com now"), [Email]);
        assert_eq!(
            kinds("call +44 20 7946 0958 or (415) 555-0132"),
            [Phone, Phone]
        );
        assert_eq!(kinds("card 4111 1111 1111 1111 please"), [Card]);
        assert_eq!(kinds("IBAN DE89 3704 0044 0532 0130 00."), [Iban]);
        assert_eq!(kinds("GB82WEST12345698765432"), [Iban]);
        assert_eq!(kinds("my ssn is 123-45-6789"), [Ssn]);
        assert_eq!(kinds("host 192.0.2.10:8080 and 2001:db8::1"), [Ip, Ip]);
        assert_eq!(kinds("key sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7"), [Secret]);
        assert_eq!(kinds("AKIAIOSFODNN7EXAMPLE"), [Secret]);
        let t = "write to jane@example.com about 4111-1111-1111-1111";
        assert_eq!(redact(t, &detect(t)), "write to [EMAIL] about [CARD]");
    }

    #[test]
    fn near_misses_are_not_flagged() {
        for t in [
            "order 1234567890123456 shipped",   // fails Luhn
            "on 2024-01-15 at 10:30",           // date, time
            "version 1.2.3.4 and v2.0.1",       // versions
            "IBAN DE00 3704 0044 0532 0130 00", // bad checksum
            "commit 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39",
            "id 123e4567-e89b-12d3-a456-426614174000",
            "ssn-like 000-12-3456 and 555-0132",
            "pi is 3.14159 and the total is $1,299.99",
            "ISBN 978-3-16-148410-0",
        ] {
            assert!(detect(t).is_empty(), "{t}: {:?}", detect(t));
        }
    }
}
