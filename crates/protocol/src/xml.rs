//! A minimal XML writer for awsQuery responses: elements, escaped text, and the
//! [`Value`] rendering rules of `spec/protocols.md` §7.4 (lists as `<member>`,
//! maps as `<entry><key/><value/></entry>`, ISO 8601 timestamps).

use crate::value::Value;

/// Appends `text` with the five XML special characters escaped.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

/// Decimal text of a double as AWS writes it: `100.0`, `12.5`, `1.0E-5`.
pub fn format_double(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Writes `<name>…</name>` for `value`; null values write nothing.
pub fn write_element(out: &mut String, name: &str, value: &Value) {
    if matches!(value, Value::Null) {
        return;
    }
    out.push('<');
    out.push_str(name);
    out.push('>');
    write_content(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Writes the content of an element holding `value`.
pub fn write_content(out: &mut String, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&format_double(*f)),
        Value::String(s) => escape_into(out, s),
        Value::Blob(b) => out.push_str(&crate::json::base64_encode(b)),
        Value::Timestamp(t) => out.push_str(&t.to_iso8601()),
        Value::List(items) => {
            for item in items {
                write_element(out, "member", item);
            }
        }
        Value::Struct(members) => {
            for (name, v) in members {
                write_element(out, name, v);
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                out.push_str("<entry><key>");
                escape_into(out, k);
                out.push_str("</key>");
                write_element(out, "value", v);
                out.push_str("</entry>");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_typed_values() {
        let v = Value::structure([
            ("OKActions", Value::List(vec![])),
            ("AlarmActions", Value::List(vec![Value::string("a&b")])),
            ("Threshold", Value::Float(100.0)),
            ("Tags", Value::Map(vec![("k".into(), Value::string("<v>"))])),
        ]);
        let mut out = String::new();
        write_content(&mut out, &v);
        assert_eq!(
            out,
            "<OKActions></OKActions><AlarmActions><member>a&amp;b</member></AlarmActions>\
             <Threshold>100.0</Threshold><Tags><entry><key>k</key><value>&lt;v&gt;</value></entry></Tags>"
        );
        assert_eq!(format_double(1e-5), "0.00001");
        assert_eq!(format_double(12.5), "12.5");
    }
}
