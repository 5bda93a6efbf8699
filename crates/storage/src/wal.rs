//! Write-ahead log. A write is acknowledged only after its record is fsynced
//! here. Concurrent appends share one `fdatasync` (group commit): a writer thread
//! takes every request waiting in its queue, writes them all, syncs once, then
//! answers them all.
//!
//! # Format (version 1)
//! Files `wal/{first_seq:020}.wal`, each:
//! `b"TWAL" | u8 version=1 | [0u8; 3]` then records
//! `{ u32 len | u32 crc32c(seq ++ payload) | u64 seq | payload[len] }*`,
//! integers little-endian.
//!
//! # Invariants
//! - Sequence numbers strictly increase across the whole log, starting at 1.
//! - Recovery stops at the first torn or corrupt record of the *last* file, cuts
//!   the file there and reports the bytes dropped; it never skips a bad record.
//!   A bad record in an earlier file is corruption and refuses to open.
//! - Readers refuse files with another magic or an unknown version.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

const MAGIC: &[u8; 4] = b"TWAL";
const VERSION: u8 = 1;
const FILE_HEADER_LEN: u64 = 8;
const RECORD_HEADER_LEN: usize = 16;
/// A record larger than this is refused (and treated as corruption on read).
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// WAL failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Filesystem error, with the action that failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a WAL file of a version we know.
    #[error("{file}: not a trailwatch WAL file of a known version")]
    BadHeader {
        /// The file.
        file: PathBuf,
    },
    /// A damaged record before the end of the log.
    #[error("{file}: corrupt record at offset {offset}")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
    },
    /// The payload is over [`MAX_RECORD_BYTES`].
    #[error("record of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The log was shut down or its writer failed earlier.
    #[error("the write-ahead log is closed")]
    Closed,
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalError {
    let action = action.into();
    move |source| WalError::Io { action, source }
}

/// Tuning knobs.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new file once the current one passes this size.
    pub max_file_bytes: u64,
    /// Whether to fsync before acknowledging (tests of other layers may turn it off).
    pub sync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 * 1024 * 1024,
            sync: true,
        }
    }
}

/// What recovery found in an existing log.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every intact record, in sequence order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// A torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
}

/// A cut torn tail: where, and how many bytes were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The file that was cut.
    pub file: PathBuf,
    /// Offset the file was cut at.
    pub offset: u64,
    /// Bytes dropped.
    pub bytes_dropped: u64,
}

struct AppendRequest {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<u64, WalError>>,
}

enum Command {
    Append(AppendRequest),
    Rotate(oneshot::Sender<Result<u64, WalError>>),
    Shutdown(oneshot::Sender<Result<(), WalError>>),
}

