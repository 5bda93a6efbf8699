//! awsQuery requests: form decoding and key un-flattening into a [`Value`] tree
//! (`spec/protocols.md` §7.2–7.3).
//!
//! The decoder works without the service model: `Name.member.N` becomes a list,
//! `Name.entry.N.key|Name` / `.value|Value` a map, other dotted keys nested
//! structures, and a bare `Name=` the empty list (read through
//! [`Value::as_list`]). Scalars stay text; handlers coerce them.

use std::collections::BTreeMap;

use crate::value::Value;

/// More pairs than this in one request is refused as malformed.
const MAX_PAIRS: usize = 100_000;

/// A form body or query string that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// Bad percent-encoding, bad UTF-8, or too many parameters.
    #[error("malformed query string: {0}")]
    Malformed(&'static str),
}

/// Splits `application/x-www-form-urlencoded` text into decoded pairs; `+` is a space.
pub fn parse_form(text: &[u8]) -> Result<Vec<(String, String)>, QueryError> {
    let mut pairs = Vec::new();
    for part in text.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        if pairs.len() >= MAX_PAIRS {
            return Err(QueryError::Malformed("too many parameters"));
        }
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        pairs.push((form_decode(k)?, form_decode(v)?));
    }
    Ok(pairs)
}

fn form_decode(raw: &[u8]) -> Result<String, QueryError> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    String::from_utf8(decoded).map_err(|_| QueryError::Malformed("parameters must be UTF-8"))
}

#[derive(Default)]
struct Node {
    text: Option<String>,
    children: BTreeMap<String, Node>,
}

/// Builds the input tree from decoded pairs, skipping `Action`, `Version` and the
/// SigV4 query parameters.
pub fn unflatten(pairs: &[(String, String)]) -> Value {
    let mut root = Node::default();
    for (key, value) in pairs {
        if key == "Action" || key == "Version" || key.starts_with("X-Amz-") {
            continue;
        }
        let mut node = &mut root;
        for segment in key.split('.') {
            node = node.children.entry(segment.to_owned()).or_default();
        }
        node.text = Some(value.clone());
    }
    match to_value(root) {
        // The input is always a structure, even with no members.
        Value::String(_) => Value::empty_struct(),
        other => other,
    }
}

fn to_value(node: Node) -> Value {
    if node.children.is_empty() {
        return Value::String(node.text.unwrap_or_default());
    }
    let mut children = node.children;
    if children.len() == 1 {
        if let Some(items) = children.remove("member") {
            return Value::List(indexed(items).into_iter().map(to_value).collect());
        }
        if let Some(entries) = children.remove("entry") {
            let mut map = Vec::new();
            for mut entry in indexed(entries) {
                let key = ["key", "Key", "Name", "name"]
                    .iter()
                    .find_map(|k| entry.children.remove(*k))
                    .and_then(|n| n.text);
                let value = ["value", "Value"]
                    .iter()
                    .find_map(|k| entry.children.remove(*k));
                if let (Some(k), Some(v)) = (key, value) {
                    map.push((k, to_value(v)));
                }
            }
            return Value::Map(map);
        }
    }
    if children.keys().all(|k| k.parse::<u32>().is_ok()) {
        // A flattened list: `Name.1`, `Name.2`, ….
        let parent = Node {
            text: None,
            children,
        };
        return Value::List(indexed(parent).into_iter().map(to_value).collect());
    }
    Value::Struct(
        children
            .into_iter()
            .map(|(k, v)| (k, to_value(v)))
            .collect(),
    )
}

/// Children of `node` keyed by positive integers, in numeric order; others dropped.
fn indexed(node: Node) -> Vec<Node> {
    let mut items: Vec<(u32, Node)> = node
        .children
        .into_iter()
        .filter_map(|(k, v)| k.parse::<u32>().ok().map(|i| (i, v)))
        .collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, v)| v).collect()
}

/// The value of the first pair named `name`.
pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflattens_lists_maps_and_structures() {
        let pairs = parse_form(
            b"Action=PutMetricData&Version=2010-08-01&Namespace=Trailwatch%2FTest\
              &MetricData.member.2.MetricName=B&MetricData.member.1.MetricName=A+b\
              &MetricData.member.1.Dimensions.member.1.Name=Host\
              &Attributes.entry.1.key=Type&Attributes.entry.1.value=Service\
              &MessageAttributes.entry.1.Name=severity&MessageAttributes.entry.1.Value.DataType=String\
              &OKActions=",
        )
        .unwrap();
        assert_eq!(param(&pairs, "Action"), Some("PutMetricData"));
        let v = unflatten(&pairs);
        assert_eq!(
            v.get("Namespace").and_then(Value::as_str),
            Some("Trailwatch/Test")
        );
        let data = v.get("MetricData").and_then(Value::as_list).unwrap();
        assert_eq!(
            data[0].get("MetricName").and_then(Value::as_str),
            Some("A b")
        );
        assert_eq!(data[1].get("MetricName").and_then(Value::as_str), Some("B"));
        assert_eq!(
            v.get("Attributes"),
            Some(&Value::Map(vec![("Type".into(), Value::string("Service"))]))
        );
        let attrs = v.get("MessageAttributes").unwrap();
        assert_eq!(
            attrs
                .get("severity")
                .and_then(|a| a.get("DataType"))
                .and_then(Value::as_str),
            Some("String")
        );
        assert_eq!(v.get("OKActions").and_then(Value::as_list), Some(&[][..]));
        assert!(v.get("Action").is_none());
    }

    #[test]
    fn rejects_bad_utf8() {
        assert!(parse_form(b"A=%FF").is_err());
    }
}
