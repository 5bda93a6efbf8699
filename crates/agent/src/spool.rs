//! The on-disk buffer between reading log files and sending their events.
//!
//! Every batch read from the files is appended here and fsynced before the
//! reader moves its file offsets past it, so a batch is either in the spool
//! or still in its file. The sender takes batches in order and acknowledges
//! them; segments whose batches were all sent are deleted. The spool is
//! bounded: past `max_bytes` the reader waits (the files keep the lines).
//!
//! A segment is `TWSP` + version 1, then records `len u32 | crc32c u32 |
//! payload`. Batches cut from one read are written together, and only the
//! last carries the file offsets (`end`), so recovery drops an incomplete
//! tail unit: those lines are read again from their files, never twice.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

const MAGIC: &[u8; 5] = b"TWSP\x01";
/// A new segment starts past this size, or past a quarter of the bound when
/// that is smaller: space comes back a whole segment at a time, so a small
/// bound needs small segments for reading to resume before the spool is
/// empty.
const SEGMENT_BYTES: u64 = 16 << 20;
const MIN_SEGMENT_BYTES: u64 = 64 << 10;

/// Where a file's reading stands: what the next read starts from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileMark {
    /// Device and inode: a file is known by these, not by its path.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Bytes of the file turned into events (or skipped) so far.
    pub offset: u64,
    /// CRC-32C of the file's first `head_len` bytes: a copytruncate or a new
    /// file on a reused inode changes it.
    pub head: u32,
    /// How many leading bytes `head` covers (up to 1 KiB).
    pub head_len: u32,
    /// The path it was last read under (for finding it after a restart).
    pub path: String,
}

/// The file marks of complete units, by the sequence of their last batch.
pub type UnitMarks = Vec<(u64, Vec<FileMark>)>;

/// One PutLogEvents request's worth of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Position in the spool; also the batch's id towards the server.
    pub seq: u64,
    /// Destination log group.
    pub group: String,
    /// Destination log stream.
    pub stream: String,
    /// (timestamp ms, message), chronological.
    pub events: Vec<(i64, String)>,
    /// File offsets reached once this batch and those before it are kept;
    /// only on the last batch of a unit.
    pub marks: Vec<FileMark>,
    /// Whether this batch ends its unit.
    pub end: bool,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    /// (seq, segment first_seq, offset of the record, record length).
    index: VecDeque<(u64, u64, u64, u32)>,
    next_seq: u64,
    max_bytes: u64,
}

