//! Log segment format version 2: events in blocks that reads fetch, skip and
//! decode one at a time.
//!
//! A segment holds the events of one stream and UTC day from one flush,
//! sorted by key, cut into blocks of about [`BLOCK_TARGET_BYTES`] of message
//! text:
//!
//! ```text
//! "TWLS" 2 | block* | footer | u32 footer length | u32 crc32c(footer) | "TWL2"
//! block  = lz4(columns) | lz4(text)
//! columns = varint n | n × ivarint Δtimestamp | n × ivarint Δingestion
//!           | n × ivarint Δsequence | n × varint message length
//! text   = the messages, concatenated
//! footer = varint blocks | blocks × BlockMeta (see `put_meta`)
//! ```
//!
//! The footer is the block directory, read once at open and kept in memory.
//! Each entry carries the block's key range (so ordered reads fetch only the
//! blocks they need, in order) and a Bloom filter of the byte trigrams of its
//! messages: a FilterLogEvents term is a substring, so a block whose filter
//! lacks one of a required literal's trigrams cannot match and is never read.
//! Columns and text are compressed apart so a reader that needs only
//! timestamps does not inflate the text; lz4 because reads are bound by
//! decompression speed, not by disk.

use std::sync::Arc;

use super::store::{Event, Key};
use crate::metrics::codec::{get_ivarint, get_varint, put_ivarint, put_varint};

/// Message bytes per block before it is cut.
pub const BLOCK_TARGET_BYTES: usize = 2 << 20;
/// Events per block at most (small messages).
const BLOCK_MAX_EVENTS: usize = 16_384;
const MAGIC: &[u8; 5] = b"TWLS\x02";
const TRAILER: &[u8; 4] = b"TWL2";
/// Bytes after the footer: length, checksum, trailer.
pub const TAIL_BYTES: usize = 12;
/// Bloom probes per trigram.
const PROBES: u32 = 3;

/// A Bloom filter of byte trigrams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    words: Box<[u64]>,
}

fn trigram(w: &[u8]) -> u32 {
    (u32::from(w[0]) << 16) | (u32::from(w[1]) << 8) | u32::from(w[2])
}

/// Bit positions of trigram `t` in a filter of `words` words (double hashing).
fn probes(words: usize, t: u32) -> impl Iterator<Item = usize> {
    let mask = (words * 64 - 1) as u64;
    let h = u64::from(t).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (a, b) = (h >> 32, (h & 0xFFFF_FFFF) | 1);
    (0..u64::from(PROBES)).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) & mask) as usize)
}

impl Bloom {
    /// A filter sized for `n` distinct trigrams: about 10 bits each, so a
    /// missing trigram passes with probability under 2 %.
    fn with_capacity(n: usize) -> Self {
        let bits = (n.max(1) * 10).next_power_of_two().clamp(1 << 10, 1 << 21);
        Self {
            words: vec![0u64; bits / 64].into_boxed_slice(),
        }
    }

    fn probes(&self, t: u32) -> impl Iterator<Item = usize> {
        probes(self.words.len(), t)
    }

    fn insert(&mut self, t: u32) {
        for bit in probes(self.words.len(), t) {
            self.words[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn contains(&self, t: u32) -> bool {
        self.probes(t)
            .all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// Whether some message of the block may contain `literal` (always, for
    /// literals shorter than a trigram).
    pub fn may_contain(&self, literal: &str) -> bool {
        literal
            .as_bytes()
            .windows(3)
            .all(|w| self.contains(trigram(w)))
    }
}

/// What the footer says of one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMeta {
    /// Smallest key.
    pub min: Key,
    /// Largest key.
    pub max: Key,
    /// Smallest and largest event sequence.
    pub seqs: (u64, u64),
    /// Latest ingestion time.
    pub max_ingestion: i64,
    /// Events.
    pub count: u32,
    /// Message bytes (UTF-8).
    pub bytes: u64,
    /// Offset of the block in the segment.
    pub offset: u64,
    /// Compressed column bytes.
    pub columns_len: u32,
    /// Compressed text bytes.
    pub text_len: u32,
    /// crc32c of the compressed columns: a reader of times alone fetches
    /// and checks the columns alone.
    pub columns_crc: u32,
    /// crc32c of the compressed text.
    pub text_crc: u32,
    /// Trigrams of the messages.
    pub bloom: Bloom,
}

impl BlockMeta {
    /// The byte range of the block in its segment.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + u64::from(self.columns_len) + u64::from(self.text_len)
    }

    /// The byte range of the block's columns (it starts the block).
    pub fn columns_range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + u64::from(self.columns_len)
    }

    /// Whether every literal disjunction may hold in this block.
    pub fn may_match(&self, literals: &[Vec<&str>]) -> bool {
        literals
            .iter()
            .all(|any| any.iter().any(|l| self.bloom.may_contain(l)))
    }
}

/// Distinct trigrams of one block, found with a bitmap over all 2^24.
struct TrigramSet {
    seen: Vec<u64>,
    list: Vec<u32>,
}

impl TrigramSet {
    fn new() -> Self {
        Self {
            seen: vec![0u64; (1 << 24) / 64],
            list: Vec::new(),
        }
    }

