//! `settlement import FILE...`: NDJSON of records (SPEC section 4) plus the
//! registry's partner and coupon lines. Each file is one transaction: a bad
//! line (exit 2, with its line number) imports nothing from that file,
//! unless `--skip-invalid` sets bad lines aside in a rejects file.

use crate::batch::{self, Refill};
use crate::config::valid_id;
use crate::error::{Error, Result};
use crate::events::{id_hash, Block};
use crate::line::{Line, Parsed};
use crate::store::{event_row, ImportCounts, Inserter, Store};
use edge::record::{Kind, Record};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Checks what the engine relies on; `Err` says what is wrong.
pub fn validate(r: &Record) -> std::result::Result<(), String> {
    check(&Line::of(r))
}

/// [`validate`] of a line's fields.
/// 10^18: amounts and lots have at most 18 integer digits.
const MAX_MAGNITUDE: rust_decimal::Decimal = rust_decimal::Decimal::from_parts(
    2_808_348_672, // 10^18 = 232_830_643 * 2^32 + 2_808_348_672
    232_830_643,
    0,
    false,
    0,
);

pub fn check(r: &Line) -> std::result::Result<(), String> {
    let need = |ok: bool, field: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("missing `{field}`"))
        }
    };
    let id_ok = |v: Option<&str>, field: &str| match v {
        Some(s) if !valid_id(s) => Err(format!(
            "`{field}` {} is not [A-Za-z0-9_-]{{1,64}}",
            shown(s)
        )),
        _ => Ok(()),
    };
    // an event's id is one word: the ledger's `sources` and `explain`
    // separate ids by spaces
    if !matches!(r.kind, Kind::Partner | Kind::Coupon) {
        if let Some(id) =
            r.id.filter(|id| id.is_empty() || id.chars().any(char::is_whitespace))
        {
            return Err(format!("`id` {} is empty or has a space", shown(id)));
        }
    }
    // the edge's limit: an amount a run could not compute with exactly
    // would stop every run of every later period
    for (field, v) in [("amount", r.amount), ("lots", r.lots)] {
        if v.is_some_and(|x| x.abs() >= MAX_MAGNITUDE) {
            return Err(format!(
                "`{field}` has more than 18 integer digits (the edge's limit)"
            ));
        }
    }
    match r.kind {
        Kind::Click => {
            need(r.id.is_some(), "id")?;
            need(r.ts.is_some(), "ts")?;
        }
        Kind::Conversion => {
            need(r.id.is_some(), "id")?;
            need(r.ts.is_some(), "ts")?;
            need(r.program.is_some(), "program")?;
            need(r.event.is_some_and(|e| !e.is_empty()), "event")?;
            if r.amount.is_some() {
                need(r.currency.is_some(), "currency")?;
            }
            if r.click_id.is_some() && r.partner.is_some() {
                need(r.click_ts.is_some(), "click_ts")?;
            }
            if matches!(r.event, Some("refund" | "chargeback")) {
                need(r.original_txn_id.is_some(), "original_txn_id")?;
                if r.amount
                    .is_some_and(|a| a.is_sign_negative() && !a.is_zero())
                {
                    return Err("a refund amount is positive (the amount reversed)".into());
                }
            }
            if r.lots.is_some_and(|l| l.is_sign_negative() && !l.is_zero()) {
                return Err("`lots` must not be negative".into());
            }
        }
        Kind::Deal => {
            need(r.id.is_some(), "id")?;
            need(r.ts.is_some(), "ts")?;
            need(r.program.is_some(), "program")?;
            need(r.partner.is_some(), "partner")?;
            need(r.customer.is_some(), "customer")?;
            match r.status {
                Some("approved" | "pending" | "rejected") => {}
                Some(s) => {
                    return Err(format!(
                        "deal `status` {} is not approved, pending or rejected",
                        shown(s)
                    ))
                }
                None => return Err("missing `status`".into()),
            }
        }
        Kind::Mdf => {
            need(r.id.is_some(), "id")?;
            need(r.ts.is_some(), "ts")?;
            need(r.partner.is_some(), "partner")?;
            need(r.amount.is_some(), "amount")?;
            need(r.currency.is_some(), "currency")?;
        }
        Kind::Partner => {
            need(r.id.is_some(), "id")?;
            need(r.program.is_some(), "program")?;
            id_ok(r.id, "id")?;
            // a status the engine does not know would reject every
            // commission of the partner without a word
            let known = |s: &str| matches!(s, "applied" | "approved" | "suspended" | "rejected");
            match r.status {
                Some(s) if known(s) => {}
                Some(s) => {
                    return Err(format!(
                        "partner `status` {} is not applied, approved, suspended or rejected",
                        shown(s)
                    ))
                }
                // the history says it at any time
                None if r.history.as_ref().is_some_and(|h| !h.is_empty()) => {}
                None => return Err("missing `status` (and no `history`)".into()),
            }
            for h in r.history.iter().flatten() {
                if !known(&h.status) {
                    return Err(format!(
                        "partner `history` status {} is not applied, approved, suspended or rejected",
                        shown(&h.status)
                    ));
                }
            }
        }
        Kind::Coupon => {
            need(r.code.is_some(), "code")?;
            need(r.partner.is_some(), "partner")?;
            need(r.program.is_some(), "program")?;
            // SPEC section 2: the edge refuses any other code
            id_ok(r.code, "code")?;
        }
    }
    id_ok(r.program, "program")?;
    id_ok(r.partner, "partner")?;
    Ok(())
}

