//! `settlement pull`: reads the edge's export API incrementally. Each page
//! of events is committed together with the cursor that follows it, so an
//! interrupted pull resumes where it stopped and never imports a page twice.

use crate::error::{Error, Result};
use crate::import::insert_ndjson;
use crate::store::{ImportCounts, Inserter, Store};
use std::io::Read;
use std::time::Duration;

pub const CURSOR_KEY: &str = "pull_cursor";
/// The meta key holding the first event the store pulled, `"SEQ ID"`: a
/// later pull checks that the edge's first event is still that one.
pub const ORIGIN_KEY: &str = "pull_origin";

#[derive(Clone, Debug)]
pub struct PullOptions {
    pub edge: String,
    pub token: String,
    pub limit: u32,
    pub tries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub progress: bool,
}

impl PullOptions {
    pub fn new(edge: &str, token: &str) -> PullOptions {
        PullOptions {
            edge: edge.trim_end_matches('/').to_string(),
            token: token.to_string(),
            limit: 5000,
            tries: 5,
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(60),
            progress: true,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PullReport {
    pub pages: u64,
    pub counts: ImportCounts,
    pub cursor: u64,
}

struct Page {
    body: String,
    next: Option<u64>,
}

fn fetch(agent: &ureq::Agent, o: &PullOptions, url: &str) -> Result<Page> {
    let mut last = String::new();
    for attempt in 0..o.tries {
        if attempt > 0 {
            std::thread::sleep(o.backoff * 2u32.saturating_pow(attempt - 1));
        }
        let res = agent
            .get(url)
            .set("Authorization", &format!("Bearer {}", o.token))
            .set("Accept", "application/x-ndjson")
            .call();
        match res {
            Ok(resp) => {
                let next = resp.header("X-Next-Cursor").and_then(|v| v.trim().parse().ok());
                let mut body = String::new();
                match resp.into_reader().read_to_string(&mut body) {
                    Ok(_) => return Ok(Page { body, next }),
                    Err(e) => last = format!("reading the body: {e}"),
                }
            }
            Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                return Err(Error::Upstream(format!(
                    "{url}: HTTP {code}: the export API refused the token; check --token (the edge's EXPORT_TOKEN)"
                )))
            }
            Err(ureq::Error::Status(code, resp)) if code >= 500 || code == 429 || code == 408 => {
                let body = resp.into_string().unwrap_or_default();
                last = format!("HTTP {code} {}", body.chars().take(200).collect::<String>());
            }
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                return Err(Error::Upstream(format!(
                    "{url}: HTTP {code}: {}",
                    body.chars().take(200).collect::<String>()
                )));
            }
            Err(ureq::Error::Transport(t)) => last = t.to_string(),
        }
    }
    Err(Error::Upstream(format!(
        "{url}: gave up after {} tries: {last}",
        o.tries
    )))
}

/// An edge URL is `http://` or `https://` and a host: anything else
/// (`localhost:8787`, a typo) is a usage error at once (exit 1), not five
/// tries and an upstream error (exit 3).
pub fn check_edge(edge: &str) -> Result<()> {
    match edge
        .strip_prefix("http://")
        .or_else(|| edge.strip_prefix("https://"))
    {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !rest.contains(' ') => Ok(()),
        _ => Err(Error::Usage(format!(
            "the edge URL {edge:?} is not http:// or https:// and a host (say http://127.0.0.1:8787)"
        ))),
    }
}

/// `"SEQ ID"` of the first line of an export page, `None` for an empty one.
fn first_line(body: &str) -> std::result::Result<Option<String>, String> {
    let Some(l) = body.lines().find(|l| !l.trim().is_empty()) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(l).map_err(|e| format!("line 1 is not JSON: {e}"))?;
    match (v["seq"].as_u64(), v["id"].as_str()) {
        (Some(seq), Some(id)) => Ok(Some(format!("{seq} {id}"))),
        _ => Err("line 1 has no seq and id".into()),
    }
}

/// A store that has pulled up to `cursor` pulls only from the edge it
/// started with: that edge's first event is still the one the store's pulls
/// began with. An edge whose D1 was reset, or another deployment, numbers
/// its events from 1 again, and pulling after the cursor would skip every
/// one up to it without a word. Stores that pulled before the origin was
/// kept record it now.
fn check_origin(store: &Store, agent: &ureq::Agent, o: &PullOptions, cursor: u64) -> Result<()> {
    let url = format!("{}/export/v1/events?after=0&limit=1", o.edge);
    let page = fetch(agent, o, &url)?;
    let first = first_line(&page.body).map_err(|m| Error::Upstream(format!("{url}: {m}")))?;
    match (store.meta(ORIGIN_KEY)?, first) {
        (Some(origin), Some(f)) if origin == f => Ok(()),
        (Some(origin), f) => Err(Error::Upstream(format!(
            "{}: the edge's first event is {} but this store's pulls began with {origin} and have read up to {cursor}: \
             the edge was reset or is another deployment, and pulling after {cursor} would skip its events; \
             pull it into a new store (--db)",
            o.edge,
            f.as_deref().unwrap_or("none (it has no events)")
        ))),
        (None, Some(f)) => Store::set_meta(&store.conn, ORIGIN_KEY, &f),
        (None, None) => Ok(()),
    }
}

pub fn pull(store: &mut Store, o: &PullOptions) -> Result<PullReport> {
    check_edge(&o.edge)?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(o.timeout)
        .build();
    let mut cursor: u64 = store
        .meta(CURSOR_KEY)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if cursor > 0 {
        check_origin(store, &agent, o, cursor)?;
    }
    // recorded with the first page of the store's first pull
    let mut has_origin = store.meta(ORIGIN_KEY)?.is_some();
    let mut rep = PullReport::default();
    let bar = if o.progress {
        let b =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        b.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("template"));
        Some(b)
    } else {
        None
    };
    loop {
        let url = format!(
            "{}/export/v1/events?after={cursor}&limit={}",
            o.edge, o.limit
        );
        let page = fetch(&agent, o, &url)?;
        let tx = store
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n;
        let mut last_seq = cursor;
        {
            let mut ins = Inserter::new(&tx, &store.ids)?;
            // the last seq of the page counts when the header is missing
            let (lines, max_seq) =
                insert_ndjson(&mut ins, page.body.as_bytes(), &url, &mut rep.counts)?;
            n = lines;
            last_seq = last_seq.max(max_seq);
            ins.finish()?;
        }
        let next = page.next.unwrap_or(last_seq);
        // the first page of a store's first pull: where its pulls began
        if cursor == 0 && !has_origin {
            if let Ok(Some(f)) = first_line(&page.body) {
                Store::set_meta(&tx, ORIGIN_KEY, &f)?;
                has_origin = true;
            }
        }
        // a cursor that goes backwards, or a page of records that does not
        // move it, is a misbehaving export API: the page is rolled back
        // (dropping `tx`) and the stored cursor stays where it was
        if next < cursor {
            return Err(Error::Upstream(format!(
                "{url}: X-Next-Cursor {next} goes backwards from {cursor}; nothing of this page was imported"
            )));
        }
        if n > 0 && next == cursor {
            return Err(Error::Upstream(format!(
                "{url}: {n} records but X-Next-Cursor stays at {cursor}; nothing of this page was imported"
            )));
        }
        Store::set_meta(&tx, CURSOR_KEY, &next.to_string())?;
        tx.commit()?;
        store.checkpoint_behind();
        rep.pages += 1;
        if let Some(b) = &bar {
            b.set_message(format!(
                "pulled {} events ({} new), cursor {next}",
                rep.counts.new + rep.counts.duplicate,
                rep.counts.new
            ));
            b.tick();
        }
        if n == 0 {
            cursor = next;
            break;
        }
        cursor = next;
    }
    rep.cursor = cursor;
    for what in ["partners", "coupons"] {
        let url = format!("{}/export/v1/{what}", o.edge);
        let page = fetch(&agent, o, &url)?;
        let tx = store
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut ins = Inserter::new(&tx, &store.ids)?;
            insert_ndjson(&mut ins, page.body.as_bytes(), &url, &mut rep.counts)?;
            ins.finish()?;
        }
        tx.commit()?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL that is not http(s) and a host fails at once as a usage error
    /// (a request that failed would be retried and end as an upstream
    /// error), and the store is not touched.
    #[test]
    fn a_bad_edge_url_is_a_usage_error_at_once() {
        for ok in [
            "http://127.0.0.1:8787",
            "https://edge.example.com",
            "http://h/",
        ] {
            assert!(check_edge(ok).is_ok(), "{ok}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        for bad in [
            "localhost:8787",
            "127.0.0.1",
            "ftp://h",
            "http://",
            "https:///x",
            "http://a b",
            "",
        ] {
            let mut o = PullOptions::new(bad, "t");
            o.progress = false;
            match pull(&mut store, &o) {
                Err(Error::Usage(m)) => assert!(m.contains("is not http:// or https://"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(store.meta(CURSOR_KEY).unwrap(), None);
    }
}
