//! Bot, prefetch and link-preview detection.
//!
//! User agents are matched against the maintained crawler-user-agents list
//! (`edge/data/`, compiled by `build.rs`): its plain literals in one
//! Aho-Corasick automaton, its few real regular expressions in one regex.
//! Both are built once per isolate on first use.

use aho_corasick::AhoCorasick;
use regex_lite::Regex;
use std::sync::OnceLock;

mod patterns {
    include!(concat!(env!("OUT_DIR"), "/bot_patterns.rs"));
}

/// Why a request is not a person's click.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BotReason {
    /// A `HEAD` request (link checkers, unfurlers).
    Head,
    /// A browser prefetch or prerender (`Purpose`/`Sec-Purpose: prefetch`).
    Prefetch,
    /// A link-preview crawler (chat apps, social networks).
    Preview,
    /// A known crawler, monitor, scanner or HTTP library.
    Crawler,
    /// No user agent at all.
    NoAgent,
}

impl BotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BotReason::Head => "head",
            BotReason::Prefetch => "prefetch",
            BotReason::Preview => "preview",
            BotReason::Crawler => "crawler",
            BotReason::NoAgent => "no_user_agent",
        }
    }
}

/// The request facts the classifier looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Signals<'a> {
    pub method: &'a str,
    pub user_agent: Option<&'a str>,
    /// `Purpose`, `Sec-Purpose`, `X-Purpose` or `X-Moz` header values.
    pub purpose: Option<&'a str>,
}

struct Matcher {
    /// Crawler literals, then the regex prefilter literals.
    automaton: AhoCorasick,
    regexes: Vec<(Regex, u8)>,
    /// For automaton patterns past the literals: the expression each guards.
    guards: Vec<usize>,
    /// Expressions without a usable prefilter: always run.
    always: Vec<usize>,
}

fn matcher() -> &'static Option<Matcher> {
    static M: OnceLock<Option<Matcher>> = OnceLock::new();
    M.get_or_init(|| {
        let needles = patterns::LITERALS.iter().map(|(p, _)| *p).chain(
            patterns::PREFILTERS
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| !p.is_empty()),
        );
        let automaton = AhoCorasick::new(needles).ok()?;
        let regexes = patterns::REGEXES
            .iter()
            .filter_map(|(p, c)| Some((Regex::new(p).ok()?, *c)))
            .collect::<Vec<_>>();
        if regexes.len() != patterns::REGEXES.len() {
            return None;
        }
        let always = patterns::PREFILTERS
            .iter()
            .filter(|(p, _)| p.is_empty())
            .map(|(_, i)| *i)
            .collect();
        let guards = patterns::PREFILTERS
            .iter()
            .filter(|(p, _)| !p.is_empty())
            .map(|(_, i)| *i)
            .collect();
        Some(Matcher {
            automaton,
            regexes,
            guards,
            always,
        })
    })
}

/// Number of patterns compiled in (for docs and tests).
pub fn pattern_count() -> usize {
    patterns::LITERALS.len() + patterns::REGEXES.len()
}

/// Classifies a user agent alone.
pub fn classify_agent(user_agent: &str) -> Option<BotReason> {
    let ua = user_agent.trim();
    if ua.is_empty() {
        return Some(BotReason::NoAgent);
    }
    let m = matcher().as_ref()?;
    let literal_count = patterns::LITERALS.len();
    let mut hit: Option<u8> = None;
    let mut candidates: Vec<usize> = Vec::new();
    for found in m.automaton.find_overlapping_iter(ua) {
        let i = found.pattern().as_usize();
        if i < literal_count {
            let class = patterns::LITERALS[i].1;
            hit = Some(hit.map_or(class, |h| h.max(class)));
            if class == 1 {
                break;
            }
        } else if let Some(r) = m.guards.get(i - literal_count) {
            candidates.push(*r);
        }
    }
    if hit.is_none() {
        for i in candidates.iter().chain(&m.always) {
            if let Some((re, class)) = m.regexes.get(*i) {
                if re.is_match(ua) {
                    hit = Some(*class);
                    break;
                }
            }
        }
    }
    hit.map(|class| {
        if class == 1 {
            BotReason::Preview
        } else {
            BotReason::Crawler
        }
    })
}

/// Classifies a request: `None` for what looks like a person's click.
pub fn classify(s: &Signals<'_>) -> Option<BotReason> {
    if s.method.eq_ignore_ascii_case("HEAD") {
        return Some(BotReason::Head);
    }
    if let Some(p) = s.purpose {
        let p = p.to_ascii_lowercase();
        if p.contains("prefetch") || p.contains("prerender") || p.contains("preview") {
            return Some(BotReason::Prefetch);
        }
    }
    classify_agent(s.user_agent.unwrap_or(""))
}

// ---------------------------------------------------------------- hosting networks

const HOSTING_DATA: &[u8] = include_bytes!("../data/hosting-asns.txt");

/// The hosting and cloud ASNs of `data/hosting-asns.txt`, ascending: parsed
/// and checked (strictly ascending) at compile time, so the worker carries
/// a plain sorted array and no parser.
pub static HOSTING_ASNS: [u32; hosting::count(HOSTING_DATA)] = hosting::parse(HOSTING_DATA);

