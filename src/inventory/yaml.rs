//! Positioned YAML: the one way dffmpeg reads configuration (the inventory,
//! the playbooks). A document is first read into a tree in which every key
//! and value keeps its line and column, then each reader checks its rules on
//! that tree, so that an error points at the offending key or value —
//! `file:line:column: what is wrong` — and an unknown word gets a
//! did-you-mean.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
pub use serde_saphyr::Spanned;

/// One YAML value, as serde-saphyr resolved its scalar type.
#[derive(Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Value>>),
    Map(Vec<(Spanned<String>, Spanned<Value>)>),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> std::result::Result<Value, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_i128<E>(self, n: i128) -> std::result::Result<Value, E> {
        Ok(Value::Int(n))
    }
    fn visit_u128<E>(self, n: u128) -> std::result::Result<Value, E> {
        Ok(Value::Int(i128::try_from(n).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E>(self, n: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(n))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = a.next_key()? {
            let value = a.next_value()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

/// The `key: value` entries of a mapping, in the order written.
pub type Entries = [(Spanned<String>, Spanned<Value>)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where a key or value is written.
pub fn pos<T>(s: &Spanned<T>) -> Pos {
    let (line, column) = (s.referenced.line(), s.referenced.column());
    if line == 0 {
        // Unknown location (should not happen for string input).
        return Pos { line: 1, column: 1 };
    }
    Pos { line: line as usize, column: column as usize }
}

/// What a value is, for messages ("not a list").
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::Str(_) => "text",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
    }
}

/// A value as JSON, for what is handed on untyped (playbook variables and
/// module arguments). Integers beyond 64 bits and non-finite floats become
/// null, as serde_json reads them.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(n) => match (i64::try_from(*n), u64::try_from(*n)) {
            (Ok(i), _) => Json::from(i),
            (_, Ok(u)) => Json::from(u),
            _ => Json::Null,
        },
        Value::Float(x) => Json::from(*x),
        Value::Str(s) => Json::String(s.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(|i| to_json(&i.value)).collect()),
        Value::Map(entries) => {
            Json::Object(entries.iter().map(|(k, v)| (k.value.clone(), to_json(&v.value))).collect())
        }
    }
}

/// A configuration error: `file:line:column: message`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Error {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Reads one file's values; every error names the file and the position.
pub struct Reader<'a> {
    pub file: &'a str,
    /// Names people reach for elsewhere (Ansible, ssh_config), and ours:
    /// an unknown key that is one of them gets ours as its did-you-mean.
    pub aliases: &'a [(&'a str, &'a str)],
}

