//! The settlement store: one SQLite file (WAL), versioned migrations, and
//! every write in a transaction, so a process killed at any instant leaves
//! either the old state or the new one.

use crate::batch::{self, Batch};
use crate::error::{Error, Result};
use crate::facts::{ClickIn, ConvIn, Facts};
use crate::money::parse_decimal;
use crate::period::Period;
use edge::currency::Currency;
use edge::record::{Kind, Record};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;

/// Versioned migrations, applied in order, each in its own transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- arrival: import order, the watermark that tells late facts from known ones
-- (the next one is meta.next_arrival)
CREATE TABLE events (
  arrival INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  kind INTEGER NOT NULL,
  seq INTEGER, ts INTEGER NOT NULL,
  program TEXT, partner TEXT, link TEXT, click_id TEXT, click_ts INTEGER,
  event TEXT, txn_id TEXT, amount TEXT, currency TEXT, customer TEXT, coupon TEXT,
  original_txn_id TEXT, lots TEXT, instrument TEXT, bot INTEGER, country TEXT,
  email_hash TEXT, status TEXT, approved_at INTEGER, expires_at INTEGER, source TEXT
);
CREATE TABLE partners (
  id TEXT PRIMARY KEY, program TEXT NOT NULL, parent TEXT, tier TEXT, status TEXT,
  history TEXT, currency TEXT, email_hash TEXT, created_at INTEGER, updated_at INTEGER,
  raw TEXT NOT NULL
);
CREATE TABLE coupons (
  program TEXT NOT NULL, code TEXT NOT NULL, partner TEXT NOT NULL, created_at INTEGER,
  raw TEXT NOT NULL, PRIMARY KEY (program, code)
);
-- state: 'draft' or 'closed'; watermark: the last arrival the draft saw
CREATE TABLE periods (
  period INTEGER PRIMARY KEY, state TEXT NOT NULL, watermark INTEGER NOT NULL,
  draft_hash TEXT NOT NULL
);
-- rowid = period * 10^10 + position, so a period's draft is one rowid range
CREATE TABLE ledger (
  pos INTEGER PRIMARY KEY, id TEXT NOT NULL, period INTEGER NOT NULL,
  partner TEXT NOT NULL, program TEXT NOT NULL, kind TEXT NOT NULL, amount TEXT NOT NULL,
  currency TEXT NOT NULL, rule TEXT NOT NULL, sources TEXT NOT NULL, event_day INTEGER NOT NULL,
  reason TEXT NOT NULL, calc TEXT NOT NULL, adjusts TEXT NOT NULL
);
CREATE TABLE statements (
  period INTEGER NOT NULL, partner TEXT NOT NULL, program TEXT NOT NULL, currency TEXT NOT NULL,
  earned TEXT NOT NULL, reversed TEXT NOT NULL, adjusted TEXT NOT NULL, carried_in TEXT NOT NULL,
  pending TEXT NOT NULL, payable TEXT NOT NULL, carried_out TEXT NOT NULL,
  model TEXT NOT NULL, PRIMARY KEY (period, partner, program)
) WITHOUT ROWID;
CREATE TABLE invoices (
  pos INTEGER PRIMARY KEY, id TEXT NOT NULL, period INTEGER NOT NULL, partner TEXT NOT NULL,
  program TEXT NOT NULL, txn_id TEXT NOT NULL, list_amount TEXT NOT NULL,
  discount_percent TEXT NOT NULL, amount_due TEXT NOT NULL, currency TEXT NOT NULL,
  source TEXT NOT NULL, calc TEXT NOT NULL
);
CREATE TABLE rules (
  period INTEGER NOT NULL, rule TEXT NOT NULL, program TEXT NOT NULL, model TEXT NOT NULL,
  description TEXT NOT NULL, PRIMARY KEY (period, rule)
) WITHOUT ROWID;
CREATE TABLE stats (
  period INTEGER NOT NULL, program TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
  PRIMARY KEY (period, program, name)
) WITHOUT ROWID;
"#,
    ),
    (
        2,
        "fraud",
        r#"
-- the edge's fraud signals of clicks (and a conversion's own visitor)
ALTER TABLE events ADD COLUMN visitor TEXT;
ALTER TABLE events ADD COLUMN asn INTEGER;
ALTER TABLE events ADD COLUMN datacenter INTEGER;
ALTER TABLE events ADD COLUMN has_referrer INTEGER;
-- flagged conversions of a period's draft, replaced with it
CREATE TABLE fraud (
  period INTEGER NOT NULL, pos INTEGER NOT NULL, event TEXT NOT NULL, entry TEXT NOT NULL,
  partner TEXT NOT NULL, program TEXT NOT NULL, score INTEGER NOT NULL, reasons TEXT NOT NULL,
  action TEXT NOT NULL, decision TEXT NOT NULL, decided_by TEXT NOT NULL, why TEXT NOT NULL,
  PRIMARY KEY (period, pos)
) WITHOUT ROWID;
CREATE INDEX fraud_entry ON fraud(entry);
-- the few entries held for review or rejected by the fraud rules, without a
-- scan of the whole ledger (the queries repeat these exact terms)
CREATE INDEX ledger_held ON ledger(pos) WHERE reason LIKE 'held:fraud:%';
CREATE INDEX ledger_fraud ON ledger(pos) WHERE reason LIKE 'fraud:%';
-- operators' decisions on held commissions, one per conversion, final
CREATE TABLE reviews (
  event TEXT PRIMARY KEY, entry TEXT NOT NULL, decision TEXT NOT NULL,
  decided_by TEXT NOT NULL, reason TEXT NOT NULL, decided_at TEXT NOT NULL, seq INTEGER NOT NULL
);
"#,
    ),
    (
        3,
        "opening_balances",
        r#"
-- balances carried over from another platform (settlement import --map),
-- booked by the first run of `period` (fixed at import) or a later one
CREATE TABLE opening_balances (
  id TEXT PRIMARY KEY, partner TEXT NOT NULL, program TEXT NOT NULL, amount TEXT NOT NULL,
  currency TEXT NOT NULL, as_of INTEGER NOT NULL, source TEXT NOT NULL, line INTEGER NOT NULL,
  period INTEGER NOT NULL
);
CREATE INDEX opening_balances_period ON opening_balances(period);
-- the ledger's opening balances, without a scan (the query repeats this term)
CREATE INDEX ledger_opening ON ledger(pos) WHERE reason LIKE 'opening_balance:%';
"#,
    ),
    (
        4,
        "erasure",
        r#"
-- customers erased with `settlement erase`: who and when, the pseudonym that
-- replaced the id (never the id itself), and how many records changed
CREATE TABLE erasures (
  id INTEGER PRIMARY KEY, pseudonym TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL,
  events INTEGER NOT NULL, clicks INTEGER NOT NULL
);
"#,
    ),
];

