//! `EventValidator`: vouches that one JSON message is a valid event of this schema version,
//! without building a Python object, and reads its time.
//!
//! It is built from the JSON Schema msgspec derives from `sysmetrics.schema` (the schema stays
//! defined once, in Python) and answers yes only where msgspec's decoder surely agrees: it is
//! stricter on purpose (no duplicate keys at any level, no unknown field, only `Z` times with at
//! most six fraction digits, integers within 64 bits). Whatever it does not vouch for goes to
//! the Python decoder, which accepts it, keeps a newer version's fields or says what is wrong.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use regex::Regex;
use serde_json::Value;

type Checked<T> = Result<T, ()>;

#[derive(Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
}

#[derive(Default)]
struct Range {
    min: Option<Bound>,
    max: Option<Bound>,
}

impl Range {
    fn admits(&self, value: f64) -> bool {
        let above = self.min.is_none_or(|b| if b.exclusive { value > b.value } else { value >= b.value });
        let below = self.max.is_none_or(|b| if b.exclusive { value < b.value } else { value <= b.value });
        above && below
    }
}

enum Literal {
    Int(i64),
    Text(String),
}

enum Node {
    Null,
    Bool,
    Integer(Range),
    Number(Range),
    Text { max_chars: Option<usize>, pattern: Option<Regex>, date_time: bool },
    Enum(Vec<Literal>),
    Array(usize),
    Object { fields: Vec<(String, usize)>, required: Vec<usize> },
    AnyOf(Vec<usize>),
    /// `anyOf: [T, null]` (every optional field): only `null` starts with `n`, so one byte
    /// picks the branch.
    Nullable(usize),
}

/// The schema compiled to a flat list of nodes; `$ref`s resolve to their definition's index.
struct Compiler<'a> {
    defs: &'a serde_json::Map<String, Value>,
    nodes: Vec<Node>,
    by_ref: HashMap<String, usize>,
}

const IGNORED: [&str; 3] = ["title", "description", "default"];

fn err(what: impl Into<String>) -> PyErr {
    PyValueError::new_err(what.into())
}

impl<'a> Compiler<'a> {
    fn compile(&mut self, schema: &Value) -> PyResult<usize> {
        let object = schema.as_object().ok_or_else(|| err("a schema node is not an object"))?;
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            return self.reference(reference);
        }
        let known = |k: &str| object.contains_key(k);
        let node = if let Some(options) = object.get("anyOf").and_then(Value::as_array) {
            let options = options.iter().map(|o| self.compile(o)).collect::<PyResult<Vec<_>>>()?;
            self.check_keys(object, &["anyOf"])?;
            match options[..] {
                [other, null] | [null, other] if matches!(self.nodes[null], Node::Null) => Node::Nullable(other),
                _ => Node::AnyOf(options),
            }
        } else if let Some(values) = object.get("enum").and_then(Value::as_array) {
            self.check_keys(object, &["enum"])?;
            Node::Enum(
                values
                    .iter()
                    .map(|v| match v {
                        Value::Number(n) if n.is_i64() => Ok(Literal::Int(n.as_i64().unwrap_or(0))),
                        Value::String(s) => Ok(Literal::Text(s.clone())),
                        _ => Err(err(format!("enum value {v} is not supported"))),
                    })
                    .collect::<PyResult<_>>()?,
            )
        } else {
            let kind = object.get("type").and_then(Value::as_str).ok_or_else(|| err("no type"))?;
            match kind {
                "null" => {
                    self.check_keys(object, &["type"])?;
                    Node::Null
                }
                "boolean" => {
                    self.check_keys(object, &["type"])?;
                    Node::Bool
                }
                "integer" | "number" => {
                    let keys = ["type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];
                    self.check_keys(object, &keys)?;
                    let bound = |inclusive: &str, exclusive: &str| -> Option<Bound> {
                        let (value, exclusive) = match object.get(exclusive) {
                            Some(v) => (v.as_f64()?, true),
                            None => (object.get(inclusive)?.as_f64()?, false),
                        };
                        Some(Bound { value, exclusive })
                    };
                    if known("minimum") && known("exclusiveMinimum")
                        || known("maximum") && known("exclusiveMaximum")
                    {
                        return Err(err("both an inclusive and an exclusive bound"));
                    }
                    let range = Range {
                        min: bound("minimum", "exclusiveMinimum"),
                        max: bound("maximum", "exclusiveMaximum"),
                    };
                    if kind == "integer" { Node::Integer(range) } else { Node::Number(range) }
                }
                "string" => {
                    self.check_keys(object, &["type", "maxLength", "pattern", "format"])?;
                    let date_time = match object.get("format").and_then(Value::as_str) {
                        None => false,
                        Some("date-time") => true,
                        Some(other) => return Err(err(format!("string format {other}"))),
                    };
                    let pattern = match object.get("pattern").and_then(Value::as_str) {
                        None => None,
                        Some(p) => Some(python_pattern(p)?),
                    };
                    let max_chars = object.get("maxLength").and_then(Value::as_u64).map(|n| n as usize);
                    Node::Text { max_chars, pattern, date_time }
                }
                "array" => {
                    self.check_keys(object, &["type", "items"])?;
                    let items = object.get("items").ok_or_else(|| err("an array without items"))?;
                    Node::Array(self.compile(items)?)
                }
                "object" => {
                    self.check_keys(object, &["type", "properties", "required", "additionalProperties"])?;
                    if object.get("additionalProperties") != Some(&Value::Bool(false)) {
                        return Err(err("an object that admits unknown fields"));
                    }
                    let mut fields = Vec::new();
                    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
                        for (name, property) in properties {
                            fields.push((name.clone(), self.compile(property)?));
                        }
                    }
                    let mut required = Vec::new();
                    for name in object.get("required").and_then(Value::as_array).into_iter().flatten() {
                        let name = name.as_str().ok_or_else(|| err("a required name"))?;
                        let index = fields.iter().position(|(f, _)| f == name);
                        required.push(index.ok_or_else(|| err(format!("required {name} is no field")))?);
                    }
                    if fields.len() > 128 {
                        return Err(err("more than 128 fields in one object"));
                    }
                    Node::Object { fields, required }
                }
                other => return Err(err(format!("type {other}"))),
            }
        };
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// A keyword this compiler does not know would be a constraint it silently skips: refuse.
    fn check_keys(&self, object: &serde_json::Map<String, Value>, allowed: &[&str]) -> PyResult<()> {
        match object.keys().find(|k| !allowed.contains(&k.as_str()) && !IGNORED.contains(&k.as_str())) {
            Some(key) => Err(err(format!("schema keyword {key} is not supported"))),
            None => Ok(()),
        }
    }

