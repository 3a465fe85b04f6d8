//! The job log store: one directory per job attempt, written by one [`LogWriter`], read by any
//! number of [`LogReader`]s (live or after the job ended).
//!
//! Layout of a log directory (all names are fixed; the caller chooses the directory):
//! - `seg-{start:016x}.zst`: a sealed segment, one zstd frame holding the log bytes from `start`
//!   (about [`LogConfig::segment_bytes`] of them);
//! - `tail-{start:016x}`: the open segment, plain bytes appended as they arrive (so a reader sees
//!   them at once and a restart loses nothing that was acknowledged);
//! - `times`: 16-byte records `(offset: u64 LE, unix ms: u64 LE)`, one per line start whose
//!   millisecond differs from the previous record: a line's time is that of the last record at or
//!   before its first byte;
//! - `sections`: JSON lines, one per step start and step end (offset, time, name, exit code);
//! - `meta.json`: written when the log is finished (sizes, truncation).
//!
//! Appends follow the runner protocol: chunks carry the byte offset of their first byte in the
//! producer's stream. A chunk at an offset already written is accepted and ignored when its bytes
//! are identical (a retry), refused with [`LogError::Mismatch`] when they differ; a chunk beyond
//! the end is refused with [`LogError::Gap`]. Past the per-job cap the stored log ends with a
//! marker line ([`truncation_marker`]) and further bytes are counted but not stored.
//!
//! Memory is bounded by one segment (the open segment is kept in memory for compression), whatever
//! the producer's speed: the writer is synchronous, so a caller feeding it from a bounded channel
//! gets backpressure for free.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors of the log store. `code()` gives the stable code.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log chunk at offset {offset} leaves a gap: the log has {have} bytes")]
    Gap { offset: u64, have: u64 },
    #[error("log chunk at offset {offset} differs from the bytes already written there")]
    Mismatch { offset: u64 },
    #[error("the log is finished; no more chunks are accepted")]
    Finished,
    #[error("range {start}..{end} is outside the log ({len} bytes)")]
    Range { start: u64, end: u64, len: u64 },
    #[error("log storage: {0}")]
    Io(#[from] io::Error),
    #[error("log storage is corrupt: {0}")]
    Corrupt(String),
}

impl LogError {
    pub fn code(&self) -> &'static str {
        match self {
            LogError::Gap { .. } => "build.log_gap",
            LogError::Mismatch { .. } => "build.log_mismatch",
            LogError::Finished => "build.log_finished",
            LogError::Range { .. } => "build.log_range",
            LogError::Io(_) => "build.log_io",
            LogError::Corrupt(_) => "build.log_corrupt",
        }
    }
}

/// Settings of one log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Stored bytes of job output at most; the marker line comes after them.
    pub cap_bytes: u64,
    /// Uncompressed size of a sealed segment.
    pub segment_bytes: usize,
    /// zstd level (1 is fast and compresses logs well).
    pub zstd_level: i32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            cap_bytes: 64 << 20,
            segment_bytes: 1 << 20,
            zstd_level: 1,
        }
    }
}

/// The line appended when the cap is reached.
pub fn truncation_marker(cap: u64) -> Vec<u8> {
    format!(
        "\n--- ouro: log truncated: the job printed more than {cap} bytes; the rest is not stored ---\n"
    )
    .into_bytes()
}

/// A step section as recorded in `sections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionEvent {
    pub step: usize,
    /// `start` or `end`.
    pub kind: String,
    /// Offset in the stored log.
    pub offset: u64,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A step's section, assembled from its start and end events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    pub step: usize,
    pub name: String,
    pub start: u64,
    /// `None` while the step runs.
    pub end: Option<u64>,
    pub started_ms: u64,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i32>,
}

/// Written by [`LogWriter::finish`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMeta {
    /// Bytes received from the producer (the offset of the next chunk it would send).
    pub received: u64,
    /// Bytes stored, the marker included.
    pub stored: u64,
    pub truncated: bool,
    pub cap_bytes: u64,
}

fn seg_name(start: u64) -> String {
    format!("seg-{start:016x}.zst")
}

fn tail_name(start: u64) -> String {
    format!("tail-{start:016x}")
}