/// A value quoted in an error message, cut to 64 characters (a line may be
/// megabytes long).
fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{:?}... ({} bytes)", &s[..i], s.len()),
        None => format!("{s:?}"),
    }
}

/// Parses and validates one line.
pub fn parse_line(line: &str) -> std::result::Result<Record, String> {
    let r: Record =
        serde_json::from_str(line).map_err(|e| crate::line::describe_error(line, &e))?;
    validate(&r)?;
    Ok(r)
}

/// A line that is not an event row: a registry record, or a bad line.
#[derive(Clone)]
enum Other {
    Registry(Box<Record>),
    Bad {
        line: usize,
        /// The line as read, without its end: set aside byte for byte.
        raw: Vec<u8>,
        error: String,
    },
}

/// Lines of a file as the parser thread hands them to the inserter: the
/// events, and the other lines beside them with the number of events that
/// came before each (the file's order).
///
/// The events come as a block (column by column, as the store keeps them),
/// with their ids' hashes, and, when there are no other lines, the block
/// encoded: the inserter, the one thread all rows go through, then checks
/// the ids and writes it as it is ([`Inserter::insert_block`]).
#[derive(Clone, Default)]
struct Chunk {
    rows: Block,
    hashes: Vec<u64>,
    /// `rows` encoded, when `others` is empty (else empty)
    body: Vec<u8>,
    others: Vec<(usize, Other)>,
    /// bytes of the file these lines took, for the progress bar
    bytes: u64,
}

impl Refill for Chunk {
    fn clear(&mut self) {
        self.rows.clear();
        self.hashes.clear();
        self.body.clear();
        self.others.clear();
        self.bytes = 0;
    }
    fn is_empty(&self) -> bool {
        self.rows.rows() == 0 && self.others.is_empty() && self.bytes == 0
    }
}

/// Lines of the file as read, for a parser thread: the text and the end of
/// each line in it.
#[derive(Clone, Default)]
struct Raw {
    text: Vec<u8>,
    ends: Vec<usize>,
    /// the number of the first line
    first_line: usize,
}

