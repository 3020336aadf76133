//! What a prompt asks the model to *produce*, as counts of task-demand cues,
//! and a hand-set prior logit built from them.
//!
//! These follow the labelling rule (`../shared/datasets/README.md`): formal
//! logic, multi-step arithmetic, code synthesis, multi-hop questions, applying
//! a stated rule to a new situation, open-ended explain/what-if essays, long or
//! constrained writing and exact puzzle-like work (counting, sorting, reversing)
//! make a prompt hard; transforming a given text (summarise, classify, extract,
//! answer from a passage), one-line creative asks, short look-ups and small
//! talk keep it simple. None of it names a topic or a dataset's template.
//!
//! Why a hand-set prior on top of the learned head: a task type that only one
//! training source shows (formal logic is only FOLIO) cannot be learned when
//! that source is held out, and an unseen source may bring a task type no
//! source shows. The prior carries the rule into those cases; the head learns
//! a residual on top of it (it enters the logistic as an offset). Weights are
//! round numbers set by hand from the rule and checked by leave-one-source-out
//! (`slmgate eval --loso`), never fitted to dev.

mod code_words;
mod lexicon;
mod math;
mod phrases;

use code_words::*;
use lexicon::*;
use math::*;
pub use phrases::words;
use phrases::{count, joined, Joined};

/// Names of the task features, in input order.
pub const TASK_FEATURES: &[&str] = &[
    "logic",
    "math_steps",
    "latex",
    "code_task",
    "multihop",
    "apply",
    "essay",
    "long_write",
    "constraints",
    "puzzle",
    "transform",
    "given_long",
    "short_q",
    "compare_q",
    "one_liner",
    "ln_ask",
    "chat",
];

/// Raw task-demand cues of one user turn (counts, mostly).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskCues {
    pub logic: f32,
    pub math_steps: f32,
    pub latex: f32,
    pub code_task: f32,
    /// How much program a code ask wants: algorithmic words in an ask to
    /// write code (up to two), or -1 for one built-in step or formula in a
    /// short ask that names no artefact.
    pub code_scope: f32,
    pub multihop: f32,
    pub apply: f32,
    pub essay: f32,
    pub long_write: f32,
    pub constraints: f32,
    pub puzzle: f32,
    pub transform: f32,
    pub given_long: f32,
    pub short_q: f32,
    pub compare_q: f32,
    pub one_liner: f32,
    pub ln_ask: f32,
    pub chat: f32,
    /// A short story with numbers and an outright quantity ask ("how many"):
    /// a word problem, whose text is the problem, not material to transform.
    pub word_problem: bool,
}

/// Words whose `'s` is "is" or "has", not a possessive.
const CONTRACTED: &[&str] = &[
    "what", "how", "it", "that", "there", "here", "who", "where", "when", "why", "let", "he",
    "she", "this", "one", "everyone", "nobody",
];

/// The most entity-to-entity links in one question of the ask (`RELATIVE`
/// words after a question's first word, `LINKS`, possessives).
fn bridges(ask: &str) -> usize {
    ask.split_inclusive(['?', '.', '!', '\n'])
        .filter(|q| q.ends_with('?'))
        .map(|q| {
            let ws = words(q);
            let rel = ws.iter().skip(1).filter(|w| RELATIVE.contains(w)).count();
            let poss = ws
                .iter()
                .filter(|w| {
                    w.strip_suffix("'s")
                        .is_some_and(|stem| !CONTRACTED.contains(&stem))
                })
                .count();
            rel + poss + count(&joined(&ws), LINKS) as usize
        })
        .max()
        .unwrap_or(0)
}

/// Asked lengths of a hundred words or more, or of pages to write: "a
/// 1000-word story", "in 500 words", "two pages on …".
fn long_length(ws: &[&str], produce: bool) -> f32 {
    ws.windows(2)
        .filter(|p| {
            let n = p[0].parse::<u32>().ok();
            let big = n.map_or(matches!(p[0], "hundred" | "thousand"), |n| n >= 100);
            let some = big || n.is_some_and(|n| n >= 2) || NUMBER_WORDS.contains(&p[0]);
            match p[1] {
                "word" | "words" => big,
                "page" | "pages" => produce && some,
                _ => false,
            }
        })
        .count() as f32
}