    fn reference(&mut self, reference: &str) -> PyResult<usize> {
        if let Some(&index) = self.by_ref.get(reference) {
            return Ok(index);
        }
        let name = reference.strip_prefix("#/$defs/").ok_or_else(|| err(format!("$ref {reference}")))?;
        let definition = self.defs.get(name).ok_or_else(|| err(format!("no definition {name}")))?;
        let index = self.compile(definition)?;
        self.by_ref.insert(reference.to_owned(), index);
        Ok(index)
    }
}

/// Python's `re.search` pattern as a Rust regex. The one lookaround msgspec's schema uses,
/// `(?![\s\S])` at the end ("nothing follows"), is `\z`; any other fails to compile, and `$`
/// is stricter in Rust (Python's also matches before a final newline), which is safe here.
fn python_pattern(pattern: &str) -> PyResult<Regex> {
    let translated = match pattern.strip_suffix(r"(?![\s\S])") {
        Some(head) => format!(r"{head}\z"),
        None => pattern.to_owned(),
    };
    Regex::new(&translated).map_err(|e| err(format!("pattern {pattern}: {e}")))
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` as microseconds since the epoch; anything else is refused.
fn utc_micros(text: &str) -> Checked<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(());
    }
    let digits = |range: std::ops::Range<usize>| -> Checked<i64> {
        let part = b.get(range).ok_or(())?;
        if part.iter().all(u8::is_ascii_digit) {
            Ok(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        } else {
            Err(())
        }
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return Err(());
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(());
    }
    let mut micros = 0;
    let rest = &b[19..];
    let zone = if rest[0] == b'.' {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 6 {
            return Err(());
        }
        micros = digits(20..20 + n)? * 10_i64.pow(6 - n as u32);
        &rest[1 + n..]
    } else {
        rest
    };
    if zone != b"Z" {
        return Err(());
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    Ok(seconds * 1_000_000 + micros)
}

impl<'a> Parser<'a> {
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline(always)]
    fn literal<const N: usize>(&mut self, word: &[u8; N]) -> Checked<()> {
        // A fixed-size comparison the compiler inlines (these are 1 to 5 bytes).
        if self.bytes.get(self.pos..self.pos + N) == Some(word.as_slice()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    /// Whether `"name"` is at `pos`, byte for byte.
    #[inline(always)]
    fn quoted_name_at(&self, name: &str) -> bool {
        let end = self.pos + name.len() + 1;
        self.bytes.get(self.pos) == Some(&b'"')
            && self.bytes.get(self.pos + 1..end) == Some(name.as_bytes())
            && self.bytes.get(end) == Some(&b'"')
    }

    fn hex4(&mut self) -> Checked<u32> {
        let part = self.text.get(self.pos..self.pos + 4).ok_or(())?;
        let value = u32::from_str_radix(part, 16).map_err(|_| ())?;
        if !part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(());
        }
        self.pos += 4;
        Ok(value)
    }

    /// A string at `pos` (its opening quote), unescaped; a lone surrogate is refused.
    fn string(&mut self) -> Checked<std::borrow::Cow<'a, str>> {
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(());
        }
        self.pos += 1;
        let start = self.pos;
        // The first quote or backslash (memchr: a word at a time); the common string has no
        // escape and ends there, and then only its control characters are left to refuse.
        let stop = memchr::memchr2(b'"', b'\\', &self.bytes[start..]).ok_or(())? + start;
        if self.bytes[start..stop].iter().any(|&c| c < 0x20) {
            return Err(());
        }
        self.pos = stop;
        if self.bytes[stop] == b'"' {
            self.pos += 1;
            return Ok(std::borrow::Cow::Borrowed(&self.text[start..stop]));
        }
        let mut out = String::from(&self.text[start..self.pos]);
        loop {
            match *self.bytes.get(self.pos).ok_or(())? {
                b'"' => {
                    self.pos += 1;
                    return Ok(std::borrow::Cow::Owned(out));
                }
                b'\\' => {
                    self.pos += 1;
                    let escape = *self.bytes.get(self.pos).ok_or(())?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&high) {
                                self.literal(b"\\u")?;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    return Err(());
                                }
                                0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
                            } else {
                                high
                            };
                            out.push(char::from_u32(code).ok_or(())?);
                        }
                        _ => return Err(()),
                    }
                }
                c if c < 0x20 => return Err(()),
                _ => {
                    let ch = self.text[self.pos..].chars().next().ok_or(())?;
                    out.push(ch);
                    self.pos += ch.len_utf8();
                }
            }
        }
    }

    /// A number's text, and whether it is written as an integer (no fraction, no exponent).
    fn number(&mut self) -> Checked<(&'a str, bool)> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while p.bytes.get(p.pos).is_some_and(u8::is_ascii_digit) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let whole = digits(self);
        if whole == 0 || whole > 1 && self.bytes[self.pos - whole] == b'0' {
            return Err(());
        }
        let mut integer = true;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            integer = false;
            if digits(self) == 0 {
                return Err(());
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(());
            }
        }
        Ok((&self.text[start..self.pos], integer))
    }

    fn value(&mut self, nodes: &[Node], node: usize) -> Checked<()> {
        self.ws();
        match &nodes[node] {
            Node::Null => self.literal(b"null"),
            Node::Bool => self.literal(b"true").or_else(|()| self.literal(b"false")),
            Node::Integer(range) => {
                let (text, integer) = self.number()?;
                let value: i64 = if integer { text.parse().map_err(|_| ())? } else { return Err(()) };
                if range.admits(value as f64) { Ok(()) } else { Err(()) }
            }
            Node::Number(range) => {
                let (text, integer) = self.number()?;
                let value = if integer {
                    text.parse::<i64>().map_err(|_| ())? as f64
                } else {
                    text.parse::<f64>().map_err(|_| ())?
                };
                if value.is_finite() && range.admits(value) { Ok(()) } else { Err(()) }
            }
            Node::Text { max_chars, pattern, date_time } => {
                let text = self.string()?;
                // A string's characters are at most its bytes: count only a long one.
                if max_chars.is_some_and(|n| text.len() > n && text.chars().count() > n)
                    || pattern.as_ref().is_some_and(|p| !p.is_match(&text))
                    || *date_time && utc_micros(&text).is_err()
                {
                    return Err(());
                }
                Ok(())
            }
            Node::Enum(values) => {
                let admitted = match self.bytes.get(self.pos) {
                    Some(b'"') => {
                        let text = self.string()?;
                        values.iter().any(|v| matches!(v, Literal::Text(t) if *t == *text))
                    }
                    _ => {
                        let (text, integer) = self.number()?;
                        let value: Option<i64> = if integer { text.parse().ok() } else { None };
                        values.iter().any(|v| matches!(v, Literal::Int(i) if Some(*i) == value))
                    }
                };
                if admitted { Ok(()) } else { Err(()) }
            }
            Node::Array(items) => {
                self.literal(b"[")?;
                self.ws();
                if self.literal(b"]").is_ok() {
                    return Ok(());
                }
                loop {
                    self.value(nodes, *items)?;
                    self.ws();
                    if self.literal(b",").is_err() {
                        return self.literal(b"]");
                    }
                }
            }
            Node::Object { fields, required } => self.object(nodes, fields, required, None).map(|_| ()),
            Node::Nullable(other) => match self.bytes.get(self.pos) {
                Some(b'n') => self.literal(b"null"),
                _ => self.value(nodes, *other),
            },
            Node::AnyOf(options) => {
                let start = self.pos;
                for &option in options {
                    if self.value(nodes, option).is_ok() {
                        return Ok(());
                    }
                    self.pos = start;
                }
                Err(())
            }
        }
    }

    /// An object's fields; returns the text of field `time_field` when asked for one.
    fn object(
        &mut self,
        nodes: &[Node],
        fields: &[(String, usize)],
        required: &[usize],
        time_field: Option<&str>,
    ) -> Checked<Option<std::borrow::Cow<'a, str>>> {
        self.literal(b"{")?;
        let mut seen: u128 = 0;
        let mut time = None;
        // Encoders write the fields in the schema's order: try the one after the last first.
        let mut expected = 0;
        self.ws();
        if self.literal(b"}").is_err() {
            loop {
                self.ws();
                // Encoders write the key as the field's name in quotes: compare it in place;
                // anything else (another field, an escaped name) is read as a string.
                let index = match fields.get(expected) {
                    Some((f, _)) if self.quoted_name_at(f) => {
                        self.pos += f.len() + 2;
                        expected
                    }
                    _ => {
                        let key = self.string()?;
                        fields.iter().position(|(f, _)| f.as_bytes() == key.as_bytes()).ok_or(())?
                    }
                };
                let key = fields[index].0.as_str();
                expected = index + 1;
                if seen & (1u128 << index) != 0 {
                    return Err(()); // a duplicate key: which one counts is the reader's guess
                }
                seen |= 1u128 << index;
                self.ws();
                self.literal(b":")?;
                self.ws();
                if time_field == Some(key) {
                    let value_start = self.pos;
                    self.value(nodes, fields[index].1)?;
                    let mut again = Parser { text: self.text, bytes: self.bytes, pos: value_start };
                    time = Some(again.string()?);
                } else {
                    self.value(nodes, fields[index].1)?;
                }
                self.ws();
                if self.literal(b",").is_err() {
                    self.literal(b"}")?;
                    break;
                }
            }
        }
        if required.iter().any(|&i| seen & (1u128 << i) == 0) {
            return Err(());
        }
        Ok(time)
    }
}

/// Vouches for events of one schema (see the module's comment).
#[pyclass(frozen)]
pub struct EventValidator {
    nodes: Vec<Node>,
    root: usize,
    time_field: String,
}

#[pymethods]
impl EventValidator {
    /// `schema`: msgspec's JSON Schema of the event type (with `additionalProperties: false`);
    /// `time_field`: the top-level date-time field whose microseconds `check` returns.
    #[new]
    fn new(schema: &str, time_field: &str) -> PyResult<Self> {
        let schema: Value = serde_json::from_str(schema).map_err(|e| err(e.to_string()))?;
        let empty = serde_json::Map::new();
        let defs = schema.get("$defs").and_then(Value::as_object).unwrap_or(&empty);
        let mut compiler = Compiler { defs, nodes: Vec::new(), by_ref: HashMap::new() };
        let root = compiler.compile(&schema)?;
        match &compiler.nodes[root] {
            Node::Object { fields, .. } => {
                let index = fields.iter().position(|(f, _)| f == time_field);
                let time = index.map(|i| &compiler.nodes[fields[i].1]);
                if !matches!(time, Some(Node::Text { date_time: true, .. })) {
                    return Err(err(format!("{time_field} is not a date-time field of the event")));
                }
            }
            _ => return Err(err("the event is not an object")),
        }
        Ok(EventValidator { nodes: compiler.nodes, root, time_field: time_field.to_owned() })
    }

    /// The event's time in microseconds since the epoch when `data` is surely a valid event,
    /// else None (the Python decoder then decides).
    fn check(&self, data: &[u8]) -> Option<i64> {
        let text = std::str::from_utf8(data).ok()?;
        let mut parser = Parser { text, bytes: data, pos: 0 };
        parser.ws();
        let Node::Object { fields, required } = &self.nodes[self.root] else { return None };
        let time = parser.object(&self.nodes, fields, required, Some(&self.time_field)).ok()??;
        parser.ws();
        if parser.pos != data.len() {
            return None;
        }
        utc_micros(&time).ok()
    }
}
