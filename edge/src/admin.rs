//! The registry the admin API writes: programs, partners, links, coupons.
//! Every body is validated field by field before anything is stored.

use crate::currency::Currency;
use crate::dest;
use crate::fields::{FieldError, Obj};
use crate::ids::is_valid_id;
use crate::record::StatusChange;
use serde::{Deserialize, Serialize};

/// Events every program knows; programs may add their own names.
pub const BUILTIN_EVENTS: &[&str] = &[
    "lead",
    "signup",
    "sale",
    "ftd",
    "deposit",
    "revenue",
    "trade",
    "refund",
    "chargeback",
    "reinstate",
    "deal_won",
];

/// Program settings (SPEC section 3): stored in D1 and mirrored to KV.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub id: String,
    /// Compact number carried in click ids (D1 rowid).
    #[serde(default)]
    pub num: u32,
    pub cookie_days: u32,
    pub postback_tokens: Vec<String>,
    pub hmac_secrets: Vec<String>,
    /// Stripe webhook endpoint signing secrets (`whsec_...`); several
    /// during a rotation.
    #[serde(default)]
    pub stripe_secrets: Vec<String>,
    /// Shopify app client secrets that sign its webhooks; several during a
    /// rotation.
    #[serde(default)]
    pub shopify_secrets: Vec<String>,
    /// Record Shopify test orders (`"test": true`, a live shop's test
    /// gateway or a development store) as sales: for a test program only.
    #[serde(default)]
    pub shopify_test_orders: bool,
    pub allowed_hosts: Vec<String>,
    pub pixel: bool,
    pub regulated: bool,
    pub tiers: Vec<String>,
    pub deal_days: u32,
    pub custom_events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

const PROGRAM_KEYS: &[&str] = &[
    "cookie_days",
    "postback_tokens",
    "hmac_secrets",
    "stripe_secrets",
    "shopify_secrets",
    "shopify_test_orders",
    "allowed_hosts",
    "pixel",
    "regulated",
    "tiers",
    "deal_days",
    "custom_events",
    "currency",
    "name",
];

