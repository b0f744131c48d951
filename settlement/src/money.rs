//! Money: a `rust_decimal::Decimal` with its currency, never a float.
//!
//! Arithmetic that can lose digits (percentages, fx conversion, ladder
//! slices, refund proportions) runs on [`Exact`], a rational of two `i128`s
//! with checked operations, and is rounded once, half-even, to the
//! currency's minor unit at a named point ([`Exact::round`]). `rust_decimal`
//! would silently round past 28 digits; `Exact` either is exact or fails
//! with [`Overflow`].

use edge::currency::Currency;
use rust_decimal::Decimal;
use std::cmp::Ordering;
use std::fmt;

/// An amount too large for exact arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("amount too large for exact decimal arithmetic")
    }
}
impl std::error::Error for Overflow {}

impl From<Overflow> for crate::error::Error {
    fn from(_: Overflow) -> Self {
        crate::error::Error::data("amount too large for exact decimal arithmetic (overflow)")
    }
}

/// A rounded amount in a currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

#[allow(clippy::should_implement_trait)] // checked operations that return a Result
impl Money {
    pub fn zero(currency: Currency) -> Money {
        Money {
            amount: Decimal::ZERO,
            currency,
        }
    }

    /// Rounds an exact amount once, half-even, to the currency's minor unit.
    pub fn round(x: Exact, currency: Currency) -> Result<Money, Overflow> {
        Ok(Money {
            amount: x.round(currency.minor_units())?,
            currency,
        })
    }

    /// An already rounded decimal (from the store or a config fixed amount
    /// that has no more digits than the currency allows).
    pub fn new(amount: Decimal, currency: Currency) -> Money {
        Money { amount, currency }
    }

    pub fn checked_add(self, o: Money) -> Result<Money, Overflow> {
        debug_assert_eq!(self.currency, o.currency);
        Ok(Money {
            amount: self.amount.checked_add(o.amount).ok_or(Overflow)?,
            currency: self.currency,
        })
    }

    pub fn checked_sub(self, o: Money) -> Result<Money, Overflow> {
        debug_assert_eq!(self.currency, o.currency);
        Ok(Money {
            amount: self.amount.checked_sub(o.amount).ok_or(Overflow)?,
            currency: self.currency,
        })
    }

    pub fn neg(self) -> Money {
        Money {
            amount: norm(-self.amount),
            currency: self.currency,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// The amount as the currency writes it: `24.00`, `1250` (JPY), `1.250` (KWD).
    pub fn fmt_amount(&self) -> String {
        fmt_decimal(self.amount, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.fmt_amount(), self.currency)
    }
}

/// Removes a negative zero.
pub fn norm(mut d: Decimal) -> Decimal {
    if d.is_zero() {
        d.set_sign_positive(true);
    }
    d
}

/// Writes a decimal with exactly the currency's minor units (half-even if it
/// had more, which a ledger amount never has).
pub fn fmt_decimal(d: Decimal, currency: Currency) -> String {
    Amount(d, currency).to_string()
}

/// [`fmt_decimal`] as a value to write (`write!(s, "{}", Amount(d, c))`),
/// without a `String` of its own: the ledger's words write millions.
pub struct Amount(pub Decimal, pub Currency);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dp = self.1.minor_units();
        let mut r = norm(
            self.0
                .round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointNearestEven),
        );
        r.rescale(dp);
        write_digits(f, r)
    }
}

/// An input amount (a conversion's, a rule's) in words: as [`Amount`] when
/// it has no more decimals than the currency, else with every digit it
/// has, so the words never show a rounded input (`20% of 100.005 USD`,
/// not `20% of 100.00 USD`: the commission is computed from 100.005).
pub struct Input(pub Decimal, pub Currency);

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dp = self.1.minor_units();
        if self.0.scale() > dp {
            let n = norm(self.0.normalize());
            if n.scale() > dp {
                return write_digits(f, n);
            }
        }
        Amount(self.0, self.1).fmt(f)
    }
}

/// [`plain`] as a value to write.
pub struct Plain(pub Decimal);

impl fmt::Display for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_digits(f, norm(self.0.normalize()))
    }
}

/// Writes `d` with exactly its scale's digits after the point, as
/// `Decimal`'s own `Display` does (`-0.05`, `12.50`, `7`), from its
/// mantissa in one pass.
fn write_digits(f: &mut fmt::Formatter<'_>, d: Decimal) -> fmt::Result {
    let scale = d.scale() as usize;
    let m = d.mantissa();
    // 96-bit mantissa: at most 29 digits, a point and a sign
    let mut buf = [0u8; 40];
    let mut at = buf.len();
    let mut written = 0;
    let mut u = m.unsigned_abs();
    // digits from the last; the point after `scale` of them; at least one
    // before the point
    while u != 0 || written <= scale {
        // amounts fit 64 bits: their division is the cheap one
        let d = match u64::try_from(u) {
            Ok(s) => {
                u = u128::from(s / 10);
                s % 10
            }
            Err(_) => {
                let d = u % 10;
                u /= 10;
                d as u64
            }
        };
        at -= 1;
        buf[at] = b'0' + d as u8;
        written += 1;
        if written == scale {
            at -= 1;
            buf[at] = b'.';
        }
    }
    if m < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    // ASCII digits, point and sign only
    f.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
}