impl Refill for Raw {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }
    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl Chunk {
    /// Parses one line into the chunk.
    fn add_line(&mut self, buf: &[u8], line_no: usize) {
        let bad = |raw: Vec<u8>, error: String| Other::Bad {
            line: line_no,
            raw,
            error,
        };
        // a file saved with a byte order mark (Windows exports) starts
        // with one: not part of the first line's JSON
        let buf = match buf.strip_prefix(b"\xEF\xBB\xBF") {
            Some(rest) if line_no == 1 => rest,
            _ => buf,
        };
        // invalid UTF-8 is a bad line with its number, like any other
        let text = match std::str::from_utf8(buf) {
            Ok(t) => t,
            Err(e) => {
                let raw = buf
                    .strip_suffix(b"\n")
                    .map_or(buf, |b| b.strip_suffix(b"\r").unwrap_or(b))
                    .to_vec();
                let error = format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1);
                self.others.push((self.rows.rows(), bad(raw, error)));
                return;
            }
        };
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            return;
        }
        let at = self.rows.rows();
        // most lines are read without copying their strings (see `line`)
        let parsed = Line::parse(line);
        let l = match &parsed {
            Ok(Parsed::Line(l)) => l,
            Ok(Parsed::Record(r)) => &Line::of(r),
            Err(e) => {
                let error = crate::line::describe_error(line, e);
                self.others.push((at, bad(line.as_bytes().to_vec(), error)));
                return;
            }
        };
        if let Err(error) = check(l) {
            self.others.push((at, bad(line.as_bytes().to_vec(), error)));
            return;
        }
        match event_row(l, &mut self.rows) {
            Ok(true) => self
                .hashes
                .push(id_hash(l.id.unwrap_or_default().as_bytes())),
            Ok(false) => {
                let r = match parsed {
                    Ok(Parsed::Record(r)) => r,
                    _ => Box::new(l.to_record()),
                };
                self.others.push((at, Other::Registry(r)));
            }
            Err(_) => {
                // event_row left the block as it was; a line of over 2 GiB
                // is refused
                let error = "an event's fields are over 2 GiB".to_string();
                self.others.push((at, bad(line.as_bytes().to_vec(), error)));
            }
        }
    }
}

/// Cuts a file into chunks of whole lines for the parser threads, reading
/// it in large pieces straight into the chunk's buffer and finding the ends
/// of lines there (no copy of each line, as reading line by line through a
/// buffer makes): the bytes after a chunk's last line are carried into the
/// next one.
struct Cutter<R> {
    src: R,
    /// lines a chunk holds at most, and the text that makes it full sooner
    lines: usize,
    text: usize,
    carry: Vec<u8>,
    /// lines cut so far
    line_no: usize,
    eof: bool,
}

/// Bytes a read asks for.
const READ: usize = 256 << 10;

impl<R: Read> Cutter<R> {
    fn new(src: R, lines: usize, text: usize) -> Cutter<R> {
        Cutter {
            src,
            lines: lines.max(1),
            text,
            carry: Vec::new(),
            line_no: 0,
            eof: false,
        }
    }

