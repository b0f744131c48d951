//! `GET /c/{slug}`: mint a click id, answer the 302 with its cookie, and
//! hand the click record to a batched writer.
//!
//! By default (SPEC section 3) the redirect never waits on D1: clicks are
//! flushed `CLICK_FLUSH_MS` later in `ctx.wait_until`, and a batch in flight
//! when the process dies is lost.
//!
//! `CLICK_ACK=durable`: the 302 is answered
//! once the click is in D1, so an acknowledged click survives the process
//! being killed. Clicks are written by group commit: the concurrent clicks of
//! the isolate share one D1 batch (one transaction). A click arriving while
//! no write is running starts a writer in its own `ctx.wait_until` (all D1
//! I/O stays in that request's context); it writes whatever is queued, marks
//! those clicks written and loops while more arrived during the write, so
//! under load each batch carries every click that came in during the previous
//! one, and a click waits for about two D1 batch writes at most. Each waiting
//! click polls its own slot on a short timer in its own request (workerd
//! cancels a request waiting on another request's promise as hung).
//! `make soak` measures both modes' losses across SIGKILLs.

use super::store::{self, n, opt, s};
use super::{header, random, text, Config};
use crate::bot::{self, Signals};
use crate::clickid::{self, ClickClaims};
use crate::dest::{self, Macros};
use crate::hash;
use crate::ids::is_valid_id;
use crate::record::{Kind, Record};
use crate::time::Timestamp;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use worker::*;

/// A click waiting for its D1 write.
struct Pending {
    id: String,
    program: String,
    ts_ms: i64,
    visitor_key: Option<String>,
    record: String,
}

thread_local! {
    static QUEUE: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    static SCHEDULED: Cell<bool> = const { Cell::new(false) };
    /// Durable mode: clicks waiting for the group commit, and the writer.
    static WAITING: RefCell<Vec<(Pending, Rc<Slot>)>> = const { RefCell::new(Vec::new()) };
    static WRITER: Cell<Option<(u64, i64)>> = const { Cell::new(None) };
    static WRITER_GEN: Cell<u64> = const { Cell::new(0) };
}

/// Where the writer leaves the outcome of one click's write.
#[derive(Default)]
struct Slot {
    done: Cell<Option<bool>>,
}

impl Slot {
    fn finish(&self, ok: bool) {
        self.done.set(Some(ok));
    }
}

/// How often a waiting click looks at its slot. The wait is a timer in the
/// click's own request: workerd cancels a request that waits on nothing of
/// its own as hung, and a wake-up from another request's context would run
/// this request's code there. So no cross-request wakers, only polling.
const POLL_MS: u64 = 2;

/// Waits until the writer has finished this click: `true` when written.
async fn committed(slot: Rc<Slot>) -> bool {
    loop {
        if let Some(ok) = slot.done.get() {
            return ok;
        }
        Delay::from(Duration::from_millis(POLL_MS)).await;
    }
}

/// A writer older than this hands over to the next click's request, so no
/// single request's `wait_until` runs for ever under sustained load.
const WRITER_MAX_MS: i64 = 5_000;

/// Queues a click for the group commit and waits until it is in D1 (`true`)
/// or its write failed after retries (`false`).
fn commit(env: &Env, ctx: &Context, p: Pending) -> Result<Rc<Slot>> {
    let now = super::now_ms();
    let start = match WRITER.with(Cell::get) {
        None => true,
        Some((_, since)) => now - since > WRITER_MAX_MS,
    };
    // Open the binding before queuing: a failure must not leave a click
    // queued with no writer to drain it.
    let db = if start { Some(store::db(env)?) } else { None };
    let slot = Rc::new(Slot::default());
    WAITING.with(|w| w.borrow_mut().push((p, slot.clone())));
    if let Some(db) = db {
        let gen = WRITER_GEN.with(|g| {
            let v = g.get().wrapping_add(1);
            g.set(v);
            v
        });
        WRITER.with(|w| w.set(Some((gen, now))));
        ctx.wait_until(async move {
            writer(db, gen).await;
        });
    }
    Ok(slot)
}

