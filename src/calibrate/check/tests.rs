//! The checker against `check_answer.py`, verdict for verdict, and its
//! rules one by one.

use super::*;

fn rec(check: &str, answers: &[&str], options: Option<&[&str]>) -> Record {
    Record {
        id: "t".into(),
        prompt: String::new(),
        answers: answers.iter().map(|s| s.to_string()).collect(),
        check: check.into(),
        options: options.map(|o| o.iter().map(|s| s.to_string()).collect()),
        category: String::new(),
        source: String::new(),
    }
}

/// The reference checker's doctest examples.
#[test]
fn doctest_examples() {
    assert_eq!(extract_number("18"), Some(18.0));
    assert_eq!(
        extract_number("She makes 9 * 2 = $18 every day."),
        Some(18.0)
    );
    assert_eq!(
        extract_number("16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nAnswer: 18"),
        Some(18.0)
    );
    assert_eq!(
        extract_number("The answer is $1,250.50 in total (after 3 weeks)"),
        Some(1250.5)
    );
    assert_eq!(extract_number("no idea"), None);
    let opts: Vec<String> = ["bank", "library", "department store", "mall", "new york"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let got: Vec<Option<char>> = ["A", "(B)", "C.", "**D**", "E) new york"]
        .iter()
        .map(|t| extract_choice(t, &opts))
        .collect();
    assert_eq!(got, [Some('A'), Some('B'), Some('C'), Some('D'), Some('E')]);
    assert_eq!(
        extract_choice("The correct answer is C: department store.", &opts),
        Some('C')
    );
    assert_eq!(extract_choice("I think it is a bank.", &opts), Some('A'));
    assert_eq!(extract_choice("Either a mall or a library.", &opts), None);
    assert_eq!(extract_choice("F", &opts), None);
}

/// The reference checker's self-test cases, verbatim.
#[test]
fn selftest_cases() {
    let yn: &[&str] = &["yes", "no"];
    let pn: &[&str] = &["positive", "negative"];
    let tfu: &[&str] = &["true", "false", "uncertain"];
    let blmp: &[&str] = &["bank", "library", "mall", "park"];
    let xyzw: &[&str] = &["x", "y", "z", "w"];
    let cases: Vec<(Record, &str, bool)> = vec![
        (rec("number", &["18"], None), "18", true),
        (rec("number", &["18"], None), "$18.00", true),
        (
            rec("number", &["18"], None),
            "Janet has 16 - 3 - 4 = 9 eggs. 9 * 2 = 18",
            true,
        ),
        (
            rec("number", &["18"], None),
            "Answer: 18\n(9 eggs at $2)",
            true,
        ),
        (rec("number", &["18"], None), "It is 9.", false),
        (rec("number", &["1000"], None), "1,000 people", true),
        (rec("number", &["5"], None), "5 - 3", false),
        (rec("number", &["-4"], None), "The result is -4.", true),
        (rec("number", &["2125"], None), "#### 2,125", true),
        (rec("number", &["3"], None), "", false),
        (rec("number", &["22090603"], None), "22090604", false),
        (rec("number", &["0.5"], None), "0.50", true),
        (
            rec("choice", &["C"], Some(&["a", "b", "c", "d"])),
            "C",
            true,
        ),
        (
            rec("choice", &["C"], Some(blmp)),
            "The answer is (C) mall",
            true,
        ),
        (rec("choice", &["C"], Some(blmp)), "mall", true),
        (rec("choice", &["C"], Some(blmp)), "A", false),
        (
            rec("choice", &["C"], Some(blmp)),
            "a mall, or maybe a bank",
            false,
        ),
        (
            rec("choice", &["B"], Some(&["jewelry box", "jewelry store"])),
            "You would go to a jewelry store.",
            true,
        ),
        (rec("choice", &["A"], Some(xyzw)), "Answer: A", true),
        (
            rec("choice", &["A"], Some(xyzw)),
            "I'd say it is a good question",
            false,
        ),
        (rec("exact_ci", &["yes"], Some(yn)), "Yes", true),
        (
            rec("exact_ci", &["yes"], Some(yn)),
            "Yes, because the passage says so.",
            true,
        ),
        (rec("exact_ci", &["yes"], Some(yn)), "No.", false),
        (rec("exact_ci", &["yes"], Some(yn)), "yesterday", false),
        (rec("exact_ci", &["no"], Some(yn)), "**Answer:** No", true),
        (rec("exact_ci", &["positive"], Some(pn)), "Positive.", true),
        (
            rec("exact_ci", &["positive"], Some(pn)),
            "The sentiment is positive.",
            true,
        ),
        (
            rec("exact_ci", &["positive"], Some(pn)),
            "This review is positive.",
            true,
        ),
        (
            rec("exact_ci", &["positive"], Some(pn)),
            "This review is not positive.",
            false,
        ),
        (
            rec("exact_ci", &["negative"], Some(pn)),
            "It is not positive, it is negative.",
            true,
        ),
        (
            rec("exact_ci", &["positive"], Some(pn)),
            "positive or negative",
            false,
        ),
        (
            rec("exact_ci", &["uncertain"], Some(tfu)),
            "Uncertain - it could be true or false.",
            true,
        ),
        (
            rec("exact_ci", &["true"], Some(tfu)),
            "True or false? True",
            false,
        ),
        (
            rec("exact_ci", &["positive"], Some(pn)),
            "Mixed: partly positive, partly negative",
            false,
        ),
        (
            rec("exact_ci", &["uncertain", "unknown"], Some(tfu)),
            "Unknown",
            true,
        ),
        (rec("exact_ci", &["false"], Some(tfu)), "True", false),
        (
            rec("exact_ci", &["false"], Some(tfu)),
            "Conclusion: False",
            true,
        ),
        (
            rec("contains", &["Bobby Scott", "Bob Russell"], None),
            "It was written by Bob Russell and Bobby Scott.",
            true,
        ),
        (
            rec("contains", &["December 1972"], None),
            "14 December 1972",
            true,
        ),
        (rec("contains", &["The Beatles"], None), "beatles", true),
        (rec("contains", &["Poison"], None), "Poisonous", false),
        (
            rec("contains", &["1988"], None),
            "They last won in 1981.",
            false,
        ),
        (rec("contains", &["A+", "AB+"], None), "A+", true),
        (rec("contains", &["A+"], None), "AB+", false),
        (
            rec("choice", &["B"], Some(&["MgBr", "MgBr_{2}", "Mg_{2}Br"])),
            "MgBr_{2}",
            true,
        ),
    ];
    let x400 = format!("{} Austria", "x".repeat(400));
    let mut all = cases;
    all.push((rec("contains", &["Austria"], None), &x400, false));
    let bad: Vec<String> = all
        .iter()
        .filter(|(r, t, want)| check(r, t) != *want)
        .map(|(r, t, want)| format!("{} {:?} {t:?}: expected {want}", r.check, r.answers))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}
