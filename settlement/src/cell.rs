//! CSV cells a spreadsheet would run as a formula.
//!
//! The operator opens `ledger.csv`, `invoices.csv` and `fraud.csv` in a
//! spreadsheet, and some of their text comes from outside: a `txn_id` a
//! conversion pixel was called with, an event id from a migrated platform.
//! A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is a
//! formula there (`=HYPERLINK(...)`, `-2+3+cmd|...`). Such a cell is written
//! with a leading apostrophe, which a spreadsheet shows as text, as the edge
//! does for its CSV exports. Only the columns that can hold such text are
//! defused ([`defuse_columns`]); ids (`[A-Za-z0-9_-]`), dates and amounts
//! are written as they are, and a negative amount such as `-12.50` is a
//! number anyway.

use std::borrow::Cow;

/// True when a spreadsheet would read `cell` as a formula.
pub fn is_formula(cell: &[u8]) -> bool {
    match cell.first() {
        Some(b'=' | b'+' | b'@' | b'\t' | b'\r') => true,
        Some(b'-') => !is_negative_number(cell),
        _ => false,
    }
}

/// `-` then digits with at most one `.`, at least one digit: what the
/// settlement writes for a negative amount.
fn is_negative_number(cell: &[u8]) -> bool {
    let rest = &cell[1..];
    let mut digits = 0;
    let mut dots = 0;
    for &b in rest {
        match b {
            b'0'..=b'9' => digits += 1,
            b'.' => dots += 1,
            _ => return false,
        }
    }
    digits > 0 && dots <= 1
}

/// The cell as written: with a leading `'` when it would be a formula.
pub fn defuse(cell: &[u8]) -> Cow<'_, [u8]> {
    if is_formula(cell) {
        let mut v = Vec::with_capacity(cell.len() + 1);
        v.push(b'\'');
        v.extend_from_slice(cell);
        Cow::Owned(v)
    } else {
        Cow::Borrowed(cell)
    }
}

/// [`defuse`] of the cells of a row whose index is in `text` (the columns
/// that can hold text from outside); ids, dates and amounts are written
/// as they are (an id `-x` stays an id the edge accepts).
pub fn defuse_columns<'a, I>(row: I, text: &'a [usize]) -> impl Iterator<Item = Cow<'a, [u8]>>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: 'a,
{
    row.into_iter().enumerate().map(move |(i, c)| {
        if text.contains(&i) {
            defuse(c)
        } else {
            Cow::Borrowed(c)
        }
    })
}

/// [`defuse`] of a text cell.
pub fn defuse_str(cell: &str) -> Cow<'_, str> {
    if is_formula(cell.as_bytes()) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formulas_get_an_apostrophe() {
        for f in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1+1",
            "-2+3+cmd|' /C calc'!A0",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
            "-",
            "-.",
            "-1.2.3",
            "-1e5",
            "--1",
        ] {
            assert_eq!(defuse_str(f), format!("'{f}"), "{f:?}");
            assert_eq!(defuse(f.as_bytes()).as_ref(), format!("'{f}").as_bytes());
        }
    }

    #[test]
    fn numbers_and_plain_text_are_unchanged() {
        for s in [
            "", "-12.50", "-0.001", "-7", "-.5", "12.50", "T-1", "le_ab12", "a=b", "ev 1",
        ] {
            assert_eq!(defuse_str(s), s, "{s:?}");
            assert!(matches!(defuse(s.as_bytes()), Cow::Borrowed(_)), "{s:?}");
        }
    }

    proptest! {
        /// What a spreadsheet would run never comes out bare, and nothing
        /// else is touched.
        #[test]
        fn defused_cells_never_start_a_formula(s in "[-=+@\t\ra-z0-9. ]{0,12}") {
            let out = defuse_str(&s);
            let first = out.as_bytes().first().copied();
            prop_assert!(!matches!(first, Some(b'=' | b'+' | b'@' | b'\t' | b'\r')));
            if first == Some(b'-') {
                let rest = &s[1..];
                prop_assert!(rest.chars().all(|c| c.is_ascii_digit() || c == '.'), "{s:?}");
                prop_assert!(rest.chars().any(|c| c.is_ascii_digit()), "{s:?}");
                prop_assert!(rest.matches('.').count() <= 1, "{s:?}");
            }
            if out != s {
                prop_assert_eq!(out.as_ref(), format!("'{s}"));
            }
        }
    }
}
