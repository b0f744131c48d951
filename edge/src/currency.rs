//! ISO 4217 currencies and their minor units (the exponent that money is
//! rounded to: JPY 0, USD 2, KWD 3).

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Active ISO 4217 codes with their minor unit, sorted by code.
const TABLE: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// A known ISO 4217 currency: three upper-case letters found in the table.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency {
    index: u16,
}

/// A three-byte code as a number that sorts as the code does; `None` for
/// any other length.
fn code_key(b: &[u8]) -> Option<u32> {
    match *b {
        [a, b, c] => Some(u32::from_be_bytes([0, a, b, c])),
        _ => None,
    }
}

impl Currency {
    /// Parses a code; only codes in the ISO 4217 table are accepted.
    pub fn parse(code: &str) -> Option<Currency> {
        // every code is three bytes: compared as one number each, in the
        // table's order, without a string comparison a step (settlement
        // parses one a conversion, millions a run)
        let want = code_key(code.as_bytes())?;
        TABLE
            .binary_search_by_key(&want, |(c, _)| code_key(c.as_bytes()).unwrap_or(0))
            .ok()
            .map(|i| Currency { index: i as u16 })
    }

    pub fn code(&self) -> &'static str {
        TABLE[usize::from(self.index)].0
    }

    /// Digits after the decimal point of the currency's minor unit.
    pub fn minor_units(&self) -> u32 {
        TABLE[usize::from(self.index)].1
    }

    /// A code in either case (Stripe writes `usd`).
    pub fn parse_any_case(code: &str) -> Option<Currency> {
        if code.len() != 3 {
            return None;
        }
        Currency::parse(&code.to_ascii_uppercase())
    }

    /// An integer amount in minor units with `exponent` decimals (normally
    /// [`Currency::minor_units`]; a payment provider may count some
    /// currencies differently), as an exact decimal written at the
    /// currency's own scale: 1050 JPY is `1050`, 1050 USD `10.50`, 1050 KWD
    /// `1.050`. Digits the currency's scale cannot hold are kept.
    pub fn from_minor(self, minor: i64, exponent: u32) -> Decimal {
        let mut d = Decimal::new(minor, exponent.min(28));
        let target = self.minor_units();
        if d.scale() > target {
            let n = d.normalize();
            if n.scale() > target {
                return d;
            }
            d = n;
        }
        d.rescale(target);
        d
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown currency {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(TABLE
            .iter()
            .all(|(c, _)| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }

    /// Every code in the table parses to itself, and nothing else parses:
    /// not its lower case, a prefix, a code with a byte more, or codes
    /// between and around the table's.
    #[test]
    fn every_code_and_nothing_else_parses() {
        for (i, (code, units)) in TABLE.iter().enumerate() {
            let c = Currency::parse(code).unwrap();
            assert_eq!(
                (c.code(), c.minor_units(), usize::from(c.index)),
                (*code, *units, i)
            );
            assert!(Currency::parse(&code.to_ascii_lowercase()).is_none());
            assert!(Currency::parse(&code[..2]).is_none());
            assert!(Currency::parse(&format!("{code}A")).is_none());
        }
        let mut parsed = 0;
        for a in b'@'..=b'[' {
            for b in b'A'..=b'Z' {
                for c in [b'@', b'A', b'M', b'Z', b'['] {
                    let s = String::from_utf8(vec![a, b, c]).unwrap();
                    let known = TABLE.iter().any(|(k, _)| *k == s);
                    assert_eq!(Currency::parse(&s).is_some(), known, "{s}");
                    parsed += usize::from(known);
                }
            }
        }
        assert!(parsed > 0);
        for s in ["", "U", "ü", "USD ", " USD", "\u{0}USD"] {
            assert!(Currency::parse(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn minor_units() {
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("USD").unwrap().minor_units(), 2);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        assert_eq!(Currency::parse("EUR").unwrap().code(), "EUR");
    }

    #[test]
    fn amounts_from_minor_units() {
        let c = |code: &str| Currency::parse(code).unwrap();
        assert_eq!(c("JPY").from_minor(1050, 0).to_string(), "1050");
        assert_eq!(c("USD").from_minor(1050, 2).to_string(), "10.50");
        assert_eq!(c("USD").from_minor(5, 2).to_string(), "0.05");
        assert_eq!(c("KWD").from_minor(1050, 3).to_string(), "1.050");
        assert_eq!(c("USD").from_minor(0, 2).to_string(), "0.00");
        assert_eq!(c("USD").from_minor(-250, 2).to_string(), "-2.50");
        // A provider counting a zero-decimal currency in hundredths.
        assert_eq!(c("ISK").from_minor(150000, 2).to_string(), "1500");
        assert_eq!(c("ISK").from_minor(150050, 2).to_string(), "1500.50");
        assert_eq!(
            c("JPY").from_minor(i64::MAX, 0).to_string(),
            i64::MAX.to_string()
        );
        assert_eq!(Currency::parse_any_case("usd"), Currency::parse("USD"));
        assert_eq!(Currency::parse_any_case("Kwd"), Currency::parse("KWD"));
        assert!(Currency::parse_any_case("usdd").is_none());
        assert!(Currency::parse_any_case("xx").is_none());
        assert!(Currency::parse_any_case("ü").is_none());
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        for c in ["usd", "US", "USDD", "ABC", "", "U\u{0}D", "ÜSD"] {
            assert!(Currency::parse(c).is_none(), "{c:?}");
        }
    }
}