/// Whether the ask names programming: a `TECH` word, also with a version
/// number run into it ("pyqt6", "python3", "vue3"), or a language named with
/// symbols ("c#", "c++").
fn tech(a: &Joined, ask_lower: &str, aws: &[&str]) -> bool {
    let versionless = |w: &&str| {
        let stem = w.trim_end_matches(|c: char| c.is_ascii_digit());
        stem.len() >= 2 && stem.len() < w.len() && TECH.contains(&stem)
    };
    count(a, TECH) > 0.0
        || aws.iter().any(versionless)
        || SYMBOL_TECH.iter().any(|t| ask_lower.contains(t))
}

/// Asked lengths of three sentences, lines or bullets or fewer: "in 2-3
/// sentences", "in 2 or 3 sentences", "into 3 bullet points" (a short
/// output; not "compare the two sentences", which are input).
fn short_length(ws: &[&str]) -> f32 {
    ws.windows(3)
        .filter(|p| {
            let asked = matches!(
                p[0],
                "in" | "into" | "with" | "to" | "or" | "using" | "max" | "under"
            ) || p[0].bytes().all(|c| c.is_ascii_digit());
            asked
                && matches!(p[1], "1" | "2" | "3" | "two" | "three")
                && matches!(p[2], "sentences" | "lines" | "bullets" | "bullet")
        })
        .count() as f32
}

/// Exact character-level or ordering work: an operation, plus the units it
/// works on when an operation is there ("letters", or a letter's plural:
/// "how many r's").
fn puzzle(s: &Joined, ws: &[&str]) -> f32 {
    // "Sort these headlines into Sports / Politics / Tech" classifies.
    let into = followed_within(ws, |w| w == "sort", 3, &["into"]);
    let ops = count(s, PUZZLE) - into;
    if ops > 0.0 || count(s, UNIT_OPS) > 0.0 {
        let letters = ws
            .iter()
            .filter(|w| w.len() == 3 && w.ends_with("'s"))
            .count();
        ops + count(s, PUZZLE_UNITS) + letters as f32
    } else {
        0.0
    }
}

/// Relations to reason over: two or more comparisons ("taller than", "older
/// than") in a short ask that asks a question ("… who's the second tallest?").
fn comparisons(a: &Joined, ask_lower: &str, chars: usize) -> f32 {
    let relations = count(
        a,
        &["than", "next to", "left of", "right of", "in front of"],
    );
    (chars <= 600 && ask_lower.contains('?') && relations >= 2.0) as u8 as f32
}

/// How much program a code ask wants (`TaskCues::code_scope`): in an ask to
/// write one (`produce`), algorithmic words, up to two ("time complexity of
/// binary search?" asks about an algorithm, not for one); without any, -1 for
/// one built-in step or formula in an ask of at most `ONE_STEP_WORDS` words
/// ("write a function to find the area of a rectangle", "how do I convert an
/// int to a string in java") that names no `ARTEFACT`; a longer ask with a
/// step in it is a spec, a step added to an app a feature.
fn code_scope(a: &Joined, ask_words: usize, code_task: f32, produce: bool) -> f32 {
    // Neither a one-step ask (too long) nor an ask to write code: nothing
    // to count.
    let short = ask_words <= ONE_STEP_WORDS;
    if code_task == 0.0 || !(short || produce) {
        return 0.0;
    }
    let algorithmic = count(a, ALGORITHMIC);
    let one_step =
        algorithmic == 0.0 && short && count(a, ARTEFACT) == 0.0 && count(a, ONE_STEP) > 0.0;
    if one_step {
        -1.0
    } else if produce {
        algorithmic.min(2.0)
    } else {
        0.0
    }
}

/// The longest ask read as a one-step code ask.
const ONE_STEP_WORDS: usize = 20;

