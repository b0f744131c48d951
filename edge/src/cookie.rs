//! The `pt_click` cookie: read from a `Cookie` header, written on a click.

/// The click id in a `Cookie` header's `pt_click`, if it looks like one.
pub fn click_id(cookie: Option<&str>) -> Option<String> {
    if cookie.is_some_and(|c| c.len() > 8192) {
        return None;
    }
    cookie?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "pt_click")
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty() && v.len() <= crate::clickid::MAX_LEN)
}

/// The `Set-Cookie` value of a click.
pub fn set_click(click_id: &str, cookie_days: u32) -> String {
    format!(
        "pt_click={click_id}; Max-Age={}; Path=/; Secure; HttpOnly; SameSite=Lax",
        u64::from(cookie_days) * 86_400
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_click_cookie() {
        assert_eq!(click_id(Some("a=1; pt_click=abc; b=2")), Some("abc".into()));
        assert_eq!(click_id(Some("pt_click=\"abc\"")), Some("abc".into()));
        assert_eq!(click_id(Some("xpt_click=abc")), None);
        assert_eq!(click_id(Some("pt_click=")), None);
        assert_eq!(
            click_id(Some(&format!("pt_click={}", "a".repeat(65)))),
            None
        );
        assert_eq!(click_id(None), None);
        assert_eq!(
            set_click("X", 60),
            "pt_click=X; Max-Age=5184000; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
    }
}
