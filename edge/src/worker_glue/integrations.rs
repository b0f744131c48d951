//! `POST /integrations/stripe/{program}` and `POST /integrations/shopify/{program}`:
//! verify the provider's signature over the raw body, answer a redelivered
//! event with its first answer, map the event (`stripe.rs`, `shopify.rs`)
//! and record it through the conversions' one path (`convert::record`).
//!
//! Answers: 400 for a bad signature (nothing stored), 200 for everything a
//! provider should not retry: `recorded`, `duplicate`, `conflict` (the same
//! sale reported differently, e.g. by a checkout and by its invoice; the
//! first report stands), `ignored` and `rejected` (a used event we cannot
//! record; kept in the rejections log).

use super::convert::{self, Outcome};
use super::store::{self, Row, S};
use super::{body_limited, error, header, json, now_ms, respond, Config};
use crate::admin::Program;
use crate::auth::SignatureError;
use crate::fields::FieldError;
use crate::hash;
use crate::integration::{text, Conversion, Mapped, MAX_BODY};
use crate::record::Source;
use crate::time::Timestamp;
use crate::{shopify, stripe};
use serde_json::{json as j, Value};
use std::rc::Rc;
use worker::*;

fn source_name(source: Source) -> &'static str {
    match source {
        Source::Shopify => "shopify",
        _ => "stripe",
    }
}

/// A request the provider's signature does not authenticate: 401 (SPEC's
/// answer to bad credentials; Shopify's app review expects it), nothing
/// recorded.
fn bad_signature(e: SignatureError) -> Result<Response> {
    error(
        401,
        match e {
            SignatureError::Malformed => "missing or malformed signature",
            SignatureError::Expired => "signature timestamp outside the 300 s tolerance",
            SignatureError::Mismatch => "signature does not verify",
        },
    )
}

/// The program and the raw body, or the answer that ends the request.
async fn open(
    req: &mut Request,
    env: &Env,
    program: &str,
) -> Result<std::result::Result<(Rc<Program>, Vec<u8>), Response>> {
    let program = match crate::ids::is_valid_id(program) {
        true => store::program(env, program).await?,
        false => None,
    };
    // an unknown program answers as a known one whose secrets the
    // signature does not match: nobody learns which programs exist
    let Some(program) = program else {
        return Ok(Err(unverifiable(req)?));
    };
    match body_limited(req, MAX_BODY).await? {
        Some(body) => Ok(Ok((program, body))),
        None => Ok(Err(error(413, "body over 256 KiB")?)),
    }
}

/// The answer to a request no secret can verify (an unknown program, or
/// one without the provider's secrets): what a wrong signature gets.
fn unverifiable(req: &Request) -> Result<Response> {
    let signed = header(req, stripe::SIGNATURE_HEADER)
        .or_else(|| header(req, shopify::SIGNATURE_HEADER))
        .is_some_and(|s| !s.is_empty());
    bad_signature(if signed {
        SignatureError::Mismatch
    } else {
        SignatureError::Malformed
    })
}

pub async fn stripe(mut req: Request, env: &Env, cfg: &Config, program: &str) -> Result<Response> {
    let (program, body) = ok_or_return!(open(&mut req, env, program).await);
    // no secret to verify with: answered as a wrong signature (the
    // operator sets `stripe_secrets` on the program)
    if program.stripe_secrets.is_empty() {
        return unverifiable(&req);
    }
    let sig = header(&req, stripe::SIGNATURE_HEADER).unwrap_or_default();
    if let Err(e) = stripe::verify(&sig, &body, &program.stripe_secrets, now_ms() / 1000) {
        return bad_signature(e);
    }
    let event: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error(400, "not a JSON event"),
    };
    let Some(event_id) = text(&event, &["id"]) else {
        return error(400, "event without an id");
    };
    let kind = text(&event, &["type"]).unwrap_or_default();
    let mapped = stripe::map(&event);
    handle(
        env,
        cfg,
        &req,
        &program,
        Source::Stripe,
        Some(&event_id),
        &kind,
        &body,
        mapped,
    )
    .await
}

pub async fn shopify(mut req: Request, env: &Env, cfg: &Config, program: &str) -> Result<Response> {
    let (program, body) = ok_or_return!(open(&mut req, env, program).await);
    if program.shopify_secrets.is_empty() {
        return unverifiable(&req);
    }
    let sig = header(&req, shopify::SIGNATURE_HEADER).unwrap_or_default();
    if let Err(e) = shopify::verify(&sig, &body, &program.shopify_secrets) {
        return bad_signature(e);
    }
    let order: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error(400, "not a JSON object"),
    };
    let topic = header(&req, shopify::TOPIC_HEADER).unwrap_or_default();
    let webhook_id = header(&req, shopify::WEBHOOK_ID_HEADER).filter(|w| !w.is_empty());
    // a test order (the Bogus gateway, payments test mode, a development
    // store) comes to a live shop's webhook too: never billable, unless
    // the program is for tests (review22 F9)
    let mapped = if order.get("test").and_then(Value::as_bool) == Some(true)
        && !program.shopify_test_orders
    {
        Ok(crate::integration::Mapped::Ignored(
            "a test order (\"test\": true): never billable (a program with \"shopify_test_orders\": true records them)",
        ))
    } else {
        shopify::map(&topic, &order)
    };
    handle(
        env,
        cfg,
        &req,
        &program,
        Source::Shopify,
        webhook_id.as_deref(),
        &topic,
        &body,
        mapped,
    )
    .await
}

