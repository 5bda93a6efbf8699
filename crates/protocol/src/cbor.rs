//! Smithy RPC v2 CBOR bodies ↔ [`Value`] (RFC 8949; `spec/protocols.md` §6).
//!
//! The decoder is lenient as the spec requires: definite and indefinite lengths,
//! non-minimal heads, half/single/double floats, tag 1 timestamps. The encoder is
//! strict: definite lengths, minimal integer heads, doubles always as float64,
//! timestamps always tag 1 (integer when whole, float64 otherwise).

use trailwatch_types::Timestamp;

use crate::value::Value;

/// Nesting deeper than this is refused, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// A CBOR body that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CborError {
    /// The input ended inside an item.
    #[error("unexpected end of CBOR input at offset {0}")]
    Eof(usize),
    /// A head byte or construct this decoder does not accept.
    #[error("invalid CBOR at offset {offset}: {what}")]
    Invalid {
        /// Byte offset of the problem.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// Bytes left after the single top-level item.
    #[error("trailing bytes after the CBOR item at offset {0}")]
    Trailing(usize),
    /// The top-level item is not a map.
    #[error("the CBOR request body must be a map")]
    NotAMap,
}

/// Decodes a request body; an empty body is an empty structure.
pub fn decode(body: &[u8]) -> Result<Value, CborError> {
    if body.is_empty() {
        return Ok(Value::empty_struct());
    }
    let mut d = Decoder { buf: body, pos: 0 };
    let item = d.item(0)?;
    if d.pos != body.len() {
        return Err(CborError::Trailing(d.pos));
    }
    match item {
        Item::Value(v @ Value::Struct(_)) => Ok(v),
        Item::Value(_) => Err(CborError::NotAMap),
        Item::Break => Err(CborError::Invalid {
            offset: 0,
            what: "unexpected break",
        }),
    }
}

enum Item {
    Value(Value),
    Break,
}

