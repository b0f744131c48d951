//! Payout files beside `payouts.csv`: a SEPA credit transfer initiation
//! (ISO 20022 pain.001.001.09) for EUR payouts to partners with an IBAN and
//! BIC on file, PayPal Payouts bulk files (one per currency, as PayPal
//! requires) for partners with a PayPal email, and `payouts.manual.csv` for
//! every payout neither file carries, with the reason.
//!
//! The partners' payout details and the operator's own account live in
//! programs.toml (`[payout.sepa]`, `[[payout.partners]]`); they are checked
//! here (IBAN check digits and length, BIC format) and errors name the file,
//! line and key like every other configuration error.

use crate::config::{valid_id, Src};
use crate::error::{Error, Result};
use crate::money::parse_decimal;
use crate::period::{date_of_day, Period};
use crate::report::write_atomic;
use edge::currency::Currency;
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

// ---------------------------------------------------------------- config

/// `[payout.sepa]`: the operator's (debtor's) account.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSepa {
    name: Spanned<String>,
    iban: Spanned<String>,
    bic: Spanned<String>,
    // the debtor's postal address (needed for payees outside the EEA)
    street: Option<Spanned<String>>,
    building: Option<Spanned<String>>,
    postcode: Option<Spanned<String>>,
    town: Option<Spanned<String>>,
    country: Option<Spanned<String>>,
}

/// One `[[payout.partners]]` table: a partner's payout details.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPayee {
    id: Spanned<String>,
    legal_name: Option<Spanned<String>>,
    iban: Option<Spanned<String>>,
    bic: Option<Spanned<String>>,
    paypal_email: Option<Spanned<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debtor {
    pub name: String,
    pub iban: String,
    pub bic: String,
    pub address: Option<Address>,
}

/// A postal address as pain.001 structures it (`PstlAdr`): the EPC rulebook
/// requires the debtor's town and country when the payee's bank is in a
/// SEPA country outside the EEA (GB, CH, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub street: Option<String>,
    pub building: Option<String>,
    pub postcode: Option<String>,
    pub town: String,
    /// ISO 3166 alpha-2, upper case.
    pub country: String,
}

/// pain.001.001.09's lengths: `StrtNm` 70, `BldgNb` 16, `PstCd` 16, `TwnNm` 35.
const ADDRESS_KEYS: [(&str, usize); 4] = [
    ("street", 70),
    ("building", 16),
    ("postcode", 16),
    ("town", 35),
];

/// ISO 3166-1 alpha-2 codes (officially assigned), and XK, the code
/// banks and the EPC use for Kosovo.
const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "XK", "YE", "YT", "ZA", "ZM", "ZW",
];

fn check_address(src: &Src, sp: &Spanned<RawSepa>) -> Result<Option<Address>> {
    let s = sp.get_ref();
    let fields = [&s.street, &s.building, &s.postcode, &s.town];
    if fields.iter().all(|f| f.is_none()) && s.country.is_none() {
        return Ok(None);
    }
    let mut v: Vec<Option<String>> = Vec::new();
    for (f, (key, max)) in fields.into_iter().zip(ADDRESS_KEYS) {
        v.push(match f {
            None => None,
            Some(t) => {
                let x = t.get_ref().trim();
                let bad = if x.is_empty() {
                    Some("must not be empty".to_string())
                } else if x.chars().count() > max {
                    Some(format!("is longer than {max} characters (the SEPA limit)"))
                } else if x.chars().any(char::is_control) {
                    Some("contains a control character".to_string())
                } else {
                    None
                };
                if let Some(m) = bad {
                    return Err(src.err(t.span(), key, m));
                }
                Some(x.to_string())
            }
        });
    }
    let Some(town) = v[3].take() else {
        return Err(src.err(
            sp.span(),
            "town",
            "a debtor address needs `town` and `country`",
        ));
    };
    let country = match &s.country {
        None => {
            return Err(src.err(
                sp.span(),
                "country",
                "a debtor address needs `town` and `country`",
            ))
        }
        Some(c) => {
            let x = c.get_ref().trim().to_ascii_uppercase();
            if !COUNTRIES.contains(&x.as_str()) {
                return Err(src.err(
                    c.span(),
                    "country",
                    format!(
                        "{:?} is not an ISO 3166 country code (two letters, e.g. DE, GB, CH)",
                        c.get_ref()
                    ),
                ));
            }
            x
        }
    };
    Ok(Some(Address {
        street: v[0].take(),
        building: v[1].take(),
        postcode: v[2].take(),
        town,
        country,
    }))
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payee {
    pub legal_name: Option<String>,
    /// Normalized: upper case, no spaces.
    pub iban: Option<String>,
    pub bic: Option<String>,
    pub paypal_email: Option<String>,
}

/// Everything the payout files need from the configuration.
#[derive(Clone, Debug, Default)]
pub struct PayoutDetails {
    pub debtor: Option<Debtor>,
    pub payees: BTreeMap<String, Payee>,
}

/// SEPA names are at most 70 characters (EPC rulebook; the schema allows 140).
const MAX_NAME: usize = 70;

/// Checks an account holder's name: not empty, at most 70 characters.
pub fn legal_name(s: &str) -> std::result::Result<String, String> {
    let n = s.trim();
    if n.is_empty() {
        return Err("must not be empty".into());
    }
    if n.chars().count() > MAX_NAME {
        return Err(format!(
            "is longer than {MAX_NAME} characters (the SEPA limit)"
        ));
    }
    if n.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    // the bank file writes it in SEPA's Latin character set: a name of no
    // letter or digit there would reach the bank as dots
    if !sepa_text(n).chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err("has no letter or digit that SEPA's character set can carry".into());
    }
    Ok(n.to_string())
}