/// Writes queued clicks until none are left (or a newer writer took over).
async fn writer(db: D1Database, gen: u64) {
    loop {
        if WRITER.with(Cell::get).map(|(g, _)| g) != Some(gen) {
            return;
        }
        let batch: Vec<(Pending, Rc<Slot>)> = WAITING.with(|w| {
            let mut w = w.borrow_mut();
            let n = w.len().min(BATCH);
            w.drain(..n).collect()
        });
        if batch.is_empty() {
            WRITER.with(|w| {
                if w.get().map(|(g, _)| g) == Some(gen) {
                    w.set(None);
                }
            });
            return;
        }
        let pending: Vec<&Pending> = batch.iter().map(|(p, _)| p).collect();
        let ok = write_retrying(&db, &pending).await;
        for (_, slot) in &batch {
            slot.finish(ok);
        }
    }
}

/// One D1 batch, retried with backoff; `false` when it never went through.
async fn write_retrying(db: &D1Database, chunk: &[&Pending]) -> bool {
    let mut attempt = 0u32;
    loop {
        match write(db, chunk).await {
            Ok(()) => return true,
            Err(e) if attempt < 6 => {
                console_warn!(
                    "click batch of {} failed (attempt {}): {e}",
                    chunk.len(),
                    attempt + 1
                );
                Delay::from(Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                let ids: Vec<&str> = chunk.iter().map(|p| p.id.as_str()).collect();
                console_error!("click batch lost after retries: {e}; ids={ids:?}");
                return false;
            }
        }
    }
}

/// Statements per D1 batch (each is one click; a batch is one transaction).
const BATCH: usize = 200;
const SUB_MAX: usize = 256;

const INSERT_CLICK: &str =
    "INSERT INTO events (id, type, program, ts_ms, visitor_key, uniq, record)
  VALUES (?1, 'click', ?2, ?3, ?4,
    CASE WHEN ?4 IS NULL THEN 0 ELSE NOT EXISTS (
      SELECT 1 FROM events WHERE visitor_key = ?4 AND ts_ms > ?3 - 3600000 AND ts_ms <= ?3) END,
    ?5)
  ON CONFLICT(id) DO NOTHING";

fn enqueue(env: &Env, ctx: &Context, cfg: &Config, p: Pending) -> Result<()> {
    // Open the binding before queuing: a failure here must not leave a
    // batch marked as scheduled with no flush to drain it.
    let opener = if SCHEDULED.with(Cell::get) {
        None
    } else {
        Some(store::db(env)?)
    };
    QUEUE.with(|q| q.borrow_mut().push(p));
    if let Some(db) = opener {
        SCHEDULED.with(|s| s.set(true));
        let delay = cfg.flush_ms;
        ctx.wait_until(async move {
            flush(db, delay).await;
        });
    }
    Ok(())
}

async fn flush(db: D1Database, delay_ms: u64) {
    if delay_ms > 0 {
        Delay::from(Duration::from_millis(delay_ms)).await;
    }
    // Later clicks open a new batch in their own request.
    let pending = QUEUE.with(|q| std::mem::take(&mut *q.borrow_mut()));
    SCHEDULED.with(|s| s.set(false));
    for chunk in pending.chunks(BATCH) {
        let refs: Vec<&Pending> = chunk.iter().collect();
        write_retrying(&db, &refs).await;
    }
}

async fn write(db: &D1Database, chunk: &[&Pending]) -> Result<()> {
    let mut stmts = Vec::with_capacity(chunk.len());
    for p in chunk {
        stmts.push(db.prepare(INSERT_CLICK).bind(&[
            s(&p.id),
            s(&p.program),
            n(p.ts_ms),
            opt(p.visitor_key.as_deref()),
            s(&p.record),
        ])?);
    }
    db.batch(stmts).await?;
    Ok(())
}

fn truncate(v: String, max: usize) -> String {
    if v.len() <= max {
        return v;
    }
    let mut cut = max;
    while !v.is_char_boundary(cut) {
        cut -= 1;
    }
    v[..cut].to_string()
}

pub async fn click(
    req: Request,
    env: &Env,
    ctx: &Context,
    cfg: &Config,
    slug: &str,
) -> Result<Response> {
    if !is_valid_id(slug) {
        return text(404, "not found");
    }
    let Some(link) = store::link_by_slug(env, slug).await? else {
        return text(404, "not found");
    };
    if link.paused {
        return text(404, "not found");
    }
    let Some(program) = store::program(env, &link.program).await? else {
        return text(404, "not found");
    };
    let url = req.url()?;
    let mut sub: [Option<String>; 5] = Default::default();
    let mut to = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sub1" | "sub2" | "sub3" | "sub4" | "sub5" => {
                let i = usize::from(k.as_bytes()[3] - b'1');
                if !v.is_empty() && sub[i].is_none() {
                    sub[i] = Some(truncate(v.into_owned(), SUB_MAX));
                }
            }
            "to" if to.is_none() => to = Some(v.into_owned()),
            _ => {}
        }
    }
    if cfg.click_secret.is_empty() {
        return Err(Error::RustError("CLICK_SECRET is not set".into()));
    }
    let now = super::event_now(&req, cfg);
    let nonce = u32::from_be_bytes(random::<4>()?);
    let click_id = clickid::mint(
        cfg.click_secret.as_bytes(),
        &ClickClaims {
            ts_ms: now,
            nonce,
            program: link.program_num,
            link: link.num,
            partner: link.partner_num,
        },
    );
    let macros = Macros {
        click_id: &click_id,
        partner: &link.partner,
        sub: [
            sub[0].as_deref(),
            sub[1].as_deref(),
            sub[2].as_deref(),
            sub[3].as_deref(),
            sub[4].as_deref(),
        ],
    };
    let location = match dest::resolve(
        &link.destination,
        to.as_deref(),
        &program.allowed_hosts,
        &macros,
    ) {
        Ok(l) => l,
        Err(e) => return text(400, &format!("bad deep link: {}", e.reason())),
    };

    let method = req.method().to_string();
    let ua = header(&req, "User-Agent");
    let purpose = header(&req, "Sec-Purpose")
        .or_else(|| header(&req, "Purpose"))
        .or_else(|| header(&req, "X-Purpose"))
        .or_else(|| header(&req, "X-Moz"));
    let bot = bot::classify(&Signals {
        method: &method,
        user_agent: ua.as_deref(),
        purpose: purpose.as_deref(),
    });
    let ip = header(&req, "CF-Connecting-IP").unwrap_or_default();
    let visitor = hash::visitor(&cfg.visitor_salt, &ip, ua.as_deref().unwrap_or(""));
    let country = req
        .cf()
        .and_then(|cf| cf.country())
        .or_else(|| header(&req, "CF-IPCountry"))
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()));
    let referrer = header(&req, "Referer").filter(|r| !r.is_empty());
    let has_referrer = referrer.is_some();
    let referrer_host = referrer
        .and_then(|r| crate::dest::parse_http_url(&r).ok())
        .and_then(|u| u.host_str().map(str::to_string));
    let asn = req.cf().and_then(|cf| cf.asn());

    let mut rec = Record::new(Kind::Click);
    let id = format!("ev_{click_id}");
    rec.id = Some(id.clone());
    rec.ts = Some(Timestamp(now));
    rec.program = Some(link.program.clone());
    rec.partner = Some(link.partner.clone());
    rec.link = Some(link.slug.clone());
    rec.click_id = Some(click_id.clone());
    rec.bot = Some(bot.is_some());
    rec.bot_reason = bot.map(|b| b.as_str().to_string());
    rec.country = country;
    rec.sub = Some(sub.to_vec());
    rec.visitor = Some(visitor.clone());
    rec.referrer_host = referrer_host;
    rec.asn = asn;
    rec.datacenter = asn.map(bot::is_hosting_asn);
    rec.has_referrer = Some(has_referrer);
    let pending = Pending {
        id,
        program: link.program.clone(),
        ts_ms: now,
        visitor_key: bot
            .is_none()
            .then(|| hash::visitor_link(&visitor, &link.slug)),
        record: serde_json::to_string(&rec)?,
    };
    if cfg.click_ack_early {
        enqueue(env, ctx, cfg, pending)?;
    } else if !committed(commit(env, ctx, pending)?).await {
        // D1 refused the click through every retry: the visitor is still
        // redirected (a click id verifies without its click record), and
        // the loss is logged with the id by the writer.
        console_error!("click {click_id} acknowledged without its record");
    }

    // Built by hand: `Response::redirect` has immutable headers.
    let headers = Headers::new();
    headers.set("Location", &location)?;
    headers.set(
        "Set-Cookie",
        &crate::cookie::set_click(&click_id, program.cookie_days),
    )?;
    headers.set("Cache-Control", "no-store")?;
    headers.set("Referrer-Policy", "no-referrer-when-downgrade")?;
    Ok(Response::empty()?.with_status(302).with_headers(headers))
}