pub fn valid_secret(s: &str) -> bool {
    (16..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

pub fn valid_host(h: &str) -> bool {
    let h = h.strip_prefix("*.").unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn valid_event_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

pub fn currency_field(obj: &Obj, k: &str) -> Result<Option<Currency>, FieldError> {
    obj.str(k)?
        .map(|c| {
            Currency::parse(c)
                .ok_or_else(|| FieldError::new(k, format!("unknown ISO 4217 currency {c:?}")))
        })
        .transpose()
}

pub fn short_text(obj: &Obj, k: &str, max: usize) -> Result<Option<String>, FieldError> {
    match obj.str(k)? {
        None => Ok(None),
        Some(s) if s.chars().count() > max => {
            Err(FieldError::new(k, format!("at most {max} characters")))
        }
        Some(s) if s.chars().any(char::is_control) => {
            Err(FieldError::new(k, "control characters are not allowed"))
        }
        Some(s) => Ok(Some(s.to_string())),
    }
}

impl Program {
    pub fn parse(id: &str, body: &[u8]) -> Result<Program, FieldError> {
        if !is_valid_id(id) {
            return Err(FieldError::new("id", "must match [A-Za-z0-9_-]{1,64}"));
        }
        let o = Obj::parse(body, PROGRAM_KEYS)?;
        let postback_tokens = o.str_list("postback_tokens", 8)?;
        if postback_tokens.iter().any(|t| !valid_secret(t)) {
            return Err(FieldError::new(
                "postback_tokens",
                "each token: 16 to 256 visible ASCII characters",
            ));
        }
        let secrets = |k: &str| -> Result<Vec<String>, FieldError> {
            let list = o.str_list(k, 8)?;
            if list.iter().any(|t| !valid_secret(t)) {
                return Err(FieldError::new(
                    k,
                    "each secret: 16 to 256 visible ASCII characters",
                ));
            }
            Ok(list)
        };
        let hmac_secrets = secrets("hmac_secrets")?;
        let stripe_secrets = secrets("stripe_secrets")?;
        let shopify_secrets = secrets("shopify_secrets")?;
        let allowed_hosts: Vec<String> = o.str_list("allowed_hosts", 100)?;
        if let Some(h) = allowed_hosts.iter().find(|h| !valid_host(h)) {
            return Err(FieldError::new(
                "allowed_hosts",
                format!("{h:?} is not a lower-case host name"),
            ));
        }
        let tiers = o.str_list("tiers", 20)?;
        if tiers.iter().any(|t| !is_valid_id(t)) {
            return Err(FieldError::new(
                "tiers",
                "each tier must match [A-Za-z0-9_-]{1,64}",
            ));
        }
        if (1..tiers.len()).any(|i| tiers[..i].contains(&tiers[i])) {
            return Err(FieldError::new("tiers", "tiers must be distinct"));
        }
        let custom_events = o.str_list("custom_events", 50)?;
        if let Some(e) = custom_events
            .iter()
            .find(|e| !valid_event_name(e) || BUILTIN_EVENTS.contains(&e.as_str()))
        {
            return Err(FieldError::new(
                "custom_events",
                format!("{e:?}: lower-case [a-z][a-z0-9_]{{0,31}} and not a built-in event"),
            ));
        }
        Ok(Program {
            id: id.to_string(),
            num: 0,
            cookie_days: o.u32_in("cookie_days", 1, 3650)?.unwrap_or(30),
            postback_tokens,
            hmac_secrets,
            stripe_secrets,
            shopify_secrets,
            shopify_test_orders: o.bool("shopify_test_orders")?.unwrap_or(false),
            allowed_hosts,
            pixel: o.bool("pixel")?.unwrap_or(false),
            regulated: o.bool("regulated")?.unwrap_or(false),
            tiers,
            deal_days: o.u32_in("deal_days", 1, 3650)?.unwrap_or(90),
            custom_events,
            currency: currency_field(&o, "currency")?,
            name: short_text(&o, "name", 200)?,
        })
    }

    pub fn knows_event(&self, e: &str) -> bool {
        BUILTIN_EVENTS.contains(&e) || self.custom_events.iter().any(|c| c == e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartnerStatus {
    Applied,
    Approved,
    Suspended,
    Rejected,
}

impl PartnerStatus {
    pub fn parse(s: &str) -> Option<PartnerStatus> {
        match s {
            "applied" => Some(PartnerStatus::Applied),
            "approved" => Some(PartnerStatus::Approved),
            "suspended" => Some(PartnerStatus::Suspended),
            "rejected" => Some(PartnerStatus::Rejected),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerStatus::Applied => "applied",
            PartnerStatus::Approved => "approved",
            PartnerStatus::Suspended => "suspended",
            PartnerStatus::Rejected => "rejected",
        }
    }
}

/// A partner as the admin API takes it (`PUT /api/partners/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerInput {
    pub program: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub parent: Option<String>,
    pub tier: Option<String>,
    pub status: PartnerStatus,
    pub currency: Option<Currency>,
}

pub fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl PartnerInput {
    pub fn parse(id: &str, body: &[u8]) -> Result<PartnerInput, FieldError> {
        if !is_valid_id(id) {
            return Err(FieldError::new("id", "must match [A-Za-z0-9_-]{1,64}"));
        }
        let o = Obj::parse(
            body,
            &[
                "program", "name", "email", "parent", "tier", "status", "currency",
            ],
        )?;
        let program = o.req_str("program")?;
        if !is_valid_id(program) {
            return Err(FieldError::new("program", "must match [A-Za-z0-9_-]{1,64}"));
        }
        let email = o.str("email")?.map(str::to_string);
        if let Some(e) = &email {
            if !valid_email(e) {
                return Err(FieldError::new("email", "not an email address"));
            }
        }
        let parent = o.str("parent")?.map(str::to_string);
        if let Some(p) = &parent {
            if !is_valid_id(p) || p == id {
                return Err(FieldError::new("parent", "must be another partner's id"));
            }
        }
        let tier = o.str("tier")?.map(str::to_string);
        if tier.as_deref().is_some_and(|t| !is_valid_id(t)) {
            return Err(FieldError::new("tier", "must match [A-Za-z0-9_-]{1,64}"));
        }
        let status = match o.str("status")? {
            None => PartnerStatus::Applied,
            Some(s) => PartnerStatus::parse(s).ok_or_else(|| {
                FieldError::new("status", "one of applied, approved, suspended, rejected")
            })?,
        };
        Ok(PartnerInput {
            program: program.to_string(),
            name: short_text(&o, "name", 200)?,
            email,
            parent,
            tier,
            status,
            currency: currency_field(&o, "currency")?,
        })
    }
}

/// A stored partner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    pub id: String,
    pub num: u32,
    pub program: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub email_hash: Option<String>,
    pub parent: Option<String>,
    pub tier: Option<String>,
    pub status: PartnerStatus,
    pub currency: Option<Currency>,
    pub history: Vec<StatusChange>,
    pub created_at: String,
    pub updated_at: String,
}

/// A link as created through `POST /api/links`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInput {
    pub partner: String,
    pub program: String,
    pub destination: String,
    pub slug: Option<String>,
    pub paused: bool,
}

impl LinkInput {
    pub fn parse(body: &[u8]) -> Result<LinkInput, FieldError> {
        let o = Obj::parse(
            body,
            &["partner", "program", "destination", "slug", "status"],
        )?;
        let partner = o.req_str("partner")?;
        let program = o.req_str("program")?;
        for (k, v) in [("partner", partner), ("program", program)] {
            if !is_valid_id(v) {
                return Err(FieldError::new(k, "must match [A-Za-z0-9_-]{1,64}"));
            }
        }
        let destination = o.req_str("destination")?;
        dest::validate_template(destination)
            .map_err(|e| FieldError::new("destination", e.reason()))?;
        let slug = o.str("slug")?.map(str::to_string);
        if slug.as_deref().is_some_and(|s| !is_valid_id(s)) {
            return Err(FieldError::new("slug", "must match [A-Za-z0-9_-]{1,64}"));
        }
        let paused = match o.str("status")? {
            None | Some("active") => false,
            Some("paused") => true,
            Some(_) => return Err(FieldError::new("status", "active or paused")),
        };
        Ok(LinkInput {
            partner: partner.to_string(),
            program: program.to_string(),
            destination: destination.to_string(),
            slug,
            paused,
        })
    }
}

/// What the redirect needs about a link: stored in KV under `link:<slug>`
/// and `linknum:<num>`, rebuilt from D1 on a miss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkConfig {
    pub slug: String,
    pub num: u32,
    pub program: String,
    pub program_num: u32,
    pub partner: String,
    pub partner_num: u32,
    pub destination: String,
    pub paused: bool,
}

/// A coupon (`PUT /api/coupons/{code}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub code: String,
    pub partner: String,
    pub program: String,
}

impl Coupon {
    pub fn parse(code: &str, body: &[u8]) -> Result<Coupon, FieldError> {
        if !is_valid_id(code) {
            return Err(FieldError::new("code", "must match [A-Za-z0-9_-]{1,64}"));
        }
        let o = Obj::parse(body, &["partner", "program"])?;
        let partner = o.req_str("partner")?;
        let program = o.req_str("program")?;
        for (k, v) in [("partner", partner), ("program", program)] {
            if !is_valid_id(v) {
                return Err(FieldError::new(k, "must match [A-Za-z0-9_-]{1,64}"));
            }
        }
        Ok(Coupon {
            code: code.to_string(),
            partner: partner.to_string(),
            program: program.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_from_spec_example() {
        let p = Program::parse(
            "saas",
            br#"{"cookie_days":60,"postback_tokens":["tok-0123456789abcdef"],"hmac_secrets":["sec-0123456789abcdef"],
                "allowed_hosts":["shop.example"],"pixel":true}"#,
        )
        .unwrap();
        assert_eq!(p.cookie_days, 60);
        assert!(p.pixel && !p.regulated);
        assert_eq!(p.deal_days, 90);
        assert!(p.knows_event("sale") && !p.knows_event("bogus"));
        assert!(p.stripe_secrets.is_empty() && p.shopify_secrets.is_empty());
    }

    #[test]
    fn integration_secrets_rotate() {
        let p = Program::parse(
            "saas",
            br#"{"stripe_secrets":["whsec_new_0123456789abcdef","whsec_old_0123456789abcdef"],
                "shopify_secrets":["shpss_0123456789abcdef0123"]}"#,
        )
        .unwrap();
        assert_eq!(p.stripe_secrets.len(), 2);
        assert_eq!(p.shopify_secrets, vec!["shpss_0123456789abcdef0123"]);
        // Settings stored before the integrations existed still load.
        let mut stored = serde_json::to_value(&p).unwrap();
        let obj = stored.as_object_mut().unwrap();
        obj.remove("stripe_secrets");
        obj.remove("shopify_secrets");
        let old: Program = serde_json::from_value(stored).unwrap();
        assert!(old.stripe_secrets.is_empty());
    }

    #[test]
    fn program_errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"cookie_days":0}"#, "cookie_days"),
            (br#"{"cookie_days":"60"}"#, "cookie_days"),
            (br#"{"postback_tokens":["short"]}"#, "postback_tokens"),
            (br#"{"stripe_secrets":["whsec_short"]}"#, "stripe_secrets"),
            (
                br#"{"shopify_secrets":"not-a-list-0123456789"}"#,
                "shopify_secrets",
            ),
            (
                br#"{"hmac_secrets":["has space 0123456789"]}"#,
                "hmac_secrets",
            ),
            (
                br#"{"allowed_hosts":["https://shop.example"]}"#,
                "allowed_hosts",
            ),
            (br#"{"allowed_hosts":["Shop.example"]}"#, "allowed_hosts"),
            (br#"{"currency":"XYZ"}"#, "currency"),
            (br#"{"tiers":["gold","gold"]}"#, "tiers"),
            (br#"{"custom_events":["sale"]}"#, "custom_events"),
            (br#"{"cookies":1}"#, "cookies"),
            (b"not json", "body"),
        ];
        for (body, field) in cases {
            let e = Program::parse("p", body).unwrap_err();
            assert_eq!(&e.field, field, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(Program::parse("bad id", b"{}").unwrap_err().field, "id");
    }

    #[test]
    fn partners_links_coupons() {
        let p = PartnerInput::parse(
            "ib_7",
            br#"{"program":"fx","name":"Ann","email":"ann@example.com","parent":null,"tier":"gold","status":"approved","currency":"USD"}"#,
        )
        .unwrap();
        assert_eq!(p.status, PartnerStatus::Approved);
        assert_eq!(
            PartnerInput::parse("a", br#"{"program":"fx","status":"vip"}"#)
                .unwrap_err()
                .field,
            "status"
        );
        assert_eq!(
            PartnerInput::parse("a", br#"{"program":"fx","email":"nope"}"#)
                .unwrap_err()
                .field,
            "email"
        );
        assert_eq!(
            PartnerInput::parse("a", br#"{"program":"fx","parent":"a"}"#)
                .unwrap_err()
                .field,
            "parent"
        );
        let l = LinkInput::parse(br#"{"partner":"a","program":"p","destination":"https://shop.example/?ref={click_id}"}"#).unwrap();
        assert!(l.slug.is_none() && !l.paused);
        assert_eq!(
            LinkInput::parse(
                br#"{"partner":"a","program":"p","destination":"javascript:alert(1)"}"#
            )
            .unwrap_err()
            .field,
            "destination"
        );
        assert_eq!(
            Coupon::parse("SAVE 10", br#"{"partner":"a","program":"p"}"#)
                .unwrap_err()
                .field,
            "code"
        );
    }
}