/// Lines of code: ending like C-family code (`{`, `}`, `;`), or opening like
/// Python (`def`, `return`, `import`, `elif`, an indented block header).
fn code_line(l: &str) -> bool {
    let t = l.trim();
    // A line of brackets alone, or a quoted key, is as likely JSON data.
    if t.starts_with('"') || t.chars().all(|c| "{}[],".contains(c)) {
        return false;
    }
    t.ends_with(['{', '}', ';'])
        || ["def ", "return ", "import ", "elif ", "print("]
            .iter()
            .any(|k| t.starts_with(k))
        || (l.starts_with([' ', '\t']) && t.ends_with(':') && !t.contains(": "))
}

/// A situation set out in three or more sentences before the question: a
/// word problem's story holds a quantity it need not write as a number.
fn story(ask: &str) -> bool {
    ask.split_inclusive(['.', '?', '!'])
        .filter(|t| t.split_whitespace().nth(2).is_some())
        .nth(2)
        .is_some()
}

/// Kinds of given text a measure can be read from.
const DOCUMENTS: &[&str] = &[
    "log",
    "logs",
    "notes",
    "thread",
    "transcript",
    "json",
    "file",
    "output",
    "ticket",
    "email",
    "text",
    "message",
    "receipt",
    "invoice",
    "passage",
    "article",
    "document",
    "table",
    "note",
    "letter",
    "paragraph",
    "report",
    "schedule",
    "page",
];

/// An ask to read from a given text: "from this email", "on this receipt",
/// "in the following table". A measure asked for there ("what time is the
/// meeting") is read off the text, not worked out.
fn reads_given(ws: &[&str]) -> bool {
    ws.windows(4).any(|w| {
        matches!(w[0], "from" | "in" | "on")
            && matches!(w[1], "this" | "the")
            && (DOCUMENTS.contains(&w[2])
                || (matches!(w[2], "following" | "above" | "given") && DOCUMENTS.contains(&w[3])))
    })
}

/// Mathematical notation typed as symbols: "∫₀^∞ x² e^(−x) dx", "√2 ≤ π".
const MATH_SYMBOLS: &[char] = &['∫', '∑', '√', '∞', '≤', '≥', '≠', '∂', 'π', '²', '³'];

/// "If …, what …?" over a number: a quantity worked out from a supposition
/// ("If the sweater cost her $20, what were her original savings?").
fn conditional_asks(ask_lower: &str) -> f32 {
    ask_lower
        .split_inclusive(['.', '!', '\n'])
        .filter(|t| {
            let t = t.trim_start();
            t.starts_with("if ")
                && t.ends_with('?')
                && t.bytes().any(|c| c.is_ascii_digit())
                && (t.contains(", what") || t.contains(", how"))
        })
        .count() as f32
}

/// "Prove …" opening a sentence or a clause of a short ask ("quick one:
/// prove sqrt(3) is irrational") is a proof whatever follows; "what did the
/// experiment prove" is a look-up.
fn prove_ask(ask_lower: &str, chars: usize) -> f32 {
    let opens = ask_lower.match_indices("prove ").any(|(i, _)| {
        ask_lower[..i]
            .trim_end()
            .chars()
            .last()
            .is_none_or(|c| matches!(c, ':' | '.' | '!' | '?' | ','))
    });
    (chars <= 300 && opens) as u8 as f32
}

/// Lines longer than this are material (a passage, an article), not the ask.
const ASK_LINE: usize = 800;
/// Characters of a first or last long line kept as ask.
const ASK_HEAD: usize = 150;
const ASK_TAIL: usize = 250;

/// The part of a long prompt that asks for something, apart from the material
/// it is about: lines of at most `line` characters (instructions, questions,
/// options, code) are kept; longer lines (passages) are dropped, except the
/// first `head` characters of the first line and the last `tail` of the last
/// (where an instruction runs into its material). A prompt without a long
/// line is all ask, borrowed as it is.
fn ask_part(lower: &str, line: usize, head: usize, tail: usize) -> std::borrow::Cow<'_, str> {
    if lower.split('\n').all(|l| l.chars().count() <= line) {
        return lower.into();
    }
    let lines: Vec<&str> = lower.split('\n').collect();
    let last = lines.len() - 1;
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let n = l.chars().count();
        if n <= line {
            out.push_str(l);
        } else {
            if i == 0 {
                let end = l.char_indices().nth(head).map_or(l.len(), |(k, _)| k);
                let first = &l[..end];
                out.push_str(first.rfind(char::is_whitespace).map_or("", |k| &first[..k]));
            }
            if i == last {
                let start = l
                    .char_indices()
                    .nth(n - tail.min(n))
                    .map_or(l.len(), |(k, _)| k);
                let end = &l[start..];
                out.push(' ');
                out.push_str(end.find(char::is_whitespace).map_or("", |k| &end[k..]));
            }
        }
        out.push('\n');
    }
    out.into()
}