/// Lists `(start, path, sealed)` of the segments in `dir`, ordered by start. A tail whose sealed
/// segment exists (a crash between sealing and removing it) is skipped.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf, bool)>, LogError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let parsed = if let Some(h) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".zst"))
        {
            Some((h, true))
        } else {
            name.strip_prefix("tail-").map(|h| (h, false))
        };
        if let Some((h, sealed)) = parsed {
            let start = u64::from_str_radix(h, 16)
                .map_err(|_| LogError::Corrupt(format!("bad segment name {name}")))?;
            out.push((start, e.path(), sealed));
        }
    }
    out.sort_by_key(|(s, _, sealed)| (*s, !*sealed));
    out.dedup_by_key(|(s, _, _)| *s);
    Ok(out)
}

/// A segment's bytes; `size`: its length when known (the buffer is allocated once, not grown).
fn read_segment(path: &Path, sealed: bool, size: usize) -> Result<Vec<u8>, LogError> {
    if sealed {
        let f = File::open(path)?;
        let mut d = zstd::stream::read::Decoder::new(f)?;
        let mut v = Vec::with_capacity(size);
        d.read_to_end(&mut v)?;
        Ok(v)
    } else {
        Ok(fs::read(path)?)
    }
}

/// Appends to one job's log.
pub struct LogWriter {
    dir: PathBuf,
    cfg: LogConfig,
    /// Bytes accepted from the producer.
    received: u64,
    /// Bytes stored (content, then the marker once truncated).
    stored: u64,
    truncated: bool,
    finished: bool,
    seg_start: u64,
    seg: Vec<u8>,
    tail: File,
    times: File,
    sections: File,
    /// Whether the next stored byte starts a line, and the last recorded ms.
    at_line_start: bool,
    last_ms: Option<u64>,
}