    fn add(&mut self, message: &[u8]) {
        for w in message.windows(3) {
            let t = trigram(w);
            let (word, bit) = ((t / 64) as usize, 1u64 << (t % 64));
            if self.seen[word] & bit == 0 {
                self.seen[word] |= bit;
                self.list.push(t);
            }
        }
    }

    /// The block's filter; the set is empty again afterwards.
    fn take_bloom(&mut self) -> Bloom {
        let mut bloom = Bloom::with_capacity(self.list.len());
        for t in self.list.drain(..) {
            bloom.insert(t);
            self.seen[(t / 64) as usize] = 0;
        }
        bloom
    }
}

/// Encodes a segment from `events`, sorted by key. Returns its bytes and
/// block directory.
pub fn encode_segment(events: &[Event]) -> (Vec<u8>, Vec<BlockMeta>) {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.message.len()).sum::<usize>() / 2);
    out.extend_from_slice(MAGIC);
    let mut metas = Vec::new();
    let mut trigrams = TrigramSet::new();
    let mut rest = events;
    while !rest.is_empty() {
        let mut size = 0;
        let n = rest
            .iter()
            .take(BLOCK_MAX_EVENTS)
            .take_while(|e| {
                let fits = size == 0 || size + e.message.len() <= BLOCK_TARGET_BYTES;
                size += e.message.len();
                fits
            })
            .count()
            .max(1);
        let (block, tail) = rest.split_at(n);
        rest = tail;
        let mut columns = Vec::with_capacity(n * 8);
        let mut text = Vec::with_capacity(size);
        put_varint(&mut columns, n as u64);
        // Column after column: like values sit together and compress better.
        let mut prev = 0i64;
        for e in block {
            put_ivarint(&mut columns, e.timestamp.wrapping_sub(prev));
            prev = e.timestamp;
        }
        prev = 0;
        for e in block {
            put_ivarint(&mut columns, e.ingestion.wrapping_sub(prev));
            prev = e.ingestion;
        }
        prev = 0;
        for e in block {
            put_ivarint(&mut columns, (e.seq as i64).wrapping_sub(prev));
            prev = e.seq as i64;
        }
        for e in block {
            put_varint(&mut columns, e.message.len() as u64);
            text.extend_from_slice(e.message.as_bytes());
            trigrams.add(e.message.as_bytes());
        }
        let columns = lz4_flex::block::compress_prepend_size(&columns);
        let text_c = lz4_flex::block::compress_prepend_size(&text);
        let offset = out.len() as u64;
        out.extend_from_slice(&columns);
        out.extend_from_slice(&text_c);
        let columns_crc = crc32c::crc32c(&columns);
        let text_crc = crc32c::crc32c(&text_c);
        let first = &block[0];
        let last = &block[block.len() - 1];
        metas.push(BlockMeta {
            min: (first.timestamp, first.ingestion, first.seq),
            max: (last.timestamp, last.ingestion, last.seq),
            seqs: (
                block.iter().map(|e| e.seq).min().unwrap_or(0),
                block.iter().map(|e| e.seq).max().unwrap_or(0),
            ),
            max_ingestion: block.iter().map(|e| e.ingestion).max().unwrap_or(0),
            count: n as u32,
            bytes: text.len() as u64,
            offset,
            columns_len: columns.len() as u32,
            text_len: text_c.len() as u32,
            columns_crc,
            text_crc,
            bloom: trigrams.take_bloom(),
        });
    }
    let mut footer = Vec::new();
    put_varint(&mut footer, metas.len() as u64);
    for m in &metas {
        put_meta(&mut footer, m);
    }
    out.extend_from_slice(&footer);
    out.extend_from_slice(&(footer.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&footer).to_le_bytes());
    out.extend_from_slice(TRAILER);
    (out, metas)
}