/// Parses a decimal string exactly (`"12.50"`, `"-3"`); no exponent, no float.
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let t = s.trim();
    if t.is_empty() || t != s || t.contains(['e', 'E', '_']) {
        return None;
    }
    Decimal::from_str_exact(t).ok()
}

const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

fn pow10(n: u32) -> Result<i128, Overflow> {
    POW10.get(n as usize).copied().ok_or(Overflow)
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a.max(1)
}

/// An exact rational `num / den`, `den > 0`.
#[derive(Clone, Copy, Debug)]
pub struct Exact {
    num: i128,
    den: i128,
}

#[allow(clippy::should_implement_trait)] // checked operations that return a Result
impl Exact {
    pub const ZERO: Exact = Exact { num: 0, den: 1 };
    pub const ONE: Exact = Exact { num: 1, den: 1 };

    pub fn from_dec(d: Decimal) -> Exact {
        Exact {
            num: d.mantissa(),
            den: POW10[d.scale() as usize],
        }
    }

    pub fn int(i: i64) -> Exact {
        Exact {
            num: i128::from(i),
            den: 1,
        }
    }

    /// `p / 100`.
    pub fn percent(p: Decimal) -> Exact {
        Exact {
            num: p.mantissa(),
            den: POW10[p.scale() as usize] * 100,
        }
    }

    fn reduced(self) -> Exact {
        let g = gcd(self.num, self.den);
        Exact {
            num: self.num / g,
            den: self.den / g,
        }
    }

    fn make(num: Option<i128>, den: Option<i128>) -> Option<Exact> {
        Some(Exact {
            num: num?,
            den: den?,
        })
    }

    pub fn mul(self, o: Exact) -> Result<Exact, Overflow> {
        if let Some(r) = Exact::make(self.num.checked_mul(o.num), self.den.checked_mul(o.den)) {
            return Ok(r);
        }
        let (a, b) = (self.reduced(), o.reduced());
        // cross-reduce before multiplying
        let g1 = gcd(a.num, b.den);
        let g2 = gcd(b.num, a.den);
        Exact::make(
            (a.num / g1).checked_mul(b.num / g2),
            (a.den / g2).checked_mul(b.den / g1),
        )
        .ok_or(Overflow)
    }

    pub fn div(self, o: Exact) -> Result<Exact, Overflow> {
        if o.num == 0 {
            return Err(Overflow);
        }
        let inv = if o.num < 0 {
            Exact {
                num: -o.den,
                den: -o.num,
            }
        } else {
            Exact {
                num: o.den,
                den: o.num,
            }
        };
        self.mul(inv)
    }

    pub fn add(self, o: Exact) -> Result<Exact, Overflow> {
        if self.den == o.den {
            if let Some(n) = self.num.checked_add(o.num) {
                return Ok(Exact {
                    num: n,
                    den: self.den,
                });
            }
        }
        let try_add = |a: Exact, b: Exact| -> Option<Exact> {
            let n = a
                .num
                .checked_mul(b.den)?
                .checked_add(b.num.checked_mul(a.den)?)?;
            Some(Exact {
                num: n,
                den: a.den.checked_mul(b.den)?,
            })
        };
        if let Some(r) = try_add(self, o) {
            return Ok(r);
        }
        try_add(self.reduced(), o.reduced())
            .map(Exact::reduced)
            .ok_or(Overflow)
    }

    pub fn neg(self) -> Exact {
        Exact {
            num: -self.num,
            den: self.den,
        }
    }

    pub fn sub(self, o: Exact) -> Result<Exact, Overflow> {
        self.add(o.neg())
    }

    pub fn is_zero(&self) -> bool {
        self.num == 0
    }

    pub fn signum(&self) -> i32 {
        self.num.signum() as i32
    }

    pub fn min(self, o: Exact) -> Exact {
        if self.cmp_to(&o) == Ordering::Greater {
            o
        } else {
            self
        }
    }

    pub fn max(self, o: Exact) -> Exact {
        if self.cmp_to(&o) == Ordering::Less {
            o
        } else {
            self
        }
    }

    pub fn cmp_to(&self, o: &Exact) -> Ordering {
        match (self.num.checked_mul(o.den), o.num.checked_mul(self.den)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => {
                let (a, b) = (self.reduced(), o.reduced());
                match (a.num.checked_mul(b.den), b.num.checked_mul(a.den)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    // fall back to a float comparison only to order, never to compute money
                    _ => (a.num as f64 / a.den as f64)
                        .partial_cmp(&(b.num as f64 / b.den as f64))
                        .unwrap_or(Ordering::Equal),
                }
            }
        }
    }