pub const KIND_CLICK: i64 = 0;
pub const KIND_CONVERSION: i64 = 1;
pub const KIND_DEAL: i64 = 2;
pub const KIND_MDF: i64 = 3;

pub fn kind_code(k: Kind) -> Option<i64> {
    match k {
        Kind::Click => Some(KIND_CLICK),
        Kind::Conversion => Some(KIND_CONVERSION),
        Kind::Deal => Some(KIND_DEAL),
        Kind::Mdf => Some(KIND_MDF),
        Kind::Partner | Kind::Coupon => None,
    }
}

pub fn kind_name(k: i64) -> &'static str {
    match k {
        KIND_CLICK => "click",
        KIND_CONVERSION => "conversion",
        KIND_DEAL => "deal",
        _ => "mdf",
    }
}

pub struct Store {
    pub conn: Connection,
    /// A checkpoint running beside the next steps (see
    /// [`Store::checkpoint_behind`]).
    checkpoint: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// ledger/invoice rowid range of a period
pub fn pos_base(p: Period) -> i64 {
    p.key() * 10_000_000_000
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        // only takes effect for a new file: larger pages suit bulk appends
        conn.pragma_update(None, "page_size", 16_384i64)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // 32 MiB
        conn.pragma_update(None, "cache_size", -32_768i64)?;
        // No checkpoint inside a commit: copying a large transaction's pages
        // from the WAL into the database file took as long as a tenth of a
        // run. The store checkpoints beside the next steps (after import and
        // run), and when it closes.
        conn.pragma_update(None, "wal_autocheckpoint", 0i64)?;
        let mut s = Store {
            conn,
            checkpoint: std::sync::Mutex::new(None),
        };
        s.migrate()?;
        Ok(s)
    }

