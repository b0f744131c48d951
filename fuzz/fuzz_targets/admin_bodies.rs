//! Admin API bodies: programs, partners, links, coupons.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = edge::admin::Program::parse("prog", data) {
        assert!((1..=3650).contains(&p.cookie_days));
        assert!(p.allowed_hosts.iter().all(|h| !h.contains('/')));
    }
    if let Ok(p) = edge::admin::PartnerInput::parse("aff", data) {
        assert!(edge::ids::is_valid_id(&p.program));
    }
    if let Ok(l) = edge::admin::LinkInput::parse(data) {
        assert!(edge::dest::validate_template(&l.destination).is_ok());
    }
    let _ = edge::admin::Coupon::parse("CODE", data);
});
