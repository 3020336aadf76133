//! The digit pass of the scanner: runs of digits and the separators numbers
//! are written with (cards with Luhn, phones, SSNs; dates, versions and order
//! numbers left alone), and IBANs (mod 97).

use super::{Finding, PiiKind};

/// Runs of digits with the separators numbers are written with.
pub(super) fn digit_runs(text: &str, found: &mut Vec<Finding>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let starts = c.is_ascii_digit()
            || ((c == b'+' || c == b'(') && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        // Not inside a word or a longer token (v1.2, ABC123, 10.5.3-beta).
        let glued = i > 0
            && (b[i - 1].is_ascii_alphanumeric()
                || matches!(b[i - 1], b'.' | b'_' | b'/' | b'#' | b'-'));
        if !starts || glued {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let sep = |d: u8| matches!(d, b' ' | b'-' | b'.' | b'(' | b')');
        while j < b.len() {
            if b[j].is_ascii_digit() {
                j += 1;
                continue;
            }
            // One or two separators between digit groups: "-", ") ", " (".
            let mut k = j;
            while k < b.len() && k < j + 2 && sep(b[k]) {
                k += 1;
            }
            if k > j && b.get(k).is_some_and(u8::is_ascii_digit) {
                j = k;
            } else {
                break;
            }
        }
        let followed = b
            .get(j)
            .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_');
        if !followed {
            if let Some(kind) = classify_run(&text[i..j]) {
                found.push(Finding {
                    kind,
                    start: i,
                    end: j,
                });
            }
        }
        i = j.max(i + 1);
    }
}

fn classify_run(run: &str) -> Option<PiiKind> {
    let digits: Vec<u8> = run
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|d| d - b'0')
        .collect();
    let n = digits.len();
    let groups: Vec<&str> = run
        .split([' ', '-', '.', '(', ')'])
        .filter(|g| !g.is_empty())
        .collect();
    let lens: Vec<usize> = groups
        .iter()
        .map(|g| g.trim_start_matches('+').len())
        .collect();
    // SSN: AAA-GG-SSSS.
    if run.len() == 11
        && lens == [3, 2, 4]
        && run.as_bytes()[3] == b'-'
        && run.as_bytes()[6] == b'-'
    {
        let area = &run[..3];
        let ok = area != "000"
            && area != "666"
            && !area.starts_with('9')
            && &run[4..6] != "00"
            && &run[7..] != "0000";
        return ok.then_some(PiiKind::Ssn);
    }
    // Dates and times are not numbers of anything.
    if lens.len() == 3
        && (lens == [4, 2, 2] || lens == [2, 2, 4] || lens == [1, 2, 4] || lens == [2, 1, 4])
    {
        return None;
    }
    let seps_ok = !run.contains('.') || run.matches('.').count() >= 2;
    // Cards: 13-19 digits, spaces or dashes, Luhn.
    if (13..=19).contains(&n)
        && !run.contains(['.', '(', ')'])
        && luhn(&digits)
        && (groups.len() == 1 || lens.iter().all(|&l| l >= 3))
    {
        return Some(PiiKind::Card);
    }
    // Phones: international with +, or grouped national numbers.
    if run.starts_with('+') && (8..=15).contains(&n) {
        return Some(PiiKind::Phone);
    }
    let us = n == 10 && lens == [3, 3, 4];
    let us1 = n == 11 && lens == [1, 3, 3, 4] && digits[0] == 1;
    let national = (9..=12).contains(&n)
        && digits[0] == 0
        && groups.len() >= 2
        && lens.iter().all(|&l| (2..=5).contains(&l));
    if (us || us1 || national) && seps_ok && groups.len() >= 2 {
        return Some(PiiKind::Phone);
    }
    None
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBANs: two letters, two check digits, 11-30 more letters or digits,
/// written together or in groups of four; mod 97 must be 1.
pub(super) fn ibans(text: &str, found: &mut Vec<Finding>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        let starts = b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut chars = Vec::new();
        while j < b.len() && chars.len() < 34 {
            let c = b[j];
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                chars.push(c);
                j += 1;
            } else if c == b' '
                && b.get(j + 1)
                    .is_some_and(|n| n.is_ascii_uppercase() || n.is_ascii_digit())
            {
                j += 1;
            } else {
                break;
            }
        }
        let mut matched = false;
        // The longest prefix that checks out (a word may follow the IBAN).
        for len in (15..=chars.len()).rev() {
            if iban_ok(&chars[..len]) {
                let mut count = 0;
                let mut end = i;
                while count < len {
                    if b[end] != b' ' {
                        count += 1;
                    }
                    end += 1;
                }
                let next_ok = b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric());
                if next_ok {
                    found.push(Finding {
                        kind: PiiKind::Iban,
                        start: i,
                        end,
                    });
                    matched = true;
                    i = end;
                    break;
                }
            }
        }
        if !matched {
            i += 1;
        }
    }
}

fn iban_ok(c: &[u8]) -> bool {
    if c.len() < 15
        || !c[..2].iter().all(u8::is_ascii_uppercase)
        || !c[2..4].iter().all(u8::is_ascii_digit)
        || &c[..2] == b"RF"
    {
        return false; // RF: an ISO 11649 payment reference, not an account
    }
    let mut rem: u64 = 0;
    for &ch in c[4..].iter().chain(&c[..4]) {
        let v = if ch.is_ascii_digit() {
            u64::from(ch - b'0')
        } else {
            u64::from(ch - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}
