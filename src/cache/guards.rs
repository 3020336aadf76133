//! What a sentence embedding does not see: two prompts that differ in a
//! number, a negation, a direction ("on"/"off", "increase"/"decrease"), a
//! named entity, or the order of their entities ("USD to EUR" / "EUR to
//! USD") read as near-identical to MiniLM, yet need different answers. The
//! semantic cache only serves a neighbour whose `Signature` matches.

/// The facts about a prompt that must match for its answer to be reused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    /// Numbers, in order.
    numbers: Vec<String>,
    /// (group, side) of every directional word, sorted, deduplicated.
    polar: Vec<(u8, bool)>,
    /// Whether the prompt is negated an odd number of times.
    negated: bool,
    /// Names (capitalised or all-caps words not starting a sentence),
    /// lower-cased, each once, in order of appearance.
    names: Vec<String>,
    /// The content words on either side of a relation word ("to", "from",
    /// "than", "by", "vs", "a", ...; "Y of X" read as "X Y"), for telling
    /// "USD to EUR" from "EUR to USD".
    pairs: Vec<(String, String)>,
    /// Content words, for telling "mute" from "unmute".
    words: Vec<String>,
    /// Neighbouring content words as ordered pairs ("Y of X" as "X Y").
    adjacent: Vec<(String, String)>,
    /// Every word, lower-cased, in order.
    tokens: Vec<String>,
}

/// Two prompts whose answers may be exchanged, as far as the signatures
/// can tell: the same numbers in the same order, negation and directions;
/// each one's names are words of the other, in the same order; no related
/// pair of one appears reversed in the other; no word of one is another's
/// word with a negating prefix (un-, in-, dis-, non-, im-).
pub fn compatible(a: &Signature, b: &Signature) -> bool {
    if a.numbers != b.numbers || a.polar != b.polar || a.negated != b.negated {
        return false;
    }
    let names_fit = |x: &Signature, y: &Signature| {
        let mut last = None;
        x.names
            .iter()
            .all(|n| match y.tokens.iter().position(|t| t == n) {
                Some(i) if last.is_none_or(|l| i > l) => {
                    last = Some(i);
                    true
                }
                _ => false,
            })
    };
    if !names_fit(a, b) || !names_fit(b, a) {
        return false;
    }
    let reversed = a
        .pairs
        .iter()
        .any(|(x, y)| x != y && b.pairs.iter().any(|(p, q)| p == y && q == x));
    if reversed || same_words_other_roles(a, b) {
        return false;
    }
    let negates = |x: &Vec<String>, y: &Vec<String>| {
        x.iter().any(|w| {
            ["un", "in", "dis", "non", "im"].iter().any(|pre| {
                w.strip_prefix(pre)
                    .is_some_and(|rest| rest.len() >= 3 && y.iter().any(|v| v == rest))
            })
        })
    };
    !negates(&a.words, &b.words) && !negates(&b.words, &a.words)
}

/// The same content words, but two of them next to each other in one and
/// the other way round in the other: "can a dog eat cat food" / "can a cat
/// eat dog food", "the employee suing the company" / "the company suing
/// the employee".
fn same_words_other_roles(a: &Signature, b: &Signature) -> bool {
    let (mut x, mut y) = (a.words.clone(), b.words.clone());
    x.sort();
    y.sort();
    if x != y {
        return false;
    }
    a.adjacent
        .iter()
        .any(|(p, q)| p != q && b.adjacent.iter().any(|(r, t)| r == q && t == p))
}