impl LogWriter {
    /// Creates a new log in `dir` (created if missing; must not already hold a log).
    pub fn create(dir: &Path, cfg: LogConfig) -> Result<Self, LogError> {
        fs::create_dir_all(dir)?;
        if !list_segments(dir)?.is_empty() {
            return Err(LogError::Corrupt(format!(
                "{} already holds a log",
                dir.display()
            )));
        }
        let tail = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(dir.join(tail_name(0)))?;
        let open = |n: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(n))
        };
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            received: 0,
            stored: 0,
            truncated: false,
            finished: false,
            seg_start: 0,
            seg: Vec::with_capacity(cfg.segment_bytes.min(1 << 20)),
            tail,
            times: open("times")?,
            sections: open("sections")?,
            at_line_start: true,
            last_ms: None,
            cfg,
        })
    }

    /// Reopens an unfinished log (after a restart) to continue appending. The received count is
    /// the stored count then (bytes past a cap are not remembered across restarts; the marker is).
    pub fn reopen(dir: &Path, cfg: LogConfig) -> Result<Self, LogError> {
        if dir.join("meta.json").exists() {
            return Err(LogError::Finished);
        }
        let segs = list_segments(dir)?;
        let mut stored = 0;
        let mut last_tail: Option<(u64, Vec<u8>)> = None;
        for (start, path, sealed) in &segs {
            if *start != stored {
                return Err(LogError::Corrupt(format!(
                    "segment at {start}, expected {stored}"
                )));
            }
            let bytes = read_segment(path, *sealed, 0)?;
            stored += bytes.len() as u64;
            if !*sealed {
                last_tail = Some((*start, bytes));
            } else {
                // A tail left behind by a crash after sealing.
                let _ = fs::remove_file(dir.join(tail_name(*start)));
            }
        }
        let (seg_start, seg) = match last_tail {
            Some(t) => t,
            None => {
                File::create(dir.join(tail_name(stored)))?;
                (stored, Vec::new())
            }
        };
        let content = Reader::open(dir)?;
        let full = content.read_range(0, content.len())?;
        let marker = truncation_marker(cfg.cap_bytes);
        let truncated = full.ends_with(&marker) && full.len() as u64 > cfg.cap_bytes;
        let tail = OpenOptions::new()
            .append(true)
            .read(true)
            .open(dir.join(tail_name(seg_start)))?;
        let open = |n: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(n))
        };
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            received: stored,
            stored,
            truncated,
            finished: false,
            seg_start,
            seg,
            tail,
            times: open("times")?,
            sections: open("sections")?,
            at_line_start: full.last().is_none_or(|b| *b == b'\n'),
            last_ms: None,
            cfg,
        })
    }

    /// Bytes accepted from the producer: the offset the next chunk must have.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes stored (content and marker).
    pub fn stored(&self) -> u64 {
        self.stored
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Appends `data` at producer offset `offset`, received at `at_ms` (unix ms). Idempotent for
    /// retries; see the module documentation.
    pub fn append(&mut self, offset: u64, data: &[u8], at_ms: u64) -> Result<(), LogError> {
        if self.finished {
            return Err(LogError::Finished);
        }
        if offset > self.received {
            return Err(LogError::Gap {
                offset,
                have: self.received,
            });
        }
        let end = offset + data.len() as u64;
        // The part already received must match what is stored (where it was stored).
        let overlap_end = end.min(self.received);
        if offset < overlap_end {
            let check_end = overlap_end.min(self.content_len());
            if offset < check_end {
                let have = self.read_stored(offset, check_end)?;
                if have[..] != data[..(check_end - offset) as usize] {
                    return Err(LogError::Mismatch { offset });
                }
            }
        }
        if end <= self.received {
            return Ok(());
        }
        let new = &data[(self.received - offset) as usize..];
        self.received = end;
        self.store(new, at_ms)
    }

    /// Length of the stored job output (without the marker).
    fn content_len(&self) -> u64 {
        if self.truncated {
            self.cfg.cap_bytes
        } else {
            self.stored
        }
    }

    fn store(&mut self, new: &[u8], at_ms: u64) -> Result<(), LogError> {
        if self.truncated {
            return Ok(());
        }
        let room = self.cfg.cap_bytes.saturating_sub(self.stored) as usize;
        if new.len() <= room {
            self.write_stored(new, at_ms)?;
        } else {
            self.write_stored(&new[..room], at_ms)?;
            self.truncated = true;
            let marker = truncation_marker(self.cfg.cap_bytes);
            self.write_stored(&marker, at_ms)?;
        }
        Ok(())
    }

    fn write_stored(&mut self, mut bytes: &[u8], at_ms: u64) -> Result<(), LogError> {
        // Line-start times: one record per chunk at most (its first line start), and only when
        // the millisecond changed.
        if !bytes.is_empty() {
            let first_line = if self.at_line_start {
                Some(0)
            } else {
                bytes
                    .iter()
                    .position(|b| *b == b'\n')
                    .map(|i| i + 1)
                    .filter(|i| *i < bytes.len())
            };
            if let Some(i) = first_line
                && self.last_ms != Some(at_ms)
            {
                let mut rec = [0u8; 16];
                rec[..8].copy_from_slice(&(self.stored + i as u64).to_le_bytes());
                rec[8..].copy_from_slice(&at_ms.to_le_bytes());
                self.times.write_all(&rec)?;
                self.last_ms = Some(at_ms);
            }
            self.at_line_start = bytes[bytes.len() - 1] == b'\n';
        }
        while !bytes.is_empty() {
            let room = self.cfg.segment_bytes - self.seg.len();
            let n = room.min(bytes.len());
            self.tail.write_all(&bytes[..n])?;
            self.seg.extend_from_slice(&bytes[..n]);
            self.stored += n as u64;
            bytes = &bytes[n..];
            if self.seg.len() >= self.cfg.segment_bytes {
                self.seal()?;
            }
        }
        Ok(())
    }

    /// Compresses the open segment and starts a new one.
    fn seal(&mut self) -> Result<(), LogError> {
        if self.seg.is_empty() {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{}.tmp", seg_name(self.seg_start)));
        let compressed = zstd::bulk::compress(&self.seg, self.cfg.zstd_level)?;
        fs::write(&tmp, &compressed)?;
        fs::rename(&tmp, self.dir.join(seg_name(self.seg_start)))?;
        let old = self.dir.join(tail_name(self.seg_start));
        self.seg_start += self.seg.len() as u64;
        self.seg.clear();
        self.tail = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(self.dir.join(tail_name(self.seg_start)))?;
        fs::remove_file(old)?;
        Ok(())
    }

    fn read_stored(&self, start: u64, end: u64) -> Result<Vec<u8>, LogError> {
        if start >= self.seg_start {
            let a = (start - self.seg_start) as usize;
            let b = (end - self.seg_start) as usize;
            return Ok(self.seg[a..b].to_vec());
        }
        Reader::open(&self.dir)?.read_range(start, end)
    }

    /// Records the start of step `step` at the current end of the stored log.
    pub fn begin_step(&mut self, step: usize, name: &str, at_ms: u64) -> Result<(), LogError> {
        self.section(SectionEvent {
            step,
            kind: "start".into(),
            offset: self.stored,
            at_ms,
            name: Some(name.to_string()),
            exit_code: None,
        })
    }

    /// Records the end of step `step`.
    pub fn end_step(
        &mut self,
        step: usize,
        exit_code: Option<i32>,
        at_ms: u64,
    ) -> Result<(), LogError> {
        self.section(SectionEvent {
            step,
            kind: "end".into(),
            offset: self.stored,
            at_ms,
            name: None,
            exit_code,
        })
    }

    fn section(&mut self, ev: SectionEvent) -> Result<(), LogError> {
        if self.finished {
            return Err(LogError::Finished);
        }
        let mut line = serde_json::to_vec(&ev).map_err(io::Error::other)?;
        line.push(b'\n');
        self.sections.write_all(&line)?;
        Ok(())
    }

    /// Seals the last segment and writes `meta.json`. Appends after this are refused.
    pub fn finish(&mut self) -> Result<LogMeta, LogError> {
        if self.finished {
            return Err(LogError::Finished);
        }
        self.seal()?;
        // The empty tail of a finished log is not needed.
        let _ = fs::remove_file(self.dir.join(tail_name(self.seg_start)));
        self.finished = true;
        let meta = LogMeta {
            received: self.received,
            stored: self.stored,
            truncated: self.truncated,
            cap_bytes: self.cfg.cap_bytes,
        };
        let tmp = self.dir.join("meta.json.tmp");
        fs::write(&tmp, serde_json::to_vec(&meta).map_err(io::Error::other)?)?;
        fs::rename(tmp, self.dir.join("meta.json"))?;
        Ok(meta)
    }
}

/// Reads a log directory (finished or live).
pub struct Reader {
    dir: PathBuf,
    /// `(start, len, path, sealed)` of each segment.
    segs: Vec<(u64, u64, PathBuf, bool)>,
    len: u64,
}

/// The public name of the reader.
pub type LogReader = Reader;

impl Reader {
    /// Opens `dir`. A live log's open segment is read as it is now.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let raw = list_segments(dir)?;
        let mut segs = Vec::with_capacity(raw.len());
        let mut pos = 0;
        for (i, (start, path, sealed)) in raw.iter().enumerate() {
            if *start != pos {
                return Err(LogError::Corrupt(format!(
                    "segment at {start}, expected {pos}"
                )));
            }
            let len = if *sealed {
                match raw.get(i + 1) {
                    Some((next, _, _)) => next - start,
                    None => read_segment(path, true, 0)?.len() as u64,
                }
            } else {
                fs::metadata(path)?.len()
            };
            segs.push((*start, len, path.clone(), *sealed));
            pos += len;
        }
        Ok(Reader {
            dir: dir.to_path_buf(),
            segs,
            len: pos,
        })
    }

    /// Stored bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `meta.json`, once the log is finished.
    pub fn meta(&self) -> Result<Option<LogMeta>, LogError> {
        match fs::read(self.dir.join("meta.json")) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).map_err(|e| LogError::Corrupt(e.to_string()))?,
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes `start..end` of the stored log.
    pub fn read_range(&self, start: u64, end: u64) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::new();
        self.copy_range(start, end, &mut out)?;
        Ok(out)
    }

    /// The whole stored log.
    pub fn read_all(&self) -> Result<Vec<u8>, LogError> {
        self.read_range(0, self.len)
    }

    /// Bytes from `start` to the end of the segment that holds it, at most to `end` (empty when
    /// `start == end`). A sealed segment is decompressed straight into the returned buffer: a
    /// log streamed chunk by chunk holds one segment per chunk and copies nothing twice.
    pub fn chunk_from(&self, start: u64, end: u64) -> Result<Vec<u8>, LogError> {
        self.check_range(start, end)?;
        if start == end {
            return Ok(Vec::new());
        }
        let Some((s, len, path, sealed)) = self
            .segs
            .iter()
            .find(|(s, len, _, _)| *s <= start && start < s + len)
        else {
            return Ok(Vec::new());
        };
        let a = (start - s) as usize;
        let b = (end.min(s + len) - s) as usize;
        let whole = |path: &Path| -> Result<Vec<u8>, LogError> {
            let mut v = read_segment(path, true, *len as usize)?;
            v.truncate(b);
            v.drain(..a);
            Ok(v)
        };
        if *sealed {
            return whole(path);
        }
        match File::open(path) {
            Ok(f) => {
                let mut v = Vec::with_capacity(b - a);
                let mut f = f;
                f.seek(SeekFrom::Start(a as u64))?;
                f.take((b - a) as u64).read_to_end(&mut v)?;
                Ok(v)
            }
            // Sealed since this reader listed the directory.
            Err(e) if e.kind() == io::ErrorKind::NotFound => whole(&self.dir.join(seg_name(*s))),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams bytes `start..end` into `w`, one segment in memory at a time.
    pub fn copy_range(&self, start: u64, end: u64, w: &mut dyn Write) -> Result<(), LogError> {
        self.check_range(start, end)?;
        let mut pos = start;
        while pos < end {
            let chunk = self.chunk_from(pos, end)?;
            if chunk.is_empty() {
                return Err(LogError::Corrupt(format!(
                    "no stored bytes at offset {pos}"
                )));
            }
            w.write_all(&chunk)?;
            pos += chunk.len() as u64;
        }
        Ok(())
    }

    fn check_range(&self, start: u64, end: u64) -> Result<(), LogError> {
        if start > end || end > self.len {
            return Err(LogError::Range {
                start,
                end,
                len: self.len,
            });
        }
        Ok(())
    }

    /// Line-start times: `(offset, unix ms)` records in offset order.
    pub fn times(&self) -> Result<Vec<(u64, u64)>, LogError> {
        let b = match fs::read(self.dir.join("times")) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(b.chunks_exact(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                    u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
                )
            })
            .collect())
    }

    /// The time of the line holding byte `offset` (that of the last record at or before it).
    pub fn time_at(&self, offset: u64) -> Result<Option<u64>, LogError> {
        let t = self.times()?;
        let i = t.partition_point(|(o, _)| *o <= offset);
        Ok(if i == 0 { None } else { Some(t[i - 1].1) })
    }

    /// The step sections, in step start order.
    pub fn sections(&self) -> Result<Vec<Section>, LogError> {
        let b = match fs::read(self.dir.join("sections")) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out: Vec<Section> = Vec::new();
        for line in b.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            let ev: SectionEvent =
                serde_json::from_slice(line).map_err(|e| LogError::Corrupt(e.to_string()))?;
            if ev.kind == "start" {
                if out.iter().any(|s| s.step == ev.step) {
                    continue; // a repeated start (retry) keeps the first
                }
                out.push(Section {
                    step: ev.step,
                    name: ev.name.unwrap_or_default(),
                    start: ev.offset,
                    end: None,
                    started_ms: ev.at_ms,
                    duration_ms: None,
                    exit_code: None,
                });
            } else if let Some(s) = out
                .iter_mut()
                .find(|s| s.step == ev.step && s.end.is_none())
            {
                s.end = Some(ev.offset);
                s.duration_ms = Some(ev.at_ms.saturating_sub(s.started_ms));
                s.exit_code = ev.exit_code;
            }
        }
        Ok(out)
    }
}

