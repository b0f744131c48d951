//! `settlement erase --customer ID`: the edge's erasure rules
//! (`edge::erase`, `DELETE /api/customers/{id}`) applied to the settlement
//! store. The customer's conversions and deals get the same pseudonym the
//! edge gives them and lose their email hash and visitor traces; the clicks
//! they name lose visitor, ASN, datacenter, referrer and country. No amount,
//! no ledger entry, no statement changes: attribution only compares customer
//! ids with each other, and the pseudonym is one stable id for all of them;
//! the self-referral test still sees what it saw: the partner whose id
//! the customer was is kept beside the pseudonym (`erased_self_referrals`),
//! and an email hash that is a partner's own stays on the conversions that
//! carry it, so those stay rejected and no other changes.

use crate::error::{Error, Result};
use crate::events::{
    self, Cols, Edit, E_ASN, E_CLICK_ID, E_COUNTRY, E_CUSTOMER, E_DATACENTER, E_EMAIL_HASH,
    E_HAS_REFERRER, E_KIND, E_PROGRAM, E_VISITOR,
};
use crate::store::{Store, KIND_CLICK, KIND_CONVERSION, KIND_DEAL};
use rusqlite::params;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Erased {
    pub pseudonym: String,
    /// Conversions and deals pseudonymised.
    pub events: usize,
    /// Their clicks scrubbed.
    pub clicks: usize,
    /// True when the customer had been erased before and nothing carried the id.
    pub already: bool,
}

/// The pseudonym: given (as the edge answered it), or computed from the
/// secret the edge uses (`ERASURE_SECRET`, else its `CLICK_SECRET`).
pub fn pseudonym(customer: &str, given: Option<&str>, secret: Option<&str>) -> Result<String> {
    match (given, secret) {
        (Some(p), _) if edge::erase::is_pseudonym(p) => Ok(p.to_string()),
        (Some(p), _) => Err(Error::Usage(format!(
            "--pseudonym {p:?} is not one the edge gives (erased: and 32 hex digits)"
        ))),
        (None, Some(s)) if !s.is_empty() => Ok(edge::erase::pseudonym(s.as_bytes(), customer)),
        _ => Err(Error::Usage(
            "erase needs --pseudonym (as DELETE /api/customers/{id} answered it) or the edge's \
             erasure secret in the environment variable named by --secret-env"
                .into(),
        )),
    }
}

/// Applies the erasure in one transaction and records who and when.
pub fn erase(
    store: &mut Store,
    customer: &str,
    pseudonym: &str,
    actor: &str,
    at: &str,
) -> Result<Erased> {
    if customer.is_empty() || customer.len() > 128 || customer.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "--customer {customer:?} is not a customer id"
        )));
    }
    if edge::erase::is_pseudonym(customer) {
        return Err(Error::Usage(format!("{customer} is already a pseudonym")));
    }
    let tx = store
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // the self-referral test reads the customer id (is it a partner's id?)
    // and each conversion's email hash (is it its partner's?): once the id
    // is a pseudonym and the hashes gone, a run would pay what it rejected.
    // So the partner whose id the customer is, is noted beside the
    // pseudonym, and an email hash that is a partner's own (already in the
    // registry) stays on the conversions that carry it
    let partner_hashes: Hashes = {
        let mut st =
            tx.prepare("SELECT program, email_hash FROM partners WHERE email_hash IS NOT NULL")?;
        let v = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
        v.into_iter()
            .map(|(p, h)| (p.into_bytes(), h.into_bytes()))
            .collect()
    };
    let (clicks, events) = scrub(&tx, customer, pseudonym, &partner_hashes)?;
    tx.execute(
        "INSERT OR IGNORE INTO erased_self_referrals (pseudonym, partner)
         SELECT ?1, id FROM partners WHERE id = ?2",
        params![pseudonym, customer],
    )?;
    if events == 0 {
        let before: Option<String> = tx
            .query_row(
                "SELECT at FROM erasures WHERE pseudonym = ?1 ORDER BY id LIMIT 1",
                params![pseudonym],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        tx.commit()?;
        return match before {
            Some(_) => Ok(Erased {
                pseudonym: pseudonym.to_string(),
                events: 0,
                clicks,
                already: true,
            }),
            None => Err(Error::Data(format!(
                "no conversion or deal in the store names customer {customer:?}"
            ))),
        };
    }
    tx.execute(
        "INSERT INTO erasures (pseudonym, at, actor, events, clicks) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![pseudonym, at, actor, events as i64, clicks as i64],
    )?;
    tx.commit()?;
    Ok(Erased {
        pseudonym: pseudonym.to_string(),
        events,
        clicks,
        already: false,
    })
}

/// `(program, email hash)`: the partners' own.
type Hashes = std::collections::HashSet<(Vec<u8>, Vec<u8>)>;

