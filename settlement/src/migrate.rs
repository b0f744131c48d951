//! `settlement import --map MAPPING.toml FILE.csv`: partners, coupons and
//! opening balances from another platform's CSV export, through a
//! declarative column mapping.
//!
//! Partners and coupons become registry lines, exactly like the `partner`
//! and `coupon` lines of an NDJSON import (the same upsert, so a later pull
//! from the edge, whose lines carry `updated_at`, wins). Opening balances
//! are kept in the store and booked by `run` as `adjustment` entries of the
//! first open period (see [`opening_entries`]). One file is one
//! transaction: a bad row exits 2 with its line and imports nothing, unless
//! `--skip-invalid` sets it aside. Importing a file twice adds nothing.

use crate::config::{valid_id, Config, Src};
use crate::error::{Error, Result};
use crate::ledger::{prefixed_id, Entry, EntryKind};
use crate::money::{fmt_decimal, parse_decimal};
use crate::period::{date_of_day, Period};
use crate::store::{pos_base, ImportCounts, Inserter, Store};
use edge::currency::Currency;
use edge::record::Record;
use rusqlite::params;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

// ---------------------------------------------------------------- mapping

/// Where a field's value comes from, and what is done to it.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct RawField {
    column: Option<String>,
    value: Option<String>,
    default: Option<String>,
    transform: Option<Spanned<String>>,
    map: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    id: Spanned<RawField>,
    program: Spanned<RawField>,
    status: Option<Spanned<RawField>>,
    tier: Option<Spanned<RawField>>,
    parent: Option<Spanned<RawField>>,
    currency: Option<Spanned<RawField>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoupon {
    code: Spanned<RawField>,
    partner: Spanned<RawField>,
    program: Spanned<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBalance {
    partner: Spanned<RawField>,
    program: Spanned<RawField>,
    amount: Spanned<RawField>,
    currency: Spanned<RawField>,
    as_of: Spanned<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    /// The platform's name, for messages.
    source: Option<String>,
    /// One character; default `,`.
    delimiter: Option<Spanned<String>>,
    partner: Option<RawPartner>,
    coupon: Option<RawCoupon>,
    balance: Option<RawBalance>,
    payout: Option<RawPayout>,
}

/// Partners' payout details, written as `[[payout.partners]]` tables for
/// programs.toml.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayout {
    id: Spanned<RawField>,
    legal_name: Option<Spanned<RawField>>,
    iban: Option<Spanned<RawField>>,
    bic: Option<Spanned<RawField>>,
    paypal_email: Option<Spanned<RawField>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transform {
    /// An integer of minor units: `1999` -> `19.99`.
    Cents,
    /// A decimal, thousands separators (`,`) and a currency sign removed.
    Decimal,
    Lowercase,
    Uppercase,
    /// Characters outside `[A-Za-z0-9_-]` become `-`, at most 64.
    Slug,
    /// `YYYY-MM-DD`, also the date part of an RFC 3339 time or `MM/DD/YYYY`.
    Date,
}

#[derive(Clone, Debug)]
enum Source {
    Column(usize, String),
    Value(String),
}

#[derive(Clone, Debug)]
struct Field {
    name: &'static str,
    source: Source,
    default: Option<String>,
    transform: Option<Transform>,
    map: Option<BTreeMap<String, String>>,
}

struct PartnerMap {
    id: Field,
    program: Field,
    status: Option<Field>,
    tier: Option<Field>,
    parent: Option<Field>,
    currency: Option<Field>,
}

struct CouponMap {
    code: Field,
    partner: Field,
    program: Field,
}

struct PayoutMap {
    id: Field,
    legal_name: Option<Field>,
    iban: Option<Field>,
    bic: Option<Field>,
    paypal_email: Option<Field>,
}

struct BalanceMap {
    partner: Field,
    program: Field,
    amount: Field,
    currency: Field,
    as_of: Field,
}

/// A checked mapping, bound to one CSV file's header.
pub struct Mapping {
    pub source: String,
    delimiter: u8,
    partner: Option<PartnerMap>,
    coupon: Option<CouponMap>,
    balance: Option<BalanceMap>,
    payout: Option<PayoutMap>,
}

/// A field as written, before the CSV header is known.
struct Unbound<'a> {
    raw: &'a Spanned<RawField>,
    name: &'static str,
}

fn check_field(src: &Src, f: &Spanned<RawField>, name: &'static str) -> Result<()> {
    let r = f.get_ref();
    match (&r.column, &r.value) {
        (Some(_), Some(_)) => Err(src.err(f.span(), name, "give `column` or `value`, not both")),
        (None, None) => Err(src.err(
            f.span(),
            name,
            "needs `column = \"CSV header\"` or `value = \"constant\"`",
        )),
        _ => Ok(()),
    }?;
    if let Some(t) = &r.transform {
        parse_transform(t.get_ref()).ok_or_else(|| {
            src.err(
                t.span(),
                "transform",
                format!(
                    "unknown transform {:?}: cents, decimal, lowercase, uppercase, slug or date",
                    t.get_ref()
                ),
            )
        })?;
    }
    Ok(())
}

