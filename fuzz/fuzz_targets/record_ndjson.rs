//! One NDJSON line of the export: the shared record type.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<edge::record::Record>(data) {
        let back = serde_json::to_string(&r).unwrap();
        let again: edge::record::Record = serde_json::from_str(&back).unwrap();
        assert_eq!(r, again, "a record survives a round trip");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = edge::time::Timestamp::parse(s) {
            assert_eq!(edge::time::Timestamp::parse(&t.to_string()), Ok(t));
        }
    }
});
