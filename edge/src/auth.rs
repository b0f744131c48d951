//! Credentials: bearer tokens and `X-Signature: t=<unix>,v1=<hex>` HMAC
//! signatures (HMAC-SHA256 over `t + "." + raw body`, 300 s tolerance,
//! several `v1` accepted during rotation). Every secret comparison is
//! constant-time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Seconds a signature's timestamp may differ from now.
pub const TOLERANCE_S: i64 = 300;

/// Constant-time equality of two secrets. Both sides are hashed first so
/// that neither the content nor the length leaks through timing.
pub fn secret_eq(a: &str, b: &str) -> bool {
    let ha = Sha256::digest(a.as_bytes());
    let hb = Sha256::digest(b.as_bytes());
    bool::from(ha.ct_eq(&hb))
}

/// True when `given` equals any of `accepted` (all are compared).
pub fn token_matches(given: &str, accepted: &[String]) -> bool {
    let mut ok = false;
    for a in accepted {
        if !a.is_empty() {
            ok |= secret_eq(given, a);
        }
    }
    ok
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub t: i64,
    pub v1: Vec<Vec<u8>>,
}

/// Parses `t=<unix>,v1=<hex>[,v1=<hex>...]`; unknown schemes are ignored.
pub fn parse_signature(header: &str) -> Option<SignatureHeader> {
    if header.len() > 2048 {
        return None;
    }
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "t" => t = Some(v.parse::<i64>().ok()?),
            "v1" => v1.push(hex::decode(v).ok().filter(|b| b.len() == 32)?),
            _ => {}
        }
    }
    let t = t?;
    (!v1.is_empty()).then_some(SignatureHeader { t, v1 })
}

/// Hex HMAC-SHA256 of `t.body`: what a sender puts in `v1`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, t, body))
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Vec<u8> {
    match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mut m) => {
            m.update(t.to_string().as_bytes());
            m.update(b".");
            m.update(body);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    Malformed,
    /// Outside the tolerance: too old (a replay) or from the future.
    Expired,
    Mismatch,
}

/// Verifies a signature header against any of the program's secrets.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secrets: &[String],
    now_s: i64,
) -> Result<(), SignatureError> {
    let sig = parse_signature(header).ok_or(SignatureError::Malformed)?;
    if (now_s - sig.t).abs() > TOLERANCE_S {
        return Err(SignatureError::Expired);
    }
    let mut ok = false;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let expected = mac(secret, sig.t, body);
        for v in &sig.v1 {
            ok |= bool::from(expected.ct_eq(v));
        }
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let accepted = vec!["old-token".to_string(), "new-token".to_string()];
        assert!(token_matches("new-token", &accepted));
        assert!(token_matches("old-token", &accepted));
        assert!(!token_matches("new-toke", &accepted));
        assert!(!token_matches("", &[String::new()]));
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn signatures_with_rotation_and_tolerance() {
        let body = br#"{"program":"p","event":"sale"}"#;
        let secrets = vec!["s-new".to_string()];
        let now = 1_800_000_000;
        let good = format!("t={now},v1={}", sign("s-new", now, body));
        assert_eq!(verify_signature(&good, body, &secrets, now + 10), Ok(()));
        // Rotation: the sender signs with both; we know only the new one.
        let both = format!(
            "t={now},v1={},v1={}",
            sign("s-old", now, body),
            sign("s-new", now, body)
        );
        assert_eq!(verify_signature(&both, body, &secrets, now), Ok(()));
        // We know both; the sender still signs with the old one.
        let old_only = format!("t={now},v1={}", sign("s-old", now, body));
        let two = vec!["s-new".to_string(), "s-old".to_string()];
        assert_eq!(verify_signature(&old_only, body, &two, now), Ok(()));
        assert_eq!(
            verify_signature(&old_only, body, &secrets, now),
            Err(SignatureError::Mismatch)
        );
        // Replay outside the window.
        assert_eq!(
            verify_signature(&good, body, &secrets, now + TOLERANCE_S + 1),
            Err(SignatureError::Expired)
        );
        // Tampered body.
        assert_eq!(
            verify_signature(&good, b"{}", &secrets, now),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", &format!("t={now},v1=zz")] {
            assert_eq!(
                verify_signature(bad, body, &secrets, now),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