    /// The one rounding point: half-even to `dp` decimals.
    pub fn round(self, dp: u32) -> Result<Decimal, Overflow> {
        let mut x = self;
        let n = loop {
            match x.num.checked_mul(pow10(dp)?) {
                Some(n) => break n,
                None => {
                    let r = x.reduced();
                    if r.den == x.den {
                        return Err(Overflow);
                    }
                    x = r;
                }
            }
        };
        let den = x.den;
        let mut q = n.div_euclid(den);
        let r = n.rem_euclid(den);
        // compare 2r with den without overflow
        match r.cmp(&(den - r)) {
            Ordering::Greater => q += 1,
            Ordering::Equal if q % 2 != 0 => q += 1,
            _ => {}
        }
        Decimal::try_from_i128_with_scale(q, dp)
            .map(norm)
            .map_err(|_| Overflow)
    }

    /// A decimal with up to 28 digits of scale, for display only.
    pub fn approx(self) -> Decimal {
        self.round(12)
            .map(|d| d.normalize())
            .unwrap_or(Decimal::MAX)
    }
}

impl PartialEq for Exact {
    fn eq(&self, o: &Exact) -> bool {
        self.cmp_to(o) == Ordering::Equal
    }
}

/// Writes a decimal without trailing zeros (`20`, `2.5`), for rates in words.
pub fn plain(d: Decimal) -> String {
    Plain(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        parse_decimal(s).unwrap()
    }

    #[test]
    fn half_even_rounding() {
        for (x, dp, want) in [
            ("0.125", 2, "0.12"),
            ("0.135", 2, "0.14"),
            ("-0.125", 2, "-0.12"),
            ("-0.135", 2, "-0.14"),
            ("2.5", 0, "2"),
            ("3.5", 0, "4"),
            ("1.0005", 3, "1.000"),
            ("1.0015", 3, "1.002"),
            ("-0.004", 2, "0.00"),
        ] {
            assert_eq!(
                Exact::from_dec(d(x)).round(dp).unwrap().to_string(),
                want,
                "{x}"
            );
        }
    }

    #[test]
    fn formats_per_currency() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(fmt_decimal(d("24"), usd), "24.00");
        assert_eq!(fmt_decimal(d("1250"), jpy), "1250");
        assert_eq!(fmt_decimal(d("1.25"), kwd), "1.250");
        assert_eq!(fmt_decimal(d("-0"), usd), "0.00");
    }

    #[test]
    fn percent_of_amount() {
        let x = Exact::from_dec(d("123.45"))
            .mul(Exact::percent(d("20")))
            .unwrap();
        assert_eq!(x.round(2).unwrap(), d("24.69"));
        let y = Exact::from_dec(d("0.025")).mul(Exact::ONE).unwrap();
        assert_eq!(y.round(2).unwrap(), d("0.02"));
    }

    #[test]
    fn rejects_floats_and_exponents() {
        assert!(parse_decimal("1e5").is_none());
        assert!(parse_decimal(" 1").is_none());
        assert!(parse_decimal("abc").is_none());
        assert_eq!(parse_decimal("12.50").unwrap().to_string(), "12.50");
    }

    #[test]
    fn overflow_is_an_error() {
        let big = Exact::from_dec(Decimal::MAX);
        assert!(big.mul(big).and_then(|x| x.round(2)).is_err());
    }

    proptest! {
        /// The writers of amounts and plain decimals say what `Decimal`'s
        /// own `Display` says, at every scale and sign, zero included.
        #[test]
        fn amounts_are_written_as_decimal_writes_them(
            lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(),
            neg in any::<bool>(), scale in 0u32..=28, small in -1_000_000i64..1_000_000, s2 in 0u32..6,
        ) {
            for d in [Decimal::from_parts(lo, mid, hi, neg, scale), Decimal::new(small, s2)] {
                for c in [Currency::parse("USD"), Currency::parse("JPY"), Currency::parse("KWD")].into_iter().flatten() {
                    let dp = c.minor_units();
                    let mut r = norm(d.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointNearestEven));
                    r.rescale(dp);
                    prop_assert_eq!(fmt_decimal(d, c), r.to_string());
                }
                prop_assert_eq!(plain(d), norm(d.normalize()).to_string());
            }
        }

        #[test]
        fn round_matches_decimal_half_even(m in -10_000_000_000i64..10_000_000_000, s in 0u32..8, dp in 0u32..4) {
            let x = Decimal::new(m, s);
            let want = norm(x.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointNearestEven));
            prop_assert_eq!(Exact::from_dec(x).round(dp).unwrap(), want);
        }

        #[test]
        fn mul_div_roundtrip(a in -1_000_000i64..1_000_000, b in 1i64..10_000) {
            let x = Exact::int(a).mul(Exact::int(b)).unwrap().div(Exact::int(b)).unwrap();
            prop_assert_eq!(x.round(0).unwrap(), Decimal::from(a));
        }
    }
}
