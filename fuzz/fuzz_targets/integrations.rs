//! Provider webhooks (Stripe events, Shopify orders and refunds) and the
//! outgoing-webhook bodies: any input maps, is ignored or names a field, and
//! whatever maps is a postback the edge could record.
#![no_main]
use libfuzzer_sys::fuzz_target;

use edge::integration::Mapped;

fuzz_target!(|data: &[u8]| {
    let program = edge::admin::Program::parse("p", b"{}").unwrap();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let mut mapped = vec![edge::stripe::map(&v)];
        for topic in ["orders/paid", "orders/create", "refunds/create"] {
            mapped.push(edge::shopify::map(topic, &v));
        }
        for m in mapped {
            match m {
                Ok(Mapped::Conversion(c)) => {
                    assert!(c.get("txn_id").is_some());
                    if let Ok(pb) =
                        c.postback(&program, None, |e| e.to_lowercase(), 1_800_000_000_000)
                    {
                        assert!(!pb.txn_id.is_empty());
                    }
                }
                Ok(Mapped::Ignored(why)) => assert!(!why.is_empty()),
                Ok(Mapped::Refs { txn, refs }) => {
                    assert!(!txn.is_empty() && !refs.is_empty() && !refs.contains(&txn))
                }
                Err(e) => assert!(!e.field.is_empty() && !e.reason.is_empty()),
            }
        }
    }
    let header = String::from_utf8_lossy(data);
    let secrets = ["secret-0123456789abcdef".to_string()];
    assert!(edge::shopify::verify(&header, data, &secrets).is_err());
    assert!(edge::stripe::verify(&header, data, &secrets, 1_800_000_000).is_err());
    let _ = edge::webhook::WebhookInput::parse("hook", data);
    let _ = edge::webhook::Emit::parse(data);
});
