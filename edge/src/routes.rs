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
    // The partner layer: partner routes (a partner key), public ones, and
    // operator routes (the admin token).
    Apply,
    Me,
    Stats,
    MyLinks,
    MyDeals,
    MyMdf,
    MyClaim(&'a str),
    MyAssets,
    MyStatements,
    PartnerList,
    PartnerCsv,
    PartnerStatus(&'a str),
    PartnerAudit(&'a str),
    Compliance(&'a str),
    Keys(&'a str),
    Crm(&'a str),
    Deals,
    DealDecision(&'a str),
    Budgets,
    Budget(&'a str),
    MdfList,
    MdfDecision(&'a str),
    ClaimDecision(&'a str),
    Assets,
    Asset(&'a str),
    Statements,
    Portal,
    Console,
    Ui(&'a str),
    // Integrations: provider webhooks in (public, signed), our webhooks out
    // (the admin token).
    Stripe(&'a str),
    Shopify(&'a str),
    Webhook(&'a str),
    WebhookDeliveries(&'a str),
    WebhookReplay(&'a str),
    WebhookEmit,
    // Erasure of a customer's personal data (the admin token).
    Customer(&'a str),
    Erasures,
}

impl Route<'_> {
    /// Routes a partner calls with its key (`Authorization: Bearer pk_...`).
    pub fn is_partner(&self) -> bool {
        matches!(
            self,
            Route::Me
                | Route::Stats
                | Route::MyLinks
                | Route::MyDeals
                | Route::MyMdf
                | Route::MyClaim(_)
                | Route::MyAssets
                | Route::MyStatements
        )
    }

    /// Operator routes of the partner layer (the admin token).
    pub fn is_operator(&self) -> bool {
        matches!(
            self,
            Route::PartnerList
                | Route::PartnerCsv
                | Route::PartnerStatus(_)
                | Route::PartnerAudit(_)
                | Route::Compliance(_)
                | Route::Keys(_)
                | Route::Crm(_)
                | Route::Deals
                | Route::DealDecision(_)
                | Route::Budgets
                | Route::Budget(_)
                | Route::MdfList
                | Route::MdfDecision(_)
                | Route::ClaimDecision(_)
                | Route::Assets
                | Route::Asset(_)
                | Route::Statements
        )
    }

    /// Erasure routes (the admin token): `crate::erase`.
    pub fn is_erasure(&self) -> bool {
        matches!(self, Route::Customer(_) | Route::Erasures)
    }

    /// Outgoing-webhook routes (the admin token).
    pub fn is_webhooks(&self) -> bool {
        matches!(
            self,
            Route::Webhook(_)
                | Route::WebhookDeliveries(_)
                | Route::WebhookReplay(_)
                | Route::WebhookEmit
        )
    }
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
    ("POST", "/partner/v1/apply"),
    ("GET", "/partner/v1/me"),
    ("GET", "/partner/v1/stats"),
    ("GET", "/partner/v1/links"),
    ("POST", "/partner/v1/links"),
    ("GET", "/partner/v1/deals"),
    ("POST", "/partner/v1/deals"),
    ("GET", "/partner/v1/mdf"),
    ("POST", "/partner/v1/mdf"),
    ("POST", "/partner/v1/mdf/{id}/claim"),
    ("GET", "/partner/v1/assets"),
    ("GET", "/partner/v1/statements"),
    ("GET", "/api/partners"),
    ("GET", "/api/partners.csv"),
    ("POST", "/api/partners/{id}/status"),
    ("GET", "/api/partners/{id}/audit"),
    ("GET", "/api/partners/{id}/compliance"),
    ("PUT", "/api/partners/{id}/compliance"),
    ("POST", "/api/partners/{id}/keys"),
    ("DELETE", "/api/partners/{id}/keys"),
    ("PUT", "/api/partners/{id}/crm"),
    ("GET", "/api/deals"),
    ("POST", "/api/deals/{id}/decision"),
    ("GET", "/api/mdf/budgets"),
    ("GET", "/api/mdf/budgets/{id}"),
    ("PUT", "/api/mdf/budgets/{id}"),
    ("GET", "/api/mdf"),
    ("POST", "/api/mdf/{id}/decision"),
    ("POST", "/api/mdf/{id}/claim-decision"),
    ("GET", "/api/assets"),
    ("PUT", "/api/assets/{id}"),
    ("POST", "/api/statements"),
    ("GET", "/portal"),
    ("GET", "/admin"),
    ("GET", "/ui/{file}"),
    ("POST", "/integrations/stripe/{program}"),
    ("POST", "/integrations/shopify/{program}"),
    ("POST", "/api/webhooks/emit"),
    ("GET", "/api/webhooks/{id}"),
    ("PUT", "/api/webhooks/{id}"),
    ("GET", "/api/webhooks/{id}/deliveries"),
    ("POST", "/api/webhooks/deliveries/{id}/replay"),
    ("DELETE", "/api/customers/{id}"),
    ("GET", "/api/erasures"),
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
        "/partner/v1/apply" => Route::Apply,
        "/partner/v1/me" => Route::Me,
        "/partner/v1/stats" => Route::Stats,
        "/partner/v1/links" => Route::MyLinks,
        "/partner/v1/deals" => Route::MyDeals,
        "/partner/v1/mdf" => Route::MyMdf,
        "/partner/v1/mdf/{id}/claim" => Route::MyClaim(p),
        "/partner/v1/assets" => Route::MyAssets,
        "/partner/v1/statements" => Route::MyStatements,
        "/api/partners" => Route::PartnerList,
        "/api/partners.csv" => Route::PartnerCsv,
        "/api/partners/{id}/status" => Route::PartnerStatus(p),
        "/api/partners/{id}/audit" => Route::PartnerAudit(p),
        "/api/partners/{id}/compliance" => Route::Compliance(p),
        "/api/partners/{id}/keys" => Route::Keys(p),
        "/api/partners/{id}/crm" => Route::Crm(p),
        "/api/deals" => Route::Deals,
        "/api/deals/{id}/decision" => Route::DealDecision(p),
        "/api/mdf/budgets" => Route::Budgets,
        "/api/mdf/budgets/{id}" => Route::Budget(p),
        "/api/mdf" => Route::MdfList,
        "/api/mdf/{id}/decision" => Route::MdfDecision(p),
        "/api/mdf/{id}/claim-decision" => Route::ClaimDecision(p),
        "/api/assets" => Route::Assets,
        "/api/assets/{id}" => Route::Asset(p),
        "/api/statements" => Route::Statements,
        "/portal" => Route::Portal,
        "/admin" => Route::Console,
        "/ui/{file}" => Route::Ui(p),
        "/integrations/stripe/{program}" => Route::Stripe(p),
        "/integrations/shopify/{program}" => Route::Shopify(p),
        "/api/webhooks/emit" => Route::WebhookEmit,
        "/api/webhooks/{id}" => Route::Webhook(p),
        "/api/webhooks/{id}/deliveries" => Route::WebhookDeliveries(p),
        "/api/webhooks/deliveries/{id}/replay" => Route::WebhookReplay(p),
        "/api/customers/{id}" => Route::Customer(p),
        "/api/erasures" => Route::Erasures,
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
                .replace("{code}", "x")
                .replace("{file}", "x")
                .replace("{program}", "x");
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
        assert_eq!(
            route("POST", "/partner/v1/mdf/md_1/claim"),
            Match::Found(Route::MyClaim("md_1"))
        );
        assert_eq!(
            route("GET", "/api/partners.csv"),
            Match::Found(Route::PartnerCsv)
        );
        assert_eq!(
            route("GET", "/api/partners"),
            Match::Found(Route::PartnerList)
        );
        assert_eq!(
            route("GET", "/api/partners/a/status"),
            Match::MethodNotAllowed(vec!["POST"])
        );
        assert_eq!(
            route("PUT", "/api/mdf/budgets/b1"),
            Match::Found(Route::Budget("b1"))
        );
        assert!(Route::Me.is_partner() && !Route::Me.is_operator());
        assert!(Route::Statements.is_operator() && !Route::Apply.is_partner());
        assert_eq!(
            route("POST", "/integrations/stripe/saas"),
            Match::Found(Route::Stripe("saas"))
        );
        assert_eq!(
            route("POST", "/api/webhooks/emit"),
            Match::Found(Route::WebhookEmit)
        );
        assert_eq!(
            route("PUT", "/api/webhooks/crm"),
            Match::Found(Route::Webhook("crm"))
        );
        assert_eq!(
            route("POST", "/api/webhooks/deliveries/wd_1/replay"),
            Match::Found(Route::WebhookReplay("wd_1"))
        );
        assert_eq!(
            route("GET", "/api/webhooks/crm/deliveries"),
            Match::Found(Route::WebhookDeliveries("crm"))
        );
        assert!(Route::WebhookEmit.is_webhooks() && !Route::Stripe("x").is_webhooks());
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
