//! The partner layer's pure rules (SPEC section 3, "Partner program API"):
//! applications, status changes and their audit, compliance and licence
//! expiry, partner API keys, the CRM fields and list filters, co-marketing
//! assets and tiers, and partner statistics ranges. The worker glue only
//! stores and loads what these functions decide.

use crate::admin::{short_text, valid_email, PartnerStatus};
use crate::dest::parse_http_url;
use crate::fields::{FieldError, Fields, Obj};
use crate::ids::is_valid_id;
use crate::record::StatusChange;
use crate::time::Timestamp;
use sha2::{Digest, Sha256};

pub const ID_REASON: &str = "must match [A-Za-z0-9_-]{1,64}";

/// A required id field.
pub fn id_field<'a>(o: &'a Obj, k: &str) -> Result<&'a str, FieldError> {
    let v = o.req_str(k)?;
    if is_valid_id(v) {
        Ok(v)
    } else {
        Err(FieldError::new(k, ID_REASON))
    }
}

/// An optional id field.
pub fn opt_id(o: &Obj, k: &str) -> Result<Option<String>, FieldError> {
    match o.str(k)? {
        None | Some("") => Ok(None),
        Some(v) if is_valid_id(v) => Ok(Some(v.to_string())),
        Some(_) => Err(FieldError::new(k, ID_REASON)),
    }
}

/// A required short text (no control characters).
pub fn req_text(o: &Obj, k: &str, max: usize) -> Result<String, FieldError> {
    short_text(o, k, max)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| FieldError::new(k, "required"))
}

/// An optional http(s) URL.
pub fn opt_url(o: &Obj, k: &str) -> Result<Option<String>, FieldError> {
    match o.str(k)? {
        None | Some("") => Ok(None),
        Some(u) => parse_http_url(u)
            .map(|_| Some(u.to_string()))
            .map_err(|e| FieldError::new(k, e.reason())),
    }
}

/// A date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 instant.
pub fn parse_when(s: &str) -> Option<Timestamp> {
    Timestamp::parse_date(s)
        .or_else(|_| Timestamp::parse(s))
        .ok()
}

fn when_field(o: &Obj, k: &str) -> Result<Timestamp, FieldError> {
    parse_when(o.req_str(k)?)
        .ok_or_else(|| FieldError::new(k, "a YYYY-MM-DD date or an RFC 3339 time"))
}

/// Does a partner-route body name another partner (`"partner": "..."`)? Such
/// a request is answered 404, as if that partner did not exist.
pub fn names_other_partner(body: &[u8], me: &str) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v
            .get("partner")
            // anything but the caller's own id, a number or a list too
            // (review26 L4)
            .is_some_and(|p| p.as_str() != Some(me)),
        Err(_) => false,
    }
}

/// `POST /partner/v1/apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    pub program: String,
    pub name: String,
    pub email: String,
    pub company: Option<String>,
    pub website: Option<String>,
}

/// What an applicant is told for any program that cannot be applied to:
/// the same words whether it exists or not.
pub fn unknown_program() -> FieldError {
    FieldError::new("program", "unknown program")
}

impl Application {
    pub fn parse(body: &[u8]) -> Result<Application, FieldError> {
        let o = Obj::parse(body, &["program", "name", "email", "company", "website"])?;
        let program = o.req_str("program")?;
        if !is_valid_id(program) {
            return Err(unknown_program());
        }
        let email = o.req_str("email")?;
        if !valid_email(email) {
            return Err(FieldError::new("email", "not an email address"));
        }
        Ok(Application {
            program: program.to_string(),
            name: req_text(&o, "name", 200)?,
            email: email.to_string(),
            company: short_text(&o, "company", 200)?,
            website: opt_url(&o, "website")?,
        })
    }
}

/// `POST /api/partners/{id}/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusInput {
    pub status: PartnerStatus,
    pub reason: Option<String>,
    pub actor: String,
}

/// Who made a change: an operator may sign with a name.
pub fn actor(o: &Obj) -> Result<String, FieldError> {
    Ok(short_text(o, "actor", 100)?
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "operator".to_string()))
}