    /// Starts copying what the WAL holds into the database file on a thread
    /// with its own connection, after a large commit, and returns at once.
    /// A process killed meanwhile loses nothing: the WAL holds every
    /// committed page until a checkpoint has copied it. One at a time (while
    /// one runs, the next is left to a later call or to the close), and not
    /// for a WAL of a few pages.
    pub fn checkpoint_behind(&self) {
        const WORTH: u64 = 16 << 20;
        let Some(path) = self.conn.path().filter(|p| !p.is_empty()) else {
            return;
        };
        let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
        if wal < WORTH {
            return;
        }
        let Ok(mut g) = self.checkpoint.lock() else {
            return;
        };
        if g.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        if let Some(done) = g.take() {
            let _ = done.join();
        }
        let path = path.to_string();
        *g = Some(std::thread::spawn(move || {
            // a failed checkpoint is redone by the next one (or at close)
            if let Ok(c) = Connection::open(&path) {
                let _ = c.busy_timeout(std::time::Duration::from_secs(30));
                let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        }));
    }

    /// Waits for the checkpoint [`Store::checkpoint_behind`] started, if any.
    pub fn wait_checkpoint(&self) {
        let h = self.checkpoint.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    fn migrate(&mut self) -> Result<()> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL);",
        )?;
        let current: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > newest {
            return Err(Error::Usage(format!(
                "the settlement store has schema version {current}, newer than this binary's {newest}"
            )));
        }
        for (v, name, sql) in MIGRATIONS {
            if *v <= current {
                continue;
            }
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
                params![v, name],
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// The highest closed period.
    pub fn last_closed(&self) -> Result<Option<Period>> {
        let k: Option<i64> = self.conn.query_row(
            "SELECT MAX(period) FROM periods WHERE state = 'closed'",
            [],
            |r| r.get(0),
        )?;
        Ok(k.map(Period::from_key))
    }

    pub fn period_state(&self, p: Period) -> Result<Option<(String, i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT state, watermark, draft_hash FROM periods WHERE period = ?1",
                [p.key()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    pub fn max_arrival(&self) -> Result<i64> {
        Ok(next_arrival(&self.conn)? - 1)
    }

    /// Whether any event with `ts < until_ms` arrived after `watermark`.
    pub fn late_facts(&self, watermark: i64, until_ms: i64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM events WHERE arrival > ?1 AND ts < ?2 AND kind != 0)",
            params![watermark, until_ms],
            |r| r.get(0),
        )?)
    }

