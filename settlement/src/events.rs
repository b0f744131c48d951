//! The events in append-only blocks: each import appends its new events in
//! blocks of up to [`BLOCK_ROWS`], one `event_blocks` row (a BLOB) each, in
//! the same SQLite file and transaction as the rest of the import, so a
//! killed import still leaves all of it or none.
//!
//! A block is stored column by column: an integer column as a NULL bitmap
//! and the varint differences between successive values (timestamps in
//! arrival order differ by little), a text column as its lengths then its
//! bytes. A reader decodes only the columns it asks for ([`Cols`]). The
//! ledger's blocks (`settlement::ledger_blocks`) use the same layout,
//! packed: each large column as a zstd frame ([`Block::encode_packed`]). The
//! `event_hashes` table holds the 64-bit hash of each event's id, so the
//! import's duplicate check ([`IdIndex`]) loads a few bytes an event instead
//! of decoding every block; a hash seen before is always confirmed against
//! the id itself.
//!
//! The import's parser threads build and encode the blocks (a chunk of the
//! file's lines each, [`event_row`]); the one thread that writes them only
//! checks their ids ([`Writer::add_block`]).
//!
//! Blocks are never appended to after their import; `settlement erase`
//! rewrites the blocks holding the erased customer's events.

use crate::batch::{Batch, TooLarge};
use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};

/// Events a block holds at most.
pub const BLOCK_ROWS: usize = 4096;

pub const KIND_CLICK: i64 = 0;
pub const KIND_CONVERSION: i64 = 1;
pub const KIND_DEAL: i64 = 2;
pub const KIND_MDF: i64 = 3;

/// An event's integer columns, then its text columns (the arrival is the
/// block's first arrival plus the row).
pub const EVENT_INTS: usize = 10;
pub const EVENT_TEXTS: usize = 19;
// integer columns
pub const E_KIND: usize = 0;
pub const E_SEQ: usize = 1;
pub const E_TS: usize = 2;
pub const E_CLICK_TS: usize = 3;
pub const E_BOT: usize = 4;
pub const E_APPROVED_AT: usize = 5;
pub const E_EXPIRES_AT: usize = 6;
pub const E_ASN: usize = 7;
pub const E_DATACENTER: usize = 8;
pub const E_HAS_REFERRER: usize = 9;
// text columns
pub const E_ID: usize = 0;
pub const E_PROGRAM: usize = 1;
pub const E_PARTNER: usize = 2;
pub const E_LINK: usize = 3;
pub const E_CLICK_ID: usize = 4;
pub const E_EVENT: usize = 5;
pub const E_TXN_ID: usize = 6;
pub const E_AMOUNT: usize = 7;
pub const E_CURRENCY: usize = 8;
pub const E_CUSTOMER: usize = 9;
pub const E_COUPON: usize = 10;
pub const E_ORIGINAL_TXN_ID: usize = 11;
pub const E_LOTS: usize = 12;
pub const E_INSTRUMENT: usize = 13;
pub const E_COUNTRY: usize = 14;
pub const E_EMAIL_HASH: usize = 15;
pub const E_STATUS: usize = 16;
pub const E_SOURCE: usize = 17;
pub const E_VISITOR: usize = 18;

/// The block tables, created by migration 5 (which moves the rows of the
/// old `events` table into them: [`move_rows_into_blocks`]).
pub const SCHEMA: &str = r#"
-- events in append-only blocks of up to 4096, in arrival order: `first` is
-- the arrival of the block's first event, the others follow without a gap;
-- body: the events column by column (settlement/src/events.rs)
CREATE TABLE event_blocks (
  first INTEGER PRIMARY KEY, n INTEGER NOT NULL,
  min_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL,
  -- over the block's conversions, deals and MDF claims; NULL without one
  fact_min_ts INTEGER, fact_max_ts INTEGER,
  body BLOB NOT NULL
);
CREATE INDEX event_blocks_facts ON event_blocks(fact_min_ts);
-- the 64-bit hash (xxh3) of each event's id, in its block's order
CREATE TABLE event_hashes (first INTEGER PRIMARY KEY, hashes BLOB NOT NULL);
"#;

/// An integer column's NULL in a decoded block (no column holds it).
const NULL_INT: i64 = i64::MIN;
/// A text column's NULL: the top bit of its end offset.
const NULL_TEXT: u32 = 1 << 31;
/// A block stored column by column as they are.
const VERSION: u8 = 1;
/// A block whose columns each start with how they are stored: [`RAW`]
/// (as they are), or [`ZSTD`] (the column's length, then a zstd frame).
const VERSION_PACKED: u8 = 2;
const RAW: u8 = 0;
const ZSTD: u8 = 1;
/// Columns shorter than this are stored as they are.
const PACK_FROM: usize = 256;
/// zstd's fastest level but the negative ones: about 550 MB/s in and a
/// fifth of the ledger's bytes out on the bench machine.
const ZSTD_LEVEL: i32 = 1;
/// A packed column longer than this is taken for a spoilt block.
const MAX_COLUMN: usize = 1 << 31;

/// Which columns a reader decodes: bit `c` of `ints` for integer column
/// `c`, of `texts` for text column `c`. A column not decoded reads as NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cols {
    pub ints: u32,
    pub texts: u32,
}

impl Cols {
    pub const ALL: Cols = Cols {
        ints: (1 << EVENT_INTS) - 1,
        texts: (1 << EVENT_TEXTS) - 1,
    };
    /// Every column of a layout of `ints` and `texts` columns.
    pub const fn all(ints: usize, texts: usize) -> Cols {
        Cols {
            ints: (1 << ints) - 1,
            texts: (1 << texts) - 1,
        }
    }

    pub const fn of(ints: &[usize], texts: &[usize]) -> Cols {
        let mut c = Cols { ints: 0, texts: 0 };
        let mut i = 0;
        while i < ints.len() {
            c.ints |= 1 << ints[i];
            i += 1;
        }
        let mut i = 0;
        while i < texts.len() {
            c.texts |= 1 << texts[i];
            i += 1;
        }
        c
    }
}

/// One text column: the bytes of its values one after the other and the end
/// offset of each (NULL_TEXT marks a NULL).
#[derive(Debug, Clone, Default)]
struct TextCol {
    bytes: Buf,
    ends: Vec<u32>,
}

/// A text column's bytes: as pushed, or, once a decoded column has been
/// found UTF-8 as a whole, a `String`, so that a value is a `&str` without
/// checking its bytes again (a reader asks each value a few times).
#[derive(Debug, Clone)]
enum Buf {
    Bytes(Vec<u8>),
    Text(String),
}

impl Default for Buf {
    fn default() -> Buf {
        Buf::Bytes(Vec::new())
    }
}

impl Buf {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Buf::Bytes(v) => v,
            Buf::Text(s) => s.as_bytes(),
        }
    }

    fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// The bytes to change (a `String` gives its buffer back, capacity kept).
    fn vec(&mut self) -> &mut Vec<u8> {
        if let Buf::Text(s) = self {
            *self = Buf::Bytes(std::mem::take(s).into_bytes());
        }
        match self {
            Buf::Bytes(v) => v,
            Buf::Text(_) => unreachable!("turned into bytes just above"),
        }
    }

    /// Checks the bytes as a whole once: UTF-8 ones become a `String`.
    fn check_utf8(&mut self) {
        if let Buf::Bytes(v) = self {
            *self = match String::from_utf8(std::mem::take(v)) {
                Ok(s) => Buf::Text(s),
                Err(e) => Buf::Bytes(e.into_bytes()),
            };
        }
    }

    /// The value between `start` and `end`, if it is UTF-8 on its own.
    fn str(&self, start: usize, end: usize) -> Option<&str> {
        match self {
            Buf::Text(s) => s.get(start..end),
            Buf::Bytes(v) => std::str::from_utf8(v.get(start..end)?).ok(),
        }
    }
}

impl TextCol {
    fn push(&mut self, v: Option<&[u8]>) -> Result<()> {
        self.try_push(v)
            .map_err(|_| Error::data("a block of events over 2 GiB of text"))
    }

    /// [`TextCol::push`]; a column over 2 GiB is refused and left as it was.
    fn try_push(&mut self, v: Option<&[u8]>) -> std::result::Result<(), TooLarge> {
        let end = self.ends.last().map_or(0, |e| e & !NULL_TEXT);
        match v {
            Some(t) => {
                let end = u32::try_from(self.bytes.len() + t.len())
                    .ok()
                    .filter(|&e| e < NULL_TEXT)
                    .ok_or(TooLarge)?;
                self.bytes.vec().extend_from_slice(t);
                self.ends.push(end);
            }
            None => self.ends.push(end | NULL_TEXT),
        }
        Ok(())
    }

    /// Keeps the first `rows` values.
    fn truncate(&mut self, rows: usize) {
        self.ends.truncate(rows);
        let end = self.ends.last().map_or(0, |e| e & !NULL_TEXT);
        self.bytes.vec().truncate(end as usize);
    }

    /// Where value `r` starts and ends, `None` for a NULL.
    fn span(&self, r: usize) -> Option<(usize, usize)> {
        let end = *self.ends.get(r)?;
        if end & NULL_TEXT != 0 {
            return None;
        }
        let start = match r {
            0 => 0,
            _ => self.ends[r - 1] & !NULL_TEXT,
        };
        Some((start as usize, end as usize))
    }

