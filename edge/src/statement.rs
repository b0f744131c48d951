//! Statements pushed by settlement (`POST /api/statements`) for the partner
//! portal: the rows of `statements.csv` (SPEC section 5), as CSV text or as
//! JSON, validated field by field.

use crate::currency::Currency;
use crate::fields::FieldError;
use crate::ids::is_valid_id;
use crate::postback::parse_decimal;
use serde_json::Value;

/// The columns of `statements.csv`, in order.
pub const COLUMNS: [&str; 11] = [
    "period",
    "partner",
    "program",
    "currency",
    "earned",
    "reversed",
    "adjusted",
    "carried_in",
    "pending",
    "payable",
    "carried_out",
];

/// Rows one request may carry.
pub const MAX_ROWS: usize = 500;

/// One statement row; every value is kept as validated text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row(pub [String; 11]);

impl Row {
    pub fn get(&self, col: &str) -> &str {
        COLUMNS
            .iter()
            .position(|c| *c == col)
            .and_then(|i| self.0.get(i))
            .map_or("", String::as_str)
    }
}

fn valid_period(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() == 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..].iter().all(u8::is_ascii_digit)
        && (1..=12).contains(&((b[5] - b'0') * 10 + (b[6] - b'0')))
}

fn row_error(line: usize, field: &str, reason: &str) -> FieldError {
    FieldError::new(field, format!("row {line}: {reason}"))
}

fn check(values: Vec<String>, line: usize) -> Result<Row, FieldError> {
    let values: [String; 11] = values
        .try_into()
        .map_err(|_| row_error(line, "body", "expected 11 columns"))?;
    if !valid_period(&values[0]) {
        return Err(row_error(line, "period", "like 2026-11"));
    }
    for i in [1, 2] {
        if !is_valid_id(&values[i]) {
            return Err(row_error(
                line,
                COLUMNS[i],
                "must match [A-Za-z0-9_-]{1,64}",
            ));
        }
    }
    let Some(currency) = Currency::parse(&values[3]) else {
        return Err(row_error(line, "currency", "unknown ISO 4217 currency"));
    };
    let mut values = values;
    for (i, v) in values.iter_mut().enumerate().skip(4) {
        let d = parse_decimal(COLUMNS[i], v, true)
            .map_err(|e| row_error(line, COLUMNS[i], &e.reason))?;
        // settlement rounds every figure to the currency (review26 L2)
        crate::deal::to_minor(COLUMNS[i], d, currency)
            .map_err(|e| row_error(line, COLUMNS[i], &e.reason))?;
        *v = d.to_string();
    }
    Ok(Row(values))
}

/// Splits one CSV line (RFC 4180 quotes; no line breaks inside fields).
fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            c => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return None;
    }
    out.push(cur);
    Some(out)
}

/// `statements.csv` text, with its header line.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, FieldError> {
    let mut lines = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = lines
        .next()
        .and_then(|(_, h)| split_csv(h))
        .ok_or_else(|| FieldError::new("body", "empty CSV"))?;
    if header.iter().map(|h| h.trim()).ne(COLUMNS.iter().copied()) {
        return Err(FieldError::new(
            "body",
            format!("the header must be {}", COLUMNS.join(",")),
        ));
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        if rows.len() == MAX_ROWS {
            return Err(FieldError::new(
                "body",
                format!("at most {MAX_ROWS} rows a request"),
            ));
        }
        let values =
            split_csv(line).ok_or_else(|| row_error(i + 1, "body", "unbalanced quotes"))?;
        rows.push(check(values, i + 1)?);
    }
    Ok(rows)
}

/// JSON: an array of row objects, or `{"rows": [...]}`; values are strings.
pub fn parse_json(body: &[u8]) -> Result<Vec<Row>, FieldError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| FieldError::new("body", "not valid JSON"))?;
    let items = match &v {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("rows") {
            Some(Value::Array(a)) if o.len() == 1 => a,
            _ => return Err(FieldError::new("rows", "an array of statement rows")),
        },
        _ => return Err(FieldError::new("body", "an array of statement rows")),
    };
    if items.len() > MAX_ROWS {
        return Err(FieldError::new(
            "rows",
            format!("at most {MAX_ROWS} rows a request"),
        ));
    }
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(row_error(i + 1, "rows", "must be an object"));
        };
        if let Some(k) = o.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
            return Err(row_error(i + 1, k, "unknown field"));
        }
        let mut values = Vec::with_capacity(11);
        for c in COLUMNS {
            match o.get(c) {
                Some(Value::String(s)) => values.push(s.clone()),
                _ => return Err(row_error(i + 1, c, "required, a string")),
            }
        }
        rows.push(check(values, i + 1)?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "period,partner,program,currency,earned,reversed,adjusted,carried_in,pending,payable,carried_out\r\n\
        2026-11,ib_7,fx-ib,USD,120.00,-10.00,0.00,0.00,20.00,90.00,20.00\r\n\
        \"2026-11\",ib_8,fx-ib,EUR,5,0,0,0,0,0,5\r\n";

    #[test]
    fn csv_rows() {
        let rows = parse_csv(CSV).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get("partner"), "ib_7");
        assert_eq!(rows[0].get("reversed"), "-10.00");
        assert_eq!(rows[1].get("period"), "2026-11");
        assert_eq!(rows[1].get("carried_out"), "5");
        let bad = CSV.replace("ib_8", "ib 8");
        let e = parse_csv(&bad).unwrap_err();
        assert_eq!(e.field, "partner");
        assert!(e.reason.starts_with("row 3"), "{}", e.reason);
        assert_eq!(parse_csv("a,b\n").unwrap_err().field, "body");
        assert_eq!(
            parse_csv(&CSV.replace("120.00", "1e3")).unwrap_err().field,
            "earned"
        );
        assert_eq!(
            parse_csv(&CSV.replace("2026-11,ib_7", "2026-13,ib_7"))
                .unwrap_err()
                .field,
            "period"
        );
        // more decimals than the currency has (review26 L2)
        let e = parse_csv(&CSV.replace("120.00", "120.005")).unwrap_err();
        assert_eq!(e.field, "earned");
        assert!(
            e.reason.contains("at most 2 decimals in USD"),
            "{}",
            e.reason
        );
        let jpy = CSV.replace(",EUR,5,", ",JPY,5.5,");
        assert_eq!(parse_csv(&jpy).unwrap_err().field, "earned");
        assert!(parse_csv(&CSV.replace(",EUR,5,", ",JPY,5,")).is_ok());
        assert_eq!(
            split_csv("a,\"b,\"\"c\"\"\",d"),
            Some(vec!["a".into(), "b,\"c\"".into(), "d".into()])
        );
    }

    #[test]
    fn json_rows() {
        let one = r#"{"period":"2026-11","partner":"a","program":"p","currency":"USD","earned":"1.00","reversed":"0","adjusted":"0","carried_in":"0","pending":"0","payable":"1.00","carried_out":"0"}"#;
        assert_eq!(parse_json(format!("[{one}]").as_bytes()).unwrap().len(), 1);
        assert_eq!(
            parse_json(format!("{{\"rows\":[{one}]}}").as_bytes())
                .unwrap()
                .len(),
            1
        );
        let missing = one.replace(r#","payable":"1.00""#, "");
        assert_eq!(
            parse_json(format!("[{missing}]").as_bytes())
                .unwrap_err()
                .field,
            "payable"
        );
        let number = one.replace(r#""earned":"1.00""#, r#""earned":1.0"#);
        assert_eq!(
            parse_json(format!("[{number}]").as_bytes())
                .unwrap_err()
                .field,
            "earned"
        );
    }
}