fn parse_transform(s: &str) -> Option<Transform> {
    Some(match s {
        "cents" => Transform::Cents,
        "decimal" => Transform::Decimal,
        "lowercase" => Transform::Lowercase,
        "uppercase" => Transform::Uppercase,
        "slug" => Transform::Slug,
        "date" => Transform::Date,
        _ => return None,
    })
}

impl Unbound<'_> {
    fn bind(&self, header: &[String], file: &str) -> Result<Field> {
        let r = self.raw.get_ref();
        let source = match (&r.column, &r.value) {
            (Some(c), _) => match header.iter().position(|h| h == c) {
                Some(i) => Source::Column(i, c.clone()),
                None => {
                    return Err(Error::data(format!(
                        "{file}:1: no column {c:?} (the mapping's `{}`); the header has {}",
                        self.name,
                        header
                            .iter()
                            .map(|h| format!("{h:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            },
            (None, Some(v)) => Source::Value(v.clone()),
            (None, None) => {
                return Err(Error::Usage(format!(
                    "the mapping's `{}` needs `column` or `value`",
                    self.name
                )))
            }
        };
        Ok(Field {
            name: self.name,
            source,
            default: r.default.clone(),
            transform: r
                .transform
                .as_ref()
                .and_then(|t| parse_transform(t.get_ref())),
            map: r.map.clone(),
        })
    }
}

/// A mapping file, checked; [`Loaded::bind`] ties it to a CSV header.
pub struct Loaded {
    path: PathBuf,
    text: String,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("{}: cannot read the mapping: {e}", path.display())))?;
    let l = Loaded {
        path: path.to_path_buf(),
        text,
    };
    l.raw()?;
    Ok(l)
}

impl Loaded {
    fn raw(&self) -> Result<RawMapping> {
        let src = Src::new(self.path.display().to_string(), &self.text);
        let raw: RawMapping = toml::from_str(&self.text).map_err(|e| src.toml_err(e))?;
        if raw.partner.is_none()
            && raw.coupon.is_none()
            && raw.balance.is_none()
            && raw.payout.is_none()
        {
            return Err(src.err(
                0..0,
                "partner",
                "the mapping needs a [partner], [coupon], [balance] or [payout] table",
            ));
        }
        if let Some(d) = &raw.delimiter {
            if d.get_ref().len() != 1 {
                return Err(src.err(d.span(), "delimiter", "one ASCII character, e.g. \";\""));
            }
        }
        for (f, n) in self.fields(&raw) {
            check_field(&src, f, n)?;
        }
        Ok(raw)
    }

    fn fields<'r>(&self, raw: &'r RawMapping) -> Vec<(&'r Spanned<RawField>, &'static str)> {
        let mut v = Vec::new();
        if let Some(p) = &raw.partner {
            v.extend([(&p.id, "id"), (&p.program, "program")]);
            for (f, n) in [
                (&p.status, "status"),
                (&p.tier, "tier"),
                (&p.parent, "parent"),
                (&p.currency, "currency"),
            ] {
                if let Some(f) = f {
                    v.push((f, n));
                }
            }
        }
        if let Some(c) = &raw.coupon {
            v.extend([
                (&c.code, "code"),
                (&c.partner, "partner"),
                (&c.program, "program"),
            ]);
        }
        if let Some(b) = &raw.balance {
            v.extend([
                (&b.partner, "partner"),
                (&b.program, "program"),
                (&b.amount, "amount"),
                (&b.currency, "currency"),
                (&b.as_of, "as_of"),
            ]);
        }
        if let Some(p) = &raw.payout {
            v.push((&p.id, "id"));
            for (f, n) in [
                (&p.legal_name, "legal_name"),
                (&p.iban, "iban"),
                (&p.bic, "bic"),
                (&p.paypal_email, "paypal_email"),
            ] {
                if let Some(f) = f {
                    v.push((f, n));
                }
            }
        }
        v
    }

    pub fn delimiter(&self) -> Result<u8> {
        Ok(self
            .raw()?
            .delimiter
            .map_or(b',', |d| d.get_ref().as_bytes()[0]))
    }

    /// The mapping with its columns found in `header`.
    pub fn bind(&self, header: &[String], file: &str) -> Result<Mapping> {
        let raw = self.raw()?;
        let b =
            |f: &Spanned<RawField>, name: &'static str| Unbound { raw: f, name }.bind(header, file);
        let ob = |f: &Option<Spanned<RawField>>, name: &'static str| -> Result<Option<Field>> {
            f.as_ref().map(|f| b(f, name)).transpose()
        };
        let partner = match &raw.partner {
            None => None,
            Some(p) => Some(PartnerMap {
                id: b(&p.id, "partner.id")?,
                program: b(&p.program, "partner.program")?,
                status: ob(&p.status, "partner.status")?,
                tier: ob(&p.tier, "partner.tier")?,
                parent: ob(&p.parent, "partner.parent")?,
                currency: ob(&p.currency, "partner.currency")?,
            }),
        };
        let coupon = match &raw.coupon {
            None => None,
            Some(c) => Some(CouponMap {
                code: b(&c.code, "coupon.code")?,
                partner: b(&c.partner, "coupon.partner")?,
                program: b(&c.program, "coupon.program")?,
            }),
        };
        let balance = match &raw.balance {
            None => None,
            Some(x) => Some(BalanceMap {
                partner: b(&x.partner, "balance.partner")?,
                program: b(&x.program, "balance.program")?,
                amount: b(&x.amount, "balance.amount")?,
                currency: b(&x.currency, "balance.currency")?,
                as_of: b(&x.as_of, "balance.as_of")?,
            }),
        };
        let payout = match &raw.payout {
            None => None,
            Some(x) => Some(PayoutMap {
                id: b(&x.id, "payout.id")?,
                legal_name: ob(&x.legal_name, "payout.legal_name")?,
                iban: ob(&x.iban, "payout.iban")?,
                bic: ob(&x.bic, "payout.bic")?,
                paypal_email: ob(&x.paypal_email, "payout.paypal_email")?,
            }),
        };
        Ok(Mapping {
            payout,
            source: raw.source.unwrap_or_else(|| "CSV".to_string()),
            delimiter: raw.delimiter.map_or(b',', |d| d.get_ref().as_bytes()[0]),
            partner,
            coupon,
            balance,
        })
    }
}

// ---------------------------------------------------------------- rows

fn apply(t: Transform, v: &str) -> std::result::Result<String, String> {
    Ok(match t {
        Transform::Lowercase => v.to_lowercase(),
        Transform::Uppercase => v.to_uppercase(),
        Transform::Slug => v
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect(),
        Transform::Cents => {
            // one sign at most
            let (neg, digits) = match v.as_bytes().first() {
                Some(b'-') => (true, &v[1..]),
                Some(b'+') => (false, &v[1..]),
                _ => (false, v),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 18
            {
                return Err(format!("{v:?} is not a whole number of cents"));
            }
            let n: i64 = digits.parse().map_err(|_| format!("{v:?} is too large"))?;
            Decimal::new(if neg { -n } else { n }, 2).to_string()
        }
        Transform::Decimal => {
            let t: String = v
                .chars()
                .filter(|c| !matches!(c, '$' | '€' | '£' | ' '))
                .collect();
            // a comma separates thousands only (1,234.56): a decimal comma
            // (1,50 or 1.234,56) would read as another amount
            let whole = t.split('.').next().unwrap_or("");
            let whole = whole.trim_start_matches(['-', '+']);
            if t.contains(',') {
                let mut groups = whole.split(',');
                let first = groups.next().unwrap_or("");
                let grouped = (1..=3).contains(&first.len())
                    && groups.all(|g| g.len() == 3)
                    && !t.split('.').skip(1).any(|f| f.contains(','));
                if !grouped {
                    return Err(format!(
                        "{v:?} is not a decimal amount: a comma separates thousands only (1,234.56); \
                         a decimal comma is not read"
                    ));
                }
            }
            parse_decimal(&t.replace(',', ""))
                .ok_or_else(|| format!("{v:?} is not a decimal amount"))?
                .to_string()
        }
        Transform::Date => {
            // (`get`: the tenth byte may fall inside a character)
            let d = if let Some(head) = v.get(..10).filter(|h| h.as_bytes()[4] == b'-') {
                head.to_string()
            } else if let [m, d, y] = v.split('/').collect::<Vec<_>>().as_slice() {
                format!("{y:0>4}-{m:0>2}-{d:0>2}")
            } else {
                v.to_string()
            };
            edge::time::Timestamp::parse_date(&d).map_err(|_| format!("{v:?} is not a date"))?;
            d
        }
    })
}

impl Field {
    /// The value of the field on a row: `None` when empty.
    fn get(&self, row: &csv::StringRecord) -> std::result::Result<Option<String>, String> {
        let raw = match &self.source {
            Source::Column(i, _) => row.get(*i).unwrap_or("").trim().to_string(),
            Source::Value(v) => v.clone(),
        };
        let v = if raw.is_empty() {
            match &self.default {
                Some(d) => d.clone(),
                None => return Ok(None),
            }
        } else {
            raw
        };
        let col = match &self.source {
            Source::Column(_, c) => format!("column {c:?}"),
            Source::Value(_) => "value".to_string(),
        };
        let v = match self.transform {
            Some(t) => apply(t, &v).map_err(|e| format!("`{}` ({col}): {e}", self.name))?,
            None => v,
        };
        match &self.map {
            None => Ok(Some(v)),
            Some(m) => match m.get(&v).or_else(|| m.get(&v.to_lowercase())) {
                Some(x) if x.is_empty() => Ok(None),
                Some(x) => Ok(Some(x.clone())),
                None => Err(format!(
                    "`{}` ({col}): {v:?} is not in the mapping's `map` ({})",
                    self.name,
                    m.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            },
        }
    }

    fn need(&self, row: &csv::StringRecord) -> std::result::Result<String, String> {
        self.get(row)?.ok_or_else(|| {
            format!(
                "`{}` is empty{}",
                self.name,
                match &self.source {
                    Source::Column(_, c) => format!(" (column {c:?})"),
                    Source::Value(_) => String::new(),
                }
            )
        })
    }

    fn id(&self, row: &csv::StringRecord) -> std::result::Result<String, String> {
        let v = self.need(row)?;
        if valid_id(&v) {
            Ok(v)
        } else {
            Err(format!(
                "`{}` {v:?} is not [A-Za-z0-9_-]{{1,64}} (transform = \"slug\" makes one)",
                self.name
            ))
        }
    }
}

/// An opening balance read from a row.
#[derive(Clone, Debug, PartialEq)]
pub struct Balance {
    pub partner: String,
    pub program: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub as_of_day: i64,
    pub line: u64,
}

/// What one row gives.
#[derive(Default)]
struct RowOut {
    records: Vec<Record>,
    balance: Option<Balance>,
    payee: Option<(String, crate::payout_files::Payee)>,
}

fn record(v: serde_json::Value) -> std::result::Result<Record, String> {
    let r: Record = serde_json::from_value(v).map_err(|e| e.to_string())?;
    crate::import::validate(&r)?;
    Ok(r)
}

impl Mapping {
    fn row(&self, row: &csv::StringRecord, line: u64) -> std::result::Result<RowOut, String> {
        let mut out = RowOut::default();
        if let Some(p) = &self.partner {
            let id = p.id.id(row)?;
            let program = p.program.id(row)?;
            let status = match &p.status {
                Some(f) => f.get(row)?.unwrap_or_else(|| "approved".into()),
                None => "approved".into(),
            };
            if !matches!(
                status.as_str(),
                "applied" | "approved" | "suspended" | "rejected"
            ) {
                return Err(format!(
                    "`partner.status` {status:?} is not applied, approved, suspended or rejected (map the platform's statuses with `map`)"
                ));
            }
            let opt = |f: &Option<Field>| -> std::result::Result<Option<String>, String> {
                match f {
                    Some(f) => f.get(row),
                    None => Ok(None),
                }
            };
            let parent = opt(&p.parent)?;
            if let Some(pa) = &parent {
                if !valid_id(pa) {
                    return Err(format!(
                        "`partner.parent` {pa:?} is not [A-Za-z0-9_-]{{1,64}}"
                    ));
                }
            }
            let currency = opt(&p.currency)?;
            if let Some(c) = &currency {
                Currency::parse(c)
                    .ok_or_else(|| format!("`partner.currency` {c:?} is not a currency"))?;
            }
            out.records.push(record(serde_json::json!({
                "type": "partner",
                "id": id,
                "program": program,
                "status": status,
                "tier": opt(&p.tier)?,
                "parent": parent,
                "currency": currency,
            }))?);
        }
        if let Some(c) = &self.coupon {
            // a partner without a coupon has an empty cell
            if let Some(code) = c.code.get(row)? {
                if !valid_id(&code) {
                    return Err(format!(
                        "`coupon.code` {code:?} is not [A-Za-z0-9_-]{{1,64}}"
                    ));
                }
                out.records.push(record(serde_json::json!({
                    "type": "coupon",
                    "code": code,
                    "partner": c.partner.id(row)?,
                    "program": c.program.id(row)?,
                }))?);
            }
        }
        if let Some(b) = &self.balance {
            if let Some(a) = b.amount.get(row)? {
                let amount = parse_decimal(&a)
                    .ok_or_else(|| format!("`balance.amount` {a:?} is not a decimal amount"))?;
                if !amount.is_zero() {
                    let cur = b.currency.need(row)?;
                    let currency = Currency::parse(&cur)
                        .ok_or_else(|| format!("`balance.currency` {cur:?} is not a currency"))?;
                    // `cents` counts the currency's minor units: 45210 is
                    // 452.10 USD, 45210 JPY, 45.210 KWD (`apply` read it
                    // as hundredths, knowing no currency)
                    let amount = if matches!(b.amount.transform, Some(Transform::Cents)) {
                        use rust_decimal::prelude::ToPrimitive;
                        let minor = (amount * Decimal::ONE_HUNDRED)
                            .to_i64()
                            .ok_or_else(|| format!("`balance.amount` {a:?} is too large"))?;
                        currency.from_minor(minor, currency.minor_units())
                    } else {
                        amount
                    };
                    let d = b.as_of.need(row)?;
                    let day = edge::time::Timestamp::parse_date(&d)
                        .map_err(|_| format!("`balance.as_of` {d:?} is not a YYYY-MM-DD date"))?
                        .day();
                    out.balance = Some(Balance {
                        partner: b.partner.id(row)?,
                        program: b.program.id(row)?,
                        amount,
                        currency,
                        as_of_day: day,
                        line,
                    });
                }
            }
        }
        if let Some(m) = &self.payout {
            let opt = |f: &Option<Field>| -> std::result::Result<Option<String>, String> {
                match f {
                    Some(f) => f.get(row),
                    None => Ok(None),
                }
            };
            let check = |v: Option<String>,
                         name: &str,
                         f: fn(&str) -> std::result::Result<String, String>|
             -> std::result::Result<Option<String>, String> {
                v.map(|v| f(&v).map_err(|e| format!("`payout.{name}` {e}")))
                    .transpose()
            };
            let iban = check(opt(&m.iban)?, "iban", crate::payout_files::iban)?;
            let paypal_email = check(
                opt(&m.paypal_email)?,
                "paypal_email",
                crate::payout_files::email,
            )?;
            // a row without a way to pay gives no payout details
            if iban.is_some() || paypal_email.is_some() {
                let id = m.id.id(row)?;
                let bic = check(opt(&m.bic)?, "bic", crate::payout_files::bic)?;
                let legal_name = check(
                    opt(&m.legal_name)?,
                    "legal_name",
                    crate::payout_files::legal_name,
                )?;
                let (iban, bic) = match (iban, bic) {
                    (Some(i), Some(b)) if legal_name.is_some() => (Some(i), Some(b)),
                    (Some(_), _) if paypal_email.is_none() => {
                        return Err(
                            "`payout.iban` needs `payout.bic` and `payout.legal_name`".into()
                        )
                    }
                    // bank details incomplete: PayPal only
                    _ => (None, None),
                };
                out.payee = Some((
                    id,
                    crate::payout_files::Payee {
                        legal_name,
                        iban,
                        bic,
                        paypal_email,
                    },
                ));
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- import

#[derive(Debug, Default, Clone)]
pub struct CsvReport {
    pub rows: u64,
    pub counts: ImportCounts,
    pub balances_new: u64,
    pub balances_known: u64,
    /// Stored ones replaced by a different balance before any closed
    /// period booked them.
    pub balances_replaced: u64,
    /// Known ones a closed period booked, left as booked though the file
    /// differs.
    pub balances_frozen: u64,
    pub rejected: u64,
    pub rejects_path: Option<PathBuf>,
    /// Partners with payout details, and where they were written.
    pub payout_details: Option<(usize, Option<PathBuf>)>,
}

impl CsvReport {
    /// The command's summary of importing `file`.
    pub fn lines(&self, file: &Path) -> Vec<String> {
        let f = file.display();
        let mut v = vec![format!(
            "{f}: {} rows: {} partner and coupon lines, {} new opening balances, {} already known{}{}{}",
            self.rows,
            self.counts.registry,
            self.balances_new,
            self.balances_known,
            match self.balances_frozen {
                0 => String::new(),
                n => format!(
                    " ({n} differ from the file but a closed period booked them: left as booked)"
                ),
            },
            match self.balances_replaced {
                0 => String::new(),
                n => format!(", {n} replaced (not yet booked in a closed period)"),
            },
            match &self.rejects_path {
                Some(p) => format!(", {} bad rows set aside in {}", self.rejected, p.display()),
                None => String::new(),
            }
        )];
        match &self.payout_details {
            Some((n, Some(p))) => v.push(format!(
                "{f}: payout details of {n} partners written to {} (append to programs.toml)",
                p.display()
            )),
            Some((n, None)) => v.push(format!(
                "{f}: payout details of {n} partners checked (--payout-details OUT.toml writes them)"
            )),
            None => {}
        }
        v
    }
}

pub struct CsvOptions {
    pub skip_invalid: bool,
    pub rejects: Option<PathBuf>,
    /// Where the mapping's `[payout]` details go, as `[[payout.partners]]`
    /// tables for programs.toml; without it they are only checked.
    pub payout_details: Option<PathBuf>,
}

/// Imports one CSV file through the mapping, in one transaction.
pub fn import_csv(
    store: &mut Store,
    map: &Loaded,
    path: &Path,
    opts: &CsvOptions,
) -> Result<CsvReport> {
    let file = path.display().to_string();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| file.clone());
    let f =
        std::fs::File::open(path).map_err(|e| Error::Usage(format!("{file}: cannot open: {e}")))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::Usage(format!(
            "{file}: is a directory: import --map takes a CSV file"
        )));
    }
    let mut rd = csv::ReaderBuilder::new()
        .delimiter(map.delimiter()?)
        .flexible(true)
        .from_reader(std::io::BufReader::new(f));
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| Error::data(format!("{file}:1: {e}")))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let mapping = map.bind(&header, &file)?;
    let mut report = CsvReport::default();
    // rows set aside as read, bytes and all (a row that is not UTF-8 too)
    let mut rejects: Vec<csv::ByteRecord> = Vec::new();
    let mut balances: Vec<Balance> = Vec::new();
    let mut payees: BTreeMap<String, crate::payout_files::Payee> = BTreeMap::new();
    let tx = store
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut ins = Inserter::new(&tx, &store.ids)?;
        let mut raw = csv::ByteRecord::new();
        loop {
            let more = rd.read_byte_record(&mut raw).map_err(|e| {
                Error::data(format!("{file}: {e}; nothing imported from this file"))
            })?;
            if !more {
                break;
            }
            let line = raw.position().map_or(0, |p| p.line());
            // blank: white space only (as text, so a no-break space too)
            if raw.iter().all(|c| {
                std::str::from_utf8(c).map_or(c.trim_ascii().is_empty(), |t| t.trim().is_empty())
            }) {
                continue;
            }
            report.rows += 1;
            // a row that is not UTF-8 (an export saved as Latin-1) is a bad
            // row like any other: named, and set aside with --skip-invalid
            let row = match csv::StringRecord::from_byte_record(std::mem::take(&mut raw)) {
                Ok(row) => row,
                Err(e) => {
                    let field = header
                        .get(e.utf8_error().field())
                        .map(|h| format!(" `{h}`"))
                        .unwrap_or_default();
                    let why = format!("field{field} is not UTF-8 text (save the export as UTF-8)");
                    if !opts.skip_invalid {
                        return Err(Error::data(format!(
                            "{file}:{line}: {why}; nothing imported from this file (use --skip-invalid to set bad rows aside)"
                        )));
                    }
                    eprintln!("{file}:{line}: skipped: {why}");
                    rejects.push(e.into_byte_record());
                    report.rejected += 1;
                    continue;
                }
            };
            let res = if row.len() != header.len() {
                Err(format!(
                    "{} fields, the header has {}",
                    row.len(),
                    header.len()
                ))
            } else {
                mapping.row(&row, line)
            };
            // two balances of one partner in one file: both owed, or one a
            // correction? The file must say (the second silently replaced
            // the first)
            // The same balance repeated (an export with a row per coupon
            // repeats it on each) is one balance.
            let res = res.and_then(|mut out| {
                let first = out.balance.as_ref().and_then(|b| {
                    balances
                        .iter()
                        .find(|x| x.program == b.program && x.partner == b.partner)
                        .map(|f| (f, f.amount == b.amount && f.currency == b.currency && f.as_of_day == b.as_of_day))
                });
                match first {
                    Some((_, true)) => {
                        out.balance = None;
                        Ok(out)
                    }
                    Some((f, false)) => Err(format!(
                        "a second, different opening balance of partner {} in program {} (the first is on line {}): one balance a partner in a file",
                        f.partner, f.program, f.line
                    )),
                    None => Ok(out),
                }
            });
            match res {
                Ok(out) => {
                    for r in &out.records {
                        ins.insert(r, &mut report.counts)?;
                    }
                    balances.extend(out.balance);
                    if let Some((id, p)) = out.payee {
                        payees.insert(id, p);
                    }
                }
                Err(e) if opts.skip_invalid => {
                    eprintln!("{file}:{line}: skipped: {e}");
                    rejects.push(row.as_byte_record().clone());
                    report.rejected += 1;
                }
                Err(e) => {
                    return Err(Error::data(format!(
                        "{file}:{line}: {e}; nothing imported from this file (use --skip-invalid to set bad rows aside)"
                    )));
                }
            }
        }
        ins.finish()?;
    }
    // booked in the period of the day after the balance's as-of date (the
    // next month for a month-end date), or the first open one (after the
    // last closed) when that is later
    for b in &balances {
        // one opening balance per partner and platform: a re-downloaded or
        // renamed export adds nothing
        let id = prefixed_id("ob_", &[&mapping.source, &b.program, &b.partner]);
        let closed: Option<i64> = tx.query_row(
            "SELECT MAX(period) FROM periods WHERE state = 'closed'",
            [],
            |r| r.get(0),
        )?;
        let p = {
            let after = Period::of_day(b.as_of_day + 1);
            match closed {
                Some(k) => after.max(Period::from_key(k).next()),
                None => after,
            }
        };
        // a balance a closed period booked is frozen; one not booked yet is
        // replaced by a corrected export (a wrong currency or program would
        // otherwise stop every run for good)
        let stored: Option<(String, String, i64)> = tx
            .query_row(
                "SELECT amount, currency, as_of FROM opening_balances WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let same = stored.as_ref().is_some_and(|(a, c, d)| {
            parse_decimal(a) == Some(b.amount) && c == b.currency.code() && *d == b.as_of_day
        });
        let frozen = stored.is_some()
            && !same
            && {
                let closed_until = closed.map_or(0, |k| pos_base(Period::from_key(k).next()));
                let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM ledger WHERE reason LIKE 'opening_balance:%' AND id = ?1 AND pos < ?2",
                params![prefixed_id("le_", &["opening_balance", &id]), closed_until],
                |r| r.get(0),
            )?;
                n > 0
            };
        if same || frozen {
            report.balances_known += 1;
            if frozen {
                report.balances_frozen += 1;
            }
            continue;
        }
        tx.execute(
            "INSERT INTO opening_balances (id, partner, program, amount, currency, as_of, source, line, period)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET amount = excluded.amount, currency = excluded.currency,
               as_of = excluded.as_of, source = excluded.source, line = excluded.line,
               period = excluded.period",
            params![
                id,
                b.partner,
                b.program,
                b.amount.to_string(),
                b.currency.code(),
                b.as_of_day,
                format!("{name} ({})", mapping.source),
                b.line as i64,
                p.key()
            ],
        )?;
        if stored.is_none() {
            report.balances_new += 1;
        } else {
            report.balances_replaced += 1;
        }
    }
    if !rejects.is_empty() {
        let rp = opts.rejects.clone().unwrap_or_else(|| {
            let mut s = path.as_os_str().to_owned();
            s.push(".rejects.csv");
            PathBuf::from(s)
        });
        let exists = rp.exists();
        // the bad rows it holds already: importing a file again sets its
        // bad rows aside once (review22 F12)
        let mut held: std::collections::HashSet<Vec<Vec<u8>>> = std::collections::HashSet::new();
        if exists {
            let mut rd = csv::ReaderBuilder::new()
                .delimiter(mapping.delimiter)
                .has_headers(true)
                .flexible(true)
                .from_path(&rp)
                .map_err(|e| Error::data(format!("{}: {e}", rp.display())))?;
            for r in rd.byte_records() {
                let r = r.map_err(|e| Error::data(format!("{}: {e}", rp.display())))?;
                held.insert(r.iter().map(<[u8]>::to_vec).collect());
            }
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&rp)
            .map_err(|e| Error::io(&rp, e))?;
        let mut w = csv::WriterBuilder::new()
            .delimiter(mapping.delimiter)
            .from_writer(f);
        let werr = |e: csv::Error| Error::data(format!("{}: {e}", rp.display()));
        if !exists {
            w.write_record(&header).map_err(werr)?;
        }
        for r in &rejects {
            if held.insert(r.iter().map(<[u8]>::to_vec).collect()) {
                w.write_record(r).map_err(werr)?;
            }
        }
        w.flush().map_err(|e| Error::io(&rp, e))?;
        report.rejects_path = Some(rp);
    }
    if mapping.payout.is_some() {
        if let Some(pp) = &opts.payout_details {
            let text = payout_toml(&name, &mapping.source, &payees);
            crate::report::write_atomic(pp, text.as_bytes())?;
        }
        report.payout_details = Some((payees.len(), opts.payout_details.clone()));
    }
    tx.commit()?;
    Ok(report)
}

/// `[[payout.partners]]` tables for programs.toml, sorted by partner id.
fn payout_toml(
    file: &str,
    source: &str,
    payees: &BTreeMap<String, crate::payout_files::Payee>,
) -> String {
    // TOML basic strings: the JSON escapes are valid TOML escapes
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut t = format!(
        "# Partners' payout details from {file} ({source}): append to programs.toml\n\
         # (docs/settlement.md, Payout details).\n"
    );
    for (id, p) in payees {
        t.push_str(&format!("\n[[payout.partners]]\nid = {}\n", q(id)));
        for (k, v) in [
            ("legal_name", &p.legal_name),
            ("iban", &p.iban),
            ("bic", &p.bic),
            ("paypal_email", &p.paypal_email),
        ] {
            if let Some(v) = v {
                t.push_str(&format!("{k} = {}\n", q(v)));
            }
        }
    }
    t
}

// ---------------------------------------------------------------- run

/// An opening balance as its entry books it: half-even to the currency's
/// minor unit (for `run`, and for `close`'s comparison with the draft).
fn booked_amount(
    amount: rust_decimal::Decimal,
    cur: edge::currency::Currency,
) -> rust_decimal::Decimal {
    crate::money::norm(amount.round_dp_with_strategy(
        cur.minor_units(),
        rust_decimal::RoundingStrategy::MidpointNearestEven,
    ))
}

/// The first opening balance (its partner) that period `p`'s draft booked
/// at another amount than the one stored now: a corrected export imported
/// after the run replaced it (a balance no closed period has booked is
/// replaced). Closing that draft would freeze the old amount for good.
pub fn replaced_since_draft(store: &Store, p: Period) -> Result<Option<String>> {
    let mut drafted: std::collections::HashMap<String, String> = Default::default();
    {
        let mut st = store.conn.prepare(
            "SELECT id, amount FROM ledger
             WHERE pos >= ?1 AND pos < ?2 AND reason LIKE 'opening_balance:%'",
        )?;
        let mut rows = st.query([pos_base(p), pos_base(p.next())])?;
        while let Some(r) = rows.next()? {
            drafted.insert(r.get(0)?, r.get(1)?);
        }
    }
    if drafted.is_empty() {
        return Ok(None);
    }
    let mut st = store.conn.prepare(
        "SELECT id, partner, amount, currency FROM opening_balances ORDER BY partner, id",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let Some(booked) = drafted.get(&prefixed_id("le_", &["opening_balance", &id])) else {
            continue;
        };
        let (amount, cur): (String, String) = (r.get(2)?, r.get(3)?);
        let now = match (
            parse_decimal(&amount),
            edge::currency::Currency::parse(&cur),
        ) {
            (Some(a), Some(c)) => crate::money::fmt_decimal(booked_amount(a, c), c),
            _ => amount,
        };
        if &now != booked {
            return Ok(Some(r.get(1)?));
        }
    }
    Ok(None)
}

/// The opening balances booked in period `p`, as `adjustment` entries
/// (reason `opening_balance:<file>`), for `run`: those whose period (the
/// first open one after their as-of date, fixed at import) is `p`, and,
/// when `p` is the first open period, those of earlier periods, unless a
/// closed period's ledger has them. So a balance whose own period was
/// closed without it is booked by the first open period, never twice, and
/// a stray draft of a later month (a mistyped `--period 2027-06`) never
/// takes the balances of the months before it.
pub fn opening_entries(store: &Store, cfg: &Config, p: Period) -> Result<Vec<Entry>> {
    // the first open period: after the last closed one, else the first
    // with a draft (or `p`)
    let first_open = match store.last_closed()? {
        Some(h) => h.next(),
        None => {
            let k: Option<i64> =
                store
                    .conn
                    .query_row("SELECT MIN(period) FROM periods", [], |r| r.get(0))?;
            k.map_or(p, |k| Period::from_key(k).min(p))
        }
    };
    let due: i64 = store.conn.query_row(
        "SELECT COUNT(*) FROM opening_balances WHERE period = ?1 OR (?2 AND period < ?1)",
        rusqlite::params![p.key(), p == first_open],
        |r| r.get(0),
    )?;
    if due == 0 {
        return Ok(Vec::new());
    }
    let mut booked = std::collections::HashSet::new();
    {
        let closed_until = store.last_closed()?.map_or(0, |h| pos_base(h.next()));
        let mut st = store
            .conn
            .prepare("SELECT id FROM ledger WHERE reason LIKE 'opening_balance:%' AND pos < ?1")?;
        let mut rows = st.query([closed_until])?;
        while let Some(r) = rows.next()? {
            booked.insert(r.get::<_, String>(0)?);
        }
    }
    let mut st = store.conn.prepare(
        "SELECT id, partner, program, amount, currency, as_of, source, line FROM opening_balances
         WHERE period = ?1 OR (?2 AND period < ?1) ORDER BY partner, program, id",
    )?;
    let mut rows = st.query(rusqlite::params![p.key(), p == first_open])?;
    let mut v = Vec::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let partner: String = r.get(1)?;
        let program: String = r.get(2)?;
        let amount_s: String = r.get(3)?;
        let cur_s: String = r.get(4)?;
        let as_of: i64 = r.get(5)?;
        let source: String = r.get(6)?;
        let line: i64 = r.get(7)?;
        let entry_id = prefixed_id("le_", &["opening_balance", &id]);
        if booked.contains(&entry_id) {
            continue;
        }
        let file = source.split(" (").next().unwrap_or(&source).to_string();
        let prog = cfg.program(&program).ok_or_else(|| {
            Error::data(format!(
                "{file}:{line}: the opening balance of {partner} is for program {program:?}, which {} does not define",
                cfg.path.display()
            ))
        })?;
        let amount = parse_decimal(&amount_s)
            .ok_or_else(|| Error::data(format!("opening balance {id}: bad amount in the store")))?;
        if cur_s != prog.currency.code() {
            return Err(Error::data(format!(
                "{file}:{line}: the opening balance of {partner} is in {cur_s}, program {program} pays in {}",
                prog.currency
            )));
        }
        let rounded = booked_amount(amount, prog.currency);
        v.push(Entry {
            id: entry_id,
            period: p,
            partner: partner.clone(),
            program,
            kind: EntryKind::Adjustment,
            amount: rounded,
            currency: prog.currency,
            rule: "-".into(),
            sources: Vec::new(),
            event_day: as_of,
            reason: format!("opening_balance:{file}"),
            calc: format!(
                "opening balance of {partner} as of {} carried over from {source}, line {line}: {} {}",
                date_of_day(as_of),
                fmt_decimal(rounded, prog.currency),
                prog.currency
            ),
            adjusts: String::new(),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms() {
        assert_eq!(apply(Transform::Cents, "1999").unwrap(), "19.99");
        assert_eq!(apply(Transform::Cents, "-5").unwrap(), "-0.05");
        assert!(apply(Transform::Cents, "19.99").is_err());
        assert_eq!(apply(Transform::Decimal, "$1,234.50").unwrap(), "1234.50");
        assert!(apply(Transform::Decimal, "1.2e3").is_err());
        assert_eq!(
            apply(Transform::Decimal, "-1,234,567.5").unwrap(),
            "-1234567.5"
        );
        assert_eq!(apply(Transform::Decimal, "€ 950").unwrap(), "950");
        // a decimal comma is refused, not read as another amount
        for v in ["1,50", "1.234,56", "12,3456", ",5", "1,,234", "1.5,000"] {
            let e = apply(Transform::Decimal, v).unwrap_err();
            assert!(e.contains("is not a decimal amount"), "{v}: {e}");
        }
        // one sign at most
        assert_eq!(apply(Transform::Cents, "+500").unwrap(), "5.00");
        for v in ["+-500", "--5", "-+5", "-"] {
            assert!(apply(Transform::Cents, v).is_err(), "{v}");
        }
        assert_eq!(
            apply(Transform::Slug, "Anna Schmidt").unwrap(),
            "Anna-Schmidt"
        );
        assert_eq!(
            apply(Transform::Date, "2026-10-31T12:00:00Z").unwrap(),
            "2026-10-31"
        );
        assert_eq!(apply(Transform::Date, "10/31/2026").unwrap(), "2026-10-31");
        assert!(apply(Transform::Date, "31.10.2026").is_err());
        // a character across the tenth byte: not a date, and no panic
        for v in ["2026-1-31日", "2026-10-3€", "2026-€"] {
            assert!(apply(Transform::Date, v).is_err(), "{v}");
        }
    }
}