    fn get(&self, r: usize) -> Option<&[u8]> {
        let (start, end) = self.span(r)?;
        self.bytes.as_bytes().get(start..end)
    }

    /// Value `r` as text: `Ok(None)` for a NULL, `Err(())` for bytes that
    /// are not UTF-8.
    fn text(&self, r: usize) -> std::result::Result<Option<&str>, ()> {
        match self.span(r) {
            None => Ok(None),
            Some((start, end)) => self.bytes.str(start, end).map(Some).ok_or(()),
        }
    }
}

/// Events column by column: a block being written, or one decoded.
#[derive(Debug, Clone)]
pub struct Block {
    /// The arrival of row 0.
    pub first: i64,
    /// What its errors call a row and a block: `("event at arrival",
    /// "event block at arrival")`, or a table's (see [`Block::labelled`]).
    label: (&'static str, &'static str),
    n: usize,
    ints: Vec<Vec<i64>>,
    texts: Vec<TextCol>,
}

impl Default for Block {
    fn default() -> Block {
        Block::new(0)
    }
}

impl Block {
    /// An events block.
    pub fn new(first: i64) -> Block {
        Block::with_layout(first, EVENT_INTS, EVENT_TEXTS)
    }

    /// A block of rows of `ints` integer and `texts` text columns (at most
    /// 32 each; the ledger's blocks use it too).
    pub fn with_layout(first: i64, ints: usize, texts: usize) -> Block {
        Block {
            first,
            label: ("event at arrival", "event block at arrival"),
            n: 0,
            ints: vec![Vec::new(); ints.min(32)],
            texts: vec![TextCol::default(); texts.min(32)],
        }
    }

    /// The block with the words its errors use for one of its rows and for
    /// itself, each followed by a number: the row's and the block's `first`
    /// (the ledger's: `("ledger entry at pos", "ledger block at pos")`).
    pub fn labelled(mut self, row: &'static str, block: &'static str) -> Block {
        self.label = (row, block);
        self
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn clear(&mut self) {
        self.n = 0;
        for c in &mut self.ints {
            c.clear();
        }
        for c in &mut self.texts {
            c.bytes.vec().clear();
            c.ends.clear();
        }
    }

    /// Keeps the first `rows` rows, dropping a row only partly pushed too.
    pub fn truncate(&mut self, rows: usize) {
        self.n = self.n.min(rows);
        for c in &mut self.ints {
            c.truncate(rows);
        }
        for c in &mut self.texts {
            c.truncate(rows);
        }
    }

    /// Integer column `c` of row `r` (NULL when not decoded).
    pub fn int(&self, c: usize, r: usize) -> Option<i64> {
        self.ints.get(c)?.get(r).copied().filter(|&v| v != NULL_INT)
    }

    /// Text column `c` of row `r` as stored (NULL when not decoded).
    pub fn bytes(&self, c: usize, r: usize) -> Option<&[u8]> {
        self.texts.get(c)?.get(r)
    }

    /// Text column `c` of row `r`; bytes that are not UTF-8 are an error
    /// naming the event (the import stores only strings).
    pub fn text(&self, c: usize, r: usize) -> Result<Option<&str>> {
        match self.texts.get(c) {
            None => Ok(None),
            Some(col) => col.text(r).map_err(|()| {
                Error::data(format!(
                    "{} {}: a text field that is not UTF-8 in the store",
                    self.label.0,
                    self.first + r as i64
                ))
            }),
        }
    }

    /// The arrival of row `r`.
    pub fn arrival(&self, r: usize) -> i64 {
        self.first + r as i64
    }

    /// Appends row `r` of `b`, an event as [`event_row`] made it.
    pub fn push_row(&mut self, b: &Batch, r: usize) -> Result<()> {
        for (c, col) in self.ints.iter_mut().enumerate() {
            col.push(b.int(r, c).unwrap_or(NULL_INT));
        }
        for (c, col) in self.texts.iter_mut().enumerate() {
            col.push(b.bytes(r, c))?;
        }
        self.n += 1;
        Ok(())
    }

    /// Appends a row of these values, integer columns then text columns,
    /// as many as the block has of each (a missing value is NULL). A text
    /// column over 2 GiB refuses the row and leaves the block as it was.
    pub fn push_values(
        &mut self,
        ints: &[Option<i64>],
        texts: &[Option<&[u8]>],
    ) -> std::result::Result<(), TooLarge> {
        for (c, col) in self.texts.iter_mut().enumerate() {
            if let Err(e) = col.try_push(texts.get(c).copied().flatten()) {
                for col in &mut self.texts[..c] {
                    col.truncate(self.n);
                }
                return Err(e);
            }
        }
        for (c, col) in self.ints.iter_mut().enumerate() {
            col.push(ints.get(c).copied().flatten().unwrap_or(NULL_INT));
        }
        self.n += 1;
        Ok(())
    }

    /// Appends row `r` of `other` (every column decoded), the columns named
    /// in `ints` and `texts` taking the values given there.
    fn push_edited(
        &mut self,
        other: &Block,
        r: usize,
        ints: &[(usize, Option<i64>)],
        texts: &[(usize, Option<&[u8]>)],
    ) -> Result<()> {
        for (c, col) in self.ints.iter_mut().enumerate() {
            let v = match ints.iter().find(|(k, _)| *k == c) {
                Some((_, v)) => *v,
                None => other.int(c, r),
            };
            col.push(v.unwrap_or(NULL_INT));
        }
        for (c, col) in self.texts.iter_mut().enumerate() {
            let v = match texts.iter().find(|(k, _)| *k == c) {
                Some((_, v)) => *v,
                None => other.bytes(c, r),
            };
            col.push(v)?;
        }
        self.n += 1;
        Ok(())
    }

    /// The block as stored, every column as it is (the event blocks).
    pub fn encode(&self) -> Vec<u8> {
        assemble(VERSION, self.n, self.ints.len(), self.columns())
    }

    /// The block as stored, each column large enough that zstd makes it
    /// smaller stored compressed (the ledger's blocks: their explanations
    /// repeat themselves, and a fifth of the bytes go to SQLite and the
    /// disk).
    pub fn encode_packed(&self) -> Vec<u8> {
        self.encode_packed_with_columns().0
    }

    /// [`Block::encode_packed`], and the columns it packed, each as
    /// [`Block::encode`] would store it: what a fingerprint of the rows
    /// reads (their bytes, not zstd's).
    pub fn encode_packed_with_columns(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        let cols = self.columns();
        let packed = cols.iter().map(|c| pack(c)).collect();
        (
            assemble(VERSION_PACKED, self.n, self.ints.len(), packed),
            cols,
        )
    }

    /// Each column's bytes, integer columns first.
    pub(crate) fn columns(&self) -> Vec<Vec<u8>> {
        let mut cols: Vec<Vec<u8>> = Vec::with_capacity(self.ints.len() + self.texts.len());
        for col in &self.ints {
            let mut out = vec![0u8; self.n.div_ceil(8)];
            let mut prev = 0i64;
            for (r, &v) in col.iter().enumerate() {
                if v != NULL_INT {
                    out[r / 8] |= 1 << (r % 8);
                    put_varint(&mut out, zigzag(v.wrapping_sub(prev)));
                    prev = v;
                }
            }
            cols.push(out);
        }
        for col in &self.texts {
            let mut out = Vec::with_capacity(col.ends.len() * 2 + col.bytes.len());
            let mut start = 0u32;
            for &e in &col.ends {
                if e & NULL_TEXT != 0 {
                    put_varint(&mut out, 0);
                } else {
                    put_varint(&mut out, u64::from(e - start) + 1);
                    start = e;
                }
            }
            out.extend_from_slice(col.bytes.as_bytes());
            cols.push(out);
        }
        cols
    }

    /// Decodes the columns `cols` of a stored block into `self`, reusing its
    /// buffers.
    pub fn decode(&mut self, first: i64, body: &[u8], cols: Cols) -> Result<()> {
        self.clear();
        self.first = first;
        let label = self.label.1;
        let bad = |what: &str| Error::data(format!("{label} {first}: {what}"));
        let mut pos = 0usize;
        let packed = match body.first() {
            Some(&VERSION) => false,
            Some(&VERSION_PACKED) => true,
            _ => return Err(bad("an unknown format")),
        };
        pos += 1;
        let n = varint_usize(body, &mut pos).ok_or_else(|| bad("cut short"))?;
        let ni = varint_usize(body, &mut pos).ok_or_else(|| bad("cut short"))?;
        let nt = varint_usize(body, &mut pos).ok_or_else(|| bad("cut short"))?;
        if ni != self.ints.len() || nt != self.texts.len() || n > 1 << 24 {
            return Err(bad("an unknown layout"));
        }
        let mut lens = [0usize; 64];
        let lens = &mut lens[..ni + nt];
        for l in lens.iter_mut() {
            *l = varint_usize(body, &mut pos).ok_or_else(|| bad("cut short"))?;
        }
        self.n = n;
        for (c, &len) in lens.iter().enumerate() {
            let end = pos
                .checked_add(len)
                .filter(|&e| e <= body.len())
                .ok_or_else(|| bad("cut short"))?;
            let stored = &body[pos..end];
            pos = end;
            let wanted = match c < ni {
                true => cols.ints & (1 << c) != 0,
                false => cols.texts & (1 << (c - ni)) != 0,
            };
            if !wanted {
                continue;
            }
            let decoded = with_unpacked(stored, packed, |payload| match c < ni {
                true => decode_ints(payload?, n, &mut self.ints[c]),
                false => decode_texts(payload?, n, &mut self.texts[c - ni]),
            });
            if decoded.is_none() {
                return Err(bad(match c < ni {
                    true => "a bad integer column",
                    false => "a bad text column",
                }));
            }
        }
        if pos != body.len() {
            return Err(bad("bytes after its last column"));
        }
        Ok(())
    }
}

impl crate::batch::Refill for Block {
    fn clear(&mut self) {
        Block::clear(self)
    }
    fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// The body of a block of `n` rows: its version, the rows and column
/// counts, each column's length, then the columns.
fn assemble(version: u8, n: usize, ints: usize, cols: Vec<Vec<u8>>) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + cols.iter().map(|c| c.len() + 3).sum::<usize>());
    body.push(version);
    put_varint(&mut body, n as u64);
    put_varint(&mut body, ints as u64);
    put_varint(&mut body, (cols.len() - ints) as u64);
    for c in &cols {
        put_varint(&mut body, c.len() as u64);
    }
    for c in &cols {
        body.extend_from_slice(c);
    }
    body
}

