//! A request's parameters: its JSON body's fields, and its query string's for those the body
//! does not give. Read as Vault reads them (a number may come as `"5"`, a list as `"1,2"`, a
//! duration as `"1h"`); a field of the wrong type is refused with its name.

use serde_json::{Map, Value};

use super::reply::Failure;

#[derive(Default)]
pub(crate) struct Params {
    map: Map<String, Value>,
}

impl Params {
    /// The parameters of a request: `body` must be empty or one JSON object.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Result<Params, Failure> {
        let mut map = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map,
                // `bao write -f` sends `null` for "no fields".
                Ok(Value::Null) => Map::new(),
                Ok(_) => {
                    return Err(Failure::bad_request(
                        "the request body must be a JSON object",
                    ));
                }
                Err(e) => {
                    return Err(Failure::bad_request(format!(
                        "the request body is not valid JSON: {e}"
                    )));
                }
            }
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(key), Some(value)) = (form_decode(key), form_decode(value)) else {
                return Err(Failure::bad_request(
                    "the query string is not valid percent-encoded UTF-8",
                ));
            };
            map.entry(key).or_insert(Value::String(value));
        }
        Ok(Params { map })
    }

    /// The parameters of one item of a batch (`batch_input`).
    pub fn item(value: &Value, index: usize) -> Result<Params, Failure> {
        match value {
            Value::Object(map) => Ok(Params { map: map.clone() }),
            _ => Err(Failure::field(
                &format!("batch_input[{index}]"),
                "must be an object",
            )),
        }
    }

    /// The parameters of an object field (`options` of a KV write).
    pub fn nested(&self, name: &str) -> Result<Option<Params>, Failure> {
        Ok(self.object(name)?.map(|map| Params { map: map.clone() }))
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A text field (a number or boolean is taken as its text, as Vault does).
    pub fn str(&self, name: &str) -> Result<Option<String>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(Failure::field(name, "must be a string")),
        }
    }

    /// A text field that must be there.
    pub fn required(&self, name: &str) -> Result<String, Failure> {
        self.str(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Failure::field(name, "missing"))
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| Failure::field(name, "must be a whole number of at least 0")),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Failure::field(name, format!("must be a whole number, got {s:?}"))),
            Some(_) => Err(Failure::field(name, "must be a number")),
        }
    }

    pub fn u32(&self, name: &str) -> Result<Option<u32>, Failure> {
        self.u64(name)?
            .map(|n| u32::try_from(n).map_err(|_| Failure::field(name, "is too large")))
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.trim() {
                "" => Ok(None),
                "true" | "1" | "t" | "True" | "TRUE" => Ok(Some(true)),
                "false" | "0" | "f" | "False" | "FALSE" => Ok(Some(false)),
                other => Err(Failure::field(
                    name,
                    format!("must be true or false, got {other:?}"),
                )),
            },
            Some(Value::Number(n)) => Ok(Some(n.as_u64() != Some(0))),
            Some(_) => Err(Failure::field(name, "must be true or false")),
        }
    }

    /// A duration: seconds as a number, or Go's form (`90`, `90s`, `15m`, `1h30m`, `7d`).
    pub fn seconds(&self, name: &str) -> Result<Option<u64>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| Failure::field(name, "must be a number of seconds")),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => parse_duration(s.trim()).map(Some).ok_or_else(|| {
                Failure::field(
                    name,
                    format!("not a duration: {s:?} (e.g. 3600, 90s, 15m, 1h)"),
                )
            }),
            Some(_) => Err(Failure::field(name, "must be a duration")),
        }
    }

    /// A list of text: a JSON array of strings, or one comma-separated string.
    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(Failure::field(name, "must be a list of strings")),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(Value::String(s)) => Ok(Some(
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
            )),
            Some(_) => Err(Failure::field(name, "must be a list of strings")),
        }
    }

    /// A list of whole numbers: a JSON array (of numbers or numeric strings), or `"1,2"`.
    pub fn u64s(&self, name: &str) -> Result<Option<Vec<u64>>, Failure> {
        let bad = || Failure::field(name, "must be a list of whole numbers");
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Number(n) => n.as_u64().ok_or_else(bad),
                    Value::String(s) => s.trim().parse().map_err(|_| bad()),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(Value::String(s)) => s
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.trim().parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()
                .map(Some),
            Some(Value::Number(n)) => n.as_u64().map(|n| Some(vec![n])).ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }

    pub fn object(&self, name: &str) -> Result<Option<&Map<String, Value>>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(Failure::field(name, "must be an object")),
        }
    }

    pub fn array(&self, name: &str) -> Result<Option<&Vec<Value>>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(Failure::field(name, "must be a list")),
        }
    }

    /// Refuses a field this vault does not support, naming it and why.
    pub fn unsupported(&self, name: &str, why: &str) -> Result<(), Failure> {
        match self.get(name) {
            None | Some(Value::Bool(false)) => Ok(()),
            Some(Value::String(s)) if s.is_empty() || s == "false" => Ok(()),
            Some(Value::Array(items)) if items.is_empty() => Ok(()),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(()),
            Some(_) => Err(Failure::field(name, format!("not supported: {why}"))),
        }
    }
}

/// A request's parameters may hold secret values (a KV write, a plaintext, a share, a
/// secret id): their text is zeroized when the parameters are dropped.
impl Drop for Params {
    fn drop(&mut self) {
        scrub_map(&mut self.map);
    }
}

fn scrub_map(map: &mut Map<String, Value>) {
    for value in map.values_mut() {
        scrub(value);
    }
}

fn scrub(value: &mut Value) {
    match value {
        Value::String(text) => zeroize::Zeroize::zeroize(text),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => scrub_map(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Go's duration form, in whole seconds; a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(scale)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Decodes one part of a query string (`+` is a space).
fn form_decode(text: &str) -> Option<String> {
    super::decode_escapes(&text.replace('+', " "), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration(""), Some(0));
    }

    #[test]
    fn fields_of_the_wrong_type_are_named() {
        let params = Params::parse(
            Some("version=x&list=true"),
            br#"{"cas": "two", "n": [1, "2"]}"#,
        )
        .unwrap_or_default();
        assert!(
            params
                .u64("cas")
                .err()
                .is_some_and(|f| f.message().starts_with("cas:"))
        );
        assert!(
            params
                .u64("version")
                .err()
                .is_some_and(|f| f.message().starts_with("version:"))
        );
        assert_eq!(params.bool("list").ok().flatten(), Some(true));
        assert_eq!(params.u64s("n").ok().flatten(), Some(vec![1, 2]));
        assert!(Params::parse(None, b"[1]").is_err());
        assert!(Params::parse(None, b"{").is_err());
    }
}