impl Reader<'_> {
    pub fn err(&self, at: Pos, message: impl Into<String>) -> Error {
        Error { file: self.file.to_string(), line: at.line, column: at.column, message: message.into() }
    }

    /// The document of `text`; an empty text is `Null`.
    pub fn read(&self, text: &str) -> Result<Spanned<Value>> {
        serde_saphyr::from_str(text).map_err(|e| self.yaml_error(&e))
    }

    fn yaml_error(&self, e: &serde_saphyr::Error) -> Error {
        let at = e
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| Pos { line: l.line() as usize, column: l.column() as usize })
            .unwrap_or(Pos { line: 1, column: 1 });
        let mut msg = e.without_snippet().to_string();
        let suffix = format!(" at line {}, column {}", at.line, at.column);
        if let Some(m) = msg.strip_suffix(&suffix) {
            msg = m.to_string();
        }
        if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
            let key = rest.split(", set DuplicateKeyPolicy").next().unwrap_or(rest);
            msg = format!("duplicate key `{key}`: each key, and each node name, may appear only once");
        }
        self.err(at, format!("invalid YAML: {msg}"))
    }

    /// The entries of a mapping; `~` (nothing) counts as an empty mapping.
    pub fn entries<'v>(&self, v: &'v Spanned<Value>, what: &str) -> Result<&'v Entries> {
        match &v.value {
            Value::Map(e) => Ok(e),
            Value::Null => Ok(&[]),
            other => Err(self
                .err(pos(v), format!("{what} must be a mapping of `key: value` lines, not {}", kind(other)))),
        }
    }

    pub fn unknown_key(&self, key: &Spanned<String>, known: &[&str], place: &str) -> Error {
        self.err(
            pos(key),
            format!("unknown key `{}` {place}; {}", key.value, self.did_you_mean(&key.value, known)),
        )
    }

    /// `did you mean `x`?`, or the list of what is known.
    pub fn did_you_mean(&self, word: &str, known: &[&str]) -> String {
        match closest(word, known, self.aliases) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("expected one of: {}", known.join(", ")),
        }
    }

    /// A single scalar as text (numbers and booleans as written).
    pub fn text(&self, key: &str, v: &Spanned<Value>) -> Result<String> {
        let s = match &v.value {
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => return Err(self.err(pos(v), format!("`{key}` needs a value"))),
            other => {
                return Err(self.err(pos(v), format!("`{key}` must be a single value, not {}", kind(other))))
            }
        };
        if s.trim().is_empty() {
            return Err(self.err(pos(v), format!("`{key}` is empty")));
        }
        Ok(s)
    }

    pub fn boolean(&self, key: &str, v: &Spanned<Value>) -> Result<bool> {
        match &v.value {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) if s == "true" || s == "false" => Ok(s == "true"),
            other => Err(self.err(pos(v), format!("`{key}` must be true or false, not {}", kind(other)))),
        }
    }

    /// A value as written, for messages (`bad port `abc``).
    pub fn shown(&self, v: &Spanned<Value>) -> String {
        match &v.value {
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            other => kind(other).to_string(),
        }
    }
}

/// Edit distance counting an adjacent transposition as one edit
/// (optimal string alignment, from `strsim`), on lowercase characters.
pub fn distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(&a.to_lowercase(), &b.to_lowercase())
}

/// The known word closest to `word`, if it is close enough to be a typo
/// (or `word` is an alias of it).
pub fn closest<'k>(word: &str, known: &[&'k str], aliases: &[(&str, &str)]) -> Option<&'k str> {
    let lower = word.to_lowercase();
    if let Some((_, to)) = aliases.iter().find(|(from, _)| *from == lower) {
        if let Some(k) = known.iter().find(|k| *k == to) {
            return Some(k);
        }
    }
    if lower.chars().count() >= 3 {
        if let Some(k) = known.iter().find(|k| k.starts_with(&lower) || lower.starts_with(*k)) {
            return Some(k);
        }
    }
    known
        .iter()
        .map(|k| (distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_distance() {
        let known = &["host", "port", "identity_file"];
        assert_eq!(distance("hots", "host"), 1);
        assert_eq!(distance("roles", "roles"), 0);
        assert_eq!(closest("Host", known, &[]), Some("host"));
        assert_eq!(closest("identity", known, &[]), Some("identity_file"));
        assert_eq!(closest("colour", known, &[]), None);
        assert_eq!(closest("ip", known, &[("ip", "host")]), Some("host"));
    }

    #[test]
    fn values_as_json_and_positions() {
        let r = Reader { file: "f.yaml", aliases: &[] };
        let doc = r.read("a: [1, -2, 2.5, x, true, ~]\nb: { c: 18446744073709551615 }\n").unwrap();
        let json = to_json(&doc.value);
        assert_eq!(json, serde_json::json!({"a": [1, -2, 2.5, "x", true, null], "b": {"c": u64::MAX}}));
        let entries = r.entries(&doc, "the file").unwrap();
        assert_eq!(pos(&entries[1].0), Pos { line: 2, column: 1 });
        let e = r.read("a: [").unwrap_err();
        assert!(e.to_string().starts_with("f.yaml:") && e.message.starts_with("invalid YAML"), "{e}");
    }
}
