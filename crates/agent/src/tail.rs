//! Following log files: discovery by glob, reading new bytes, rotation, and
//! turning lines into events.
//!
//! A file is known by its device and inode, not its path, so a rename
//! rotation is seen as the same file under a new name (read on to its end,
//! then let go) while the new file under the old name is read from its
//! start. A copytruncate shows as a file shorter than what was read, or one
//! whose first bytes changed: reading starts over at 0. Lines are cut at
//! `\n` in the file's encoding; with `multi_line_start_pattern`, lines that
//! do not start an event join the one before. An event is complete when the
//! next one starts, or after a second without new lines.
//!
//! The offset a file is known to be read to (its [`FileMark`]) never passes
//! bytes whose events are not in the spool yet.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use encoding_rs::Encoding;
use regex::Regex;

use crate::config::FileConfig;
use crate::spool::FileMark;
use crate::timestamp::TimestampFormat;

/// CloudWatch agent's default largest event: longer lines are split.
pub const MAX_EVENT_BYTES: usize = 256 * 1024 - 26;
/// A pending multi-line event (or a source with no new lines) waits this long.
const EVENT_WAIT: Duration = Duration::from_secs(1);
/// A file no glob matches any more is let go this long after its last growth.
const ROTATED_GRACE: Duration = Duration::from_secs(5);
const HEAD_BYTES: u64 = 1024;
/// The head of an unchanged file is checked this often.
const HEAD_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bytes read from one file per pass, so one busy file cannot starve others.
const READ_CHUNK: usize = 1 << 20;

/// One collect_list entry, compiled.
#[derive(Debug)]
pub struct Entry {
    /// The entry as configured.
    pub config: FileConfig,
    timestamp: Option<TimestampFormat>,
    start: Option<Regex>,
    filters: Vec<(bool, Regex)>,
    encoding: &'static Encoding,
}

impl Entry {
    /// Compiles an entry (the config was validated when it was parsed).
    pub fn new(config: FileConfig) -> anyhow::Result<Self> {
        let timestamp = config
            .timestamp_format
            .as_deref()
            .map(|f| TimestampFormat::new(f, config.utc))
            .transpose()?;
        let start = match config.multi_line_start_pattern.as_deref() {
            None => None,
            Some("{timestamp_format}") => timestamp
                .as_ref()
                .map(|t| Regex::new(&format!("^{}", t.pattern())))
                .transpose()?,
            Some(p) => Some(Regex::new(p)?),
        };
        let filters = config
            .filters
            .iter()
            .map(|(include, e)| Ok((*include, Regex::new(e)?)))
            .collect::<anyhow::Result<_>>()?;
        let encoding =
            Encoding::for_label(config.encoding.as_bytes()).unwrap_or(encoding_rs::UTF_8);
        Ok(Self {
            config,
            timestamp,
            start,
            filters,
            encoding,
        })
    }

    fn keeps(&self, message: &str) -> bool {
        self.filters
            .iter()
            .all(|(include, re)| re.is_match(message) == *include)
    }

    /// The directory a file of this entry can be renamed within: the glob's
    /// path up to its first wildcard.
    fn base_dir(&self) -> PathBuf {
        let p = &self.config.file_path;
        let cut = p.find(['*', '?', '[']).unwrap_or(p.len());
        let fixed = &p[..cut];
        match fixed.rfind('/') {
            Some(0) => PathBuf::from("/"),
            Some(i) => PathBuf::from(&fixed[..i]),
            None => PathBuf::from("/"),
        }
    }
}

/// An event ready for its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Epoch milliseconds.
    pub timestamp: i64,
    /// The message (never empty).
    pub message: String,
}

struct Pending {
    timestamp: Option<i64>,
    text: String,
    end: u64,
}

/// One followed file.
struct Source {
    entry: usize,
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    /// Next byte to read.
    read: u64,
    /// Bytes turned into events (or skipped): the mark.
    consumed: u64,
    /// Read bytes from `consumed + pending text` on that are no full line yet.
    partial: Vec<u8>,
    pending: Option<Pending>,
    head: u32,
    head_len: u32,
    last_growth: Instant,
    last_event: Instant,
    matched: bool,
    last_timestamp: Option<i64>,
    /// Size and modification time at the last pass: while they stand still
    /// the file has neither grown nor been truncated, so a pass skips the
    /// head check (but for one a second).
    seen: Option<(u64, i64, i64)>,
    head_checked: Instant,
}

