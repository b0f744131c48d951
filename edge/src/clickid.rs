//! Click ids: URL-safe, at most 64 characters, time-sortable and sealed.
//!
//! Layout before encoding: `version (1) | click time ms (6, big-endian) |
//! nonce (4) | program, link, partner numbers (LEB128 varints) | tag (12)`,
//! where tag = HMAC-SHA256(CLICK_SECRET, everything before it), truncated to
//! 96 bits. The encoding is base64 without padding over an alphabet in ASCII
//! order, so ids sort by click time as plain strings. A new secret signs; the
//! previous one still verifies (rotation).

use base64::alphabet::Alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: u8 = 1;
const TAG_LEN: usize = 12;
/// The longest id we mint is 1 + 6 + 4 + 3*5 + 12 = 38 bytes = 51 characters.
pub const MAX_LEN: usize = 64;

const SORTABLE: &str = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

fn engine() -> GeneralPurpose {
    // The alphabet is a constant of 64 distinct printable characters: its
    // construction cannot fail; fall back to URL_SAFE if it ever did.
    let alphabet = Alphabet::new(SORTABLE).unwrap_or(base64::alphabet::URL_SAFE);
    GeneralPurpose::new(
        &alphabet,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(false),
    )
}

/// What a click id carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClickClaims {
    pub ts_ms: i64,
    pub nonce: u32,
    pub program: u32,
    pub link: u32,
    pub partner: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClickIdError {
    /// Not our encoding, wrong length or layout.
    Malformed,
    /// Well-formed but sealed by neither secret: forged or altered.
    BadSignature,
}

impl ClickIdError {
    pub fn reason(self) -> &'static str {
        match self {
            ClickIdError::Malformed => "malformed click id",
            ClickIdError::BadSignature => "click id signature does not verify",
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7).take(10) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn tag(secret: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length.
    let mut out = [0u8; TAG_LEN];
    // HMAC takes keys of any length, so this never fails.
    if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        mac.update(payload);
        out.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
    }
    out
}

/// Mints a click id. `ts_ms` must be in 0..2^48.
pub fn mint(secret: &[u8], claims: &ClickClaims) -> String {
    let mut buf = Vec::with_capacity(40);
    buf.push(VERSION);
    let ts = claims.ts_ms.clamp(0, (1 << 48) - 1) as u64;
    buf.extend_from_slice(&ts.to_be_bytes()[2..]);
    buf.extend_from_slice(&claims.nonce.to_be_bytes());
    put_varint(&mut buf, u64::from(claims.program));
    put_varint(&mut buf, u64::from(claims.link));
    put_varint(&mut buf, u64::from(claims.partner));
    let t = tag(secret, &buf);
    buf.extend_from_slice(&t);
    engine().encode(&buf)
}

/// Verifies a click id under the current secret, then the previous ones.
pub fn verify(secrets: &[&[u8]], id: &str) -> Result<ClickClaims, ClickIdError> {
    if id.is_empty() || id.len() > MAX_LEN {
        return Err(ClickIdError::Malformed);
    }
    let raw = engine().decode(id).map_err(|_| ClickIdError::Malformed)?;
    if raw.len() < 1 + 6 + 4 + 3 + TAG_LEN || raw[0] != VERSION {
        return Err(ClickIdError::Malformed);
    }
    let (payload, their_tag) = raw.split_at(raw.len() - TAG_LEN);
    let mut pos = 11;
    let mut num = || {
        get_varint(payload, &mut pos)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(ClickIdError::Malformed)
    };
    let program = num()?;
    let link = num()?;
    let partner = num()?;
    if pos != payload.len() {
        return Err(ClickIdError::Malformed);
    }
    let verified = secrets.iter().filter(|s| !s.is_empty()).any(|secret| {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
            return false;
        };
        mac.update(payload);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(their_tag).is_ok()
    });
    if !verified {
        return Err(ClickIdError::BadSignature);
    }
    let mut ts = [0u8; 8];
    ts[2..].copy_from_slice(&payload[1..7]);
    let mut nonce = [0u8; 4];
    nonce.copy_from_slice(&payload[7..11]);
    Ok(ClickClaims {
        ts_ms: u64::from_be_bytes(ts) as i64,
        nonce: u32::from_be_bytes(nonce),
        program,
        link,
        partner,
    })
}

