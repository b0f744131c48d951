//! Deal registration and market-development funds (MDF), pure rules: the
//! inputs of partners and operators, deal expiry, quarters, and money in
//! integer minor units so that budgets are checked exactly in SQL.

use crate::admin::{currency_field, short_text, valid_host};
use crate::currency::Currency;
use crate::dest::parse_http_url;
use crate::fields::{FieldError, Obj};
use crate::ids::is_valid_ref;
use crate::partner::{actor, id_field, opt_id, parse_when, req_text};
use crate::postback::parse_decimal;
use crate::time::Timestamp;
use rust_decimal::Decimal;

const DAY_MS: i64 = 86_400_000;

/// `POST /partner/v1/deals`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DealInput {
    pub program: String,
    pub customer: String,
    pub company: Option<String>,
    pub domain: Option<String>,
    pub value: Option<Decimal>,
    pub currency: Option<Currency>,
    pub expected_close: Option<String>,
}

/// A customer's domain: a host name, or a URL whose host is taken; lower
/// case, without a trailing dot or a leading `www.`.
pub fn normalize_domain(s: &str) -> Option<String> {
    let s = s.trim();
    let host = if s.contains("://") {
        parse_http_url(s).ok()?.host_str()?.to_string()
    } else {
        s.to_string()
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    (host.contains('.') && !host.starts_with("*.") && valid_host(&host)).then_some(host)
}

/// What makes two registrations "the same customer": case and surrounding
/// space do not count.
pub fn customer_key(customer: &str) -> String {
    customer.trim().to_lowercase()
}

impl DealInput {
    pub fn parse(body: &[u8]) -> Result<DealInput, FieldError> {
        let o = Obj::parse(
            body,
            &[
                "program",
                "customer",
                "company",
                "domain",
                "value",
                "currency",
                "expected_close",
                "partner",
            ],
        )?;
        let customer = o.req_str("customer")?.trim();
        if !is_valid_ref(customer) {
            return Err(FieldError::new(
                "customer",
                "1 to 128 characters, no control characters",
            ));
        }
        let domain = match o.str("domain")? {
            None | Some("") => None,
            Some(d) => Some(
                normalize_domain(d)
                    .ok_or_else(|| FieldError::new("domain", "not a domain name"))?,
            ),
        };
        let value = o
            .str("value")?
            .filter(|v| !v.is_empty())
            .map(|v| parse_decimal("value", v, false))
            .transpose()?;
        let currency = currency_field(&o, "currency")?;
        if value.is_some() && currency.is_none() {
            return Err(FieldError::new("currency", "required with a value"));
        }
        let expected_close = match o.str("expected_close")? {
            None | Some("") => None,
            Some(d) => Some(
                Timestamp::parse_date(d)
                    .map_err(|_| FieldError::new("expected_close", "a YYYY-MM-DD date"))?
                    .date_string(),
            ),
        };
        Ok(DealInput {
            program: id_field(&o, "program")?.to_string(),
            customer: customer.to_string(),
            company: short_text(&o, "company", 200)?.filter(|c| !c.is_empty()),
            domain,
            value,
            currency,
            expected_close,
        })
    }
}

/// When a registration made at `created_ms` expires.
pub fn deal_expires_ms(created_ms: i64, deal_days: u32) -> i64 {
    created_ms + i64::from(deal_days) * DAY_MS
}

/// `{"decision":"approve"|"reject","reason","actor"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub approve: bool,
    pub reason: Option<String>,
    pub actor: String,
}

impl Decision {
    pub fn parse(body: &[u8]) -> Result<Decision, FieldError> {
        let o = Obj::parse(body, &["decision", "reason", "actor"])?;
        let approve = match o.req_str("decision")? {
            "approve" | "approved" => true,
            "reject" | "rejected" => false,
            _ => return Err(FieldError::new("decision", "approve or reject")),
        };
        Ok(Decision {
            approve,
            reason: short_text(&o, "reason", 500)?.filter(|r| !r.trim().is_empty()),
            actor: actor(&o)?,
        })
    }
}

// ---- Money ------------------------------------------------------------------

/// An amount in the currency's minor units (cents); more decimals than the
/// currency has, or more than 2^53 minor units, is an error.
pub fn to_minor(field: &str, amount: Decimal, currency: Currency) -> Result<i64, FieldError> {
    let too_large = || FieldError::new(field, "too large");
    let scaled = amount
        .checked_mul(Decimal::from(10i64.pow(currency.minor_units())))
        .ok_or_else(too_large)?;
    if !scaled.fract().is_zero() {
        return Err(FieldError::new(
            field,
            format!(
                "at most {} decimals in {}",
                currency.minor_units(),
                currency.code()
            ),
        ));
    }
    let mut whole = scaled.trunc();
    whole.rescale(0);
    let v = whole.mantissa();
    if v.abs() > 1i128 << 53 {
        return Err(too_large());
    }
    Ok(v as i64)
}