fn check_name(src: &Src, s: &Spanned<String>, key: &str) -> Result<String> {
    legal_name(s.get_ref()).map_err(|m| src.err(s.span(), key, m))
}

fn check_iban(src: &Src, s: &Spanned<String>, key: &str) -> Result<String> {
    iban(s.get_ref()).map_err(|m| src.err(s.span(), key, m))
}

fn check_bic(src: &Src, s: &Spanned<String>, key: &str) -> Result<String> {
    bic(s.get_ref()).map_err(|m| src.err(s.span(), key, m))
}

pub(crate) fn check(
    src: &Src,
    sepa: Option<&Spanned<RawSepa>>,
    partners: &[Spanned<RawPayee>],
) -> Result<PayoutDetails> {
    let debtor = match sepa {
        None => None,
        Some(sp) => {
            let s = sp.get_ref();
            let iban = check_iban(src, &s.iban, "iban")?;
            if !in_sepa(&iban) {
                return Err(src.err(
                    s.iban.span(),
                    "iban",
                    format!(
                        "{} is outside the SEPA scheme: SEPA transfers are paid from a SEPA account",
                        &iban[..2]
                    ),
                ));
            }
            let bic = check_bic(src, &s.bic, "bic")?;
            let address = check_address(src, sp)?;
            // every transfer from a bank outside the EEA is one the
            // rulebook wants the payer's address on
            if address.is_none() && outside_eea(&iban, Some(&bic)) {
                return Err(src.err(
                    sp.span(),
                    "town",
                    format!(
                        "the account is in {}, outside the EEA: SEPA transfers from it need the debtor's address (`town` and `country`, and `street`, `building`, `postcode` where there are)",
                        account_country(&iban, Some(&bic))
                    ),
                ));
            }
            Some(Debtor {
                name: check_name(src, &s.name, "name")?,
                iban,
                bic,
                address,
            })
        }
    };
    let mut payees = BTreeMap::new();
    for sp in partners {
        let p = sp.get_ref();
        let id = p.id.get_ref();
        if !valid_id(id) {
            return Err(src.err(p.id.span(), "id", "a partner id is [A-Za-z0-9_-]{1,64}"));
        }
        if payees.contains_key(id) {
            return Err(src.err(
                p.id.span(),
                "id",
                format!("payout details for partner {id:?} are given twice"),
            ));
        }
        let iban = p
            .iban
            .as_ref()
            .map(|s| check_iban(src, s, "iban"))
            .transpose()?;
        let bic = p
            .bic
            .as_ref()
            .map(|s| check_bic(src, s, "bic"))
            .transpose()?;
        match (&p.iban, &p.bic) {
            (Some(_), None) => {
                return Err(src.err(sp.span(), "bic", "an `iban` needs the bank's `bic`"))
            }
            (None, Some(b)) => {
                return Err(src.err(b.span(), "bic", "a `bic` without an `iban` pays nothing"))
            }
            _ => {}
        }
        let legal_name = p
            .legal_name
            .as_ref()
            .map(|s| check_name(src, s, "legal_name"))
            .transpose()?;
        if iban.is_some() && legal_name.is_none() {
            return Err(src.err(
                sp.span(),
                "legal_name",
                "a bank transfer needs the account holder's `legal_name`",
            ));
        }
        let paypal_email = match &p.paypal_email {
            None => None,
            Some(s) => Some(email(s.get_ref()).map_err(|m| src.err(s.span(), "paypal_email", m))?),
        };
        if iban.is_none() && paypal_email.is_none() {
            return Err(src.err(
                sp.span(),
                "id",
                format!("partner {id:?} has neither `iban` nor `paypal_email`"),
            ));
        }
        payees.insert(
            id.clone(),
            Payee {
                legal_name,
                iban,
                bic,
                paypal_email,
            },
        );
    }
    Ok(PayoutDetails { debtor, payees })
}

// ---------------------------------------------------------------- IBAN, BIC

/// Length of the IBAN of each country in the SWIFT IBAN registry.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// Countries of the SEPA credit transfer scheme (EU, EEA, and the
/// countries the EPC admitted: Andorra, Gibraltar, Monaco, San Marino,
/// Switzerland, the United Kingdom, the Vatican, Albania, Moldova,
/// Montenegro, North Macedonia). French overseas departments and the
/// crown dependencies use FR and GB IBANs.
const SEPA_COUNTRIES: &[&str] = &[
    "AD", "AL", "AT", "BE", "BG", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GB", "GI",
    "GR", "HR", "HU", "IE", "IS", "IT", "LI", "LT", "LU", "LV", "MC", "MD", "ME", "MK", "MT", "NL",
    "NO", "PL", "PT", "RO", "SE", "SI", "SK", "SM", "VA",
];

