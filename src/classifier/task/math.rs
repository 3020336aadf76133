//! Number work: quantities (digits and words), asks for a quantity,
//! arithmetic operations and sequence items, and how they add up to the
//! multi-step arithmetic cue (`super::cues`).

/// Quantities written as words ("three apples", "a dozen", "half of",
/// "twice as many"): word problems often have few digits.
pub(super) const NUMBER_WORDS: &[&str] = &[
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "fifteen", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million", "dozen",
    "half", "twice", "thrice", "triple", "double", "third", "quarter", "thirds", "quarters",
    "fifth", "fifths", "tenth", "tenths",
];
/// Relations between quantities ("twice as many", "5 more than"): each
/// stands for a quantity a word problem leaves unwritten.
pub(super) const RELATIONS: &[&str] =
    &["as many", "as much", "more than", "fewer than", "less than"];
/// Asks for a quantity outright: one is enough when the text gives several.
pub(super) const QUANTITY_ASK: &[&str] = &[
    "how many",
    "how much",
    "how long",
    "how far",
    "how old",
    "how fast",
    "how tall",
    "how deep",
    "how heavy",
    "calculate",
    "compute",
    "solve",
    "what percentage",
    "probability",
    "the odds",
];
/// Measures a "what" question can ask for ("what was the latest time", "what
/// is his new win percentage"): with quantities given, an outright quantity ask.
pub(super) const MEASURES: &[&str] = &[
    "time",
    "grade",
    "score",
    "volume",
    "price",
    "cost",
    "age",
    "speed",
    "distance",
    "area",
    "weight",
    "length",
    "width",
    "depth",
    "perimeter",
    "radius",
    "percentage",
    "amount",
    "temperature",
    "height",
];

/// Words that pass `first` and have a word of `list` within the next `within`.
pub(super) fn followed_within(
    ws: &[&str],
    first: impl Fn(&str) -> bool,
    within: usize,
    list: &[&str],
) -> f32 {
    (0..ws.len())
        .filter(|&i| first(ws[i]) && ws[i + 1..].iter().take(within).any(|w| list.contains(w)))
        .count() as f32
}

/// "What" questions for a measure: the measure within five words of "what".
pub(super) fn measure_asks(ws: &[&str]) -> f32 {
    followed_within(ws, |w| w == "what", 5, MEASURES)
}

/// Arithmetic operations and number-work terms: two in one ask (or one
/// over three or more quantities) make exact multi-step work ("17 squared
/// minus the cube of 4", "the sum of all even numbers from 1 to 100").
pub(super) const MATH_OPS: &[&str] = &[
    "plus",
    "minus",
    "times",
    "multiplied",
    "divided",
    "squared",
    "cubed",
    "cube of",
    "square root",
    "to the power",
    "power of",
    "factorial",
    "percent of",
    "sum of",
    "product of",
    "remainder",
    "modulo",
    "least common multiple",
    "greatest common divisor",
    "lcm",
    "gcd",
    "average of",
    "prime",
    "primes",
    "even numbers",
    "odd numbers",
    "divisible",
    "integers",
    "binary",
    "hexadecimal",
    "decimal",
];
/// Calculus and linear algebra: over an expression, worked out in steps.
pub(super) const CALCULUS: &[&str] = &[
    "integrate",
    "integral",
    "antiderivative",
    "derivative",
    "differentiate",
    "limit of",
    "taylor series",
    "eigenvalues",
    "determinant",
];
/// After an ordinal ("the 20th prime"): an item of a sequence to work out.
pub(super) const NTH_ITEM: &[&str] = &[
    "prime",
    "term",
    "digit",
    "number",
    "element",
    "fibonacci",
    "triangular",
    "power",
];
/// Weaker arithmetic asks (with `QUANTITY_ASK`, counted by thirds).
pub(super) const MATH_ASK: &[&str] = &[
    "what is the",
    "find the",
    "total",
    "left",
    "remaining",
    "each",
    "per",
    "average",
    "percent",
    "sum",
    "difference",
    "product",
    "probability",
    "value of",
];