/// A column of a packed block: [`RAW`] and the column, or [`ZSTD`], the
/// column's length and a zstd frame of it, when that is shorter.
fn pack(col: &[u8]) -> Vec<u8> {
    if col.len() >= PACK_FROM {
        let mut out = vec![ZSTD];
        put_varint(&mut out, col.len() as u64);
        let head = out.len();
        let frame = PACKER.with(|p| {
            let mut p = p.borrow_mut();
            if p.is_none() {
                // with the frame's checksum, a spoilt column is an error
                // when read, not other bytes
                *p = zstd::bulk::Compressor::new(ZSTD_LEVEL)
                    .and_then(|mut z| {
                        z.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                        Ok(z)
                    })
                    .ok();
            }
            let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(col.len()));
            p.as_mut()?.compress_to_buffer(col, &mut frame).ok()?;
            Some(frame)
        });
        // a column zstd cannot make smaller (or a failure of it) is kept
        // as it is
        if let Some(frame) = frame.filter(|f| head + f.len() < 1 + col.len()) {
            out.extend_from_slice(&frame);
            return out;
        }
    }
    let mut out = Vec::with_capacity(1 + col.len());
    out.push(RAW);
    out.extend_from_slice(col);
    out
}

/// Calls `f` with a stored column's bytes as [`Block::columns`] made
/// them: `stored` itself, or for a packed block the column it holds,
/// decompressed into this thread's buffer; `None` when that fails.
fn with_unpacked<R>(
    stored: &[u8],
    packed: bool,
    f: impl FnOnce(Option<&[u8]>) -> Option<R>,
) -> Option<R> {
    if !packed {
        return f(Some(stored));
    }
    match stored.split_first() {
        Some((&RAW, col)) => f(Some(col)),
        Some((&ZSTD, rest)) => UNPACKER.with(|u| {
            let mut u = u.borrow_mut();
            let (dec, buf) = &mut *u;
            let mut pos = 0;
            let len = varint_usize(rest, &mut pos).filter(|&l| l <= MAX_COLUMN);
            let col = len.and_then(|len| {
                if dec.is_none() {
                    *dec = zstd::bulk::Decompressor::new().ok();
                }
                buf.clear();
                buf.try_reserve(len).ok()?;
                let got = dec.as_mut()?.decompress_to_buffer(&rest[pos..], buf).ok()?;
                (got == len).then_some(&buf[..])
            });
            f(col)
        }),
        _ => f(None),
    }
}

thread_local! {
    /// This thread's zstd compressor, made at its first packed column.
    static PACKER: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// This thread's zstd decompressor and the buffer it fills.
    static UNPACKER: std::cell::RefCell<(Option<zstd::bulk::Decompressor<'static>>, Vec<u8>)> =
        const { std::cell::RefCell::new((None, Vec::new())) };
}

fn decode_ints(payload: &[u8], n: usize, out: &mut Vec<i64>) -> Option<()> {
    let map = payload.get(..n.div_ceil(8))?;
    let mut pos = map.len();
    let mut prev = 0i64;
    out.reserve(n);
    for r in 0..n {
        if map[r / 8] & (1 << (r % 8)) != 0 {
            prev = prev.wrapping_add(unzigzag(get_varint(payload, &mut pos)?));
            out.push(prev);
        } else {
            out.push(NULL_INT);
        }
    }
    (pos == payload.len()).then_some(())
}

fn decode_texts(payload: &[u8], n: usize, out: &mut TextCol) -> Option<()> {
    let mut pos = 0;
    let mut end = 0u32;
    out.ends.reserve(n);
    for _ in 0..n {
        match get_varint(payload, &mut pos)? {
            0 => out.ends.push(end | NULL_TEXT),
            l => {
                end = end.checked_add(u32::try_from(l - 1).ok()?)?;
                if end & NULL_TEXT != 0 {
                    return None;
                }
                out.ends.push(end);
            }
        }
    }
    let bytes = payload.get(pos..)?;
    if bytes.len() != end as usize {
        return None;
    }
    let buf = out.bytes.vec();
    buf.extend_from_slice(bytes);
    out.bytes.check_utf8();
    Some(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn varint_usize(buf: &[u8], pos: &mut usize) -> Option<usize> {
    usize::try_from(get_varint(buf, pos)?).ok()
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// The hash an id is known by in `event_hashes`.
pub fn id_hash(id: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id)
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

pub fn kind_code(k: edge::record::Kind) -> Option<i64> {
    use edge::record::Kind;
    match k {
        Kind::Click => Some(KIND_CLICK),
        Kind::Conversion => Some(KIND_CONVERSION),
        Kind::Deal => Some(KIND_DEAL),
        Kind::Mdf => Some(KIND_MDF),
        Kind::Partner | Kind::Coupon => None,
    }
}

/// Appends an event record (a click, conversion, deal or MDF claim; not a
/// registry line) to `b`, an events block, as a row of the event columns
/// above, its values in the form the store keeps them. Runs on the import's
/// parser threads, which hand whole blocks on. `false` for a registry
/// record, which has no row; on an error `b` is left as it was.
pub fn event_row(r: &crate::line::Line, b: &mut Block) -> std::result::Result<bool, TooLarge> {
    let Some(kind) = kind_code(r.kind) else {
        return Ok(false);
    };
    let ms = |t: Option<edge::time::Timestamp>| t.map(|t| t.ms());
    let ints = [
        Some(kind),
        r.seq.map(|s| s as i64),
        ms(r.ts),
        ms(r.click_ts),
        r.bot.map(i64::from),
        ms(r.approved_at),
        ms(r.expires_at),
        r.asn.map(i64::from),
        r.datacenter.map(i64::from),
        r.has_referrer.map(i64::from),
    ];
    let dec = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string());
    let (amount, lots) = (dec(r.amount), dec(r.lots));
    let texts = [
        r.id,
        r.program,
        r.partner,
        r.link,
        r.click_id,
        r.event,
        r.txn_id,
        amount.as_deref(),
        r.currency.map(|c| c.code()),
        r.customer,
        r.coupon,
        r.original_txn_id,
        lots.as_deref(),
        r.instrument,
        r.country,
        r.email_hash,
        r.status,
        r.source.map(source_name),
        r.visitor,
    ];
    debug_assert!(b.ints.len() == ints.len() && b.texts.len() == texts.len());
    let at = b.n;
    for (col, v) in b.ints.iter_mut().zip(ints) {
        col.push(v.unwrap_or(NULL_INT));
    }
    for (col, v) in b.texts.iter_mut().zip(texts) {
        if let Err(e) = col.try_push(v.map(str::as_bytes)) {
            b.truncate(at);
            return Err(e);
        }
    }
    b.n += 1;
    Ok(true)
}

/// Writes a finished block and its ids' hashes.
fn store_block(c: &Connection, blk: &Block, hashes: &[u64]) -> Result<()> {
    if blk.n == 0 {
        return Ok(());
    }
    store_encoded(c, blk.first, blk, &blk.encode(), hashes)
}

/// [`store_block`] of the rows of `blk` at arrival `first` (whatever
/// `blk.first` says), `body` their encoding ([`Block::encode`]).
fn store_encoded(
    c: &Connection,
    first: i64,
    blk: &Block,
    body: &[u8],
    hashes: &[u64],
) -> Result<()> {
    let mut min_ts = i64::MAX;
    let mut max_ts = i64::MIN;
    let mut facts: Option<(i64, i64)> = None;
    for r in 0..blk.n {
        let ts = blk
            .int(E_TS, r)
            .ok_or_else(|| Error::data(format!("event at arrival {}: no ts", first + r as i64)))?;
        min_ts = min_ts.min(ts);
        max_ts = max_ts.max(ts);
        if blk.int(E_KIND, r) != Some(KIND_CLICK) {
            facts = Some(facts.map_or((ts, ts), |(a, b)| (a.min(ts), b.max(ts))));
        }
    }
    let mut hb = Vec::with_capacity(hashes.len() * 8);
    for h in hashes {
        hb.extend_from_slice(&h.to_le_bytes());
    }
    c.prepare_cached(
        "INSERT INTO event_blocks (first, n, min_ts, max_ts, fact_min_ts, fact_max_ts, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        first,
        blk.n as i64,
        min_ts,
        max_ts,
        facts.map(|f| f.0),
        facts.map(|f| f.1),
        body
    ])?;
    c.prepare_cached("INSERT INTO event_hashes (first, hashes) VALUES (?1, ?2)")?
        .execute(params![first, hb])?;
    Ok(())
}

/// The rows an import adds to the store ([`Writer::add`]): a parser's
/// block, or a batch of rows.
pub trait Rows {
    /// The id of row `r` (`None` past the last row).
    fn id(&self, r: usize) -> Option<&[u8]>;
    fn ts(&self, r: usize) -> Option<i64>;
    /// Appends row `r` to `blk`.
    fn push_onto(&self, r: usize, blk: &mut Block) -> Result<()>;
}

impl Rows for Batch {
    fn id(&self, r: usize) -> Option<&[u8]> {
        self.bytes(r, E_ID)
    }
    fn ts(&self, r: usize) -> Option<i64> {
        self.int(r, E_TS)
    }
    fn push_onto(&self, r: usize, blk: &mut Block) -> Result<()> {
        blk.push_row(self, r)
    }
}

impl Rows for Block {
    fn id(&self, r: usize) -> Option<&[u8]> {
        self.bytes(E_ID, r)
    }
    fn ts(&self, r: usize) -> Option<i64> {
        self.int(E_TS, r)
    }
    fn push_onto(&self, r: usize, blk: &mut Block) -> Result<()> {
        blk.push_edited(self, r, &[], &[])
    }
}

/// The id of row `r`, an event with an id and a time (what the engine
/// relies on; the import checked it).
fn event_checked<R: Rows>(b: &R, r: usize) -> Result<&[u8]> {
    let id = b
        .id(r)
        .ok_or_else(|| Error::data("an event without an id"))?;
    if b.ts(r).is_none() {
        return Err(Error::data(format!(
            "event {}: no ts",
            String::from_utf8_lossy(id)
        )));
    }
    Ok(id)
}

/// Every known id's hash and the arrival of the first event with it: the
/// import's duplicate check. Kept by the store between transactions while
/// `next` (the next arrival) says it is current.
#[derive(Debug, Default)]
pub struct IdIndex {
    map: HashIndex,
    pub next: i64,
}

/// Id hash -> arrival, the first given for a hash kept: an open-addressing
/// table of `(hash, arrival)` probed linearly from the hash's low bits (the
/// keys are already xxh3 hashes). Against a general map it can be asked
/// for a key's slot ahead of time ([`HashIndex::prefetch`]): at ten
/// million ids each lookup is a cache miss, and the import hides it behind
/// the rows before. Arrivals start at 1, so an arrival of 0 marks a free
/// slot.
#[derive(Default)]
struct HashIndex {
    slots: Vec<(u64, i64)>,
    len: usize,
}

impl std::fmt::Debug for HashIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashIndex({} ids)", self.len)
    }
}