/// Whether an autonomous system is a hosting or cloud network (a click from
/// it comes from a server, not a person's connection).
pub fn is_hosting_asn(asn: u32) -> bool {
    HOSTING_ASNS.binary_search(&asn).is_ok()
}

mod hosting {
    /// `(start of the next line, the line's ASN if it has one)`.
    const fn line(d: &[u8], mut i: usize) -> (usize, Option<u32>) {
        while i < d.len() && (d[i] == b' ' || d[i] == b'\t') {
            i += 1;
        }
        let mut asn: Option<u32> = None;
        if i < d.len() && d[i] != b'#' && d[i] != b'\n' && d[i] != b'\r' {
            let mut v: u32 = 0;
            let mut digits = 0;
            while i < d.len() && d[i].is_ascii_digit() {
                v = v * 10 + (d[i] - b'0') as u32;
                digits += 1;
                i += 1;
            }
            assert!(digits > 0, "hosting-asns.txt: a line starts with its ASN");
            asn = Some(v);
        }
        while i < d.len() && d[i] != b'\n' {
            i += 1;
        }
        (i + 1, asn)
    }

    pub const fn count(d: &[u8]) -> usize {
        let (mut i, mut n) = (0, 0);
        while i < d.len() {
            let (next, asn) = line(d, i);
            if asn.is_some() {
                n += 1;
            }
            i = next;
        }
        n
    }

    pub const fn parse<const N: usize>(d: &[u8]) -> [u32; N] {
        let mut out = [0u32; N];
        let (mut i, mut n) = (0, 0);
        while i < d.len() {
            let (next, asn) = line(d, i);
            if let Some(a) = asn {
                assert!(
                    n == 0 || a > out[n - 1],
                    "hosting-asns.txt: ASNs must be strictly ascending"
                );
                out[n] = a;
                n += 1;
            }
            i = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEOPLE: &[&str] = &[
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "Mozilla/5.0 (Linux; Android 13; CUBOT KINGKONG 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    ];

    #[test]
    fn people_are_people() {
        for ua in PEOPLE {
            assert_eq!(classify_agent(ua), None, "{ua}");
            let s = Signals {
                method: "GET",
                user_agent: Some(ua),
                purpose: None,
            };
            assert_eq!(classify(&s), None);
        }
    }

    #[test]
    fn every_listed_instance_is_a_bot() {
        // The maintained list ships example user agents for each pattern.
        let text = include_str!("../data/crawler-user-agents.json");
        let list: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        let mut checked = 0;
        for entry in &list {
            let preview = entry["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "social-preview"));
            for ua in entry["instances"].as_array().into_iter().flatten() {
                let ua = ua.as_str().unwrap();
                let got = classify_agent(ua);
                assert!(got.is_some(), "not detected: {ua}");
                if preview {
                    assert_eq!(got, Some(BotReason::Preview), "{ua}");
                }
                checked += 1;
            }
        }
        assert!(checked > 1500, "only {checked} instances");
        assert!(pattern_count() > 1000);
    }

    #[test]
    fn request_signals() {
        let ua = Some(PEOPLE[0]);
        let head = Signals {
            method: "HEAD",
            user_agent: ua,
            purpose: None,
        };
        assert_eq!(classify(&head), Some(BotReason::Head));
        let pre = Signals {
            method: "GET",
            user_agent: ua,
            purpose: Some("prefetch;prerender"),
        };
        assert_eq!(classify(&pre), Some(BotReason::Prefetch));
        let none = Signals {
            method: "GET",
            user_agent: None,
            purpose: None,
        };
        assert_eq!(classify(&none), Some(BotReason::NoAgent));
        let slack = Signals {
            method: "GET",
            user_agent: Some("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"),
            purpose: None,
        };
        assert_eq!(classify(&slack), Some(BotReason::Preview));
        let curl = Signals {
            method: "GET",
            user_agent: Some("curl/8.5.0"),
            purpose: None,
        };
        assert_eq!(classify(&curl), Some(BotReason::Crawler));
    }

    #[test]
    fn hosting_networks() {
        assert!(HOSTING_ASNS.len() >= 50);
        assert!(HOSTING_ASNS.windows(2).all(|w| w[0] < w[1]));
        for asn in [
            16509, 14618, 15169, 396982, 8075, 14061, 16276, 24940, 63949, 20473,
        ] {
            assert!(is_hosting_asn(asn), "{asn}");
        }
        // consumer networks: Comcast, Deutsche Telekom, Verizon Wireless, Cloudflare WARP
        for asn in [7922, 3320, 22394, 13335, 0] {
            assert!(!is_hosting_asn(asn), "{asn}");
        }
        let listed = include_str!("../data/hosting-asns.txt")
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count();
        assert_eq!(listed, HOSTING_ASNS.len());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_agent_is_classified_without_panic(ua in "\\PC{0,400}") {
            let _ = classify_agent(&ua);
        }
    }
}
