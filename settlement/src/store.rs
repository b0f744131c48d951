//! The settlement store: one SQLite file (WAL), versioned migrations, and
//! every write in a transaction, so a process killed at any instant leaves
//! either the old state or the new one.

use crate::batch;
use crate::error::{Error, Result};
use crate::events::{
    self, Block, Cols, IdIndex, E_AMOUNT, E_ASN, E_BOT, E_CLICK_ID, E_CLICK_TS, E_COUNTRY,
    E_COUPON, E_CURRENCY, E_CUSTOMER, E_DATACENTER, E_EMAIL_HASH, E_EVENT, E_EXPIRES_AT,
    E_HAS_REFERRER, E_ID, E_INSTRUMENT, E_KIND, E_LOTS, E_ORIGINAL_TXN_ID, E_PARTNER, E_PROGRAM,
    E_SOURCE, E_STATUS, E_TS, E_TXN_ID, E_VISITOR,
};
pub use crate::events::{event_row, EVENT_INTS, EVENT_TEXTS};
use crate::facts::{ClickIn, ConvIn, ConvSyms, Facts, Interner, Namer};
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
    // the rows of `events` move into blocks (events::move_rows_into_blocks)
    (5, "event_blocks", crate::events::SCHEMA),
    // the ledger's rows move into blocks (ledger_blocks::move_rows_into_blocks)
    (6, "ledger_blocks", crate::ledger_blocks::SCHEMA),
    // no table changes: the ledger's blocks written from here on are packed
    // (events::Block::encode_packed), which a binary before it cannot read
    (
        7,
        "packed_ledger_blocks",
        "-- ledger_blocks.body may be a packed block (settlement/src/events.rs)",
    ),
    // the invoice lines move into blocks, as the ledger's did
    // (ledger_blocks::move_invoice_rows_into_blocks)
    (8, "invoice_blocks", crate::ledger_blocks::INVOICE_SCHEMA),
    // the last closed period when each draft was computed: `close` refuses
    // a draft computed before the period before it closed (its late facts
    // would be in neither); drafts already stored are taken as computed
    // after the last close, as before
    (
        9,
        "draft_basis",
        "ALTER TABLE periods ADD COLUMN basis INTEGER;
UPDATE periods SET basis = (SELECT MAX(period) FROM periods WHERE state = 'closed')
  WHERE state = 'draft';",
    ),
    // a coupon line's `updated_at`: a coupon moved to another partner keeps
    // its `created_at`, and the newer line must win (before, the larger
    // line of two with one `created_at` did, so a move could be ignored)
    (
        10,
        "coupon_updated_at",
        "ALTER TABLE coupons ADD COLUMN updated_at INTEGER;
UPDATE coupons SET updated_at =
  CAST(round(unixepoch(json_extract(raw, '$.updated_at'), 'subsec') * 1000) AS INTEGER)
  WHERE json_valid(raw) AND json_extract(raw, '$.updated_at') IS NOT NULL;",
    ),
    // the partners an erased customer was (its id was theirs, or its email
    // hash): `settlement erase` keeps the self-referral verdict, which the
    // pseudonym and the dropped email hash could no longer give
    (
        11,
        "erased_self_referrals",
        "CREATE TABLE erased_self_referrals (
  pseudonym TEXT NOT NULL, partner TEXT NOT NULL, PRIMARY KEY (pseudonym, partner)
) WITHOUT ROWID;",
    ),
    // the last review (`reviews.seq`) each draft saw: a release of an
    // entry a fraud rule rejected, or a reject of a held one (`restates`),
    // decided after that, restates the closed period in the next one as
    // late facts do (rejects stored before count as seen). Of the
    // decisions stored, the releases whose entry is still a rejected row of
    // the last period there is (decided after its draft, or after its
    // close, where a binary before this one booked nothing) are taken as
    // unseen by every period, so the next run books them; the others as
    // seen: a later period's draft took such a release in (a lifetime lock,
    // a ladder), which an unseen one would book again
    (
        12,
        "draft_review_seq",
        "ALTER TABLE periods ADD COLUMN review_seq INTEGER;
ALTER TABLE reviews ADD COLUMN restates INTEGER NOT NULL DEFAULT 0;
UPDATE reviews SET restates = 1 WHERE decision = 'release' AND entry IN
  (SELECT l.id FROM ledger l WHERE l.kind = 'rejected' AND l.reason LIKE 'fraud:%'
     AND NOT EXISTS (SELECT 1 FROM periods q WHERE q.period > l.period));
UPDATE periods SET review_seq = COALESCE(
  (SELECT MIN(seq) - 1 FROM reviews WHERE restates = 1),
  (SELECT COALESCE(MAX(seq), 0) FROM reviews));",
    ),
];

pub use crate::events::{kind_code, KIND_CLICK, KIND_CONVERSION, KIND_DEAL, KIND_MDF};

pub fn kind_name(k: i64) -> &'static str {
    match k {
        KIND_CLICK => "click",
        KIND_CONVERSION => "conversion",
        KIND_DEAL => "deal",
        _ => "mdf",
    }
}

/// How long a connection to the store waits for another writer.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Store {
    pub conn: Connection,
    /// A checkpoint running beside the next steps (see
    /// [`Store::checkpoint_behind`]).
    checkpoint: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The import's duplicate check, kept between this process's
    /// transactions while it is current (see [`Inserter::new`]).
    pub ids: std::cell::RefCell<Option<IdIndex>>,
}

