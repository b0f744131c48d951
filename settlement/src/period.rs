//! A settlement period: one UTC calendar month.

use edge::time::{civil_from_days, days_from_civil, days_in_month, Timestamp};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

pub const DAY_MS: i64 = 86_400_000;

impl Period {
    /// `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Period> {
        let b = s.as_bytes();
        if b.len() != 7 || b[4] != b'-' || !b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit) {
            return None;
        }
        let year: i32 = s[..4].parse().ok()?;
        let month: u32 = s[5..].parse().ok()?;
        ((1..=12).contains(&month) && year >= 1970).then_some(Period { year, month })
    }

    pub fn of_ms(ms: i64) -> Period {
        Period::of_day(ms.div_euclid(DAY_MS))
    }

    pub fn of_day(day: i64) -> Period {
        let (year, month, _) = civil_from_days(day);
        Period { year, month }
    }

    pub fn of(t: Timestamp) -> Period {
        Period::of_ms(t.ms())
    }

    /// Months since year 0: a dense, ordered index.
    pub fn index(self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
    }

    pub fn from_index(i: i64) -> Period {
        Period {
            year: i.div_euclid(12) as i32,
            month: (i.rem_euclid(12) + 1) as u32,
        }
    }

    pub fn next(self) -> Period {
        Period::from_index(self.index() + 1)
    }

    pub fn prev(self) -> Period {
        Period::from_index(self.index() - 1)
    }

    /// Day number (days since the epoch) of the first day.
    pub fn first_day(self) -> i64 {
        days_from_civil(self.year, self.month, 1)
    }

    /// Day number of the last day.
    pub fn last_day(self) -> i64 {
        days_from_civil(self.year, self.month, days_in_month(self.year, self.month))
    }

    /// First millisecond of the next period (exclusive end).
    pub fn end_ms(self) -> i64 {
        (self.last_day() + 1) * DAY_MS
    }

    pub fn start_ms(self) -> i64 {
        self.first_day() * DAY_MS
    }

    /// `YYYYMM` as an integer, the store's key.
    pub fn key(self) -> i64 {
        i64::from(self.year) * 100 + i64::from(self.month)
    }

    pub fn from_key(k: i64) -> Period {
        Period {
            year: (k / 100) as i32,
            month: (k % 100) as u32,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// `YYYY-MM-DD` of a day number.
pub fn date_of_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The instant `months` calendar months after `ms` (day clamped to the
/// target month's length).
pub fn add_months_ms(ms: i64, months: u32) -> i64 {
    let day = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(day);
    let idx = i64::from(y) * 12 + i64::from(m) - 1 + i64::from(months);
    let (ny, nm) = (idx.div_euclid(12) as i32, (idx.rem_euclid(12) + 1) as u32);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * DAY_MS + in_day
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_bounds() {
        let p = Period::parse("2026-11").unwrap();
        assert_eq!(p.to_string(), "2026-11");
        assert_eq!(date_of_day(p.first_day()), "2026-11-01");
        assert_eq!(date_of_day(p.last_day()), "2026-11-30");
        assert_eq!(p.next().to_string(), "2026-12");
        assert_eq!(p.next().next().to_string(), "2027-01");
        assert_eq!(
            Period::parse("2027-01").unwrap().prev().to_string(),
            "2026-12"
        );
        assert_eq!(Period::from_key(p.key()), p);
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "2026-00"] {
            assert!(Period::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn months_clamp() {
        let t = Timestamp::parse("2026-01-31T12:00:00.000Z").unwrap();
        let m = add_months_ms(t.ms(), 1);
        assert_eq!(Timestamp(m).to_string(), "2026-02-28T12:00:00.000Z");
        let y = add_months_ms(t.ms(), 12);
        assert_eq!(Timestamp(y).to_string(), "2027-01-31T12:00:00.000Z");
    }
}