/// Minor units back to a decimal string with the currency's scale.
pub fn from_minor(minor: i64, currency: Currency) -> String {
    let mut d = Decimal::new(minor, currency.minor_units());
    d.rescale(currency.minor_units());
    d.to_string()
}

/// A positive amount with its currency, in minor units too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount: Decimal,
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn text(&self) -> String {
        from_minor(self.minor, self.currency)
    }
}

fn money(o: &Obj, currency: Currency) -> Result<Money, FieldError> {
    let amount = parse_decimal("amount", o.req_str("amount")?, false)?;
    if amount.is_zero() {
        return Err(FieldError::new("amount", "must be more than 0"));
    }
    Ok(Money {
        amount,
        minor: to_minor("amount", amount, currency)?,
        currency,
    })
}

fn req_currency(o: &Obj) -> Result<Currency, FieldError> {
    currency_field(o, "currency")?.ok_or_else(|| FieldError::new("currency", "required"))
}

// ---- MDF ----------------------------------------------------------------------

/// `2026-Q4`, the quarter of an instant.
pub fn quarter_of(t: Timestamp) -> String {
    let (y, m, _) = t.ymd();
    format!("{y:04}-Q{}", (m - 1) / 3 + 1)
}

pub fn valid_quarter(q: &str) -> bool {
    let b = q.as_bytes();
    b.len() == 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && &b[4..6] == b"-Q"
        && (b'1'..=b'4').contains(&b[6])
}

/// `PUT /api/mdf/budgets/{id}`: for one partner, or for a tier (a pool that
/// the program's partners of that tier share), for one quarter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub id: String,
    pub program: String,
    pub partner: Option<String>,
    pub tier: Option<String>,
    pub quarter: String,
    pub money: Money,
}

impl Budget {
    pub fn parse(id: &str, body: &[u8]) -> Result<Budget, FieldError> {
        if !crate::ids::is_valid_id(id) {
            return Err(FieldError::new("id", crate::partner::ID_REASON));
        }
        let o = Obj::parse(
            body,
            &[
                "program", "partner", "tier", "quarter", "amount", "currency",
            ],
        )?;
        let partner = opt_id(&o, "partner")?;
        let tier = opt_id(&o, "tier")?;
        if partner.is_some() == tier.is_some() {
            return Err(FieldError::new(
                "partner",
                "give a partner or a tier, not both",
            ));
        }
        let quarter = o.req_str("quarter")?;
        if !valid_quarter(quarter) {
            return Err(FieldError::new("quarter", "like 2026-Q4"));
        }
        let currency = req_currency(&o)?;
        Ok(Budget {
            id: id.to_string(),
            program: id_field(&o, "program")?.to_string(),
            partner,
            tier,
            quarter: quarter.to_string(),
            money: money(&o, currency)?,
        })
    }
}

/// `POST /partner/v1/mdf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdfRequest {
    pub program: String,
    pub activity: String,
    pub money: Money,
}

impl MdfRequest {
    pub fn parse(body: &[u8]) -> Result<MdfRequest, FieldError> {
        let o = Obj::parse(
            body,
            &["program", "activity", "amount", "currency", "partner"],
        )?;
        let currency = req_currency(&o)?;
        Ok(MdfRequest {
            program: id_field(&o, "program")?.to_string(),
            activity: req_text(&o, "activity", 500)?,
            money: money(&o, currency)?,
        })
    }
}

/// `POST /partner/v1/mdf/{id}/claim`: in the request's currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub money: Money,
    pub proof_url: String,
}

impl Claim {
    pub fn parse(body: &[u8], currency: Currency) -> Result<Claim, FieldError> {
        let o = Obj::parse(body, &["amount", "proof_url", "currency", "partner"])?;
        if let Some(c) = currency_field(&o, "currency")? {
            if c != currency {
                return Err(FieldError::new(
                    "currency",
                    format!("a claim is in the request's currency, {}", currency.code()),
                ));
            }
        }
        let proof_url = o.req_str("proof_url")?;
        parse_http_url(proof_url).map_err(|e| FieldError::new("proof_url", e.reason()))?;
        Ok(Claim {
            money: money(&o, currency)?,
            proof_url: proof_url.to_string(),
        })
    }
}