/// Handle to an open log. Cheap to share behind an `Arc`.
pub struct Wal {
    dir: PathBuf,
    queue: mpsc::Sender<Command>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, recovering what is there.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let files = list_files(dir)?;
        let mut recovery = Recovery::default();
        let mut next_seq = 1u64;
        for (i, (_, path)) in files.iter().enumerate() {
            let last = i + 1 == files.len();
            read_file(path, last, &mut recovery)?;
        }
        if let Some((first_seq, _)) = files.last() {
            // After old files were removed the newest may be empty: its name still
            // says where numbering continues.
            next_seq = *first_seq;
        }
        if let Some((seq, _)) = recovery.records.last() {
            next_seq = next_seq.max(seq + 1);
        }
        let current = match files.last() {
            Some((_, path)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(io(format!("open {}", path.display())))?;
                let len = file.metadata().map_err(io("stat wal file"))?.len();
                (file, len)
            }
            None => create_file(dir, next_seq)?,
        };
        let (queue, receiver) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_owned(),
            file: current.0,
            file_len: current.1,
            next_seq,
            options,
        };
        let handle = std::thread::Builder::new()
            .name("wal-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(io("spawn wal writer"))?;
        // Every owner would report it the same way; the file names the log.
        if let Some(torn) = &recovery.torn_tail {
            tracing::warn!(file = %torn.file.display(), offset = torn.offset, bytes_dropped = torn.bytes_dropped, "recovered a write-ahead log with a torn tail cut");
        }
        Ok((
            Wal {
                dir: dir.to_owned(),
                queue,
                writer: std::sync::Mutex::new(Some(handle)),
            },
            recovery,
        ))
    }

    /// Appends one record; returns its sequence number once it is durable.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, WalError> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::TooLarge(payload.len()));
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::Append(AppendRequest { payload, reply }))
            .map_err(|_| WalError::Closed)?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Closes the current file and starts a new one. Returns the sequence number
    /// the new file starts at: every record below it is in a closed file,
    /// readable with [`Wal::read_closed`].
    pub async fn rotate(&self) -> Result<u64, WalError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::Rotate(reply))
            .map_err(|_| WalError::Closed)?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Every record with `after < seq < before` from closed files (those that
    /// end before `before`, a value returned by [`Wal::rotate`]).
    pub fn read_closed(&self, after: u64, before: u64) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        let files = list_files(&self.dir)?;
        let mut recovery = Recovery::default();
        for (i, (first, path)) in files.iter().enumerate() {
            let next_first = files.get(i + 1).map(|(f, _)| *f);
            let closed = next_first.is_some_and(|n| n <= before);
            if !closed || next_first.is_some_and(|n| n <= after + 1) || *first >= before {
                continue;
            }
            let mut records = Recovery::default();
            read_file(path, false, &mut records)?;
            recovery.records.extend(records.records);
        }
        recovery
            .records
            .retain(|(seq, _)| *seq > after && *seq < before);
        Ok(recovery.records)
    }

    /// Deletes closed files whose records all have `seq <= through`.
    pub fn remove_through(&self, through: u64) -> Result<usize, WalError> {
        let files = list_files(&self.dir)?;
        let mut removed = 0;
        for pair in files.windows(2) {
            let (_, path) = &pair[0];
            let (next_first, _) = pair[1];
            if next_first.saturating_sub(1) <= through {
                std::fs::remove_file(path).map_err(io(format!("remove {}", path.display())))?;
                removed += 1;
            }
        }
        if removed > 0 {
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        Ok(removed)
    }

    /// Flushes, fsyncs and stops the writer. Later appends fail with `Closed`.
    pub async fn shutdown(&self) -> Result<(), WalError> {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Command::Shutdown(reply)).is_err() {
            return Ok(());
        }
        let result = answer.await.unwrap_or(Ok(()));
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        result
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    file_len: u64,
    next_seq: u64,
    options: WalOptions,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        let mut failed = false;
        while let Ok(first) = receiver.recv() {
            let mut batch = Vec::new();
            let mut shutdown = None;
            let mut rotate = None;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(req) => batch.push(req),
                    Command::Rotate(reply) => {
                        rotate = Some(reply);
                        break;
                    }
                    Command::Shutdown(reply) => {
                        shutdown = Some(reply);
                        break;
                    }
                }
                next = receiver.try_recv().ok();
            }
            if failed {
                // After an IO failure the file state is unknown: refuse, never guess.
                for req in batch {
                    let _ = req.reply.send(Err(WalError::Closed));
                }
            } else {
                match self.write_batch(&batch) {
                    Ok(first_seq) => {
                        for (i, req) in batch.into_iter().enumerate() {
                            let _ = req.reply.send(Ok(first_seq + i as u64));
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "write-ahead log append failed; refusing further writes");
                        failed = true;
                        for req in batch {
                            let _ = req.reply.send(Err(WalError::Closed));
                        }
                    }
                }
            }
            if let Some(reply) = rotate {
                let result = if failed {
                    Err(WalError::Closed)
                } else {
                    self.rotate()
                };
                if result.is_err() {
                    failed = true;
                }
                let _ = reply.send(result);
            }
            if let Some(reply) = shutdown {
                let result = if failed {
                    Err(WalError::Closed)
                } else {
                    self.file.sync_all().map_err(io("fsync wal on shutdown"))
                };
                let _ = reply.send(result);
                return;
            }
        }
    }

    fn rotate(&mut self) -> Result<u64, WalError> {
        self.file
            .sync_all()
            .map_err(io("fsync wal before rotation"))?;
        let (file, len) = create_file(&self.dir, self.next_seq)?;
        self.file = file;
        self.file_len = len;
        Ok(self.next_seq)
    }

    fn write_batch(&mut self, batch: &[AppendRequest]) -> Result<u64, WalError> {
        if batch.is_empty() {
            return Ok(self.next_seq);
        }
        if self.file_len >= self.options.max_file_bytes {
            self.rotate()?;
        }
        let first_seq = self.next_seq;
        let total: usize = batch
            .iter()
            .map(|r| r.payload.len() + RECORD_HEADER_LEN)
            .sum();
        let mut buf = Vec::with_capacity(total);
        for (i, req) in batch.iter().enumerate() {
            encode_record(&mut buf, first_seq + i as u64, &req.payload);
        }
        let start_len = self.file_len;
        if let Err(e) = self.file.write_all(&buf) {
            // Leave no partial batch behind for recovery to misread as acknowledged.
            let _ = self.file.set_len(start_len);
            return Err(io("write wal")(e));
        }
        if self.options.sync {
            self.file.sync_data().map_err(io("fsync wal"))?;
        }
        self.file_len += buf.len() as u64;
        self.next_seq += batch.len() as u64;
        Ok(first_seq)
    }
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let seq_bytes = seq.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&seq_bytes), payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&seq_bytes);
    buf.extend_from_slice(payload);
}

fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(format!("list {}", dir.display())))? {
        let entry = entry.map_err(io("list wal dir"))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(seq) = stem.parse::<u64>() {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

fn create_file(dir: &Path, first_seq: u64) -> Result<(File, u64), WalError> {
    let path = dir.join(file_name(first_seq));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io(format!("create {}", path.display())))?;
    let mut header = Vec::with_capacity(FILE_HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&[VERSION, 0, 0, 0]);
    file.write_all(&header).map_err(io("write wal header"))?;
    file.sync_all().map_err(io("fsync new wal file"))?;
    // Make the new name durable too.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((file, FILE_HEADER_LEN))
}

fn read_file(path: &Path, is_last: bool, recovery: &mut Recovery) -> Result<(), WalError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(is_last)
        .open(path)
        .map_err(io(format!("open {}", path.display())))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(io(format!("read {}", path.display())))?;
    if bytes.len() < FILE_HEADER_LEN as usize {
        if is_last {
            // Crashed while creating the file: rewrite the header.
            file.set_len(0).map_err(io("truncate wal"))?;
            file.seek(SeekFrom::Start(0)).map_err(io("seek wal"))?;
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&[VERSION, 0, 0, 0]);
            file.write_all(&header).map_err(io("rewrite wal header"))?;
            file.sync_all().map_err(io("fsync wal"))?;
            if !bytes.is_empty() {
                recovery.torn_tail = Some(TornTail {
                    file: path.to_owned(),
                    offset: 0,
                    bytes_dropped: bytes.len() as u64,
                });
            }
            return Ok(());
        }
        return Err(WalError::BadHeader {
            file: path.to_owned(),
        });
    }
    if &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(WalError::BadHeader {
            file: path.to_owned(),
        });
    }
    let mut offset = FILE_HEADER_LEN as usize;
    while offset < bytes.len() {
        match decode_record(&bytes[offset..]) {
            Some((seq, payload, used)) => {
                let expected = recovery.records.last().map(|(s, _)| s + 1);
                if expected.is_some_and(|e| e != seq) {
                    return Err(WalError::Corrupt {
                        file: path.to_owned(),
                        offset: offset as u64,
                    });
                }
                recovery.records.push((seq, payload.to_vec()));
                offset += used;
            }
            None if is_last => {
                let dropped = (bytes.len() - offset) as u64;
                tracing::warn!(file = %path.display(), offset, bytes_dropped = dropped, "cut torn tail of write-ahead log");
                file.set_len(offset as u64)
                    .map_err(io("cut torn wal tail"))?;
                file.sync_all().map_err(io("fsync cut wal"))?;
                recovery.torn_tail = Some(TornTail {
                    file: path.to_owned(),
                    offset: offset as u64,
                    bytes_dropped: dropped,
                });
                break;
            }
            None => {
                return Err(WalError::Corrupt {
                    file: path.to_owned(),
                    offset: offset as u64,
                })
            }
        }
    }
    Ok(())
}

