//! A reader of the common line by hand: one flat object whose keys are
//! [`Line`]'s fields, each at most once, whose strings have no escapes and
//! whose values have the types serde would accept. It gives the [`Line`]
//! serde_json would, or `None`, and then serde_json reads the line (an
//! escape, a nested value, an unknown or repeated key, a number written as
//! `1.0`, any error): this path decides nothing serde would decide
//! differently, it only skips the generic machinery for ten million lines
//! of one shape. The module's tests hold the two to the same result.

use super::Line;
use edge::currency::Currency;
use edge::record::{Kind, Source};
use edge::time::Timestamp;
use rust_decimal::Decimal;

/// `text` as a [`Line`] (see the module's text), or `None`.
pub fn line(text: &str) -> Option<Line<'_>> {
    let mut c = Cursor { text, i: 0 };
    let mut l = Line {
        seq: None,
        id: None,
        kind: Kind::Click,
        ts: None,
        program: None,
        partner: None,
        link: None,
        click_id: None,
        click_ts: None,
        event: None,
        txn_id: None,
        amount: None,
        currency: None,
        customer: None,
        coupon: None,
        original_txn_id: None,
        lots: None,
        instrument: None,
        source: None,
        bot: None,
        unique: None,
        country: None,
        sub: None,
        email_hash: None,
        visitor: None,
        bot_reason: None,
        referrer_host: None,
        asn: None,
        datacenter: None,
        has_referrer: None,
        status: None,
        approved_at: None,
        expires_at: None,
        status_reason: None,
        name: None,
        parent: None,
        tier: None,
        history: None,
        code: None,
        created_at: None,
        updated_at: None,
    };
    let mut kind = None;
    // the fields read so far, one bit each (a repeated key is serde's error)
    let mut seen = 0u64;
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if !c.eat_if(b'}') {
        loop {
            let key = c.string()?;
            c.ws();
            c.eat(b':')?;
            c.ws();
            // each arm gives its field's bit in `seen`
            let bit = match key {
                "seq" => {
                    l.seq = c.opt(Cursor::uint)?;
                    0
                }
                "id" => {
                    l.id = c.opt(Cursor::string)?;
                    1
                }
                "type" => {
                    kind = Some(kind_of(c.string()?)?);
                    2
                }
                "ts" => {
                    l.ts = c.opt(Cursor::timestamp)?;
                    3
                }
                "program" => {
                    l.program = c.opt(Cursor::string)?;
                    4
                }
                "partner" => {
                    l.partner = c.opt(Cursor::string)?;
                    5
                }
                "link" => {
                    l.link = c.opt(Cursor::string)?;
                    6
                }
                "click_id" => {
                    l.click_id = c.opt(Cursor::string)?;
                    7
                }
                "click_ts" => {
                    l.click_ts = c.opt(Cursor::timestamp)?;
                    8
                }
                "event" => {
                    l.event = c.opt(Cursor::string)?;
                    9
                }
                "txn_id" => {
                    l.txn_id = c.opt(Cursor::string)?;
                    10
                }
                "amount" => {
                    l.amount = c.decimal()?;
                    11
                }
                "currency" => {
                    l.currency = c.opt(|c| Currency::parse(c.string()?))?;
                    12
                }
                "customer" => {
                    l.customer = c.opt(Cursor::string)?;
                    13
                }
                "coupon" => {
                    l.coupon = c.opt(Cursor::string)?;
                    14
                }
                "original_txn_id" => {
                    l.original_txn_id = c.opt(Cursor::string)?;
                    15
                }
                "lots" => {
                    l.lots = c.decimal()?;
                    16
                }
                "instrument" => {
                    l.instrument = c.opt(Cursor::string)?;
                    17
                }
                "source" => {
                    l.source = c.opt(|c| source_of(c.string()?))?;
                    18
                }
                "bot" => {
                    l.bot = c.opt(Cursor::boolean)?;
                    19
                }
                "unique" => {
                    l.unique = c.opt(Cursor::boolean)?;
                    20
                }
                "country" => {
                    l.country = c.opt(Cursor::string)?;
                    21
                }
                "email_hash" => {
                    l.email_hash = c.opt(Cursor::string)?;
                    22
                }
                "visitor" => {
                    l.visitor = c.opt(Cursor::string)?;
                    23
                }
                "bot_reason" => {
                    l.bot_reason = c.opt(Cursor::string)?;
                    24
                }
                "referrer_host" => {
                    l.referrer_host = c.opt(Cursor::string)?;
                    25
                }
                "asn" => {
                    l.asn = match c.opt(Cursor::uint)? {
                        Some(v) => Some(u32::try_from(v).ok()?),
                        None => None,
                    };
                    26
                }
                "datacenter" => {
                    l.datacenter = c.opt(Cursor::boolean)?;
                    27
                }
                "has_referrer" => {
                    l.has_referrer = c.opt(Cursor::boolean)?;
                    28
                }
                "status" => {
                    l.status = c.opt(Cursor::string)?;
                    29
                }
                "approved_at" => {
                    l.approved_at = c.opt(Cursor::timestamp)?;
                    30
                }
                "expires_at" => {
                    l.expires_at = c.opt(Cursor::timestamp)?;
                    31
                }
                "status_reason" => {
                    l.status_reason = c.opt(Cursor::string)?;
                    32
                }
                "name" => {
                    l.name = c.opt(Cursor::string)?;
                    33
                }
                "parent" => {
                    l.parent = c.opt(Cursor::string)?;
                    34
                }
                "tier" => {
                    l.tier = c.opt(Cursor::string)?;
                    35
                }
                "code" => {
                    l.code = c.opt(Cursor::string)?;
                    36
                }
                "created_at" => {
                    l.created_at = c.opt(Cursor::timestamp)?;
                    37
                }
                "updated_at" => {
                    l.updated_at = c.opt(Cursor::timestamp)?;
                    38
                }
                // an array is left to serde: null alone is read here
                "sub" => {
                    c.null()?;
                    39
                }
                // an array is left to serde: null alone is read here
                "history" => {
                    c.null()?;
                    40
                }
                _ => return None,
            };
            if seen & 1 << bit != 0 {
                return None;
            }
            seen |= 1u64 << bit;
            c.ws();
            if c.eat_if(b'}') {
                break;
            }
            c.eat(b',')?;
            c.ws();
        }
    }
    c.ws();
    if c.i != text.len() {
        return None;
    }
    l.kind = kind?;
    Some(l)
}