/// The current time in unix milliseconds (for `at_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Feeds an executor's events into a log: output is masked, steps become sections. This is the
/// in-process path (and `ouro run`); a remote runner masks on its side and sends the masked
/// chunks with their offsets, which the server appends with [`LogWriter::append`].
pub struct JobLog {
    writer: LogWriter,
    masker: crate::mask::Masker,
    out: Vec<u8>,
}

impl JobLog {
    pub fn new(writer: LogWriter, secrets: std::sync::Arc<crate::mask::SecretSet>) -> Self {
        JobLog {
            writer,
            masker: crate::mask::Masker::new(secrets),
            out: Vec::with_capacity(64 * 1024),
        }
    }

    pub fn writer(&self) -> &LogWriter {
        &self.writer
    }

    fn flush(&mut self, at_ms: u64) -> Result<(), LogError> {
        self.masker.finish(&mut self.out);
        self.write_out(at_ms)
    }

    fn write_out(&mut self, at_ms: u64) -> Result<(), LogError> {
        if !self.out.is_empty() {
            let off = self.writer.received();
            self.writer.append(off, &self.out, at_ms)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Handles one event received at `at_ms`.
    pub fn handle(&mut self, ev: &crate::exec::ExecEvent, at_ms: u64) -> Result<(), LogError> {
        use crate::exec::ExecEvent;
        match ev {
            ExecEvent::StepStarted { index, name } => {
                self.flush(at_ms)?;
                self.writer.begin_step(*index, name, at_ms)
            }
            ExecEvent::Log { data, .. } => {
                self.masker.push(data, &mut self.out);
                self.write_out(at_ms)
            }
            ExecEvent::StepFinished {
                index, exit_code, ..
            } => {
                // Held-back bytes belong to this step's section.
                self.flush(at_ms)?;
                self.writer.end_step(*index, *exit_code, at_ms)
            }
            ExecEvent::StepSkipped { .. } => Ok(()),
        }
    }

    /// Flushes and finishes the log.
    pub fn finish(mut self) -> Result<LogMeta, LogError> {
        self.flush(now_ms())?;
        self.writer.finish()
    }
}
