//! The worker's routes: one table, matched here, documented in
//! `docs/openapi.yaml` (a test checks both name the same routes).

/// A matched route with its path parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    /// A static redirect with no work: the benchmark's baseline.
    Baseline,
    Click(&'a str),
    Pixel,
    Postback,
    Program(&'a str),
    Partner(&'a str),
    Links,
    Link(&'a str),
    Coupon(&'a str),
    ExportEvents,
    ExportPartners,
    ExportCoupons,
    Rejections,
}

/// Every route: (method, path template). HEAD is answered wherever GET is.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/__baseline"),
    ("GET", "/c/{slug}"),
    ("GET", "/pixel"),
    ("GET", "/postback"),
    ("POST", "/postback"),
    ("GET", "/api/programs/{id}"),
    ("PUT", "/api/programs/{id}"),
    ("GET", "/api/partners/{id}"),
    ("PUT", "/api/partners/{id}"),
    ("POST", "/api/links"),
    ("GET", "/api/links/{slug}"),
    ("PUT", "/api/links/{slug}"),
    ("GET", "/api/coupons/{code}"),
    ("PUT", "/api/coupons/{code}"),
    ("GET", "/api/rejections"),
    ("GET", "/export/v1/events"),
    ("GET", "/export/v1/partners"),
    ("GET", "/export/v1/coupons"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match<'a> {
    Found(Route<'a>),
    /// The path exists, not with this method: the allowed ones.
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

fn matches<'a>(template: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut param = None;
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return None;
                }
                param = Some(ps);
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

fn build<'a>(template: &str, param: Option<&'a str>) -> Option<Route<'a>> {
    let p = param.unwrap_or("");
    Some(match template {
        "/healthz" => Route::Health,
        "/__baseline" => Route::Baseline,
        "/c/{slug}" => Route::Click(p),
        "/pixel" => Route::Pixel,
        "/postback" => Route::Postback,
        "/api/programs/{id}" => Route::Program(p),
        "/api/partners/{id}" => Route::Partner(p),
        "/api/links" => Route::Links,
        "/api/links/{slug}" => Route::Link(p),
        "/api/coupons/{code}" => Route::Coupon(p),
        "/api/rejections" => Route::Rejections,
        "/export/v1/events" => Route::ExportEvents,
        "/export/v1/partners" => Route::ExportPartners,
        "/export/v1/coupons" => Route::ExportCoupons,
        _ => return None,
    })
}

/// Matches a request. HEAD is treated as GET.
pub fn route<'a>(method: &str, path: &'a str) -> Match<'a> {
    let method = if method.eq_ignore_ascii_case("HEAD") {
        "GET"
    } else {
        method
    };
    let mut allowed = Vec::new();
    for (m, template) in ROUTES {
        if let Some(param) = matches(template, path) {
            if m.eq_ignore_ascii_case(method) {
                if let Some(r) = build(template, param) {
                    return Match::Found(r);
                }
            } else {
                allowed.push(*m);
            }
        }
    }
    if allowed.is_empty() {
        Match::NotFound
    } else {
        Match::MethodNotAllowed(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_builds_a_route() {
        for (m, t) in ROUTES {
            let path = t
                .replace("{slug}", "x")
                .replace("{id}", "x")
                .replace("{code}", "x");
            assert!(matches!(route(m, &path), Match::Found(_)), "{m} {t}");
        }
    }

    #[test]
    fn matching() {
        assert_eq!(route("GET", "/c/abc"), Match::Found(Route::Click("abc")));
        assert_eq!(route("HEAD", "/c/abc"), Match::Found(Route::Click("abc")));
        assert_eq!(route("GET", "/c/"), Match::NotFound);
        assert_eq!(route("GET", "/c/a/b"), Match::NotFound);
        assert_eq!(
            route("DELETE", "/postback"),
            Match::MethodNotAllowed(vec!["GET", "POST"])
        );
        assert_eq!(
            route("PUT", "/api/programs/p1"),
            Match::Found(Route::Program("p1"))
        );
        assert_eq!(route("GET", "/nope"), Match::NotFound);
    }
}

#[cfg(test)]
mod openapi {
    use super::ROUTES;
    use std::collections::BTreeSet;

    /// The (method, path) pairs of docs/openapi.yaml, read from its `paths:`
    /// block (paths at two spaces, methods at four).
    fn documented() -> BTreeSet<(String, String)> {
        let doc = include_str!("../../docs/openapi.yaml");
        let mut in_paths = false;
        let mut path = String::new();
        let mut out = BTreeSet::new();
        for line in doc.lines() {
            if line == "paths:" {
                in_paths = true;
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /") {
                path = format!("/{}", p.trim_end_matches(':'));
            } else if let Some(m) = line.strip_prefix("    ") {
                let m = m.trim_end_matches(':');
                if ["get", "put", "post", "delete", "patch"].contains(&m) {
                    out.insert((m.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn router_and_openapi_name_the_same_routes() {
        let router: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let doc = documented();
        assert!(!doc.is_empty());
        let undocumented: Vec<_> = router.difference(&doc).collect();
        let phantom: Vec<_> = doc.difference(&router).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from docs/openapi.yaml: {undocumented:?}"
        );
        assert!(phantom.is_empty(), "documented but not routed: {phantom:?}");
    }
}