pub fn cues(text: &str) -> TaskCues {
    let lower = text.to_lowercase();
    let ws = words(&lower);
    let s = joined(&ws);
    let chars = text.chars().count();
    let ask_lower = ask_part(&lower, ASK_LINE, ASK_HEAD, ASK_TAIL);
    let aws = words(&ask_lower);
    let a = joined(&aws);
    let quant_lines = lower
        .lines()
        .filter(|l| words(l).first().is_some_and(|w| QUANT.contains(w)))
        .count();
    let quantities =
        numbers(text) + count(&s, NUMBER_WORDS) as usize + count(&s, RELATIONS) as usize;
    let plain_ask = count(&a, QUANTITY_ASK);
    // (The story matters only with a quantity ask or two quantities.)
    let told = (plain_ask > 0.0 || quantities >= 2) && story(&ask_lower);
    // "What time / what volume" asks for a worked-out quantity only over four
    // or more given ones, or two in a story: "the meeting is at 10 and it is
    // 9:15 now; what time should I remind the team?" is an everyday question.
    let read = reads_given(&aws);
    let measures = if (quantities >= 4 || (told && quantities >= 2)) && !read {
        measure_asks(&aws)
    } else {
        0.0
    };
    let quantity_ask = plain_ask + measures + conditional_asks(&ask_lower);
    // "80% of" is a percent-of operation like "80 percent of".
    let ops = count(&a, MATH_OPS)
        + symbolic_ops(&ask_lower) as f32
        + ask_lower.matches("% of").count() as f32;
    // Weak asks ("total", "each") over a given text read it, not work it out.
    let weak = if read { 0.0 } else { count(&a, MATH_ASK) };
    let math_ask = (quantity_ask + weak).min(3.0);
    // The story counts as a quantity only before a quantity ask.
    let untold = (quantity_ask > 0.0 && told) as usize;
    let word_problem = quantity_ask > 0.0 && chars <= 600 && quantities + untold >= 2;
    // Two lines of code, not one list that ends in `;`.
    let code_lines = text
        .split('\n')
        .rev()
        .skip(1)
        .filter(|l| code_line(l))
        .count()
        >= 2;
    let produce = count(&a, PRODUCE) > 0.0;
    let code_task = count(&a, CODE)
        + (text.contains("```") || code_lines) as u8 as f32
        + ((produce || count(&a, HOW_TO) + count(&a, CODE_NEEDS) + count(&a, DEBUG) > 0.0)
            && tech(&a, &ask_lower, &aws)) as u8 as f32;
    let compare_q = ask_lower
        .split('\n')
        .flat_map(|l| l.split_inclusive('?'))
        .filter(|q| q.contains('?') && (q.contains("which") || q.contains(" or ")))
        .filter(|q| count(&joined(&words(q)), COMPARATIVE) > 0.0)
        .count();
    TaskCues {
        logic: quant_lines.min(6) as f32 / 3.0 + count(&s, LOGIC) + prove_ask(&ask_lower, chars),
        math_steps: math_steps(quantities + untold, quantity_ask, math_ask)
            .max(arith(ops, quantities))
            .max(calculus(&a, &ask_lower))
            .max(equation(&ask_lower, &aws)),
        // A "$" before a digit is a price, not LaTeX.
        latex: (text
            .match_indices('$')
            .filter(|(i, _)| !text.as_bytes().get(i + 1).is_some_and(u8::is_ascii_digit))
            .count()
            + text.matches('\\').count()
            + text.matches(MATH_SYMBOLS).count())
        .min(6) as f32
            / 3.0,
        code_task,
        code_scope: code_scope(&a, aws.len(), code_task, produce),
        // One link in a question is half a hop; two or more, a chain.
        multihop: count(&a, MULTIHOP) + bridges(&ask_lower).min(2) as f32 / 2.0,
        apply: count(&a, APPLY) / 3.0,
        // "How would X affect Y" asks for the mechanism, an essay.
        essay: count(&a, ESSAY)
            + (count(&a, &["how"]) > 0.0 && count(&a, &["affect", "affects", "impact"]) > 0.0) as u8
                as f32,
        long_write: if produce { count(&a, LONG_OBJECT) } else { 0.0 } + long_length(&aws, produce),
        constraints: count(&a, CONSTRAINTS),
        puzzle: puzzle(&a, &aws) + nth_items(&aws) + comparisons(&a, &ask_lower, chars),
        transform: count(&s, TRANSFORM),
        given_long: if chars > 600 {
            1.0
        } else if chars > 300 {
            0.5
        } else {
            0.0
        },
        short_q: (ws.len() <= 14) as u8 as f32,
        compare_q: compare_q as f32,
        one_liner: count(&a, ONE_LINER) + short_length(&aws),
        ln_ask: ((1.0 + chars as f32) / 61.0).ln(),
        chat: count(&a, CHAT),
        word_problem,
    }
}

