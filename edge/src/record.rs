//! The record of SPEC section 4: one definition, used by the edge (which
//! writes it) and by settlement (which reads it). One NDJSON line is one
//! [`Record`]: events (`click`, `conversion`, `deal`, `mdf`) and the registry
//! lines of the export (`partner`, `coupon`) share this flat shape; fields a
//! kind does not use are absent.

use crate::currency::Currency;
use crate::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Click,
    Conversion,
    Deal,
    Mdf,
    Partner,
    Coupon,
}

/// Where a conversion came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Postback,
    Pixel,
    Stripe,
    Shopify,
    Import,
}

/// One status change of a partner, as exported in `history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_ts: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub amount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_txn_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub lots: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrument: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<Vec<Option<String>>>,
    /// Salted SHA-256 of a lower-cased email (customer on conversions, the
    /// partner's own on partner lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_hash: Option<String>,
    /// Salted hash of IP + user agent (clicks); never the raw IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor: Option<String>,
    /// Why a click is a bot: `head`, `prefetch`, `preview`, `crawler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_host: Option<String>,
    /// Autonomous system of the click's connection (`request.cf.asn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// The ASN is a hosting or cloud network (`edge/data/hosting-asns.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<bool>,
    /// The click came with a `Referer` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_referrer: Option<bool>,

    // deal / partner lines
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,

    // partner lines
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<StatusChange>>,

    // coupon lines
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

impl Record {
    /// An empty record of a kind; fill the fields that apply.
    pub fn new(kind: Kind) -> Record {
        Record {
            seq: None,
            id: None,
            kind,
            ts: None,
            program: None,
            partner: None,
            link: None,
            click_id: None,
            click_ts: None,
            event: None,
            txn_id: None,
            amount: None,
            currency: None,
            customer: None,
            coupon: None,
            original_txn_id: None,
            lots: None,
            instrument: None,
            source: None,
            bot: None,
            unique: None,
            country: None,
            sub: None,
            email_hash: None,
            visitor: None,
            bot_reason: None,
            referrer_host: None,
            asn: None,
            datacenter: None,
            has_referrer: None,
            status: None,
            approved_at: None,
            expires_at: None,
            status_reason: None,
            name: None,
            parent: None,
            tier: None,
            history: None,
            code: None,
            created_at: None,
            updated_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_roundtrips() {
        let line = r#"{"seq":17,"id":"ev_1","type":"conversion","ts":"2026-11-03T10:00:00.000Z","program":"fx-ib",
 "partner":"ib_7","link":"l_3","click_id":"x","click_ts":"2026-11-02T09:00:00.000Z",
 "event":"trade","txn_id":"T-991","amount":null,"currency":null,"customer":"acct_55",
 "coupon":null,"original_txn_id":null,"lots":"2.5","instrument":"EURUSD",
 "source":"postback","bot":false,"unique":null,"country":"DE","sub":["s1",null,null,null,null]}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        assert_eq!(r.kind, Kind::Conversion);
        assert_eq!(r.lots, Some(Decimal::new(25, 1)));
        assert_eq!(r.ts.unwrap().to_string(), "2026-11-03T10:00:00.000Z");
        let back = serde_json::to_string(&r).unwrap();
        let again: Record = serde_json::from_str(&back).unwrap();
        assert_eq!(r, again);
        assert!(back.contains(r#""lots":"2.5""#));
    }

    #[test]
    fn money_keeps_its_scale_as_a_string() {
        let mut r = Record::new(Kind::Conversion);
        r.amount = Some(Decimal::new(1250, 2));
        r.currency = Currency::parse("USD");
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#""amount":"12.50""#), "{s}");
        assert!(s.contains(r#""currency":"USD""#), "{s}");
    }

    #[test]
    fn unknown_currency_is_an_error() {
        let e = serde_json::from_str::<Record>(r#"{"type":"conversion","currency":"ZZZ"}"#);
        assert!(e.is_err());
    }
}