impl Spool {
    /// Opens `dir`, keeping the complete units of batches after `sent_seq`.
    /// Returns the spool and the file marks of the kept units, in order.
    pub fn open(dir: &Path, sent_seq: u64, max_bytes: u64) -> anyhow::Result<(Self, UnitMarks)> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                names.push((first, path));
            }
        }
        names.sort();
        let mut spool = Self {
            dir: dir.to_owned(),
            segments: VecDeque::new(),
            writer: None,
            index: VecDeque::new(),
            next_seq: sent_seq + 1,
            max_bytes,
        };
        let mut marks = Vec::new();
        // Records of the unit being read; kept only once its end is seen.
        let mut unit: Vec<(u64, u64, u64, u32)> = Vec::new();
        let mut valid_end: Option<(usize, u64)> = None;
        for (i, (first, path)) in names.iter().enumerate() {
            let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
                if i + 1 == names.len() {
                    // A segment whose header never reached the disk.
                    std::fs::remove_file(path)?;
                    break;
                }
                bail!("{} is not a spool segment of version 1", path.display());
            }
            let mut at = MAGIC.len();
            while let Some((payload, len)) = read_record(&bytes, at) {
                let batch = decode(payload)
                    .with_context(|| format!("{} at offset {at}", path.display()))?;
                spool.next_seq = spool.next_seq.max(batch.seq + 1);
                unit.push((batch.seq, *first, at as u64, len as u32));
                at += len;
                if batch.end {
                    marks.push((batch.seq, batch.marks));
                    spool
                        .index
                        .extend(unit.drain(..).filter(|(seq, ..)| *seq > sent_seq));
                    valid_end = Some((i, at as u64));
                }
            }
            spool.segments.push_back(Segment {
                first_seq: *first,
                path: path.clone(),
                bytes: bytes.len() as u64,
            });
        }
        // Cut what follows the last complete unit (a torn or partial tail).
        let keep_segments = valid_end.map_or(0, |(i, _)| i + 1);
        while spool.segments.len() > keep_segments {
            if let Some(s) = spool.segments.pop_back() {
                std::fs::remove_file(&s.path)?;
            }
        }
        if let (Some((_, end)), Some(last)) = (valid_end, spool.segments.back_mut()) {
            if last.bytes > end {
                let f = OpenOptions::new().write(true).open(&last.path)?;
                f.set_len(end)?;
                f.sync_all()?;
                last.bytes = end;
            }
        }
        spool.drop_sent();
        Ok((spool, marks))
    }

    /// Bytes held by segments not yet deleted.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 4).clamp(MIN_SEGMENT_BYTES, SEGMENT_BYTES)
    }

    /// Whether the spool has reached its bound.
    pub fn full(&self) -> bool {
        self.bytes() >= self.max_bytes
    }

    /// Batches waiting to be sent.
    pub fn pending(&self) -> usize {
        self.index.len()
    }

    /// Appends a unit of batches (numbered here) and fsyncs it.
    pub fn append(&mut self, batches: &mut [Batch]) -> anyhow::Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let roll = match self.segments.back() {
            Some(s) => self.writer.is_none() || s.bytes >= self.segment_bytes(),
            None => true,
        };
        if roll {
            let first = self.next_seq;
            let path = self.dir.join(format!("{first:020}.spool"));
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("create {}", path.display()))?;
            f.write_all(MAGIC)?;
            File::open(&self.dir)?.sync_all()?;
            self.writer = Some(f);
            self.segments.push_back(Segment {
                first_seq: first,
                path,
                bytes: MAGIC.len() as u64,
            });
        }
        let (Some(writer), Some(segment)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            bail!("the spool has no segment to write to");
        };
        let last = batches.len() - 1;
        let mut out = Vec::new();
        let mut added = Vec::with_capacity(batches.len());
        for (i, b) in batches.iter_mut().enumerate() {
            b.seq = self.next_seq;
            b.end = i == last;
            if !b.end {
                b.marks.clear();
            }
            self.next_seq += 1;
            let payload = encode(b);
            let start = segment.bytes + out.len() as u64;
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
            added.push((b.seq, segment.first_seq, start, (payload.len() + 8) as u32));
        }
        writer.write_all(&out)?;
        writer.sync_data()?;
        segment.bytes += out.len() as u64;
        self.index.extend(added);
        Ok(())
    }

    /// The oldest batch not yet acknowledged.
    pub fn peek(&self) -> anyhow::Result<Option<Batch>> {
        self.index.front().map(|&e| self.read(e)).transpose()
    }

    /// The first batch after `seq`, if it is written yet (the sender reads
    /// it while `seq` is in flight).
    pub fn peek_after(&self, seq: u64) -> anyhow::Result<Option<Batch>> {
        let at = self.index.partition_point(|&(s, ..)| s <= seq);
        self.index.get(at).map(|&e| self.read(e)).transpose()
    }

    fn read(&self, (seq, first, at, len): (u64, u64, u64, u32)) -> anyhow::Result<Batch> {
        let path = self.dir.join(format!("{first:020}.spool"));
        let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, at)?;
        let (payload, _) = read_record(&buf, 0)
            .with_context(|| format!("{}: bad record at {at}", path.display()))?;
        let batch = decode(payload)?;
        if batch.seq != seq {
            bail!("{}: record at {at} is not batch {seq}", path.display());
        }
        Ok(batch)
    }

    /// Whether acknowledging through `seq` deletes a segment (the caller
    /// saves the offsets those segments hold first).
    pub fn would_drop(&self, seq: u64) -> bool {
        let next = self
            .index
            .iter()
            .find(|(s, ..)| *s > seq)
            .map(|(_, first, ..)| *first);
        match (next, self.segments.front()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(n), Some(front)) => n > front.first_seq,
        }
    }

    /// Acknowledges every batch through `seq`; deletes the segments that
    /// only held acknowledged batches.
    pub fn ack(&mut self, seq: u64) {
        while self.index.front().is_some_and(|(s, ..)| *s <= seq) {
            self.index.pop_front();
        }
        self.drop_sent();
    }

    fn drop_sent(&mut self) {
        let next = self.index.front().map(|(_, first, ..)| *first);
        while self.segments.len() > 1 || (self.index.is_empty() && !self.segments.is_empty()) {
            let Some(front) = self.segments.front() else {
                break;
            };
            if next.is_some_and(|n| n <= front.first_seq) {
                break;
            }
            let is_writer = self.segments.len() == 1;
            if is_writer {
                self.writer = None;
            }
            let _ = std::fs::remove_file(&front.path);
            self.segments.pop_front();
        }
    }
}

fn read_record(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    let payload = bytes.get(at + 8..at + 8 + len)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, len + 8))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode(b: &Batch) -> Vec<u8> {
    let size: usize = b.events.iter().map(|(_, m)| m.len() + 12).sum();
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(&b.seq.to_le_bytes());
    out.push(u8::from(b.end));
    put_str(&mut out, &b.group);
    put_str(&mut out, &b.stream);
    out.extend_from_slice(&(b.events.len() as u32).to_le_bytes());
    for (t, m) in &b.events {
        out.extend_from_slice(&t.to_le_bytes());
        put_str(&mut out, m);
    }
    out.extend_from_slice(&(b.marks.len() as u32).to_le_bytes());
    for m in &b.marks {
        for n in [m.dev, m.ino, m.offset] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&m.head.to_le_bytes());
        out.extend_from_slice(&m.head_len.to_le_bytes());
        put_str(&mut out, &m.path);
    }
    out
}

