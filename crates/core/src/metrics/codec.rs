//! The compact block encoding of one series' raw points, used in memory and in
//! metric segments. Parquet spends about 8 bytes on a noisy double; metric
//! values are mostly short decimals, so this encoding stores them as integer
//! mantissas with one shared decimal exponent, delta-coded, then zstd. Values
//! that are not short decimals fall back to their exact IEEE bits, so every
//! value decodes bit for bit.
//!
//! # Layout (before zstd)
//! `varint n | timestamps | units | kinds | value-array lengths | floats | counts`
//! - timestamps (seconds): first as zigzag varint, then zigzag delta-of-delta;
//! - units and kinds: run-length pairs `(value, run)`;
//! - kinds: 0 value, 1 statistic set, 2 values with counts, 3 values whose
//!   counts are all 1 (no counts stored);
//! - lengths: one varint per `Values` sample;
//! - floats: every double in point order (`Value`: v; `Set`: count, sum, min,
//!   max; `Values`: the values), as a float stream;
//! - counts: the counts of every kind-2 sample, as a float stream.
//!
//! A float stream is `u8 mode | …`: mode `p` = decimal (`u8 exponent e`, then
//! the integers `v × 10^e` as a packed stream, see `encode_ints`), mode `x` =
//! raw (8-byte little-endian bits XOR the previous value's bits). Mode `d`
//! (zigzag varint deltas of `v × 10^e`) is still read.

use std::borrow::Borrow;

use trailwatch_types::Timestamp;

use super::model::{Point, Sample, Unit};

/// zstd level of blocks: level 3 is within a few percent of 19 on metric
/// blocks and many times faster.
const ZSTD_LEVEL: i32 = 3;
/// Powers of ten exactly representable as doubles.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Appends `v` as a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos`.
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        if shift >= 64 {
            return Err("varint too long".into());
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
        shift += 7;
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends a signed varint.
pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// Reads a signed varint.
pub(crate) fn get_ivarint(buf: &[u8], pos: &mut usize) -> Result<i64, String> {
    get_varint(buf, pos).map(unzigzag)
}

/// Appends a length-prefixed string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads a length-prefixed string.
pub(crate) fn get_str(buf: &[u8], pos: &mut usize) -> Result<String, String> {
    let bytes = get_bytes(buf, pos)?;
    String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
}

/// Reads length-prefixed bytes.
pub(crate) fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], String> {
    let len = usize::try_from(get_varint(buf, pos)?).map_err(|e| e.to_string())?;
    let end = pos.checked_add(len).ok_or("length overflow")?;
    let bytes = buf.get(*pos..end).ok_or("truncated bytes")?;
    *pos = end;
    Ok(bytes)
}

/// Appends a double as 8 little-endian bytes.
pub(crate) fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Reads a double.
pub(crate) fn get_f64(buf: &[u8], pos: &mut usize) -> Result<f64, String> {
    let bytes = buf.get(*pos..*pos + 8).ok_or("truncated double")?;
    *pos += 8;
    Ok(f64::from_le_bytes(bytes.try_into().map_err(|_| "double")?))
}

