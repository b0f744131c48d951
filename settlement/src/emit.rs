//! Settlement's outgoing events: `statement.ready` (one per statement of a
//! closed period) and `payout.created` (one per payout row), handed to the
//! edge's `POST /api/webhooks/emit`, which signs, queues, retries and logs
//! their delivery to the endpoints subscribed (`docs/integrations.md`).
//!
//! Only closed periods are emitted: a draft's figures change with every
//! `run`, a closed period's never do, so an event id derived from the
//! period and the partner (and the currency, for a payout) names one fixed
//! payload. Each event is recorded in the store once the edge has accepted
//! it (`emitted`), so a rerun sends only what is missing; the edge also
//! deduplicates on the id, so a lost store or two racing runs deliver once.
//! The data is the same rows as statements.csv and payouts.csv.

use crate::error::{Error, Result};
use crate::period::Period;
use crate::report::PeriodData;
use crate::statement::STATEMENT_COLUMNS;
use crate::store::Store;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Map, Value};
use std::time::Duration;

pub const STATEMENT_READY: &str = "statement.ready";
pub const PAYOUT_CREATED: &str = "payout.created";

/// The store's record of what was emitted. Kept here (not in the store's
/// versioned migrations) so emission stays one self-contained module;
/// `IF NOT EXISTS` makes it idempotent on every open.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS emitted (
  id TEXT PRIMARY KEY, event TEXT NOT NULL, period INTEGER NOT NULL, partner TEXT NOT NULL,
  data TEXT NOT NULL, answer TEXT NOT NULL, at TEXT NOT NULL
);
-- state 'pending': emission of the period started and is not complete
-- (nightly retries it); 'done': every event of the period was accepted
CREATE TABLE IF NOT EXISTS emitted_periods (
  period INTEGER PRIMARY KEY, state TEXT NOT NULL, updated_at TEXT NOT NULL
);
";

/// Where events go: the edge and its admin token.
#[derive(Clone, Debug)]
pub struct EmitOptions {
    pub edge: String,
    pub token: String,
    pub tries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

impl EmitOptions {
    pub fn new(edge: &str, token: &str) -> EmitOptions {
        EmitOptions {
            edge: edge.trim_end_matches('/').to_string(),
            token: token.to_string(),
            tries: 5,
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(30),
        }
    }

    /// From `--edge` and `--admin-token`: none without an edge (offline);
    /// an edge without a token is a usage error.
    pub fn from_flags(edge: Option<&str>, token: Option<&str>) -> Result<Option<EmitOptions>> {
        match (edge, token) {
            (None, _) => Ok(None),
            (Some(e), Some(t)) if !t.is_empty() => Ok(Some(EmitOptions::new(e, t))),
            (Some(_), _) => Err(Error::Usage(
                "--edge needs --admin-token (or SETTLEMENT_ADMIN_TOKEN): the edge's ADMIN_TOKEN"
                    .into(),
            )),
        }
    }
}

/// One event to emit.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    pub event: &'static str,
    pub partner: String,
    pub data: Value,
}

/// An event id within the edge's 128 characters: `kind_<period>_<parts>`,
/// or a digest of the parts when they are too long.
fn event_id(kind: &str, p: Period, parts: &[&str]) -> String {
    let id = format!("{kind}_{p}_{}", parts.join("_"));
    if id.len() <= 128 {
        id
    } else {
        format!("{kind}_{p}_{}", crate::payout_files::hex16(parts))
    }
}