/// Every followed file, and the destination each feeds.
pub struct Tailer {
    entries: Vec<Entry>,
    sources: HashMap<(u64, u64), Source>,
    /// Marks restored at start for files not opened yet.
    restored: HashMap<(u64, u64), FileMark>,
    first_discovery: bool,
}

/// What one pass produced for one entry.
#[derive(Debug, Default)]
pub struct Output {
    /// Events per collect_list entry index, in file order per file.
    pub events: Vec<(usize, Event)>,
    /// Whether any file had more bytes to read than this pass took.
    pub more: bool,
}

impl Tailer {
    /// Follows `entries`, resuming files from `marks`.
    pub fn new(entries: Vec<Entry>, marks: Vec<FileMark>) -> Self {
        Self {
            entries,
            sources: HashMap::new(),
            restored: marks.into_iter().map(|m| ((m.dev, m.ino), m)).collect(),
            first_discovery: true,
        }
    }

    /// The entries followed.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The marks of every followed file of `entry`.
    pub fn marks(&self, entry: usize) -> Vec<FileMark> {
        self.sources
            .values()
            .filter(|s| s.entry == entry)
            .map(Source::mark)
            .collect()
    }

    /// Looks for new files, and lets go of rotated ones that are done.
    /// Returns the files let go, by (dev, inode).
    pub fn discover(&mut self) -> Vec<(u64, u64)> {
        for s in self.sources.values_mut() {
            s.matched = false;
        }
        for (i, entry) in self.entries.iter().enumerate() {
            let Ok(paths) = glob::glob(&entry.config.file_path) else {
                continue;
            };
            for path in paths.flatten() {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let key = (meta.dev(), meta.ino());
                if let Some(s) = self.sources.get_mut(&key) {
                    s.matched = true;
                    s.path = path;
                    continue;
                }
                let restored = self.restored.remove(&key);
                if let Some(s) = Source::open(i, &path, restored) {
                    self.sources.insert(key, s);
                }
            }
        }
        if std::mem::take(&mut self.first_discovery) {
            // Files renamed out of their glob while the agent was stopped:
            // found by inode in the entry's directory and read to their end.
            let restored: Vec<FileMark> = self.restored.drain().map(|(_, m)| m).collect();
            for mark in restored {
                let entry = self.entries.iter().position(|e| {
                    glob::Pattern::new(&e.config.file_path).is_ok_and(|p| p.matches(&mark.path))
                });
                let Some(entry) = entry else { continue };
                let dir = self.entries[entry].base_dir();
                if let Some(path) = find_inode(&dir, mark.dev, mark.ino) {
                    let key = (mark.dev, mark.ino);
                    if let Some(s) = Source::open(entry, &path, Some(mark)) {
                        self.sources.insert(key, s);
                    }
                }
            }
        }
        let mut released = Vec::new();
        self.sources.retain(|key, s| {
            let done = !s.matched
                && s.at_end()
                && s.partial.is_empty()
                && s.pending.is_none()
                && s.last_growth.elapsed() >= ROTATED_GRACE;
            if done {
                released.push(*key);
            }
            !done
        });
        released
    }

    /// Reads what the files have now. Files no glob matches any more give
    /// their last line and pending event once they are done.
    pub fn poll(&mut self, now_ms: i64) -> Output {
        let mut out = Output::default();
        for s in self.sources.values_mut() {
            let index = s.entry;
            let entry = &self.entries[index];
            // A file whose metadata cannot be read has nothing new; what it
            // gave is still cut into events below.
            let (len, seen) = match s.file.metadata() {
                Ok(m) => (m.len(), Some((m.len(), m.mtime(), m.mtime_nsec()))),
                Err(_) => (s.read, s.seen),
            };
            // The head is checked when size or mtime moved, and once a
            // second anyway: a rewrite to the same size within one mtime
            // tick is caught too.
            if seen != s.seen || s.head_checked.elapsed() >= HEAD_CHECK_EVERY {
                s.seen = seen;
                s.head_checked = Instant::now();
                if s.check_truncation(len) {
                    tracing::info!(path = %s.path.display(), "file truncated: reading from its start");
                }
            }
            let grew = len > s.read && s.read_some(len, &mut out.more);
            let idle = s.last_growth.elapsed() >= EVENT_WAIT && !grew;
            let released = !s.matched && idle;
            s.lines(entry, now_ms, released, &mut |e| {
                out.events.push((index, e))
            });
            if idle && s.pending.is_some() && s.last_event.elapsed() >= EVENT_WAIT {
                s.finish_pending(entry, now_ms, &mut |e| out.events.push((index, e)));
            }
        }
        out
    }
}