/// SEPA countries outside the EEA: a transfer to a bank there needs the
/// debtor's address (EPC SEPA Credit Transfer rulebook).
const SEPA_OUTSIDE_EEA: &[&str] = &[
    "AD", "AL", "CH", "GB", "GI", "MC", "MD", "ME", "MK", "SM", "VA",
];

/// SEPA territories outside the EEA whose banks use another country's
/// IBANs and show their own code in the BIC: Saint-Pierre-et-Miquelon
/// (FR IBANs), Guernsey, Jersey and the Isle of Man (GB IBANs).
const SEPA_OUTSIDE_EEA_BIC_ONLY: &[&str] = &["PM", "GG", "JE", "IM"];

/// Whether a (checked) account is in the SEPA scheme but outside the EEA:
/// by its IBAN's country, or by its (checked) BIC's country for the
/// territories that use another country's IBANs.
pub fn outside_eea(iban: &str, bic: Option<&str>) -> bool {
    iban.get(..2).is_some_and(|c| SEPA_OUTSIDE_EEA.contains(&c))
        || bic
            .and_then(|b| b.get(4..6))
            .is_some_and(|c| SEPA_OUTSIDE_EEA_BIC_ONLY.contains(&c))
}

/// The country an account is in, for messages: the BIC's for the
/// territories [`outside_eea`] tells by it, else the IBAN's.
fn account_country<'a>(iban: &'a str, bic: Option<&'a str>) -> &'a str {
    match bic.and_then(|b| b.get(4..6)) {
        Some(c) if SEPA_OUTSIDE_EEA_BIC_ONLY.contains(&c) => c,
        _ => iban.get(..2).unwrap_or(""),
    }
}

/// Whether a (checked) IBAN's country is in the SEPA scheme.
pub fn in_sepa(iban: &str) -> bool {
    iban.get(..2).is_some_and(|c| SEPA_COUNTRIES.contains(&c))
}

/// Checks an IBAN (spaces allowed, any case) and returns it normalized:
/// known country, that country's length, alphanumeric, mod-97 check digits.
pub fn iban(s: &str) -> std::result::Result<String, String> {
    let n: String = s
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if n.len() < 4 || !n.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "{s:?} is not an IBAN (letters and digits, starting with a country code)"
        ));
    }
    let (cc, check) = (&n[..2], &n[2..4]);
    if !cc.bytes().all(|b| b.is_ascii_uppercase()) || !check.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not an IBAN: it starts with a country code and two check digits"
        ));
    }
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| *c == cc) else {
        return Err(format!("{s:?}: {cc} is not a country with IBANs"));
    };
    if n.len() != len {
        return Err(format!(
            "{s:?} has {} characters; an IBAN of {cc} has {len}",
            n.len()
        ));
    }
    // move the first four characters to the end, letters as 10..35, mod 97
    let mut rem: u32 = 0;
    for b in n[4..].bytes().chain(n[..4].bytes()) {
        let v = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    if rem != 1 {
        return Err(format!(
            "{s:?}: the IBAN check digits are wrong (mistyped?)"
        ));
    }
    Ok(n)
}

/// Checks a BIC (ISO 9362: 4 bank, 2 country letters, 2 location, optional
/// 3 branch) and returns it upper-cased.
pub fn bic(s: &str) -> std::result::Result<String, String> {
    let n = s.trim().to_ascii_uppercase();
    let b = n.as_bytes();
    let ok = (b.len() == 8 || b.len() == 11)
        && b.iter().all(u8::is_ascii_alphanumeric)
        && b[..4].iter().all(u8::is_ascii_uppercase)
        && b[4..6].iter().all(u8::is_ascii_uppercase);
    if !ok {
        return Err(format!(
            "{s:?} is not a BIC: 8 or 11 letters and digits, e.g. COBADEFFXXX (bank, country, location, branch)"
        ));
    }
    Ok(n)
}

/// Checks an email address (the PayPal account).
pub fn email(s: &str) -> std::result::Result<String, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not an email address");
    let (local, domain) = t.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains('@')
        || t.len() > 127
        // the PayPal file is opened in spreadsheets too
        || crate::cell::is_formula(t.as_bytes())
        || t.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '"')
    {
        return Err(bad());
    }
    Ok(t.to_string())
}

// ---------------------------------------------------------------- files

/// Currencies PayPal Payouts sends.
const PAYPAL_CURRENCIES: &[&str] = &[
    "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "ILS", "JPY",
    "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "SEK", "SGD", "THB", "TWD", "USD",
];
/// PayPal pays these in whole units only.
const PAYPAL_WHOLE: &[&str] = &["HUF", "JPY", "TWD"];

pub const MANUAL_COLUMNS: [&str; 6] = [
    "period",
    "partner",
    "currency",
    "amount",
    "reference",
    "reason",
];