    /// Fills `raw`, emptied, with the next lines: `self.lines` of them, or
    /// fewer once they hold `self.text` bytes or the file ends (its last
    /// line may lack a newline). `false` when no line is left.
    fn fill(&mut self, raw: &mut Raw) -> std::io::Result<bool> {
        raw.clear();
        raw.first_line = self.line_no + 1;
        raw.text.append(&mut self.carry);
        let mut scanned = 0;
        loop {
            let mut full = None;
            for i in memchr::memchr_iter(b'\n', &raw.text[scanned..]) {
                let end = scanned + i + 1;
                raw.ends.push(end);
                self.line_no += 1;
                if raw.ends.len() >= self.lines || end >= self.text {
                    full = Some(end);
                    break;
                }
            }
            if let Some(end) = full {
                self.carry.extend_from_slice(&raw.text[end..]);
                raw.text.truncate(end);
                return Ok(true);
            }
            scanned = raw.text.len();
            if self.eof {
                let last = raw.ends.last().copied().unwrap_or(0);
                if scanned > last {
                    raw.ends.push(scanned);
                    self.line_no += 1;
                }
                return Ok(!raw.ends.is_empty());
            }
            raw.text.reserve(READ);
            if (&mut self.src)
                .take(READ as u64)
                .read_to_end(&mut raw.text)?
                == 0
            {
                self.eof = true;
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct FileReport {
    pub path: PathBuf,
    pub counts: ImportCounts,
    pub rejected: u64,
    pub rejects_path: Option<PathBuf>,
}

pub struct ImportOptions {
    pub skip_invalid: bool,
    /// One rejects file for all inputs; default `FILE.rejects.ndjson`.
    pub rejects: Option<PathBuf>,
    pub progress: bool,
}

/// Lines a chunk holds, and the text that makes one full sooner (lines may
/// be long).
const CHUNK: usize = 4096;
const CHUNK_TEXT: usize = 64 << 20;

/// About how many lines a file of `size` bytes has, from the lines in 16
/// samples of 64 KiB spread over it (a file often starts with its registry
/// lines, shorter or longer than its events); 0 when it cannot be read (the
/// import says why).
fn estimate_lines(path: &Path, size: u64) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    const SAMPLE: u64 = 64 << 10;
    const SAMPLES: u64 = 16;
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let (mut bytes, mut lines) = (0u128, 0u128);
    let mut buf = Vec::with_capacity(SAMPLE as usize);
    for k in 0..SAMPLES {
        let at = size / SAMPLES * k;
        buf.clear();
        let got = f
            .seek(SeekFrom::Start(at))
            .and_then(|_| (&mut f).take(SAMPLE).read_to_end(&mut buf));
        if got.is_err() {
            return 0;
        }
        bytes += buf.len() as u128;
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u128;
        if at + SAMPLE >= size {
            break;
        }
    }
    match bytes {
        0 => 0,
        b => usize::try_from(u128::from(size) * lines / b).unwrap_or(usize::MAX),
    }
}

/// Imports one file in one transaction.
///
/// The transaction goes through a rollback journal rather than the WAL
/// (see [`Store::bulk_mode`]): an import appends its blocks, so the journal
/// holds the few pages it changes and the blocks are written once, not into
/// the WAL and again into the database file by the checkpoint (at ten
/// million events, 1.8 GB less to write and a checkpoint less beside the
/// next run).
pub fn import_file(store: &mut Store, path: &Path, opts: &ImportOptions) -> Result<FileReport> {
    let bulk = store.bulk_mode();
    let r = import_file_in(store, path, opts);
    if bulk {
        store.leave_bulk_mode();
    }
    r
}

fn import_file_in(store: &mut Store, path: &Path, opts: &ImportOptions) -> Result<FileReport> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Usage(format!("{}: cannot open: {e}", path.display())))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::Usage(format!(
            "{}: is a directory: import takes NDJSON files",
            path.display()
        )));
    }
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(opts.progress, size, &path.display().to_string());

    // a reader thread cuts the file into chunks of lines, parser threads
    // turn them into rows (chunk i to parser i % n), and this one takes the
    // parsed chunks back in the file's order and inserts them
    let parsers = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
    let mut raws = Vec::new();
    let mut outs = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..parsers {
        let (raw_filler, raw_reader) = batch::channel(Raw::default(), 2);
        let (filler, out) = batch::channel(Chunk::default(), 2);
        workers.push(std::thread::spawn(move || {
            while let Some(raw) = raw_reader.next() {
                let mut chunk = filler.fresh();
                let mut start = 0;
                for (i, &end) in raw.ends.iter().enumerate() {
                    let line = &raw.text[start..end];
                    chunk.bytes += line.len() as u64;
                    chunk.add_line(line, raw.first_line + i);
                    start = end;
                }
                if chunk.others.is_empty() && chunk.rows.rows() > 0 {
                    chunk.body = chunk.rows.encode();
                }
                raw_reader.give_back(raw);
                if filler.send(chunk).is_none() {
                    // the inserter stopped: its result says why
                    return;
                }
            }
            drop(filler);
        }));
        raws.push(raw_filler);
        outs.push(out);
    }
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let mut cut = Cutter::new(file, CHUNK, CHUNK_TEXT);
        for i in 0.. {
            let to = &raws[i % raws.len()];
            let mut raw = to.fresh();
            if !cut.fill(&mut raw)? {
                break;
            }
            if to.send(raw).is_none() {
                // the inserter stopped: its result says why
                break;
            }
        }
        Ok(())
    });
    let mut turn = 0usize;
    let mut next_chunk = || {
        let c = outs[turn % outs.len()]
            .next()
            .map(|c| (c, turn % outs.len()));
        turn += 1;
        c
    };

    let mut report = FileReport {
        path: path.to_path_buf(),
        ..FileReport::default()
    };
    let mut rejects: Vec<Vec<u8>> = Vec::new();
    let mut failure: Option<Error> = None;
    let tx = store
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let _ph = crate::timing::Phase::start("import insert loop");
    let mut busy = std::time::Duration::ZERO;
    {
        let mut ins = Inserter::new(&tx, &store.ids)?;
        // room in the duplicate check for the file's lines at once (at ten
        // million events the table doubled five times on the way)
        ins.reserve_events(estimate_lines(path, size));
        'outer: while let Some((chunk, from)) = next_chunk() {
            let t = std::time::Instant::now();
            if chunk.others.is_empty() && !chunk.body.is_empty() {
                ins.insert_block(&chunk.rows, &chunk.hashes, &chunk.body, &mut report.counts)?;
                busy += t.elapsed();
                if let Some(b) = &bar {
                    b.inc(chunk.bytes);
                }
                outs[from].give_back(chunk);
                continue;
            }
            let mut others = chunk.others.iter().peekable();
            for r in 0..=chunk.rows.rows() {
                while let Some((_, other)) = others.next_if(|(at, _)| *at == r) {
                    match other {
                        Other::Registry(rec) => ins.insert(rec, &mut report.counts)?,
                        Other::Bad { line, raw, error } => {
                            if opts.skip_invalid {
                                eprintln!("{}:{line}: skipped: {error}", path.display());
                                rejects.push(raw.clone());
                                report.rejected += 1;
                            } else {
                                failure = Some(Error::data(format!(
                                    "{}:{line}: {error}; nothing imported from this file (use --skip-invalid to set bad lines aside)",
                                    path.display()
                                )));
                                break 'outer;
                            }
                        }
                    }
                }
                if r < chunk.rows.rows() {
                    ins.insert_row(&chunk.rows, r, &mut report.counts)?;
                }
            }
            busy += t.elapsed();
            if let Some(b) = &bar {
                b.inc(chunk.bytes);
            }
            outs[from].give_back(chunk);
        }
        if failure.is_none() {
            ins.finish()?;
        }
    }
    drop(outs);

    let _w = crate::timing::Phase::start("import reader join");
    if std::env::var_os("SETTLEMENT_TIMING").is_some() {
        eprintln!("timing: inserting: {:.3} s", busy.as_secs_f64());
    }
    let read = reader.join().expect("reader thread");
    for w in workers {
        w.join().expect("parser thread");
    }
    if let Some(e) = failure {
        drop(tx); // rolls back
        return Err(e);
    }
    read.map_err(|e| Error::io(path, e))?;
    let c = crate::timing::Phase::start("import commit");
    tx.commit()?;
    drop(c);
    // set aside once the rest is in: a failed commit leaves no rejects of
    // lines it did not import either
    if !rejects.is_empty() {
        let rp = opts.rejects.clone().unwrap_or_else(|| {
            let mut s = path.as_os_str().to_owned();
            s.push(".rejects.ndjson");
            PathBuf::from(s)
        });
        append_rejects(&rp, &rejects)?;
        report.rejects_path = Some(rp);
    }
    store.checkpoint_behind();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(report)
}