/// Words that carry no content for the pair and prefix checks.
const STOP: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did",
    "doing", "have", "has", "had", "i", "me", "my", "we", "our", "you", "your", "he", "she", "it",
    "its", "they", "them", "their", "this", "that", "these", "those", "what", "which", "who",
    "whom", "whose", "how", "why", "when", "where", "can", "could", "would", "should", "will",
    "shall", "may", "might", "must", "please", "tell", "to", "from", "in", "on", "at", "for",
    "with", "by", "about", "into", "than", "as", "and", "or", "but", "if", "so", "some", "any",
    "there", "here", "just", "also", "very", "really", "kindly", "u", "ur", "pls", "plz", "hey",
    "hi", "hello", "thanks", "thank", "explain", "give", "show", "want", "need", "know", "like",
    "get", "let", "let's", "much", "many", "way", "best", "of", "s", "whats", "what's", "it's",
    "vs", "versus", "against", "given", "over", "i'm",
];

/// Words that relate the content words on their two sides.
const RELATIONS: &[&str] = &[
    "to", "from", "into", "than", "by", "vs", "versus", "against", "given", "over", "a", "an", "of",
];

/// Directional words: group and side. Synonyms share both.
const POLAR: &[(&str, u8, bool)] = &[
    ("on", 0, true),
    ("enable", 0, true),
    ("enabled", 0, true),
    ("activate", 0, true),
    ("off", 0, false),
    ("disable", 0, false),
    ("disabled", 0, false),
    ("deactivate", 0, false),
    ("increase", 1, true),
    ("raise", 1, true),
    ("more", 1, true),
    ("higher", 1, true),
    ("larger", 1, true),
    ("bigger", 1, true),
    ("maximum", 1, true),
    ("max", 1, true),
    ("most", 1, true),
    ("above", 1, true),
    ("decrease", 1, false),
    ("reduce", 1, false),
    ("less", 1, false),
    ("fewer", 1, false),
    ("smaller", 1, false),
    ("minimum", 1, false),
    ("min", 1, false),
    ("least", 1, false),
    ("below", 1, false),
    ("before", 2, true),
    ("earlier", 2, true),
    ("after", 2, false),
    ("later", 2, false),
    ("ascending", 3, true),
    ("asc", 3, true),
    ("descending", 3, false),
    ("desc", 3, false),
    ("allowed", 4, true),
    ("allow", 4, true),
    ("permitted", 4, true),
    ("forbidden", 4, false),
    ("deny", 4, false),
    ("prohibited", 4, false),
    ("banned", 4, false),
    ("include", 5, true),
    ("including", 5, true),
    ("exclude", 5, false),
    ("excluding", 5, false),
    ("true", 6, true),
    ("false", 6, false),
    ("first", 7, true),
    ("last", 7, false),
    ("uppercase", 8, true),
    ("upper", 8, true),
    ("lowercase", 8, false),
    ("encode", 9, true),
    ("decode", 9, false),
    ("encrypt", 10, true),
    ("decrypt", 10, false),
    ("import", 11, true),
    ("export", 11, false),
    ("buy", 12, true),
    ("sell", 12, false),
    ("lock", 13, true),
    ("unlock", 13, false),
    ("show", 14, true),
    ("hide", 14, false),
    ("install", 15, true),
    ("uninstall", 15, false),
    ("connect", 16, true),
    ("disconnect", 16, false),
    ("subscribe", 17, true),
    ("unsubscribe", 17, false),
    ("add", 18, true),
    ("remove", 18, false),
    ("delete", 18, false),
    ("push", 19, true),
    ("pull", 19, false),
    ("send", 20, true),
    ("receive", 20, false),
    ("left", 21, true),
    ("right", 21, false),
    ("always", 22, true),
    ("never", 22, false),
    ("hot", 23, true),
    ("cold", 23, false),
    ("faster", 24, true),
    ("slower", 24, false),
    ("win", 25, true),
    ("lose", 25, false),
    ("positive", 26, true),
    ("negative", 26, false),
    ("high", 29, true),
    ("low", 29, false),
    ("lower", 1, false),
    ("up", 30, true),
    ("down", 30, false),
    ("accept", 31, true),
    ("approve", 31, true),
    ("reject", 31, false),
    ("decline", 31, false),
    ("block", 4, false),
    ("compress", 32, true),
    ("extract", 32, false),
    ("advantage", 33, true),
    ("pro", 33, true),
    ("con", 33, false),
    ("start", 27, true),
    ("stop", 27, false),
    ("open", 28, true),
    ("close", 28, false),
];

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nothing", "without", "cannot", "nor", "neither", "against",
];

