//! `Cookie` header parsing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(id) = edge::cookie::click_id(Some(s)) {
        assert!(!id.is_empty() && id.len() <= 64);
        assert!(!id.contains(';'));
    }
});
