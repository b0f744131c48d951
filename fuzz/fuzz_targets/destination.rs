//! Destinations and deep links: never an open redirect, never a CRLF.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (to, sub) = s.split_once('\u{0}').unwrap_or((s, ""));
    let allowed = vec!["shop.example".to_string()];
    let m = edge::dest::Macros { click_id: "CID", partner: "p", sub: [Some(sub), None, None, None, None] };
    if let Ok(loc) = edge::dest::resolve("https://shop.example/?s={sub1}", Some(to), &allowed, &m) {
        let url = url::Url::parse(&loc).unwrap();
        let host = url.host_str().unwrap_or("");
        assert_eq!(host.strip_suffix('.').unwrap_or(host), "shop.example");
        assert!(!loc.contains('\r') && !loc.contains('\n'));
    }
    if let Ok(loc) = edge::dest::resolve("https://shop.example/?s={sub1}", None, &allowed, &m) {
        assert!(loc.starts_with("https://shop.example/?s="));
        assert!(!loc.contains('\r') && !loc.contains('\n'));
    }
});
