//! Rows handed from one thread to another in batches: a fixed number of
//! integer and text columns a row, copied into three flat buffers (no
//! allocation per row or field), and a channel that gives each batch back to
//! the thread that filled it, to be filled again and freed where it was
//! allocated (a cross-thread free is slow in glibc's malloc).
//!
//! Four pipelines use it: the import (parser threads fill event rows, the
//! writer puts the new ones into blocks), the facts scan (a thread decodes
//! event blocks, a builder turns them into facts), the draft (producer
//! threads put entries into words, the writer puts them into blocks) and
//! the report (a thread decodes ledger blocks and sums, a writer formats
//! ledger.csv).

use std::sync::mpsc;

/// An integer column's NULL.
const NULL_INT: i64 = i64::MIN;
/// A text column's NULL: the top bit of its end offset.
const NULL_TEXT: u32 = 1 << 31;

/// Rows of `ints` integer columns then `texts` text columns.
#[derive(Debug, Clone)]
pub struct Batch {
    ints_per_row: usize,
    texts_per_row: usize,
    ints: Vec<i64>,
    /// Text fields as bytes: copied without a UTF-8 check, checked when read
    /// as `&str` ([`Batch::text`]).
    text: Vec<u8>,
    /// The end offset of each text field in `text`; NULL_TEXT marks a NULL.
    ends: Vec<u32>,
}

/// The texts of one batch may not reach 2 GiB (a batch holds thousands of
/// rows, not the gigabytes that would need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a batch of rows over 2 GiB of text")
    }
}

impl Batch {
    pub fn new(ints_per_row: usize, texts_per_row: usize) -> Batch {
        Batch {
            ints_per_row,
            texts_per_row,
            ints: Vec::new(),
            text: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Empties the batch, keeping its buffers for the next rows.
    pub fn clear(&mut self) {
        self.ints.clear();
        self.text.clear();
        self.ends.clear();
    }

    /// Keeps the first `rows` rows, dropping a row only partly pushed too.
    pub fn truncate(&mut self, rows: usize) {
        self.ints.truncate(rows * self.ints_per_row);
        self.ends.truncate(rows * self.texts_per_row);
        let end = self.ends.last().map_or(0, |e| e & !NULL_TEXT);
        self.text.truncate(end as usize);
    }

    /// Bytes of text held.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Complete rows (a row is complete once its last text is pushed).
    pub fn rows(&self) -> usize {
        match self.texts_per_row {
            0 => self.ints.len() / self.ints_per_row.max(1),
            n => self.ends.len() / n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ints.is_empty() && self.ends.is_empty()
    }

    /// The next integer of the row being filled (integers first, in column
    /// order). `i64::MIN` is taken for NULL: no column here holds it.
    pub fn push_int(&mut self, v: Option<i64>) {
        self.ints.push(v.unwrap_or(NULL_INT));
    }

    /// The next text of the row being filled, after its integers.
    pub fn push_text(&mut self, v: Option<&str>) -> Result<(), TooLarge> {
        self.push_bytes(v.map(str::as_bytes))
    }

    /// [`Batch::push_text`] of bytes (SQLite's text, say, which is UTF-8
    /// unless the file was written by something else).
    pub fn push_bytes(&mut self, v: Option<&[u8]>) -> Result<(), TooLarge> {
        match v {
            Some(t) => {
                self.text.extend_from_slice(t);
                let end = u32::try_from(self.text.len())
                    .ok()
                    .filter(|&e| e < NULL_TEXT)
                    .ok_or(TooLarge)?;
                self.ends.push(end);
            }
            None => {
                let end = self.ends.last().map_or(0, |e| e & !NULL_TEXT);
                self.ends.push(end | NULL_TEXT);
            }
        }
        Ok(())
    }

    /// Integer column `c` (0-based among the integers) of row `r`.
    pub fn int(&self, r: usize, c: usize) -> Option<i64> {
        self.ints
            .get(r * self.ints_per_row + c)
            .copied()
            .filter(|&v| v != NULL_INT)
    }

    /// Text column `c` (0-based among the texts) of row `r`; `None` for a
    /// NULL, and for bytes that are not UTF-8.
    pub fn text(&self, r: usize, c: usize) -> Option<&str> {
        std::str::from_utf8(self.bytes(r, c)?).ok()
    }

    /// Text column `c` of row `r` as the bytes pushed.
    pub fn bytes(&self, r: usize, c: usize) -> Option<&[u8]> {
        let k = r * self.texts_per_row + c;
        let end = *self.ends.get(k)?;
        if end & NULL_TEXT != 0 {
            return None;
        }
        let start = match k {
            0 => 0,
            _ => self.ends[k - 1] & !NULL_TEXT,
        };
        self.text.get(start as usize..end as usize)
    }

    /// The texts of row `r` as bytes, a NULL as empty.
    pub fn row_bytes(&self, r: usize) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.texts_per_row).map(move |c| self.bytes(r, c).unwrap_or_default())
    }
}

/// What travels in a batch channel: emptied to be filled again.
pub trait Refill {
    /// Empties it, keeping its buffers.
    fn clear(&mut self);
    fn is_empty(&self) -> bool;
}

impl Refill for Batch {
    fn clear(&mut self) {
        Batch::clear(self)
    }
    fn is_empty(&self) -> bool {
        Batch::is_empty(self)
    }
}

/// The filling side of a batch channel.
pub struct Filler<T> {
    tx: mpsc::SyncSender<T>,
    back: mpsc::Receiver<T>,
    /// What a new batch starts as.
    empty: T,
}

/// The reading side: batches in the order they were sent; each one read
/// goes back with [`Reader::give_back`].
pub struct Reader<T> {
    rx: mpsc::Receiver<T>,
    back: mpsc::Sender<T>,
}

/// A channel of batches, at most `depth` in flight; new ones start as clones
/// of `empty`.
pub fn channel<T: Refill + Clone>(empty: T, depth: usize) -> (Filler<T>, Reader<T>) {
    let (tx, rx) = mpsc::sync_channel(depth);
    let (back_tx, back) = mpsc::channel();
    (Filler { tx, back, empty }, Reader { rx, back: back_tx })
}

impl<T: Refill + Clone> Filler<T> {
    /// An empty batch: one given back if there is one, else a new one.
    pub fn fresh(&self) -> T {
        match self.back.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => self.empty.clone(),
        }
    }

