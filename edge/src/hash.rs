//! Salted hashes: visitors (IP + user agent, never stored raw), emails, and
//! payload fingerprints. Hex SHA-256.

use sha2::{Digest, Sha256};

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefix every part so that ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// A visitor: salted hash of IP and user agent, 32 hex characters.
pub fn visitor(salt: &str, ip: &str, user_agent: &str) -> String {
    let mut s = sha256_hex(&[
        b"visitor",
        salt.as_bytes(),
        ip.as_bytes(),
        user_agent.as_bytes(),
    ]);
    s.truncate(32);
    s
}

/// The key that makes a click unique per link per visitor.
pub fn visitor_link(visitor: &str, link: &str) -> String {
    let mut s = sha256_hex(&[b"visitor-link", visitor.as_bytes(), link.as_bytes()]);
    s.truncate(32);
    s
}

/// `email_hash`: salted SHA-256 of the trimmed, lower-cased address.
pub fn email(salt: &str, email: &str) -> String {
    let normalized = email.trim().to_lowercase();
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(normalized.as_bytes());
    hex::encode(h.finalize())
}

/// Fingerprint of a canonical payload (duplicate vs conflict).
pub fn payload(canonical: &str) -> String {
    sha256_hex(&[b"payload", canonical.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_hash_normalizes_case_and_space() {
        assert_eq!(
            email("s", " Ann@Example.COM "),
            email("s", "ann@example.com")
        );
        assert_ne!(email("s", "ann@example.com"), email("t", "ann@example.com"));
        assert_eq!(email("s", "a@b.c").len(), 64);
    }

    #[test]
    fn visitor_never_contains_the_ip() {
        let v = visitor("salt", "203.0.113.7", "Mozilla/5.0");
        assert_eq!(v.len(), 32);
        assert!(!v.contains("203"));
        assert_ne!(v, visitor("other", "203.0.113.7", "Mozilla/5.0"));
        assert_ne!(visitor("s", "1.2.3.4", "ab"), visitor("s", "1.2.3.4a", "b"));
    }
}