/// The events of a period: a `statement.ready` per statement row (every
/// statements.csv column, amounts as the CSV's decimal strings, plus the
/// program's model), then a `payout.created` per payout row (the
/// payouts.csv columns plus the partner's program).
pub fn events(
    p: Period,
    statements: &[Vec<String>],
    models: &[String],
    payouts: &[Vec<String>],
) -> Vec<Event> {
    let mut out = Vec::new();
    let mut programs = std::collections::HashMap::new();
    let mut statements_of: std::collections::HashMap<&str, usize> = Default::default();
    for row in statements {
        *statements_of
            .entry(row.get(1).map_or("", String::as_str))
            .or_default() += 1;
    }
    for (i, row) in statements.iter().enumerate() {
        let mut data = Map::new();
        for (k, v) in STATEMENT_COLUMNS.iter().zip(row) {
            data.insert((*k).to_string(), Value::String(v.clone()));
        }
        if let Some(m) = models.get(i) {
            data.insert("model".into(), Value::String(m.clone()));
        }
        let partner = row.get(1).cloned().unwrap_or_default();
        let program = row.get(2).cloned().unwrap_or_default();
        programs.insert(partner.clone(), program.clone());
        // a partner with statements in two programs: one event each (the
        // id of a partner's only statement is as it always was)
        let id = if statements_of.get(partner.as_str()).is_some_and(|&n| n > 1) {
            event_id("stmt", p, &[&partner, &program])
        } else {
            format!("stmt_{p}_{partner}")
        };
        out.push(Event {
            id,
            event: STATEMENT_READY,
            partner,
            data: Value::Object(data),
        });
    }
    for row in payouts {
        let col = |i: usize| row.get(i).cloned().unwrap_or_default();
        let (partner, currency, reference) = (col(1), col(2), col(4));
        // a partner paid in two programs: `PO-<period>-<partner>.<program>`
        let own = crate::statement::payout_reference(p, &partner);
        let program = reference
            .strip_prefix(own.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .map(str::to_string);
        let data = json!({
            "period": col(0),
            "partner": partner,
            "program": program.as_ref().or(programs.get(&partner)),
            "currency": currency,
            "amount": col(3),
            "reference": reference,
        });
        out.push(Event {
            id: match &program {
                Some(g) => event_id("payout", p, &[&partner, &currency, g]),
                None => format!("payout_{p}_{partner}_{currency}"),
            },
            event: PAYOUT_CREATED,
            partner,
            data,
        });
    }
    out
}

/// What one period's emission did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EmitSummary {
    /// The period is a draft: nothing is emitted until it is closed.
    pub draft: bool,
    pub statements: usize,
    pub payouts: usize,
    /// Accepted by the edge in an earlier run (recorded in the store), or
    /// answered `duplicate` by the edge.
    pub already: usize,
}

impl EmitSummary {
    pub fn describe(&self, p: Period) -> String {
        if self.draft {
            return format!(
                "{p}: a draft: statement.ready and payout.created are emitted once the period is closed"
            );
        }
        format!(
            "{p}: emitted {} statement.ready and {} payout.created events ({} emitted before)",
            self.statements, self.payouts, self.already
        )
    }
}

fn ensure_schema(store: &Store) -> Result<()> {
    store.conn.execute_batch(SCHEMA)?;
    Ok(())
}

fn now_text() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    edge::time::Timestamp(ms).to_string()
}

fn set_period_state(store: &Store, p: Period, state: &str) -> Result<()> {
    store.conn.execute(
        "INSERT INTO emitted_periods (period, state, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (period) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        params![p.key(), state, now_text()],
    )?;
    Ok(())
}

/// Records that period `p`'s events are to be emitted (nightly, before it
/// closes the period): [`pending_periods`] lists it until its emission
/// completes.
pub fn owe(store: &Store, p: Period) -> Result<()> {
    ensure_schema(store)?;
    set_period_state(store, p, "pending")
}

/// Emits the events of period `p` (its report data `d`) not emitted yet.
/// Each accepted event is recorded at once, so an interrupted run resumes;
/// the first failure stops with an `Upstream` error (exit 3).
pub fn emit(store: &Store, p: Period, d: &PeriodData, o: &EmitOptions) -> Result<EmitSummary> {
    if d.state != "closed" {
        return Ok(EmitSummary {
            draft: true,
            ..EmitSummary::default()
        });
    }
    emit_events(store, p, events(p, &d.statements, &d.models, &d.payouts), o)
}