/// The directional word `lower` is, or is an inflection of.
fn polar_of(lower: &str) -> Option<(u8, bool)> {
    let find = |w: &str| {
        POLAR
            .iter()
            .find(|(p, _, _)| *p == w)
            .map(|&(_, g, s)| (g, s))
    };
    if let Some(p) = find(lower) {
        return Some(p);
    }
    for suffix in ["ing", "ed", "es", "s", "d"] {
        if let Some(stem) = lower.strip_suffix(suffix) {
            if stem.len() < 3 {
                continue;
            }
            if let Some(p) = find(stem).or_else(|| find(&format!("{stem}e"))) {
                return Some(p);
            }
        }
    }
    None
}

/// Verbs after which "in" and "out" are opposites ("zoom in", "log out").
const INOUT: &[&str] = &[
    "zoom", "log", "logged", "sign", "signed", "opt", "check", "scale", "clock", "plug",
];

/// Verbs after which "on" means switched on ("turn on dark mode").
const SWITCHES: &[&str] = &["turn", "switch", "toggle", "flip", "set", "put"];

impl Signature {
    pub fn of(text: &str) -> Signature {
        // Words, with whether each starts a sentence.
        let mut words: Vec<(String, bool)> = Vec::new();
        let mut word = String::new();
        let mut sentence_start = true;
        let mut word_starts = true;
        for c in text.chars() {
            let in_number = c == '.' && word.chars().last().is_some_and(|p| p.is_ascii_digit());
            if c.is_alphanumeric() || c == '\'' || in_number {
                if word.is_empty() {
                    word_starts = sentence_start;
                    sentence_start = false;
                }
                word.push(c);
            } else {
                if !word.is_empty() {
                    words.push((std::mem::take(&mut word), word_starts));
                }
                if matches!(c, '.' | '?' | '!' | '\n' | ':') {
                    sentence_start = true;
                }
            }
        }
        if !word.is_empty() {
            words.push((word, word_starts));
        }
        let mut s = Signature::default();
        let mut negations = 0usize;
        let mut previous = String::new();
        for (w, starts) in &words {
            let lower = w.to_lowercase();
            let content = lower
                .strip_suffix("'s")
                .unwrap_or(&lower)
                .trim_matches('\'')
                .to_string();
            if w.chars().any(|c| c.is_ascii_digit()) {
                let n: String = w
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                let n = n.trim_end_matches('.').to_string();
                s.numbers.push(n.clone());
                s.tokens.push(n);
                previous = lower;
                continue;
            }
            if lower.ends_with("n't") || NEGATIONS.contains(&lower.as_str()) {
                negations += 1;
            }
            let polar = match lower.as_str() {
                // "on" and "up" are mostly plain prepositions; their
                // opposites are not.
                "on" if SWITCHES.contains(&previous.as_str()) => Some((0, true)),
                "in" | "out" if INOUT.contains(&previous.as_str()) => Some((34, lower == "in")),
                "on" | "up" | "start" | "starting" => None,
                _ => polar_of(&lower),
            };
            if let Some(p) = polar {
                s.polar.push(p);
            }
            let all_caps = w.chars().count() >= 2 && w.chars().all(|c| c.is_uppercase());
            let capital = w.chars().next().is_some_and(char::is_uppercase);
            if ((capital && !starts && lower != "i" && !lower.starts_with("i'")) || all_caps)
                && !STOP.contains(&content.as_str())
                && !s.names.contains(&content)
            {
                s.names.push(content.clone());
            }
            s.tokens.push(content);
            previous = lower;
        }
        s.pairs = related_pairs(&s.tokens);
        s.adjacent = adjacent_pairs(&s.tokens);
        s.words = s
            .tokens
            .iter()
            .filter(|w| !STOP.contains(&w.as_str()))
            .cloned()
            .collect();
        s.polar.sort();
        s.polar.dedup();
        s.negated = negations % 2 == 1;
        s
    }
}

