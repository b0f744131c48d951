//! The partner portal (`/portal`) and the operator console (`/admin`): small
//! static pages whose scripts call the JSON API with the key or token kept
//! in `sessionStorage`. Scripts and styles are separate files, so the CSP
//! allows no inline code at all; the scripts build the DOM with
//! `textContent`, never HTML from data.

use super::{respond, text};
use crate::routes::Route;
use worker::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const FILES: &[(&str, &str, &str)] = &[
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../pages/ui.js"),
    ),
    (
        "portal.js",
        "text/javascript; charset=utf-8",
        include_str!("../pages/portal.js"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../pages/admin.js"),
    ),
    (
        "ui.css",
        "text/css; charset=utf-8",
        include_str!("../pages/ui.css"),
    ),
];

pub fn serve(route: Route<'_>) -> Result<Response> {
    let (content_type, body) = match route {
        Route::Portal => (
            "text/html; charset=utf-8",
            include_str!("../pages/portal.html"),
        ),
        Route::Console => (
            "text/html; charset=utf-8",
            include_str!("../pages/admin.html"),
        ),
        Route::Ui(name) => match FILES.iter().find(|(n, _, _)| *n == name) {
            Some((_, ct, body)) => (*ct, *body),
            None => return text(404, "not found"),
        },
        _ => return text(404, "not found"),
    };
    let r = respond(200, content_type, body.as_bytes().to_vec())?;
    let h = r.headers();
    h.set("Content-Security-Policy", CSP)?;
    h.set("X-Frame-Options", "DENY")?;
    h.set("Referrer-Policy", "no-referrer")?;
    h.set("Cross-Origin-Opener-Policy", "same-origin")?;
    h.set(
        "Permissions-Policy",
        "camera=(), microphone=(), geolocation=()",
    )?;
    Ok(r)
}