impl StatusInput {
    pub fn parse(body: &[u8]) -> Result<StatusInput, FieldError> {
        let o = Obj::parse(body, &["status", "reason", "actor"])?;
        let status = match PartnerStatus::parse(o.req_str("status")?) {
            Some(s) if s != PartnerStatus::Applied => s,
            _ => {
                return Err(FieldError::new(
                    "status",
                    "one of approved, rejected, suspended",
                ))
            }
        };
        let reason = short_text(&o, "reason", 500)?.filter(|r| !r.trim().is_empty());
        if reason.is_none() && status != PartnerStatus::Approved {
            return Err(FieldError::new(
                "reason",
                "required to reject or suspend a partner",
            ));
        }
        Ok(StatusInput {
            status,
            reason,
            actor: actor(&o)?,
        })
    }
}

/// `PUT /api/partners/{id}/compliance`: every field is required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compliance {
    pub license_number: String,
    pub regulator: String,
    pub jurisdiction: String,
    pub license_expires: Timestamp,
    pub kyc_checked_at: Timestamp,
    pub dsa_version: String,
    pub dsa_accepted_at: Timestamp,
}

impl Compliance {
    pub fn parse(body: &[u8]) -> Result<Compliance, FieldError> {
        let o = Obj::parse(
            body,
            &[
                "license_number",
                "regulator",
                "jurisdiction",
                "license_expires",
                "kyc_checked_at",
                "dsa_version",
                "dsa_accepted_at",
            ],
        )?;
        Ok(Compliance {
            license_number: req_text(&o, "license_number", 100)?,
            regulator: req_text(&o, "regulator", 200)?,
            jurisdiction: req_text(&o, "jurisdiction", 100)?,
            license_expires: when_field(&o, "license_expires")?,
            kyc_checked_at: when_field(&o, "kyc_checked_at")?,
            dsa_version: req_text(&o, "dsa_version", 50)?,
            dsa_accepted_at: when_field(&o, "dsa_accepted_at")?,
        })
    }
}

/// Why a partner may not be approved in a regulated program, if it may not.
pub fn approval_blocked(
    regulated: bool,
    license_expires: Option<Timestamp>,
    now_ms: i64,
) -> Option<&'static str> {
    if !regulated {
        return None;
    }
    match license_expires {
        None => Some("compliance data required before approval in a regulated program"),
        Some(t) if t.ms() <= now_ms => Some("the partner's licence has expired"),
        Some(_) => None,
    }
}

pub const LICENSE_EXPIRED: &str = "license_expired";

/// A partner's status as exported and enforced: the stored status, unless
/// the licence has expired, which suspends the partner from its expiry on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    pub status: PartnerStatus,
    pub reason: Option<String>,
    pub history: Vec<StatusChange>,
}

/// Applies licence expiry to a partner's history: a `suspended` change with
/// reason `license_expired` at the expiry instant; later changes that would
/// let the partner earn again (`approved`, `applied`) cannot take effect while
/// the licence stays expired and are left out. Rejections and suspensions
/// after the expiry stay. A partner whose history starts after the expiry
/// (an applicant given an expired licence) keeps its first change, and is
/// suspended from it: a history never starts before the partner existed.
pub fn effective(
    status: PartnerStatus,
    history: &[StatusChange],
    license_expires: Option<Timestamp>,
    now_ms: i64,
) -> Effective {
    let last_reason = history.last().and_then(|h| h.reason.clone());
    let Some(exp) = license_expires.filter(|e| e.ms() <= now_ms) else {
        return Effective {
            status,
            reason: last_reason,
            history: history.to_vec(),
        };
    };
    // the lapse takes effect at the expiry, or at the partner's first
    // change if it came later
    let lapse = history.first().map_or(exp, |h| h.at.max(exp));
    let kept = |i: usize, h: &StatusChange| h.at < lapse || i == 0;
    let mut out: Vec<StatusChange> = history
        .iter()
        .enumerate()
        .filter(|&(i, h)| kept(i, h))
        .map(|(_, h)| h.clone())
        .collect();
    // Already out of business before the expiry: nothing to add.
    let before = out.last().map(|h| h.status.as_str());
    if !matches!(before, Some("rejected" | "suspended")) {
        out.push(StatusChange {
            status: "suspended".into(),
            at: lapse,
            reason: Some(LICENSE_EXPIRED.into()),
        });
    }
    out.extend(
        history
            .iter()
            .enumerate()
            .filter(|&(i, h)| !kept(i, h) && matches!(h.status.as_str(), "rejected" | "suspended"))
            .map(|(_, h)| h.clone()),
    );
    let (status, reason) = match out.last() {
        Some(h) if h.status == "rejected" => (PartnerStatus::Rejected, h.reason.clone()),
        Some(h) => (PartnerStatus::Suspended, h.reason.clone()),
        None => (PartnerStatus::Suspended, Some(LICENSE_EXPIRED.into())),
    };
    Effective {
        status,
        reason,
        history: out,
    }
}

