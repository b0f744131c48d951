//! Timestamps: milliseconds since the Unix epoch, written as RFC 3339 in UTC
//! with milliseconds (`2026-11-03T10:00:00.000Z`), the one format of records.
//! No wall clock here: callers pass the time in (the worker reads
//! `worker::Date`, settlement reads its inputs).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A UTC instant in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Earliest and latest instants accepted (years 1970..=9999).
pub const MIN_MS: i64 = 0;
pub const MAX_MS: i64 = 253_402_300_799_999;

impl Timestamp {
    pub fn from_ms(ms: i64) -> Option<Timestamp> {
        (MIN_MS..=MAX_MS).contains(&ms).then_some(Timestamp(ms))
    }
    pub fn ms(self) -> i64 {
        self.0
    }
    /// Days since the epoch (floor).
    pub fn day(self) -> i64 {
        self.0.div_euclid(86_400_000)
    }
    /// `(year, month, day)` of the UTC date.
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.day())
    }
    /// `YYYY-MM-DD`.
    pub fn date_string(self) -> String {
        let (y, m, d) = self.ymd();
        format!("{y:04}-{m:02}-{d:02}")
    }
    /// `YYYY-MM`, the settlement period of this instant.
    pub fn period(self) -> String {
        let (y, m, _) = self.ymd();
        format!("{y:04}-{m:02}")
    }

    /// Parses RFC 3339 (`Z` or a numeric offset, optional fraction). The
    /// canonical form takes a fast path.
    pub fn parse(s: &str) -> Result<Timestamp, TimeError> {
        parse_canonical(s)
            .or_else(|| parse_rfc3339(s))
            .ok_or(TimeError)
    }

    /// Midnight UTC of a `YYYY-MM-DD` date.
    pub fn parse_date(s: &str) -> Result<Timestamp, TimeError> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(TimeError);
        }
        let y = digits(&b[0..4]).ok_or(TimeError)? as i32;
        let m = digits(&b[5..7]).ok_or(TimeError)?;
        let d = digits(&b[8..10]).ok_or(TimeError)?;
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return Err(TimeError);
        }
        Timestamp::from_ms(days_from_civil(y, m, d) * 86_400_000).ok_or(TimeError)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeError;

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an RFC 3339 timestamp")
    }
}
impl std::error::Error for TimeError {}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d) = self.ymd();
        let in_day = self.0.rem_euclid(86_400_000);
        let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
        let (mi, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` exactly.
fn parse_canonical(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let y = digits(&b[0..4])? as i32;
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    let h = i64::from(digits(&b[11..13])?);
    let mi = i64::from(digits(&b[14..16])?);
    let sec = i64::from(digits(&b[17..19])?);
    let ms = i64::from(digits(&b[20..23])?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Timestamp::from_ms(days * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + ms)
}

/// RFC 3339 `date-time`: `YYYY-MM-DD(T|t| )HH:MM:SS(.fraction)?(Z|z|+HH:MM|-HH:MM)`.
/// Fractions beyond milliseconds are truncated.
fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return None;
    }
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let y = digits(&b[0..4])? as i32;
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    let h = i64::from(digits(&b[11..13])?);
    let mi = i64::from(digits(&b[14..16])?);
    let sec = i64::from(digits(&b[17..19])?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59
    {
        return None;
    }
    let mut pos = 19;
    let mut ms = 0i64;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 3 {
                ms = ms * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        let n = pos - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            ms *= 10;
        }
    }
    let offset_min = match b.get(pos..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = i64::from(digits(&[*h1, *h2])?);
            let om = i64::from(digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let local = days * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + ms;
    Timestamp::from_ms(local - offset_min * 60_000)
}

pub fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses_canonical() {
        let t = Timestamp::parse("2026-11-03T10:00:00.000Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-03T10:00:00.000Z");
        assert_eq!(t.period(), "2026-11");
        assert_eq!(t.date_string(), "2026-11-03");
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let a = Timestamp::parse("2026-11-03T12:00:00+02:00").unwrap();
        assert_eq!(a.to_string(), "2026-11-03T10:00:00.000Z");
        let b = Timestamp::parse("2026-11-03T10:00:00.123456Z").unwrap();
        assert_eq!(b.to_string(), "2026-11-03T10:00:00.123Z");
        let c = Timestamp::parse("2026-11-03t05:30:00.5-04:30").unwrap();
        assert_eq!(c.to_string(), "2026-11-03T10:00:00.500Z");
        assert_eq!(
            Timestamp::parse("2026-11-03T10:00:00Z").unwrap().ms() % 1000,
            0
        );
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "",
            "2026-13-01T00:00:00.000Z",
            "2026-02-30T00:00:00.000Z",
            "2026-11-03",
            "yesterday",
            "2026-11-03T25:00:00Z",
            "-001-01-01T00:00:00Z",
            "2026-11-03T10:00:00",
            "2026-11-03T10:00:00.Z",
            "2026-11-03T10:00:00+2:00",
            "2026-11-03T10:00:00+24:00",
            "1970-01-01T00:00:00+00:01",
        ] {
            assert!(Timestamp::parse(s).is_err(), "{s}");
        }
        assert!(Timestamp::parse_date("2026-02-29").is_err());
        assert_eq!(
            Timestamp::parse_date("2028-02-29").unwrap().to_string(),
            "2028-02-29T00:00:00.000Z"
        );
    }

    proptest! {
        #[test]
        fn roundtrip(ms in MIN_MS..=MAX_MS) {
            let t = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn civil_roundtrip(days in -1_000_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
