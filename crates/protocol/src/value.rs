//! The neutral tree every codec decodes into and encodes from.
//!
//! Decoded input is loosely typed: awsQuery delivers every scalar as text and JSON
//! cannot tell a timestamp from a number, so handlers read members through the
//! coercing accessors ([`Value::as_i64`], [`Value::as_timestamp`], …). Output
//! built by handlers is strictly typed, because the encoders must emit exact
//! types (a CBOR double is never an integer, a timestamp is always tag 1).

use trailwatch_types::Timestamp;

/// A value in any AWS protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent / null.
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer or long.
    Int(i64),
    /// Double or float.
    Float(f64),
    /// Text.
    String(String),
    /// Binary.
    Blob(Vec<u8>),
    /// A point in time.
    Timestamp(Timestamp),
    /// List.
    List(Vec<Value>),
    /// A structure: member name to value, in model order.
    Struct(Vec<(String, Value)>),
    /// A map with string keys.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// An empty structure.
    pub fn empty_struct() -> Value {
        Value::Struct(Vec::new())
    }

    /// Builds a structure from `(name, value)` pairs, dropping `Null` members.
    pub fn structure<I, K>(members: I) -> Value
    where
        I: IntoIterator<Item = (K, Value)>,
        K: Into<String>,
    {
        Value::Struct(
            members
                .into_iter()
                .filter(|(_, v)| !matches!(v, Value::Null))
                .map(|(k, v)| (k.into(), v))
                .collect(),
        )
    }

    /// Text value.
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// Member `name` of a structure or map; `None` when absent or null.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) | Value::Map(members) => members
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .filter(|v| !matches!(v, Value::Null)),
            _ => None,
        }
    }

    /// Members of a structure or map (empty for anything else).
    pub fn members(&self) -> &[(String, Value)] {
        match self {
            Value::Struct(members) | Value::Map(members) => members,
            _ => &[],
        }
    }

    /// Text, when the value is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer; accepts whole floats and decimal text (awsQuery).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A double; accepts integers and text, including `NaN` and `Infinity`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::String(s) => match s.trim() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                other => other.parse().ok(),
            },
            _ => None,
        }
    }

    /// A boolean; accepts `true`/`false` text in any letter case.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// A timestamp; accepts epoch seconds (int or float) and ISO 8601 text.
    pub fn as_timestamp(&self) -> Option<Timestamp> {
        match self {
            Value::Timestamp(t) => Some(*t),
            Value::Int(i) => Some(Timestamp::from_secs(*i)),
            Value::Float(f) => Timestamp::from_secs_f64(*f),
            Value::String(s) => Timestamp::parse_iso8601(s).ok(),
            _ => None,
        }
    }

    /// A list; the awsQuery empty-list form (`Key=`) reads as an empty list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            Value::String(s) if s.is_empty() => Some(&[]),
            _ => None,
        }
    }

    /// The text members of list member `name` (absent or empty: none).
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.get(name)
            .and_then(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    }

    /// Converts to JSON the way CloudTrail records show request parameters:
    /// member names with their first letter lower-cased, timestamps as ISO text.
    pub fn to_record_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(crate::json::non_finite_text(*f).to_owned())),
            Value::String(s) => J::String(s.clone()),
            Value::Blob(b) => J::String(crate::json::base64_encode(b)),
            Value::Timestamp(t) => J::String(t.to_iso8601()),
            Value::List(items) => J::Array(items.iter().map(Value::to_record_json).collect()),
            Value::Struct(members) => J::Object(
                members
                    .iter()
                    .filter(|(_, v)| !matches!(v, Value::Null))
                    .map(|(k, v)| (lower_first(k), v.to_record_json()))
                    .collect(),
            ),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_record_json()))
                    .collect(),
            ),
        }
    }
}

impl Value {
    /// Writes exactly the bytes `serde_json::to_vec(&self.to_record_json())`
    /// would, without building the JSON tree: for bulk request parameters,
    /// whose size decides whether they are recorded at all.
    pub fn write_record_json(&self, out: &mut Vec<u8>) {
        let text = |out: &mut Vec<u8>, s: &str| {
            // Writing a str to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        };
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => {
                    let _ = serde_json::to_writer(&mut *out, &n);
                }
                None => text(out, crate::json::non_finite_text(*f)),
            },
            Value::String(s) => text(out, s),
            Value::Blob(b) => text(out, &crate::json::base64_encode(b)),
            Value::Timestamp(t) => text(out, &t.to_iso8601()),
            Value::List(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_record_json(out);
                }
                out.push(b']');
            }
            Value::Struct(members) => {
                let present = || members.iter().filter(|(_, v)| !matches!(v, Value::Null));
                let clash = present()
                    .enumerate()
                    .any(|(i, (a, _))| present().skip(i + 1).any(|(b, _)| same_lowered(a, b)));
                if clash {
                    write_members(out, present().map(|(k, v)| (lower_first(k), v)));
                } else {
                    // The usual case, without a String per key.
                    out.push(b'{');
                    for (i, (k, v)) in present().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_record_key(out, k);
                        out.push(b':');
                        v.write_record_json(out);
                    }
                    out.push(b'}');
                }
            }
            Value::Map(entries) => {
                write_members(out, entries.iter().map(|(k, v)| (k.clone(), v)));
            }
        }
    }
}