/// One payout row of payouts.csv: `period,partner,currency,amount,reference`.
struct Payout<'a> {
    partner: &'a str,
    currency: &'a str,
    amount: Decimal,
    amount_text: &'a str,
    reference: &'a str,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Transfers in payouts.sepa.xml and their sum (EUR).
    pub sepa: Option<(usize, Decimal)>,
    /// Per currency: the file name, payouts and their sum.
    pub paypal: Vec<(String, usize, String)>,
    /// Payouts in no file: `(partner, currency, amount, reference, reason)`.
    pub manual: Vec<[String; 5]>,
}

impl Summary {
    /// Lines for the command's summary.
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some((n, sum)) = &self.sepa {
            v.push(format!("payouts.sepa.xml: {n} SEPA transfers, {sum} EUR"));
        }
        for (f, n, sum) in &self.paypal {
            v.push(format!("{f}: {n} PayPal payouts, {sum}"));
        }
        for [partner, cur, amount, _, reason] in &self.manual {
            v.push(format!(
                "not in a payout file (payouts.manual.csv): {partner} {amount} {cur}: {reason}"
            ));
        }
        v
    }
}

pub(crate) fn hex16(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Writes the payout files for the payouts.csv rows `payouts` into `out`.
/// Files of a previous report that no longer apply are removed, so the
/// directory always matches payouts.csv.
pub fn write(
    out: &Path,
    p: Period,
    payouts: &[Vec<String>],
    details: &PayoutDetails,
) -> Result<Summary> {
    let mut rows = Vec::with_capacity(payouts.len());
    for r in payouts {
        let [_, partner, currency, amount, reference] = r.as_slice() else {
            return Err(Error::data("payouts: a row without five columns"));
        };
        let a = parse_decimal(amount)
            .ok_or_else(|| Error::data(format!("payouts: bad amount {amount:?} of {partner}")))?;
        rows.push(Payout {
            partner,
            currency,
            amount: a,
            amount_text: amount,
            reference,
        });
    }
    let mut sepa: Vec<(&Payout, &Payee)> = Vec::new();
    let mut paypal: BTreeMap<&str, Vec<(&Payout, &str)>> = BTreeMap::new();
    let mut summary = Summary::default();
    for r in &rows {
        let payee = details.payees.get(r.partner);
        let reason = match payee {
            None => "no payout details in [[payout.partners]]".to_string(),
            Some(pe)
                if r.currency == "EUR"
                    && pe.iban.as_deref().is_some_and(in_sepa)
                    && details.debtor.as_ref().is_some_and(|d| {
                        d.address.is_some()
                            || !pe
                                .iban
                                .as_deref()
                                .is_some_and(|i| outside_eea(i, pe.bic.as_deref()))
                    }) =>
            {
                sepa.push((r, pe));
                continue;
            }
            Some(pe) => match &pe.paypal_email {
                Some(mail)
                    if PAYPAL_CURRENCIES.contains(&r.currency)
                        && (!PAYPAL_WHOLE.contains(&r.currency) || r.amount.fract().is_zero()) =>
                {
                    paypal.entry(r.currency).or_default().push((r, mail));
                    continue;
                }
                Some(_) if !PAYPAL_CURRENCIES.contains(&r.currency) => {
                    format!("PayPal Payouts does not pay {}", r.currency)
                }
                Some(_) => format!("PayPal pays {} in whole units only", r.currency),
                None if pe.iban.is_some() && r.currency != "EUR" => format!(
                    "SEPA transfers are in EUR, the payout is in {} and there is no paypal_email",
                    r.currency
                ),
                None if pe.iban.as_deref().is_some_and(|i| !in_sepa(i)) => format!(
                    "the IBAN's country {} is outside the SEPA scheme",
                    pe.iban.as_deref().map_or("", |i| &i[..2])
                ),
                None if details.debtor.is_some()
                    && pe
                        .iban
                        .as_deref()
                        .is_some_and(|i| outside_eea(i, pe.bic.as_deref())) =>
                {
                    format!(
                        "the account's country {} is outside the EEA: SEPA needs the debtor's address ([payout.sepa] town and country)",
                        pe.iban
                            .as_deref()
                            .map_or("", |i| account_country(i, pe.bic.as_deref()))
                    )
                }
                None if pe.iban.is_some() => {
                    "no [payout.sepa] debtor account configured".to_string()
                }
                None => "no paypal_email".to_string(),
            },
        };
        summary.manual.push([
            r.partner.to_string(),
            r.currency.to_string(),
            r.amount_text.to_string(),
            r.reference.to_string(),
            reason,
        ]);
    }

    // payouts.sepa.xml
    let sepa_path = out.join("payouts.sepa.xml");
    match (&details.debtor, sepa.is_empty()) {
        (Some(debtor), false) => {
            let (xml, sum) = sepa_xml(p, debtor, &sepa);
            write_atomic(&sepa_path, xml.as_bytes())?;
            summary.sepa = Some((sepa.len(), sum));
        }
        _ => remove_stale(&sepa_path)?,
    }

    // payouts.paypal.<CUR>.csv, one file per currency (PayPal's rule)
    let mut keep = Vec::new();
    for (cur, items) in &paypal {
        let name = format!("payouts.paypal.{cur}.csv");
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let mut sum = Decimal::ZERO;
        for (r, mail) in items {
            sum += r.amount;
            let customer = if r.partner.len() <= 30 { r.partner } else { "" };
            let note = format!("Partner payout {p} ({})", r.reference);
            // whole units where PayPal takes no decimals (only whole
            // amounts are routed here)
            let whole;
            let amount = if PAYPAL_WHOLE.contains(cur) {
                whole = r.amount.trunc().to_string();
                whole.as_str()
            } else {
                r.amount_text
            };
            w.write_record([*mail, amount, cur, customer, &note, "PAYPAL"])
                .map_err(|e| Error::data(format!("{name}: {e}")))?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::data(format!("{name}: {e}")))?;
        write_atomic(&out.join(&name), &bytes)?;
        let sum_text = match Currency::parse(cur) {
            Some(c) => format!("{} {cur}", crate::money::fmt_decimal(sum, c)),
            None => format!("{sum} {cur}"),
        };
        summary.paypal.push((name.clone(), items.len(), sum_text));
        keep.push(name);
    }
    if let Ok(rd) = std::fs::read_dir(out) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if is_paypal_file(&name) && !keep.contains(&name) {
                remove_stale(&e.path())?;
            }
        }
    }

    // payouts.manual.csv: always written, the header alone when empty
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::data(format!("payouts.manual.csv: {e}"));
    w.write_record(MANUAL_COLUMNS).map_err(csv_err)?;
    let ps = p.to_string();
    for m in &summary.manual {
        let row = [ps.as_str(), &m[0], &m[1], &m[2], &m[3], &m[4]];
        // the reason
        w.write_record(crate::cell::defuse_columns(row.map(str::as_bytes), &[5]))
            .map_err(csv_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::data(format!("payouts.manual.csv: {e}")))?;
    write_atomic(&out.join("payouts.manual.csv"), &bytes)?;
    Ok(summary)
}