/// Numbers such as `12`, `3.5`, `1,000` (counted once each).
pub(super) fn numbers(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut n, mut i) = (0, 0);
    while i < b.len() {
        if b[i].is_ascii_digit() {
            n += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < b.len() && (b[i] == b'.' || b[i] == b',') && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
        } else {
            i += 1;
        }
    }
    n
}

/// Multi-step arithmetic: at least two quantities given (digits or words),
/// and an ask for a quantity — one outright ask ("how many", "calculate") is
/// enough; the weaker cues ("total", "each", "per") count by thirds.
pub(super) fn math_steps(quantities: usize, quantity_ask: f32, math_ask: f32) -> f32 {
    if quantities < 2 {
        return 0.0;
    }
    quantities.min(6) as f32 / 3.0 * quantity_ask.min(1.0).max(math_ask / 3.0)
}

/// Arithmetic operations between digits (`3 * 4`, `2^10`, `7 + 5 = 12`; not `/`,
/// which dates use).
pub(super) fn symbolic_ops(text: &str) -> usize {
    let b = text.as_bytes();
    (1..b.len().saturating_sub(1))
        .filter(|&i| matches!(b[i], b'+' | b'*' | b'^' | b'='))
        .filter(|&i| {
            let left = b[..i].iter().rev().find(|c| **c != b' ');
            let right = b[i + 1..].iter().find(|c| **c != b' ');
            let operand = if b[i] == b'^' {
                u8::is_ascii_alphanumeric
            } else {
                u8::is_ascii_digit
            };
            left.is_some_and(operand) && right.is_some_and(operand)
        })
        .count()
}

/// Exact arithmetic from operations: three or more in one ask count as much
/// as a plain word problem's half; two, or one over three or more
/// quantities, half that again. Kept low: "48 multiplied by 4 divided by 2"
/// is a one-line calculator ask in the training data (clinc150).
pub(super) fn arith(ops: f32, quantities: usize) -> f32 {
    if ops >= 3.0 {
        0.7
    } else if ops >= 2.0 || (ops >= 1.0 && quantities >= 3) {
        0.35
    } else {
        0.0
    }
}

/// Calculus over an expression ("integrate x^2 e^x dx", "the derivative of
/// sin(3x)"), not a definition ("what is a derivative") nor a spoken
/// calculator ask ("the derivative of x squared plus 5").
pub(super) fn calculus(a: &super::Joined, ask_lower: &str) -> f32 {
    if ask_lower.contains(['^', '(']) && super::count(a, CALCULUS) > 0.0 {
        0.7
    } else {
        0.0
    }
}

/// An equation in a variable to solve: `=` with a one-letter unknown and an
/// ask to find it ("find all real x such that |x - 3| + |x + 1| = 6",
/// "x+y = 4z, express x-y in z").
pub(super) fn equation(ask_lower: &str, aws: &[&str]) -> f32 {
    let unknown = aws.iter().any(|w| matches!(*w, "x" | "y" | "z" | "n"));
    let ask = aws.iter().any(|w| {
        matches!(
            *w,
            "find" | "solve" | "express" | "what" | "such" | "determine" | "compute"
        )
    });
    if unknown && ask && ask_lower.contains('=') {
        0.7
    } else {
        0.0
    }
}

/// Ordinals before a sequence item: "the 20th prime", "the 15th fibonacci number".
pub(super) fn nth_items(ws: &[&str]) -> f32 {
    let ordinal = |w: &str| {
        let d = w.trim_end_matches(|c: char| c.is_ascii_lowercase());
        !d.is_empty()
            && d.bytes().all(|c| c.is_ascii_digit())
            && matches!(&w[d.len()..], "st" | "nd" | "rd" | "th")
    };
    followed_within(ws, ordinal, 2, NTH_ITEM)
}