/// May a partner of this (effective) status use its key at all?
pub fn key_allowed(status: PartnerStatus) -> bool {
    matches!(status, PartnerStatus::Applied | PartnerStatus::Approved)
}

// ---- API keys -------------------------------------------------------------

pub const KEY_PREFIX: &str = "pk_";

/// A new key from 24 random bytes: `pk_` and 32 URL-safe characters.
pub fn key_from_bytes(random: &[u8; 24]) -> String {
    crate::clickid::encode_random(KEY_PREFIX, random)
}

/// What is stored of a key: its SHA-256, hex.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A bearer token shaped like a partner key (cheap check before a lookup).
pub fn looks_like_key(token: &str) -> bool {
    token.len() == 35
        && token.starts_with(KEY_PREFIX)
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---- CRM --------------------------------------------------------------------

/// `PUT /api/partners/{id}/crm`: the relationship fields, replaced as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crm {
    pub manager: Option<String>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub company: Option<String>,
    pub website: Option<String>,
}

pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Crm {
    pub fn parse(body: &[u8]) -> Result<Crm, FieldError> {
        let o = Obj::parse(body, &["manager", "tags", "notes", "company", "website"])?;
        let mut tags = o.str_list("tags", 20)?;
        if let Some(t) = tags.iter().find(|t| !valid_tag(t)) {
            return Err(FieldError::new(
                "tags",
                format!("{t:?}: lower-case [a-z0-9_-]{{1,32}}"),
            ));
        }
        tags.sort();
        tags.dedup();
        let notes = match o.str("notes")? {
            Some(n) if n.chars().count() > 5000 => {
                return Err(FieldError::new("notes", "at most 5000 characters"))
            }
            Some(n) if n.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
                return Err(FieldError::new(
                    "notes",
                    "control characters are not allowed",
                ))
            }
            n => n.filter(|n| !n.is_empty()).map(str::to_string),
        };
        Ok(Crm {
            manager: short_text(&o, "manager", 100)?.filter(|m| !m.is_empty()),
            tags,
            notes,
            company: short_text(&o, "company", 200)?.filter(|c| !c.is_empty()),
            website: opt_url(&o, "website")?,
        })
    }
}

/// `GET /api/partners?q=&tag=&status=&program=&tier=&manager=&limit=&offset=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub q: Option<String>,
    pub tag: Option<String>,
    pub status: Option<PartnerStatus>,
    pub program: Option<String>,
    pub tier: Option<String>,
    pub manager: Option<String>,
    /// At most 10,000; the JSON list defaults to 200, the CSV to all.
    pub limit: Option<u32>,
    pub offset: u32,
}

fn num_param(f: &Fields, k: &str, min: u32, max: u32) -> Result<Option<u32>, FieldError> {
    f.opt(k)
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| FieldError::new(k, format!("an integer from {min} to {max}")))
        })
        .transpose()
}

