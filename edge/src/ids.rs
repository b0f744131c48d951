//! Identifiers: partner, program, link ids and coupon codes are
//! `[A-Za-z0-9_-]{1,64}` (SPEC section 2).

/// True for a valid partner/program/link id or coupon code.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// True for a free-text reference such as a `txn_id` or `customer`: 1 to 128
/// printable characters, no control characters.
pub fn is_valid_ref(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("saas-aff_01"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        for bad in ["", "a b", "a/b", "é", "a.b", "<script>", "a\nb"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn refs() {
        assert!(is_valid_ref("INV-2026/11 #3"));
        assert!(!is_valid_ref(""));
        assert!(!is_valid_ref("a\r\nSet-Cookie: x"));
        assert!(!is_valid_ref(&"x".repeat(129)));
    }

    proptest! {
        #[test]
        fn valid_ids_are_url_and_header_safe(s in "[A-Za-z0-9_-]{1,64}") {
            prop_assert!(is_valid_id(&s));
            prop_assert_eq!(percent_encoding::utf8_percent_encode(&s, percent_encoding::NON_ALPHANUMERIC).to_string().len() >= s.len(), true);
        }
    }
}