/// Whether two member names are equal once their first letters are lowered.
fn same_lowered(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.chars(), b.chars());
    match (x.next(), y.next()) {
        (Some(p), Some(q)) => p.to_lowercase().eq(q.to_lowercase()) && x.as_str() == y.as_str(),
        (None, None) => true,
        _ => false,
    }
}

/// Writes `lower_first(name)` as a JSON string, without allocating for the
/// usual ASCII member names.
pub fn write_record_key(out: &mut Vec<u8>, name: &str) {
    let bytes = name.as_bytes();
    if bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        out.push(b'"');
        if let Some((first, rest)) = bytes.split_first() {
            out.push(first.to_ascii_lowercase());
            out.extend_from_slice(rest);
        }
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, &lower_first(name));
    }
}

/// Writes a JSON object; a later duplicate key replaces an earlier value in
/// place, as `serde_json::Map` (insertion-ordered) does.
fn write_members<'a>(out: &mut Vec<u8>, members: impl Iterator<Item = (String, &'a Value)>) {
    let mut unique: Vec<(String, &Value)> = Vec::new();
    for (k, v) in members {
        match unique.iter_mut().find(|(u, _)| *u == k) {
            Some(slot) => slot.1 = v,
            None => unique.push((k, v)),
        }
    }
    out.push(b'{');
    for (i, (k, v)) in unique.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        v.write_record_json(out);
    }
    out.push(b'}');
}

/// `S3BucketName` → `s3BucketName`.
pub fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_record_json_is_the_serialized_tree() {
        let v = Value::structure([
            ("Namespace", Value::string("App \"quoted\" \u{1}")),
            ("Skipped", Value::Null),
            (
                "MetricData",
                Value::List(vec![Value::structure([
                    ("MetricName", Value::string("Latency")),
                    ("Value", Value::Float(1.5)),
                    ("Big", Value::Float(1e300)),
                    ("Nan", Value::Float(f64::NAN)),
                    ("Count", Value::Int(-3)),
                    (
                        "Timestamp",
                        Value::Timestamp(trailwatch_types::Timestamp::from_millis(
                            1_700_000_000_123,
                        )),
                    ),
                    ("Flag", Value::Bool(true)),
                    ("Blob", Value::Blob(vec![0, 1, 2, 255])),
                    (
                        "Tags",
                        Value::Map(vec![
                            ("K".into(), Value::string("v")),
                            ("K".into(), Value::Null),
                        ]),
                    ),
                ])]),
            ),
            ("namespace", Value::string("duplicate after lower-casing")),
        ]);
        let mut written = Vec::new();
        v.write_record_json(&mut written);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            serde_json::to_string(&v.to_record_json()).unwrap()
        );
    }

    #[test]
    fn coercions() {
        assert_eq!(Value::string("50").as_i64(), Some(50));
        assert_eq!(Value::Float(4.0).as_i64(), Some(4));
        assert_eq!(Value::Float(4.5).as_i64(), None);
        assert!(Value::string("NaN").as_f64().unwrap().is_nan());
        assert_eq!(Value::string("1e-05").as_f64(), Some(1e-05));
        assert_eq!(Value::string("TRUE").as_bool(), Some(true));
        assert_eq!(
            Value::Float(1767225600.5).as_timestamp(),
            Some(Timestamp::from_millis(1_767_225_600_500))
        );
        assert_eq!(Value::string("").as_list(), Some(&[][..]));
        let v = Value::structure([(
            "Names",
            Value::List(vec![Value::string("a"), Value::Int(1), Value::string("b")]),
        )]);
        assert_eq!(v.strings("Names"), ["a", "b"]);
        assert!(v.strings("Missing").is_empty());
    }

    #[test]
    fn record_json_lowercases_member_names_only() {
        let v = Value::structure([
            ("S3BucketName", Value::string("b")),
            (
                "Tags",
                Value::Map(vec![("Env".into(), Value::string("prod"))]),
            ),
            ("Skipped", Value::Null),
        ]);
        assert_eq!(
            v.to_record_json().to_string(),
            r#"{"s3BucketName":"b","tags":{"Env":"prod"}}"#
        );
        assert_eq!(lower_first("IsMultiRegionTrail"), "isMultiRegionTrail");
    }
}