struct Reader<'a>(std::io::Cursor<&'a [u8]>);

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.0.read_exact(&mut b).context("truncated batch")?;
        Ok(b)
    }
    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn str(&mut self) -> anyhow::Result<String> {
        let len = self.u32()? as usize;
        let pos = self.0.position() as usize;
        let raw = self
            .0
            .get_ref()
            .get(pos..pos + len)
            .context("truncated batch")?;
        self.0.seek(SeekFrom::Current(len as i64))?;
        String::from_utf8(raw.to_vec()).context("batch text is not UTF-8")
    }
}

fn decode(payload: &[u8]) -> anyhow::Result<Batch> {
    let mut r = Reader(std::io::Cursor::new(payload));
    let seq = r.u64()?;
    let end = r.bytes::<1>()?[0] == 1;
    let group = r.str()?;
    let stream = r.str()?;
    let n = r.u32()? as usize;
    let mut events = Vec::with_capacity(n.min(10_000));
    for _ in 0..n {
        let t = r.u64()? as i64;
        events.push((t, r.str()?));
    }
    let n = r.u32()? as usize;
    let mut marks = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        marks.push(FileMark {
            dev: r.u64()?,
            ino: r.u64()?,
            offset: r.u64()?,
            head: r.u32()?,
            head_len: r.u32()?,
            path: r.str()?,
        });
    }
    Ok(Batch {
        seq,
        group,
        stream,
        events,
        marks,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, offset: u64) -> Batch {
        Batch {
            seq: 0,
            group: "g".into(),
            stream: "s".into(),
            events: (0..n).map(|i| (i as i64, format!("line {i}"))).collect(),
            marks: vec![FileMark {
                dev: 1,
                ino: 2,
                offset,
                head: 3,
                head_len: 4,
                path: "/x".into(),
            }],
            end: false,
        }
    }

    #[test]
    fn batches_survive_reopen_in_order_and_acks_delete_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, marks) = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        assert!(marks.is_empty());
        spool.append(&mut [batch(3, 10)]).unwrap();
        spool.append(&mut [batch(1, 20), batch(2, 30)]).unwrap();
        drop(spool);
        let (mut spool, marks) = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        assert_eq!(
            marks
                .iter()
                .map(|(s, m)| (*s, m[0].offset))
                .collect::<Vec<_>>(),
            vec![(1, 10), (3, 30)]
        );
        let first = spool.peek().unwrap().unwrap();
        assert_eq!((first.seq, first.events.len()), (1, 3));
        spool.ack(1);
        let second = spool.peek().unwrap().unwrap();
        assert_eq!((second.seq, second.marks.len(), second.end), (2, 0, false));
        spool.ack(3);
        assert!(spool.peek().unwrap().is_none());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Sequence numbers go on after the acknowledged ones.
        drop(spool);
        let (mut spool, _) = Spool::open(dir.path(), 3, 1 << 30).unwrap();
        spool.append(&mut [batch(1, 40)]).unwrap();
        assert_eq!(spool.peek().unwrap().unwrap().seq, 4);
    }

    #[test]
    fn peek_after_reads_the_next_batch_and_small_bounds_roll_small_segments() {
        let dir = tempfile::tempdir().unwrap();
        // A 256 KiB bound: segments of 64 KiB, so space comes back while
        // later batches still wait.
        let (mut spool, _) = Spool::open(dir.path(), 0, 256 << 10).unwrap();
        for i in 0..6 {
            spool.append(&mut [batch(3_000, i)]).unwrap();
        }
        assert_eq!(spool.peek_after(2).unwrap().unwrap().seq, 3);
        assert_eq!(spool.peek_after(0).unwrap().unwrap().seq, 1);
        assert!(spool.peek_after(6).unwrap().is_none());
        let segments = || std::fs::read_dir(dir.path()).unwrap().count();
        let before = segments();
        assert!(before >= 3, "{before} segments");
        assert!(spool.full());
        spool.ack(3);
        assert!(segments() < before);
        assert_eq!(spool.peek().unwrap().unwrap().seq, 4);
        assert_eq!(spool.peek_after(4).unwrap().unwrap().seq, 5);
    }

    #[test]
    fn a_torn_or_unfinished_tail_unit_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        spool.append(&mut [batch(2, 10)]).unwrap();
        spool.append(&mut [batch(2, 20), batch(2, 30)]).unwrap();
        drop(spool);
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let len = std::fs::metadata(&path).unwrap().len();
        // Lose the last record's tail: its unit (batches 2 and 3) goes.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        let (spool, marks) = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        assert_eq!(marks.len(), 1);
        assert_eq!(spool.pending(), 1);
        // And a bit flip in the first record cuts everything from there.
        drop(spool);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 12] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (spool, marks) = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        assert!(marks.is_empty());
        assert_eq!(spool.pending(), 0);
    }

    #[test]
    fn sent_batches_are_not_offered_again_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 0, 100).unwrap();
        spool.append(&mut [batch(100, 10)]).unwrap();
        assert!(spool.full());
        spool.append(&mut [batch(1, 20)]).unwrap();
        drop(spool);
        let (spool, marks) = Spool::open(dir.path(), 1, 100).unwrap();
        assert_eq!(marks.len(), 2);
        assert_eq!(spool.peek().unwrap().unwrap().seq, 2);
    }
}