/// A pull reader for hot request shapes that are decoded straight into typed
/// inputs (PutMetricData: a thousand datums would otherwise become tens of
/// thousands of [`Value`] nodes). It accepts what [`decode`] accepts for the
/// shapes it is asked for; anything else is `None`, and the caller falls back
/// to [`decode`], which gives the exact answer and error.
pub struct Reader<'a> {
    d: Decoder<'a>,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `body`.
    pub fn new(body: &'a [u8]) -> Self {
        Reader {
            d: Decoder { buf: body, pos: 0 },
        }
    }

    /// Whether every byte was read.
    pub fn is_done(&self) -> bool {
        self.d.pos == self.d.buf.len()
    }

    fn container(&mut self, major: u8) -> Option<Option<u64>> {
        let head = *self.d.buf.get(self.d.pos)?;
        if head >> 5 != major {
            return None;
        }
        self.d.pos += 1;
        self.d.argument(head & 0x1f).ok()
    }

    /// Starts a map: `Some(Some(n))` with n entries, `Some(None)` when
    /// indefinite, `None` when the next item is not a map.
    pub fn map(&mut self) -> Option<Option<u64>> {
        self.container(5)
    }

    /// Starts an array, like [`Reader::map`].
    pub fn array(&mut self) -> Option<Option<u64>> {
        self.container(4)
    }

    /// Whether a container of `len` entries, `read` so far, is over; for an
    /// indefinite one this consumes its break.
    pub fn end_of(&mut self, len: Option<u64>, read: u64) -> bool {
        match len {
            Some(n) => read >= n,
            None if self.d.buf.get(self.d.pos) == Some(&0xff) => {
                self.d.pos += 1;
                true
            }
            None => false,
        }
    }

    /// A definite-length text string.
    pub fn text(&mut self) -> Option<&'a str> {
        let head = *self.d.buf.get(self.d.pos)?;
        if head >> 5 != 3 {
            return None;
        }
        self.d.pos += 1;
        let len = self.d.argument(head & 0x1f).ok()??;
        let len = usize::try_from(len).ok()?;
        let end = self.d.pos.checked_add(len)?;
        let bytes = self.d.buf.get(self.d.pos..end)?;
        self.d.pos = end;
        std::str::from_utf8(bytes).ok()
    }

    /// A number as [`Value::as_f64`] reads integers and floats.
    pub fn number(&mut self) -> Option<f64> {
        let head = *self.d.buf.get(self.d.pos)?;
        match (head >> 5, head & 0x1f) {
            (0 | 1, _) | (7, 25..=27) => match self.d.item(1).ok()? {
                Item::Value(v @ (Value::Int(_) | Value::Float(_))) => v.as_f64(),
                _ => None,
            },
            _ => None,
        }
    }

    /// An integer (major type 0 or 1 only: a whole float is an integer to
    /// [`Value::as_i64`] but stays a float in request records).
    pub fn int(&mut self) -> Option<i64> {
        let head = *self.d.buf.get(self.d.pos)?;
        match head >> 5 {
            0 | 1 => match self.d.item(1).ok()? {
                Item::Value(Value::Int(i)) => Some(i),
                _ => None,
            },
            _ => None,
        }
    }

    /// A timestamp as [`Value::as_timestamp`] reads tag 1 and epoch numbers.
    pub fn timestamp(&mut self) -> Option<Timestamp> {
        let head = *self.d.buf.get(self.d.pos)?;
        match (head >> 5, head & 0x1f) {
            (0 | 1 | 6, _) | (7, 25..=27) => match self.d.item(1).ok()? {
                Item::Value(v @ (Value::Int(_) | Value::Float(_) | Value::Timestamp(_))) => {
                    v.as_timestamp()
                }
                _ => None,
            },
            _ => None,
        }
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn invalid(&self, what: &'static str) -> CborError {
        CborError::Invalid {
            offset: self.pos,
            what,
        }
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        let b = *self.buf.get(self.pos).ok_or(CborError::Eof(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&[u8], CborError> {
        let n = usize::try_from(n).map_err(|_| CborError::Eof(self.pos))?;
        let end = self.pos.checked_add(n).ok_or(CborError::Eof(self.pos))?;
        if end > self.buf.len() {
            return Err(CborError::Eof(self.pos));
        }
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// Reads the argument of a head; `None` means indefinite length (info 31).
    fn argument(&mut self, info: u8) -> Result<Option<u64>, CborError> {
        let value = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => u64::from(u16::from_be_bytes(self.fixed::<2>()?)),
            26 => u64::from(u32::from_be_bytes(self.fixed::<4>()?)),
            27 => u64::from_be_bytes(self.fixed::<8>()?),
            31 => return Ok(None),
            _ => return Err(self.invalid("reserved additional information")),
        };
        Ok(Some(value))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], CborError> {
        let slice = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn definite(&mut self, info: u8) -> Result<u64, CborError> {
        self.argument(info)?
            .ok_or_else(|| self.invalid("indefinite length not allowed here"))
    }

    fn item(&mut self, depth: usize) -> Result<Item, CborError> {
        if depth > MAX_DEPTH {
            return Err(self.invalid("nesting too deep"));
        }
        let head = self.byte()?;
        let major = head >> 5;
        let info = head & 0x1f;
        let value = match major {
            0 => {
                let n = self.definite(info)?;
                Value::Int(self.unsigned_to_i64(n)?)
            }
            1 => {
                let n = self.definite(info)?;
                let n = i64::try_from(n).map_err(|_| self.invalid("negative integer too large"))?;
                Value::Int(-1 - n)
            }
            2 => Value::Blob(self.string_bytes(2, info)?),
            3 => {
                let bytes = self.string_bytes(3, info)?;
                Value::String(String::from_utf8(bytes).map_err(|_| self.invalid("invalid UTF-8"))?)
            }
            4 => self.array(info, depth)?,
            5 => self.map(info, depth)?,
            6 => {
                let tag = self.definite(info)?;
                if tag != 1 {
                    return Err(self.invalid("unsupported tag"));
                }
                match self.item(depth + 1)? {
                    Item::Value(Value::Int(i)) => Value::Timestamp(Timestamp::from_secs(i)),
                    Item::Value(Value::Float(f)) => Value::Timestamp(
                        Timestamp::from_secs_f64(f)
                            .ok_or_else(|| self.invalid("timestamp out of range"))?,
                    ),
                    _ => return Err(self.invalid("tag 1 must wrap a number")),
                }
            }
            _ => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 | 23 => Value::Null,
                25 => Value::Float(half_to_f64(u16::from_be_bytes(self.fixed::<2>()?))),
                26 => Value::Float(f64::from(f32::from_be_bytes(self.fixed::<4>()?))),
                27 => Value::Float(f64::from_be_bytes(self.fixed::<8>()?)),
                31 => return Ok(Item::Break),
                _ => return Err(self.invalid("unsupported simple value")),
            },
        };
        Ok(Item::Value(value))
    }

    fn unsigned_to_i64(&self, n: u64) -> Result<i64, CborError> {
        i64::try_from(n).map_err(|_| self.invalid("integer too large"))
    }

    fn string_bytes(&mut self, major: u8, info: u8) -> Result<Vec<u8>, CborError> {
        match self.argument(info)? {
            Some(len) => Ok(self.take(len)?.to_vec()),
            None => {
                // Indefinite: a sequence of definite chunks of the same major type.
                let mut out = Vec::new();
                loop {
                    let head = self.byte()?;
                    if head == 0xff {
                        return Ok(out);
                    }
                    if head >> 5 != major {
                        return Err(self.invalid("string chunk of the wrong type"));
                    }
                    let len = self.definite(head & 0x1f)?;
                    out.extend_from_slice(self.take(len)?);
                }
            }
        }
    }

    fn array(&mut self, info: u8, depth: usize) -> Result<Value, CborError> {
        let mut items = Vec::new();
        match self.argument(info)? {
            Some(len) => {
                for _ in 0..len {
                    match self.item(depth + 1)? {
                        Item::Value(v) => items.push(v),
                        Item::Break => return Err(self.invalid("break inside definite array")),
                    }
                }
            }
            None => {
                while let Item::Value(v) = self.item(depth + 1)? {
                    items.push(v);
                }
            }
        }
        Ok(Value::List(items))
    }

    fn map(&mut self, info: u8, depth: usize) -> Result<Value, CborError> {
        let mut members = Vec::new();
        let len = self.argument(info)?;
        let mut read = 0u64;
        loop {
            if len == Some(read) {
                break;
            }
            let key = match self.item(depth + 1)? {
                Item::Value(Value::String(k)) => k,
                Item::Break if len.is_none() => break,
                Item::Break => return Err(self.invalid("break inside definite map")),
                Item::Value(_) => return Err(self.invalid("map keys must be text")),
            };
            match self.item(depth + 1)? {
                Item::Value(v) => members.push((key, v)),
                Item::Break => return Err(self.invalid("map key without value")),
            }
            read += 1;
        }
        Ok(Value::Struct(members))
    }
}

fn half_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + mantissa / 1024.0) * 2f64.powi(exponent - 15),
    };
    sign * magnitude
}