impl TaskCues {
    /// The hand-set prior logit of `P(hard)`.
    pub fn prior(&self) -> f32 {
        let f = self;
        // Two or more constraints make heavily constrained writing.
        let constrained = (f.constraints >= 2.0) as u8 as f32;
        let demanding = f.essay + f.puzzle + f.multihop + f.math_steps + f.logic + constrained;
        let mut z = -1.0;
        z += 2.5 * f.logic.min(2.0);
        z += 1.5 * f.math_steps.min(2.0) + 1.5 * f.latex.min(2.0);
        // Each algorithmic word (up to two) lifts a code ask by 1; a one-step
        // ask drops by 1 (the labelling rule's "one-line code" is simple).
        z += 1.5 * f.code_task.min(2.0) + f.code_scope;
        z += 0.8 * f.multihop.min(3.0);
        z += 0.6 * f.apply.min(3.0);
        z += 0.8 * f.essay.min(3.0) + 0.4 * f.essay.min(1.0) + 1.0 * f.long_write.min(2.0);
        z += 0.4 * f.constraints.min(5.0);
        z += 1.0 * f.puzzle.min(3.0);
        // Transforming a given text is simple, unless the ask is to produce
        // code or a long piece (then the long text is the brief, not the input).
        // Nor when the question compares or reasons over the given text (applying
        // a stated rule to a new situation — a background, a situation and
        // comparatives: `apply` of 1 or more — formal logic).
        if f.code_task + f.long_write + f.compare_q + f.logic == 0.0
            && f.apply < 1.0
            && !f.word_problem
        {
            z -= 0.7 * f.transform.min(4.0) * f.given_long;
        }
        if demanding == 0.0 {
            z -= 0.8 * f.short_q;
        }
        z -= 0.3 * f.chat.min(3.0);
        z += 1.2 * f.compare_q.min(2.0);
        z -= 0.8 * f.one_liner.min(2.0);
        // Length speaks for the ask unless the text is material to transform.
        if f.given_long == 0.0 || f.transform == 0.0 {
            z += 0.5 * f.ln_ask.clamp(-2.0, 3.0);
        }
        z
    }

    /// The head's inputs: counts on a log scale, in `TASK_FEATURES` order.
    pub fn vector(&self) -> [f32; 17] {
        let l = |x: f32| x.ln_1p();
        let f = self;
        [
            l(f.logic),
            l(f.math_steps),
            l(f.latex),
            l(f.code_task),
            l(f.multihop),
            l(f.apply),
            l(f.essay),
            l(f.long_write),
            l(f.constraints),
            l(f.puzzle),
            l(f.transform),
            f.given_long,
            f.short_q,
            l(f.compare_q),
            l(f.one_liner),
            f.ln_ask,
            l(f.chat),
        ]
    }
}

#[cfg(test)]
mod tests;
