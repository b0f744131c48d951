//! Small helpers shared by the partner-layer glue (`partner`, `operator`).

use super::store::{self, Row};
use super::{body_limited, error};
use crate::time::Timestamp;
use worker::*;

/// Early return of a ready response: `Result<Result<T, Response>>` -> `T`.
macro_rules! ok_or_return {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(r) => return Ok(r),
        }
    };
}

/// A field error is a 422.
macro_rules! field_or_422 {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return super::field_error(422, &e),
        }
    };
}

pub type Answer<T> = Result<std::result::Result<T, Response>>;

/// The body, at most `max` bytes (413 past that).
pub async fn body(req: &mut Request, max: usize) -> Answer<Vec<u8>> {
    Ok(match body_limited(req, max).await? {
        Some(b) => Ok(b),
        None => Err(error(413, "body too large")?),
    })
}

/// The raw query string of a request.
pub fn query(req: &Request) -> Result<String> {
    Ok(req.url()?.query().unwrap_or("").to_string())
}

/// An RFC 3339 text column as a timestamp.
pub fn ts(r: &Row, k: &str) -> Option<Timestamp> {
    Timestamp::parse(store::txt(r, k)).ok()
}

/// 404, the answer for anything that is not the caller's.
pub fn not_found() -> Result<Response> {
    error(404, "not found")
}