/// Encodes an output value (normally a structure) as CBOR.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, v);
    out
}

fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        write_head(out, 0, i as u64);
    } else {
        write_head(out, 1, (-1 - i) as u64);
    }
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    out.push(0xfb);
    out.extend_from_slice(&f.to_be_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => write_f64(out, *f),
        Value::String(s) => {
            write_head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Blob(b) => {
            write_head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Timestamp(t) => {
            out.push(0xc1);
            if t.is_whole_second() {
                write_int(out, t.secs());
            } else {
                write_f64(out, t.as_secs_f64());
            }
        }
        Value::List(items) => {
            write_head(out, 4, items.len() as u64);
            for item in items {
                write_value(out, item);
            }
        }
        Value::Struct(members) | Value::Map(members) => {
            let present = members.iter().filter(|(_, v)| !matches!(v, Value::Null));
            write_head(out, 5, present.clone().count() as u64);
            for (k, v) in present {
                write_value(out, &Value::String(k.clone()));
                write_value(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn definite_and_indefinite_maps_decode_alike() {
        // {"MaxRecords": 50} definite, then indefinite, then with a non-minimal head.
        let definite = [&[0xa1, 0x6a][..], b"MaxRecords", &[0x18, 0x32]].concat();
        let indefinite = [&[0xbf, 0x6a][..], b"MaxRecords", &[0x18, 0x32, 0xff]].concat();
        let non_minimal = [
            &[0xb9, 0x00, 0x01, 0x6a][..],
            b"MaxRecords",
            &[0x19, 0x00, 0x32],
        ]
        .concat();
        let expected = Value::Struct(vec![("MaxRecords".into(), Value::Int(50))]);
        assert_eq!(decode(&definite).unwrap(), expected);
        assert_eq!(decode(&indefinite).unwrap(), expected);
        assert_eq!(decode(&non_minimal).unwrap(), expected);
    }

    #[test]
    fn floats_and_tags() {
        assert_eq!(half_to_f64(0x3c00), 1.0);
        assert_eq!(half_to_f64(0xc400), -4.0);
        assert_eq!(half_to_f64(0x0001), 5.960464477539063e-8);
        assert!(half_to_f64(0x7e00).is_nan());
        // {"T": 1(1767225600.5)}
        let mut body = vec![0xa1, 0x61, b'T', 0xc1, 0xfb];
        body.extend_from_slice(&1767225600.5f64.to_be_bytes());
        assert_eq!(
            decode(&body).unwrap().get("T"),
            Some(&Value::Timestamp(Timestamp::from_millis(1_767_225_600_500)))
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode(&[0x01]), Err(CborError::NotAMap));
        assert_eq!(decode(&[0xa0, 0x00]), Err(CborError::Trailing(1)));
        assert!(matches!(decode(&[0xa1, 0x61]), Err(CborError::Eof(_))));
        assert!(matches!(
            decode(&[0xa1, 0x01, 0x01]),
            Err(CborError::Invalid { .. })
        ));
        assert!(matches!(
            decode(&[0xc2, 0x40]),
            Err(CborError::Invalid { .. })
        ));
        let deep = vec![0x81; 200];
        assert!(decode(&[&[0xa1, 0x61, b'x'][..], &deep].concat()).is_err());
    }

    #[test]
    fn encoder_is_type_exact() {
        let v = Value::structure([
            ("Threshold", Value::Float(100.0)),
            ("Period", Value::Int(60)),
            (
                "When",
                Value::Timestamp(Timestamp::from_secs(1_767_225_600)),
            ),
        ]);
        let bytes = encode(&v);
        // Threshold is float64 (0xfb), Period is unsigned(60) = 0x18 0x3c, When is 0xc1 + uint32.
        let threshold_at = bytes.windows(9).position(|w| w[0] == 0x69).unwrap();
        assert_eq!(bytes[threshold_at + 10], 0xfb);
        assert!(bytes.windows(2).any(|w| w == [0x18, 0x3c]));
        assert!(bytes.windows(2).any(|w| w == [0xc1, 0x1a]));
        assert_eq!(decode(&bytes).unwrap(), v);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Value::Float),
            ".{0,12}".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Blob),
            (-1_000_000_000_000i64..1_000_000_000_000i64)
                .prop_map(|ms| Value::Timestamp(Timestamp::from_millis(ms))),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(("[a-zA-Z]{1,8}", inner), 0..6).prop_map(|members| {
                    let mut seen = std::collections::HashSet::new();
                    Value::Struct(
                        members
                            .into_iter()
                            .filter(|(k, _)| seen.insert(k.clone()))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(members in proptest::collection::vec(("[a-z]{1,6}", arb_value()), 0..6)) {
            let mut seen = std::collections::HashSet::new();
            let v = Value::Struct(members.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect());
            prop_assert_eq!(decode(&encode(&v)).unwrap(), v);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