/// Pseudonymises the customer's conversions and deals and scrubs the clicks
/// they name, rewriting the blocks that hold them: (clicks, events)
/// changed. An email hash of a partner of the conversion's own program
/// stays (the only one the self-referral test compares it with).
fn scrub(
    c: &rusqlite::Connection,
    customer: &str,
    pseudonym: &str,
    partners: &Hashes,
) -> Result<(usize, usize)> {
    let fact = |k: Option<i64>| k == Some(KIND_CONVERSION) || k == Some(KIND_DEAL);
    let mut named = std::collections::HashSet::<Vec<u8>>::new();
    events::scan(
        c,
        Cols::of(&[E_KIND], &[E_CUSTOMER, E_CLICK_ID]),
        "1",
        [],
        |b| {
            for r in 0..b.rows() {
                if fact(b.int(E_KIND, r)) && b.bytes(E_CUSTOMER, r) == Some(customer.as_bytes()) {
                    if let Some(k) = b.bytes(E_CLICK_ID, r) {
                        named.insert(k.to_vec());
                    }
                }
            }
            Ok(())
        },
    )?;
    let traces = [E_ASN, E_DATACENTER, E_HAS_REFERRER].map(|c| (c, None));
    let (mut clicks, mut facts) = (0, 0);
    events::rewrite(
        c,
        Cols::of(
            &[E_KIND],
            &[E_CUSTOMER, E_CLICK_ID, E_EMAIL_HASH, E_PROGRAM],
        ),
        |b, r| {
            let kind = b.int(E_KIND, r);
            if kind == Some(KIND_CLICK) && b.bytes(E_CLICK_ID, r).is_some_and(|k| named.contains(k))
            {
                clicks += 1;
                return Ok(Some(Edit {
                    ints: traces.to_vec(),
                    texts: vec![(E_VISITOR, None), (E_COUNTRY, None)],
                }));
            }
            if fact(kind) && b.bytes(E_CUSTOMER, r) == Some(customer.as_bytes()) {
                facts += 1;
                let program = b.bytes(E_PROGRAM, r).unwrap_or_default().to_vec();
                let hash = b
                    .bytes(E_EMAIL_HASH, r)
                    .filter(|h| partners.contains(&(program.clone(), h.to_vec())))
                    .map(<[u8]>::to_vec);
                return Ok(Some(Edit {
                    ints: traces.to_vec(),
                    texts: vec![
                        (E_CUSTOMER, Some(pseudonym.as_bytes().to_vec())),
                        (E_EMAIL_HASH, hash),
                        (E_VISITOR, None),
                    ],
                }));
            }
            Ok(None)
        },
    )?;
    Ok((clicks, facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{import_file, ImportOptions};

    fn store_with(lines: &str) -> (tempdir::Dir, Store) {
        let dir = tempdir::Dir::new();
        let mut s = Store::open(&dir.path.join("s.db")).unwrap();
        let file = dir.path.join("t.ndjson");
        std::fs::write(&file, lines).unwrap();
        let o = ImportOptions {
            skip_invalid: false,
            rejects: None,
            progress: false,
        };
        import_file(&mut s, &file, &o).unwrap();
        (dir, s)
    }

    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Dir {
                let path = std::env::temp_dir().join(format!(
                    "settlement-erase-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[test]
    fn erases_personal_fields_and_keeps_amounts() {
        let (_d, mut s) = store_with(concat!(
            r#"{"seq":1,"id":"ev_c1","type":"click","ts":"2026-11-01T00:00:00Z","program":"p","partner":"a","click_id":"c1","visitor":"v1","country":"DE"}"#,
            "\n",
            r#"{"seq":2,"id":"ev_2","type":"conversion","ts":"2026-11-02T00:00:00Z","program":"p","partner":"a","click_id":"c1","click_ts":"2026-11-01T00:00:00Z","event":"sale","txn_id":"T1","amount":"10.00","currency":"USD","customer":"cust-9","email_hash":"eh","country":"DE"}"#,
            "\n",
            r#"{"seq":3,"id":"ev_3","type":"conversion","ts":"2026-11-03T00:00:00Z","program":"p","event":"sale","txn_id":"T2","amount":"5.00","currency":"USD","customer":"other"}"#,
            "\n",
        ));
        let p = pseudonym("cust-9", None, Some("k")).unwrap();
        let e = erase(&mut s, "cust-9", &p, "ops", "2026-11-25T00:00:00Z").unwrap();
        assert_eq!((e.events, e.clicks, e.already), (1, 1, false));
        let text = |id: &str, c: usize| {
            let (b, r) = events::find(&s.conn, id).unwrap().unwrap();
            b.text(c, r).unwrap().map(str::to_string)
        };
        let int = |id: &str, c: usize| {
            let (b, r) = events::find(&s.conn, id).unwrap().unwrap();
            b.int(c, r)
        };
        use crate::events::{E_AMOUNT, E_CUSTOMER as CU};
        assert_eq!(
            (
                text("ev_2", CU),
                text("ev_2", E_EMAIL_HASH),
                text("ev_2", E_AMOUNT),
                text("ev_2", E_COUNTRY)
            ),
            (
                Some(p.clone()),
                None,
                Some("10.00".into()),
                Some("DE".into())
            )
        );
        assert_eq!(
            (text("ev_c1", E_VISITOR), text("ev_c1", E_COUNTRY)),
            (None, None)
        );
        assert_eq!(text("ev_c1", E_CLICK_ID).as_deref(), Some("c1"));
        assert_eq!(int("ev_c1", events::E_TS), Some(1_793_491_200_000));
        assert_eq!(text("ev_3", CU).as_deref(), Some("other"));
        // Again: nothing left to change, answered as done.
        let again = erase(&mut s, "cust-9", &p, "ops", "2026-11-26T00:00:00Z").unwrap();
        assert!(again.already);
        assert!(matches!(
            erase(
                &mut s,
                "nobody",
                &pseudonym("nobody", None, Some("k")).unwrap(),
                "ops",
                "x"
            ),
            Err(Error::Data(_))
        ));
        assert!(pseudonym("c", None, None).is_err());
        assert!(pseudonym("c", Some("erased:zz"), None).is_err());
        assert_eq!(pseudonym("c", Some(&p), None).unwrap(), p);
    }
}