    /// Sends a full batch and returns an empty one to go on with; `None`
    /// when the reader has stopped (its own result says why).
    pub fn send(&self, b: T) -> Option<T> {
        self.tx.send(b).ok()?;
        Some(self.fresh())
    }

    /// Sends the last batch, if it holds anything, and frees what the reader
    /// gives back until it is done.
    pub fn finish(self, last: T) {
        if !last.is_empty() {
            let _ = self.tx.send(last);
        }
        drop(self.tx);
        for done in self.back.iter() {
            drop(done);
        }
    }
}

impl<T> Reader<T> {
    /// The next batch; `None` once the filler has finished or gone.
    pub fn next(&self) -> Option<T> {
        self.rx.recv().ok()
    }

    /// Hands a batch that has been read back to the filler.
    pub fn give_back(&self, b: T) {
        let _ = self.back.send(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_integers_texts_and_nulls() {
        let mut b = Batch::new(2, 3);
        for (i, t) in [(Some(7), Some("ab")), (None, None), (Some(-1), Some(""))] {
            b.push_int(i);
            b.push_int(Some(0));
            b.push_text(t).unwrap();
            b.push_text(None).unwrap();
            b.push_text(Some("zé")).unwrap();
        }
        assert_eq!(b.rows(), 3);
        assert_eq!(
            (b.int(0, 0), b.int(1, 0), b.int(2, 0)),
            (Some(7), None, Some(-1))
        );
        assert_eq!(b.int(1, 1), Some(0));
        assert_eq!(
            (b.text(0, 0), b.text(1, 0), b.text(2, 0)),
            (Some("ab"), None, Some(""))
        );
        assert_eq!(b.text(1, 1), None);
        assert_eq!(b.text(2, 2), Some("zé"));
        let row: Vec<&[u8]> = b.row_bytes(1).collect();
        assert_eq!(row, [&b""[..], b"", "zé".as_bytes()]);
        // out of range is None, never a panic
        assert_eq!((b.int(3, 0), b.text(3, 0)), (None, None));
        // bytes that are not UTF-8 are kept, and are no text
        let mut raw = Batch::new(0, 1);
        raw.push_bytes(Some(&[0xff, b'a'])).unwrap();
        assert_eq!(
            (raw.bytes(0, 0), raw.text(0, 0)),
            (Some(&[0xff, b'a'][..]), None)
        );
        // a row only partly pushed is dropped with the rows after `truncate`
        b.push_int(Some(9));
        b.push_int(Some(9));
        b.push_text(Some("partial")).unwrap();
        b.truncate(2);
        assert_eq!(b.rows(), 2);
        assert_eq!(b.text_len(), "ab".len() + 2 * "zé".len());
        assert_eq!(b.text(1, 2), Some("zé"));
        b.push_int(Some(5));
        b.push_int(None);
        for t in [Some("x"), None, Some("y")] {
            b.push_text(t).unwrap();
        }
        assert_eq!(
            (b.rows(), b.int(2, 0), b.text(2, 0), b.text(2, 2)),
            (3, Some(5), Some("x"), Some("y"))
        );
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.rows(), 0);
    }

    #[test]
    fn batches_arrive_in_order_and_come_back_for_reuse() {
        let (filler, reader) = channel(Batch::new(1, 1), 2);
        let consumer = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some(b) = reader.next() {
                for r in 0..b.rows() {
                    seen.push((b.int(r, 0).unwrap(), b.text(r, 0).unwrap().to_string()));
                }
                reader.give_back(b);
            }
            seen
        });
        let mut b = filler.fresh();
        for i in 0..1000 {
            b.push_int(Some(i));
            b.push_text(Some(&i.to_string())).unwrap();
            if b.rows() == 64 {
                b = filler.send(b).unwrap();
                // a reused batch starts empty
                assert!(b.is_empty());
            }
        }
        filler.finish(b);
        let seen = consumer.join().unwrap();
        assert_eq!(seen.len(), 1000);
        assert!(seen
            .iter()
            .enumerate()
            .all(|(i, (n, t))| *n == i as i64 && *t == i.to_string()));
    }

    #[test]
    fn a_stopped_reader_stops_the_filler() {
        let (filler, reader) = channel(Batch::new(1, 0), 1);
        drop(reader);
        let mut b = filler.fresh();
        b.push_int(Some(1));
        assert!(filler.send(b).is_none());
    }
}
