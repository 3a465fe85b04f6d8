//! Replica logs. A replica writes stdout and stderr straight into files (a pipe to Ouro would
//! break when Ouro restarts); Ouro tails those files into timestamped lines with the replica id
//! and stream, keeps the recent ones in a bounded ring per service, and rotates a file that grew
//! past its cap (copy to `.1`, then truncate: the writer keeps its descriptor, so the file cannot
//! be renamed under it).

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

/// Longest line kept; longer lines are cut (the rest is dropped).
const MAX_LINE: usize = 16 * 1024;
/// Read at most this much per file per poll, so a flood cannot stall the tailer.
const MAX_READ: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// What the supervisor did with the replica (started, exited, restarting, failed, stopped).
    Ouro,
}

impl LogStream {
    pub fn as_str(&self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Ouro => "ouro",
        }
    }
}

/// One log line of a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// When Ouro read the line (or the supervisor event happened).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// `service/version/N`.
    pub replica: String,
    pub stream: LogStream,
    pub text: String,
}

/// The recent lines of every service, a bounded ring each.
pub(crate) struct LogStore {
    capacity: usize,
    rings: Mutex<HashMap<(String, String, String), VecDeque<LogLine>>>,
}

impl LogStore {
    pub fn new(capacity: usize) -> Self {
        LogStore {
            capacity: capacity.max(1),
            rings: Mutex::new(HashMap::new()),
        }
    }

    pub fn push(&self, service_key: &(String, String, String), mut line: LogLine) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let ring = rings.entry(service_key.clone()).or_default();
        // Callers stamp a line before they get the lock, so two replicas' lines can arrive out
        // of order by a moment; the ring stays in time order for readers.
        if let Some(last) = ring.back()
            && line.timestamp < last.timestamp
        {
            line.timestamp = last.timestamp;
        }
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(line);
    }

    /// The last `tail` lines of a service, newest last; only those of `replica` when given.
    pub fn tail(
        &self,
        service_key: &(String, String, String),
        replica: Option<&str>,
        tail: usize,
    ) -> Vec<LogLine> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ring) = rings.get(service_key) else {
            return Vec::new();
        };
        let mut out: Vec<LogLine> = ring
            .iter()
            .rev()
            .filter(|l| replica.is_none_or(|r| l.replica == r))
            .take(tail)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// Follows one log file from an offset.
struct Follow {
    path: PathBuf,
    stream: LogStream,
    offset: u64,
    partial: Vec<u8>,
}

/// Follows a replica's stdout and stderr files.
pub(crate) struct Tailer {
    files: Vec<Follow>,
    max_bytes: u64,
}

impl Tailer {
    /// Starts at the current end of the files (`from_end`) or at their beginning.
    pub fn new(stdout: &Path, stderr: &Path, max_bytes: u64, from_end: bool) -> Self {
        let follow = |path: &Path, stream| Follow {
            path: path.to_path_buf(),
            stream,
            offset: if from_end {
                fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            } else {
                0
            },
            partial: Vec::new(),
        };
        Tailer {
            files: vec![
                follow(stdout, LogStream::Stdout),
                follow(stderr, LogStream::Stderr),
            ],
            max_bytes,
        }
    }

    /// Reads what was appended since the last poll; complete lines go to `emit`. With `flush`,
    /// an unfinished last line is emitted too (the process is gone).
    pub fn poll(&mut self, flush: bool, emit: &mut dyn FnMut(LogStream, String)) {
        let max = self.max_bytes;
        for f in &mut self.files {
            if let Err(e) = f.poll(max, emit) {
                tracing::debug!(path = %f.path.display(), error = %e, "reading a replica log failed");
            }
            if flush && !f.partial.is_empty() {
                let rest = std::mem::take(&mut f.partial);
                emit(f.stream, String::from_utf8_lossy(&rest).into_owned());
            }
        }
    }
}

impl Follow {
    fn poll(&mut self, max_bytes: u64, emit: &mut dyn FnMut(LogStream, String)) -> io::Result<()> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            // Truncated behind our back: start again from its beginning.
            self.offset = 0;
        }
        if len > self.offset {
            self.read_from(&mut file, len, emit)?;
        }
        if len > max_bytes {
            self.rotate(emit)?;
        }
        Ok(())
    }

    fn read_from(
        &mut self,
        file: &mut File,
        end: u64,
        emit: &mut dyn FnMut(LogStream, String),
    ) -> io::Result<()> {
        file.seek(SeekFrom::Start(self.offset))?;
        let want = (end - self.offset).min(MAX_READ);
        let mut buf = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.split(&buf, emit);
        Ok(())
    }

    fn split(&mut self, buf: &[u8], emit: &mut dyn FnMut(LogStream, String)) {
        for piece in buf.split_inclusive(|b| *b == b'\n') {
            let complete = piece.last() == Some(&b'\n');
            let body = if complete {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            let room = MAX_LINE.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&body[..body.len().min(room)]);
            if complete {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                emit(self.stream, String::from_utf8_lossy(&line).into_owned());
            }
        }
    }

    /// Copies the file to `.1` (replacing the previous one), reads what arrived meanwhile, then
    /// truncates it. A line written between the copy and the truncation is lost; the window is
    /// one copy long.
    fn rotate(&mut self, emit: &mut dyn FnMut(LogStream, String)) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let old = PathBuf::from(old);
        let copied = fs::copy(&self.path, &old)?;
        if copied > self.offset {
            let mut f = File::open(&old)?;
            self.read_from(&mut f, copied, emit)?;
        }
        let f = fs::OpenOptions::new().write(true).open(&self.path)?;
        f.set_len(0)?;
        self.offset = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_are_split_across_polls_and_a_rotation_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("stdout.log");
        let err = dir.path().join("stderr.log");
        let mut w = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .expect("open");
        let mut t = Tailer::new(&out, &err, 64, false);
        let mut got: Vec<(LogStream, String)> = Vec::new();
        write!(w, "one\ntw").expect("write");
        t.poll(false, &mut |s, l| got.push((s, l)));
        assert_eq!(got, vec![(LogStream::Stdout, "one".to_string())]);
        // Past the 64-byte cap: the file is rotated after reading.
        write!(w, "o\r\n{}\n", "x".repeat(70)).expect("write");
        t.poll(false, &mut |s, l| got.push((s, l)));
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].1, "two");
        assert_eq!(fs::metadata(&out).expect("meta").len(), 0);
        assert!(dir.path().join("stdout.log.1").exists());
        // The writer's O_APPEND descriptor continues at the start of the truncated file.
        write!(w, "three").expect("write");
        t.poll(true, &mut |s, l| got.push((s, l)));
        assert_eq!(got.last().map(|g| g.1.as_str()), Some("three"));
    }

    #[test]
    fn the_ring_is_bounded_and_returns_the_newest_last() {
        let store = LogStore::new(3);
        let key = ("p".to_string(), "e".to_string(), "s".to_string());
        for i in 0..5 {
            store.push(
                &key,
                LogLine {
                    timestamp: OffsetDateTime::now_utc(),
                    replica: format!("s/v/{}", i % 2),
                    stream: LogStream::Stdout,
                    text: i.to_string(),
                },
            );
        }
        let all: Vec<String> = store
            .tail(&key, None, 10)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(all, vec!["2", "3", "4"]);
        let one: Vec<String> = store
            .tail(&key, Some("s/v/0"), 10)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(one, vec!["2", "4"]);
        assert_eq!(store.tail(&key, None, 1)[0].text, "4");
    }
}