/// Neighbouring content words as ordered pairs; across "of" the order is
/// turned round ("capital of France" reads as "France capital").
fn adjacent_pairs(tokens: &[String]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut prev: Option<&String> = None;
    let mut of_between = false;
    for w in tokens {
        if w == "of" {
            of_between = true;
            continue;
        }
        if STOP.contains(&w.as_str()) {
            continue;
        }
        if let Some(p) = prev {
            pairs.push(if of_between {
                (w.clone(), p.clone())
            } else {
                (p.clone(), w.clone())
            });
        }
        prev = Some(w);
        of_between = false;
    }
    pairs
}

/// For each relation word, the nearest content words before and after it
/// (turned round across "of": "capital of France" pairs like "France's
/// capital").
fn related_pairs(tokens: &[String]) -> Vec<(String, String)> {
    let content = |w: &String| !STOP.contains(&w.as_str());
    let mut pairs = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !RELATIONS.contains(&t.as_str()) {
            continue;
        }
        let before = tokens[..i].iter().rev().find(|w| content(w));
        let after = tokens[i + 1..].iter().find(|w| content(w));
        if let (Some(x), Some(y)) = (before, after) {
            if t == "of" {
                pairs.push((y.clone(), x.clone()));
            } else {
                pairs.push((x.clone(), y.clone()));
            }
        }
        // "from X ... to Y": X and Y, however many words each takes.
        if t == "from" {
            let to = tokens[i + 1..]
                .iter()
                .position(|w| w == "to" || w == "into")
                .map(|j| i + 1 + j);
            if let (Some(x), Some(j)) = (after, to) {
                if let Some(y) = tokens[j + 1..].iter().find(|w| content(w)) {
                    pairs.push((x.clone(), y.clone()));
                }
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        compatible(&Signature::of(a), &Signature::of(b))
    }

    #[test]
    fn traps_are_told_apart_and_rewordings_are_not() {
        assert!(!same("Can a dog eat cat food?", "Can a cat eat dog food?"));
        assert!(!same("Zoom in on the map", "Zoom out on the map"));
        assert!(!same(
            "Switch from an iPhone to an Android phone",
            "Switch from an Android phone to an iPhone"
        ));
        assert!(!same("Turn on dark mode", "Turn off dark mode"));
        assert!(!same("What is 17*23?", "What is 17*24?"));
        assert!(!same("Convert 100 USD to EUR", "Convert 100 EUR to USD"));
        assert!(!same("Did Alice call Bob?", "Did Bob call Alice?"));
        assert!(!same(
            "What is the capital of Peru?",
            "What is the capital of Chile?"
        ));
        assert!(!same(
            "Is smoking allowed here?",
            "Is smoking not allowed here?"
        ));
        assert!(!same(
            "Sort the list in ascending order",
            "Sort the list in descending order"
        ));
        assert!(same("Turn on dark mode please", "please, enable dark mode"));
        assert!(same(
            "What's the capital of France?",
            "Tell me the capital of France."
        ));
        assert!(same(
            "How do I reverse a string in Python?",
            "Reversing a string in Python: how?"
        ));
        assert!(same("I can't log in", "I can't sign in to my account"));
        assert!(!same(
            "Is a square a rectangle?",
            "Is a rectangle a square?"
        ));
        assert!(!same(
            "Convert 10 inches to centimeters.",
            "Convert 10 centimeters to inches."
        ));
        assert!(!same("How do I mute someone?", "How do I unmute someone?"));
        assert!(!same(
            "Foods that raise cholesterol",
            "Foods that lower cholesterol"
        ));
        assert!(same(
            "Can you tell me the capital of Australia?",
            "What is Australia's capital?"
        ));
        assert!(same(
            "How do I reverse a string in Python?",
            "In Python, how do I reverse a string?"
        ));
    }
}
