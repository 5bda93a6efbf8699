//! awsJson 1.0/1.1 and restJson1 bodies ↔ [`Value`] (`spec/protocols.md` §5, §8).

use base64::Engine as _;

use crate::value::Value;

/// A JSON body that is not a JSON object.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all.
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
}

/// Decodes a request body. An empty body is an empty structure.
pub fn decode(body: &[u8]) -> Result<Value, JsonError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::empty_struct());
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| JsonError::Syntax(e.to_string()))?;
    match parsed {
        serde_json::Value::Object(_) => Ok(from_json(parsed)),
        _ => Err(JsonError::NotAnObject),
    }
}

/// Converts parsed JSON into the neutral tree; objects become structures.
pub fn from_json(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::String(s),
        J::Array(items) => Value::List(items.into_iter().map(from_json).collect()),
        J::Object(members) => Value::Struct(
            members
                .into_iter()
                .map(|(k, v)| (k, from_json(v)))
                .collect(),
        ),
    }
}

/// Converts a typed output value to JSON: timestamps as epoch seconds, non-finite
/// doubles as their text names, blobs as base64, nulls dropped.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or_else(|| J::String(non_finite_text(*f).to_owned())),
        Value::String(s) => J::String(s.clone()),
        Value::Blob(b) => J::String(base64_encode(b)),
        Value::Timestamp(t) => {
            if t.is_whole_second() {
                J::from(t.secs())
            } else {
                serde_json::Number::from_f64(t.as_secs_f64())
                    .map(J::Number)
                    .unwrap_or(J::Null)
            }
        }
        Value::List(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Struct(members) | Value::Map(members) => J::Object(
            members
                .iter()
                .filter(|(_, v)| !matches!(v, Value::Null))
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
    }
}

/// Serializes an output value as a response body.
pub fn encode(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&to_json(v)).unwrap_or_else(|_| b"{}".to_vec())
}

/// The JSON text form of a non-finite double.
pub fn non_finite_text(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Standard padded base64.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_types::Timestamp;

    #[test]
    fn empty_body_is_empty_struct() {
        assert_eq!(decode(b"").unwrap(), Value::empty_struct());
        assert!(matches!(decode(b"[1]"), Err(JsonError::NotAnObject)));
        assert!(matches!(decode(b"{"), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn typed_output() {
        let v = Value::structure([
            ("T1", Value::Timestamp(Timestamp::from_secs(1_767_225_600))),
            (
                "T2",
                Value::Timestamp(Timestamp::from_millis(1_767_225_600_123)),
            ),
            ("D", Value::Float(100.0)),
            ("N", Value::Float(f64::NAN)),
        ]);
        assert_eq!(
            String::from_utf8(encode(&v)).unwrap(),
            r#"{"T1":1767225600,"T2":1767225600.123,"D":100.0,"N":"NaN"}"#
        );
    }
}