/// Removes the payout files an earlier report with `--config` left in
/// `out` (`report` without it writes none): a bank or PayPal file beside a
/// new payouts.csv would pay the earlier draft's amounts. Says which.
/// The payout files of period `p` when it is closed ([`write`]'s summary
/// lines). A draft gets none: its payouts change with every run, and a
/// bank pays a file as it is (a draft's file and the closed period's, two
/// `MsgId`s, would pay every partner twice); those an earlier report left
/// are removed. Lines for the command's summary.
pub fn write_for(
    store: &crate::store::Store,
    out: &Path,
    p: Period,
    payouts: &[Vec<String>],
    details: &PayoutDetails,
) -> Result<Vec<String>> {
    if store.period_state(p)?.is_some_and(|s| s.0 == "closed") {
        return Ok(write(out, p, payouts, details)?.lines());
    }
    let mut v = vec![format!(
        "no payout files for a draft (its payouts change with every run, and a bank pays a file as it is): \
         `settlement close --period {p}` freezes the period, and its report writes them"
    )];
    for n in remove_all(out)? {
        v.push(format!("removed {n} of an earlier report of the draft"));
    }
    Ok(v)
}

pub fn remove_all(out: &Path) -> Result<Vec<String>> {
    let mut gone = Vec::new();
    if let Ok(rd) = std::fs::read_dir(out) {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n == "payouts.sepa.xml" || n == "payouts.manual.csv" || is_paypal_file(n))
            .collect();
        names.sort();
        for n in names {
            remove_stale(&out.join(&n))?;
            gone.push(n);
        }
    }
    Ok(gone)
}

/// `payouts.paypal.<CUR>.csv`, a file of PayPal rows.
fn is_paypal_file(name: &str) -> bool {
    name.starts_with("payouts.paypal.") && name.ends_with(".csv")
}

fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// Max35Text: the reference when it fits, else the period and a digest.
/// Text in the SEPA character set (EPC: `a-z A-Z 0-9 / - ? : ( ) . , ' +`
/// and space), which every bank accepts: common accented letters lose
/// their accents, `&` becomes `+`, `_` becomes `-`, anything else `.`.
pub fn sepa_text(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'a'..='z'
            | 'A'..='Z'
            | '0'..='9'
            | '/'
            | '-'
            | '?'
            | ':'
            | '('
            | ')'
            | '.'
            | ','
            | '\''
            | '+'
            | ' ' => o.push(c),
            '&' => o.push('+'),
            '_' => o.push('-'),
            'ä' | 'æ' => o.push_str("ae"),
            'ö' | 'œ' => o.push_str("oe"),
            'ü' => o.push_str("ue"),
            'Ä' | 'Æ' => o.push_str("Ae"),
            'Ö' | 'Œ' => o.push_str("Oe"),
            'Ü' => o.push_str("Ue"),
            'ß' => o.push_str("ss"),
            'à' | 'á' | 'â' | 'ã' | 'å' | 'ą' => o.push('a'),
            'À' | 'Á' | 'Â' | 'Ã' | 'Å' | 'Ą' => o.push('A'),
            'ç' | 'ć' | 'č' => o.push('c'),
            'Ç' | 'Ć' | 'Č' => o.push('C'),
            'è' | 'é' | 'ê' | 'ë' | 'ę' | 'ě' => o.push('e'),
            'È' | 'É' | 'Ê' | 'Ë' | 'Ę' | 'Ě' => o.push('E'),
            'ì' | 'í' | 'î' | 'ï' | 'ı' => o.push('i'),
            'Ì' | 'Í' | 'Î' | 'Ï' | 'İ' => o.push('I'),
            'ñ' | 'ń' | 'ň' => o.push('n'),
            'Ñ' | 'Ń' | 'Ň' => o.push('N'),
            'ò' | 'ó' | 'ô' | 'õ' | 'ø' => o.push('o'),
            'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ø' => o.push('O'),
            'ù' | 'ú' | 'û' | 'ů' => o.push('u'),
            'Ù' | 'Ú' | 'Û' | 'Ů' => o.push('U'),
            'ý' | 'ÿ' => o.push('y'),
            'Ý' => o.push('Y'),
            'ś' | 'š' | 'ş' => o.push('s'),
            'Ś' | 'Š' | 'Ş' => o.push('S'),
            'ź' | 'ż' | 'ž' => o.push('z'),
            'Ź' | 'Ż' | 'Ž' => o.push('Z'),
            'ł' => o.push('l'),
            'Ł' => o.push('L'),
            'ğ' => o.push('g'),
            'Ğ' => o.push('G'),
            'ř' => o.push('r'),
            'Ř' => o.push('R'),
            'ť' => o.push('t'),
            'Ť' => o.push('T'),
            'ď' => o.push('d'),
            'Ď' => o.push('D'),
            // any other letter in its Latin transliteration (ș -> s,
            // ő -> o, đ -> d, Greek and Cyrillic letter by letter): a
            // payee's name stays readable for the bank's name check
            _ => {
                let t = if c.is_alphabetic() {
                    deunicode::deunicode_char(c).unwrap_or("")
                } else {
                    ""
                };
                let kept: Vec<char> = t.chars().filter(|x| x.is_ascii_alphanumeric()).collect();
                if kept.is_empty() {
                    o.push('.');
                } else {
                    o.extend(kept);
                }
            }
        }
    }
    o
}

/// The transfers' `EndToEndId`s (Max35Text, SEPA characters): the payout
/// reference with `_` as `-`; the period and a digest of the reference
/// when that is too long or not unique in the file.
fn end_to_end_ids(p: Period, items: &[(&Payout, &Payee)]) -> Vec<String> {
    let mut ids: Vec<String> = items.iter().map(|(r, _)| sepa_text(r.reference)).collect();
    let mut seen = std::collections::HashMap::new();
    for id in &ids {
        *seen.entry(id.clone()).or_insert(0) += 1;
    }
    for (id, (r, _)) in ids.iter_mut().zip(items) {
        if id.is_empty() || id.len() > 35 || seen[id.as_str()] > 1 {
            *id = format!("PO-{p}-{}", hex16(&[r.reference]));
        }
    }
    ids
}

