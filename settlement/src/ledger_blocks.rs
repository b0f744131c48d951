//! The ledger's entries in blocks: a draft's entries are appended in ledger
//! order in blocks of up to [`BLOCK_ROWS`], one `ledger_blocks` row (a BLOB,
//! column by column as `settlement::events` encodes them, packed: see
//! [`Block::encode_packed`]) each, keyed by
//! the position of their first entry (`pos`: `period * 10^10 + position`,
//! the others follow without a gap). A run replaces its period's blocks in
//! its one transaction; closed periods' blocks are never touched again.
//!
//! The invoice lines are kept the same way in `invoice_blocks` ([`INVOICES`]).
//!
//! The few entries that queries look up by their reason (held by the fraud
//! rules, rejected or adjusted by them, opening balances) are also kept as
//! rows of the `ledger` table, with its partial indexes.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::events::{Block, Cols};
use rusqlite::{params, Connection};

/// Entries a block holds at most.
pub const BLOCK_ROWS: usize = 4096;

/// An entry's integer column (the event day), then its text columns.
pub const INTS: usize = 1;
pub const TEXTS: usize = 11;
pub const L_EVENT_DAY: usize = 0;
pub const L_ID: usize = 0;
pub const L_PARTNER: usize = 1;
pub const L_PROGRAM: usize = 2;
pub const L_KIND: usize = 3;
pub const L_AMOUNT: usize = 4;
pub const L_CURRENCY: usize = 5;
pub const L_RULE: usize = 6;
pub const L_SOURCES: usize = 7;
pub const L_REASON: usize = 8;
pub const L_CALC: usize = 9;
pub const L_ADJUSTS: usize = 10;

pub const ALL: Cols = Cols::all(INTS, TEXTS);

/// Created by migration 6, which moves the rows of `ledger` into blocks
/// ([`move_rows_into_blocks`]).
pub const SCHEMA: &str = r#"
-- the ledger in blocks of up to 4096 entries, in ledger order: `first` is
-- the pos of the block's first entry, the others follow without a gap;
-- body: the entries column by column (settlement/src/ledger_blocks.rs).
-- `ledger` keeps, as rows, the entries looked up by their reason.
CREATE TABLE ledger_blocks (
  first INTEGER PRIMARY KEY, period INTEGER NOT NULL, n INTEGER NOT NULL,
  body BLOB NOT NULL
);
"#;

/// The invoice lines in blocks the same way, created by migration 8, which
/// moves the rows of the former `invoices` table into them
/// ([`move_invoice_rows_into_blocks`]).
pub const INVOICE_SCHEMA: &str = r#"
-- the invoice lines in blocks of up to 4096, in the draft's order, as
-- ledger_blocks holds the ledger (settlement/src/ledger_blocks.rs)
CREATE TABLE invoice_blocks (
  first INTEGER PRIMARY KEY, period INTEGER NOT NULL, n INTEGER NOT NULL,
  body BLOB NOT NULL
);
"#;

/// An invoice line's text columns (it has no integer one).
pub const I_ID: usize = 0;
pub const I_PARTNER: usize = 1;
pub const I_PROGRAM: usize = 2;
pub const I_TXN_ID: usize = 3;
pub const I_LIST_AMOUNT: usize = 4;
pub const I_DISCOUNT_PERCENT: usize = 5;
pub const I_AMOUNT_DUE: usize = 6;
pub const I_CURRENCY: usize = 7;
pub const I_SOURCE: usize = 8;
pub const I_CALC: usize = 9;

/// A table of blocks and the layout of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    name: &'static str,
    /// What errors call one of its rows and one of its blocks.
    row: &'static str,
    block: &'static str,
    ints: usize,
    texts: usize,
}

/// The ledger's entries.
pub const LEDGER: Table = Table {
    name: "ledger_blocks",
    row: "ledger entry at pos",
    block: "ledger block at pos",
    ints: INTS,
    texts: TEXTS,
};

/// The invoice lines.
pub const INVOICES: Table = Table {
    name: "invoice_blocks",
    row: "invoice line at pos",
    block: "invoice block at pos",
    ints: 0,
    texts: I_CALC + 1,
};

impl Table {
    /// A new, empty block of this table's rows at `first`.
    pub fn block(self, first: i64) -> Block {
        Block::with_layout(first, self.ints, self.texts).labelled(self.row, self.block)
    }

    /// An empty batch of rows in this table's layout.
    pub fn batch(self) -> Batch {
        Batch::new(self.ints, self.texts)
    }

    /// Every column.
    pub fn all(self) -> Cols {
        Cols::all(self.ints, self.texts)
    }
}

