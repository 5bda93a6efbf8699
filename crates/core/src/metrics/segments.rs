//! Metric segment files: immutable objects holding raw blocks (L0 flushes and
//! compacted days) or rolled-up tiers, each ending in a CRC so a torn or
//! altered object is refused instead of misread.
//!
//! # Layout
//! `"TWMS" | u8 version=1 | u8 kind | body | u32 crc32c (LE) of all before`
//! - kind 0 (raw): `varint n`, then per entry: series identity, last receive
//!   time, day, `min_t`, `max_t`, point count, and the [`super::codec`] block.
//! - kind 2 / 3 (T2 / T3): zstd of `varint n`, then per entry: series
//!   identity, last receive time, `varint m`, `m × (start, unit, summary)`.
//!
//! A series identity is `account | region | namespace | name | varint d |
//! d × (name | value)`, every string length-prefixed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::codec::{get_bytes, get_ivarint, get_str, get_varint, put_ivarint, put_str, put_varint};
use super::model::{Dimension, MetricId, Unit};
use super::summary::Summary;
use super::tiers::Block;

const MAGIC: &[u8; 4] = b"TWMS";
const VERSION: u8 = 1;

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Raw blocks.
    Raw,
    /// The 5-minute tier.
    T2,
    /// The 1-hour tier.
    T3,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Raw => 0,
            Kind::T2 => 2,
            Kind::T3 => 3,
        }
    }
}

/// Where a series lives.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesKey {
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// Identity.
    pub metric: MetricId,
    /// Server receive time of its latest datum (ms), for ListMetrics.
    pub last_received: i64,
}

/// One raw block of one series.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The series.
    pub series: SeriesKey,
    /// UTC day of every point in the block.
    pub day: i64,
    /// The block.
    pub block: Block,
}

/// Rolled-up buckets of one series.
#[derive(Debug, Clone)]
pub struct TierEntry {
    /// The series.
    pub series: SeriesKey,
    /// Summaries by (bucket start ms, unit).
    pub summaries: BTreeMap<(i64, Unit), Summary>,
}

/// A decoded segment.
#[derive(Debug)]
pub enum Segment {
    /// Raw blocks.
    Raw(Vec<RawEntry>),
    /// A tier's summaries.
    Tier(Kind, Vec<TierEntry>),
}

fn put_series(out: &mut Vec<u8>, s: &SeriesKey) {
    put_str(out, &s.account);
    put_str(out, &s.region);
    put_str(out, &s.metric.namespace);
    put_str(out, &s.metric.name);
    put_varint(out, s.metric.dimensions.len() as u64);
    for d in &s.metric.dimensions {
        put_str(out, &d.name);
        put_str(out, &d.value);
    }
    put_ivarint(out, s.last_received);
}

fn get_series(buf: &[u8], pos: &mut usize) -> Result<SeriesKey, String> {
    let account = get_str(buf, pos)?;
    let region = get_str(buf, pos)?;
    let namespace = get_str(buf, pos)?;
    let name = get_str(buf, pos)?;
    let n = get_varint(buf, pos)?;
    if n > 30 {
        return Err("too many dimensions".into());
    }
    let mut dimensions = Vec::new();
    for _ in 0..n {
        dimensions.push(Dimension {
            name: get_str(buf, pos)?,
            value: get_str(buf, pos)?,
        });
    }
    Ok(SeriesKey {
        account,
        region,
        metric: MetricId {
            namespace,
            name,
            dimensions,
        },
        last_received: get_ivarint(buf, pos)?,
    })
}

fn seal(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 10);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind.code());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Encodes raw blocks.
pub fn encode_raw(entries: &[RawEntry]) -> Vec<u8> {
    let mut body = Vec::new();
    put_varint(&mut body, entries.len() as u64);
    for e in entries {
        put_series(&mut body, &e.series);
        put_ivarint(&mut body, e.day);
        put_ivarint(&mut body, e.block.min_t);
        put_ivarint(&mut body, e.block.max_t);
        put_varint(&mut body, e.block.points as u64);
        put_varint(&mut body, e.block.bytes.len() as u64);
        body.extend_from_slice(&e.block.bytes);
    }
    seal(Kind::Raw, &body)
}