impl ListQuery {
    pub fn parse(query: &str) -> Result<ListQuery, FieldError> {
        let f = Fields::from_query(query)?;
        let q = f.opt("q").map(str::to_string);
        if q.as_ref()
            .is_some_and(|q| q.len() > 200 || q.chars().any(char::is_control))
        {
            return Err(FieldError::new("q", "at most 200 characters"));
        }
        let status = match f.opt("status") {
            None => None,
            Some(s) => Some(PartnerStatus::parse(s).ok_or_else(|| {
                FieldError::new("status", "one of applied, approved, suspended, rejected")
            })?),
        };
        let tag = f.opt("tag").map(str::to_string);
        if tag.as_deref().is_some_and(|t| !valid_tag(t)) {
            return Err(FieldError::new("tag", "lower-case [a-z0-9_-]{1,32}"));
        }
        let mut ids = [None, None];
        for (i, k) in ["program", "tier"].iter().enumerate() {
            if let Some(v) = f.opt(k) {
                if !is_valid_id(v) {
                    return Err(FieldError::new(*k, ID_REASON));
                }
                ids[i] = Some(v.to_string());
            }
        }
        let [program, tier] = ids;
        let manager = f.opt("manager").map(str::to_string);
        if manager.as_ref().is_some_and(|m| m.len() > 100) {
            return Err(FieldError::new("manager", "at most 100 characters"));
        }
        Ok(ListQuery {
            q,
            tag,
            status,
            program,
            tier,
            manager,
            limit: num_param(&f, "limit", 1, 10_000)?,
            offset: num_param(&f, "offset", 0, 1_000_000)?.unwrap_or(0),
        })
    }
}

/// One CSV field: quoted when needed, and a leading `= + - @` (a formula in
/// a spreadsheet) defused with an apostrophe.
pub fn csv_field(out: &mut String, v: &str) {
    let defuse = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if defuse || v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if defuse {
            out.push('\'');
        }
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// One CSV line from fields.
pub fn csv_line(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push('\n');
}

// ---- Tiers and assets ------------------------------------------------------

/// The rank of a tier in a program's list (lowest first).
pub fn tier_rank(tiers: &[String], tier: Option<&str>) -> Option<usize> {
    tier.and_then(|t| tiers.iter().position(|x| x == t))
}

/// May a partner of `tier` see something meant for `min_tier` and above?
pub fn tier_allows(tiers: &[String], tier: Option<&str>, min_tier: Option<&str>) -> bool {
    match min_tier {
        None => true,
        Some(min) => match (tier_rank(tiers, tier), tier_rank(tiers, Some(min))) {
            (Some(have), Some(need)) => have >= need,
            _ => tier.is_some() && tier == Some(min),
        },
    }
}

/// `PUT /api/assets/{id}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    pub id: String,
    pub program: String,
    pub title: String,
    pub kind: String,
    pub url: String,
    pub min_tier: Option<String>,
}

impl Asset {
    pub fn parse(id: &str, body: &[u8]) -> Result<Asset, FieldError> {
        if !is_valid_id(id) {
            return Err(FieldError::new("id", ID_REASON));
        }
        let o = Obj::parse(body, &["program", "title", "kind", "url", "min_tier"])?;
        let kind = o.req_str("kind")?;
        if !valid_tag(kind) {
            return Err(FieldError::new(
                "kind",
                "lower-case [a-z0-9_-]{1,32}, e.g. banner, logo, pdf, email, landing",
            ));
        }
        let url = o.req_str("url")?;
        parse_http_url(url).map_err(|e| FieldError::new("url", e.reason()))?;
        Ok(Asset {
            id: id.to_string(),
            program: id_field(&o, "program")?.to_string(),
            title: req_text(&o, "title", 200)?,
            kind: kind.to_string(),
            url: url.to_string(),
            min_tier: opt_id(&o, "min_tier")?,
        })
    }
}

// ---- Partner statistics --------------------------------------------------

pub const MAX_STATS_DAYS: i64 = 366;
const DAY_MS: i64 = 86_400_000;

/// `from`/`to` of `GET /partner/v1/stats`: inclusive UTC days, at most 366.
/// Defaults: the 30 days up to today.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayRange {
    /// Days since the epoch.
    pub from: i64,
    pub to: i64,
}

impl DayRange {
    pub fn parse(query: &str, now_ms: i64) -> Result<DayRange, FieldError> {
        let f = Fields::from_query(query)?;
        let day = |k: &str| -> Result<Option<i64>, FieldError> {
            f.opt(k)
                .map(|v| {
                    Timestamp::parse_date(v)
                        .map(Timestamp::day)
                        .map_err(|_| FieldError::new(k, "a YYYY-MM-DD date"))
                })
                .transpose()
        };
        let to = day("to")?.unwrap_or(now_ms.div_euclid(DAY_MS));
        let from = day("from")?.unwrap_or(to - 29);
        if from > to {
            return Err(FieldError::new("from", "must not be after to"));
        }
        if to - from + 1 > MAX_STATS_DAYS {
            return Err(FieldError::new("to", "at most 366 days"));
        }
        Ok(DayRange { from, to })
    }