/// Whether an entry with this reason is also kept as a row of `ledger`
/// (the queries on that table name these prefixes).
pub fn kept_as_row(reason: &[u8]) -> bool {
    reason.starts_with(b"held:fraud:")
        || reason.starts_with(b"fraud:")
        || reason.starts_with(b"opening_balance:")
}

/// A new, empty block of ledger entries at `first`.
pub fn block(first: i64) -> Block {
    LEDGER.block(first)
}

/// Appends a period's rows in order, a block at a time.
pub struct Writer {
    table: Table,
    period: i64,
    pending: Block,
}

impl Writer {
    /// Rows of `table` from position `first` on, of `period`.
    pub fn new(table: Table, period: i64, first: i64) -> Writer {
        Writer {
            table,
            period,
            pending: table.block(first),
        }
    }

    /// The position the next entry gets.
    pub fn next(&self) -> i64 {
        self.pending.first + self.pending.rows() as i64
    }

    /// Adds row `r` of `b` (the event day, then the texts in this module's
    /// order).
    pub fn add(&mut self, c: &Connection, b: &Batch, r: usize) -> Result<()> {
        self.pending.push_row(b, r)?;
        if self.pending.rows() == BLOCK_ROWS {
            self.flush(c)?;
        }
        Ok(())
    }

    /// Writes the entries added since the last block.
    pub fn flush(&mut self, c: &Connection) -> Result<()> {
        if self.pending.rows() > 0 {
            let body = self.pending.encode_packed();
            let (first, n) = (self.pending.first, self.pending.rows());
            insert(c, self.table, self.period, first, n, &body)?;
        }
        let next = self.next();
        self.pending.clear();
        self.pending.first = next;
        Ok(())
    }
}

/// Stores the block of `n` rows of `period` from pos `first` on in
/// `table`, its `body` as [`Block::encode_packed`] made it.
pub fn insert(
    c: &Connection,
    table: Table,
    period: i64,
    first: i64,
    n: usize,
    body: &[u8],
) -> Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO {} (first, period, n, body) VALUES (?1, ?2, ?3, ?4)",
        table.name
    ))?
    .execute(params![first, period, n as i64, body])?;
    Ok(())
}

/// Deletes the blocks of `table` whose first pos is in `[from, to)`.
pub fn delete(c: &Connection, table: Table, from: i64, to: i64) -> Result<()> {
    c.execute(
        &format!(
            "DELETE FROM {} WHERE first >= ?1 AND first < ?2",
            table.name
        ),
        params![from, to],
    )?;
    Ok(())
}

/// Calls `f` with each ledger block whose first pos is in `[from, to)`, in
/// ledger order, decoding the columns `cols`.
pub fn scan(
    c: &Connection,
    from: i64,
    to: i64,
    cols: Cols,
    f: impl FnMut(&Block) -> Result<()>,
) -> Result<()> {
    scan_in(c, LEDGER, from, to, cols, f)
}

/// Calls `f` with each block of `table` whose first pos is in `[from,
/// to)`, in order, decoding the columns `cols`.
pub fn scan_in(
    c: &Connection,
    table: Table,
    from: i64,
    to: i64,
    cols: Cols,
    mut f: impl FnMut(&Block) -> Result<()>,
) -> Result<()> {
    let mut st = c.prepare(&format!(
        "SELECT first, body FROM {} WHERE first >= ?1 AND first < ?2 ORDER BY first",
        table.name
    ))?;
    let mut rows = st.query([from, to])?;
    let mut b = table.block(0);
    while let Some(r) = rows.next()? {
        b.decode(r.get(0)?, r.get_ref(1)?.as_blob()?, cols)?;
        f(&b)?;
    }
    Ok(())
}

/// The latest ledger entry with `id` (the highest pos): its block, every
/// column, and row.
pub fn find(c: &Connection, id: &str) -> Result<Option<(Block, usize)>> {
    find_in(c, LEDGER, L_ID, id)
}

/// The latest row of `table` whose text column `id_col` is `id` (the
/// highest pos): its block, every column, and row.
pub fn find_in(
    c: &Connection,
    table: Table,
    id_col: usize,
    id: &str,
) -> Result<Option<(Block, usize)>> {
    let mut found: Option<(i64, usize)> = None;
    scan_in(
        c,
        table,
        i64::MIN,
        i64::MAX,
        Cols::of(&[], &[id_col]),
        |b| {
            for r in 0..b.rows() {
                if b.bytes(id_col, r) == Some(id.as_bytes()) {
                    found = Some((b.first, r));
                }
            }
            Ok(())
        },
    )?;
    let Some((first, r)) = found else {
        return Ok(None);
    };
    let body: Vec<u8> = c.query_row(
        &format!("SELECT body FROM {} WHERE first = ?1", table.name),
        [first],
        |row| row.get(0),
    )?;
    let mut b = table.block(first);
    b.decode(first, &body, table.all())?;
    Ok(Some((b, r)))
}