fn put_key(out: &mut Vec<u8>, k: Key) {
    put_ivarint(out, k.0);
    put_ivarint(out, k.1);
    put_varint(out, k.2);
}

fn get_key(b: &[u8], pos: &mut usize) -> Result<Key, String> {
    Ok((
        get_ivarint(b, pos)?,
        get_ivarint(b, pos)?,
        get_varint(b, pos)?,
    ))
}

fn put_meta(out: &mut Vec<u8>, m: &BlockMeta) {
    put_key(out, m.min);
    put_key(out, m.max);
    put_varint(out, m.seqs.0);
    put_varint(out, m.seqs.1);
    put_ivarint(out, m.max_ingestion);
    put_varint(out, u64::from(m.count));
    put_varint(out, m.bytes);
    put_varint(out, m.offset);
    put_varint(out, u64::from(m.columns_len));
    put_varint(out, u64::from(m.text_len));
    put_varint(out, u64::from(m.columns_crc));
    put_varint(out, u64::from(m.text_crc));
    put_varint(out, m.bloom.words.len() as u64);
    for w in m.bloom.words.iter() {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

fn small(v: u64) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| "log segment footer value out of range".to_owned())
}

/// The footer length announced by a segment's last [`TAIL_BYTES`], checked
/// against the segment size.
pub fn footer_len(tail: &[u8], size: u64) -> Result<u64, String> {
    if tail.len() != TAIL_BYTES || &tail[8..] != TRAILER {
        return Err("not a version 2 log segment".into());
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + (TAIL_BYTES + MAGIC.len()) as u64 > size {
        return Err("log segment footer longer than the segment".into());
    }
    Ok(len)
}

/// Decodes the block directory from the footer and the tail after it.
pub fn decode_footer(footer: &[u8], tail: &[u8]) -> Result<Vec<BlockMeta>, String> {
    let crc = u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]);
    if crc32c::crc32c(footer) != crc {
        return Err("log segment footer checksum mismatch".into());
    }
    let pos = &mut 0;
    let n = get_varint(footer, pos)? as usize;
    let mut metas = Vec::with_capacity(n.min(footer.len()));
    for _ in 0..n {
        let min = get_key(footer, pos)?;
        let max = get_key(footer, pos)?;
        let seqs = (get_varint(footer, pos)?, get_varint(footer, pos)?);
        let max_ingestion = get_ivarint(footer, pos)?;
        let count = small(get_varint(footer, pos)?)?;
        let bytes = get_varint(footer, pos)?;
        let offset = get_varint(footer, pos)?;
        let columns_len = small(get_varint(footer, pos)?)?;
        let text_len = small(get_varint(footer, pos)?)?;
        let columns_crc = small(get_varint(footer, pos)?)?;
        let text_crc = small(get_varint(footer, pos)?)?;
        let words = get_varint(footer, pos)? as usize;
        if !words.is_power_of_two() || words > (1 << 15) {
            return Err("log segment bloom filter size".into());
        }
        let raw = footer
            .get(*pos..*pos + words * 8)
            .ok_or("log segment footer truncated")?;
        *pos += words * 8;
        let bloom = Bloom {
            words: raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        };
        metas.push(BlockMeta {
            min,
            max,
            seqs,
            max_ingestion,
            count,
            bytes,
            offset,
            columns_len,
            text_len,
            columns_crc,
            text_crc,
            bloom,
        });
    }
    Ok(metas)
}

/// A decoded block: columns, and the messages as one text.
#[derive(Debug, Clone)]
pub struct Block {
    /// Event times, ms.
    pub timestamps: Vec<i64>,
    /// Ingestion times, ms.
    pub ingestions: Vec<i64>,
    /// Sequences.
    pub seqs: Vec<u64>,
    /// End offset of each message in `text`.
    pub ends: Vec<usize>,
    /// Messages, concatenated.
    pub text: String,
}