fn find_inode(dir: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.dev() == dev && m.ino() == ino)
        })
}

impl Source {
    fn open(entry: usize, path: &Path, mark: Option<FileMark>) -> Option<Self> {
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        let mut s = Source {
            entry,
            path: path.to_owned(),
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            read: 0,
            consumed: 0,
            partial: Vec::new(),
            pending: None,
            head: 0,
            head_len: 0,
            last_growth: Instant::now(),
            last_event: Instant::now(),
            matched: true,
            last_timestamp: None,
            seen: None,
            head_checked: Instant::now(),
        };
        if let Some(m) = mark {
            let len = meta.len();
            if m.offset <= len && s.head_of(m.head_len as u64) == Some(m.head) {
                s.read = m.offset;
                s.consumed = m.offset;
                s.head = m.head;
                s.head_len = m.head_len;
            }
        }
        Some(s)
    }

    fn mark(&self) -> FileMark {
        FileMark {
            dev: self.dev,
            ino: self.ino,
            offset: self.consumed,
            head: self.head,
            head_len: self.head_len,
            path: self.path.to_string_lossy().into_owned(),
        }
    }

    fn head_of(&self, len: u64) -> Option<u32> {
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, 0).ok()?;
        Some(crc32c::crc32c(&buf))
    }

    fn at_end(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.len() <= self.read)
    }

    /// A file shorter than what was read, or with other first bytes, was
    /// truncated (or replaced in place): start over.
    fn check_truncation(&mut self, len: u64) -> bool {
        let truncated = len < self.read
            || (self.head_len > 0 && self.head_of(self.head_len as u64) != Some(self.head));
        if truncated {
            self.read = 0;
            self.consumed = 0;
            self.partial.clear();
            self.pending = None;
            self.head = 0;
            self.head_len = 0;
        }
        truncated
    }

    /// Reads up to a chunk of new bytes into `partial`.
    fn read_some(&mut self, len: u64, more: &mut bool) -> bool {
        let want = ((len - self.read) as usize).min(READ_CHUNK);
        let start = self.partial.len();
        self.partial.resize(start + want, 0);
        match self.file.read_at(&mut self.partial[start..], self.read) {
            Ok(n) => {
                self.partial.truncate(start + n);
                self.read += n as u64;
                if n > 0 {
                    self.last_growth = Instant::now();
                }
                if self.read < len {
                    *more = true;
                }
                if (self.head_len as u64) < HEAD_BYTES && len > self.head_len as u64 {
                    let n = len.min(HEAD_BYTES);
                    if let Some(h) = self.head_of(n) {
                        self.head = h;
                        self.head_len = n as u32;
                    }
                }
                n > 0
            }
            Err(_) => {
                self.partial.truncate(start);
                false
            }
        }
    }

    /// Cuts the complete lines of `partial` into events; with `flush_all`
    /// (the file is done) the last unterminated line counts too.
    fn lines(&mut self, entry: &Entry, now_ms: i64, flush_all: bool, emit: &mut dyn FnMut(Event)) {
        let wide =
            entry.encoding == encoding_rs::UTF_16LE || entry.encoding == encoding_rs::UTF_16BE;
        let mut at = 0usize;
        // `consumed` + the pending event's bytes + `at` = file offset of `partial[at]`.
        let base = self.read - self.partial.len() as u64;
        loop {
            let rest = &self.partial[at..];
            let (line_len, eol_len) = match find_newline(rest, wide, entry.encoding) {
                Some(i) => (i, if wide { 2 } else { 1 }),
                None if rest.len() > MAX_EVENT_BYTES => (MAX_EVENT_BYTES, 0),
                None if flush_all && !rest.is_empty() => (rest.len(), 0),
                None => break,
            };
            let raw = &rest[..line_len];
            let mut text = decode(entry.encoding, raw);
            if text.ends_with('\r') {
                text.pop();
            }
            at += line_len + eol_len;
            let end = base + at as u64;
            self.line(entry, text, end, now_ms, emit);
        }
        self.partial.drain(..at);
        if flush_all {
            self.finish_pending(entry, now_ms, emit);
        }
    }

    fn line(
        &mut self,
        entry: &Entry,
        text: String,
        end: u64,
        now_ms: i64,
        emit: &mut dyn FnMut(Event),
    ) {
        let Some(start) = &entry.start else {
            let timestamp = self.timestamp_of(entry, &text, now_ms);
            self.emit(entry, timestamp, text, end, emit);
            return;
        };
        if start.is_match(&text) || self.pending.is_none() {
            self.finish_pending(entry, now_ms, emit);
            let timestamp = entry
                .timestamp
                .as_ref()
                .and_then(|t| t.find(&text, now_ms))
                .map(|(t, _)| t);
            self.pending = Some(Pending {
                timestamp,
                text,
                end,
            });
        } else if let Some(p) = &mut self.pending {
            if p.text.len() + text.len() + 1 > MAX_EVENT_BYTES {
                self.finish_pending(entry, now_ms, emit);
                self.pending = Some(Pending {
                    timestamp: None,
                    text,
                    end,
                });
            } else {
                p.text.push('\n');
                p.text.push_str(&text);
                p.end = end;
            }
        }
        self.last_event = Instant::now();
    }

    fn finish_pending(&mut self, entry: &Entry, now_ms: i64, emit: &mut dyn FnMut(Event)) {
        if let Some(p) = self.pending.take() {
            let timestamp = p
                .timestamp
                .unwrap_or_else(|| self.last_timestamp.unwrap_or(now_ms));
            self.emit(entry, timestamp, p.text, p.end, emit);
        }
    }

    fn timestamp_of(&self, entry: &Entry, text: &str, now_ms: i64) -> i64 {
        match &entry.timestamp {
            Some(t) => t
                .find(text, now_ms)
                .map(|(t, _)| t)
                .unwrap_or_else(|| self.last_timestamp.unwrap_or(now_ms)),
            None => now_ms,
        }
    }

    fn emit(
        &mut self,
        entry: &Entry,
        timestamp: i64,
        mut text: String,
        end: u64,
        emit: &mut dyn FnMut(Event),
    ) {
        self.consumed = end;
        self.last_timestamp = Some(timestamp);
        if entry.config.trim_timestamp {
            if let Some((_, range)) = entry
                .timestamp
                .as_ref()
                .and_then(|t| t.find(&text, timestamp))
            {
                text.replace_range(range, "");
                text = text.trim_start().to_owned();
            }
        }
        // CloudWatch refuses empty messages: a blank line has nothing to keep.
        if text.trim().is_empty() || !entry.keeps(&text) {
            return;
        }
        if text.len() > MAX_EVENT_BYTES {
            let mut cut = MAX_EVENT_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        emit(Event {
            timestamp,
            message: text,
        });
    }
}