impl HashIndex {
    fn with_capacity(n: usize) -> HashIndex {
        let mut m = HashIndex::default();
        m.grow_for(n);
        m
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// The slot of `h`, or the free one where it would go.
    #[inline]
    fn find(&self, h: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let (k, a) = self.slots[i];
            if a == 0 || k == h {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    fn get(&self, h: u64) -> Option<i64> {
        if self.slots.is_empty() {
            return None;
        }
        let (_, a) = self.slots[self.find(h)];
        (a != 0).then_some(a)
    }

    /// Keeps `h -> a` unless `h` is there already.
    fn insert_first(&mut self, h: u64, a: i64) {
        debug_assert!(a > 0, "arrivals start at 1");
        self.grow_for(self.len + 1);
        let i = self.find(h);
        if self.slots[i].1 == 0 {
            self.slots[i] = (h, a);
            self.len += 1;
        }
    }

    /// `h -> a`, replacing what `h` had: for tests that make two ids look
    /// alike.
    #[cfg(test)]
    fn set(&mut self, h: u64, a: i64) {
        self.grow_for(self.len + 1);
        let i = self.find(h);
        if self.slots[i].1 == 0 {
            self.len += 1;
        }
        self.slots[i] = (h, a);
    }

    /// Asks for the cache line of `h`'s first slot.
    #[inline]
    fn prefetch(&self, h: u64) {
        if let Some(x) = self
            .slots
            .get(h as usize & self.slots.len().wrapping_sub(1))
        {
            crate::facts::prefetch(x);
        }
    }

    /// Room for `n` keys at most 3/4 full.
    fn grow_for(&mut self, n: usize) {
        let need = n.saturating_mul(4) / 3 + 1;
        if need <= self.slots.len() {
            return;
        }
        let cap = need.next_power_of_two().max(1024);
        // zeroed pages from the kernel, not yet touched: the advice comes
        // before the first write
        let mut slots = vec![(0, 0); cap];
        crate::mem::huge_pages(&mut slots);
        let old = std::mem::replace(&mut self.slots, slots);
        for (k, a) in old {
            if a != 0 {
                let i = self.find(k);
                self.slots[i] = (k, a);
            }
        }
    }
}

impl IdIndex {
    /// Reads every block's hashes.
    pub fn load(c: &Connection, next: i64) -> Result<IdIndex> {
        let n: i64 = c.query_row("SELECT COALESCE(SUM(n), 0) FROM event_blocks", [], |r| {
            r.get(0)
        })?;
        let mut map = HashIndex::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut st = c.prepare("SELECT first, hashes FROM event_hashes ORDER BY first")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let first: i64 = r.get(0)?;
            let hb = r.get_ref(1)?.as_blob()?;
            for (i, h) in hb.chunks_exact(8).enumerate() {
                let mut a = [0u8; 8];
                a.copy_from_slice(h);
                map.insert_first(u64::from_le_bytes(a), first + i as i64);
            }
        }
        Ok(IdIndex { map, next })
    }
}

/// Appends new events in blocks inside an import's transaction; an event
/// whose id is known is a duplicate and changes nothing.
pub struct Writer {
    index: IdIndex,
    pending: Block,
    hashes: Vec<u64>,
    /// The last stored block decoded to confirm a hash (its ids only).
    seen: Option<Block>,
}

impl Writer {
    pub fn new(index: IdIndex) -> Writer {
        let next = index.next;
        Writer {
            index,
            pending: Block::new(next),
            hashes: Vec::new(),
            seen: None,
        }
    }

    /// The arrival the next new event gets.
    pub fn next(&self) -> i64 {
        self.pending.first + self.pending.n as i64
    }

    /// Adds row `r` of `b`: `true` when new, `false` for a known id.
    /// Room in the duplicate check for `n` ids at once (a large import into
    /// a store with fewer), instead of the table doubling, every id moved,
    /// several times on the way. A store already holding `n` is left as it
    /// is: a file imported twice, all duplicates, never doubles the table.
    pub fn reserve(&mut self, n: usize) {
        self.index.map.grow_for(n);
    }

    pub fn add<R: Rows>(&mut self, c: &Connection, b: &R, r: usize) -> Result<bool> {
        // the slot of an id a few rows on, asked for now, is in cache when
        // that row comes
        if let Some(ahead) = b.id(r + 8) {
            self.index.map.prefetch(id_hash(ahead));
        }
        let h = id_hash(b.id(r).unwrap_or_default());
        self.add_hashed(c, b, r, h)
    }

    /// [`Writer::add`] of a row whose id hashes to `h`.
    fn add_hashed<R: Rows>(&mut self, c: &Connection, b: &R, r: usize, h: u64) -> Result<bool> {
        let id = event_checked(b, r)?;
        if let Some(a) = self.index.map.get(h) {
            if self.id_at(c, a)? == id || self.known_by_scan(c, id)? {
                return Ok(false);
            }
        }
        let arrival = self.next();
        self.index.map.insert_first(h, arrival);
        b.push_onto(r, &mut self.pending)?;
        self.hashes.push(h);
        if self.pending.n == BLOCK_ROWS {
            self.flush(c)?;
        }
        Ok(true)
    }

    /// Adds the rows of `blk`, a parser's block of at most [`BLOCK_ROWS`]
    /// events (`hashes`: their ids' [`id_hash`]), as [`Writer::add`] of each
    /// would, and answers how many were new. When every id is new, which
    /// is the rule, the block is stored as it is, with `body`, its
    /// encoding, made by the parser (this thread, the one all rows go
    /// through, then only checks the ids and writes); from the first known
    /// hash on, its rows are added one by one.
    pub fn add_block(
        &mut self,
        c: &Connection,
        blk: &Block,
        hashes: &[u64],
        body: &[u8],
    ) -> Result<u64> {
        let n = blk.rows();
        if n == 0 {
            return Ok(0);
        }
        if hashes.len() != n || n > BLOCK_ROWS {
            return Err(Error::data(format!(
                "a parser's block of {n} events with {} hashes (at most {BLOCK_ROWS} events, a hash each)",
                hashes.len()
            )));
        }
        // the rows before go first, in a block of their own
        self.flush(c)?;
        let base = self.next();
        for (r, &h) in hashes.iter().enumerate() {
            if let Some(&ahead) = hashes.get(r + 8) {
                self.index.map.prefetch(ahead);
            }
            event_checked(blk, r)?;
            if self.index.map.get(h).is_some() {
                // a known hash (a duplicate, or an id sharing its hash): the
                // rows before are new, at the arrivals they were given
                for (k, &h) in hashes.iter().enumerate().take(r) {
                    blk.push_onto(k, &mut self.pending)?;
                    self.hashes.push(h);
                }
                let mut new = r as u64;
                for (k, &h) in hashes.iter().enumerate().skip(r) {
                    new += u64::from(self.add_hashed(c, blk, k, h)?);
                }
                return Ok(new);
            }
            self.index.map.insert_first(h, base + r as i64);
        }
        store_encoded(c, base, blk, body, hashes)?;
        self.pending.first = base + n as i64;
        Ok(n as u64)
    }

    fn flush(&mut self, c: &Connection) -> Result<()> {
        store_block(c, &self.pending, &self.hashes)?;
        let next = self.next();
        self.pending.clear();
        self.pending.first = next;
        self.hashes.clear();
        Ok(())
    }

    /// Stores the last block; the index, current as of the new next
    /// arrival, to keep for the next transaction once this one commits.
    pub fn finish(mut self, c: &Connection) -> Result<IdIndex> {
        self.flush(c)?;
        self.index.next = self.next();
        Ok(self.index)
    }

    /// The id of the event at arrival `a` (pending or stored).
    fn id_at(&mut self, c: &Connection, a: i64) -> Result<&[u8]> {
        if a >= self.pending.first {
            let r = usize::try_from(a - self.pending.first).unwrap_or(usize::MAX);
            return Ok(self.pending.bytes(E_ID, r).unwrap_or_default());
        }
        let cached = self
            .seen
            .as_ref()
            .is_some_and(|b| a >= b.first && a < b.first + b.n as i64);
        if !cached {
            let row: Option<(i64, Vec<u8>)> = c
                .query_row(
                    "SELECT first, body FROM event_blocks WHERE first <= ?1 ORDER BY first DESC LIMIT 1",
                    [a],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let mut blk = self.seen.take().unwrap_or_default();
            match row {
                Some((first, body)) => blk.decode(first, &body, Cols::of(&[], &[E_ID]))?,
                None => blk.clear(),
            }
            self.seen = Some(blk);
        }
        Ok(match &self.seen {
            Some(b) => usize::try_from(a - b.first)
                .ok()
                .and_then(|r| b.bytes(E_ID, r))
                .unwrap_or_default(),
            None => &[],
        })
    }

    /// Whether an event with `id` is stored or pending, by reading every id:
    /// only for an id whose hash another id has (about once in 10^9 imports
    /// of ten million events).
    fn known_by_scan(&self, c: &Connection, id: &[u8]) -> Result<bool> {
        if (0..self.pending.n).any(|r| self.pending.bytes(E_ID, r) == Some(id)) {
            return Ok(true);
        }
        let mut found = false;
        scan(c, Cols::of(&[], &[E_ID]), "1", [], |b| {
            found = found || (0..b.n).any(|r| b.bytes(E_ID, r) == Some(id));
            Ok(())
        })?;
        Ok(found)
    }
}

/// Calls `f` with each block whose row in `event_blocks` matches `filter`
/// (an SQL condition on its columns, with `params`), in arrival order,
/// decoding the columns `cols`.
pub fn scan<P: rusqlite::Params>(
    c: &Connection,
    cols: Cols,
    filter: &str,
    params: P,
    mut f: impl FnMut(&Block) -> Result<()>,
) -> Result<()> {
    decode_each(c, cols, filter, params, Block::default(), |blk| {
        f(blk).map(|()| true)
    })
}

/// The query and loop of [`scan`] and [`scan_beside`]: each matching block
/// decoded into `blk` and handed to `f`, which may swap it for another and
/// answers whether to go on.
fn decode_each<P: rusqlite::Params>(
    c: &Connection,
    cols: Cols,
    filter: &str,
    params: P,
    mut blk: Block,
    mut f: impl FnMut(&mut Block) -> Result<bool>,
) -> Result<()> {
    let mut st = c.prepare(&format!(
        "SELECT first, body FROM event_blocks WHERE {filter} ORDER BY first"
    ))?;
    let mut rows = st.query(params)?;
    while let Some(r) = rows.next()? {
        blk.decode(r.get(0)?, r.get_ref(1)?.as_blob()?, cols)?;
        if !f(&mut blk)? {
            break;
        }
    }
    Ok(())
}

/// [`scan`] on two threads: this one reads the blocks from SQLite and
/// decodes them, a second one calls `f` with each, in the same order, so
/// the two halves of the work overlap. An error of `f` stops the reading
/// and is the one returned.
pub fn scan_beside<P: rusqlite::Params>(
    c: &Connection,
    cols: Cols,
    filter: &str,
    params: P,
    mut f: impl FnMut(&Block) -> Result<()> + Send,
) -> Result<()> {
    let (filler, reader) = crate::batch::channel(Block::default(), 4);
    std::thread::scope(|sc| {
        let worker = sc.spawn(move || -> Result<()> {
            while let Some(b) = reader.next() {
                f(&b)?;
                reader.give_back(b);
            }
            Ok(())
        });
        let read = decode_each(c, cols, filter, params, filler.fresh(), |blk| {
            match filler.send(std::mem::take(blk)) {
                Some(next) => {
                    *blk = next;
                    Ok(true)
                }
                // `f` failed: the worker's result says how
                None => Ok(false),
            }
        });
        drop(filler);
        let done = match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        done.and(read)
    })
}

/// The stored body of the block at `first`.
fn body_at(c: &Connection, first: i64) -> Result<Vec<u8>> {
    Ok(c.query_row(
        "SELECT body FROM event_blocks WHERE first = ?1",
        [first],
        |r| r.get(0),
    )?)
}

/// The stored event with `id`: its block (every column) and row.
pub fn find(c: &Connection, id: &str) -> Result<Option<(Block, usize)>> {
    let h = id_hash(id.as_bytes());
    let mut st = c.prepare("SELECT first, hashes FROM event_hashes ORDER BY first")?;
    let mut rows = st.query([])?;
    let mut blk = Block::default();
    while let Some(r) = rows.next()? {
        let first: i64 = r.get(0)?;
        let hb = r.get_ref(1)?.as_blob()?;
        if !hb.chunks_exact(8).any(|x| x == h.to_le_bytes()) {
            continue;
        }
        let body = body_at(c, first)?;
        blk.decode(first, &body, Cols::ALL)?;
        if let Some(i) = (0..blk.n).find(|&i| blk.bytes(E_ID, i) == Some(id.as_bytes())) {
            return Ok(Some((blk, i)));
        }
    }
    Ok(None)
}

/// Rewrites each block holding a row `edit` changes: `edit(block, row)`
/// returns the new integer and text values of the columns it changes, or
/// `None` to leave the row alone. Returns the rows changed. The ids, the
/// arrivals and the timestamps stay (the blocks' ranges hold).
pub fn rewrite(
    c: &Connection,
    cols: Cols,
    mut edit: impl FnMut(&Block, usize) -> Result<Option<Edit>>,
) -> Result<usize> {
    let mut changed = 0;
    let mut todo: Vec<(i64, Vec<(usize, Edit)>)> = Vec::new();
    scan(c, cols, "1", [], |b| {
        let mut edits = Vec::new();
        for r in 0..b.n {
            if let Some(e) = edit(b, r)? {
                edits.push((r, e));
            }
        }
        if !edits.is_empty() {
            changed += edits.len();
            todo.push((b.first, edits));
        }
        Ok(())
    })?;
    let mut old = Block::default();
    for (first, edits) in todo {
        let body = body_at(c, first)?;
        old.decode(first, &body, Cols::ALL)?;
        let mut new = Block::new(first);
        let mut edits = edits.iter().peekable();
        for r in 0..old.n {
            match edits.next_if(|(at, _)| *at == r) {
                Some((_, e)) => {
                    let texts: Vec<(usize, Option<&[u8]>)> =
                        e.texts.iter().map(|(c, v)| (*c, v.as_deref())).collect();
                    new.push_edited(&old, r, &e.ints, &texts)?
                }
                None => new.push_edited(&old, r, &[], &[])?,
            }
        }
        c.execute(
            "UPDATE event_blocks SET body = ?2 WHERE first = ?1",
            params![first, new.encode()],
        )?;
    }
    Ok(changed)
}

/// New values for some columns of one event ([`rewrite`]).
#[derive(Debug, Default, Clone)]
pub struct Edit {
    pub ints: Vec<(usize, Option<i64>)>,
    pub texts: Vec<(usize, Option<Vec<u8>>)>,
}

/// Migration 5: the rows of the old `events` table, in arrival order, into
/// blocks (a gap in the arrivals starts a new block), then the table goes.
pub fn move_rows_into_blocks(c: &Connection) -> Result<()> {
    let mut st = c.prepare(
        "SELECT arrival, kind, seq, ts, click_ts, bot, approved_at, expires_at, asn, datacenter,
                has_referrer, id, program, partner, link, click_id, event, txn_id, amount, currency,
                customer, coupon, original_txn_id, lots, instrument, country, email_hash, status,
                source, visitor
         FROM events ORDER BY arrival",
    )?;
    let mut rows = st.query([])?;
    let mut blk = Block::new(1);
    let mut hashes = Vec::new();
    let mut row = Batch::new(EVENT_INTS, EVENT_TEXTS);
    while let Some(r) = rows.next()? {
        let arrival: i64 = r.get(0)?;
        if blk.n == BLOCK_ROWS || (blk.n > 0 && arrival != blk.first + blk.n as i64) {
            store_block(c, &blk, &hashes)?;
            blk.clear();
            hashes.clear();
        }
        if blk.n == 0 {
            blk.first = arrival;
        }
        row.clear();
        for i in 0..EVENT_INTS {
            row.push_int(r.get::<_, Option<i64>>(1 + i)?);
        }
        for i in 0..EVENT_TEXTS {
            row.push_bytes(r.get_ref(1 + EVENT_INTS + i)?.as_bytes_or_null()?)
                .map_err(|_| Error::data("an event's fields are over 2 GiB"))?;
        }
        hashes.push(id_hash(row.bytes(0, E_ID).unwrap_or_default()));
        blk.push_row(&row, 0)?;
    }
    store_block(c, &blk, &hashes)?;
    drop(rows);
    drop(st);
    c.execute_batch("DROP TABLE events;")?;
    Ok(())
}

/// Every stored event as the old `events` table's row (id, kind, seq, ts,
/// program, partner, link, click_id, click_ts, event, txn_id, amount,
/// currency, customer, coupon, original_txn_id, lots, instrument, bot,
/// country, email_hash, status, approved_at, expires_at, source, arrival,
/// visitor, asn, datacenter, has_referrer), in arrival order: for tests and
/// tools over small stores.
pub fn all_rows(c: &Connection) -> Result<Vec<Vec<rusqlite::types::Value>>> {
    let mut out = Vec::new();
    scan(c, Cols::ALL, "1", [], |b| {
        for r in 0..b.n {
            out.push(row_values(b, r));
        }
        Ok(())
    })?;
    Ok(out)
}

/// The stored events' (arrival, id), in arrival order (tests).
#[cfg(test)]
pub(crate) fn stored_ids(c: &Connection) -> Vec<(i64, String)> {
    use rusqlite::types::Value;
    all_rows(c)
        .unwrap()
        .into_iter()
        .map(|row| match (&row[25], &row[0]) {
            (Value::Integer(a), Value::Text(id)) => (*a, id.clone()),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Row `r` of `b` as [`all_rows`] gives it.
pub fn row_values(b: &Block, r: usize) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    let i = |c: usize| b.int(c, r).map_or(Value::Null, Value::Integer);
    let t = |c: usize| {
        b.bytes(c, r).map_or(Value::Null, |v| {
            Value::Text(String::from_utf8_lossy(v).into_owned())
        })
    };
    vec![
        t(E_ID),
        i(E_KIND),
        i(E_SEQ),
        i(E_TS),
        t(E_PROGRAM),
        t(E_PARTNER),
        t(E_LINK),
        t(E_CLICK_ID),
        i(E_CLICK_TS),
        t(E_EVENT),
        t(E_TXN_ID),
        t(E_AMOUNT),
        t(E_CURRENCY),
        t(E_CUSTOMER),
        t(E_COUPON),
        t(E_ORIGINAL_TXN_ID),
        t(E_LOTS),
        t(E_INSTRUMENT),
        i(E_BOT),
        t(E_COUNTRY),
        t(E_EMAIL_HASH),
        t(E_STATUS),
        i(E_APPROVED_AT),
        i(E_EXPIRES_AT),
        t(E_SOURCE),
        Value::Integer(b.arrival(r)),
        t(E_VISITOR),
        i(E_ASN),
        i(E_DATACENTER),
        i(E_HAS_REFERRER),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(b: &mut Batch, id: &str, ts: Option<i64>, texts: &[(usize, Option<&str>)]) {
        for c in 0..EVENT_INTS {
            b.push_int(match c {
                E_TS => ts,
                E_KIND => Some(1),
                E_ASN => Some(-7),
                _ => None,
            });
        }
        for c in 0..EVENT_TEXTS {
            let v = match c {
                E_ID => Some(id),
                _ => texts.iter().find(|(k, _)| *k == c).and_then(|(_, v)| *v),
            };
            b.push_text(v).unwrap();
        }
    }

    /// A block comes back as it went in: NULLs, empty strings, negative and
    /// extreme integers, and only the columns asked for.
    #[test]
    fn blocks_round_trip() {
        let mut b = Batch::new(EVENT_INTS, EVENT_TEXTS);
        row(
            &mut b,
            "a",
            Some(1_700_000_000_000),
            &[(E_AMOUNT, Some("1.50"))],
        );
        row(
            &mut b,
            "bb",
            Some(5),
            &[(E_AMOUNT, Some("")), (E_CUSTOMER, Some("é"))],
        );
        row(&mut b, "c", Some(i64::MAX), &[]);
        row(&mut b, "d", Some(i64::MIN + 1), &[(E_VISITOR, Some("v"))]);
        let mut blk = Block::new(41);
        for r in 0..b.rows() {
            blk.push_row(&b, r).unwrap();
        }
        let body = blk.encode();
        let mut back = Block::default();
        back.decode(41, &body, Cols::ALL).unwrap();
        assert_eq!(back.rows(), 4);
        for r in 0..4 {
            assert_eq!(row_values(&back, r), row_values(&blk, r));
        }
        assert_eq!(back.int(E_TS, 2), Some(i64::MAX));
        assert_eq!(back.int(E_TS, 3), Some(i64::MIN + 1));
        assert_eq!(back.int(E_SEQ, 0), None);
        assert_eq!(back.bytes(E_AMOUNT, 1), Some(&b""[..]));
        assert_eq!(back.bytes(E_AMOUNT, 2), None);
        assert_eq!(back.text(E_CUSTOMER, 1).unwrap(), Some("é"));
        assert_eq!(back.arrival(3), 44);
        back.decode(41, &body, Cols::of(&[E_TS], &[E_ID])).unwrap();
        assert_eq!(back.bytes(E_ID, 1), Some(&b"bb"[..]));
        assert_eq!(back.int(E_TS, 1), Some(5));
        assert_eq!(back.int(E_ASN, 1), None);
        assert_eq!(back.bytes(E_AMOUNT, 0), None);
        // a cut or altered body is an error naming the block, never a panic
        for cut in 0..body.len() {
            assert!(
                back.decode(41, &body[..cut], Cols::ALL).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = body.clone();
        longer.push(0);
        let e = back.decode(41, &longer, Cols::ALL).unwrap_err().to_string();
        assert!(e.contains("arrival 41"), "{e}");
    }

    /// A block of `n` rows in the ledger's layout, its calc column
    /// repeating itself as explanations do.
    fn ledger_like(n: usize, first: i64) -> Block {
        let mut b = Batch::new(1, 3);
        for r in 0..n {
            b.push_int(if r % 7 == 3 {
                None
            } else {
                Some(20_000 + (r as i64 % 30))
            });
            b.push_text(Some(&format!("le_{r:08x}"))).unwrap();
            b.push_text(if r % 5 == 0 { None } else { Some("saas") })
                .unwrap();
            b.push_text(Some(&format!(
                "20% of {}.{:02} USD = {}.{:02} USD, rounded half-even once; attributed by click",
                r * 7 % 1000,
                r % 100,
                r * 7 % 1000 / 5,
                r % 100 / 5
            )))
            .unwrap();
        }
        let mut blk = Block::with_layout(first, 1, 3);
        for r in 0..n {
            blk.push_row(&b, r).unwrap();
        }
        blk
    }

    fn same_rows(a: &Block, b: &Block) {
        assert_eq!(a.rows(), b.rows());
        for r in 0..a.rows() {
            assert_eq!(a.int(0, r), b.int(0, r), "row {r}");
            for c in 0..3 {
                assert_eq!(a.bytes(c, r), b.bytes(c, r), "row {r} column {c}");
            }
        }
    }

    /// A packed block comes back as it went in, every column or some,
    /// much smaller than the plain one; a column too short to pay is kept
    /// as it is; a block of the plain format still reads.
    #[test]
    fn packed_blocks_round_trip() {
        let blk = ledger_like(4096, 7);
        let plain = blk.encode();
        let packed = blk.encode_packed();
        assert_eq!(packed[0], VERSION_PACKED);
        assert!(
            packed.len() * 4 < plain.len(),
            "{} packed against {} plain",
            packed.len(),
            plain.len()
        );
        let mut back = Block::with_layout(0, 1, 3);
        back.decode(7, &packed, Cols::all(1, 3)).unwrap();
        same_rows(&back, &blk);
        back.decode(7, &packed, Cols::of(&[], &[2])).unwrap();
        assert_eq!(back.bytes(2, 5), blk.bytes(2, 5));
        assert_eq!(back.bytes(0, 5), None);
        assert_eq!(back.int(0, 5), None);
        back.decode(7, &plain, Cols::all(1, 3)).unwrap();
        same_rows(&back, &blk);

        // two rows: every column under PACK_FROM, stored as it is
        let small = ledger_like(2, 9);
        let body = small.encode_packed();
        assert!(body.len() < small.encode().len() + 5);
        back.decode(9, &body, Cols::all(1, 3)).unwrap();
        same_rows(&back, &small);
        // an empty block too
        let empty = Block::with_layout(3, 1, 3);
        back.decode(3, &empty.encode_packed(), Cols::all(1, 3))
            .unwrap();
        assert_eq!(back.rows(), 0);
    }

    /// Rows pushed as values read back as pushed (a missing value and
    /// `None` are NULL, an empty text is not); the packed encoding comes
    /// with the columns as the plain one stores them.
    #[test]
    fn values_pushed_read_back_with_their_columns() {
        let mut b = Block::with_layout(5, 2, 3);
        b.push_values(&[Some(-3), None], &[Some(&b"ab"[..]), None, Some(&b""[..])])
            .unwrap();
        b.push_values(&[Some(7)], &[Some("é".as_bytes())]).unwrap();
        b.push_values(&[], &[]).unwrap();
        assert_eq!(b.rows(), 3);
        assert_eq!(
            (b.int(0, 0), b.int(1, 0), b.int(0, 1), b.int(1, 1)),
            (Some(-3), None, Some(7), None)
        );
        assert_eq!(
            (b.bytes(0, 0), b.bytes(1, 0), b.bytes(2, 0)),
            (Some(&b"ab"[..]), None, Some(&b""[..]))
        );
        assert_eq!(
            (b.text(0, 1).unwrap(), b.bytes(1, 1), b.bytes(2, 1)),
            (Some("é"), None, None)
        );
        assert!((0..3).all(|c| b.bytes(c, 2).is_none()) && b.int(0, 2).is_none());

        let (packed, cols) = b.encode_packed_with_columns();
        assert_eq!(packed, b.encode_packed());
        assert_eq!(cols, b.columns());
        let mut back = Block::with_layout(0, 2, 3);
        back.decode(5, &packed, Cols::all(2, 3)).unwrap();
        same_rows(&back, &b);
        assert!((0..3).all(|r| back.int(1, r) == b.int(1, r)));
        // the plain encoding is those columns laid end to end
        let plain = b.encode();
        let tail: Vec<u8> = cols.concat();
        assert!(plain.ends_with(&tail));
    }

    /// A decoded column is checked as a whole: its values read as text,
    /// and it can be pushed to and cleared again; bytes that are not UTF-8
    /// (also a character split between two values) are an error naming
    /// their row only, and the other rows still read.
    #[test]
    fn decoded_text_is_checked_once_and_per_value_when_bad() {
        let mut b = Block::with_layout(40, 0, 2);
        for v in [
            &b"ab"[..],
            "é".as_bytes(),
            b"",
            b"\xff",
            b"\xc3",
            b"\xa9",
            b"z",
        ] {
            b.push_values(&[], &[Some(b"ok"), Some(v)]).unwrap();
        }
        b.push_values(&[], &[None, None]).unwrap();
        let mut back = Block::with_layout(0, 0, 2);
        back.decode(40, &b.encode(), Cols::all(0, 2)).unwrap();
        // column 0 is all UTF-8, column 1 is not
        assert!(matches!(back.texts[0].bytes, Buf::Text(_)));
        assert!(matches!(back.texts[1].bytes, Buf::Bytes(_)));
        assert!((0..7).all(|r| back.text(0, r).unwrap() == Some("ok")));
        assert_eq!(back.text(0, 7).unwrap(), None);
        let good = [(0, "ab"), (1, "é"), (2, ""), (6, "z")];
        for (r, v) in good {
            assert_eq!(back.text(1, r).unwrap(), Some(v), "row {r}");
        }
        for r in [3, 4, 5] {
            let e = back.text(1, r).unwrap_err().to_string();
            assert!(e.contains(&format!("event at arrival {}", 40 + r)), "{e}");
        }
        // without the \xff the column is UTF-8 as a whole, yet "\xc3" and
        // "\xa9" are no text each on its own
        let mut b = Block::with_layout(0, 0, 1);
        for v in [&b"\xc3"[..], b"\xa9", b"x"] {
            b.push_values(&[], &[Some(v)]).unwrap();
        }
        back = Block::with_layout(0, 0, 1);
        back.decode(0, &b.encode(), Cols::all(0, 1)).unwrap();
        assert!(matches!(back.texts[0].bytes, Buf::Text(_)));
        assert!(back.text(0, 0).is_err() && back.text(0, 1).is_err());
        assert_eq!(back.text(0, 2).unwrap(), Some("x"));
        // a decoded block takes rows and truncates like one being written
        back.push_values(&[], &[Some(b"yz")]).unwrap();
        assert_eq!(back.text(0, 3).unwrap(), Some("yz"));
        back.truncate(3);
        assert_eq!((back.rows(), back.bytes(0, 2)), (3, Some(&b"x"[..])));
        assert_eq!(back.encode(), b.encode());
        back.clear();
        assert_eq!(back.rows(), 0);
    }

    /// A packed block cut short, or with any byte of a zstd frame altered,
    /// is an error naming the block, never a panic or other entries.
    #[test]
    fn spoilt_packed_blocks_are_errors() {
        let blk = ledger_like(600, 11);
        let body = blk.encode_packed();
        let mut back = Block::with_layout(0, 1, 3);
        for cut in (0..body.len()).step_by(7) {
            let e = back.decode(11, &body[..cut], Cols::all(1, 3));
            assert!(e.is_err(), "cut at {cut}");
        }
        // the frames start with zstd's magic number
        let magic = [0x28, 0xb5, 0x2f, 0xfd];
        let frames: Vec<usize> = (0..body.len() - 4)
            .filter(|&i| body[i..i + 4] == magic)
            .collect();
        assert!(!frames.is_empty());
        let start = frames[0];
        for at in (start..body.len()).step_by(3) {
            let mut bad = body.clone();
            bad[at] ^= 0x5a;
            match back.decode(11, &bad, Cols::all(1, 3)) {
                Err(e) => assert!(e.to_string().contains("arrival 11"), "{e}"),
                Ok(()) => panic!("byte {at} altered, yet the block read"),
            }
        }
    }

    proptest::proptest! {
        /// Ids with repeats, imported twice (the second time into a store
        /// that knows the first), in parser blocks of any sizes: the same
        /// events at the same arrivals, and the same counts, as adding
        /// each row on its own.
        #[test]
        fn blocks_add_what_rows_add(
            first in proptest::collection::vec(0u8..40, 0..120),
            second in proptest::collection::vec(0u8..60, 0..120),
            cuts in proptest::collection::vec(1usize..30, 1..8),
        ) {
            let run = |by_block: bool| -> (Vec<(i64, String)>, Vec<u64>) {
                let c = Connection::open_in_memory().unwrap();
                c.execute_batch(SCHEMA).unwrap();
                let mut next = 1;
                let mut counts = Vec::new();
                for file in [&first, &second] {
                    let ids: Vec<String> = file.iter().map(|i| format!("e{i}")).collect();
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let mut w = Writer::new(IdIndex::load(&c, next).unwrap());
                    let mut new = 0;
                    if by_block {
                        let (mut at, mut k) = (0, 0);
                        while at < ids.len() {
                            let to = (at + cuts[k % cuts.len()]).min(ids.len());
                            let (blk, hashes) = parsed_block(&ids[at..to]);
                            new += w.add_block(&c, &blk, &hashes, &blk.encode()).unwrap();
                            at = to;
                            k += 1;
                        }
                    } else {
                        let b = batch_of(&ids);
                        for r in 0..b.rows() {
                            new += u64::from(w.add(&c, &b, r).unwrap());
                        }
                    }
                    next = w.finish(&c).unwrap().next;
                    counts.push(new);
                }
                (stored_ids(&c), counts)
            };
            proptest::prop_assert_eq!(run(true), run(false));
        }

        /// Any rows, packed, read back as they went in.
        #[test]
        fn packed_blocks_keep_any_rows(
            rows in proptest::collection::vec(
                (proptest::option::of(proptest::num::i64::ANY),
                 proptest::option::of("[a-c ]{0,40}"),
                 proptest::option::of(proptest::string::string_regex(".{0,12}").unwrap()),
                 0u8..4),
                0..300,
            )
        ) {
            let mut b = Batch::new(1, 3);
            for (i, t, u, rep) in &rows {
                b.push_int(*i);
                b.push_text(t.as_deref()).unwrap();
                b.push_text(u.as_deref()).unwrap();
                b.push_text(Some(&"explained at length; ".repeat(usize::from(*rep) * 9))).unwrap();
            }
            let mut blk = Block::with_layout(5, 1, 3);
            for r in 0..rows.len() {
                blk.push_row(&b, r).unwrap();
            }
            let mut back = Block::with_layout(0, 1, 3);
            back.decode(5, &blk.encode_packed(), Cols::all(1, 3)).unwrap();
            proptest::prop_assert_eq!(back.rows(), rows.len());
            for r in 0..rows.len() {
                proptest::prop_assert_eq!(back.int(0, r), blk.int(0, r));
                for c in 0..3 {
                    proptest::prop_assert_eq!(back.bytes(c, r), blk.bytes(c, r));
                }
            }
        }
    }

    fn batch_of(ids: &[&str]) -> Batch {
        let mut b = Batch::new(EVENT_INTS, EVENT_TEXTS);
        for (i, id) in ids.iter().enumerate() {
            row(&mut b, id, Some(i as i64), &[]);
        }
        b
    }

    /// A hash that another id has is confirmed against the ids themselves:
    /// an id sharing a known hash is still new, the known id a duplicate,
    /// pending or stored.
    #[test]
    fn a_shared_hash_is_confirmed_by_the_id() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let b = batch_of(&["a", "b", "c", "a", "b"]);
        let mut w = Writer::new(IdIndex {
            next: 1,
            ..IdIndex::default()
        });
        assert!(w.add(&c, &b, 0).unwrap());
        // "b" and "c" are made to look like "a" (arrival 1) to the index
        w.index.map.set(id_hash(b"b"), 1);
        assert!(w.add(&c, &b, 1).unwrap(), "b is new");
        w.index.map.set(id_hash(b"c"), 1);
        assert!(w.add(&c, &b, 2).unwrap(), "c is new");
        assert!(!w.add(&c, &b, 3).unwrap(), "a is pending");
        assert!(!w.add(&c, &b, 4).unwrap(), "b is pending, found by its id");
        let index = w.finish(&c).unwrap();
        assert_eq!(index.next, 4);
        // stored now: the same answers from the blocks
        let mut w = Writer::new(index);
        w.index.map.set(id_hash(b"c"), 2);
        for r in 0..5 {
            assert!(!w.add(&c, &b, r).unwrap(), "row {r} is stored");
        }
        assert!(w.add(&c, &batch_of(&["d"]), 0).unwrap());
        let index = w.finish(&c).unwrap();
        let ids: Vec<_> = stored_ids(&c).into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        // loaded from the store, the index knows the same ids
        let loaded = IdIndex::load(&c, index.next).unwrap();
        assert_eq!(loaded.map.len(), 4);
        for (id, a) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            assert_eq!(loaded.map.get(id_hash(id.as_bytes())), Some(a), "{id}");
        }
    }

    /// A parser's block of events, each row with its id and `ts` = its
    /// place in `ids`, and their ids' hashes.
    fn parsed_block(ids: &[&str]) -> (Block, Vec<u64>) {
        let b = batch_of(ids);
        let mut blk = Block::new(0);
        for r in 0..b.rows() {
            blk.push_row(&b, r).unwrap();
        }
        (blk, ids.iter().map(|id| id_hash(id.as_bytes())).collect())
    }

    /// A block cut back to its first rows reads as if only they had been
    /// pushed, also when a row was pushed only in part (a text over the
    /// limit stops `event_row` half way through a row).
    #[test]
    fn a_truncated_block_keeps_its_first_rows() {
        let (full, _) = parsed_block(&["a", "b", "c"]);
        let (mut blk, _) = parsed_block(&["a", "b", "c"]);
        // half of a fourth row
        blk.ints[0].push(5);
        blk.texts[0].try_push(Some(b"zz")).unwrap();
        blk.truncate(3);
        assert_eq!(blk.encode(), full.encode());
        blk.truncate(1);
        let (one, _) = parsed_block(&["a"]);
        assert_eq!(blk.encode(), one.encode());
        assert_eq!(blk.bytes(E_ID, 0), Some(&b"a"[..]));
        assert_eq!(blk.bytes(E_ID, 1), None);
    }

    /// A block of new ids is stored as the parser encoded it, at the next
    /// arrivals, behind the rows added one by one before it; its ids are
    /// known to the duplicate check at once.
    #[test]
    fn a_block_of_new_ids_is_stored_as_encoded() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let mut w = Writer::new(IdIndex {
            next: 10,
            ..IdIndex::default()
        });
        assert!(w.add(&c, &batch_of(&["a"]), 0).unwrap());
        let (blk, hashes) = parsed_block(&["b", "c", "d"]);
        let body = blk.encode();
        assert_eq!(w.add_block(&c, &blk, &hashes, &body).unwrap(), 3);
        assert_eq!(w.next(), 14);
        let stored: Vec<u8> = c
            .query_row("SELECT body FROM event_blocks WHERE first = 11", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, body);
        let (blk, hashes) = parsed_block(&["d", "e"]);
        assert_eq!(w.add_block(&c, &blk, &hashes, &blk.encode()).unwrap(), 1);
        w.finish(&c).unwrap();
        let got = stored_ids(&c);
        let want: Vec<(i64, String)> = ["a", "b", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(i, id)| (10 + i as i64, id.to_string()))
            .collect();
        assert_eq!(got, want);
        // a block whose hashes are not its rows' is refused
        let (blk, _) = parsed_block(&["f", "g"]);
        let mut w = Writer::new(IdIndex::load(&c, 15).unwrap());
        assert!(w.add_block(&c, &blk, &[1], &blk.encode()).is_err());
    }

    /// An id that shares a known hash is still new inside a block, the
    /// known id and a repeat within the block are duplicates.
    #[test]
    fn a_shared_hash_in_a_block_is_confirmed_by_the_id() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let mut w = Writer::new(IdIndex {
            next: 1,
            ..IdIndex::default()
        });
        assert!(w.add(&c, &batch_of(&["a"]), 0).unwrap());
        w.flush(&c).unwrap();
        // "y" made to look like "a" (arrival 1) to the index
        w.index.map.set(id_hash(b"y"), 1);
        let (blk, hashes) = parsed_block(&["x", "y", "a", "z", "x"]);
        assert_eq!(w.add_block(&c, &blk, &hashes, &blk.encode()).unwrap(), 3);
        w.finish(&c).unwrap();
        let ids: Vec<_> = stored_ids(&c).into_iter().collect();
        assert_eq!(
            ids,
            [(1, "a"), (2, "x"), (3, "y"), (4, "z")].map(|(a, id)| (a, id.to_string()))
        );
    }

    /// `scan_beside` hands `f` the blocks `scan` does, in the same order;
    /// an error of `f` stops it and is returned, and so is a block that does
    /// not decode, after the blocks before it.
    #[test]
    fn a_scan_beside_sees_what_a_scan_sees() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let ids: Vec<String> = (0..3 * BLOCK_ROWS + 5).map(|i| format!("e{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let b = batch_of(&refs);
        let mut w = Writer::new(IdIndex {
            next: 1,
            ..IdIndex::default()
        });
        for r in 0..b.rows() {
            assert!(w.add(&c, &b, r).unwrap());
        }
        w.finish(&c).unwrap();
        let cols = Cols::of(&[E_TS], &[E_ID]);
        let seen = |b: &Block, out: &mut Vec<(i64, String)>| {
            for r in 0..b.rows() {
                out.push((b.arrival(r), b.text(E_ID, r).unwrap().unwrap().to_string()));
            }
        };
        let (mut plain, mut beside) = (Vec::new(), Vec::new());
        scan(&c, cols, "1", [], |b| {
            seen(b, &mut plain);
            Ok(())
        })
        .unwrap();
        scan_beside(&c, cols, "1", [], |b| {
            seen(b, &mut beside);
            Ok(())
        })
        .unwrap();
        assert_eq!(plain.len(), ids.len());
        assert_eq!(beside, plain);
        // the filter and its parameters as in `scan`
        let mut firsts = Vec::new();
        scan_beside(&c, cols, "first > ?1", [1], |b| {
            firsts.push(b.first);
            Ok(())
        })
        .unwrap();
        assert_eq!(firsts, [4097, 8193, 12289]);
        // f fails on the second block: no third
        let mut calls = 0;
        let err = scan_beside(&c, cols, "1", [], |_| {
            calls += 1;
            match calls {
                2 => Err(Error::data("stop here")),
                _ => Ok(()),
            }
        })
        .unwrap_err();
        assert_eq!(calls, 2);
        assert!(err.to_string().contains("stop here"), "{err}");
        // the third block's body spoilt: the first two are seen, then its error
        c.execute(
            "UPDATE event_blocks SET body = x'00' WHERE first = 8193",
            [],
        )
        .unwrap();
        let mut firsts = Vec::new();
        let err = scan_beside(&c, cols, "1", [], |b| {
            firsts.push(b.first);
            Ok(())
        })
        .unwrap_err();
        assert_eq!(firsts, [1, 4097]);
        assert!(err.to_string().contains("8193"), "{err}");
    }

    /// The hash index answers as a map that keeps the first arrival given
    /// for a key, across growth and keys whose low bits collide.
    #[test]
    fn hash_index_keeps_the_first_arrival() {
        let mut m = HashIndex::default();
        let mut want: std::collections::HashMap<u64, i64> = Default::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for a in 1..=20_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // a third of the keys share their low 16 bits; some repeat
            let k = match a % 3 {
                0 => (x << 16) | 0x1234,
                1 => x % 5000,
                _ => x,
            };
            m.insert_first(k, a);
            want.entry(k).or_insert(a);
        }
        assert_eq!(m.len(), want.len());
        for (&k, &a) in &want {
            assert_eq!(m.get(k), Some(a));
        }
        assert_eq!(m.get(0xdead_beef_0000_0001), None);
        assert_eq!(HashIndex::default().get(7), None);
        HashIndex::default().prefetch(7);
    }

    /// A writer reserved for `n` ids takes them without growing, keeps
    /// what it held, and a store already holding `n` keeps its table.
    #[test]
    fn reserved_room_takes_the_ids_without_growing() {
        let mut w = Writer::new(IdIndex {
            map: HashIndex::default(),
            next: 1,
        });
        w.index.map.insert_first(42, 1);
        w.reserve(10_000);
        let cap = w.index.map.slots.len();
        assert!(cap >= 10_000 * 4 / 3, "{cap}");
        assert_eq!(w.index.map.get(42), Some(1));
        for a in 2..=10_000i64 {
            w.index
                .map
                .insert_first((a as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15), a);
        }
        assert_eq!(w.index.map.slots.len(), cap, "no growth");
        // held already: unchanged
        w.reserve(5_000);
        assert_eq!(w.index.map.slots.len(), cap);
        assert_eq!(w.index.map.len(), 10_000);
    }

    #[test]
    fn varints_and_zigzag() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40] {
            assert_eq!(unzigzag(zigzag(v)), v);
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(v));
            let mut pos = 0;
            assert_eq!(get_varint(&out, &mut pos), Some(zigzag(v)));
            assert_eq!(pos, out.len());
        }
        // eleven continuation bytes are not a varint
        let mut pos = 0;
        assert_eq!(get_varint(&[0xff; 11], &mut pos), None);
    }
}