/// The answer stored for a provider event, if it was handled before.
async fn stored(env: &Env, source: &str, program: &str, event_id: &str) -> Result<Option<String>> {
    let r = store::row(store::q(
        env,
        "SELECT answer FROM integration_events WHERE source = ?1 AND program = ?2 AND event_id = ?3",
        &[S(source), S(program), S(event_id)],
    )?)
    .await?;
    Ok(r.map(|r| store::txt(&r, "answer").to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    env: &Env,
    cfg: &Config,
    req: &Request,
    program: &Program,
    source: Source,
    event_id: Option<&str>,
    kind: &str,
    body: &[u8],
    mapped: std::result::Result<Mapped, FieldError>,
) -> Result<Response> {
    let src = source_name(source);
    if let Some(id) = event_id {
        if let Some(answer) = stored(env, src, &program.id, id).await? {
            return respond(200, "application/json", answer.into_bytes());
        }
    }
    let raw = String::from_utf8_lossy(body);
    let answer = match mapped {
        Ok(Mapped::Ignored(why)) => j!({"status": "ignored", "reason": why}),
        Ok(Mapped::Conversion(c)) => {
            convert_one(env, cfg, req, program, source, &c, event_id, &raw).await?
        }
        Ok(Mapped::Refs { txn, refs }) => {
            link_refs(env, program, &txn, &refs).await?;
            j!({"status": "linked", "txn_id": txn, "refs": refs})
        }
        Err(e) => rejected(env, src, program, &e, &raw).await?,
    };
    let text = answer.to_string();
    if let Some(id) = event_id {
        let inserted = store::changes(store::q(
            env,
            "INSERT INTO integration_events (source, program, event_id, type, answer, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            &[
                S(src),
                S(&program.id),
                S(id),
                S(kind),
                S(&text),
                S(&Timestamp(now_ms()).to_string()),
            ],
        )?)
        .await?;
        // A concurrent delivery of the same event answered first: its answer.
        if inserted == 0 {
            if let Some(first) = stored(env, src, &program.id, id).await? {
                return respond(200, "application/json", first.into_bytes());
            }
        }
    }
    json(200, &answer)
}

async fn rejected(
    env: &Env,
    src: &str,
    program: &Program,
    e: &FieldError,
    raw: &str,
) -> Result<Value> {
    store::log_rejection(env, src, Some(&program.id), &e.field, &e.reason, raw).await?;
    Ok(j!({"status": "rejected", "error": e}))
}

/// Records other ids (`refs`) of the payment of the sale `txn`: a refund or
/// dispute naming one reverses the sale. The first link of an id stands.
async fn link_refs(env: &Env, program: &Program, txn: &str, refs: &[String]) -> Result<()> {
    if refs.is_empty() {
        return Ok(());
    }
    let stmts = refs
        .iter()
        .map(|a| {
            store::q(
                env,
                "INSERT INTO integration_refs (program, ref, txn_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                &[S(&program.id), S(a), S(txn)],
            )
        })
        .collect::<Result<Vec<_>>>()?;
    store::db(env)?.batch(stmts).await?;
    Ok(())
}

/// The original a failed refund's reinstatement names when
/// `charge.refunded` recorded the refund without its own id
/// (`<charge>:refund:<total>`, the refunds not listed in the payload): the
/// one an earlier report of the same failure named (Stripe tells one
/// failure by several events), else the newest of that charge's refunds of
/// the same amount no reinstatement names yet. `None` when the refund is
/// recorded under its own id, or none is left.
async fn refund_under_charge(
    env: &Env,
    program: &Program,
    c: &Conversion,
) -> Result<Option<String>> {
    let (Some("reinstate"), Some(txn), Some(charge), Some(refund), Some(amount)) = (
        c.get("event"),
        c.get("txn_id"),
        c.refund_of_charge.as_deref(),
        c.originals.first(),
        c.get("amount")
            .and_then(|a| a.parse::<rust_decimal::Decimal>().ok()),
    ) else {
        return Ok(None);
    };
    let told = store::row(store::q(
        env,
        "SELECT json_extract(record, '$.original_txn_id') AS o FROM events WHERE dedupe_key = ?1",
        &[S(&format!("{}|reinstate|{txn}", program.id))],
    )?)
    .await?;
    if let Some(o) = told.as_ref().and_then(|r| store::otxt(r, "o")) {
        return Ok(Some(o.to_string()));
    }
    let head = format!("{}|refund|", program.id);
    // the keys after the prefix: it ends in ':', and ';' follows it
    let rows: Vec<Row> = store::rows(store::q(
        env,
        "SELECT dedupe_key AS k, json_extract(record, '$.amount') AS amount FROM events
         WHERE dedupe_key = ?1 OR (dedupe_key >= ?2 AND dedupe_key < ?3) ORDER BY seq DESC",
        &[
            S(&format!("{head}{refund}")),
            S(&format!("{head}{charge}:refund:")),
            S(&format!("{head}{charge}:refund;")),
        ],
    )?)
    .await?;
    let mut found: Vec<&str> = Vec::new();
    for r in &rows {
        let Some(t) = store::txt(r, "k").strip_prefix(head.as_str()) else {
            continue;
        };
        if t == refund {
            return Ok(None);
        }
        if store::txt(r, "amount")
            .parse::<rust_decimal::Decimal>()
            .ok()
            == Some(amount)
        {
            found.push(t);
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    let taken = reinstated(env, program, &found).await?;
    Ok(found
        .into_iter()
        .find(|t| !taken.iter().any(|o| o == t))
        .map(str::to_string))
}

/// Which of `txns` (refunds, chargebacks) the program's reinstatements name
/// as their original: a range of the unique key, `program|reinstate|...`.
async fn reinstated(env: &Env, program: &Program, txns: &[&str]) -> Result<Vec<String>> {
    let rows: Vec<Row> = store::rows(store::q(
        env,
        "SELECT json_extract(record, '$.original_txn_id') AS o FROM events
         WHERE dedupe_key >= ?1 AND dedupe_key < ?2
           AND json_extract(record, '$.original_txn_id') IN (SELECT value FROM json_each(?3))",
        &[
            S(&format!("{}|reinstate|", program.id)),
            S(&format!("{}|reinstate}}", program.id)),
            S(&serde_json::to_string(txns)?),
        ],
    )?)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| store::otxt(r, "o").map(str::to_string))
        .collect())
}

/// A refund `charge.refunded` recorded under `<charge>:refund:<total>`
/// whose key a failed refund of the same total holds (Stripe lowers
/// `amount_refunded` when a refund fails, so the next refund reaches the
/// same total): that key with the Stripe event id, so the new refund is
/// recorded and not answered as the failed one's duplicate.
async fn refund_key_after_failure(
    env: &Env,
    program: &Program,
    c: &Conversion,
    event_id: Option<&str>,
) -> Result<Option<String>> {
    let (Some("refund"), Some(txn), Some(_), Some(event_id)) = (
        c.get("event"),
        c.get("txn_id"),
        c.refund_of_charge.as_deref(),
        event_id,
    ) else {
        return Ok(None);
    };
    let failed = reinstated(env, program, &[txn]).await?;
    Ok((!failed.is_empty()).then(|| format!("{txn}:{event_id}")))
}

#[allow(clippy::too_many_arguments)]
async fn convert_one(
    env: &Env,
    cfg: &Config,
    req: &Request,
    program: &Program,
    source: Source,
    c: &Conversion,
    event_id: Option<&str>,
    raw: &str,
) -> Result<Value> {
    let src = source_name(source);
    // a failed refund recorded under its charge: that record is
    // reinstated; a refund after a failed one of the same total: a key of
    // its own
    let under_charge;
    let c = match (
        refund_under_charge(env, program, c).await?,
        refund_key_after_failure(env, program, c, event_id).await?,
    ) {
        (Some(original), _) => {
            under_charge = Conversion {
                fields: c.fields.clone(),
                originals: vec![original],
                ..Conversion::default()
            };
            &under_charge
        }
        (None, Some(txn)) => {
            let mut fields = c.fields.clone();
            for (k, v) in &mut fields {
                if k == "txn_id" {
                    *v = txn.clone();
                }
            }
            under_charge = Conversion {
                fields,
                originals: c.originals.clone(),
                ..Conversion::default()
            };
            &under_charge
        }
        (None, None) => c,
    };
    // A refund or dispute may name the payment intent or charge of a sale
    // recorded under its invoice id.
    let mut original = None;
    if !c.originals.is_empty() {
        let rows: Vec<Row> = store::rows(store::q(
            env,
            "SELECT ref, txn_id FROM integration_refs
             WHERE program = ?1 AND ref IN (SELECT value FROM json_each(?2))",
            &[S(&program.id), S(&serde_json::to_string(&c.originals)?)],
        )?)
        .await?;
        original = c.originals.iter().find_map(|o| {
            rows.iter()
                .find(|r| store::txt(r, "ref") == o)
                .map(|r| store::txt(r, "txn_id").to_string())
        });
    }
    let salt = &cfg.email_salt;
    let now = super::event_now(req, cfg);
    let mut pb = match c.postback(program, original, |e| hash::email(salt, e), now) {
        Ok(pb) => pb,
        Err(e) => return rejected(env, src, program, &e, raw).await,
    };
    let ev = convert::evidence_or_none(env, cfg, program, &mut pb, src, raw).await?;
    let outcome = convert::record(env, cfg, req, &pb, ev, source).await?;
    link_refs(env, program, &pb.txn_id, &c.aliases).await?;
    if let Outcome::Conflict(_) = outcome {
        console_warn!(
            "{src} event for {} conflicts with the recorded {}",
            program.id,
            pb.dedupe_key()
        );
    }
    Ok(outcome.answer().0)
}
