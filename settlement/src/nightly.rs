//! `settlement nightly`: pull, run the open periods, close the periods past
//! their grace days, report. The clock is read here only, to know which
//! periods are past; `--now` fixes it.

use crate::config;
use crate::emit::EmitOptions;
use crate::error::{Error, Result};
use crate::period::Period;
use crate::pull::{pull, PullOptions};
use crate::run::{close_with, run, RunOutcome};
use crate::store::Store;
use std::path::Path;

#[derive(Debug, Default)]
pub struct NightlyReport {
    pub ran: Vec<(Period, bool)>,
    pub closed: Vec<Period>,
    pub pulled: u64,
    /// What emission said, per period emitted.
    pub emitted: Vec<String>,
}

/// `today`: day number (days since the epoch).
pub fn nightly(
    store: &mut Store,
    path: &Path,
    today: i64,
    progress: bool,
) -> Result<NightlyReport> {
    let n = config::load_nightly(path)?;
    let cfg = config::load(&n.programs)?;
    let mut rep = NightlyReport::default();
    if let Some(edge) = &n.edge {
        let mut o = PullOptions::new(edge, n.token.as_deref().unwrap_or(""));
        o.progress = progress;
        let r = pull(store, &o)?;
        rep.pulled = r.counts.new;
    }
    let current = Period::of_day(today);
    // a nightly killed between a close and that period's report left it
    // unreported (or with the draft's report): the loop below starts after
    // it, so report it here; `REPORTED_KEY` marks the last closed period
    // whose report was written
    if let Some(h) = store.last_closed()? {
        if store.meta(REPORTED_KEY)?.as_deref() != Some(h.to_string().as_str()) {
            let out = n.out.join(h.to_string());
            let d = crate::report::report(store, h, &out)?;
            crate::payout_files::write_for(store, &out, h, &d.payouts, &cfg.payout_details)?;
            set_reported(store, h)?;
        }
    }
    let start = match (store.last_closed()?, n.first_period) {
        (Some(h), _) => h.next(),
        (None, Some(f)) => f.min(current),
        (None, None) => match store.event_periods()?.0 {
            Some(ms) => {
                let first = Period::of_ms(ms).min(current);
                // one event with a zero or mistyped date would have every
                // month since run and closed for good
                if current.index() - first.index() >= MAX_FIRST_NIGHT {
                    return Err(Error::Usage(format!(
                        "the store's first event is in {first}, {} periods before {current}: nightly would run and close every one of them for good.                          If that event's date is wrong, fix it at its source; to start later, set first_period = \"YYYY-MM\" in {} (events before it are never settled)",
                        current.index() - first.index() + 1,
                        path.display()
                    )));
                }
                first
            }
            None => current,
        },
    };
    let webhooks = n.edge.is_some() && n.admin_token.is_some();
    let mut p = start;
    while p <= current {
        let outcome = run(store, &cfg, p)?;
        rep.ran
            .push((p, matches!(outcome, RunOutcome::Replaced { .. })));
        let closing = p.last_day() + n.grace_days < today;
        if closing {
            // its webhooks are owed from now on: marked before the close,
            // so neither a kill nor an earlier period's failed emission
            // tonight can leave it closed and never emitted (a period
            // marked and not closed is passed over until it is)
            if webhooks {
                crate::emit::owe(store, p)?;
            }
            // a first_period leaves the months before it unsettled
            let first = p == start && n.first_period.is_some() && store.last_closed()?.is_none();
            close_with(store, p, first)?;
            rep.closed.push(p);
        }
        let out = n.out.join(p.to_string());
        let d = crate::report::report(store, p, &out)?;
        crate::payout_files::write_for(store, &out, p, &d.payouts, &cfg.payout_details)?;
        if closing {
            set_reported(store, p)?;
        }
        p = p.next();
    }
    if let (Some(edge), Some(token)) = (&n.edge, &n.admin_token) {
        rep.emitted = emit_closed(store, &n.out, &rep.closed, &EmitOptions::new(edge, token))?;
    }
    Ok(rep)
}

/// The most periods a first nightly (no closed period, no
/// `first_period`) opens: two years.
pub const MAX_FIRST_NIGHT: i64 = 24;

/// The meta key naming the last closed period `nightly` has reported.
pub const REPORTED_KEY: &str = "nightly_reported";

fn set_reported(store: &Store, p: Period) -> Result<()> {
    Store::set_meta(&store.conn, REPORTED_KEY, &p.to_string())
}

/// Emits the periods closed tonight and any closed period whose emission
/// an earlier night left unfinished (the edge was down): after every
/// report is written, so a failure (exit 3) leaves the outputs whole.
fn emit_closed(
    store: &Store,
    out: &Path,
    closed: &[Period],
    o: &EmitOptions,
) -> Result<Vec<String>> {
    let mut periods = crate::emit::pending_periods(store)?;
    periods.extend_from_slice(closed);
    periods.sort();
    periods.dedup();
    let mut said = Vec::new();
    for p in periods {
        let d = crate::report::load(store, p)?;
        match crate::emit::emit(store, p, &d, o) {
            Ok(s) => said.push(s.describe(p)),
            Err(Error::Upstream(m)) => {
                return Err(Error::Upstream(format!(
                    "{m} (reports in {})",
                    out.display()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(said)
}

/// Today from `--now YYYY-MM-DD`, or the system clock.
pub fn today(now: Option<&str>) -> Result<i64> {
    match now {
        Some(s) => edge::time::Timestamp::parse_date(s)
            .map(|t| t.day())
            .map_err(|_| Error::Usage(format!("--now {s:?} is not a YYYY-MM-DD date"))),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            Ok(secs.div_euclid(86_400))
        }
    }
}