fn inflate(bytes: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    // The size prefix is trusted only after the checksum, and bounded anyway.
    let size = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("log block truncated")?;
    if size > limit {
        return Err("log block larger than allowed".into());
    }
    lz4_flex::block::decompress_size_prepended(bytes).map_err(|e| e.to_string())
}

/// A block's columns: timestamps, ingestion times, sequences, message ends.
pub type Columns = (Vec<i64>, Vec<i64>, Vec<u64>, Vec<usize>);

/// Decodes the columns of a block (`bytes` = its range in the segment, or
/// its columns alone).
fn decode_columns(bytes: &[u8], m: &BlockMeta) -> Result<Columns, String> {
    let columns = inflate(
        bytes
            .get(..m.columns_len as usize)
            .ok_or("log block truncated")?,
        (m.count as usize + 1) * 40,
    )?;
    let pos = &mut 0;
    let n = get_varint(&columns, pos)? as usize;
    if n != m.count as usize {
        return Err("log block event count mismatch".into());
    }
    let deltas = |pos: &mut usize| -> Result<Vec<i64>, String> {
        let mut out = Vec::with_capacity(n);
        let mut v = 0i64;
        for _ in 0..n {
            v = v.wrapping_add(get_ivarint(&columns, pos)?);
            out.push(v);
        }
        Ok(out)
    };
    let ts = deltas(pos)?;
    let ing = deltas(pos)?;
    let seqs = deltas(pos)?.into_iter().map(|s| s as u64).collect();
    let mut ends = Vec::with_capacity(n);
    let mut end = 0usize;
    for _ in 0..n {
        end = end.saturating_add(get_varint(&columns, pos)? as usize);
        ends.push(end);
    }
    Ok((ts, ing, seqs, ends))
}

/// Checks the columns at the start of `bytes` (a whole block, or just its
/// columns) against their checksum.
fn check_columns(bytes: &[u8], m: &BlockMeta) -> Result<(), String> {
    let columns = bytes
        .get(..m.columns_len as usize)
        .ok_or("log block truncated")?;
    if crc32c::crc32c(columns) != m.columns_crc {
        return Err("log block checksum mismatch".into());
    }
    Ok(())
}

fn check(bytes: &[u8], m: &BlockMeta) -> Result<(), String> {
    if bytes.len() as u64 != m.range().end - m.range().start {
        return Err("log block truncated".into());
    }
    check_columns(bytes, m)?;
    if crc32c::crc32c(&bytes[m.columns_len as usize..]) != m.text_crc {
        return Err("log block checksum mismatch".into());
    }
    Ok(())
}

/// Decodes a whole block.
pub fn decode_block(bytes: &[u8], m: &BlockMeta) -> Result<Block, String> {
    check(bytes, m)?;
    let (timestamps, ingestions, seqs, ends) = decode_columns(bytes, m)?;
    let text = inflate(&bytes[m.columns_len as usize..], m.bytes as usize)?;
    let text = String::from_utf8(text).map_err(|_| "log block text is not UTF-8")?;
    if ends.last().copied().unwrap_or(0) != text.len()
        || ends.iter().any(|&e| !text.is_char_boundary(e))
    {
        return Err("log block message lengths do not match its text".into());
    }
    Ok(Block {
        timestamps,
        ingestions,
        seqs,
        ends,
        text,
    })
}

/// Message `i` of a block's text (its bounds were checked at decode).
fn message_at<'t>(text: &'t str, ends: &[usize], i: usize) -> &'t str {
    let start = if i == 0 { 0 } else { ends[i - 1] };
    text.get(start..ends[i]).unwrap_or_default()
}

/// A decoded block whose text lives in a caller's buffer, reused from block
/// to block (no fresh 2 MB allocation, no page faults, per block).
#[derive(Debug)]
pub struct BlockView<'a> {
    /// Event times, ms.
    pub timestamps: Vec<i64>,
    /// Ingestion times, ms.
    pub ingestions: Vec<i64>,
    /// Sequences.
    pub seqs: Vec<u64>,
    /// End offset of each message in `text`.
    pub ends: Vec<usize>,
    /// Messages, concatenated.
    pub text: &'a str,
}

impl BlockView<'_> {
    /// Events in the block.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether the block has no events.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Message `i` (bounds were checked at decode).
    pub fn message(&self, i: usize) -> &str {
        message_at(self.text, &self.ends, i)
    }
}