/// The smallest decimal exponent at which every value is an exact integer
/// mantissa (and decodes back bit for bit), if there is one.
fn decimal_exponent(values: &[f64]) -> Option<usize> {
    let exact = |v: f64, e: usize| {
        let m = (v * POW10[e]).round();
        m.abs() < 9.0e15 && m / POW10[e] == v && (v != 0.0 || v.to_bits() == 0)
    };
    // The largest exponent any one value needs is a lower bound; a value that
    // is exact at its own exponent may not be at a larger one, so the
    // candidate is then checked against every value, and raised if need be.
    let mut e = 0;
    for &v in values {
        while !exact(v, e) {
            e += 1;
            if e == POW10.len() {
                return None;
            }
        }
    }
    while e < POW10.len() {
        if values.iter().all(|&v| exact(v, e)) {
            return Some(e);
        }
        e += 1;
    }
    None
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Appends `values`, each `width` bits, least significant bit first.
fn pack(out: &mut Vec<u8>, values: impl Iterator<Item = u64>, width: u32) {
    if width == 0 {
        return;
    }
    let (mut acc, mut bits) = (0u128, 0u32);
    for v in values {
        acc |= u128::from(v) << bits;
        bits += width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

fn unpack(buf: &[u8], pos: &mut usize, n: usize, width: u32) -> Result<Vec<u64>, String> {
    if width > 64 {
        return Err("bad bit width".into());
    }
    let bytes = (n as u128 * u128::from(width)).div_ceil(8);
    let bytes = usize::try_from(bytes).map_err(|_| "packed stream too long")?;
    let end = pos.checked_add(bytes).ok_or("packed stream too long")?;
    let data = buf.get(*pos..end).ok_or("truncated packed stream")?;
    *pos = end;
    let mut out = Vec::with_capacity(n);
    if width == 0 {
        out.resize(n, 0);
        return Ok(out);
    }
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    let (mut acc, mut bits, mut next) = (0u128, 0u32, 0usize);
    for _ in 0..n {
        while bits < width {
            acc |= u128::from(data[next]) << bits;
            next += 1;
            bits += 8;
        }
        out.push((acc as u64) & mask);
        acc >>= width;
        bits -= width;
    }
    Ok(out)
}

/// A packed stream of integers: `u8 scheme | ivarint base | varint step |
/// u8 width | bits`. Scheme 0 stores `(m[i] - m[i-1]) / step` zigzagged for
/// i ≥ 1 (random walks: counters, gauges), scheme 1 `(m[i] - base) / step`
/// with base the minimum (noise around a level); `step` is the greatest
/// common divisor, so whole pages or kilobytes cost no bits.
fn encode_ints(m: &[i64]) -> Vec<u8> {
    let mut best: Option<Vec<u8>> = None;
    for scheme in [0u8, 1] {
        let (base, items): (i64, Vec<i64>) = match scheme {
            0 => (
                m.first().copied().unwrap_or(0),
                m.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect(),
            ),
            _ => {
                let min = m.iter().copied().min().unwrap_or(0);
                (min, m.iter().map(|v| v.wrapping_sub(min)).collect())
            }
        };
        let step = items.iter().fold(0u64, |g, d| gcd(g, d.unsigned_abs()));
        let scaled = items.iter().map(|d| {
            let q = if step == 0 { 0 } else { d / step as i64 };
            if scheme == 0 {
                zigzag(q)
            } else {
                q as u64
            }
        });
        let width = scaled
            .clone()
            .map(|v| 64 - v.leading_zeros())
            .max()
            .unwrap_or(0);
        let mut out = vec![scheme];
        put_ivarint(&mut out, base);
        put_varint(&mut out, step);
        out.push(width as u8);
        pack(&mut out, scaled, width);
        if best.as_ref().is_none_or(|b| out.len() < b.len()) {
            best = Some(out);
        }
    }
    best.unwrap_or_default()
}

fn decode_ints(buf: &[u8], pos: &mut usize, n: usize) -> Result<Vec<i64>, String> {
    let scheme = *buf.get(*pos).ok_or("truncated int stream")?;
    *pos += 1;
    let base = get_ivarint(buf, pos)?;
    let step = get_varint(buf, pos)? as i64;
    let width = u32::from(*buf.get(*pos).ok_or("truncated int stream")?);
    *pos += 1;
    match scheme {
        0 => {
            let deltas = unpack(buf, pos, n.saturating_sub(1), width)?;
            let mut out = Vec::with_capacity(n);
            if n > 0 {
                out.push(base);
            }
            let mut m = base;
            for d in deltas {
                m = m.wrapping_add(unzigzag(d).wrapping_mul(step));
                out.push(m);
            }
            Ok(out)
        }
        1 => Ok(unpack(buf, pos, n, width)?
            .into_iter()
            .map(|v| base.wrapping_add((v as i64).wrapping_mul(step)))
            .collect()),
        other => Err(format!("unknown int scheme {other}")),
    }
}

fn encode_floats(out: &mut Vec<u8>, values: &[f64]) {
    match decimal_exponent(values) {
        Some(e) => {
            out.push(b'p');
            out.push(e as u8);
            let m: Vec<i64> = values
                .iter()
                .map(|v| (v * POW10[e]).round() as i64)
                .collect();
            out.extend_from_slice(&encode_ints(&m));
        }
        None => {
            out.push(b'x');
            let mut previous = 0u64;
            for &v in values {
                out.extend_from_slice(&(v.to_bits() ^ previous).to_le_bytes());
                previous = v.to_bits();
            }
        }
    }
}

fn decode_floats(buf: &[u8], pos: &mut usize, n: usize) -> Result<Vec<f64>, String> {
    let mode = *buf.get(*pos).ok_or("truncated float stream")?;
    *pos += 1;
    let mut out = Vec::with_capacity(n);
    match mode {
        b'p' => {
            let e = usize::from(*buf.get(*pos).ok_or("truncated exponent")?);
            *pos += 1;
            let scale = *POW10.get(e).ok_or("bad exponent")?;
            out.extend(
                decode_ints(buf, pos, n)?
                    .into_iter()
                    .map(|m| m as f64 / scale),
            );
        }
        b'd' => {
            let e = usize::from(*buf.get(*pos).ok_or("truncated exponent")?);
            *pos += 1;
            let scale = *POW10.get(e).ok_or("bad exponent")?;
            let mut m = 0i64;
            for _ in 0..n {
                m = m.wrapping_add(get_ivarint(buf, pos)?);
                out.push(m as f64 / scale);
            }
        }
        b'x' => {
            let mut previous = 0u64;
            for _ in 0..n {
                let bytes = buf.get(*pos..*pos + 8).ok_or("truncated raw float")?;
                *pos += 8;
                previous ^= u64::from_le_bytes(bytes.try_into().map_err(|_| "raw float")?);
                out.push(f64::from_bits(previous));
            }
        }
        other => return Err(format!("unknown float mode {other}")),
    }
    Ok(out)
}

fn put_runs(out: &mut Vec<u8>, values: impl Iterator<Item = u8>) {
    let mut run: Option<(u8, u64)> = None;
    for v in values {
        run = match run {
            Some((x, n)) if x == v => Some((x, n + 1)),
            Some((x, n)) => {
                out.push(x);
                put_varint(out, n);
                Some((v, 1))
            }
            None => Some((v, 1)),
        };
    }
    if let Some((x, n)) = run {
        out.push(x);
        put_varint(out, n);
    }
}

fn get_runs(buf: &[u8], pos: &mut usize, n: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = *buf.get(*pos).ok_or("truncated run")?;
        *pos += 1;
        let run = get_varint(buf, pos)? as usize;
        if run == 0 || out.len() + run > n {
            return Err("bad run length".into());
        }
        out.resize(out.len() + run, v);
    }
    Ok(out)
}

const KIND_VALUE: u8 = 0;
const KIND_SET: u8 = 1;
const KIND_VALUES: u8 = 2;
/// `Values` whose counts are all 1 (stored without counts).
const KIND_VALUES_ONES: u8 = 3;

/// Encodes points (in the order given; callers sort by time) into a block.
pub fn encode_block<P: std::borrow::Borrow<Point>>(points: &[P]) -> Result<Vec<u8>, String> {
    let mut raw = Vec::with_capacity(points.len() * 4 + 16);
    put_varint(&mut raw, points.len() as u64);
    let (mut previous, mut delta) = (0i64, 0i64);
    for (i, p) in points.iter().map(Borrow::borrow).enumerate() {
        let t = p.timestamp.millis().div_euclid(1000);
        match i {
            0 => put_ivarint(&mut raw, t),
            _ => {
                let d = t - previous;
                put_ivarint(&mut raw, d - delta);
                delta = d;
            }
        }
        previous = t;
    }
    put_runs(&mut raw, points.iter().map(|p| p.borrow().unit.index()));
    let kind = |s: &Sample| match s {
        Sample::Value(_) => KIND_VALUE,
        Sample::Set { .. } => KIND_SET,
        Sample::Values { counts, .. } if counts.is_empty() => KIND_VALUES_ONES,
        Sample::Values { .. } => KIND_VALUES,
    };
    put_runs(&mut raw, points.iter().map(|p| kind(&p.borrow().sample)));
    let mut floats = Vec::with_capacity(points.len());
    let mut counts = Vec::new();
    for p in points {
        match &p.borrow().sample {
            Sample::Value(v) => floats.push(*v),
            Sample::Set {
                count,
                sum,
                min,
                max,
            } => floats.extend([*count, *sum, *min, *max]),
            Sample::Values { values, counts: c } => {
                put_varint(&mut raw, values.len() as u64);
                floats.extend_from_slice(values);
                counts.extend_from_slice(c);
            }
        }
    }
    encode_floats(&mut raw, &floats);
    encode_floats(&mut raw, &counts);
    zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(|e| format!("block zstd: {e}"))
}

/// Blocks are small and queries decode hundreds of them: one decompression
/// context per thread instead of one per block (creating it cost more than
/// decompressing).
fn decompress(block: &[u8]) -> Result<Vec<u8>, String> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let size = zstd::zstd_safe::get_frame_content_size(block)
        .ok()
        .flatten()
        .ok_or("block zstd: no content size")?;
    // A frame may claim any size; a block never holds more than this.
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= 64 << 20)
        .ok_or("block zstd: implausible content size")?;
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("block zstd: {e}"))?);
        }
        let context = slot.as_mut().ok_or("block zstd: no context")?;
        context
            .decompress(block, size)
            .map_err(|e| format!("block zstd: {e}"))
    })
}