/// Encodes a tier's summaries.
pub fn encode_tier(kind: Kind, entries: &[TierEntry]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    put_varint(&mut body, entries.len() as u64);
    for e in entries {
        put_series(&mut body, &e.series);
        put_varint(&mut body, e.summaries.len() as u64);
        for ((start, unit), s) in &e.summaries {
            put_ivarint(&mut body, *start);
            body.push(unit.index());
            s.encode(&mut body);
        }
    }
    let compressed = zstd::bulk::compress(&body, 3).map_err(|e| format!("tier zstd: {e}"))?;
    Ok(seal(kind, &compressed))
}

/// Decodes and checks a segment.
pub fn decode(bytes: &[u8]) -> Result<Segment, String> {
    if bytes.len() < 10 || &bytes[..4] != MAGIC {
        return Err("not a metric segment".into());
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "crc")?);
    if crc32c::crc32c(content) != stored {
        return Err("segment checksum mismatch".into());
    }
    if content[4] != VERSION {
        return Err(format!("unknown segment version {}", content[4]));
    }
    let kind = content[5];
    let body = &content[6..];
    let pos = &mut 0;
    match kind {
        0 => {
            let n = get_varint(body, pos)? as usize;
            let mut entries = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                let series = get_series(body, pos)?;
                let day = get_ivarint(body, pos)?;
                let min_t = get_ivarint(body, pos)?;
                let max_t = get_ivarint(body, pos)?;
                let points = get_varint(body, pos)? as usize;
                let block: Arc<[u8]> = get_bytes(body, pos)?.into();
                entries.push(RawEntry {
                    series,
                    day,
                    block: Block {
                        min_t,
                        max_t,
                        points,
                        bytes: block,
                    },
                });
            }
            Ok(Segment::Raw(entries))
        }
        2 | 3 => {
            let kind = if kind == 2 { Kind::T2 } else { Kind::T3 };
            let body = zstd::stream::decode_all(body).map_err(|e| format!("tier zstd: {e}"))?;
            let n = get_varint(&body, pos)? as usize;
            let mut entries = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                let series = get_series(&body, pos)?;
                let m = get_varint(&body, pos)? as usize;
                let mut summaries = BTreeMap::new();
                for _ in 0..m.min(body.len()) {
                    let start = get_ivarint(&body, pos)?;
                    let unit = *body.get(*pos).ok_or("truncated unit")?;
                    *pos += 1;
                    let unit = Unit::from_index(unit).ok_or("unknown unit")?;
                    summaries.insert((start, unit), Summary::decode(&body, pos)?);
                }
                entries.push(TierEntry { series, summaries });
            }
            Ok(Segment::Tier(kind, entries))
        }
        other => Err(format!("unknown segment kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::codec::encode_block;
    use crate::metrics::model::{Point, Sample};
    use crate::metrics::tiers::fold_points;
    use trailwatch_types::Timestamp;

    fn key() -> SeriesKey {
        SeriesKey {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            metric: MetricId {
                namespace: "App".into(),
                name: "Latency".into(),
                dimensions: vec![Dimension {
                    name: "Host".into(),
                    value: "a".into(),
                }],
            },
            last_received: 1_700_000_000_000,
        }
    }

    #[test]
    fn segments_round_trip_and_refuse_damage() {
        let points: Vec<Point> = (0..100)
            .map(|i| Point {
                timestamp: Timestamp::from_secs(1_700_000_000 + 60 * i),
                unit: Unit::NONE,
                sample: Sample::Value(i as f64),
            })
            .collect();
        let bytes = encode_block(&points).unwrap();
        let raw = encode_raw(&[RawEntry {
            series: key(),
            day: 1_699_920_000_000,
            block: Block {
                min_t: 1,
                max_t: 2,
                points: 100,
                bytes: bytes.clone().into(),
            },
        }]);
        match decode(&raw).unwrap() {
            Segment::Raw(entries) => {
                assert_eq!(entries[0].series, key());
                assert_eq!(entries[0].day, 1_699_920_000_000);
                assert_eq!(&*entries[0].block.bytes, &bytes[..]);
            }
            other => panic!("{other:?}"),
        }
        let tier = encode_tier(
            Kind::T2,
            &[TierEntry {
                series: key(),
                summaries: fold_points(&points, 300_000),
            }],
        )
        .unwrap();
        match decode(&tier).unwrap() {
            Segment::Tier(Kind::T2, entries) => {
                assert_eq!(entries[0].summaries, fold_points(&points, 300_000));
            }
            other => panic!("{other:?}"),
        }
        for mut damaged in [raw, tier] {
            let middle = damaged.len() / 2;
            damaged[middle] ^= 1;
            assert!(decode(&damaged).is_err());
            assert!(decode(&damaged[..middle]).is_err());
        }
    }
}