fn find_newline(bytes: &[u8], wide: bool, encoding: &'static Encoding) -> Option<usize> {
    if !wide {
        return memchr::memchr(b'\n', bytes);
    }
    let nl: [u8; 2] = if encoding == encoding_rs::UTF_16LE {
        [b'\n', 0]
    } else {
        [0, b'\n']
    };
    bytes.chunks_exact(2).position(|c| c == nl).map(|i| i * 2)
}

fn decode(encoding: &'static Encoding, raw: &[u8]) -> String {
    if encoding == encoding_rs::UTF_8 {
        return String::from_utf8_lossy(raw).into_owned();
    }
    encoding.decode_without_bom_handling(raw).0.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn entry(pattern: &str, start: Option<&str>) -> Entry {
        Entry::new(FileConfig {
            file_path: pattern.to_owned(),
            log_group_name: "g".into(),
            log_stream_name: "s".into(),
            timestamp_format: None,
            utc: true,
            multi_line_start_pattern: start.map(str::to_owned),
            encoding: "utf-8".into(),
            retention_in_days: None,
            filters: vec![(false, "^DEBUG".into())],
            trim_timestamp: false,
        })
        .unwrap()
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn pass(t: &mut Tailer) -> Vec<String> {
        t.discover();
        t.poll(1)
            .events
            .into_iter()
            .map(|(_, e)| e.message)
            .collect()
    }

    #[test]
    fn lines_wait_for_their_newline_and_marks_follow_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "one\r\nDEBUG skipped\n\ntwo\nthr");
        let mut t = Tailer::new(
            vec![entry(&format!("{}/*.log", dir.path().display()), None)],
            vec![],
        );
        assert_eq!(pass(&mut t), ["one", "two"]);
        assert_eq!(t.marks(0)[0].offset, 24);
        append(&log, "ee\n");
        assert_eq!(pass(&mut t), ["three"]);
        assert_eq!(t.marks(0)[0].offset, 30);
    }

    #[test]
    fn rename_rotation_reads_the_old_file_to_its_end_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let pattern = log.display().to_string();
        append(&log, "1\n2\n");
        let mut t = Tailer::new(vec![entry(&pattern, None)], vec![]);
        assert_eq!(pass(&mut t), ["1", "2"]);
        // The writer still holds the old file after the rename.
        let mut old = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        old.write_all(b"3\n").unwrap();
        append(&log, "4\n");
        let mut got = pass(&mut t);
        got.sort();
        assert_eq!(got, ["3", "4"]);
        append(&log, "5\n");
        assert_eq!(pass(&mut t), ["5"]);
    }

    #[test]
    fn copytruncate_starts_over_even_when_the_file_regrew() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "aaaa\nbbbb\n");
        let mut t = Tailer::new(vec![entry(&log.display().to_string(), None)], vec![]);
        assert_eq!(pass(&mut t), ["aaaa", "bbbb"]);
        std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(pass(&mut t).is_empty());
        append(&log, "c\n");
        assert_eq!(pass(&mut t), ["c"]);
        // Truncated and regrown past the old offset before the next look.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "dddddddd\n");
        assert_eq!(pass(&mut t), ["dddddddd"]);
        // Rewritten in place to the same size, with the old mtime (as a
        // coarse clock would leave it): caught by the once-a-second check.
        let mtime = std::fs::metadata(&log).unwrap().modified().unwrap();
        std::fs::write(&log, "eeeeeeee\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&log)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(pass(&mut t).is_empty());
        std::thread::sleep(HEAD_CHECK_EVERY + Duration::from_millis(100));
        assert_eq!(pass(&mut t), ["eeeeeeee"]);
    }

    #[test]
    fn multi_line_events_end_at_the_next_start_or_after_a_quiet_second() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "ERROR boom\n  at a\n  at b\nINFO ok\n");
        let mut t = Tailer::new(
            vec![entry(&log.display().to_string(), Some(r"^\S"))],
            vec![],
        );
        assert_eq!(pass(&mut t), ["ERROR boom\n  at a\n  at b"]);
        // "INFO ok" is pending: not in the mark yet.
        assert_eq!(t.marks(0)[0].offset, 25);
        std::thread::sleep(EVENT_WAIT + Duration::from_millis(100));
        assert_eq!(pass(&mut t), ["INFO ok"]);
        assert_eq!(t.marks(0)[0].offset, 33);
    }

    #[test]
    fn a_restart_resumes_at_the_marks_and_finds_renamed_files_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let pattern = log.display().to_string();
        append(&log, "1\n2\n");
        let mut t = Tailer::new(vec![entry(&pattern, None)], vec![]);
        assert_eq!(pass(&mut t), ["1", "2"]);
        let marks = t.marks(0);
        drop(t);
        // While stopped: more lines, a rotation out of the glob, a new file.
        append(&log, "3\n");
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        append(&log, "4\n");
        let mut t = Tailer::new(vec![entry(&pattern, None)], marks);
        let mut got = pass(&mut t);
        got.sort();
        assert_eq!(got, ["3", "4"]);
        // A mark whose first bytes no longer match is a new file: read whole.
        let mut other = t.marks(0);
        other.retain(|m| m.path == pattern);
        other[0].head ^= 1;
        let mut t = Tailer::new(vec![entry(&pattern, None)], other);
        assert_eq!(pass(&mut t), ["4"]);
    }

    #[test]
    fn utf16_and_legacy_encodings_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("w.log");
        let text = "héllo\nwörld\n";
        let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        std::fs::write(&log, bytes).unwrap();
        let mut e = entry(&log.display().to_string(), None);
        e.encoding = encoding_rs::UTF_16LE;
        let mut t = Tailer::new(vec![e], vec![]);
        assert_eq!(pass(&mut t), ["héllo", "wörld"]);
        let log = dir.path().join("g.log");
        std::fs::write(&log, encoding_rs::GBK.encode("中文\n").0).unwrap();
        let mut e = entry(&log.display().to_string(), None);
        e.encoding = encoding_rs::GBK;
        let mut t = Tailer::new(vec![e], vec![]);
        assert_eq!(pass(&mut t), ["中文"]);
    }
}