/// The quarter a time string (RFC 3339) falls in, for requests read back.
pub fn quarter_of_text(s: &str) -> Option<String> {
    parse_when(s).map(quarter_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deals() {
        let d = DealInput::parse(
            br#"{"program":"p","customer":"acct_55","company":"Acme","domain":"https://www.Acme.com/x","value":"12000.00","currency":"EUR","expected_close":"2026-12-15"}"#,
        )
        .unwrap();
        assert_eq!(d.domain.as_deref(), Some("acme.com"));
        assert_eq!(d.value.unwrap().to_string(), "12000.00");
        assert_eq!(customer_key(" ACME Corp "), "acme corp");
        let cases: &[(&[u8], &str)] = &[
            (br#"{"program":"p"}"#, "customer"),
            (
                br#"{"program":"p","customer":"c","value":"10"}"#,
                "currency",
            ),
            (
                br#"{"program":"p","customer":"c","value":"-1","currency":"USD"}"#,
                "value",
            ),
            (
                br#"{"program":"p","customer":"c","domain":"not a domain"}"#,
                "domain",
            ),
            (
                br#"{"program":"p","customer":"c","expected_close":"soon"}"#,
                "expected_close",
            ),
            (br#"{"customer":"c"}"#, "program"),
        ];
        for (body, field) in cases {
            assert_eq!(&DealInput::parse(body).unwrap_err().field, field);
        }
        assert_eq!(deal_expires_ms(0, 90), 90 * 86_400_000);
        assert!(
            Decision::parse(br#"{"decision":"approve"}"#)
                .unwrap()
                .approve
        );
        assert!(
            !Decision::parse(br#"{"decision":"reject","reason":"dup"}"#)
                .unwrap()
                .approve
        );
        assert_eq!(
            Decision::parse(br#"{"decision":"maybe"}"#)
                .unwrap_err()
                .field,
            "decision"
        );
    }

    #[test]
    fn money_in_minor_units() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(to_minor("a", Decimal::new(1250, 2), usd).unwrap(), 1250);
        assert_eq!(to_minor("a", Decimal::new(125, 1), usd).unwrap(), 1250);
        assert!(to_minor("a", Decimal::new(12501, 3), usd).is_err());
        assert_eq!(to_minor("a", Decimal::new(500, 0), jpy).unwrap(), 500);
        assert!(to_minor("a", Decimal::new(5001, 1), jpy).is_err());
        assert_eq!(from_minor(1250, usd), "12.50");
        assert_eq!(from_minor(7, usd), "0.07");
        assert_eq!(from_minor(500, jpy), "500");
        assert!(to_minor("a", Decimal::new(i64::MAX, 0), usd).is_err());
    }

    #[test]
    fn quarters_and_budgets() {
        let t = Timestamp::parse("2026-11-03T10:00:00Z").unwrap();
        assert_eq!(quarter_of(t), "2026-Q4");
        assert_eq!(
            quarter_of(Timestamp::parse("2026-01-01T00:00:00Z").unwrap()),
            "2026-Q1"
        );
        assert!(valid_quarter("2026-Q4") && !valid_quarter("2026-Q5") && !valid_quarter("26-Q1"));
        let b = Budget::parse(
            "b1",
            br#"{"program":"p","tier":"gold","quarter":"2026-Q4","amount":"5000","currency":"USD"}"#,
        )
        .unwrap();
        assert_eq!(b.money.minor, 500_000);
        assert_eq!(b.money.text(), "5000.00");
        let cases: &[(&[u8], &str)] = &[
            (br#"{"program":"p","quarter":"2026-Q4","amount":"1","currency":"USD"}"#, "partner"),
            (
                br#"{"program":"p","partner":"a","tier":"g","quarter":"2026-Q4","amount":"1","currency":"USD"}"#,
                "partner",
            ),
            (br#"{"program":"p","partner":"a","quarter":"Q4","amount":"1","currency":"USD"}"#, "quarter"),
            (br#"{"program":"p","partner":"a","quarter":"2026-Q4","amount":"0","currency":"USD"}"#, "amount"),
            (br#"{"program":"p","partner":"a","quarter":"2026-Q4","amount":"1.001","currency":"USD"}"#, "amount"),
            (br#"{"program":"p","partner":"a","quarter":"2026-Q4","amount":"1"}"#, "currency"),
        ];
        for (body, field) in cases {
            assert_eq!(&Budget::parse("b", body).unwrap_err().field, field);
        }
    }

    #[test]
    fn requests_and_claims() {
        let r = MdfRequest::parse(
            br#"{"program":"p","activity":"Trade show booth","amount":"1500.00","currency":"USD"}"#,
        )
        .unwrap();
        assert_eq!(r.money.minor, 150_000);
        assert_eq!(
            MdfRequest::parse(br#"{"program":"p","amount":"1","currency":"USD"}"#)
                .unwrap_err()
                .field,
            "activity"
        );
        let usd = Currency::parse("USD").unwrap();
        let c = Claim::parse(
            br#"{"amount":"900","proof_url":"https://files.example/i.pdf"}"#,
            usd,
        )
        .unwrap();
        assert_eq!(c.money.minor, 90_000);
        assert_eq!(
            Claim::parse(br#"{"amount":"9","proof_url":"file:///etc/passwd"}"#, usd)
                .unwrap_err()
                .field,
            "proof_url"
        );
        assert_eq!(
            Claim::parse(
                br#"{"amount":"9","proof_url":"https://x.example/","currency":"EUR"}"#,
                usd
            )
            .unwrap_err()
            .field,
            "currency"
        );
        assert_eq!(
            quarter_of_text("2026-05-01T00:00:00.000Z").as_deref(),
            Some("2026-Q2")
        );
    }
}