fn kind_of(s: &str) -> Option<Kind> {
    Some(match s {
        "click" => Kind::Click,
        "conversion" => Kind::Conversion,
        "deal" => Kind::Deal,
        "mdf" => Kind::Mdf,
        "partner" => Kind::Partner,
        "coupon" => Kind::Coupon,
        _ => return None,
    })
}

fn source_of(s: &str) -> Option<Source> {
    Some(match s {
        "postback" => Source::Postback,
        "pixel" => Source::Pixel,
        "stripe" => Source::Stripe,
        "shopify" => Source::Shopify,
        "import" => Source::Import,
        _ => return None,
    })
}

/// A position in the line being read.
struct Cursor<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    /// JSON's whitespace.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.eat_if(b).then_some(())
    }

    fn eat_if(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn word(&mut self, w: &str) -> bool {
        let hit = self.text.as_bytes()[self.i..].starts_with(w.as_bytes());
        if hit {
            self.i += w.len();
        }
        hit
    }

    fn null(&mut self) -> Option<()> {
        self.word("null").then_some(())
    }

    /// `null` as `Some(None)`, else the value `f` reads; `None`: neither.
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.word("null") {
            return Some(None);
        }
        f(self).map(Some)
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let b = self.text.as_bytes();
        loop {
            match *b.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let s = self.text.get(start..self.i)?;
        self.i += 1;
        Some(s)
    }

    /// An unsigned integer as JSON writes it (`0` or no leading zero) that
    /// fits 64 bits and is not followed by a fraction or an exponent.
    fn uint(&mut self) -> Option<u64> {
        let b = self.text.as_bytes();
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(d) = b.get(self.i).filter(|d| d.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 || (n > 1 && b[start] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(v)
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.word("true") {
            Some(true)
        } else if self.word("false") {
            Some(false)
        } else {
            None
        }
    }

    fn timestamp(&mut self) -> Option<Timestamp> {
        Timestamp::parse(self.string()?).ok()
    }

    /// `rust_decimal::serde::str_option`: null or `""` is none, else a
    /// string read as a decimal, plain or scientific.
    fn decimal(&mut self) -> Option<Option<Decimal>> {
        if self.word("null") {
            return Some(None);
        }
        let s = self.string()?;
        if s.is_empty() {
            return Some(None);
        }
        use std::str::FromStr;
        Decimal::from_str(s)
            .or_else(|_| Decimal::from_scientific(s))
            .ok()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json reads the line as, if it reads it as a [`Line`].
    fn serde(text: &str) -> Option<Line<'_>> {
        serde_json::from_str::<Line>(text).ok()
    }

    #[test]
    fn the_common_lines_are_read_here_as_serde_reads_them() {
        for text in [
            r#"{"seq":7143,"id":"ev0000007143","type":"conversion","ts":"2026-11-01T00:30:51.206Z","program":"prop","partner":"pa8451","click_id":"k4767","click_ts":"2026-11-01T00:20:35.347Z","event":"sale","txn_id":"t0000007143","amount":"334.29","currency":"USD","customer":"cu605443","source":"postback"}"#,
            r#"{"seq":7142,"id":"ev0000007142","type":"click","ts":"2026-11-01T00:30:50.947Z","program":"fx","partner":"pa659","click_id":"k7142","bot":false}"#,
            r#"{"seq":7154,"id":"e","type":"conversion","ts":"2026-11-01T00:30:54.057Z","event":"trade","lots":"13.0","instrument":"EURUSD","asn":16509,"datacenter":true,"has_referrer":false}"#,
            r#" { "type" : "deal" , "status":"approved", "expires_at":"2026-12-01T00:00:00Z", "sub":null, "history":null } "#,
            r#"{"type":"mdf","amount":"","lots":null,"currency":null,"source":null,"seq":0}"#,
            r#"{"type":"conversion","amount":"1e2","id":"é, no escape"}"#,
            r#"{"type":"coupon"}"#,
        ] {
            let ours = line(text).unwrap_or_else(|| panic!("not read here: {text}"));
            assert_eq!(Some(ours), serde(text), "{text}");
        }
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        for text in [
            // an escape, a control character
            r#"{"type":"click","id":"a\"b"}"#,
            "{\"type\":\"click\",\"id\":\"a\tb\"}",
            // nested values, unknown or repeated keys, a missing type
            r#"{"type":"click","sub":["a",null]}"#,
            r#"{"type":"partner","history":[]}"#,
            r#"{"type":"click","whatever":1}"#,
            r#"{"type":"click","id":"a","id":"b"}"#,
            r#"{"id":"a"}"#,
            // numbers serde reads otherwise or not at all
            r#"{"type":"click","seq":1.0}"#,
            r#"{"type":"click","seq":01}"#,
            r#"{"type":"click","seq":-1}"#,
            r#"{"type":"click","seq":1e3}"#,
            r#"{"type":"click","seq":18446744073709551616}"#,
            r#"{"type":"click","asn":4294967296}"#,
            // values of the wrong type or out of their set
            r#"{"type":"click","bot":"true"}"#,
            r#"{"type":"conversion","amount":12.5}"#,
            r#"{"type":"conversion","amount":"x"}"#,
            r#"{"type":"conversion","currency":"usd"}"#,
            r#"{"type":"conversion","source":"fax"}"#,
            r#"{"type":"Click"}"#,
            r#"{"type":"click","ts":"yesterday"}"#,
            // not one whole object
            r#"{"type":"click"} x"#,
            r#"{"type":"click",}"#,
            r#"{"type":"click""#,
            "",
            "[]",
        ] {
            assert_eq!(line(text), None, "{text}");
        }
    }

    const KEYS: [&str; 41] = [
        "seq",
        "id",
        "type",
        "ts",
        "program",
        "partner",
        "link",
        "click_id",
        "click_ts",
        "event",
        "txn_id",
        "amount",
        "currency",
        "customer",
        "coupon",
        "original_txn_id",
        "lots",
        "instrument",
        "source",
        "bot",
        "unique",
        "country",
        "sub",
        "email_hash",
        "visitor",
        "bot_reason",
        "referrer_host",
        "asn",
        "datacenter",
        "has_referrer",
        "status",
        "approved_at",
        "expires_at",
        "status_reason",
        "name",
        "parent",
        "tier",
        "history",
        "code",
        "created_at",
        "updated_at",
    ];

    /// Every key once is read here (no two keys share a bit), and every key
    /// twice is left to serde, which calls it a duplicate field.
    #[test]
    fn every_key_once_is_read_and_twice_is_not() {
        let all: Vec<String> = KEYS
            .iter()
            .map(|k| match *k {
                "type" => r#""type":"click""#.to_string(),
                k => format!("\"{k}\":null"),
            })
            .collect();
        let text = format!("{{{}}}", all.join(","));
        assert_eq!(line(&text), serde(&text), "{text}");
        assert!(line(&text).is_some(), "{text}");
        for k in KEYS {
            let v = if k == "type" { r#""click""# } else { "null" };
            let text = format!(r#"{{"type":"click","{k}":{v},"{k}":{v}}}"#);
            assert_eq!(line(&text), None, "{text}");
            let err = serde_json::from_str::<Line>(&text).unwrap_err().to_string();
            assert!(err.contains("duplicate field"), "{text}: {err}");
        }
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("\"\"".to_string()),
            "[0-9]{1,21}",
            "-?[0-9]{1,3}(\\.[0-9]{1,3})?([eE][+-]?[0-9])?",
            // strings: plain, with an escape or a control character, decimals,
            // timestamps, codes
            "\"[a-zA-Z0-9_ é.-]{0,12}\"",
            "\"[a-z\\\\\"\t]{0,4}\"",
            "\"-?[0-9]{1,5}(\\.[0-9]{0,3})?([eE]-?[0-9])?\"",
            "\"2026-1[0-2]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{3})?Z\"",
            prop::sample::select(vec![
                "\"USD\"",
                "\"JPY\"",
                "\"KWD\"",
                "\"usd\"",
                "\"XXX\"",
                "\"click\"",
                "\"conversion\"",
                "\"deal\"",
                "\"mdf\"",
                "\"partner\"",
                "\"coupon\"",
                "\"postback\"",
                "\"pixel\"",
                "\"stripe\"",
                "\"shopify\"",
                "\"import\"",
                "[]",
                "[\"a\",null]",
                "{}",
            ])
            .prop_map(str::to_string),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        let mut keys = KEYS.to_vec();
        keys.extend(["other", "", "Type", "ty\\u0070e"]);
        prop::sample::select(keys).prop_map(str::to_string)
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "", "", " ", "\t", " \r\n "])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10000))]

        /// Whatever this reader accepts, serde_json reads as the same line.
        #[test]
        fn what_is_read_here_serde_reads_the_same(
            fields in prop::collection::vec((key(), value(), ws(), ws()), 0..8),
            kind in prop::sample::select(vec!["click", "conversion", "deal", "mdf", "partner", "coupon"]),
            lead in ws(),
        ) {
            let mut text = format!("{lead}{{\"type\":\"{kind}\"");
            let mut body: Vec<String> = fields
                .iter()
                .map(|(k, v, a, b)| format!("{a}\"{k}\"{b}:{a}{v}{b}"))
                .collect();
            body.retain(|f| !f.contains("\"type\""));
            for f in body {
                text.push(',');
                text.push_str(&f);
            }
            text.push('}');
            text.push_str(lead);
            if let Some(ours) = line(&text) {
                prop_assert_eq!(Some(ours), serde(&text), "{}", text);
            }
        }

        /// A record serde writes is read here, and to the same line.
        #[test]
        fn records_as_written_are_read_here(
            id in "[a-z0-9]{1,10}",
            seq in any::<u64>(),
            amount in -1_000_000i64..1_000_000,
            asn in any::<u32>(),
            ms in 0i64..4_000_000_000_000,
            bot in any::<bool>(),
        ) {
            let r = edge::record::Record {
                seq: Some(seq),
                id: Some(id),
                kind: Kind::Conversion,
                ts: Timestamp::from_ms(ms),
                amount: Some(Decimal::new(amount, 2)),
                currency: Currency::parse("EUR"),
                asn: Some(asn),
                bot: Some(bot),
                source: Some(Source::Stripe),
                ..serde_json::from_str(r#"{"type":"conversion"}"#).unwrap()
            };
            let text = serde_json::to_string(&r).unwrap();
            let ours = line(&text);
            prop_assert!(ours.is_some(), "{}", text);
            prop_assert_eq!(ours, serde(&text));
        }
    }
}