fn emit_events(store: &Store, p: Period, all: Vec<Event>, o: &EmitOptions) -> Result<EmitSummary> {
    crate::pull::check_edge(&o.edge)?;
    ensure_schema(store)?;
    set_period_state(store, p, "pending")?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(o.timeout)
        .redirects(0)
        .build();
    let mut sum = EmitSummary::default();
    let total = all.len();
    for (i, e) in all.into_iter().enumerate() {
        let known: Option<String> = store
            .conn
            .query_row("SELECT event FROM emitted WHERE id = ?1", [&e.id], |r| {
                r.get(0)
            })
            .optional()?;
        if known.is_some() {
            sum.already += 1;
            continue;
        }
        let body = json!({"id": e.id, "event": e.event, "data": e.data}).to_string();
        let answer = post(&agent, o, &body).map_err(|msg| {
            Error::Upstream(format!(
                "{p}: the report is written, but {} of {total} events were not emitted: {msg}; \
                 rerun `settlement report` (or the next nightly) to emit them",
                total - i
            ))
        })?;
        match answer.get("status").and_then(Value::as_str) {
            Some("duplicate") => sum.already += 1,
            _ if e.event == STATEMENT_READY => sum.statements += 1,
            _ => sum.payouts += 1,
        }
        store.conn.execute(
            "INSERT INTO emitted (id, event, period, partner, data, answer, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            params![
                e.id,
                e.event,
                p.key(),
                e.partner,
                e.data.to_string(),
                answer.to_string(),
                now_text()
            ],
        )?;
    }
    set_period_state(store, p, "done")?;
    Ok(sum)
}

/// Closed periods whose emission started and did not complete, oldest
/// first (nightly retries them).
pub fn pending_periods(store: &Store) -> Result<Vec<Period>> {
    ensure_schema(store)?;
    let mut st = store
        .conn
        .prepare("SELECT period FROM emitted_periods WHERE state = 'pending' ORDER BY period")?;
    let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
    let mut out = Vec::new();
    for k in rows {
        out.push(Period::from_key(k?));
    }
    Ok(out)
}

