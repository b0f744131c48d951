//! Postback parsing from a query string, a form body and a JSON body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let program = edge::admin::Program::parse("p", br#"{"custom_events":["trial"]}"#).unwrap();
    let mut sets = Vec::new();
    if let Ok(f) = edge::fields::Fields::from_json(data) {
        sets.push(f);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(f) = edge::fields::Fields::from_query(s) {
            sets.push(f);
        }
    }
    for f in sets {
        match edge::postback::Postback::parse(&f, &program, 1_800_000_000_000) {
            Ok(pb) => {
                assert!(!pb.txn_id.is_empty());
                let _ = pb.canonical();
                if let Some(a) = pb.amount {
                    assert!(pb.currency.is_some(), "an amount always has its currency");
                    assert!(!a.is_sign_negative() || a.is_zero() || pb.event == "revenue");
                }
            }
            Err(e) => assert!(!e.field.is_empty() && !e.reason.is_empty()),
        }
    }
});
