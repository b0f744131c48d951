//! The settlement store: one SQLite file (WAL), versioned migrations, and
//! every write in a transaction, so a process killed at any instant leaves
//! either the old state or the new one.

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
            let mut st = self.conn.prepare(
                "SELECT DISTINCT program, original_txn_id FROM events
                 WHERE kind = 1 AND original_txn_id IS NOT NULL AND ts < ?1",
            )?;
            let mut rows = st.query([until_ms])?;
            while let Some(r) = rows.next()? {
                if let (Some(p), Some(t)) = (
                    r.get_ref(0)?.as_str_or_null()?,
                    r.get_ref(1)?.as_str_or_null()?,
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
        {
            let mut st = self.conn.prepare(
                "SELECT COALESCE(click_id, id) FROM events WHERE kind = 0 AND bot = 1 AND ts < ?1",
            )?;
            let mut rows = st.query([until_ms])?;
            while let Some(r) = rows.next()? {
                f.add_bot_click(r.get_ref(0)?.as_str()?);
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
        let (tx, rx) = std::sync::mpsc::sync_channel::<Rows>(4);
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Rows>();
        std::thread::scope(|sc| -> Result<()> {
            let builder = sc.spawn(move || -> Result<()> {
                for rows in rx {
                    for r in 0..rows.len() {
                        add_row(f, &rows, r, txn_programs, wanted)?;
                    }
                    // handed back to be filled again (and freed where it was
                    // allocated)
                    let _ = back_tx.send(rows);
                }
                Ok(())
            });
            let mut q = st.query(params![until_ms, !fraud_programs.is_empty()])?;
            let mut rows = Rows::default();
            let mut sent = Ok(());
            while let Some(r) = q.next()? {
                rows.push(r)?;
                if rows.len() == ROWS_PER_BATCH {
                    let fresh = back_rx.try_recv().map(Rows::cleared).unwrap_or_default();
                    if tx.send(std::mem::replace(&mut rows, fresh)).is_err() {
                        // the builder stopped on an error: its result says which
                        sent = Err(());
                        break;
                    }
                }
            }
            if sent.is_ok() && rows.len() > 0 {
                let _ = tx.send(rows);
            }
            drop(tx);
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
/// An integer column's NULL in [`Rows`].
const NULL_INT: i64 = i64::MIN;
/// A text column's NULL in [`Rows`]: the top bit of its end offset.
const NULL_TEXT: u32 = 1 << 31;

/// Rows of the facts query copied out of SQLite: integers in one vector,
/// texts in one buffer with their end offsets.
#[derive(Default)]
struct Rows {
    ints: Vec<i64>,
    text: String,
    ends: Vec<u32>,
}

impl Rows {
    fn cleared(mut self) -> Rows {
        self.ints.clear();
        self.text.clear();
        self.ends.clear();
        self
    }

    fn len(&self) -> usize {
        self.ints.len() / INTS
    }

    fn push(&mut self, r: &rusqlite::Row) -> Result<()> {
        for i in 0..INTS {
            self.ints
                .push(r.get::<_, Option<i64>>(i)?.unwrap_or(NULL_INT));
        }
        for i in INTS..INTS + TEXTS {
            match r.get_ref(i)?.as_str_or_null()? {
                Some(t) => {
                    self.text.push_str(t);
                    let end = u32::try_from(self.text.len())
                        .ok()
                        .filter(|&e| e < NULL_TEXT)
                        .ok_or_else(|| Error::data("an event's fields are over 2 GiB"))?;
                    self.ends.push(end);
                }
                None => {
                    let end = self.ends.last().map_or(0, |e| e & !NULL_TEXT);
                    self.ends.push(end | NULL_TEXT);
                }
            }
        }
        Ok(())
    }

    /// Integer column `c` (0-based among the integers) of row `r`.
    fn int(&self, r: usize, c: usize) -> Option<i64> {
        Some(self.ints[r * INTS + c]).filter(|&v| v != NULL_INT)
    }

    /// Text column `c` (0-based among the texts) of row `r`.
    fn text(&self, r: usize, c: usize) -> Option<&str> {
        let k = r * TEXTS + c;
        let end = self.ends[k];
        if end & NULL_TEXT != 0 {
            return None;
        }
        let start = if k == 0 {
            0
        } else {
            self.ends[k - 1] & !NULL_TEXT
        };
        self.text.get(start as usize..end as usize)
    }
}

/// One row of the facts query into the facts.
fn add_row(
    f: &mut Facts,
    rows: &Rows,
    r: usize,
    txn_programs: &[&str],
    wanted: &rustc_hash::FxHashMap<String, rustc_hash::FxHashSet<String>>,
) -> Result<()> {
    // integers: arrival, kind, ts, click_ts, bot, asn, datacenter,
    // has_referrer, expires_at; texts: id, program, partner, click_id, event,
    // txn_id, amount, currency, customer, coupon, original_txn_id, lots,
    // instrument, country, email_hash, status, visitor
    let i = |c: usize| rows.int(r, c);
    let s = |c: usize| rows.text(r, c);
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
        match kind_code(r.kind) {
            // clicks carry few fields: a narrower statement binds less
            Some(KIND_CLICK)
                if r.event.is_none()
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
                    && r.expires_at.is_none() =>
            {
                let n = self.click.execute(params![
                    r.id,
                    r.seq.map(|s| s as i64),
                    ms(r.ts),
                    r.program,
                    r.partner,
                    r.link,
                    r.click_id,
                    r.bot.map(i64::from),
                    r.source.map(source_name),
                    r.country,
                    self.next,
                    r.visitor,
                    r.asn,
                    r.datacenter.map(i64::from),
                    r.has_referrer.map(i64::from),
                ])?;
                if n == 1 {
                    self.next += 1;
                    counts.new += 1;
                } else {
                    counts.duplicate += 1;
                }
            }
            Some(k) => {
                let n = self.ev.execute(params![
                    r.id,
                    k,
                    r.seq.map(|s| s as i64),
                    ms(r.ts),
                    r.program,
                    r.partner,
                    r.link,
                    r.click_id,
                    ms(r.click_ts),
                    r.event,
                    r.txn_id,
                    r.amount.map(|a| a.to_string()),
                    r.currency.map(|c| c.code()),
                    r.customer,
                    r.coupon,
                    r.original_txn_id,
                    r.lots.map(|a| a.to_string()),
                    r.instrument,
                    r.bot.map(i64::from),
                    r.country,
                    r.email_hash,
                    r.status,
                    ms(r.approved_at),
                    ms(r.expires_at),
                    r.source.map(source_name),
                    self.next,
                    r.visitor,
                    r.asn,
                    r.datacenter.map(i64::from),
                    r.has_referrer.map(i64::from),
                ])?;
                if n == 1 {
                    self.next += 1;
                    counts.new += 1;
                } else {
                    counts.duplicate += 1;
                }
            }
            None if r.kind == Kind::Partner => {
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
            None => {
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
}