/// The pain.001.001.09 document and its control sum. Deterministic: the
/// message id is a digest of the period, the debtor and the transfers; the
/// creation time is the period's close (its last second, UTC), the
/// requested execution date the next day.
fn sepa_xml(p: Period, debtor: &Debtor, items: &[(&Payout, &Payee)]) -> (String, Decimal) {
    let sum: Decimal = items.iter().map(|(r, _)| r.amount).sum();
    let eur = Currency::parse("EUR").expect("EUR is a currency");
    let sum_text = crate::money::fmt_decimal(sum, eur);
    let ps = p.to_string();
    let mut digest_parts: Vec<&str> = vec![&ps, &debtor.iban];
    for (r, pe) in items {
        digest_parts.extend([r.partner, r.amount_text, pe.iban.as_deref().unwrap_or("")]);
    }
    let msg_id = format!("PT-{p}-{}", hex16(&digest_parts));
    let created = format!("{}T23:59:59", date_of_day(p.last_day()));
    let exec = date_of_day(p.last_day() + 1);
    let n = items.len();
    // at most 70 characters also after transliteration (`ü` -> `ue`)
    let name = |s: &str| esc(&sepa_text(s).chars().take(MAX_NAME).collect::<String>());
    let debtor_name = name(&debtor.name);
    let mut x = String::with_capacity(1024 + 700 * n);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n");
    x.push_str("  <CstmrCdtTrfInitn>\n    <GrpHdr>\n");
    x.push_str(&format!("      <MsgId>{msg_id}</MsgId>\n"));
    x.push_str(&format!("      <CreDtTm>{created}</CreDtTm>\n"));
    x.push_str(&format!("      <NbOfTxs>{n}</NbOfTxs>\n"));
    x.push_str(&format!("      <CtrlSum>{sum_text}</CtrlSum>\n"));
    x.push_str(&format!(
        "      <InitgPty>\n        <Nm>{}</Nm>\n      </InitgPty>\n",
        debtor_name
    ));
    x.push_str("    </GrpHdr>\n    <PmtInf>\n");
    x.push_str(&format!("      <PmtInfId>{msg_id}-1</PmtInfId>\n"));
    x.push_str("      <PmtMtd>TRF</PmtMtd>\n      <BtchBookg>true</BtchBookg>\n");
    x.push_str(&format!("      <NbOfTxs>{n}</NbOfTxs>\n"));
    x.push_str(&format!("      <CtrlSum>{sum_text}</CtrlSum>\n"));
    x.push_str("      <PmtTpInf>\n        <SvcLvl>\n          <Cd>SEPA</Cd>\n        </SvcLvl>\n      </PmtTpInf>\n");
    x.push_str(&format!(
        "      <ReqdExctnDt>\n        <Dt>{exec}</Dt>\n      </ReqdExctnDt>\n"
    ));
    x.push_str(&format!("      <Dbtr>\n        <Nm>{debtor_name}</Nm>\n"));
    if let Some(a) = &debtor.address {
        // structured, in the schema's order; each part in the SEPA
        // character set and within its length after transliteration
        let part = |s: &str, max: usize| esc(&sepa_text(s).chars().take(max).collect::<String>());
        x.push_str("        <PstlAdr>\n");
        let [street, building, postcode, town] = ADDRESS_KEYS.map(|(_, max)| max);
        for (tag, v, max) in [
            ("StrtNm", &a.street, street),
            ("BldgNb", &a.building, building),
            ("PstCd", &a.postcode, postcode),
        ] {
            if let Some(v) = v {
                x.push_str(&format!("          <{tag}>{}</{tag}>\n", part(v, max)));
            }
        }
        x.push_str(&format!(
            "          <TwnNm>{}</TwnNm>\n",
            part(&a.town, town)
        ));
        x.push_str(&format!("          <Ctry>{}</Ctry>\n", a.country));
        x.push_str("        </PstlAdr>\n");
    }
    x.push_str("      </Dbtr>\n");
    x.push_str(&format!(
        "      <DbtrAcct>\n        <Id>\n          <IBAN>{}</IBAN>\n        </Id>\n      </DbtrAcct>\n",
        debtor.iban
    ));
    x.push_str(&format!(
        "      <DbtrAgt>\n        <FinInstnId>\n          <BICFI>{}</BICFI>\n        </FinInstnId>\n      </DbtrAgt>\n",
        debtor.bic
    ));
    x.push_str("      <ChrgBr>SLEV</ChrgBr>\n");
    for ((r, pe), e2e) in items.iter().zip(end_to_end_ids(p, items)) {
        x.push_str("      <CdtTrfTxInf>\n        <PmtId>\n");
        x.push_str(&format!(
            "          <EndToEndId>{}</EndToEndId>\n        </PmtId>\n",
            esc(&e2e)
        ));
        x.push_str(&format!(
            "        <Amt>\n          <InstdAmt Ccy=\"EUR\">{}</InstdAmt>\n        </Amt>\n",
            r.amount_text
        ));
        x.push_str(&format!(
            "        <CdtrAgt>\n          <FinInstnId>\n            <BICFI>{}</BICFI>\n          </FinInstnId>\n        </CdtrAgt>\n",
            pe.bic.as_deref().unwrap_or("")
        ));
        x.push_str(&format!(
            "        <Cdtr>\n          <Nm>{}</Nm>\n        </Cdtr>\n",
            name(pe.legal_name.as_deref().unwrap_or(r.partner))
        ));
        x.push_str(&format!(
            "        <CdtrAcct>\n          <Id>\n            <IBAN>{}</IBAN>\n          </Id>\n        </CdtrAcct>\n",
            pe.iban.as_deref().unwrap_or("")
        ));
        x.push_str(&format!(
            "        <RmtInf>\n          <Ustrd>{}</Ustrd>\n        </RmtInf>\n",
            // Max140Text
            esc(&sepa_text(&format!("Partner payout {p} {}", r.reference))
                .chars()
                .take(140)
                .collect::<String>())
        ));
        x.push_str("      </CdtTrfTxInf>\n");
    }
    x.push_str("    </PmtInf>\n  </CstmrCdtTrfInitn>\n</Document>\n");
    (x, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PayPal takes HUF, JPY and TWD in whole units: those rows are written
    /// without decimals (a whole amount of 12500.00 HUF as 12500), others
    /// as in payouts.csv; an amount with cents in HUF goes to the manual list.
    #[test]
    fn paypal_whole_unit_currencies_have_no_decimals() {
        let dir = tempfile::tempdir().unwrap();
        let mut details = PayoutDetails::default();
        for id in ["h", "u", "c"] {
            details.payees.insert(
                id.to_string(),
                Payee {
                    paypal_email: Some(format!("{id}@example.com")),
                    ..Payee::default()
                },
            );
        }
        let row = |partner: &str, cur: &str, amount: &str| -> Vec<String> {
            [
                "2026-11",
                partner,
                cur,
                amount,
                &format!("PO-2026-11-{partner}"),
            ]
            .map(str::to_string)
            .to_vec()
        };
        let p = Period::parse("2026-11").unwrap();
        let rows = [
            row("h", "HUF", "12500.00"),
            row("u", "USD", "12.50"),
            row("c", "HUF", "99.50"),
        ];
        write(dir.path(), p, &rows, &details).unwrap();
        let huf = std::fs::read_to_string(dir.path().join("payouts.paypal.HUF.csv")).unwrap();
        assert!(huf.starts_with("h@example.com,12500,HUF,"), "{huf}");
        assert_eq!(huf.lines().count(), 1, "{huf}");
        let usd = std::fs::read_to_string(dir.path().join("payouts.paypal.USD.csv")).unwrap();
        assert!(usd.starts_with("u@example.com,12.50,USD,"), "{usd}");
        let manual = std::fs::read_to_string(dir.path().join("payouts.manual.csv")).unwrap();
        assert!(manual.contains("2026-11,c,HUF,99.50,"), "{manual}");
    }

    // Valid IBANs, each checked by hand: move the first four characters to
    // the end, replace letters (A=10 .. Z=35), the number mod 97 is 1.
    // DE89 3704 0044 0532 0130 00: 370400440532013000 131489 mod 97 = 1.
    const VALID: &[&str] = &[
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "gb82west12345698765432",
        "GB29NWBK60161331926819",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "CH9300762011623852957",
        "AT611904300234573201",
        "ES9121000418450200051332",
        "IT60X0542811101000000123456",
        "NO9386011117947",
        "MT84MALT011000012345MTLCAST001S",
    ];

    #[test]
    fn valid_ibans() {
        for s in VALID {
            let n = iban(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert!(!n.contains(' ') && n == n.to_ascii_uppercase());
        }
        assert_eq!(
            iban("DE89 3704 0044 0532 0130 00").unwrap(),
            "DE89370400440532013000"
        );
    }

    #[test]
    fn invalid_ibans() {
        for (s, why) in [
            ("DE89370400440532013001", "check digits"), // last digit changed
            ("DE88370400440532013000", "check digits"), // check digits changed
            ("GB82WEST12345698765423", "check digits"), // two digits swapped
            ("NL91ABNA0417164301", "check digits"),
            ("DE8937040044053201300", "characters"), // one short
            ("BE685390075470344", "characters"),     // one long
            ("XX89370400440532013000", "not a country"),
            ("DE89-3704-0044-0532-0130-00", "not an IBAN"),
            ("", "not an IBAN"),
            ("1234", "country code"),
        ] {
            let e = iban(s).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn sepa_characters() {
        assert_eq!(sepa_text("Chloé Müller & Søn_1"), "Chloe Mueller + Son-1");
        assert_eq!(sepa_text("Łódź Straße 5"), "Lodz Strasse 5");
        assert_eq!(sepa_text("a<b>\"c\"€"), "a.b..c..");
        // review22 F6: letters of other EU languages, and Greek, in their
        // Latin transliteration (they were dots)
        assert_eq!(sepa_text("Ștefan Țurcanu"), "Stefan Turcanu");
        assert_eq!(sepa_text("Đorđe Đurić"), "Dorde Duric");
        assert_eq!(sepa_text("Erdős Pál"), "Erdos Pal");
        assert_eq!(sepa_text("Jānis Bērziņš"), "Janis Berzins");
        let greek = sepa_text("Δημήτρης Παπαδόπουλος");
        assert!(
            greek.starts_with("D") && !greek.contains('.') && greek.contains(' '),
            "{greek}"
        );
        // a name SEPA's set cannot carry at all is refused in the config
        assert!(legal_name("★★★").is_err());
        assert!(legal_name("Δημήτρης").is_ok());
    }

    #[test]
    fn sepa_scheme() {
        assert!(in_sepa("DE89370400440532013000"));
        assert!(in_sepa("CH9300762011623852957"));
        assert!(!in_sepa("BR1800360305000010009795493C1"));
        assert!(!in_sepa("TR330006100519786457841326"));
    }

    #[test]
    fn bics() {
        for s in [
            "COBADEFFXXX",
            "COBADEFF",
            "deutdeff500",
            "NWBKGB2L",
            "BNPAFRPP",
        ] {
            assert!(bic(s).is_ok(), "{s}");
        }
        for s in [
            "COBADEF",
            "COBADEFFXX",
            "CO1ADEFF",
            "COBA1EFF",
            "COBADEFF-XX",
            "",
        ] {
            assert!(bic(s).is_err(), "{s}");
        }
    }

    #[test]
    fn emails() {
        assert!(email("anna@example.com").is_ok());
        for s in [
            "anna",
            "anna@",
            "@example.com",
            "an na@example.com",
            "a@b",
            "a@x@y.com",
            "=1+cmd|x@example.com",
            "-2+3@example.com",
            "+a@example.com",
        ] {
            assert!(email(s).is_err(), "{s}");
        }
    }
}