/// POSTs one event; the edge's JSON answer (202 queued or 200 duplicate),
/// or why not. Network errors and 5xx are retried with a doubling backoff.
fn post(agent: &ureq::Agent, o: &EmitOptions, body: &str) -> std::result::Result<Value, String> {
    let url = format!("{}/api/webhooks/emit", o.edge);
    let mut last = String::new();
    for attempt in 0..o.tries.max(1) {
        if attempt > 0 {
            std::thread::sleep(o.backoff * 2u32.saturating_pow(attempt - 1));
        }
        let res = agent
            .post(&url)
            .set("Authorization", &format!("Bearer {}", o.token))
            .set("Content-Type", "application/json")
            .send_string(body);
        let snippet = |r: ureq::Response| {
            r.into_string()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>()
        };
        match res {
            Ok(r) => {
                let text = r.into_string().unwrap_or_default();
                return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
            }
            Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                return Err(format!(
                    "{url}: HTTP {code}: the edge refused the admin token; check --admin-token (the edge's ADMIN_TOKEN)"
                ))
            }
            Err(ureq::Error::Status(409, _)) => {
                return Err(format!(
                    "{url}: HTTP 409: the edge already has an event with this id and other content: {body}"
                ))
            }
            Err(ureq::Error::Status(code, r)) if code >= 500 || code == 429 || code == 408 => {
                last = format!("HTTP {code} {}", snippet(r));
            }
            Err(ureq::Error::Status(code, r)) => {
                return Err(format!("{url}: HTTP {code}: {}", snippet(r)))
            }
            Err(ureq::Error::Transport(t)) => last = t.to_string(),
        }
    }
    Err(format!(
        "{url}: the edge is unreachable, gave up after {} tries: {last}",
        o.tries.max(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn sample(p: Period) -> Vec<Event> {
        let statements = rows(&[
            &[
                "2026-10", "ann", "shop", "USD", "60.00", "-5.00", "0.00", "0.00", "0.00", "55.00",
                "0.00",
            ],
            &[
                "2026-10", "bob_1", "shop", "USD", "8.00", "0.00", "0.00", "0.00", "0.00", "0.00",
                "8.00",
            ],
        ]);
        let payouts = rows(&[&["2026-10", "ann", "USD", "55.00", "po-2026-10-ann"]]);
        let models = vec!["affiliate".to_string(), "affiliate".to_string()];
        events(p, &statements, &models, &payouts)
    }

    #[test]
    fn one_event_per_statement_and_payout_with_stable_ids() {
        let p = Period::parse("2026-10").unwrap();
        let ev = sample(p);
        let ids: Vec<&str> = ev.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "stmt_2026-10_ann",
                "stmt_2026-10_bob_1",
                "payout_2026-10_ann_USD"
            ]
        );
        assert_eq!(ev, sample(p), "deterministic");
        assert_eq!(ev[0].event, STATEMENT_READY);
        assert_eq!(ev[0].data["payable"], "55.00");
        assert_eq!(ev[0].data["reversed"], "-5.00");
        assert_eq!(ev[0].data["program"], "shop");
        assert_eq!(ev[0].data["model"], "affiliate");
        assert_eq!(ev[2].event, PAYOUT_CREATED);
        assert_eq!(
            ev[2].data,
            json!({"period": "2026-10", "partner": "ann", "program": "shop", "currency": "USD",
                   "amount": "55.00", "reference": "po-2026-10-ann"})
        );
        for e in &ev {
            assert!(edge::webhook::is_valid_event_id(&e.id), "{}", e.id);
        }
    }

    /// A partner with statements and payouts in two programs: an event
    /// each (one id for both sent only the first), named by program.
    #[test]
    fn a_partner_in_two_programs_gets_an_event_per_statement_and_payout() {
        let p = Period::parse("2026-10").unwrap();
        let st = |partner: &str, program: &str| {
            let mut r: Vec<String> = ["2026-10", partner, program, "USD"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            r.extend(std::iter::repeat_n("0.00".to_string(), 7));
            r
        };
        let po = |partner: &str, r: &str| -> Vec<String> {
            ["2026-10", partner, "USD", "5.00", r]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        let ev = events(
            p,
            &[st("ann", "shop"), st("ann", "app")],
            &["affiliate".into(), "affiliate".into()],
            &[
                po("ann", "PO-2026-10-ann.app"),
                po("ann", "PO-2026-10-ann.shop"),
            ],
        );
        let ids: Vec<&str> = ev.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "stmt_2026-10_ann_shop",
                "stmt_2026-10_ann_app",
                "payout_2026-10_ann_USD_app",
                "payout_2026-10_ann_USD_shop"
            ]
        );
        assert_eq!(ev[2].data["program"], "app");
        assert_eq!(ev[3].data["program"], "shop");
        // ids over the edge's 128 characters are digests, still distinct
        let (a, g) = ("a".repeat(64), "g".repeat(64));
        let ev = events(
            p,
            &[st(&a, &g), st(&a, "shop")],
            &["affiliate".into(), "affiliate".into()],
            &[
                po(&a, &format!("PO-2026-10-{a}.{g}")),
                po(&a, &format!("PO-2026-10-{a}.shop")),
            ],
        );
        for e in &ev {
            assert!(edge::webhook::is_valid_event_id(&e.id), "{}", e.id);
        }
        assert!(ev[0].id != ev[1].id && ev[2].id != ev[3].id, "{ev:?}");
    }

    #[test]
    fn flags_need_a_token() {
        assert!(EmitOptions::from_flags(None, None).unwrap().is_none());
        assert!(EmitOptions::from_flags(Some("http://x"), None).is_err());
        assert!(EmitOptions::from_flags(Some("http://x/"), Some("t"))
            .unwrap()
            .is_some_and(|o| o.edge == "http://x"));
    }

    #[test]
    fn an_unreachable_edge_is_an_upstream_error_and_the_period_stays_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let p = Period::parse("2026-10").unwrap();
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut o = EmitOptions::new(&format!("http://127.0.0.1:{port}"), "t");
        o.tries = 2;
        o.backoff = Duration::from_millis(1);
        let e = emit_events(&store, p, sample(p), &o).unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
        assert!(
            e.to_string().contains("3 of 3 events were not emitted"),
            "{e}"
        );
        assert_eq!(pending_periods(&store).unwrap(), vec![p]);
    }
}