/// Decodes a whole block, its text into `scratch`.
pub fn decode_block_into<'a>(
    bytes: &[u8],
    m: &BlockMeta,
    scratch: &'a mut Vec<u8>,
) -> Result<BlockView<'a>, String> {
    check(bytes, m)?;
    let (timestamps, ingestions, seqs, ends) = decode_columns(bytes, m)?;
    let text = &bytes[m.columns_len as usize..];
    let size = text
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("log block truncated")?;
    if size as u64 != m.bytes {
        return Err("log block text size mismatch".into());
    }
    if scratch.len() < size {
        scratch.resize(size, 0);
    }
    let n = lz4_flex::block::decompress_into(&text[4..], &mut scratch[..size])
        .map_err(|e| e.to_string())?;
    if n != size {
        return Err("log block text size mismatch".into());
    }
    let text = std::str::from_utf8(&scratch[..size]).map_err(|_| "log block text is not UTF-8")?;
    if ends.last().copied().unwrap_or(0) != text.len()
        || ends.iter().any(|&e| !text.is_char_boundary(e))
    {
        return Err("log block message lengths do not match its text".into());
    }
    Ok(BlockView {
        timestamps,
        ingestions,
        seqs,
        ends,
        text,
    })
}

/// Decodes a block's columns, not its text, from the block or from its
/// columns alone ([`BlockMeta::columns_range`]), checking them.
pub fn decode_block_columns(bytes: &[u8], m: &BlockMeta) -> Result<Columns, String> {
    check_columns(bytes, m)?;
    decode_columns(bytes, m)
}

impl Block {
    /// Events in the block.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether the block has no events.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Message `i` (bounds were checked at decode).
    pub fn message(&self, i: usize) -> &str {
        message_at(&self.text, &self.ends, i)
    }

    /// Key of event `i`.
    pub fn key(&self, i: usize) -> Key {
        (self.timestamps[i], self.ingestions[i], self.seqs[i])
    }

    /// Event `i`, with its message copied out.
    pub fn event(&self, i: usize) -> Event {
        Event {
            timestamp: self.timestamps[i],
            ingestion: self.ingestions[i],
            seq: self.seqs[i],
            message: Arc::from(self.message(i)),
        }
    }

    /// Index of the event whose message holds text offset `pos`.
    pub fn event_at(&self, pos: usize) -> usize {
        self.ends.partition_point(|&e| e <= pos)
    }

    /// Start offset of message `i`.
    pub fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }
}