/// A time-sortable random id for stored events (`ev_...`).
pub fn event_id(ts_ms: i64, random: [u8; 10]) -> String {
    sortable_id("ev_", ts_ms, &random)
}

/// A time-sortable random id with a prefix (`dl_...`, `md_...`): 48 bits of
/// milliseconds, then the random bytes, in the URL-safe sortable alphabet.
pub fn sortable_id(prefix: &str, ts_ms: i64, random: &[u8]) -> String {
    let mut buf = Vec::with_capacity(6 + random.len());
    let ts = ts_ms.clamp(0, (1 << 48) - 1) as u64;
    buf.extend_from_slice(&ts.to_be_bytes()[2..]);
    buf.extend_from_slice(random);
    format!("{prefix}{}", engine().encode(&buf))
}

/// Random bytes in the same URL-safe alphabet (API keys).
pub fn encode_random(prefix: &str, random: &[u8]) -> String {
    format!("{prefix}{}", engine().encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: &[u8] = b"current-secret";
    const OLD: &[u8] = b"previous-secret";

    fn claims() -> ClickClaims {
        ClickClaims {
            ts_ms: 1_793_000_000_000,
            nonce: 0xdead_beef,
            program: 3,
            link: 70_000,
            partner: 12,
        }
    }

    #[test]
    fn roundtrip_and_url_safe() {
        let id = mint(K, &claims());
        assert!(id.len() <= MAX_LEN);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(verify(&[K], &id), Ok(claims()));
    }

    #[test]
    fn rotation_previous_secret_still_verifies() {
        let old = mint(OLD, &claims());
        assert_eq!(verify(&[K, OLD], &old), Ok(claims()));
        assert_eq!(verify(&[K], &old), Err(ClickIdError::BadSignature));
    }

    #[test]
    fn tampering_is_refused() {
        let id = mint(K, &claims());
        let mut bytes = id.clone().into_bytes();
        for i in 0..bytes.len() {
            let orig = bytes[i];
            bytes[i] = if orig == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(bytes.clone()).unwrap();
            assert!(verify(&[K], &s).is_err(), "altered at {i}: {s}");
            bytes[i] = orig;
        }
        assert_eq!(verify(&[K], ""), Err(ClickIdError::Malformed));
        assert_eq!(verify(&[K], &"A".repeat(65)), Err(ClickIdError::Malformed));
        assert_eq!(
            verify(&[K], "not a click id!"),
            Err(ClickIdError::Malformed)
        );
    }

    #[test]
    fn empty_secrets_never_verify() {
        let id = mint(b"", &claims());
        assert_eq!(verify(&[b""], &id), Err(ClickIdError::BadSignature));
    }

    proptest! {
        #[test]
        fn any_claims_roundtrip(ts in 0i64..(1 << 48), nonce: u32, p: u32, l: u32, q: u32) {
            let c = ClickClaims { ts_ms: ts, nonce, program: p, link: l, partner: q };
            let id = mint(K, &c);
            prop_assert!(id.len() <= MAX_LEN);
            prop_assert_eq!(verify(&[K], &id), Ok(c));
        }

        #[test]
        fn ids_sort_by_time(a in 0i64..(1 << 47), b in 0i64..(1 << 47), n1: u32, n2: u32) {
            let ia = mint(K, &ClickClaims { ts_ms: a, nonce: n1, program: 1, link: 1, partner: 1 });
            let ib = mint(K, &ClickClaims { ts_ms: b, nonce: n2, program: 1, link: 1, partner: 1 });
            if a < b { prop_assert!(ia < ib); }
            let ea = event_id(a, [0; 10]);
            let eb = event_id(b, [255; 10]);
            if a < b { prop_assert!(ea < eb); }
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,80}") {
            let _ = verify(&[K], &s);
        }
    }
}
