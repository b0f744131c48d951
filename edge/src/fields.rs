//! Field-level validation errors and readers over request fields, shared by
//! the postback, pixel and admin parsers.

use serde::Serialize;
use serde_json::{Map, Value};

/// What went wrong, and where: answered as `{"error":{"field","reason"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The JSON body of a 422 answer.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "error": self }).to_string()
    }
}

/// Request fields as ordered (name, value) string pairs, from a query
/// string, a form body or a flat JSON object.
#[derive(Clone, Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Fields, FieldError> {
        let mut f = Fields(Vec::with_capacity(pairs.len()));
        for (k, v) in pairs {
            if k.len() > 64 {
                return Err(FieldError::new("body", "field name too long"));
            }
            if f.get(&k).is_some() {
                return Err(FieldError::new(k, "given more than once"));
            }
            f.0.push((k, v));
        }
        Ok(f)
    }

    /// `a=1&b=2`, percent-decoded (invalid UTF-8 becomes U+FFFD and is then
    /// refused by the field's own check).
    pub fn from_query(q: &str) -> Result<Fields, FieldError> {
        Fields::from_pairs(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }

    /// A flat JSON object whose values are strings (null = absent).
    pub fn from_json(body: &[u8]) -> Result<Fields, FieldError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| FieldError::new("body", "not valid JSON"))?;
        if !value.is_object() {
            return Err(FieldError::new("body", "must be a JSON object"));
        }
        // the members as written: a map would keep the last of a name given
        // twice, where a signer's parser may have read the first
        let Ok(Members(members)) = serde_json::from_slice::<Members>(body) else {
            return Err(FieldError::new("body", "must be a JSON object"));
        };
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        for (k, _) in &members {
            if !seen.insert(k.as_str()) {
                return Err(FieldError::new(k.as_str(), "given more than once"));
            }
        }
        let mut pairs = Vec::with_capacity(members.len());
        for (k, v) in members {
            match v {
                Value::Null => {}
                Value::String(s) => pairs.push((k, s)),
                Value::Number(_) => {
                    return Err(FieldError::new(
                        k,
                        "must be a string (money and ids are decimal strings)",
                    ))
                }
                _ => return Err(FieldError::new(k, "must be a string")),
            }
        }
        Fields::from_pairs(pairs)
    }

    /// The fields' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value, or `None` when absent or empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, FieldError> {
        self.opt(name)
            .ok_or_else(|| FieldError::new(name, "required"))
    }

    pub fn merge_missing(&mut self, other: &Fields) {
        for (k, v) in &other.0 {
            if self.get(k).is_none() {
                self.0.push((k.clone(), v.clone()));
            }
        }
    }
}

/// A JSON object's members in order, a name given twice kept twice.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Members, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = m.next_entry::<String, Value>()? {
                    v.push(kv);
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object body for the admin API, read key by key with field errors.
pub struct Obj(Map<String, Value>);

impl Obj {
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<Obj, FieldError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| FieldError::new("body", "not valid JSON"))?;
        let Value::Object(map) = value else {
            return Err(FieldError::new("body", "must be a JSON object"));
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(FieldError::new(k.clone(), "unknown field"));
        }
        Ok(Obj(map))
    }

    pub fn value(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    pub fn str(&self, k: &str) -> Result<Option<&str>, FieldError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(FieldError::new(k, "must be a string")),
        }
    }

    pub fn req_str(&self, k: &str) -> Result<&str, FieldError> {
        self.str(k)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| FieldError::new(k, "required"))
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>, FieldError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(FieldError::new(k, "must be true or false")),
        }
    }

    pub fn u32_in(&self, k: &str, min: u32, max: u32) -> Result<Option<u32>, FieldError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| (min..=max).contains(v))
                .map(Some)
                .ok_or_else(|| {
                    FieldError::new(k, format!("must be an integer from {min} to {max}"))
                }),
            Some(_) => Err(FieldError::new(
                k,
                format!("must be an integer from {min} to {max}"),
            )),
        }
    }

    pub fn str_list(&self, k: &str, max_items: usize) -> Result<Vec<String>, FieldError> {
        match self.value(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                if items.len() > max_items {
                    return Err(FieldError::new(k, format!("at most {max_items} items")));
                }
                items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(FieldError::new(k, "must be a list of strings")),
                    })
                    .collect()
            }
            Some(_) => Err(FieldError::new(k, "must be a list of strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_json() {
        let f = Fields::from_query("program=p&amount=12.50&sub=a%20b").unwrap();
        assert_eq!(f.get("amount"), Some("12.50"));
        assert_eq!(f.get("sub"), Some("a b"));
        assert_eq!(Fields::from_query("a=1&a=2").unwrap_err().field, "a");
        let j = Fields::from_json(br#"{"program":"p","x":null}"#).unwrap();
        assert_eq!(j.get("program"), Some("p"));
        assert_eq!(j.get("x"), None);
        assert_eq!(
            Fields::from_json(br#"{"amount":12.5}"#).unwrap_err().field,
            "amount"
        );
        assert_eq!(Fields::from_json(b"[1]").unwrap_err().field, "body");
        assert_eq!(Fields::from_json(b"{bad").unwrap_err().field, "body");
        // review21 L1: a name given twice, as in a form, whatever its values
        for body in [
            br#"{"program":"p","txn_id":"A","txn_id":"B"}"#.as_slice(),
            br#"{"txn_id":null,"program":"p","txn_id":"B"}"#.as_slice(),
        ] {
            let e = Fields::from_json(body).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.reason.as_str()),
                ("txn_id", "given more than once")
            );
        }
        let f = Fields::from_query("program=p&amount=1").unwrap();
        assert_eq!(f.names().collect::<Vec<_>>(), ["program", "amount"]);
    }

    #[test]
    fn objects() {
        let o = Obj::parse(
            br#"{"cookie_days":60,"pixel":true,"hosts":["a"]}"#,
            &["cookie_days", "pixel", "hosts"],
        )
        .unwrap();
        assert_eq!(o.u32_in("cookie_days", 1, 3650).unwrap(), Some(60));
        assert_eq!(o.bool("pixel").unwrap(), Some(true));
        assert_eq!(o.str_list("hosts", 10).unwrap(), vec!["a".to_string()]);
        assert!(o.u32_in("pixel", 1, 2).is_err());
        let e = Obj::parse(br#"{"cokie_days":60}"#, &["cookie_days"])
            .err()
            .unwrap();
        assert_eq!(e.field, "cokie_days");
        let o = Obj::parse(br#"{"cookie_days":-1}"#, &["cookie_days"]).unwrap();
        assert!(o.u32_in("cookie_days", 1, 3650).is_err());
    }
}