    pub fn start_ms(self) -> i64 {
        self.from * DAY_MS
    }

    pub fn end_ms(self) -> i64 {
        (self.to + 1) * DAY_MS
    }
}

/// Counts of one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub clicks: u64,
    pub unique_clicks: u64,
    pub conversions: u64,
}

/// Every day of the range, zeros included, with the totals.
pub fn stats_json(range: DayRange, rows: &[(i64, DayCounts)]) -> serde_json::Value {
    let mut days = Vec::new();
    let mut total = DayCounts::default();
    for d in range.from..=range.to {
        let c = rows
            .iter()
            .filter(|(day, _)| *day == d)
            .fold(DayCounts::default(), |a, (_, c)| DayCounts {
                clicks: a.clicks + c.clicks,
                unique_clicks: a.unique_clicks + c.unique_clicks,
                conversions: a.conversions + c.conversions,
            });
        total.clicks += c.clicks;
        total.unique_clicks += c.unique_clicks;
        total.conversions += c.conversions;
        days.push(serde_json::json!({
            "date": Timestamp(d * DAY_MS).date_string(),
            "clicks": c.clicks, "unique_clicks": c.unique_clicks, "conversions": c.conversions,
        }));
    }
    serde_json::json!({
        "from": Timestamp(range.start_ms()).date_string(),
        "to": Timestamp(range.to * DAY_MS).date_string(),
        "days": days,
        "totals": {"clicks": total.clicks, "unique_clicks": total.unique_clicks, "conversions": total.conversions},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(status: &str, at: i64, reason: Option<&str>) -> StatusChange {
        StatusChange {
            status: status.into(),
            at: Timestamp(at),
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn applications() {
        let a = Application::parse(
            br#"{"program":"fx","name":"Ann","email":"ann@example.com","company":"Ann Ltd","website":"https://ann.example"}"#,
        )
        .unwrap();
        assert_eq!(a.program, "fx");
        assert_eq!(a.website.as_deref(), Some("https://ann.example"));
        let cases: &[(&[u8], &str)] = &[
            (br#"{"program":"fx","name":"A","email":"x"}"#, "email"),
            (br#"{"program":"fx","email":"a@b.co"}"#, "name"),
            (
                br#"{"program":"f x","name":"A","email":"a@b.co"}"#,
                "program",
            ),
            (
                br#"{"program":"fx","name":"A","email":"a@b.co","website":"javascript:alert(1)"}"#,
                "website",
            ),
            (
                br#"{"program":"fx","name":"A\u0000","email":"a@b.co"}"#,
                "name",
            ),
            (
                br#"{"program":"fx","name":"A","email":"a@b.co","x":1}"#,
                "x",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(&Application::parse(body).unwrap_err().field, field);
        }
        // An unknown and a malformed program read the same.
        assert_eq!(
            Application::parse(br#"{"program":"<b>","name":"A","email":"a@b.co"}"#)
                .unwrap_err()
                .reason,
            unknown_program().reason
        );
    }

    #[test]
    fn status_inputs() {
        let s = StatusInput::parse(br#"{"status":"approved"}"#).unwrap();
        assert_eq!(
            (s.status, s.actor.as_str()),
            (PartnerStatus::Approved, "operator")
        );
        assert_eq!(
            StatusInput::parse(br#"{"status":"suspended"}"#)
                .unwrap_err()
                .field,
            "reason"
        );
        assert_eq!(
            StatusInput::parse(br#"{"status":"applied","reason":"x"}"#)
                .unwrap_err()
                .field,
            "status"
        );
        let s =
            StatusInput::parse(br#"{"status":"rejected","reason":"spam","actor":"eve"}"#).unwrap();
        assert_eq!(s.actor, "eve");
    }

    #[test]
    fn compliance_and_approval() {
        let c = Compliance::parse(
            br#"{"license_number":"L-1","regulator":"MGA","jurisdiction":"MT","license_expires":"2027-01-31",
                 "kyc_checked_at":"2026-10-01T09:00:00Z","dsa_version":"v3","dsa_accepted_at":"2026-10-02"}"#,
        )
        .unwrap();
        assert_eq!(c.license_expires.to_string(), "2027-01-31T00:00:00.000Z");
        assert_eq!(
            Compliance::parse(br#"{"license_number":"L-1"}"#)
                .unwrap_err()
                .field,
            "regulator"
        );
        let now = c.license_expires.ms() - 1;
        assert!(approval_blocked(true, None, now).is_some());
        assert!(approval_blocked(false, None, now).is_none());
        assert!(approval_blocked(true, Some(c.license_expires), now).is_none());
        assert!(approval_blocked(true, Some(c.license_expires), now + 1).is_some());
    }

    #[test]
    fn licence_expiry_suspends_from_its_date() {
        let h = vec![ch("applied", 10, None), ch("approved", 20, Some("ok"))];
        // Not expired yet: unchanged.
        let e = effective(PartnerStatus::Approved, &h, Some(Timestamp(100)), 99);
        assert_eq!(e.status, PartnerStatus::Approved);
        assert_eq!(e.history, h);
        // Expired: suspended at the expiry, reason license_expired.
        let e = effective(PartnerStatus::Approved, &h, Some(Timestamp(100)), 100);
        assert_eq!(e.status, PartnerStatus::Suspended);
        assert_eq!(e.reason.as_deref(), Some(LICENSE_EXPIRED));
        assert_eq!(
            e.history.last(),
            Some(&ch("suspended", 100, Some(LICENSE_EXPIRED)))
        );
        // A re-approval after the expiry cannot take effect; a rejection can.
        let h2 = vec![
            ch("approved", 20, None),
            ch("approved", 150, None),
            ch("rejected", 160, Some("fraud")),
        ];
        let e = effective(PartnerStatus::Rejected, &h2, Some(Timestamp(100)), 200);
        assert_eq!(e.status, PartnerStatus::Rejected);
        assert_eq!(e.history.len(), 3);
        assert_eq!(e.history[1].reason.as_deref(), Some(LICENSE_EXPIRED));
        // Already suspended before: nothing added.
        let h3 = vec![ch("approved", 20, None), ch("suspended", 50, Some("x"))];
        let e = effective(PartnerStatus::Suspended, &h3, Some(Timestamp(100)), 200);
        assert_eq!(e.history, h3);
        // review21 L6: an applicant (applied at 300) given a licence that
        // expired at 100: its application stays, and the suspension starts
        // when the partner does, never before it existed
        let h4 = vec![ch("applied", 300, Some("application"))];
        let e = effective(PartnerStatus::Applied, &h4, Some(Timestamp(100)), 400);
        assert_eq!(e.status, PartnerStatus::Suspended);
        assert_eq!(
            e.history,
            vec![
                ch("applied", 300, Some("application")),
                ch("suspended", 300, Some(LICENSE_EXPIRED))
            ]
        );
        // a rejection after that still shows
        let h5 = vec![ch("applied", 300, None), ch("rejected", 350, Some("no"))];
        let e = effective(PartnerStatus::Rejected, &h5, Some(Timestamp(100)), 400);
        assert_eq!(e.status, PartnerStatus::Rejected);
        assert_eq!(e.history.len(), 3);
        assert!(!key_allowed(PartnerStatus::Suspended) && key_allowed(PartnerStatus::Applied));
    }

    #[test]
    fn keys() {
        let k = key_from_bytes(&[7u8; 24]);
        assert!(looks_like_key(&k), "{k}");
        assert_ne!(key_from_bytes(&[8u8; 24]), k);
        assert_eq!(key_hash(&k).len(), 64);
        assert_ne!(key_hash(&k), key_hash(&key_from_bytes(&[8u8; 24])));
        for bad in [
            "",
            "pk_",
            "sk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "pk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
        ] {
            assert!(!looks_like_key(bad), "{bad}");
        }
        assert!(names_other_partner(br#"{"partner":"b"}"#, "a"));
        assert!(!names_other_partner(br#"{"partner":"a"}"#, "a"));
        assert!(!names_other_partner(br#"{"x":"b"}"#, "a"));
        // a partner field that is not the caller's id string names another
        for body in [
            &br#"{"partner":5}"#[..],
            br#"{"partner":["a"]}"#,
            br#"{"partner":{"id":"a"}}"#,
            br#"{"partner":null}"#,
        ] {
            assert!(names_other_partner(body, "a"));
        }
    }

    #[test]
    fn crm_and_lists() {
        let c =
            Crm::parse(br#"{"manager":"Mia","tags":["vip","de","vip"],"notes":"line 1\nline 2"}"#)
                .unwrap();
        assert_eq!(c.tags, vec!["de", "vip"]);
        assert_eq!(
            Crm::parse(br#"{"tags":["VIP"]}"#).unwrap_err().field,
            "tags"
        );
        let q = ListQuery::parse("q=ann&tag=vip&status=applied&program=fx&limit=5").unwrap();
        assert_eq!(q.status, Some(PartnerStatus::Applied));
        assert_eq!((q.limit, q.offset), (Some(5), 0));
        assert_eq!(ListQuery::parse("").unwrap().limit, None);
        assert_eq!(ListQuery::parse("status=vip").unwrap_err().field, "status");
        assert_eq!(ListQuery::parse("limit=50000").unwrap_err().field, "limit");
        assert_eq!(ListQuery::parse("limit=0").unwrap_err().field, "limit");
        assert_eq!(ListQuery::parse("tier=a%20b").unwrap_err().field, "tier");
    }

    #[test]
    fn csv_is_quoted_and_defused() {
        let mut s = String::new();
        csv_line(&mut s, &["a", "b,c", "say \"hi\"", "=HYPERLINK(1)", "-1"]);
        assert_eq!(
            s,
            "a,\"b,c\",\"say \"\"hi\"\"\",\"'=HYPERLINK(1)\",\"'-1\"\n"
        );
    }

    #[test]
    fn tiers_gate_assets() {
        let tiers: Vec<String> = ["silver", "gold", "platinum"].map(String::from).to_vec();
        assert!(tier_allows(&tiers, Some("gold"), Some("silver")));
        assert!(tier_allows(&tiers, Some("gold"), Some("gold")));
        assert!(!tier_allows(&tiers, Some("silver"), Some("gold")));
        assert!(!tier_allows(&tiers, None, Some("silver")));
        assert!(tier_allows(&tiers, None, None));
        assert!(tier_allows(&[], Some("x"), Some("x")));
        let a = Asset::parse(
            "banner-1",
            br#"{"program":"p","title":"Banner","kind":"banner","url":"https://cdn.example/b.png","min_tier":"gold"}"#,
        )
        .unwrap();
        assert_eq!(a.min_tier.as_deref(), Some("gold"));
        assert_eq!(
            Asset::parse(
                "a",
                br#"{"program":"p","title":"t","kind":"banner","url":"ftp://x"}"#
            )
            .unwrap_err()
            .field,
            "url"
        );
    }

    #[test]
    fn day_ranges() {
        let now = Timestamp::parse("2026-11-25T12:00:00Z").unwrap().ms();
        let r = DayRange::parse("", now).unwrap();
        assert_eq!(r.to - r.from, 29);
        let r = DayRange::parse("from=2026-01-01&to=2026-12-31", now).unwrap();
        assert_eq!(r.to - r.from + 1, 365);
        assert!(DayRange::parse("from=2024-01-01&to=2024-12-31", now).is_ok()); // 366
        assert_eq!(
            DayRange::parse("from=2024-01-01&to=2025-01-01", now)
                .unwrap_err()
                .field,
            "to"
        );
        assert_eq!(
            DayRange::parse("from=2026-02-30", now).unwrap_err().field,
            "from"
        );
        assert_eq!(
            DayRange::parse("from=2026-02-03&to=2026-02-01", now)
                .unwrap_err()
                .field,
            "from"
        );
        let r = DayRange::parse("from=2026-11-01&to=2026-11-03", now).unwrap();
        let v = stats_json(
            r,
            &[(
                r.from + 1,
                DayCounts {
                    clicks: 3,
                    unique_clicks: 2,
                    conversions: 1,
                },
            )],
        );
        assert_eq!(v["days"].as_array().unwrap().len(), 3);
        assert_eq!(v["days"][1]["date"], "2026-11-02");
        assert_eq!(v["days"][1]["clicks"], 3);
        assert_eq!(v["days"][0]["clicks"], 0);
        assert_eq!(v["totals"]["unique_clicks"], 2);
    }
}