    /// Periods that have events, ascending.
    pub fn event_periods(&self) -> Result<(Option<i64>, Option<i64>)> {
        Ok(self.conn.query_row(
            "SELECT MIN(ts), MAX(ts) FROM events WHERE kind != 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Loads every fact the engine needs, for events before `until_ms`.
    /// Transaction ids are kept for the programs in `txn_programs` (their
    /// invoices name them) and for sales a refund names.
    pub fn load_facts(&self, until_ms: i64, txn_programs: &[&str]) -> Result<Facts> {
        self.load_facts_with(until_ms, txn_programs, &[])
    }

    /// [`Store::load_facts`], plus what the fraud rules of `fraud_programs`
    /// read: their people's clicks and the click each conversion cites.
    pub fn load_facts_with(
        &self,
        until_ms: i64,
        txn_programs: &[&str],
        fraud_programs: &[&str],
    ) -> Result<Facts> {
        let mut f = Facts::default();
        f.fraud_programs(fraud_programs);
        // reserve for every event ever imported: untouched capacity costs no
        // memory, and the vectors never copy themselves while growing
        let upper = usize::try_from(self.max_arrival()?).unwrap_or(0);
        f.convs.reserve(upper);
        f.ids.reserve(upper);
        f.txns.reserve(upper);
        if !fraud_programs.is_empty() {
            f.reserve_clicks(upper);
        }
        let mut wanted: rustc_hash::FxHashMap<String, rustc_hash::FxHashSet<String>> =
            Default::default();
        {
            // one scan for the sales a refund names and the bot clicks
            let mut st = self.conn.prepare(
                "SELECT kind, program, original_txn_id, COALESCE(click_id, id) FROM events
                 WHERE ts < ?1 AND ((kind = 1 AND original_txn_id IS NOT NULL) OR (kind = 0 AND bot = 1))",
            )?;
            let mut rows = st.query([until_ms])?;
            while let Some(r) = rows.next()? {
                if r.get::<_, i64>(0)? == KIND_CLICK {
                    f.add_bot_click(r.get_ref(3)?.as_str()?);
                } else if let (Some(p), Some(t)) = (
                    r.get_ref(1)?.as_str_or_null()?,
                    r.get_ref(2)?.as_str_or_null()?,
                ) {
                    wanted
                        .entry(p.to_string())
                        .or_default()
                        .insert(t.to_string());
                }
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT id, program, parent, tier, status, history, email_hash FROM partners ORDER BY id")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let hist: Vec<(i64, String)> = match r.get_ref(5)?.as_str_or_null()? {
                    None => Vec::new(),
                    Some(h) => serde_json::from_str(h)
                        .map_err(|e| Error::data(format!("partner history: {e}")))?,
                };
                f.add_partner(
                    r.get_ref(0)?.as_str()?,
                    r.get_ref(1)?.as_str()?,
                    r.get_ref(2)?.as_str_or_null()?,
                    r.get_ref(3)?.as_str_or_null()?,
                    r.get_ref(4)?.as_str_or_null()?,
                    &hist,
                    r.get_ref(6)?.as_str_or_null()?,
                );
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT program, code, partner FROM coupons ORDER BY program, code")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                f.add_coupon(
                    r.get_ref(0)?.as_str()?,
                    r.get_ref(1)?.as_str()?,
                    r.get_ref(2)?.as_str()?,
                );
            }
        }
        self.read_events(&mut f, until_ms, txn_programs, fraud_programs, &wanted)?;
        f.finish();
        Ok(f)
    }

    /// One scan of the events: conversions, deals and MDF claims, and (for
    /// the fraud rules of `fraud_programs`) people's clicks. This thread
    /// steps SQLite and copies each row's fields into batches; a second one
    /// turns them into facts, so the two halves of the work overlap.
    fn read_events(
        &self,
        f: &mut Facts,
        until_ms: i64,
        txn_programs: &[&str],
        fraud_programs: &[&str],
        wanted: &rustc_hash::FxHashMap<String, rustc_hash::FxHashSet<String>>,
    ) -> Result<()> {
        let mut st = self.conn.prepare(
            "SELECT arrival, kind, ts, click_ts, bot, asn, datacenter, has_referrer, expires_at,
                    id, program, partner, click_id, event, txn_id, amount, currency, customer, coupon,
                    original_txn_id, lots, instrument, country, email_hash, status, visitor
             FROM events WHERE ts < ?1 AND (kind != 0 OR (?2 AND bot IS NOT 1))",
        )?;
        let (filler, reader) = batch::channel(Batch::new(INTS, TEXTS), 4);
        std::thread::scope(|sc| -> Result<()> {
            let builder = sc.spawn(move || -> Result<()> {
                while let Some(rows) = reader.next() {
                    for r in 0..rows.rows() {
                        add_row(f, &rows, r, txn_programs, wanted)?;
                    }
                    reader.give_back(rows);
                }
                Ok(())
            });
            let mut q = st.query(params![until_ms, !fraud_programs.is_empty()])?;
            let mut rows = filler.fresh();
            loop {
                let Some(r) = q.next()? else {
                    filler.finish(rows);
                    break;
                };
                push_row(&mut rows, r)?;
                if rows.rows() == ROWS_PER_BATCH {
                    match filler.send(rows) {
                        Some(next) => rows = next,
                        // the builder stopped on an error: its result says which
                        None => break,
                    }
                }
            }
            match builder.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

const ROWS_PER_BATCH: usize = 4096;
/// Integer columns of the facts query, first.
const INTS: usize = 9;
/// Text columns, after them.
const TEXTS: usize = 17;

/// Copies one row of the facts query out of SQLite.
fn push_row(rows: &mut Batch, r: &rusqlite::Row) -> Result<()> {
    for i in 0..INTS {
        rows.push_int(r.get::<_, Option<i64>>(i)?);
    }
    for i in INTS..INTS + TEXTS {
        rows.push_bytes(r.get_ref(i)?.as_bytes_or_null()?)
            .map_err(|_| Error::data("an event's fields are over 2 GiB"))?;
    }
    Ok(())
}

/// One row of the facts query into the facts.
fn add_row(
    f: &mut Facts,
    rows: &Batch,
    r: usize,
    txn_programs: &[&str],
    wanted: &rustc_hash::FxHashMap<String, rustc_hash::FxHashSet<String>>,
) -> Result<()> {
    // integers: arrival, kind, ts, click_ts, bot, asn, datacenter,
    // has_referrer, expires_at; texts: id, program, partner, click_id, event,
    // txn_id, amount, currency, customer, coupon, original_txn_id, lots,
    // instrument, country, email_hash, status, visitor
    let i = |c: usize| rows.int(r, c);
    // each text checked for UTF-8 once, here (the SQLite side copied bytes)
    let mut texts: [Option<&str>; TEXTS] = [None; TEXTS];
    for (c, t) in texts.iter_mut().enumerate() {
        if let Some(b) = rows.bytes(r, c) {
            *t = Some(std::str::from_utf8(b).map_err(|_| {
                Error::data(format!(
                    "event at arrival {}: a text field that is not UTF-8 in the store",
                    i(0).unwrap_or(0)
                ))
            })?);
        }
    }
    let s = |c: usize| texts[c];
    let arrival = i(0).unwrap_or(0);
    let kind = i(1).unwrap_or(-1);
    let ts = i(2).unwrap_or(0);
    let id = s(0).unwrap_or("");
    let dec = |c: usize, field: &str| -> Result<Option<rust_decimal::Decimal>> {
        match s(c) {
            None => Ok(None),
            Some(v) => parse_decimal(v)
                .map(Some)
                .ok_or_else(|| Error::data(format!("event {id}: bad {field} {v:?} in the store"))),
        }
    };
    let cur = |c: usize| s(c).and_then(Currency::parse);
    let flag = |c: usize| i(c).map(|v| v != 0);
    match kind {
        KIND_CLICK => {
            let program = s(1).unwrap_or("");
            let Some(psym) = f.click_program(program) else {
                return Ok(());
            };
            f.add_click_of(
                ClickIn {
                    key: s(3).unwrap_or(id),
                    ts,
                    arrival,
                    program,
                    partner: s(2).unwrap_or(""),
                    visitor: s(16),
                    country: s(13),
                    asn: i(5).and_then(|a| u32::try_from(a).ok()),
                    datacenter: flag(6),
                    has_referrer: flag(7),
                },
                psym,
            );
        }
        KIND_CONVERSION => {
            let program = s(1).unwrap_or("");
            let txn = s(5);
            let keep = txn.is_some_and(|t| {
                txn_programs.contains(&program)
                    || wanted.get(program).is_some_and(|w| w.contains(t))
            });
            f.add_conv(ConvIn {
                id,
                ts,
                arrival,
                program,
                partner: s(2),
                click_id: s(3),
                click_ts: i(3),
                event: s(4).unwrap_or(""),
                txn_id: if keep { txn } else { None },
                amount: dec(6, "amount")?,
                currency: cur(7),
                customer: s(8),
                coupon: s(9),
                original_txn_id: s(10),
                lots: dec(11, "lots")?,
                instrument: s(12),
                bot: i(4) == Some(1),
                country: s(13),
                email_hash: s(14),
                visitor: s(16),
            });
        }
        KIND_DEAL => f.add_deal(
            id,
            ts,
            arrival,
            s(1).unwrap_or(""),
            s(2).unwrap_or(""),
            s(8).unwrap_or(""),
            s(15).unwrap_or(""),
            i(8),
        ),
        KIND_MDF => {
            if let (Some(a), Some(c)) = (dec(6, "amount")?, cur(7)) {
                f.add_mdf(id, ts, arrival, s(1), s(2).unwrap_or(""), a, c);
            }
        }
        _ => {}
    }
    Ok(())
}

impl Drop for Store {
    /// Finishes the checkpoint in flight, then copies what later commits
    /// left in the WAL, so the next command starts from a short WAL.
    fn drop(&mut self) {
        self.wait_checkpoint();
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

fn source_name(s: edge::record::Source) -> &'static str {
    use edge::record::Source;
    match s {
        Source::Postback => "postback",
        Source::Pixel => "pixel",
        Source::Stripe => "stripe",
        Source::Shopify => "shopify",
        Source::Import => "import",
    }
}

fn next_arrival(c: &Connection) -> Result<i64> {
    let v: Option<String> = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'next_arrival'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(1))
}

/// Inserts records inside one transaction with prepared statements; call
/// [`Inserter::finish`] before committing.
pub struct Inserter<'t> {
    tx: &'t Transaction<'t>,
    next: i64,
    ev: rusqlite::CachedStatement<'t>,
    click: rusqlite::CachedStatement<'t>,
    partner: rusqlite::CachedStatement<'t>,
    coupon: rusqlite::CachedStatement<'t>,
    /// One event's row, for [`Inserter::insert`].
    one: Batch,
}

/// An event as the row the inserter binds ([`event_row`]): integers first.
pub const EVENT_INTS: usize = 11;
pub const EVENT_TEXTS: usize = 19;
// integer columns
const E_KIND: usize = 0;
/// 1 when the narrower click statement serves the event
const E_NARROW: usize = 1;
const E_SEQ: usize = 2;
const E_TS: usize = 3;
const E_CLICK_TS: usize = 4;
const E_BOT: usize = 5;
const E_APPROVED_AT: usize = 6;
const E_EXPIRES_AT: usize = 7;
const E_ASN: usize = 8;
const E_DATACENTER: usize = 9;
const E_HAS_REFERRER: usize = 10;
// text columns
const E_ID: usize = 0;
const E_PROGRAM: usize = 1;
const E_PARTNER: usize = 2;
const E_LINK: usize = 3;
const E_CLICK_ID: usize = 4;
const E_EVENT: usize = 5;
const E_TXN_ID: usize = 6;
const E_AMOUNT: usize = 7;
const E_CURRENCY: usize = 8;
const E_CUSTOMER: usize = 9;
const E_COUPON: usize = 10;
const E_ORIGINAL_TXN_ID: usize = 11;
const E_LOTS: usize = 12;
const E_INSTRUMENT: usize = 13;
const E_COUNTRY: usize = 14;
const E_EMAIL_HASH: usize = 15;
const E_STATUS: usize = 16;
const E_SOURCE: usize = 17;
const E_VISITOR: usize = 18;

/// Which statement parameter each column binds: (column, parameter), for
/// the events statement and the clicks one; the arrival is bound apart.
const EV_INTS: [(usize, usize); 10] = [
    (E_KIND, 2),
    (E_SEQ, 3),
    (E_TS, 4),
    (E_CLICK_TS, 9),
    (E_BOT, 19),
    (E_APPROVED_AT, 23),
    (E_EXPIRES_AT, 24),
    (E_ASN, 28),
    (E_DATACENTER, 29),
    (E_HAS_REFERRER, 30),
];
const EV_TEXTS: [(usize, usize); 19] = [
    (E_ID, 1),
    (E_PROGRAM, 5),
    (E_PARTNER, 6),
    (E_LINK, 7),
    (E_CLICK_ID, 8),
    (E_EVENT, 10),
    (E_TXN_ID, 11),
    (E_AMOUNT, 12),
    (E_CURRENCY, 13),
    (E_CUSTOMER, 14),
    (E_COUPON, 15),
    (E_ORIGINAL_TXN_ID, 16),
    (E_LOTS, 17),
    (E_INSTRUMENT, 18),
    (E_COUNTRY, 20),
    (E_EMAIL_HASH, 21),
    (E_STATUS, 22),
    (E_SOURCE, 25),
    (E_VISITOR, 27),
];
const EV_ARRIVAL: usize = 26;
const EVENT_BINDING: Binding = Binding {
    ints: &EV_INTS,
    texts: &EV_TEXTS,
    arrival: EV_ARRIVAL,
};
const CLICK_INTS: [(usize, usize); 6] = [
    (E_SEQ, 2),
    (E_TS, 3),
    (E_BOT, 8),
    (E_ASN, 13),
    (E_DATACENTER, 14),
    (E_HAS_REFERRER, 15),
];
const CLICK_TEXTS: [(usize, usize); 8] = [
    (E_ID, 1),
    (E_PROGRAM, 4),
    (E_PARTNER, 5),
    (E_LINK, 6),
    (E_CLICK_ID, 7),
    (E_SOURCE, 9),
    (E_COUNTRY, 10),
    (E_VISITOR, 12),
];
const CLICK_ARRIVAL: usize = 11;
const CLICK_BINDING: Binding = Binding {
    ints: &CLICK_INTS,
    texts: &CLICK_TEXTS,
    arrival: CLICK_ARRIVAL,
};

/// Which parameter of a statement each column of an event row binds:
/// (column, parameter) pairs, and the arrival's parameter.
struct Binding {
    ints: &'static [(usize, usize)],
    texts: &'static [(usize, usize)],
    arrival: usize,
}

/// Appends an event record (a click, conversion, deal or MDF claim; not a
/// registry line) to `b` as the row the inserter binds, its values in the
/// form the store keeps them. Runs on the import's parser thread, so the
/// inserter only binds. `false` for a registry record, which has no row.
pub fn event_row(r: &Record, b: &mut Batch) -> std::result::Result<bool, batch::TooLarge> {
    let Some(kind) = kind_code(r.kind) else {
        return Ok(false);
    };
    let ms = |t: Option<edge::time::Timestamp>| t.map(|t| t.ms());
    // clicks carry few fields: a narrower statement binds less
    let narrow = kind == KIND_CLICK
        && r.event.is_none()
        && r.click_ts.is_none()
        && r.txn_id.is_none()
        && r.amount.is_none()
        && r.currency.is_none()
        && r.customer.is_none()
        && r.coupon.is_none()
        && r.original_txn_id.is_none()
        && r.lots.is_none()
        && r.instrument.is_none()
        && r.email_hash.is_none()
        && r.status.is_none()
        && r.approved_at.is_none()
        && r.expires_at.is_none();
    for v in [
        Some(kind),
        Some(i64::from(narrow)),
        r.seq.map(|s| s as i64),
        ms(r.ts),
        ms(r.click_ts),
        r.bot.map(i64::from),
        ms(r.approved_at),
        ms(r.expires_at),
        r.asn.map(i64::from),
        r.datacenter.map(i64::from),
        r.has_referrer.map(i64::from),
    ] {
        b.push_int(v);
    }
    let dec = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string());
    let (amount, lots) = (dec(r.amount), dec(r.lots));
    for v in [
        r.id.as_deref(),
        r.program.as_deref(),
        r.partner.as_deref(),
        r.link.as_deref(),
        r.click_id.as_deref(),
        r.event.as_deref(),
        r.txn_id.as_deref(),
        amount.as_deref(),
        r.currency.map(|c| c.code()),
        r.customer.as_deref(),
        r.coupon.as_deref(),
        r.original_txn_id.as_deref(),
        lots.as_deref(),
        r.instrument.as_deref(),
        r.country.as_deref(),
        r.email_hash.as_deref(),
        r.status.as_deref(),
        r.source.map(source_name),
        r.visitor.as_deref(),
    ] {
        b.push_text(v)?;
    }
    Ok(true)
}

/// Binds row `r` of `b` to `st` as `how` says (the parameters it does not
/// name are NULL) with `arrival`, and runs it: 1 when inserted, 0 when the
/// id was known.
fn bind_and_run(
    st: &mut rusqlite::CachedStatement,
    how: &Binding,
    b: &Batch,
    r: usize,
    arrival: i64,
) -> rusqlite::Result<usize> {
    st.clear_bindings();
    for &(c, p) in how.ints {
        if let Some(v) = b.int(r, c) {
            st.raw_bind_parameter(p, v)?;
        }
    }
    for &(c, p) in how.texts {
        if let Some(v) = b.bytes(r, c) {
            // as TEXT: the parser pushed only strings
            let v = rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(v));
            st.raw_bind_parameter(p, v)?;
        }
    }
    st.raw_bind_parameter(how.arrival, arrival)?;
    st.raw_execute()
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportCounts {
    pub new: u64,
    pub duplicate: u64,
    pub registry: u64,
}

impl<'t> Inserter<'t> {
    pub fn new(tx: &'t Transaction<'t>) -> Result<Inserter<'t>> {
        Ok(Inserter {
            tx,
            next: next_arrival(tx)?,
            click: tx.prepare_cached(
                "INSERT OR IGNORE INTO events (id, kind, seq, ts, program, partner, link, click_id, bot, source,
                   country, arrival, visitor, asn, datacenter, has_referrer)
                 VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?,
            ev: tx.prepare_cached(
                "INSERT OR IGNORE INTO events (id, kind, seq, ts, program, partner, link, click_id, click_ts, event,
                   txn_id, amount, currency, customer, coupon, original_txn_id, lots, instrument, bot, country,
                   email_hash, status, approved_at, expires_at, source, arrival, visitor, asn, datacenter,
                   has_referrer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                   ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)",
            )?,
            partner: tx.prepare_cached(
                "INSERT INTO partners (id, program, parent, tier, status, history, currency, email_hash,
                   created_at, updated_at, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET program = excluded.program, parent = excluded.parent,
                   tier = excluded.tier, status = excluded.status, history = excluded.history,
                   currency = excluded.currency, email_hash = excluded.email_hash,
                   created_at = excluded.created_at, updated_at = excluded.updated_at, raw = excluded.raw
                 WHERE (COALESCE(excluded.updated_at, -1), excluded.raw) > (COALESCE(partners.updated_at, -1), partners.raw)",
            )?,
            coupon: tx.prepare_cached(
                "INSERT INTO coupons (program, code, partner, created_at, raw) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (program, code) DO UPDATE SET partner = excluded.partner,
                   created_at = excluded.created_at, raw = excluded.raw
                 WHERE (COALESCE(excluded.created_at, -1), excluded.raw) > (COALESCE(coupons.created_at, -1), coupons.raw)",
            )?,
            one: Batch::new(EVENT_INTS, EVENT_TEXTS),
        })
    }

    /// Records where the next import's arrival numbers start.
    pub fn finish(self) -> Result<()> {
        self.tx.execute(
            "INSERT INTO meta (key, value) VALUES ('next_arrival', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [self.next.to_string()],
        )?;
        Ok(())
    }

    /// Inserts one validated record. Events are immutable: a second line
    /// with a known id is a duplicate and changes nothing. A registry line
    /// replaces the stored one when it is newer (`updated_at`), so import
    /// order does not matter.
    pub fn insert(&mut self, r: &Record, counts: &mut ImportCounts) -> Result<()> {
        let ms = |t: Option<edge::time::Timestamp>| t.map(|t| t.ms());
        let mut one = std::mem::replace(&mut self.one, Batch::new(0, 0));
        one.clear();
        let row =
            event_row(r, &mut one).map_err(|_| Error::data("an event's fields are over 2 GiB"));
        let done = match row {
            Ok(true) => self.insert_row(&one, 0, counts),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        self.one = one;
        done?;
        match r.kind {
            Kind::Click | Kind::Conversion | Kind::Deal | Kind::Mdf => {}
            Kind::Partner => {
                let hist: Option<String> = r.history.as_ref().map(|h| {
                    let v: Vec<(i64, &str)> =
                        h.iter().map(|c| (c.at.ms(), c.status.as_str())).collect();
                    serde_json::to_string(&v).expect("history serializes")
                });
                let raw = serde_json::to_string(r).expect("record serializes");
                self.partner.execute(params![
                    r.id,
                    r.program,
                    r.parent,
                    r.tier,
                    r.status,
                    hist,
                    r.currency.map(|c| c.code()),
                    r.email_hash,
                    ms(r.created_at),
                    ms(r.updated_at),
                    raw
                ])?;
                counts.registry += 1;
            }
            Kind::Coupon => {
                let raw = serde_json::to_string(r).expect("record serializes");
                self.coupon.execute(params![
                    r.program,
                    r.code,
                    r.partner,
                    ms(r.created_at),
                    raw
                ])?;
                counts.registry += 1;
            }
        }
        Ok(())
    }

    /// Inserts row `r` of `b`, an event as [`event_row`] made it; a known
    /// id is a duplicate and changes nothing.
    pub fn insert_row(&mut self, b: &Batch, r: usize, counts: &mut ImportCounts) -> Result<()> {
        let n = if b.int(r, E_NARROW) == Some(1) {
            bind_and_run(&mut self.click, &CLICK_BINDING, b, r, self.next)?
        } else {
            bind_and_run(&mut self.ev, &EVENT_BINDING, b, r, self.next)?
        };
        if n == 1 {
            self.next += 1;
            counts.new += 1;
        } else {
            counts.duplicate += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::parse_line;

    type Row = Vec<rusqlite::types::Value>;

    fn stored(store: &Store, id: &str) -> Row {
        store
            .conn
            .query_row(
                "SELECT id, kind, seq, ts, program, partner, link, click_id, click_ts, event, txn_id,
                   amount, currency, customer, coupon, original_txn_id, lots, instrument, bot, country,
                   email_hash, status, approved_at, expires_at, source, arrival, visitor, asn,
                   datacenter, has_referrer
                 FROM events WHERE id = ?1",
                [id],
                |r| (0..30).map(|i| r.get(i)).collect(),
            )
            .unwrap()
    }

    fn import(store: &mut Store, lines: &[&str]) -> ImportCounts {
        let records: Vec<Record> = lines.iter().map(|l| parse_line(l).unwrap()).collect();
        crate::import::import_records(store, &records).unwrap()
    }

    /// Every field of an event lands in its own column: a parameter bound to
    /// the wrong place would swap two of them.
    #[test]
    fn every_field_lands_in_its_column() {
        use rusqlite::types::Value::{Integer as I, Null, Text};
        let t = |s: &str| Text(s.to_string());
        let ms = |s: &str| I(edge::time::Timestamp::parse(s).unwrap().ms());
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let counts = import(
            &mut store,
            &[
                r#"{"seq":5,"id":"c1","type":"click","ts":"2026-11-01T00:00:01.000Z","program":"p","partner":"pa","link":"l1","click_id":"k1","bot":true,"source":"pixel","country":"DE","visitor":"v1","asn":64500,"datacenter":false,"has_referrer":true}"#,
                r#"{"seq":6,"id":"c2","type":"click","ts":"2026-11-01T00:00:02.000Z","program":"p","partner":"pa","click_id":"k2","click_ts":"2026-11-01T00:00:00.000Z"}"#,
                r#"{"seq":7,"id":"e1","type":"conversion","ts":"2026-11-02T00:00:00.000Z","program":"p","partner":"pa","link":"l1","click_id":"k1","click_ts":"2026-11-01T00:00:01.000Z","event":"refund","txn_id":"t2","amount":"10.50","currency":"EUR","customer":"cu","coupon":"CP","original_txn_id":"t1","lots":"2.5","instrument":"EURUSD","bot":false,"country":"FR","email_hash":"eh","source":"stripe","visitor":"v2","asn":64501,"datacenter":true,"has_referrer":false}"#,
                r#"{"id":"d1","type":"deal","ts":"2026-11-03T00:00:00.000Z","program":"p","partner":"pa","customer":"cu","status":"approved","approved_at":"2026-11-04T00:00:00.000Z","expires_at":"2026-12-04T00:00:00.000Z"}"#,
                // a known id changes nothing
                r#"{"seq":8,"id":"c1","type":"click","ts":"2026-11-05T00:00:00.000Z","program":"q"}"#,
            ],
        );
        assert_eq!((counts.new, counts.duplicate), (4, 1));
        assert_eq!(
            stored(&store, "c1"),
            vec![
                t("c1"),
                I(0),
                I(5),
                ms("2026-11-01T00:00:01.000Z"),
                t("p"),
                t("pa"),
                t("l1"),
                t("k1"),
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                I(1),
                t("DE"),
                Null,
                Null,
                Null,
                Null,
                t("pixel"),
                I(1),
                t("v1"),
                I(64500),
                I(0),
                I(1),
            ]
        );
        // a click with a click_ts takes the statement of every field
        assert_eq!(
            stored(&store, "c2"),
            vec![
                t("c2"),
                I(0),
                I(6),
                ms("2026-11-01T00:00:02.000Z"),
                t("p"),
                t("pa"),
                Null,
                t("k2"),
                ms("2026-11-01T00:00:00.000Z"),
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                I(2),
                Null,
                Null,
                Null,
                Null,
            ]
        );
        assert_eq!(
            stored(&store, "e1"),
            vec![
                t("e1"),
                I(1),
                I(7),
                ms("2026-11-02T00:00:00.000Z"),
                t("p"),
                t("pa"),
                t("l1"),
                t("k1"),
                ms("2026-11-01T00:00:01.000Z"),
                t("refund"),
                t("t2"),
                t("10.50"),
                t("EUR"),
                t("cu"),
                t("CP"),
                t("t1"),
                t("2.5"),
                t("EURUSD"),
                I(0),
                t("FR"),
                t("eh"),
                Null,
                Null,
                Null,
                t("stripe"),
                I(3),
                t("v2"),
                I(64501),
                I(1),
                I(0),
            ]
        );
        assert_eq!(
            stored(&store, "d1"),
            vec![
                t("d1"),
                I(2),
                Null,
                ms("2026-11-03T00:00:00.000Z"),
                t("p"),
                t("pa"),
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                t("cu"),
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                t("approved"),
                ms("2026-11-04T00:00:00.000Z"),
                ms("2026-12-04T00:00:00.000Z"),
                Null,
                I(4),
                Null,
                Null,
                Null,
                Null,
            ]
        );
        assert_eq!(store.max_arrival().unwrap(), 4);
    }
}