/// The period (key) of the entries of the block at `first`.
pub fn period_of(first: i64) -> i64 {
    first.div_euclid(10_000_000_000)
}

/// Text column `col` of row `r` as a string (the draft writes only strings).
pub fn text(b: &Block, col: usize, r: usize) -> Result<&str> {
    Ok(b.text(col, r)?.unwrap_or(""))
}

/// Migration 6: every row of `ledger` into blocks, a period's entries in pos
/// order (a gap or a new period starts a new block); the rows the reason
/// queries need stay, the others go.
pub fn move_rows_into_blocks(c: &Connection) -> Result<()> {
    rows_into_blocks(
        c,
        LEDGER,
        "SELECT pos, period, event_day, id, partner, program, kind, amount, currency, rule, sources,
                reason, calc, adjusts
         FROM ledger ORDER BY pos",
    )?;
    c.execute_batch(
        "DELETE FROM ledger WHERE NOT (reason LIKE 'held:fraud:%' OR reason LIKE 'fraud:%'
           OR reason LIKE 'opening_balance:%');",
    )?;
    Ok(())
}

/// Migration 8: every row of `invoices` into blocks, as migration 6 moved
/// the ledger's; the table goes.
pub fn move_invoice_rows_into_blocks(c: &Connection) -> Result<()> {
    rows_into_blocks(
        c,
        INVOICES,
        "SELECT pos, period, id, partner, program, txn_id, list_amount, discount_percent,
                amount_due, currency, source, calc
         FROM invoices ORDER BY pos",
    )?;
    c.execute_batch("DROP TABLE invoices;")?;
    Ok(())
}

/// Writes the rows `sql` selects (pos, period, then `table`'s integer and
/// text columns, in pos order) into blocks of `table`: a period's rows in
/// pos order, a gap or a new period starting a new block.
fn rows_into_blocks(c: &Connection, table: Table, sql: &str) -> Result<()> {
    let mut st = c.prepare(sql)?;
    let mut rows = st.query([])?;
    let mut w: Option<Writer> = None;
    let mut row = Batch::new(table.ints, table.texts);
    while let Some(r) = rows.next()? {
        let (pos, period): (i64, i64) = (r.get(0)?, r.get(1)?);
        let fits = w
            .as_ref()
            .is_some_and(|w| w.period == period && w.next() == pos);
        if !fits {
            if let Some(mut old) = w.take() {
                old.flush(c)?;
            }
            w = Some(Writer::new(table, period, pos));
        }
        row.clear();
        for i in 0..table.ints {
            row.push_int(Some(r.get(2 + i)?));
        }
        for i in 0..table.texts {
            row.push_bytes(r.get_ref(2 + table.ints + i)?.as_bytes_or_null()?)
                .map_err(|_| Error::data("a ledger entry or invoice line over 2 GiB"))?;
        }
        if let Some(w) = w.as_mut() {
            w.add(c, &row, 0)?;
        }
    }
    if let Some(mut w) = w {
        w.flush(c)?;
    }
    Ok(())
}

/// Every entry of the ledger as the old `ledger` table's row (pos, id,
/// period, partner, program, kind, amount, currency, rule, sources,
/// event_day, reason, calc, adjusts), in pos order: for tests and tools.
pub fn all_rows(c: &Connection) -> Result<Vec<Vec<rusqlite::types::Value>>> {
    use rusqlite::types::Value;
    let mut periods = std::collections::HashMap::new();
    {
        let mut st = c.prepare("SELECT first, period FROM ledger_blocks")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            periods.insert(r.get::<_, i64>(0)?, r.get::<_, i64>(1)?);
        }
    }
    let mut out = Vec::new();
    scan(c, i64::MIN, i64::MAX, ALL, |b| {
        let period = periods.get(&b.first).copied().unwrap_or(0);
        for r in 0..b.rows() {
            let t = |col: usize| {
                Value::Text(
                    String::from_utf8_lossy(b.bytes(col, r).unwrap_or_default()).into_owned(),
                )
            };
            out.push(vec![
                Value::Integer(b.arrival(r)),
                t(L_ID),
                Value::Integer(period),
                t(L_PARTNER),
                t(L_PROGRAM),
                t(L_KIND),
                t(L_AMOUNT),
                t(L_CURRENCY),
                t(L_RULE),
                t(L_SOURCES),
                Value::Integer(b.int(L_EVENT_DAY, r).unwrap_or(0)),
                t(L_REASON),
                t(L_CALC),
                t(L_ADJUSTS),
            ]);
        }
        Ok(())
    })?;
    Ok(out)
}
