//! `settlement report`: statements.csv, payouts.csv, invoices.csv,
//! ledger.csv and report.html for one period, each written to a temporary
//! file and renamed into place.

use crate::batch::{self, Batch};
use crate::error::{Error, Result};
use crate::period::Period;
use crate::run::{INVOICE_COLUMNS, LEDGER_COLUMNS};
use crate::statement::STATEMENT_COLUMNS;
use crate::store::{pos_base, Store};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const FILES: [&str; 6] = [
    "fraud.csv",
    "statements.csv",
    "payouts.csv",
    "invoices.csv",
    "ledger.csv",
    "report.html",
];

/// The temporary file `path` is written as before it is renamed into
/// place: `.NAME.tmp.PID` in the same directory ([`remove_stale_temps`]
/// clears those a killed report left).
fn temp_beside(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    dir.join(format!(".{name}.tmp.{}", std::process::id()))
}

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
    let tmp = temp_beside(path);
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    fill(&mut w)?;
    w.flush().map_err(|e| Error::io(&tmp, e))?;
    let f = w
        .into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    sync_into_place(f, &tmp, path)
}

/// Syncs `f`, written as `tmp`, and renames it to `path`.
fn sync_into_place(f: std::fs::File, tmp: &Path, path: &Path) -> Result<()> {
    f.sync_all().map_err(|e| Error::io(tmp, e))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))
}

/// [`write_atomic_with`] for a file of hundreds of megabytes: written
/// around the page cache where the file system allows
/// ([`crate::direct::DirectFile`]), then synced and renamed the same way.
pub fn write_atomic_large<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut crate::direct::DirectFile) -> Result<()>,
{
    let tmp = temp_beside(path);
    let mut w = crate::direct::DirectFile::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    fill(&mut w)?;
    let f = w.finish().map_err(|e| Error::io(&tmp, e))?;
    sync_into_place(f, &tmp, path)
}