/// Whether SQLite refused for another connection's lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// `f` again every 25 ms while SQLite answers busy, until `deadline`.
fn retry_busy<T>(
    deadline: std::time::Instant,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    loop {
        match f() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            r => return r,
        }
    }
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
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // while an import holds the store in rollback mode (`bulk_mode`),
        // SQLite answers the switch to WAL with SQLITE_BUSY at once, without
        // the busy handler (a read lock waiting on a writer could deadlock):
        // wait for it here as the busy timeout would
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        retry_busy(deadline, || conn.pragma_update(None, "journal_mode", "WAL"))?;
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
            ids: std::cell::RefCell::new(None),
        };
        loop {
            match s.migrate() {
                Err(Error::Store(e)) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                r => break r?,
            }
        }
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
                let _ = c.busy_timeout(BUSY_TIMEOUT);
                let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        }));
    }

    /// Switches the store from its WAL to a rollback journal for one large
    /// transaction that mostly appends (an import), with `synchronous =
    /// FULL` while it lasts; true if it did. A process killed meanwhile
    /// leaves a hot journal that the next open rolls back (and the file cut
    /// back to its old length). Another connection to the store (another
    /// process) keeps it in WAL: SQLite refuses the switch at once, and the
    /// transaction then goes through the WAL as usual.
    pub fn bulk_mode(&self) -> bool {
        // the checkpoint's own connection would refuse the switch
        self.wait_checkpoint();
        // refused at once rather than after the busy timeout: the import
        // then goes through the WAL instead of waiting
        let _ = self.conn.busy_timeout(std::time::Duration::ZERO);
        let mode = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0));
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        match mode {
            Ok(m) if m.eq_ignore_ascii_case("delete") => {
                let _ = self.conn.pragma_update(None, "synchronous", "FULL");
                true
            }
            _ => false,
        }
    }

    /// Back to the WAL after [`Store::bulk_mode`]. Best effort: if another
    /// process has opened the store since the commit, SQLite refuses the
    /// switch; the store stays in rollback mode, as correct, until the next
    /// [`Store::open`] sets WAL again.
    pub fn leave_bulk_mode(&self) {
        let _ = self.conn.pragma_update(None, "synchronous", "NORMAL");
        let _ = self.conn.busy_timeout(std::time::Duration::ZERO);
        let _ = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0));
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
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
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            if *v == 5 {
                crate::events::move_rows_into_blocks(&tx)?;
            }
            if *v == 6 {
                crate::ledger_blocks::move_rows_into_blocks(&tx)?;
            }
            if *v == 8 {
                crate::ledger_blocks::move_invoice_rows_into_blocks(&tx)?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
                params![v, name],
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Sets `key` in `meta` through `c` (the store's connection, or a
    /// transaction on it, so the value commits with what it describes).
    pub fn set_meta(c: &Connection, key: &str, value: &str) -> Result<()> {
        c.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
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

    /// The last closed period when `p`'s draft was computed (`None`: none
    /// was closed, or `p` has no draft).
    pub fn draft_basis(&self, p: Period) -> Result<Option<Period>> {
        let k: Option<i64> = self
            .conn
            .query_row(
                "SELECT basis FROM periods WHERE period = ?1",
                [p.key()],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(k.map(Period::from_key))
    }

    /// The last operator's decision (`reviews.seq`) period `p`'s draft
    /// saw (0: none, or no draft).
    pub fn review_seq(&self, p: Period) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT review_seq FROM periods WHERE period = ?1",
                [p.key()],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten()
            .unwrap_or(0))
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

    /// Whether any event with `ts < until_ms` arrived after `watermark` and
    /// by `upto` (the run's own watermark: later ones wait for the next run).
    pub fn late_facts(&self, watermark: i64, upto: i64, until_ms: i64) -> Result<bool> {
        let mut late = false;
        events::scan(
            &self.conn,
            Cols::of(&[E_KIND, E_TS], &[]),
            "first + n - 1 > ?1 AND first <= ?3 AND fact_min_ts < ?2",
            params![watermark, until_ms, upto],
            |b| {
                late = late
                    || (0..b.rows()).any(|r| {
                        b.arrival(r) > watermark
                            && b.arrival(r) <= upto
                            && b.int(E_KIND, r) != Some(KIND_CLICK)
                            && b.int(E_TS, r).is_some_and(|t| t < until_ms)
                    });
                Ok(())
            },
        )?;
        Ok(late)
    }

    /// The first and last time of a conversion, deal or MDF claim.
    pub fn event_periods(&self) -> Result<(Option<i64>, Option<i64>)> {
        Ok(self.conn.query_row(
            "SELECT MIN(fact_min_ts), MAX(fact_max_ts) FROM event_blocks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// The instant of the store's first conversion or MDF claim: the first
    /// fact that books money (a deal registration only attributes).
    pub fn first_booking_ms(&self) -> Result<Option<i64>> {
        let mut blocks = self.conn.prepare(
            "SELECT first, fact_min_ts FROM event_blocks WHERE fact_min_ts IS NOT NULL
             ORDER BY fact_min_ts",
        )?;
        let mut body = self
            .conn
            .prepare("SELECT body FROM event_blocks WHERE first = ?1")?;
        let mut rows = blocks.query([])?;
        let mut b = Block::default();
        let mut best: Option<i64> = None;
        while let Some(r) = rows.next()? {
            let (first, lo): (i64, i64) = (r.get(0)?, r.get(1)?);
            // the blocks come by their first fact: none after can be earlier
            if best.is_some_and(|t| t <= lo) {
                break;
            }
            let blob: Vec<u8> = body.query_row([first], |r| r.get(0))?;
            b.decode(first, &blob, Cols::of(&[E_KIND, E_TS], &[]))?;
            for i in 0..b.rows() {
                if matches!(
                    b.int(E_KIND, i),
                    Some(events::KIND_CONVERSION | events::KIND_MDF)
                ) {
                    if let Some(t) = b.int(E_TS, i) {
                        best = Some(best.map_or(t, |x| x.min(t)));
                    }
                }
            }
        }
        Ok(best)
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
        // the import's duplicate check (hundreds of MB at ten million
        // events) is not kept beside the facts: an import after this run
        // in the same process (nightly's next pull) reads it again
        drop(self.ids.borrow_mut().take());
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
        let mut wanted = Kept::default();
        // the key of each conversion with a transaction id, to find those
        // that repeat another's
        let mut keys: Vec<u64> = Vec::new();
        // one scan for the sales a refund names, the repeated transaction
        // ids and the bot clicks (the blocks read and decoded beside the
        // counting)
        let ph = crate::timing::Phase::start("facts: first scan");
        events::scan_beside(
            &self.conn,
            Cols::of(
                &[E_KIND, E_TS, E_BOT],
                &[
                    E_ID,
                    E_PROGRAM,
                    E_EVENT,
                    E_TXN_ID,
                    E_CLICK_ID,
                    E_ORIGINAL_TXN_ID,
                ],
            ),
            "min_ts < ?1",
            [until_ms],
            |b| {
                for r in 0..b.rows() {
                    if b.int(E_TS, r).is_none_or(|t| t >= until_ms) {
                        continue;
                    }
                    match b.int(E_KIND, r) {
                        Some(KIND_CLICK) if b.int(E_BOT, r) == Some(1) => {
                            let key = match b.text(E_CLICK_ID, r)? {
                                Some(k) => k,
                                None => b.text(E_ID, r)?.unwrap_or(""),
                            };
                            f.add_bot_click(key);
                        }
                        Some(KIND_CONVERSION) => {
                            let p = b.text(E_PROGRAM, r)?;
                            if let (Some(p), Some(t)) = (p, b.text(E_ORIGINAL_TXN_ID, r)?) {
                                wanted
                                    .named
                                    .entry(p.to_string())
                                    .or_default()
                                    .insert(t.to_string());
                            }
                            if let (Some(p), Some(t)) = (p, b.text(E_TXN_ID, r)?) {
                                if !t.is_empty() {
                                    keys.push(txn_key(p, b.text(E_EVENT, r)?.unwrap_or(""), t));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Ok(())
            },
        )?;
        keys.sort_unstable();
        wanted.repeated = keys
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        drop(keys);
        drop(ph);
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
            let mut st = self.conn.prepare(
                "SELECT pseudonym, partner FROM erased_self_referrals ORDER BY pseudonym, partner",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                f.add_erased_self_referral(r.get_ref(0)?.as_str()?, r.get_ref(1)?.as_str()?);
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
        let ph = crate::timing::Phase::start("facts: read events");
        self.read_events(&mut f, until_ms, txn_programs, fraud_programs, &wanted)?;
        drop(ph);
        f.finish();
        // the symbol table's and the loader's freed buffers
        crate::mem::trim();
        Ok(f)
    }

    /// One scan of the events: conversions, deals and MDF claims, and (for
    /// the fraud rules of `fraud_programs`) people's clicks. This thread
    /// reads and decodes the blocks and turns the names in them into
    /// symbols ([`Namer`]); a second one turns them into facts, so the
    /// halves of the work overlap.
    fn read_events(
        &self,
        f: &mut Facts,
        until_ms: i64,
        txn_programs: &[&str],
        fraud_programs: &[&str],
        wanted: &Kept,
    ) -> Result<()> {
        let clicks = !fraud_programs.is_empty();
        // without fraud rules, blocks of clicks alone are not read
        let mut st = self.conn.prepare(if clicks {
            "SELECT first, body FROM event_blocks WHERE min_ts < ?1 ORDER BY first"
        } else {
            "SELECT first, body FROM event_blocks WHERE fact_min_ts < ?1 ORDER BY first"
        })?;
        let (filler, reader) = batch::channel(Named::default(), 4);
        let (mut syms, mut namer) = f.take_naming();
        let built = std::thread::scope(|sc| -> Result<()> {
            let f = &mut *f;
            let builder = sc.spawn(move || -> Result<()> {
                while let Some(n) = reader.next() {
                    for (r, names) in n.names.iter().enumerate() {
                        add_row(f, &n.block, r, names, txn_programs, wanted)?;
                    }
                    reader.give_back(n);
                }
                Ok(())
            });
            let mut q = st.query([until_ms])?;
            let named = (|| -> Result<()> {
                while let Some(r) = q.next()? {
                    let mut n = filler.fresh();
                    n.block
                        .decode(r.get(0)?, r.get_ref(1)?.as_blob()?, FACT_COLS)?;
                    for r in 0..n.block.rows() {
                        // the customers, a million names, miss the cache:
                        // the slot of one a few rows on is asked for now
                        if let Ok(Some(c)) = n.block.text(E_CUSTOMER, r + 8) {
                            syms.prefetch(c);
                        }
                        // and its bytes, once its slot is at hand
                        if let Ok(Some(c)) = n.block.text(E_CUSTOMER, r + 4) {
                            syms.prefetch_bytes(c);
                        }
                        let names = name_row(&mut namer, &mut syms, &n.block, r, until_ms, clicks)?;
                        n.names.push(names);
                    }
                    if filler.send(n).is_none() {
                        // the builder stopped on an error: its result says which
                        break;
                    }
                }
                Ok(())
            })();
            drop(filler);
            let built = match builder.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            };
            // the builder's error comes first: the namer stopped because of it
            built.and(named)
        });
        f.put_naming((syms, namer));
        built
    }
}

/// A decoded block of events, and what the facts take of each row with the
/// symbols of its names.
#[derive(Clone, Default)]
struct Named {
    block: Block,
    names: Vec<RowNames>,
}

impl batch::Refill for Named {
    fn clear(&mut self) {
        self.block.clear();
        self.names.clear();
    }
    fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What the facts take of one row of a block.
#[derive(Clone, Copy)]
enum RowNames {
    /// Nothing: after the period, a bot's click, or a click of a program
    /// without fraud rules.
    Skip,
    Conv(ConvSyms),
    /// A person's click: its program and partner.
    Click(u32, u32),
    Deal([u32; 3]),
    /// An MDF claim with an amount and a known currency: its partner and
    /// program.
    Mdf(u32, Option<u32>),
}

/// The names of row `r` of a block as symbols, in the order
/// [`Facts`]' own `add_` methods intern them.
fn name_row(
    namer: &mut Namer,
    syms: &mut Interner,
    b: &Block,
    r: usize,
    until_ms: i64,
    clicks: bool,
) -> Result<RowNames> {
    if b.int(E_TS, r).is_none_or(|t| t >= until_ms) {
        return Ok(RowNames::Skip);
    }
    let s = |c: usize| b.text(c, r);
    Ok(match b.int(E_KIND, r) {
        Some(KIND_CLICK) if clicks && b.int(E_BOT, r) != Some(1) => {
            match namer.click_program(syms, s(E_PROGRAM)?.unwrap_or("")) {
                Some(p) => {
                    RowNames::Click(p, namer.click_partner(syms, s(E_PARTNER)?.unwrap_or("")))
                }
                None => RowNames::Skip,
            }
        }
        Some(KIND_CONVERSION) => RowNames::Conv(namer.conv(
            syms,
            &ConvIn {
                program: s(E_PROGRAM)?.unwrap_or(""),
                partner: s(E_PARTNER)?,
                event: s(E_EVENT)?.unwrap_or(""),
                customer: s(E_CUSTOMER)?,
                original_txn_id: s(E_ORIGINAL_TXN_ID)?,
                coupon: s(E_COUPON)?,
                country: s(E_COUNTRY)?,
                instrument: s(E_INSTRUMENT)?,
                email_hash: s(E_EMAIL_HASH)?,
                ..ConvIn::default()
            },
        )),
        Some(KIND_DEAL) => RowNames::Deal(namer.deal(
            syms,
            s(E_PROGRAM)?.unwrap_or(""),
            s(E_PARTNER)?.unwrap_or(""),
            s(E_CUSTOMER)?.unwrap_or(""),
        )),
        Some(KIND_MDF)
            if s(E_AMOUNT)?.is_some() && s(E_CURRENCY)?.and_then(Currency::parse).is_some() =>
        {
            let (partner, program) = namer.mdf(syms, s(E_PROGRAM)?, s(E_PARTNER)?.unwrap_or(""));
            RowNames::Mdf(partner, program)
        }
        _ => RowNames::Skip,
    })
}

/// The columns the facts read.
const FACT_COLS: Cols = Cols::of(
    &[
        E_KIND,
        E_TS,
        E_CLICK_TS,
        E_BOT,
        E_ASN,
        E_DATACENTER,
        E_HAS_REFERRER,
        E_EXPIRES_AT,
    ],
    &[
        E_ID,
        E_PROGRAM,
        E_PARTNER,
        E_CLICK_ID,
        E_EVENT,
        E_TXN_ID,
        E_AMOUNT,
        E_CURRENCY,
        E_CUSTOMER,
        E_COUPON,
        E_ORIGINAL_TXN_ID,
        E_LOTS,
        E_INSTRUMENT,
        E_COUNTRY,
        E_EMAIL_HASH,
        E_STATUS,
        E_VISITOR,
        E_SOURCE,
    ],
);

/// The transaction ids the facts keep beside the programs whose invoices
/// name them: the sales a refund names (program -> txn ids) and the
/// conversions whose program, event and txn id another shares (their
/// [`txn_key`]s), which the engine counts once.
#[derive(Default)]
struct Kept {
    named: rustc_hash::FxHashMap<String, rustc_hash::FxHashSet<String>>,
    repeated: rustc_hash::FxHashSet<u64>,
}

/// A 64-bit hash of a conversion's program, event and txn id (two keys may
/// share one: the engine compares the ids themselves).
fn txn_key(program: &str, event: &str, txn: &str) -> u64 {
    use xxhash_rust::xxh3::xxh3_64;
    let seed = xxh3_64(program.as_bytes()) ^ xxh3_64(event.as_bytes()).rotate_left(29);
    xxhash_rust::xxh3::xxh3_64_with_seed(txn.as_bytes(), seed)
}

/// Row `r` of a block into the facts, with the symbols of its names
/// ([`name_row`]).
fn add_row(
    f: &mut Facts,
    b: &Block,
    r: usize,
    names: &RowNames,
    txn_programs: &[&str],
    wanted: &Kept,
) -> Result<()> {
    let Some(ts) = b.int(E_TS, r) else {
        return Ok(());
    };
    let i = |c: usize| b.int(c, r);
    let arrival = b.arrival(r);
    let id = b.text(E_ID, r)?.unwrap_or("");
    let s = |c: usize| b.text(c, r);
    let dec = |c: usize, field: &str| -> Result<Option<rust_decimal::Decimal>> {
        match s(c)? {
            None => Ok(None),
            Some(v) => parse_decimal(v)
                .map(Some)
                .ok_or_else(|| Error::data(format!("event {id}: bad {field} {v:?} in the store"))),
        }
    };
    let cur = |c: usize| -> Result<Option<Currency>> { Ok(s(c)?.and_then(Currency::parse)) };
    let flag = |c: usize| i(c).map(|v| v != 0);
    match *names {
        RowNames::Skip => {}
        RowNames::Click(program, partner) => f.add_click_named(
            ClickIn {
                key: s(E_CLICK_ID)?.unwrap_or(id),
                ts,
                arrival,
                visitor: s(E_VISITOR)?,
                country: s(E_COUNTRY)?,
                asn: i(E_ASN).and_then(|a| u32::try_from(a).ok()),
                datacenter: flag(E_DATACENTER),
                has_referrer: flag(E_HAS_REFERRER),
                ..ClickIn::default()
            },
            program,
            partner,
        ),
        RowNames::Conv(names) => {
            let program = s(E_PROGRAM)?.unwrap_or("");
            let txn = s(E_TXN_ID)?;
            let keep = txn.is_some_and(|t| {
                txn_programs.contains(&program)
                    || wanted.named.get(program).is_some_and(|w| w.contains(t))
                    || (!wanted.repeated.is_empty()
                        && !t.is_empty()
                        && wanted.repeated.contains(&txn_key(
                            program,
                            s(E_EVENT).ok().flatten().unwrap_or(""),
                            t,
                        )))
            });
            // the names (program, partner, customer, ...) are in `names`
            f.add_conv_named(
                ConvIn {
                    id,
                    ts,
                    arrival,
                    click_id: s(E_CLICK_ID)?,
                    click_ts: i(E_CLICK_TS),
                    txn_id: if keep { txn } else { None },
                    amount: dec(E_AMOUNT, "amount")?,
                    currency: cur(E_CURRENCY)?,
                    lots: dec(E_LOTS, "lots")?,
                    bot: i(E_BOT) == Some(1),
                    // what a repeated sale's copies are told apart by
                    pixel: keep && s(E_SOURCE)? == Some("pixel"),
                    visitor: s(E_VISITOR)?,
                    ..ConvIn::default()
                },
                names,
            );
        }
        RowNames::Deal(names) => f.add_deal_named(
            id,
            ts,
            arrival,
            names,
            s(E_STATUS)?.unwrap_or(""),
            i(E_EXPIRES_AT),
        ),
        RowNames::Mdf(partner, program) => {
            if let (Some(a), Some(c)) = (dec(E_AMOUNT, "amount")?, cur(E_CURRENCY)?) {
                f.add_mdf_named(id, ts, arrival, (partner, program), a, c);
            }
        }
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
/// [`Inserter::finish`] before committing. Events go into blocks
/// ([`events::Writer`]); partners and coupons into their tables.
pub struct Inserter<'t> {
    tx: &'t Transaction<'t>,
    events: Option<events::Writer>,
    /// Where the duplicate check goes back once the import is written.
    ids: &'t std::cell::RefCell<Option<IdIndex>>,
    partner: rusqlite::CachedStatement<'t>,
    coupon: rusqlite::CachedStatement<'t>,
    /// One event's row, for [`Inserter::insert`].
    one: Block,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportCounts {
    pub new: u64,
    pub duplicate: u64,
    pub registry: u64,
}

impl<'t> Inserter<'t> {
    /// `ids`: the store's [`Store::ids`]; the duplicate check it holds is
    /// used when it is current (nothing was imported since), else read
    /// again from the store.
    pub fn new(
        tx: &'t Transaction<'t>,
        ids: &'t std::cell::RefCell<Option<IdIndex>>,
    ) -> Result<Inserter<'t>> {
        let next = next_arrival(tx)?;
        let index = match ids.borrow_mut().take() {
            Some(i) if i.next == next => i,
            _ => IdIndex::load(tx, next)?,
        };
        Ok(Inserter {
            tx,
            events: Some(events::Writer::new(index)),
            ids,
            partner: tx.prepare_cached(
                "INSERT INTO partners (id, program, parent, tier, status, history, currency, email_hash,
                   created_at, updated_at, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET program = excluded.program, parent = excluded.parent,
                   tier = excluded.tier, status = excluded.status, history = excluded.history,
                   currency = excluded.currency, email_hash = excluded.email_hash,
                   created_at = excluded.created_at, updated_at = excluded.updated_at, raw = excluded.raw
                 WHERE (excluded.updated_at IS NULL AND partners.updated_at IS NULL)
                    OR (COALESCE(excluded.updated_at, -1), excluded.raw) > (COALESCE(partners.updated_at, -1), partners.raw)",
            )?,
            coupon: tx.prepare_cached(
                "INSERT INTO coupons (program, code, partner, created_at, updated_at, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (program, code) DO UPDATE SET partner = excluded.partner,
                   created_at = excluded.created_at, updated_at = excluded.updated_at, raw = excluded.raw
                 WHERE (excluded.updated_at IS NULL AND coupons.updated_at IS NULL
                        AND excluded.created_at IS coupons.created_at)
                    OR (COALESCE(excluded.updated_at, excluded.created_at, -1), excluded.raw)
                     > (COALESCE(coupons.updated_at, coupons.created_at, -1), coupons.raw)",
            )?,
            one: Block::new(0),
        })
    }

    /// Expects about `n` events in the store once this import is done (a
    /// hint: more or fewer are fine).
    pub fn reserve_events(&mut self, n: usize) {
        if let Some(w) = &mut self.events {
            w.reserve(n);
        }
    }

    /// Writes the last block and records where the next import's arrival
    /// numbers start. The duplicate check goes back to the store, current
    /// once this transaction commits (a rollback leaves the store's next
    /// arrival behind it, so the next import reads it again).
    pub fn finish(mut self) -> Result<()> {
        let Some(w) = self.events.take() else {
            return Ok(());
        };
        let index = w.finish(self.tx)?;
        self.tx.execute(
            "INSERT INTO meta (key, value) VALUES ('next_arrival', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [index.next.to_string()],
        )?;
        *self.ids.borrow_mut() = Some(index);
        Ok(())
    }

    /// Inserts one validated record. Events are immutable: a second line
    /// with a known id is a duplicate and changes nothing. A registry line
    /// replaces the stored one when it is newer (`updated_at`), so import
    /// order does not matter.
    pub fn insert(&mut self, r: &Record, counts: &mut ImportCounts) -> Result<()> {
        let ms = |t: Option<edge::time::Timestamp>| t.map(|t| t.ms());
        let mut one = std::mem::take(&mut self.one);
        one.clear();
        let row = event_row(&crate::line::Line::of(r), &mut one)
            .map_err(|_| Error::data("an event's fields are over 2 GiB"));
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
                    ms(r.updated_at),
                    raw
                ])?;
                counts.registry += 1;
            }
        }
        Ok(())
    }

    /// Inserts row `r` of `b`, an event as [`event_row`] made it; a known
    /// id is a duplicate and changes nothing.
    pub fn insert_row<R: events::Rows>(
        &mut self,
        b: &R,
        r: usize,
        counts: &mut ImportCounts,
    ) -> Result<()> {
        let (w, tx) = self.writer()?;
        if w.add(tx, b, r)? {
            counts.new += 1;
        } else {
            counts.duplicate += 1;
        }
        Ok(())
    }

    /// The events' writer and the transaction it writes in, until
    /// [`Inserter::finish`].
    fn writer(&mut self) -> Result<(&mut events::Writer, &'t Transaction<'t>)> {
        let w = self
            .events
            .as_mut()
            .ok_or_else(|| Error::data("an import written already"))?;
        Ok((w, self.tx))
    }

    /// Inserts the events of a parser's block ([`events::Writer::add_block`]):
    /// `hashes` their ids' hashes, `body` the block encoded.
    pub fn insert_block(
        &mut self,
        blk: &Block,
        hashes: &[u64],
        body: &[u8],
        counts: &mut ImportCounts,
    ) -> Result<()> {
        let (w, tx) = self.writer()?;
        let new = w.add_block(tx, blk, hashes, body)?;
        counts.new += new;
        counts.duplicate += blk.rows() as u64 - new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::parse_line;

    type Row = Vec<rusqlite::types::Value>;

    fn stored(store: &Store, id: &str) -> Row {
        let (b, r) = events::find(&store.conn, id).unwrap().unwrap();
        events::row_values(&b, r)
    }

    /// A new store file at schema `version`, as an older binary left it.
    fn store_at_schema(path: &Path, version: usize) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL);",
        )
        .unwrap();
        for (v, name, sql) in &MIGRATIONS[..version] {
            c.execute_batch(sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
                params![v, name],
            )
            .unwrap();
        }
        c
    }

    /// The `(first, period, n)` of each block of `table`, in order.
    fn block_spans(store: &Store, table: &str) -> Vec<(i64, i64, i64)> {
        store
            .conn
            .prepare(&format!(
                "SELECT first, period, n FROM {table} ORDER BY first"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap()
    }

    /// Migration 12: a release stored by an older binary whose entry is
    /// still a rule's rejected row of the last period (decided after the
    /// draft, or after the close, and booked nowhere) is unseen by every
    /// period, so the next run books it; the other decisions count as
    /// seen, and so does such a release when a later period exists (its
    /// draft took the release in).
    #[test]
    fn migration_12_leaves_unbooked_releases_to_the_next_run() {
        for (unbooked, later) in [(true, false), (false, false), (true, true)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            {
                let c = store_at_schema(&path, 11);
                c.execute_batch(
                    "INSERT INTO periods (period, state, watermark, draft_hash) VALUES
                       (202610, 'closed', 5, 'x'), (202611, 'draft', 9, 'y');
                     INSERT INTO ledger VALUES (20261100000001, 'le_rej', 202611, 'a', 'p', 'rejected',
                       '0.00', 'USD', 'p/1', 's1', 20395, 'fraud:click_too_fast', '', '');
                     INSERT INTO reviews VALUES ('s0', 'le_held', 'release', 'al', 'ok', 't', 1);
                     INSERT INTO reviews VALUES ('s9', 'le_held9', 'reject', 'al', 'no', 't', 3);",
                )
                .unwrap();
                let entry = if unbooked { "le_rej" } else { "le_booked" };
                if later {
                    c.execute_batch(
                        "UPDATE periods SET state = 'closed' WHERE period = 202611;
                         INSERT INTO periods (period, state, watermark, draft_hash)
                           VALUES (202612, 'draft', 12, 'z');",
                    )
                    .unwrap();
                }
                c.execute(
                    "INSERT INTO reviews VALUES ('s1', ?1, 'release', 'al', 'ok', 't', 2)",
                    [entry],
                )
                .unwrap();
            }
            let store = Store::open(&path).unwrap();
            let marked: Vec<(String, i64)> = store
                .conn
                .prepare("SELECT event, restates FROM reviews ORDER BY seq")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            let flag = i64::from(unbooked && !later);
            assert_eq!(
                marked,
                [
                    ("s0".to_string(), 0),
                    ("s1".to_string(), flag),
                    ("s9".to_string(), 0)
                ]
            );
            let seen = if flag == 1 { 1 } else { 3 };
            for p in ["2026-10", "2026-11"] {
                let p = Period::parse(p).unwrap();
                assert_eq!(store.review_seq(p).unwrap(), seen, "{p}");
            }
        }
    }

    /// A store of schema 4 (events as rows) opens as schema 5 with the same
    /// events in blocks, arrivals kept (a gap starts a new block); what was
    /// imported before is still known as a duplicate.
    #[test]
    fn migration_moves_event_rows_into_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = store_at_schema(&path, 4);
            let mut st = c
                .prepare(
                    "INSERT INTO events (arrival, id, kind, seq, ts, program, partner, amount, currency, bot, asn)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'p', ?6, ?7, ?8, ?9, ?10)",
                )
                .unwrap();
            for a in (1..=5000i64).chain(6001..=6003) {
                let conv = a % 3 == 0;
                st.execute(params![
                    a,
                    format!("e{a}"),
                    i64::from(conv),
                    a + 10,
                    1_793_491_200_000 + a * 1000,
                    (a % 7 != 0).then(|| format!("pa{}", a % 5)),
                    conv.then_some("12.50"),
                    conv.then_some("USD"),
                    (a % 11 == 0).then_some(1),
                    (a % 2 == 0).then_some(64_500 + a),
                ])
                .unwrap();
            }
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('next_arrival', '6004')",
                [],
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let blocks: Vec<(i64, i64)> = store
            .conn
            .prepare("SELECT first, n FROM event_blocks ORDER BY first")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(blocks, [(1, 4096), (4097, 904), (6001, 3)]);
        let gone: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
        let rows = events::all_rows(&store.conn).unwrap();
        assert_eq!(rows.len(), 5003);
        use rusqlite::types::Value::{Integer as I, Null, Text};
        let r = &rows[5001]; // arrival 6002
        assert_eq!(
            (&r[0], &r[1], &r[2], &r[3], &r[5], &r[11], &r[18], &r[25], &r[27]),
            (
                &Text("e6002".into()),
                &I(0),
                &I(6012),
                &I(1_793_491_200_000 + 6_002_000),
                &Text("pa2".into()),
                &Null,
                &Null,
                &I(6002),
                &I(64_500 + 6002)
            )
        );
        assert_eq!((&rows[10][18], &rows[11][18]), (&I(1), &Null)); // arrival 11 is a bot
        assert_eq!(rows[2][11], Text("12.50".into()));
        assert_eq!(
            store.event_periods().unwrap(),
            (Some(1_793_491_203_000), Some(1_793_491_200_000 + 6_003_000))
        );
        // the old ids are known: importing them again adds nothing
        let counts = import(
            &mut store,
            &[
                r#"{"id":"e17","type":"click","ts":"2026-11-01T00:00:01.000Z","program":"p"}"#,
                r#"{"id":"e6003","type":"click","ts":"2026-11-01T00:00:01.000Z","program":"p"}"#,
                r#"{"id":"n1","type":"click","ts":"2026-11-01T00:00:01.000Z","program":"p"}"#,
            ],
        );
        assert_eq!((counts.new, counts.duplicate), (1, 2));
        assert_eq!(store.max_arrival().unwrap(), 6004);
    }

    /// A store of schema 5 (the ledger as rows) opens as schema 6 with every
    /// entry in blocks, pos and period kept (a gap or another period starts
    /// a new block); the entries looked up by their reason stay rows too;
    /// `explain` finds an entry in the blocks.
    #[test]
    fn migration_moves_ledger_rows_into_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let p10 = pos_base(Period::parse("2026-10").unwrap());
        let p11 = pos_base(Period::parse("2026-11").unwrap());
        {
            let c = store_at_schema(&path, 5);
            let mut st = c
                .prepare(
                    "INSERT INTO ledger (pos, id, period, partner, program, kind, amount, currency, rule,
                       sources, event_day, reason, calc, adjusts)
                     VALUES (?1, ?2, ?3, 'pa', 'p', 'commission', ?4, 'USD', 'p/1', 'ev1', ?5, ?6, 'calc', '')",
                )
                .unwrap();
            let mut n = 0;
            for (base, key, count) in [(p10, 202610, 5000i64), (p11, 202611, 3)] {
                for i in 0..count {
                    n += 1;
                    let reason = match i % 1000 {
                        7 => "held:fraud:click_too_fast",
                        8 => "opening_balance:tune",
                        _ => "",
                    };
                    st.execute(params![
                        base + i,
                        format!("le_{n}"),
                        key,
                        format!("{i}.00"),
                        20_000 + i,
                        reason
                    ])
                    .unwrap();
                }
            }
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            block_spans(&store, "ledger_blocks"),
            [
                (p10, 202610, 4096),
                (p10 + 4096, 202610, 904),
                (p11, 202611, 3)
            ]
        );
        let rows = crate::ledger_blocks::all_rows(&store.conn).unwrap();
        assert_eq!(rows.len(), 5003);
        use rusqlite::types::Value::{Integer as I, Text};
        let r = &rows[4100];
        assert_eq!(
            (&r[0], &r[1], &r[2], &r[6], &r[10], &r[11]),
            (
                &I(p10 + 4100),
                &Text("le_4101".into()),
                &I(202610),
                &Text("4100.00".into()),
                &I(24_100),
                &Text("".into())
            )
        );
        assert_eq!(rows[5002][0], I(p11 + 2));
        // the entries with a looked-up reason are still rows; the others went
        let kept: Vec<String> = store
            .conn
            .prepare("SELECT reason FROM ledger ORDER BY pos")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(kept.len(), 10);
        assert!(kept
            .iter()
            .all(|r| r.starts_with("held:fraud:") || r.starts_with("opening_balance:")));
        let (b, r) = crate::ledger_blocks::find(&store.conn, "le_4999")
            .unwrap()
            .unwrap();
        assert_eq!(
            crate::ledger_blocks::text(&b, crate::ledger_blocks::L_AMOUNT, r).unwrap(),
            "4998.00"
        );
        assert!(crate::ledger_blocks::find(&store.conn, "le_0")
            .unwrap()
            .is_none());
    }

    /// A store of schema 7 (invoice lines as rows) opens as schema 8 with
    /// the same lines in blocks, a period's in pos order (a new period
    /// starts a new block), and without the old table; `explain` and the
    /// report's loader find them there.
    /// Migration 10 takes a stored coupon line's `updated_at` from its JSON,
    /// to the millisecond, so a line imported before it competes with a
    /// later one as it would in a new store; a line without one keeps NULL.
    #[test]
    fn migration_10_fills_coupons_updated_at_from_the_stored_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = store_at_schema(&path, 9);
            for (code, raw) in [
                (
                    "A",
                    r#"{"type":"coupon","code":"A","program":"p","partner":"amy","created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-11-01T10:20:30.456Z"}"#,
                ),
                (
                    "B",
                    r#"{"type":"coupon","code":"B","program":"p","partner":"bo","created_at":"2026-01-01T00:00:00.000Z"}"#,
                ),
            ] {
                c.execute(
                    "INSERT INTO coupons (program, code, partner, created_at, raw) VALUES ('p', ?1, 'x', 0, ?2)",
                    params![code, raw],
                )
                .unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        let got: Vec<(String, Option<i64>)> = store
            .conn
            .prepare("SELECT code, updated_at FROM coupons ORDER BY code")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let want = edge::time::Timestamp::parse("2026-11-01T10:20:30.456Z")
            .unwrap()
            .0;
        assert_eq!(
            got,
            [("A".to_string(), Some(want)), ("B".to_string(), None)]
        );
    }

    #[test]
    fn migration_moves_invoice_rows_into_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let p10 = pos_base(Period::parse("2026-10").unwrap());
        let p11 = pos_base(Period::parse("2026-11").unwrap());
        {
            let c = store_at_schema(&path, 7);
            let mut st = c
                .prepare(
                    "INSERT INTO invoices (pos, id, period, partner, program, txn_id, list_amount,
                       discount_percent, amount_due, currency, source, calc)
                     VALUES (?1, ?2, ?3, 'pa', 'var', ?4, ?5, '25', ?6, 'USD', ?7, 'calc')",
                )
                .unwrap();
            let mut n = 0;
            for (base, key, count) in [(p10, 202610, 5000i64), (p11, 202611, 3)] {
                for i in 0..count {
                    n += 1;
                    st.execute(params![
                        base + i,
                        format!("inv_{n}"),
                        key,
                        format!("t{n}"),
                        format!("{i}.00"),
                        format!("{}.00", i * 3 / 4),
                        format!("ev{n}")
                    ])
                    .unwrap();
                }
            }
            c.execute(
                "INSERT INTO periods (period, state, watermark, draft_hash) VALUES (202611, 'draft', 0, 'x')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            block_spans(&store, "invoice_blocks"),
            [
                (p10, 202610, 4096),
                (p10 + 4096, 202610, 904),
                (p11, 202611, 3)
            ]
        );
        let gone: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'invoices'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
        let (b, r) = crate::ledger_blocks::find_in(
            &store.conn,
            crate::ledger_blocks::INVOICES,
            crate::ledger_blocks::I_ID,
            "inv_4999",
        )
        .unwrap()
        .unwrap();
        assert_eq!((b.first, r), (p10 + 4096, 902));
        let t = |c| crate::ledger_blocks::text(&b, c, r).unwrap();
        use crate::ledger_blocks::{I_AMOUNT_DUE, I_SOURCE, I_TXN_ID};
        assert_eq!(
            (t(I_TXN_ID), t(I_AMOUNT_DUE), t(I_SOURCE)),
            ("t4999", "3748.00", "ev4999")
        );
        let text = crate::explain::explain(&store, "inv_4999").unwrap();
        assert!(text.contains("pa owes 3748.00 USD"), "{text}");
        assert!(text.contains("2026-10"), "{text}");
        let data = crate::report::load(&store, Period::parse("2026-11").unwrap()).unwrap();
        assert_eq!(data.invoices.len(), 3);
        assert_eq!(
            data.invoices[2],
            ["2026-11", "pa", "t5003", "2.00", "25", "1.00", "USD"]
        );
    }

    /// A spoilt ledger or invoice block is an error that names the table's
    /// block and its pos (not an event block), and so is an entry whose
    /// text is not UTF-8.
    #[test]
    fn spoilt_ledger_and_invoice_blocks_are_named() {
        use crate::ledger_blocks::{find_in, INVOICES, I_ID, LEDGER, L_ID};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let p = pos_base(Period::parse("2026-11").unwrap());
        for (table, tname, name, row, id_col, ints, texts) in [
            (LEDGER, "ledger_blocks", "ledger", "entry", L_ID, 1, 11),
            (INVOICES, "invoice_blocks", "invoice", "line", I_ID, 0, 10),
        ] {
            let mut b = table.batch();
            for _ in 0..ints {
                b.push_int(Some(1));
            }
            b.push_text(Some("x1")).unwrap();
            for _ in 1..texts {
                b.push_bytes(Some(&[0xff, 0xfe])).unwrap();
            }
            let mut blk = table.block(p);
            blk.push_row(&b, 0).unwrap();
            let body = blk.encode_packed();
            let (ins, upd) = (
                format!("INSERT INTO {tname} (first, period, n, body) VALUES (?1, 202611, 1, ?2)"),
                format!("UPDATE {tname} SET body = ?2 WHERE first = ?1"),
            );
            store.conn.execute(&ins, params![p, body]).unwrap();
            let (found, r) = find_in(&store.conn, table, id_col, "x1").unwrap().unwrap();
            assert_eq!(found.text(id_col, r).unwrap(), Some("x1"));
            let e = found.text(id_col + 1, r).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{name} {row} at pos {p}: ")), "{e}");
            let cut = body[..body.len() - 1].to_vec();
            store.conn.execute(&upd, params![p, cut]).unwrap();
            let e = find_in(&store.conn, table, id_col, "x1")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{name} block at pos {p}: ")), "{e}");
            assert!(!e.contains("event"), "{e}");
        }
    }

    /// The duplicate check the store keeps between imports: current after a
    /// commit, read again after a rollback or by a new process.
    #[test]
    fn duplicates_are_known_across_imports_and_rollbacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = Store::open(&path).unwrap();
        let click = |id: &str| {
            format!(
                r#"{{"id":"{id}","type":"click","ts":"2026-11-01T00:00:01.000Z","program":"p"}}"#
            )
        };
        let (a, b, c) = (click("a"), click("b"), click("c"));
        assert_eq!(import(&mut store, &[&a, &b]).new, 2);
        // an import that fails after its events were added rolls back
        let records: Vec<Record> = [&c, &a].iter().map(|l| parse_line(l).unwrap()).collect();
        let mut bad = records.clone();
        let mut x = records[0].clone();
        x.id = Some("x".into());
        x.kind = Kind::Conversion; // without a program: refused
        bad.push(x);
        assert!(crate::import::import_records(&mut store, &bad).is_err());
        let counts = crate::import::import_records(&mut store, &records).unwrap();
        assert_eq!((counts.new, counts.duplicate), (1, 1));
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let counts = import(&mut store, &[&c, &b, &a, &click("d")]);
        assert_eq!((counts.new, counts.duplicate), (1, 3));
        let ids: Vec<_> = events::stored_ids(&store.conn)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
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

    /// The facts loaded from the store (names turned into symbols on the
    /// decoding thread, facts built on another) are the facts built from
    /// the same records in one pass: the same symbols in the same
    /// numbering, the same conversions, clicks, deals and MDF claims.
    #[test]
    fn facts_from_the_store_are_the_facts_of_the_records() {
        use crate::facts::Facts;
        let mut text = Vec::new();
        let g = crate::sim::GenConfig {
            events: 4_000,
            partners: 40,
            customers: 600,
            ..crate::sim::GenConfig::default()
        };
        crate::sim::generate(&g, &mut text).unwrap();
        let mut records: Vec<Record> = std::str::from_utf8(&text)
            .unwrap()
            .lines()
            .map(|l| parse_line(l).unwrap())
            .collect();
        let fr = crate::fraud_sim::generate(&crate::fraud_sim::FraudGen {
            sessions: 3_000,
            partners: 5,
            customers: 500,
            ..crate::fraud_sim::FraudGen::default()
        });
        records.extend(
            fr.records
                .iter()
                .filter(|r| r.kind != Kind::Partner && r.kind != Kind::Coupon)
                .cloned(),
        );
        // the store reads its registry tables in key order, after the events
        // that are numbered from 1
        let mut registry: Vec<Record> = records
            .iter()
            .filter(|r| matches!(r.kind, Kind::Partner | Kind::Coupon))
            .cloned()
            .collect();
        registry.sort_by(|a, b| {
            (a.kind == Kind::Coupon, &a.id, &a.program, &a.code).cmp(&(
                b.kind == Kind::Coupon,
                &b.id,
                &b.program,
                &b.code,
            ))
        });
        records.retain(|r| !matches!(r.kind, Kind::Partner | Kind::Coupon));
        let kinds = |k: Kind| records.iter().filter(|r| r.kind == k).count();
        assert!(kinds(Kind::Click) > 1000 && kinds(Kind::Deal) > 10 && kinds(Kind::Mdf) > 5);
        records.extend(registry);

        let all: Vec<&str> = crate::sim::PROGRAMS
            .lines()
            .filter_map(|l| l.strip_prefix("id = \""))
            .map(|l| l.trim_end_matches('"'))
            .collect();
        assert!(all.len() > 4, "{all:?}");
        // clicks for some programs only
        let fraud = &all[..3];
        let want = Facts::from_records_with(&records, Some(fraud));
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        crate::import::import_records(&mut store, &records).unwrap();
        let got = store.load_facts_with(i64::MAX, &all, fraud).unwrap();

        let syms = |f: &Facts| -> Vec<String> {
            (0..f.syms.len() as u32)
                .map(|i| f.syms.str(i).to_string())
                .collect()
        };
        assert!(want.syms.len() > 500);
        assert_eq!(syms(&got), syms(&want));
        let convs = |f: &Facts| -> Vec<String> {
            f.convs
                .iter()
                .map(|c| format!("{c:?} {} {} {:?}", f.id(c), f.txns.get(c.idx), f.ex(c)))
                .collect()
        };
        assert!(want.convs.len() > 1000);
        assert_eq!(convs(&got), convs(&want));
        assert_eq!(format!("{:?}", got.deals), format!("{:?}", want.deals));
        assert_eq!(format!("{:?}", got.mdfs), format!("{:?}", want.mdfs));
        assert!(want.fraud.clicks.len() > 500);
        assert_eq!(got.fraud.clicks, want.fraud.clicks);
        assert_eq!(got.fraud.conv_click, want.fraud.conv_click);
        assert_eq!(got.fraud.conv_visitor, want.fraud.conv_visitor);
        assert_eq!(got.with_orig, want.with_orig);
        assert_eq!(got.with_txn, want.with_txn);
        assert_eq!(got.conv_runs(), want.conv_runs());
    }
}