/// Decodes a version 1 segment (one zstd body), for migration at open.
pub fn decode_v1(bytes: &[u8]) -> Result<Vec<Event>, String> {
    use crate::metrics::codec::get_str;
    if bytes.len() < 9 || &bytes[..5] != b"TWLS\x01" {
        return Err("not a log segment".into());
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(content) != u32::from_le_bytes(crc.try_into().map_err(|_| "crc")?) {
        return Err("log segment checksum mismatch".into());
    }
    let body = zstd::stream::decode_all(&content[5..]).map_err(|e| e.to_string())?;
    let pos = &mut 0;
    let n = get_varint(&body, pos)? as usize;
    let mut events = Vec::with_capacity(n.min(body.len()));
    for _ in 0..n {
        events.push(Event {
            timestamp: get_ivarint(&body, pos)?,
            ingestion: get_ivarint(&body, pos)?,
            seq: get_varint(&body, pos)?,
            message: Arc::from(get_str(&body, pos)?),
        });
    }
    Ok(events)
}

/// Whether `bytes` start a version 1 segment.
pub fn is_v1(head: &[u8]) -> bool {
    head.starts_with(b"TWLS\x01")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(t: i64, seq: u64, m: &str) -> Event {
        Event {
            timestamp: t,
            ingestion: t + 5,
            seq,
            message: Arc::from(m),
        }
    }

    fn blocks(bytes: &[u8], metas: &[BlockMeta]) -> Vec<Block> {
        metas
            .iter()
            .map(|m| {
                let r = m.range();
                decode_block(&bytes[r.start as usize..r.end as usize], m).unwrap()
            })
            .collect()
    }

    #[test]
    fn round_trip_with_footer_and_blocks() {
        // 3 MB of text: two blocks at the 2 MB cut.
        let big = "x".repeat(100_000);
        let events: Vec<Event> = (0..30)
            .map(|i| event(1000 + i, 7 + i as u64, &format!("{i} é {big}")))
            .collect();
        let (bytes, metas) = encode_segment(&events);
        assert_eq!(metas.len(), 2);
        assert_eq!(metas.iter().map(|m| m.count).sum::<u32>(), 30);
        let size = bytes.len() as u64;
        let tail = &bytes[bytes.len() - TAIL_BYTES..];
        let len = footer_len(tail, size).unwrap() as usize;
        let footer = &bytes[bytes.len() - TAIL_BYTES - len..bytes.len() - TAIL_BYTES];
        assert_eq!(decode_footer(footer, tail).unwrap(), metas);
        let decoded: Vec<Event> = blocks(&bytes, &metas)
            .iter()
            .flat_map(|b| (0..b.len()).map(|i| b.event(i)).collect::<Vec<_>>())
            .collect();
        assert_eq!(decoded, events);
        let mut scratch = Vec::new();
        for m in &metas {
            let r = m.range();
            let view = decode_block_into(&bytes[r.start as usize..r.end as usize], m, &mut scratch)
                .unwrap();
            let block = decode_block(&bytes[r.start as usize..r.end as usize], m).unwrap();
            assert_eq!(view.text, block.text);
            assert_eq!(
                (view.len(), view.message(3)),
                (block.len(), block.message(3))
            );
        }
        let c = metas[1].columns_range();
        let (times, ..) =
            decode_block_columns(&bytes[c.start as usize..c.end as usize], &metas[1]).unwrap();
        assert_eq!(times, (1000 + 20..1030).collect::<Vec<i64>>());
        assert_eq!(metas[0].min, (1000, 1005, 7));
        assert_eq!(metas[1].max, (1029, 1034, 36));
    }

    #[test]
    fn corruption_is_an_error_not_a_panic() {
        let events = vec![event(1, 1, "hello world"), event(2, 2, "second")];
        let (mut bytes, metas) = encode_segment(&events);
        let r = metas[0].range();
        bytes[r.start as usize + 6] ^= 0x40;
        assert!(decode_block(&bytes[r.start as usize..r.end as usize], &metas[0]).is_err());
        assert!(footer_len(b"short", 10).is_err());
        let tail = &bytes[bytes.len() - TAIL_BYTES..];
        let mut footer = bytes[r.end as usize..bytes.len() - TAIL_BYTES].to_vec();
        footer[0] ^= 1;
        assert!(decode_footer(&footer, tail).is_err());
    }

    #[test]
    fn bloom_knows_present_trigrams_and_rejects_most_absent_ones() {
        let events: Vec<Event> = (0..2000)
            .map(|i| {
                event(
                    i,
                    i as u64,
                    &format!("GET /api/items/{i} status=200 user=u{}", i % 97),
                )
            })
            .collect();
        let (_, metas) = encode_segment(&events);
        let m = &metas[0];
        for e in &events {
            assert!(m.bloom.may_contain(&e.message));
        }
        assert!(m.may_match(&[vec!["status=200"], vec!["nope", "items"]]));
        // Absent words: most must be rejected (the filter targets < 2 %).
        let absent = (0..1000)
            .filter(|i| m.bloom.may_contain(&format!("Q{i}Z")))
            .count();
        assert!(absent < 50, "{absent} of 1000 absent literals passed");
        assert!(!m.may_match(&[vec!["OutOfMemoryError"]]));
    }

    proptest! {
        #[test]
        fn any_events_round_trip(msgs in proptest::collection::vec(".{0,40}", 1..60)) {
            let events: Vec<Event> = msgs.iter().enumerate()
                .map(|(i, m)| event(i as i64 * 3 - 50, (i as u64) * 16_384 + 3, m))
                .collect();
            let (bytes, metas) = encode_segment(&events);
            let decoded: Vec<Event> = blocks(&bytes, &metas)
                .iter()
                .flat_map(|b| (0..b.len()).map(|i| b.event(i)).collect::<Vec<_>>())
                .collect();
            prop_assert_eq!(decoded, events.clone());
            for (m, e) in metas.iter().zip(events.iter()) {
                prop_assert!(m.bloom.may_contain(&e.message));
            }
        }
    }
}