/// Decodes a block back into points.
pub fn decode_block(block: &[u8]) -> Result<Vec<Point>, String> {
    let raw = decompress(block)?;
    let pos = &mut 0;
    let n = usize::try_from(get_varint(&raw, pos)?).map_err(|e| e.to_string())?;
    if n > raw.len() * 8 + 1 {
        return Err("implausible point count".into());
    }
    let mut times = Vec::with_capacity(n);
    let (mut t, mut delta) = (0i64, 0i64);
    for i in 0..n {
        let v = get_ivarint(&raw, pos)?;
        if i == 0 {
            t = v;
        } else {
            delta = delta.wrapping_add(v);
            t = t.wrapping_add(delta);
        }
        times.push(t);
    }
    let units = get_runs(&raw, pos, n)?;
    let kinds = get_runs(&raw, pos, n)?;
    let mut lengths = Vec::new();
    let mut float_count = 0usize;
    for k in &kinds {
        float_count += match *k {
            KIND_VALUE => 1,
            KIND_SET => 4,
            KIND_VALUES => {
                let len = get_varint(&raw, pos)? as usize;
                lengths.push((len, true));
                len
            }
            KIND_VALUES_ONES => {
                let len = get_varint(&raw, pos)? as usize;
                lengths.push((len, false));
                len
            }
            other => return Err(format!("unknown sample kind {other}")),
        };
    }
    let count_total: usize = lengths.iter().filter(|(_, c)| *c).map(|(l, _)| l).sum();
    if float_count > raw.len() * 8 + 1 {
        return Err("implausible value count".into());
    }
    let floats = decode_floats(&raw, pos, float_count)?;
    let counts = decode_floats(&raw, pos, count_total)?;
    let (mut f, mut c, mut l) = (0usize, 0usize, 0usize);
    let mut points = Vec::with_capacity(n);
    for i in 0..n {
        let sample = match kinds[i] {
            KIND_VALUE => {
                f += 1;
                Sample::Value(floats[f - 1])
            }
            KIND_SET => {
                f += 4;
                Sample::Set {
                    count: floats[f - 4],
                    sum: floats[f - 3],
                    min: floats[f - 2],
                    max: floats[f - 1],
                }
            }
            _ => {
                let (len, with_counts) = lengths[l];
                l += 1;
                let s = Sample::Values {
                    values: floats[f..f + len].to_vec(),
                    counts: if with_counts {
                        counts[c..c + len].to_vec()
                    } else {
                        Vec::new()
                    },
                };
                f += len;
                if with_counts {
                    c += len;
                }
                s
            }
        };
        points.push(Point {
            timestamp: Timestamp::from_millis(times[i].saturating_mul(1000)),
            unit: Unit::from_index(units[i]).ok_or("unknown unit")?,
            sample,
        });
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn point(t: i64, unit: Unit, sample: Sample) -> Point {
        Point {
            timestamp: Timestamp::from_secs(t),
            unit,
            sample,
        }
    }

    #[test]
    fn short_decimals_take_about_a_byte() {
        // A minute-spaced gauge with two decimals and small steps.
        let points: Vec<Point> = (0..1440)
            .map(|i| {
                let v = 40.0 + f64::from((i * 37) % 200) / 100.0;
                point(
                    1_700_000_000 + 60 * i64::from(i),
                    Unit::NONE,
                    Sample::Value(v),
                )
            })
            .collect();
        let block = encode_block(&points).unwrap();
        assert!(block.len() < 1440 * 2, "{} bytes", block.len());
        assert_eq!(decode_block(&block).unwrap(), points);
    }

    /// Each value is exact at its own exponent, not at the other's: found by
    /// the property test below.
    #[test]
    fn one_exponent_fits_every_value() {
        let values = [882759.4371638319, 81189.76064655851];
        let mut out = Vec::new();
        encode_floats(&mut out, &values);
        let decoded = decode_floats(&out, &mut 0, 2).unwrap();
        assert_eq!(
            decoded.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    fn sample() -> impl Strategy<Value = Sample> {
        let value = prop_oneof![
            (-1_000_000i64..1_000_000).prop_map(|m| m as f64 / 100.0),
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            Just(-0.0),
            Just(f64::MIN_POSITIVE),
        ];
        prop_oneof![
            value.clone().prop_map(Sample::Value),
            (value.clone(), value.clone(), value.clone(), value.clone()).prop_map(
                |(count, sum, min, max)| Sample::Set {
                    count,
                    sum,
                    min,
                    max
                }
            ),
            proptest::collection::vec(value.clone(), 0..5).prop_map(|values| Sample::Values {
                values,
                counts: Vec::new(),
            }),
            proptest::collection::vec((value.clone(), 0.0..1e6f64), 0..5).prop_map(|vc| {
                Sample::Values {
                    values: vc.iter().map(|p| p.0).collect(),
                    counts: vc.iter().map(|p| p.1).collect(),
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips_bit_for_bit(
            raw in proptest::collection::vec((-1_000_000i64..1_000_000, 0u8..27, sample()), 0..60)
        ) {
            let points: Vec<Point> = raw
                .into_iter()
                .map(|(t, u, s)| point(1_700_000_000 + t, Unit::from_index(u).unwrap(), s))
                .collect();
            let decoded = decode_block(&encode_block(&points).unwrap()).unwrap();
            prop_assert_eq!(decoded.len(), points.len());
            for (a, b) in decoded.iter().zip(&points) {
                prop_assert_eq!(a.timestamp, b.timestamp);
                prop_assert_eq!(a.unit, b.unit);
                prop_assert_eq!(format!("{:?}", bits(&a.sample)), format!("{:?}", bits(&b.sample)));
            }
        }
    }

    fn bits(s: &Sample) -> Vec<u64> {
        match s {
            Sample::Value(v) => vec![v.to_bits()],
            Sample::Set {
                count,
                sum,
                min,
                max,
            } => [count, sum, min, max].iter().map(|v| v.to_bits()).collect(),
            Sample::Values { values, counts } => {
                values.iter().chain(counts).map(|v| v.to_bits()).collect()
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [&b""[..], b"\x28\xb5\x2f\xfd", b"not zstd at all"] {
            assert!(decode_block(junk).is_err());
        }
        let good = encode_block(&[point(1, Unit::NONE, Sample::Value(1.5))]).unwrap();
        let raw = zstd::stream::decode_all(&good[..]).unwrap();
        for cut in 0..raw.len() {
            let truncated = zstd::bulk::compress(&raw[..cut], 1).unwrap();
            assert!(decode_block(&truncated).is_err(), "cut at {cut}");
        }
    }
}