/// One record from the front of `bytes`: `(seq, payload, bytes used)`, or `None`
/// when it is incomplete or fails its checksum.
fn decode_record(bytes: &[u8]) -> Option<(u64, &[u8], usize)> {
    if bytes.len() < RECORD_HEADER_LEN {
        return None;
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    let seq_bytes = &bytes[8..16];
    if len > MAX_RECORD_BYTES || bytes.len() < RECORD_HEADER_LEN + len {
        return None;
    }
    let payload = &bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
    if crc32c::crc32c_append(crc32c::crc32c(seq_bytes), payload) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(seq_bytes.try_into().ok()?);
    Some((seq, payload, RECORD_HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn append_recover_and_continue() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (wal, rec) = Wal::open(dir.path(), WalOptions::default()).unwrap();
            assert!(rec.records.is_empty());
            let mut handles = Vec::new();
            let wal = std::sync::Arc::new(wal);
            for i in 0..50u32 {
                let wal = wal.clone();
                handles.push(tokio::spawn(async move {
                    wal.append(i.to_le_bytes().to_vec()).await.unwrap()
                }));
            }
            let mut seqs: Vec<u64> = Vec::new();
            for h in handles {
                seqs.push(h.await.unwrap());
            }
            seqs.sort();
            assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
            wal.shutdown().await.unwrap();
            assert!(matches!(wal.append(vec![1]).await, Err(WalError::Closed)));
        });
        rt().block_on(async {
            let (wal, rec) = Wal::open(dir.path(), WalOptions::default()).unwrap();
            assert_eq!(rec.records.len(), 50);
            assert!(rec.torn_tail.is_none());
            assert_eq!(wal.append(b"next".to_vec()).await.unwrap(), 51);
            wal.shutdown().await.unwrap();
        });
    }

    #[test]
    fn torn_tail_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
            wal.append(b"one".to_vec()).await.unwrap();
            wal.append(b"two".to_vec()).await.unwrap();
            wal.shutdown().await.unwrap();
        });
        let path = dir.path().join(file_name(1));
        let full = std::fs::read(&path).unwrap();
        // Every cut point inside the second record recovers exactly the first one.
        let second_start = FILE_HEADER_LEN as usize + RECORD_HEADER_LEN + 3;
        for cut in second_start + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (wal, rec) = Wal::open(dir.path(), WalOptions::default()).unwrap();
            assert_eq!(rec.records, vec![(1, b"one".to_vec())]);
            let torn = rec.torn_tail.unwrap();
            assert_eq!(
                (torn.offset as usize, torn.bytes_dropped as usize),
                (second_start, cut - second_start)
            );
            drop(wal);
        }
        // A flipped payload bit is treated the same way: cut, never skipped.
        let mut flipped = full.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let (_wal, rec) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(rec.records.len(), 1);
        assert!(rec.torn_tail.is_some());
    }

    #[test]
    fn rotate_read_closed_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
            for i in 0..5u8 {
                wal.append(vec![i]).await.unwrap();
            }
            let boundary = wal.rotate().await.unwrap();
            assert_eq!(boundary, 6);
            wal.append(vec![5]).await.unwrap();
            let closed = wal.read_closed(2, boundary).unwrap();
            assert_eq!(
                closed.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                vec![3, 4, 5]
            );
            assert_eq!(wal.remove_through(5).unwrap(), 1);
            assert!(wal.read_closed(0, boundary).unwrap().is_empty());
            let boundary = wal.rotate().await.unwrap();
            assert_eq!(boundary, 7);
            assert_eq!(wal.remove_through(6).unwrap(), 1);
            wal.shutdown().await.unwrap();
        });
        // Only an empty file remains; numbering continues from its name.
        rt().block_on(async {
            let (wal, rec) = Wal::open(dir.path(), WalOptions::default()).unwrap();
            assert!(rec.records.is_empty());
            assert_eq!(wal.append(vec![9]).await.unwrap(), 7);
            wal.shutdown().await.unwrap();
        });
    }

    #[test]
    fn refuses_unknown_versions_and_rotates_files() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let options = WalOptions {
                max_file_bytes: 64,
                sync: true,
            };
            let (wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
            for i in 0..10u8 {
                wal.append(vec![i; 40]).await.unwrap();
            }
            wal.shutdown().await.unwrap();
            assert!(list_files(dir.path()).unwrap().len() > 1);
            let (_wal, rec) = Wal::open(dir.path(), options).unwrap();
            assert_eq!(
                rec.records.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                (1..=10).collect::<Vec<_>>()
            );
        });
        let first = list_files(dir.path()).unwrap()[0].1.clone();
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[4] = 9;
        std::fs::write(&first, bytes).unwrap();
        assert!(matches!(
            Wal::open(dir.path(), WalOptions::default()),
            Err(WalError::BadHeader { .. })
        ));
    }
}
