//! `settlement report`: statements.csv, payouts.csv, invoices.csv,
//! ledger.csv and report.html for one period, each written to a temporary
//! file and renamed into place.

use crate::error::{Error, Result};
use crate::period::Period;
use crate::run::{INVOICE_COLUMNS, LEDGER_COLUMNS};
use crate::statement::STATEMENT_COLUMNS;
use crate::store::{pos_base, Store};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub const FILES: [&str; 5] = [
    "statements.csv",
    "payouts.csv",
    "invoices.csv",
    "ledger.csv",
    "report.html",
];

/// Writes a file atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    write_atomic_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Streams a file into place: temp file, fsync, rename.
pub fn write_atomic_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>,
{
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    fill(&mut w)?;
    w.flush().map_err(|e| Error::io(&tmp, e))?;
    let f = w
        .into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn csv_bytes(header: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(header).expect("in-memory csv");
    for r in rows {
        w.write_record(r).expect("in-memory csv");
    }
    w.into_inner().expect("in-memory csv")
}

pub struct PeriodData {
    pub state: String,
    pub statements: Vec<Vec<String>>,
    pub models: Vec<String>,
    pub payouts: Vec<Vec<String>>,
    pub invoices: Vec<Vec<String>>,
    /// Ledger entries of the period.
    pub ledger_count: usize,
    /// `kind: reason` of rejected and capped entries, counted.
    pub reasons: Vec<(String, i64)>,
    pub stats: Vec<(String, String, i64)>,
}

pub fn load(store: &Store, p: Period) -> Result<PeriodData> {
    let Some((state, _, _)) = store.period_state(p)? else {
        return Err(Error::Usage(format!(
            "period {p} has not been run: `settlement run --config programs.toml --period {p}` first"
        )));
    };
    let c = &store.conn;
    let mut statements = Vec::new();
    let mut models = Vec::new();
    let mut st = c.prepare(
        "SELECT partner, program, currency, earned, reversed, adjusted, carried_in, pending, payable, carried_out, model
         FROM statements WHERE period = ?1 ORDER BY partner, program",
    )?;
    let mut rows = st.query([p.key()])?;
    while let Some(r) = rows.next()? {
        let mut row = vec![p.to_string()];
        for i in 0..10 {
            row.push(r.get(i)?);
        }
        models.push(r.get(10)?);
        statements.push(row);
    }
    let mut payouts = Vec::new();
    let mut st = c.prepare(
        "SELECT partner, currency, amount, reason FROM ledger WHERE pos >= ?1 AND pos < ?2 AND kind = 'payout'",
    )?;
    let mut rows = st.query([pos_base(p), pos_base(p.next())])?;
    while let Some(r) = rows.next()? {
        let amount: String = r.get(2)?;
        payouts.push(vec![
            p.to_string(),
            r.get(0)?,
            r.get(1)?,
            amount.trim_start_matches('-').to_string(),
            r.get(3)?,
        ]);
    }
    let ledger_count: i64 = c.query_row(
        "SELECT COUNT(*) FROM ledger WHERE pos >= ?1 AND pos < ?2",
        [pos_base(p), pos_base(p.next())],
        |r| r.get(0),
    )?;
    let mut reasons = Vec::new();
    let mut st = c.prepare(
        "SELECT kind || ': ' || reason, COUNT(*) FROM ledger WHERE pos >= ?1 AND pos < ?2
         AND kind IN ('rejected', 'capped') GROUP BY 1 ORDER BY 1",
    )?;
    let mut rows = st.query([pos_base(p), pos_base(p.next())])?;
    while let Some(r) = rows.next()? {
        reasons.push((r.get(0)?, r.get(1)?));
    }
    payouts.sort();
    let mut invoices = Vec::new();
    let mut st = c.prepare(
        "SELECT partner, txn_id, list_amount, discount_percent, amount_due, currency
         FROM invoices WHERE pos >= ?1 AND pos < ?2 ORDER BY pos",
    )?;
    let mut rows = st.query([pos_base(p), pos_base(p.next())])?;
    while let Some(r) = rows.next()? {
        let mut row = vec![p.to_string()];
        for i in 0..6 {
            row.push(r.get(i)?);
        }
        invoices.push(row);
    }
    let mut stats = Vec::new();
    let mut st = c.prepare(
        "SELECT program, name, value FROM stats WHERE period = ?1 ORDER BY program, name",
    )?;
    let mut rows = st.query([p.key()])?;
    while let Some(r) = rows.next()? {
        stats.push((r.get(0)?, r.get(1)?, r.get(2)?));
    }
    Ok(PeriodData {
        state,
        statements,
        models,
        payouts,
        invoices,
        ledger_count: ledger_count as usize,
        reasons,
        stats,
    })
}

/// Writes the five files into `out` (created if missing).
pub fn report(store: &Store, p: Period, out: &Path) -> Result<PeriodData> {
    let d = load(store, p)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_atomic(
        &out.join("statements.csv"),
        &csv_bytes(&STATEMENT_COLUMNS, &d.statements),
    )?;
    write_atomic(
        &out.join("payouts.csv"),
        &csv_bytes(
            &["period", "partner", "currency", "amount", "reference"],
            &d.payouts,
        ),
    )?;
    write_atomic(
        &out.join("invoices.csv"),
        &csv_bytes(&INVOICE_COLUMNS, &d.invoices),
    )?;
    write_atomic_with(&out.join("ledger.csv"), |w| write_ledger(store, p, w))?;
    write_atomic(&out.join("report.html"), html(p, &d).as_bytes())?;
    Ok(d)
}

/// Streams the period's ledger as CSV, in ledger order.
fn write_ledger<W: std::io::Write>(store: &Store, p: Period, w: W) -> Result<()> {
    let mut cw = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(w);
    let err = |e: csv::Error| Error::data(format!("writing ledger.csv: {e}"));
    cw.write_record(LEDGER_COLUMNS).map_err(err)?;
    let mut st = store.conn.prepare(
        "SELECT id, partner, program, kind, amount, currency, rule, sources, event_day, reason, adjusts, calc
         FROM ledger WHERE pos >= ?1 AND pos < ?2 ORDER BY pos",
    )?;
    let mut rows = st.query([pos_base(p), pos_base(p.next())])?;
    let ps = p.to_string();
    while let Some(r) = rows.next()? {
        let t = |i: usize| -> Result<&[u8]> { Ok(r.get_ref(i)?.as_bytes()?) };
        let day = crate::period::date_of_day(r.get(8)?);
        let fields: [&[u8]; 13] = [
            t(0)?,
            ps.as_bytes(),
            t(1)?,
            t(2)?,
            t(3)?,
            t(4)?,
            t(5)?,
            t(6)?,
            t(7)?,
            day.as_bytes(),
            t(9)?,
            t(10)?,
            t(11)?,
        ];
        cw.write_record(fields).map_err(err)?;
    }
    cw.flush()
        .map_err(|e| Error::data(format!("writing ledger.csv: {e}")))?;
    Ok(())
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn dec(s: &str) -> Decimal {
    crate::money::parse_decimal(s).unwrap_or_default()
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>], numeric_from: usize) {
    out.push_str("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            if i >= numeric_from {
                let _ = write!(out, "<td class=\"n\">{}</td>", esc(c));
            } else {
                let _ = write!(out, "<td>{}</td>", esc(c));
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

/// A horizontal bar chart as inline SVG (no scripts, no network).
fn bars(out: &mut String, title: &str, items: &[(String, Decimal, String)]) {
    let max = items.iter().map(|i| i.1.abs()).max().unwrap_or_default();
    let h = 22 * items.len() + 30;
    let _ = writeln!(
        out,
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    for (i, (label, v, text)) in items.iter().enumerate() {
        let y = 10 + 22 * i;
        let w = if max.is_zero() {
            Decimal::ZERO
        } else {
            (v.abs() * Decimal::from(400) / max).round_dp(1)
        };
        let color = if v.is_sign_negative() {
            "#c0392b"
        } else {
            "#2e86c1"
        };
        let _ = writeln!(
            out,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"180\" y=\"{y}\" width=\"{w}\" height=\"16\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            y + 12,
            esc(label),
            Decimal::from(186) + w,
            y + 12,
            esc(text)
        );
    }
    out.push_str("</svg></figure>\n");
}

pub fn html(p: Period, d: &PeriodData) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Settlement {p}</title>\n<style>\nbody{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}th,td{{border:1px solid #ccc;padding:.25rem .5rem}}th{{background:#f3f3f3}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}figure{{margin:1rem 0}}figcaption{{font-weight:600}}\n</style></head><body>\n<h1>Settlement {p}</h1>\n<p>Period state: <b>{}</b>. Partners with a statement: {}. Payouts: {}. Ledger entries: {}.</p>\n",
        esc(&d.state),
        d.statements.len(),
        d.payouts.len(),
        d.ledger_count
    );

    // totals per currency
    let mut totals: BTreeMap<String, [Decimal; 7]> = BTreeMap::new();
    for r in &d.statements {
        let t = totals.entry(r[3].clone()).or_default();
        for i in 0..7 {
            t[i] += dec(&r[4 + i]);
        }
    }
    o.push_str("<h2>Totals</h2>\n");
    let rows: Vec<Vec<String>> = totals
        .iter()
        .map(|(c, t)| {
            let cur = edge::currency::Currency::parse(c);
            let f = |x: Decimal| cur.map_or(x.to_string(), |cu| crate::money::fmt_decimal(x, cu));
            let mut r = vec![c.clone()];
            r.extend(t.iter().map(|x| f(*x)));
            r
        })
        .collect();
    table(
        &mut o,
        &[
            "currency",
            "earned",
            "reversed",
            "adjusted",
            "carried_in",
            "pending",
            "payable",
            "carried_out",
        ],
        &rows,
        1,
    );

    // per model
    let mut models: BTreeMap<(String, String), (usize, [Decimal; 4])> = BTreeMap::new();
    for (r, m) in d.statements.iter().zip(&d.models) {
        let e = models.entry((m.clone(), r[3].clone())).or_default();
        e.0 += 1;
        for (k, col) in [4, 5, 6, 9].into_iter().enumerate() {
            e.1[k] += dec(&r[col]);
        }
    }
    o.push_str("<h2>Per model</h2>\n");
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|((m, c), (n, t))| {
            let mut r = vec![m.clone(), c.clone(), n.to_string()];
            r.extend(t.iter().map(|x| x.to_string()));
            r
        })
        .collect();
    table(
        &mut o,
        &[
            "model", "currency", "partners", "earned", "reversed", "adjusted", "payable",
        ],
        &rows,
        2,
    );
    let items: Vec<(String, Decimal, String)> = models
        .iter()
        .map(|((m, c), (_, t))| (format!("{m} ({c})"), t[0], format!("{} {c}", t[0])))
        .collect();
    if !items.is_empty() {
        bars(&mut o, "Earned per model", &items);
    }

    // top partners by payable
    let mut top: Vec<&Vec<String>> = d.statements.iter().collect();
    top.sort_by(|a, b| dec(&b[9]).cmp(&dec(&a[9])).then_with(|| a[1].cmp(&b[1])));
    let items: Vec<(String, Decimal, String)> = top
        .iter()
        .take(20)
        .filter(|r| !dec(&r[9]).is_zero())
        .map(|r| (r[1].clone(), dec(&r[9]), format!("{} {}", r[9], r[3])))
        .collect();
    if !items.is_empty() {
        bars(&mut o, "Payable, top partners", &items);
    }

    o.push_str("<h2>Conversions per program</h2>\n");
    let mut per: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (prog, name, v) in &d.stats {
        per.entry(prog.clone())
            .or_default()
            .insert(name.clone(), *v);
    }
    let names = [
        "conversions",
        "attributed",
        "unattributed",
        "rejected",
        "reversals",
        "unknown_program",
    ];
    let rows: Vec<Vec<String>> = per
        .iter()
        .map(|(prog, m)| {
            let mut r = vec![prog.clone()];
            r.extend(
                names
                    .iter()
                    .map(|n| m.get(*n).copied().unwrap_or(0).to_string()),
            );
            r
        })
        .collect();
    let mut head = vec!["program"];
    head.extend(names);
    table(&mut o, &head, &rows, 1);

    if !d.reasons.is_empty() {
        o.push_str("<h2>Rejected and capped entries</h2>\n");
        let rows: Vec<Vec<String>> = d
            .reasons
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect();
        table(&mut o, &["kind: reason", "entries"], &rows, 1);
    }

    o.push_str("<h2>Statements</h2>\n");
    table(&mut o, &STATEMENT_COLUMNS, &d.statements, 4);
    if !d.payouts.is_empty() {
        o.push_str("<h2>Payouts</h2>\n");
        table(
            &mut o,
            &["period", "partner", "currency", "amount", "reference"],
            &d.payouts,
            3,
        );
    }
    if !d.invoices.is_empty() {
        o.push_str("<h2>Invoices</h2>\n");
        table(&mut o, &INVOICE_COLUMNS, &d.invoices, 3);
    }
    o.push_str("</body></html>\n");
    o
}