/// Appends the bad lines the rejects file does not hold yet: importing a
/// file again sets its bad lines aside once.
fn append_rejects(path: &Path, lines: &[Vec<u8>]) -> Result<()> {
    let held = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut seen: std::collections::HashSet<&[u8]> = held
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut s = Vec::new();
    for l in lines {
        if seen.insert(l) {
            s.extend_from_slice(l);
            s.push(b'\n');
        }
    }
    if s.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(&s).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

pub fn progress_bar(enabled: bool, len: u64, msg: &str) -> Option<indicatif::ProgressBar> {
    if !enabled {
        return None;
    }
    let b = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    Some(b)
}

/// Imports records from any reader (used by `pull` and tests) into an open
/// transaction; a bad line is an error naming `what` and the line. Returns
/// the lines read and the highest `seq` among them.
pub fn insert_ndjson<R: Read>(
    ins: &mut Inserter,
    rd: R,
    what: &str,
    counts: &mut ImportCounts,
) -> Result<(u64, u64)> {
    let mut n = 0;
    let mut max_seq = 0;
    for (i, line) in BufReader::new(rd).lines().enumerate() {
        let line = line.map_err(|e| Error::Upstream(format!("{what}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let r =
            parse_line(&line).map_err(|e| Error::data(format!("{what}: line {}: {e}", i + 1)))?;
        max_seq = max_seq.max(r.seq.unwrap_or(0));
        ins.insert(&r, counts)?;
        n += 1;
    }
    Ok((n, max_seq))
}

/// Imports records already in memory, in one transaction (tests, tools).
pub fn import_records(store: &mut Store, records: &[Record]) -> Result<ImportCounts> {
    let mut counts = ImportCounts::default();
    let tx = store
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut ins = Inserter::new(&tx, &store.ids)?;
        for (i, r) in records.iter().enumerate() {
            validate(r).map_err(|e| Error::data(format!("record {}: {e}", i + 1)))?;
            ins.insert(r, &mut counts)?;
        }
        ins.finish()?;
    }
    tx.commit()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALE: &str = r#"{"id":"e1","type":"conversion","ts":"2026-11-02T00:00:00.000Z","program":"p","event":"sale","amount":"5","currency":"USD"}"#;

    #[test]
    fn max_magnitude_is_ten_to_the_eighteenth() {
        assert_eq!(
            MAX_MAGNITUDE,
            rust_decimal::Decimal::from(1_000_000_000_000_000_000u64)
        );
    }
    const CLICK: &str =
        r#"{"id":"c1","type":"click","ts":"2026-11-01T00:00:00.000Z","program":"p","partner":"a"}"#;
    const PARTNER: &str = r#"{"type":"partner","id":"a","program":"p","status":"approved"}"#;
    const COUPON: &str = r#"{"type":"coupon","code":"C","partner":"a","program":"p"}"#;

    fn stored_ids(store: &Store) -> Vec<(i64, String)> {
        crate::events::stored_ids(&store.conn)
    }

    /// An event id is one word (sources are separated by spaces).
    #[test]
    fn an_event_id_has_no_space() {
        let check = |l: &str| validate(&serde_json::from_str::<Record>(l).unwrap());
        assert_eq!(check(SALE), Ok(()));
        for bad in ["e 1", "e\\t1", " e1", ""] {
            let l = SALE.replace(r#""id":"e1""#, &format!(r#""id":"{bad}""#));
            let e = check(&l).unwrap_err();
            assert!(e.contains("is empty or has a space"), "{l}: {e}");
        }
    }

    /// A partner line's status, and each of its history's, is one the
    /// engine knows: another (a platform's `active`, a capitalised one,
    /// none) would reject every commission of the partner silently.
    #[test]
    fn a_partner_line_needs_a_known_status() {
        let check = |l: &str| validate(&serde_json::from_str::<Record>(l).unwrap());
        for s in ["applied", "approved", "suspended", "rejected"] {
            let l = PARTNER.replace("approved", s);
            assert_eq!(check(&l), Ok(()), "{l}");
        }
        let history = r#","history":[{"status":"approved","at":"2026-01-01T00:00:00.000Z"}]}"#;
        assert_eq!(check(&PARTNER.replace('}', history)), Ok(()));
        // a history without a status: the history says it
        let no_status = PARTNER.replace(r#","status":"approved""#, "");
        assert_eq!(check(&no_status.replace('}', history)), Ok(()));
        for (l, want) in [
            (
                PARTNER.replace("approved", "active"),
                r#"partner `status` "active" is not applied, approved, suspended or rejected"#,
            ),
            (
                PARTNER.replace("approved", "Approved"),
                r#"partner `status` "Approved" is not"#,
            ),
            (
                PARTNER.replace(r#","status":"approved""#, ""),
                "missing `status` (and no `history`)",
            ),
            (
                PARTNER.replace(
                    '}',
                    &history.replace(r#""status":"approved""#, r#""status":"ok""#),
                ),
                r#"partner `history` status "ok" is not"#,
            ),
        ] {
            let e = check(&l).unwrap_err();
            assert!(e.starts_with(want), "{l}: {e}");
        }
    }

    /// A source that hands out at most a few bytes a read.
    struct Trickle<'a> {
        data: &'a [u8],
        sizes: &'a [usize],
        k: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.sizes[self.k % self.sizes.len()]
                .min(buf.len())
                .min(self.data.len());
            self.k += 1;
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    proptest::proptest! {
        /// The chunks hold every line of the file once, in order, with
        /// its number, however the reads fall: at most `lines` lines a
        /// chunk, and a chunk ends once its text reaches `text` bytes.
        #[test]
        fn chunks_hold_every_line_once(
            lines in proptest::collection::vec("[a-z\\r]{0,12}", 0..60),
            last_newline: bool,
            sizes in proptest::collection::vec(1usize..40, 1..5),
            per in 1usize..9,
            text in 1usize..50,
        ) {
            let mut file = lines.join("\n");
            if last_newline && !lines.is_empty() {
                file.push('\n');
            }
            let want: Vec<&str> = file.split_inclusive('\n').collect();
            let src = Trickle { data: file.as_bytes(), sizes: &sizes, k: 0 };
            let mut cut = Cutter::new(src, per, text);
            let mut got: Vec<String> = Vec::new();
            let mut raw = Raw::default();
            while cut.fill(&mut raw).unwrap() {
                proptest::prop_assert_eq!(raw.first_line, got.len() + 1);
                proptest::prop_assert!(!raw.ends.is_empty() && raw.ends.len() <= per);
                let mut start = 0;
                for (i, &end) in raw.ends.iter().enumerate() {
                    if i + 1 < raw.ends.len() {
                        proptest::prop_assert!(end < text, "full before its last line");
                    }
                    got.push(String::from_utf8(raw.text[start..end].to_vec()).unwrap());
                    start = end;
                }
                proptest::prop_assert_eq!(start, raw.text.len());
            }
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert!(!cut.fill(&mut raw).unwrap());
        }
    }

    fn file(dir: &Path, lines: &[&[u8]]) -> PathBuf {
        let p = dir.join("in.ndjson");
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn opts(skip_invalid: bool) -> ImportOptions {
        ImportOptions {
            skip_invalid,
            rejects: None,
            progress: false,
        }
    }

    /// Events, registry lines, blank and bad lines mixed: events keep the
    /// file's order, bad lines are set aside in order with their text, and
    /// without --skip-invalid the first bad line's number is the error.
    #[test]
    fn mixed_lines_keep_their_order_and_bad_ones_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let lines: [&[u8]; 8] = [
            PARTNER.as_bytes(),
            CLICK.as_bytes(),
            b"{not json",
            b"   ",
            SALE.as_bytes(),
            b"{\"id\":\"x\",\"type\":\"click\",\"ts\":\"\xff\"}",
            COUPON.as_bytes(),
            CLICK.as_bytes(),
        ];
        let path = file(dir.path(), &lines);

        let mut store = Store::open(&dir.path().join("a.db")).unwrap();
        let err = import_file(&mut store, &path, &opts(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("in.ndjson:3:"), "{err}");
        assert_eq!(store.max_arrival().unwrap(), 0, "nothing imported");

        let r = import_file(&mut store, &path, &opts(true)).unwrap();
        assert_eq!(
            (
                r.counts.new,
                r.counts.duplicate,
                r.counts.registry,
                r.rejected
            ),
            (2, 1, 2, 2)
        );
        let rejects = std::fs::read(r.rejects_path.unwrap()).unwrap();
        // byte for byte, the line that is not UTF-8 too
        let want = [lines[2], b"\n", lines[5], b"\n"].concat();
        assert_eq!(rejects, want);
        let ids = stored_ids(&store);
        assert_eq!(ids, [(1, "c1".to_string()), (2, "e1".to_string())]);
        let registry: i64 = store
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM partners) + (SELECT COUNT(*) FROM coupons)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(registry, 2);
    }

    /// The duplicate check's room comes from samples of the file's lines,
    /// scaled to its size.
    #[test]
    fn lines_are_estimated_from_samples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.ndjson");
        let line = format!("{}\n", "a".repeat(99));
        std::fs::write(&p, line.repeat(30_000)).unwrap();
        let size = std::fs::metadata(&p).unwrap().len();
        let n = estimate_lines(&p, size);
        assert!((29_900..=30_100).contains(&n), "{n}");
        // short registry lines first do not make it think every line short
        let head = format!("{}\n", "r".repeat(19)).repeat(20_000);
        std::fs::write(&p, head + &line.repeat(100_000)).unwrap();
        let size = std::fs::metadata(&p).unwrap().len();
        let n = estimate_lines(&p, size);
        assert!((100_000..=150_000).contains(&n), "{n}");
        // a small file: read once
        std::fs::write(&p, line.repeat(3)).unwrap();
        assert_eq!(estimate_lines(&p, 300), 3);
        std::fs::write(&p, "").unwrap();
        assert_eq!(estimate_lines(&p, 0), 0);
        assert_eq!(estimate_lines(&dir.path().join("missing"), 100), 0);
    }

    fn journal_mode(c: &rusqlite::Connection) -> String {
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    }

    /// An import goes through a rollback journal and leaves the store in
    /// WAL, failed or not; with another connection open the switch is
    /// refused and the import goes through the WAL, as well.
    #[test]
    fn an_import_uses_a_rollback_journal_and_leaves_the_wal_on() {
        let dir = tempfile::tempdir().unwrap();
        let good = file(dir.path(), &[CLICK.as_bytes(), SALE.as_bytes()]);
        let db = dir.path().join("a.db");
        let mut store = Store::open(&db).unwrap();
        assert_eq!(journal_mode(&store.conn), "wal");
        assert!(store.bulk_mode());
        assert_eq!(journal_mode(&store.conn), "delete");
        store.leave_bulk_mode();
        assert_eq!(journal_mode(&store.conn), "wal");

        let r = import_file(&mut store, &good, &opts(false)).unwrap();
        assert_eq!(r.counts.new, 2);
        assert_eq!(journal_mode(&store.conn), "wal");
        let bad = dir.path().join("bad.ndjson");
        std::fs::write(&bad, "{not json\n").unwrap();
        assert!(import_file(&mut store, &bad, &opts(false)).is_err());
        assert_eq!(journal_mode(&store.conn), "wal");

        // another connection (another process, say): refused, WAL as usual
        let other = rusqlite::Connection::open(&db).unwrap();
        assert_eq!(journal_mode(&other), "wal");
        // at once, not after the busy timeout
        let t = std::time::Instant::now();
        assert!(!store.bulk_mode());
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        let more = dir.path().join("more.ndjson");
        std::fs::write(&more, CLICK.replace("\"c1\"", "\"c2\"") + "\n").unwrap();
        let r = import_file(&mut store, &more, &opts(false)).unwrap();
        assert_eq!(r.counts.new, 1);
        assert_eq!(journal_mode(&store.conn), "wal");
        let n: i64 = other
            .query_row("SELECT COALESCE(SUM(n), 0) FROM event_blocks", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 3, "the other connection reads every event");
    }

    /// Over several chunks (4096 lines each), with registry and bad lines on
    /// their edges: every event is stored once, in the file's order.
    #[test]
    fn lines_across_chunks_are_all_imported_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        let mut events = Vec::new();
        for i in 1..=10_000 {
            match i {
                4096 | 4097 | 8192 => text.push_str(PARTNER),
                5000 | 8193 => text.push_str("[1,2"),
                _ => {
                    text.push_str(&format!(
                        r#"{{"id":"c{i}","type":"click","ts":"2026-11-01T00:00:00.000Z","program":"p"}}"#
                    ));
                    events.push(format!("c{i}"));
                }
            }
            text.push('\n');
        }
        let path = dir.path().join("in.ndjson");
        std::fs::write(&path, text).unwrap();
        let mut store = Store::open(&dir.path().join("a.db")).unwrap();
        let err = import_file(&mut store, &path, &opts(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("in.ndjson:5000:"), "{err}");
        let r = import_file(&mut store, &path, &opts(true)).unwrap();
        assert_eq!((r.counts.new, r.counts.registry, r.rejected), (9995, 3, 2));
        let ids: Vec<String> = stored_ids(&store).into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids, events);
        // every event has the next arrival, over the blocks' edges too
        let arrivals: Vec<i64> = stored_ids(&store).into_iter().map(|(a, _)| a).collect();
        assert_eq!(arrivals, (1..=9995).collect::<Vec<i64>>());
    }
}