/// The CSV of `rows`; the cells of the `text` columns defused
/// ([`crate::cell`]).
fn csv_bytes(header: &[&str], rows: &[Vec<String>], text: &[usize]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(header).expect("in-memory csv");
    for r in rows {
        w.write_record(crate::cell::defuse_columns(
            r.iter().map(|c| c.as_bytes()),
            text,
        ))
        .expect("in-memory csv");
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
    /// Per day of the period: (date, human clicks, bot clicks, conversions).
    pub daily: Vec<(String, i64, i64, i64)>,
    /// The largest entries, with the ids `settlement explain` takes:
    /// (id, partner, program, kind, amount, currency, rule).
    pub top_entries: Vec<Vec<String>>,
    pub fraud: crate::fraud::Summary,
}

pub fn load(store: &Store, p: Period) -> Result<PeriodData> {
    load_with(store, p, scan_ledger(store, p, None)?, None)
}

fn add_day(per_day: &mut Traffic, day: i64, n: (i64, i64, i64)) {
    let e = per_day.entry(day).or_default();
    e.0 += n.0;
    e.1 += n.1;
    e.2 += n.2;
}

/// What the report reads off the period's ledger, in the one pass that also
/// writes ledger.csv.
#[derive(Default)]
struct LedgerSums {
    count: usize,
    payouts: Vec<Vec<String>>,
    reasons: BTreeMap<String, i64>,
    /// The largest money entries, largest first (ties by id).
    top: Vec<(Decimal, Vec<String>)>,
    /// [`int_digits`] of the smallest of `top` once it is full: an amount
    /// with fewer is smaller, without parsing it.
    top_digits: usize,
}

const TOP_ENTRIES: usize = 12;

/// The significant digits of an amount's whole part (`"-0.50"`: 0,
/// `"012.3"`: 2). Of two amounts, the one with fewer is the smaller in
/// absolute value; text that is no amount counts its characters, and as
/// it reads as zero it never beats an amount of one digit or more.
fn int_digits(amount: &str) -> usize {
    let a = amount.strip_prefix(['-', '+']).unwrap_or(amount);
    let whole = a.split('.').next().unwrap_or("");
    whole.trim_start_matches('0').len()
}

/// One pass over the period's ledger in ledger order: counts, payouts,
/// rejection reasons and the largest entries, and the ledger as CSV into
/// `csv` when given.
fn scan_ledger(
    store: &Store,
    p: Period,
    csv: Option<&mut (dyn std::io::Write + Send)>,
) -> Result<LedgerSums> {
    use crate::ledger_blocks as lb;
    // the columns of the former query, in its order (8, the event day, is
    // the block's integer column)
    const COL: [usize; 12] = [
        lb::L_ID,
        lb::L_PARTNER,
        lb::L_PROGRAM,
        lb::L_KIND,
        lb::L_AMOUNT,
        lb::L_CURRENCY,
        lb::L_RULE,
        lb::L_SOURCES,
        usize::MAX,
        lb::L_REASON,
        lb::L_ADJUSTS,
        lb::L_CALC,
    ];
    let ps = p.to_string();
    std::thread::scope(|sc| -> Result<LedgerSums> {
        // this thread reads SQLite and sums; a second one writes the CSV
        let (filler, reader) = batch::channel(Batch::new(0, LEDGER_FIELDS), 4);
        let writer = csv.map(|w| {
            sc.spawn(move || -> Result<()> {
                let err = |e: csv::Error| Error::data(format!("writing ledger.csv: {e}"));
                let mut cw = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(w);
                cw.write_record(LEDGER_COLUMNS).map_err(err)?;
                while let Some(batch) = reader.next() {
                    for r in 0..batch.rows() {
                        // sources, reason and calc
                        cw.write_record(crate::cell::defuse_columns(
                            batch.row_bytes(r),
                            &[8, 10, 12],
                        ))
                        .map_err(err)?;
                    }
                    reader.give_back(batch);
                }
                cw.flush()
                    .map_err(|e| Error::data(format!("writing ledger.csv: {e}")))
            })
        });
        let mut sums = LedgerSums::default();
        let mut batch = Some(filler.fresh());
        let mut date = (0i64, String::new());
        lb::scan(
            &store.conn,
            pos_base(p),
            pos_base(p.next()),
            lb::ALL,
            |blk| {
                for r in 0..blk.rows() {
                    let t = |i: usize| -> Result<&[u8]> {
                        Ok(blk.bytes(COL[i], r).unwrap_or_default())
                    };
                    let s = |i: usize| -> Result<&str> { lb::text(blk, COL[i], r) };
                    sums.count += 1;
                    let kind = s(3)?;
                    match kind {
                        "payout" => sums.payouts.push(vec![
                            ps.clone(),
                            s(1)?.to_string(),
                            s(5)?.to_string(),
                            s(4)?.trim_start_matches('-').to_string(),
                            s(9)?.to_string(),
                        ]),
                        "rejected" | "capped" => {
                            let k = format!("{kind}: {}", s(9)?);
                            *sums.reasons.entry(k).or_default() += 1;
                        }
                        _ => {
                            let amount = s(4)?;
                            let full = sums.top.len() == TOP_ENTRIES;
                            // most entries are smaller than the twelfth
                            // largest by whole digits: no decimal to parse
                            if !full || int_digits(amount) >= sums.top_digits {
                                let a = dec(amount).abs();
                                let id = s(0)?;
                                let beats = |(b, e): &(Decimal, Vec<String>)| {
                                    a > *b || (a == *b && id < e[0].as_str())
                                };
                                if !full || sums.top.last().is_some_and(beats) {
                                    let row = [0, 1, 2, 3, 4, 5, 6]
                                        .iter()
                                        .map(|&i| s(i).map(str::to_string))
                                        .collect::<Result<Vec<String>>>()?;
                                    let at = sums.top.partition_point(|x| !beats(x));
                                    sums.top.insert(at, (a, row));
                                    sums.top.truncate(TOP_ENTRIES);
                                    if sums.top.len() == TOP_ENTRIES {
                                        sums.top_digits = sums
                                            .top
                                            .last()
                                            .map_or(0, |(b, _)| int_digits(&b.to_string()));
                                    }
                                }
                            }
                        }
                    }
                    // a writer that stopped says why when joined
                    if let Some(b) = batch.as_mut().filter(|_| writer.is_some()) {
                        // a period's entries fall on a few dozen days: each
                        // date is written once, not once an entry
                        let d = blk.int(lb::L_EVENT_DAY, r).unwrap_or(0);
                        if date.0 != d || date.1.is_empty() {
                            date = (d, crate::period::date_of_day(d));
                        }
                        let day = &date.1;
                        for f in [
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
                        ] {
                            b.push_bytes(Some(f))
                                .map_err(|e| Error::data(format!("writing ledger.csv: {e}")))?;
                        }
                        if b.rows() == 2048 {
                            batch = batch.take().and_then(|b| filler.send(b));
                        }
                    }
                }
                Ok(())
            },
        )?;
        match batch {
            // without a writer nobody reads: nothing to wait for
            Some(b) if writer.is_some() => filler.finish(b),
            _ => drop(filler),
        }
        if let Some(w) = writer {
            match w.join() {
                Ok(r) => r?,
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        sums.payouts.sort();
        Ok(sums)
    })
}

const LEDGER_FIELDS: usize = 13;

/// Human clicks, bot clicks and conversions by day number.
type Traffic = BTreeMap<i64, (i64, i64, i64)>;

/// Human clicks, bot clicks and conversions per day of the period: one pass
/// over its events, counted here (a GROUP BY would sort millions of rows
/// first).
/// Only events that had arrived by `watermark` (the draft's: the traffic
/// its figures saw) count, so the page of a closed period stays the same
/// when late events arrive.
fn traffic(c: &rusqlite::Connection, p: Period, watermark: i64) -> Result<Traffic> {
    use crate::events::{Cols, E_BOT, E_KIND, E_TS};
    use crate::store::{KIND_CLICK, KIND_CONVERSION};
    let mut per_day = Traffic::new();
    let (start, end) = (p.start_ms(), p.end_ms());
    let mut cur: Option<(i64, (i64, i64, i64))> = None;
    crate::events::scan(
        c,
        Cols::of(&[E_TS, E_KIND, E_BOT], &[]),
        "max_ts >= ?1 AND min_ts < ?2 AND first <= ?3",
        rusqlite::params![start, end, watermark],
        |b| {
            for r in 0..b.rows() {
                let (Some(ts), Some(kind)) = (b.int(E_TS, r), b.int(E_KIND, r)) else {
                    continue;
                };
                if b.arrival(r) > watermark {
                    continue;
                }
                if ts < start || ts >= end || (kind != KIND_CLICK && kind != KIND_CONVERSION) {
                    continue;
                }
                let day = ts.div_euclid(crate::period::DAY_MS);
                // events mostly arrive in time order: count a day's run, then file it
                let e = match &mut cur {
                    Some((d, e)) if *d == day => e,
                    _ => {
                        if let Some((d, e)) = cur.take() {
                            add_day(&mut per_day, d, e);
                        }
                        &mut cur.insert((day, (0, 0, 0))).1
                    }
                };
                match (kind, b.int(E_BOT, r).unwrap_or(0)) {
                    (KIND_CLICK, 0) => e.0 += 1,
                    (KIND_CLICK, _) => e.1 += 1,
                    _ => e.2 += 1,
                }
            }
            Ok(())
        },
    )?;
    if let Some((d, e)) = cur {
        add_day(&mut per_day, d, e);
    }
    Ok(per_day)
}

/// [`traffic`] on a second connection to the store's file, on a thread of
/// its own, so the report's pass over the ledger goes on meanwhile; `None`
/// for a store without a file (the caller counts on its own connection).
fn traffic_beside(
    store: &Store,
    p: Period,
    watermark: i64,
) -> Option<std::thread::JoinHandle<Result<Traffic>>> {
    let path = store.conn.path().filter(|p| !p.is_empty())?.to_string();
    Some(std::thread::spawn(move || {
        let c = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(crate::store::BUSY_TIMEOUT)?;
        traffic(&c, p, watermark)
    }))
}

fn load_with(
    store: &Store,
    p: Period,
    sums: LedgerSums,
    per_day: Option<Traffic>,
) -> Result<PeriodData> {
    let Some((state, watermark, _)) = store.period_state(p)? else {
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
    let mut invoices = Vec::new();
    {
        use crate::ledger_blocks::*;
        const COLS: [usize; 6] = [
            I_PARTNER,
            I_TXN_ID,
            I_LIST_AMOUNT,
            I_DISCOUNT_PERCENT,
            I_AMOUNT_DUE,
            I_CURRENCY,
        ];
        let ps = p.to_string();
        let (from, to) = (pos_base(p), pos_base(p.next()));
        scan_in(
            c,
            INVOICES,
            from,
            to,
            crate::events::Cols::of(&[], &COLS),
            |b| {
                for r in 0..b.rows() {
                    let mut row = Vec::with_capacity(1 + COLS.len());
                    row.push(ps.clone());
                    for col in COLS {
                        row.push(text(b, col, r)?.to_string());
                    }
                    invoices.push(row);
                }
                Ok(())
            },
        )?;
    }
    let mut stats = Vec::new();
    let mut st = c.prepare(
        "SELECT program, name, value FROM stats WHERE period = ?1 ORDER BY program, name",
    )?;
    let mut rows = st.query([p.key()])?;
    while let Some(r) = rows.next()? {
        stats.push((r.get(0)?, r.get(1)?, r.get(2)?));
    }
    let per_day = match per_day {
        Some(d) => d,
        None => traffic(c, p, watermark)?,
    };
    let daily = (p.first_day()..=p.last_day())
        .map(|d| {
            let (h, b, c) = per_day.get(&d).copied().unwrap_or_default();
            (crate::period::date_of_day(d), h, b, c)
        })
        .collect();
    Ok(PeriodData {
        state,
        statements,
        models,
        payouts: sums.payouts,
        invoices,
        ledger_count: sums.count,
        reasons: sums.reasons.into_iter().collect(),
        stats,
        daily,
        top_entries: sums.top.into_iter().map(|(_, row)| row).collect(),
        fraud: crate::fraud::load(store, p)?,
    })
}

/// Writes the six files into `out` (created if missing), all from one
/// snapshot of the store: a `run` or `close` that commits meanwhile (from
/// another process) changes none of them.
pub fn report(store: &Store, p: Period, out: &Path) -> Result<PeriodData> {
    report_with(store, p, out, || {})
}

/// [`report`], calling `between` once the ledger is read and before the
/// rest is (the tests commit another draft there).
fn report_with(store: &Store, p: Period, out: &Path, between: impl FnOnce()) -> Result<PeriodData> {
    // one read transaction: in WAL mode this connection sees the store as
    // of its first read to its end, whatever other connections commit
    // meanwhile (the ledger, the statements, the invoices and the fraud
    // flags of one draft); it writes nothing, so its end is a rollback.
    // The day-by-day traffic is counted on a second connection
    // (`traffic_beside`): events only grow, and an import meanwhile may
    // add to those counts, never to the draft's figures
    let snapshot = store.conn.unchecked_transaction()?;
    if store.period_state(p)?.is_none() {
        // load_with says so
        load_with(store, p, LedgerSums::default(), None)?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    remove_stale_temps(out)?;
    // the day-by-day traffic is counted beside the pass over the ledger
    let watermark = store.period_state(p)?.map_or(0, |s| s.1);
    let counting = traffic_beside(store, p, watermark);
    let mut sums = None;
    let ph = crate::timing::Phase::start("report: ledger.csv");
    write_atomic_large(&out.join("ledger.csv"), |w| {
        sums = Some(scan_ledger(store, p, Some(w))?);
        Ok(())
    })?;
    drop(ph);
    between();
    let _ph = crate::timing::Phase::start("report: traffic, statements and the other files");
    let per_day = match counting.map(|h| h.join()) {
        Some(Ok(r)) => Some(r?),
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => None,
    };
    let d = load_with(store, p, sums.unwrap_or_default(), per_day)?;
    drop(snapshot);
    write_atomic(
        &out.join("statements.csv"),
        &csv_bytes(&STATEMENT_COLUMNS, &d.statements, &[]),
    )?;
    write_atomic(
        &out.join("payouts.csv"),
        &csv_bytes(
            &["period", "partner", "currency", "amount", "reference"],
            &d.payouts,
            &[],
        ),
    )?;
    write_atomic(
        &out.join("invoices.csv"),
        // txn_id
        &csv_bytes(&INVOICE_COLUMNS, &d.invoices, &[2]),
    )?;
    crate::fraud::write_csv(&out.join("fraud.csv"), &d.fraud)?;
    write_atomic(&out.join("report.html"), html(p, &d).as_bytes())?;
    Ok(d)
}

/// Removes the temporary files a killed report left in `out` (`.NAME.tmp.PID`
/// of the six files and of the payout files): the outputs themselves are always whole, since each is
/// renamed into place only once written and synced. One report at a time
/// per directory.
fn remove_stale_temps(out: &Path) -> Result<()> {
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(out, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        // `.BASE.tmp.PID`, BASE one of the six files or a payout file
        // (`payouts.sepa.xml`, `payouts.paypal.CUR.csv`, `payouts.manual.csv`)
        let stale = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp."))
            .is_some_and(|(base, pid)| {
                (FILES.contains(&base) || base.starts_with("payouts."))
                    && !pid.is_empty()
                    && pid.bytes().all(|b| b.is_ascii_digit())
            });
        if stale {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
        }
    }
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

/// The statements, each figure tagged `data-partner`/`data-col` so that a
/// browser test can check the page against statements.csv.
fn statements_table(out: &mut String, rows: &[Vec<String>]) {
    out.push_str("<table class=\"statements\"><thead><tr>");
    for h in STATEMENT_COLUMNS {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in rows {
        let _ = write!(
            out,
            "<tr data-partner=\"{}\" data-program=\"{}\">",
            esc(&r[1]),
            esc(&r[2])
        );
        for (i, c) in r.iter().enumerate() {
            let col = STATEMENT_COLUMNS.get(i).copied().unwrap_or("");
            let class = if i >= 4 { " class=\"n\"" } else { "" };
            let _ = write!(out, "<td{class} data-col=\"{}\">{}</td>", esc(col), esc(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1f2933;background:#f7f9fb}\
header{background:#1f3a5f;color:#fff;padding:1.2rem 2rem}header h1{margin:0 0 .3rem}header p{margin:0;opacity:.85}\
h2{margin:2rem 2rem .5rem;font-size:1.15rem}table,figure,.note{margin:.5rem 2rem}\
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001}\
th,td{border-bottom:1px solid #e4e7eb;padding:.3rem .6rem;font-size:.9rem}th{background:#eef2f6;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}tbody tr:hover{background:#f0f6ff}\
figure{background:#fff;padding:.8rem;box-shadow:0 1px 2px #0001;display:inline-block}figcaption{font-weight:600;margin-bottom:.4rem}\
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1.2rem 2rem}.card{background:#fff;padding:.8rem 1.1rem;min-width:9rem;box-shadow:0 1px 2px #0001;border-top:3px solid #2e86c1}\
.card .v{font-size:1.4rem;font-weight:650;font-variant-numeric:tabular-nums}.card .l{color:#52606d;font-size:.8rem}\
.legend{font-size:.8rem;color:#52606d}.sw{display:inline-block;width:.8rem;height:.8rem;vertical-align:middle;margin-left:.6rem}\
.sw.people{background:#5dade2}.sw.bots{background:#d5d8dc}.sw.conv{background:#e67e22}code{font-size:.85rem}";

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

/// Clicks (people and bots, stacked) and conversions per day, as inline SVG.
fn daily_chart(out: &mut String, daily: &[(String, i64, i64, i64)]) {
    let max_clicks = daily.iter().map(|d| d.1 + d.2).max().unwrap_or(0).max(1);
    let max_conv = daily.iter().map(|d| d.3).max().unwrap_or(0).max(1);
    let (w, h, left, bottom) = (760i64, 220i64, 40i64, 190i64);
    let step = (w - left - 10) / (daily.len() as i64).max(1);
    let _ = writeln!(
        out,
        "<figure><figcaption>Clicks and conversions per day</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"Clicks and conversions per day\">"
    );
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#999\"/>",
        w - 10
    );
    let _ = writeln!(
        out,
        "<text x=\"0\" y=\"16\" font-size=\"11\" fill=\"#555\">{max_clicks} clicks</text>"
    );
    let mut line = String::new();
    for (i, (date, people, bots, conv)) in daily.iter().enumerate() {
        let x = left + step * i as i64;
        let hp = (people * 160) / max_clicks;
        let hb = (bots * 160) / max_clicks;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{hp}\" fill=\"#5dade2\"><title>{} clicks by people on {}</title></rect><rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{hb}\" fill=\"#d5d8dc\"><title>{} bot clicks</title></rect>",
            bottom - hp,
            (step - 2).max(1),
            people,
            esc(date),
            bottom - hp - hb,
            (step - 2).max(1),
            bots
        );
        let y = bottom - (conv * 160) / max_conv;
        let _ = write!(line, "{},{} ", x + step / 2, y);
        if i % 5 == 0 {
            let _ = writeln!(
                out,
                "<text x=\"{x}\" y=\"{}\" font-size=\"10\" fill=\"#555\">{}</text>",
                bottom + 14,
                esc(&date[5..])
            );
        }
    }
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#e67e22\" stroke-width=\"2\"/>",
        line.trim_end()
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"16\" font-size=\"11\" fill=\"#e67e22\" text-anchor=\"end\">conversions (max {max_conv}/day)</text>",
        w - 10
    );
    out.push_str("</svg><p class=\"legend\"><span class=\"sw people\"></span> clicks by people <span class=\"sw bots\"></span> bots, previews and prefetches <span class=\"sw conv\"></span> conversion records (refunds included)</p></figure>\n");
}

pub fn html(p: Period, d: &PeriodData) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Settlement {p}</title>\n<style>\n{CSS}\n</style></head><body>\n<header><h1>Settlement {p}</h1><p>Period <b>{}</b> &middot; {} statements &middot; {} payouts &middot; {} ledger entries</p></header>\n",
        esc(&d.state),
        d.statements.len(),
        d.payouts.len(),
        d.ledger_count
    );
    let clicks: i64 = d.daily.iter().map(|x| x.1).sum();
    let bots: i64 = d.daily.iter().map(|x| x.2).sum();
    let conversions: i64 = d.daily.iter().map(|x| x.3).sum();
    let mut cards = vec![
        (
            "clicks by people".to_string(),
            clicks.to_string(),
            "clicks".to_string(),
        ),
        (
            "bot clicks".to_string(),
            bots.to_string(),
            "bots".to_string(),
        ),
        (
            // every conversion record dated in the period, refunds and
            // chargebacks too (the table per program counts them apart)
            "conversion records, refunds included".to_string(),
            conversions.to_string(),
            "conversions".to_string(),
        ),
    ];
    let mut by_cur: BTreeMap<&str, (Decimal, Decimal)> = BTreeMap::new();
    for r in &d.statements {
        let e = by_cur.entry(r[3].as_str()).or_default();
        e.0 += dec(&r[4]);
        e.1 += dec(&r[9]);
    }
    for (cur, (earned, payable)) in &by_cur {
        cards.push((
            format!("earned ({cur})"),
            earned.to_string(),
            format!("earned-{cur}"),
        ));
        cards.push((
            format!("payable ({cur})"),
            payable.to_string(),
            format!("payable-{cur}"),
        ));
    }
    o.push_str("<section class=\"cards\">");
    for (label, value, key) in &cards {
        let _ = write!(
            o,
            "<div class=\"card\"><div class=\"v\" data-kpi=\"{}\">{}</div><div class=\"l\">{}</div></div>",
            esc(key),
            esc(value),
            esc(label)
        );
    }
    o.push_str("</section>\n");
    if !d.daily.is_empty() {
        daily_chart(&mut o, &d.daily);
    }

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
    let mut names = vec![
        "conversions",
        "attributed",
        "unattributed",
        "rejected",
        "reversals",
        "unknown_program",
    ];
    // counted only when some conversion repeated another's txn_id
    if per.values().any(|m| m.contains_key("duplicates")) {
        names.push("duplicates");
    }
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
    head.extend(&names);
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

    crate::fraud::html_section(&mut o, &d.fraud);
    o.push_str("<h2>Statements</h2>\n");
    statements_table(&mut o, &d.statements);
    if !d.top_entries.is_empty() {
        o.push_str("<h2>Largest entries</h2>\n<p class=\"note\">Every figure above is a sum of ledger entries; <code>settlement explain ENTRY_ID</code> shows the rule, the inputs and the arithmetic of one. The largest of this period:</p>\n");
        let rows: Vec<Vec<String>> = d
            .top_entries
            .iter()
            .map(|e| {
                let mut r = vec![format!("settlement explain {}", e[0])];
                r.extend(e[1..].iter().cloned());
                r
            })
            .collect();
        table(
            &mut o,
            &[
                "entry", "partner", "program", "kind", "amount", "currency", "rule",
            ],
            &rows,
            9,
        );
    }
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
        // per partner: a page with every line of a large reseller program
        // would run to a hundred megabytes; the lines are in invoices.csv
        let mut per: BTreeMap<(&str, &str), (u64, Decimal, Decimal)> = BTreeMap::new();
        for l in &d.invoices {
            let e = per.entry((&l[1], &l[6])).or_default();
            e.0 += 1;
            e.1 += dec(&l[3]);
            e.2 += dec(&l[5]);
        }
        let _ = writeln!(
            o,
            "<h2>Invoices</h2>\n<p class=\"note\">{} invoice lines, summed per partner; each line is in <code>invoices.csv</code>.</p>",
            d.invoices.len()
        );
        let rows: Vec<Vec<String>> = per
            .into_iter()
            .map(|((partner, cur), (n, list, due))| {
                vec![
                    partner.to_string(),
                    cur.to_string(),
                    n.to_string(),
                    list.to_string(),
                    due.to_string(),
                ]
            })
            .collect();
        table(
            &mut o,
            &["partner", "currency", "lines", "list amount", "amount due"],
            &rows,
            2,
        );
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The six files of `a` and `b` that differ.
    fn differing(a: &Path, b: &Path) -> Vec<&'static str> {
        let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
        FILES
            .iter()
            .copied()
            .filter(|f| read(a, f) != read(b, f))
            .collect()
    }

    /// Fewer whole digits is a smaller amount, whatever the sign, the
    /// leading zeros or the decimals; text that is no amount reads as zero
    /// and is never counted as fewer than an amount of one digit or more.
    #[test]
    fn fewer_whole_digits_is_smaller() {
        let cases = [
            ("0.50", 0),
            ("-0.99", 0),
            ("9.99", 1),
            ("-10.00", 2),
            ("012.30", 2),
            ("+123", 3),
            ("1000000.001", 7),
            ("", 0),
            ("abc", 3),
        ];
        for (a, n) in cases {
            assert_eq!(int_digits(a), n, "{a}");
        }
        let amounts = [
            "0.01",
            "0.99",
            "-1.00",
            "9.99",
            "10.00",
            "-99.50",
            "100",
            "123456.78",
        ];
        for a in amounts {
            for b in amounts {
                if int_digits(a) < int_digits(b) {
                    assert!(dec(a).abs() < dec(b).abs(), "{a} {b}");
                }
            }
        }
    }

    /// A draft committed from another connection while a report reads
    /// changes none of its files: they are the first draft's, byte for
    /// byte, and a report after it gives the second draft's.
    #[test]
    fn one_report_reads_one_draft() {
        let (g, records) = crate::sim::records(3_000);
        let toml = Path::new("p.toml");
        let first = crate::config::parse(toml, crate::sim::PROGRAMS).unwrap();
        let changed = crate::sim::PROGRAMS.replacen("percent = \"20\"", "percent = \"25\"", 1);
        assert_ne!(changed, crate::sim::PROGRAMS);
        let second = crate::config::parse(toml, &changed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut store = Store::open(&db).unwrap();
        crate::import::import_records(&mut store, &records).unwrap();
        let p = g.period;
        crate::run::run(&mut store, &first, p).unwrap();
        let want = dir.path().join("want");
        report(&store, p, &want).unwrap();

        let got = dir.path().join("got");
        let mut committed = false;
        report_with(&store, p, &got, || {
            let mut other = Store::open(&db).unwrap();
            crate::run::run(&mut other, &second, p).unwrap();
            committed = true;
        })
        .unwrap();
        assert!(committed);
        assert_eq!(differing(&got, &want), Vec::<&str>::new());

        // the second draft is there for the next report
        let after = dir.path().join("after");
        report(&store, p, &after).unwrap();
        let changed = differing(&after, &want);
        for f in ["ledger.csv", "statements.csv", "payouts.csv", "report.html"] {
            assert!(changed.contains(&f), "{f} unchanged: {changed:?}");
        }
    }
}
