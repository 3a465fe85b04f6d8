//! Build: job logs over the API. One job with its step sections and log size, the raw log
//! (byte-exact, `?offset=` or an HTTP Range for the tail, streamed a segment at a time), and the
//! live log as Server-Sent Events (`log` events carrying their byte offsets, `section` events,
//! `end` once the job finished and everything was sent). Reading only: the runner writes logs
//! (`ouro_build::logs`), this module and `ouro_build::logview` read them.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use ouro_build::logs::{LogError, LogMeta, Reader, Section};
use ouro_build::logview::{self, Ansi, SectionView, Span};
use ouro_build::runs::{self, Job, Run};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_store::q;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines/{number}/jobs/{job_id}",
        Permission::Project(Role::Viewer),
        show,
    )
    .doc(
        "build",
        "One job of a run: its state, the step sections of its log (with durations and exit codes) and the log's size",
    )
    .query("attempt", "Which attempt's log (default: the latest)")
    .response::<JobLog>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines/{number}/jobs/{job_id}/log",
        Permission::Project(Role::Viewer),
        raw,
    )
    .doc(
        "build",
        "The job's log, byte-exact, as text/plain (ANSI escapes kept). Supports a single HTTP Range (206) for the tail; 416 build.log_range outside the log",
    )
    .query("attempt", "Which attempt's log (default: the latest)")
    .query("offset", "Start at this byte offset (200 with the rest of the log)")
    .query(
        "download",
        "1: sent as an attachment (Content-Disposition) to save",
    );
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines/{number}/jobs/{job_id}/log/stream",
        Permission::Project(Role::Viewer),
        stream,
    )
    .doc(
        "build",
        "The live log as Server-Sent Events: `log` events (`offset`, `end`, `text`, `lines`; the id is `end`, so Last-Event-ID resumes exactly), `section` events, `attempt` when a queued job starts, `end` once the job has finished and everything was sent",
    )
    .query("attempt", "Which attempt's log (default: the latest, followed from queued)")
    .query(
        "offset",
        "Start at this byte offset (Last-Event-ID wins when both are given)",
    );
}

/// `?attempt=&offset=&download=&q=`.
#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    pub attempt: Option<i64>,
    pub offset: Option<u64>,
    pub download: Option<String>,
    /// Search (the job page).
    pub q: Option<String>,
}

/// The state of one attempt's log.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogState {
    pub attempt: i64,
    /// Stored bytes (the truncation marker included).
    pub size: u64,
    /// The writer finished the log.
    pub finished: bool,
    /// The job printed more than the cap; the log ends with a marker line.
    pub truncated: bool,
}

/// A job with its log's sections.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobLog {
    pub run: i64,
    pub run_status: String,
    pub job: Job,
    pub log: LogState,
    pub sections: Vec<SectionView>,
}

/// A job of run `number` of the context's project, and the attempt asked for (default the
/// latest; 0 while the job never started).
pub struct Target {
    pub run: Run,
    pub job: Job,
    pub attempt: i64,
    pub dir: PathBuf,
}

fn job_not_found(job_id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::JobNotFound,
        format!("job {job_id} does not exist in this pipeline run"),
    )
}

/// Loads the job `job_id` of run `number` in the context's project.
pub async fn load_job(
    st: &AppState,
    ctx: &Ctx,
    number: i64,
    job_id: i64,
) -> Result<(Run, Job), OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    let mut c = st.store.read().await?;
    let run = runs::get(&mut c, p.id, number).await?;
    let job = runs::jobs(&mut c, run.id)
        .await?
        .into_iter()
        .find(|j| j.id == job_id)
        .ok_or_else(|| job_not_found(job_id))?;
    Ok((run, job))
}

/// [`load_job`] and the attempt of `?attempt=`.
pub async fn target(
    st: &AppState,
    ctx: &Ctx,
    number: i64,
    job_id: i64,
    attempt: Option<i64>,
) -> Result<Target, OuroError> {
    let (run, job) = load_job(st, ctx, number, job_id).await?;
    let attempt = match attempt {
        None => job.attempt,
        Some(a) if a >= 1 && a <= job.attempt => a,
        Some(a) => {
            return Err(OuroError::new(
                ErrorCode::JobNotFound,
                format!(
                    "job {job_id} has no attempt {a} (it has {} attempt(s))",
                    job.attempt
                ),
            )
            .with_details(serde_json::json!({"field": "attempt"})));
        }
    };
    let dir = runs::log_dir(&st.settings.data_dir, job.id, attempt);
    Ok(Target {
        run,
        job,
        attempt,
        dir,
    })
}

fn log_failed(e: LogError) -> OuroError {
    tracing::warn!(error = %e, "reading a job log failed");
    OuroError::new(
        ErrorCode::Internal,
        format!("the job log cannot be read ({})", e.code()),
    )
}

/// Opens a log directory; `None` when nothing was written yet.
pub fn open_log(dir: &FsPath) -> Result<Option<Reader>, LogError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    Reader::open(dir).map(Some)
}

/// A log read once: size, meta, sections.
pub struct Snapshot {
    pub reader: Option<Reader>,
    pub meta: Option<LogMeta>,
    pub sections: Vec<Section>,
}

impl Snapshot {
    pub fn size(&self) -> u64 {
        self.reader.as_ref().map_or(0, |r| r.len())
    }

    pub fn state(&self, attempt: i64) -> LogState {
        LogState {
            attempt,
            size: self.size(),
            finished: self.meta.is_some(),
            truncated: self.meta.as_ref().is_some_and(|m| m.truncated),
        }
    }
}

pub fn snapshot(dir: &FsPath) -> Result<Snapshot, LogError> {
    let reader = open_log(dir)?;
    let (meta, sections) = match &reader {
        Some(r) => (r.meta()?, r.sections()?),
        None => (None, Vec::new()),
    };
    Ok(Snapshot {
        reader,
        meta,
        sections,
    })
}

/// Runs blocking log IO off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, OuroError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OuroError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(log_failed)
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number, job_id)): Path<(String, i64, i64)>,
    Query(lq): Query<LogQuery>,
) -> ApiResult<Json<JobLog>> {
    let t = target(&st, &ctx, number, job_id, lq.attempt).await?;
    let dir = t.dir.clone();
    let snap = blocking(move || snapshot(&dir)).await?;
    Ok(Json(JobLog {
        run: t.run.number,
        run_status: t.run.status.clone(),
        log: snap.state(t.attempt),
        sections: snap.sections.iter().map(SectionView::of).collect(),
        job: t.job,
    }))
}

/// A single byte range of `bytes=a-b`, `bytes=a-` or `bytes=-n`; `Ok(None)` when the header is
/// absent, malformed or asks for several ranges (then the whole log is sent, as RFC 9110
/// allows); `Err` when it cannot be satisfied.
fn parse_range(h: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || len == 0 {
            return Err(());
        }
        return Ok(Some((len.saturating_sub(n), len)));
    }
    let Ok(start) = a.parse::<u64>() else {
        return Ok(None);
    };
    let end = if b.is_empty() {
        len
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => (e + 1).min(len),
            _ => return Ok(None),
        }
    };
    if start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn range_error(len: u64, what: &str) -> Response {
    let mut res = ApiError(OuroError::new(
        ErrorCode::LogRange,
        format!("{what} is outside the log ({len} bytes)"),
    ))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        res.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    res
}

fn file_part(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('.').to_string()
}

async fn raw(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((slug, number, job_id)): Path<(String, i64, i64)>,
    Query(lq): Query<LogQuery>,
) -> ApiResult<Response> {
    let t = target(&st, &ctx, number, job_id, lq.attempt).await?;
    let dir = t.dir.clone();
    let (reader, meta) = blocking(move || {
        let r = open_log(&dir)?;
        let meta = match &r {
            Some(r) => r.meta()?,
            None => None,
        };
        Ok((r, meta))
    })
    .await?;
    let len = reader.as_ref().map_or(0, |r| r.len());
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end, partial) = match parse_range(range, len) {
        Err(()) => return Ok(range_error(len, "the range")),
        Ok(Some((a, b))) => (a, b, true),
        Ok(None) => match lq.offset {
            Some(o) if o > len => return Ok(range_error(len, &format!("offset {o}"))),
            Some(o) => (o, len, false),
            None => (0, len, false),
        },
    };
    // One stored segment per chunk: at most one chunk waits while the client takes one.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    if let Some(reader) = reader {
        tokio::task::spawn_blocking(move || {
            let mut pos = start;
            while pos < end {
                let chunk = match reader.chunk_from(pos, end) {
                    Ok(c) if c.is_empty() => Err(std::io::Error::other(format!(
                        "no stored bytes at offset {pos} of the log"
                    ))),
                    Ok(c) => Ok(Bytes::from(c)),
                    Err(e) => Err(std::io::Error::other(e)),
                };
                let (failed, n) = match &chunk {
                    Ok(c) => (false, c.len() as u64),
                    Err(_) => (true, 0),
                };
                if tx.blocking_send(chunk).is_err() || failed {
                    return;
                }
                pos += n;
            }
        });
    }
    let mut res = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    if partial {
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert("x-ouro-log-size", HeaderValue::from(len));
    h.insert(
        "x-ouro-log-finished",
        HeaderValue::from_static(if meta.is_some() { "true" } else { "false" }),
    );
    if partial
        && let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end.saturating_sub(1)))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    let download = matches!(lq.download.as_deref(), Some("1" | "true" | "yes"));
    let name = format!(
        "{}-{}-{}-{}.log",
        file_part(&slug),
        t.run.number,
        file_part(&t.job.key),
        t.attempt
    );
    let disp = if download { "attachment" } else { "inline" };
    if let Ok(v) = HeaderValue::from_str(&format!("{disp}; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

// ---------------------------------------------------------------------------------------------
// The live stream

/// At most this many log bytes per `log` event.
pub const EVENT_BYTES: usize = 64 * 1024;
/// How much of the log a stream reads at a time (it then sends it in events).
const READ_BYTES: u64 = 1 << 20;
/// Polling interval when no notification wakes the stream.
const POLL: Duration = Duration::from_millis(150);
/// The job's state is read at most this often while its log does not grow (unless notified).
const JOB_CHECK: Duration = Duration::from_millis(500);

/// One line piece of a `log` event.
#[derive(Debug, Serialize)]
pub struct LinePiece {
    /// The piece continues the last line of the previous event (which had no `\n` yet).
    pub cont: bool,
    /// Unix ms of the line's start (new lines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
    pub spans: Vec<Span>,
    /// The truncation marker line.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub marker: bool,
}

/// The data of a `log` event.
#[derive(Debug, Serialize)]
pub struct LogChunk {
    /// The offset of the first byte.
    pub offset: u64,
    /// The offset after the last byte (the event id: resume from here).
    pub end: u64,
    /// The bytes as text (invalid UTF-8 replaced; the raw log is byte-exact).
    pub text: String,
    pub lines: Vec<LinePiece>,
}

/// Reads the line start times of a log incrementally (the `times` file only grows).
struct Times {
    path: PathBuf,
    read: u64,
    /// Records at or after the last one before the current position.
    recs: VecDeque<(u64, u64)>,
}

impl Times {
    fn new(dir: &FsPath) -> Times {
        Times {
            path: dir.join("times"),
            read: 0,
            recs: VecDeque::new(),
        }
    }

    fn refresh(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.read)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.take(1 << 20).read_to_end(&mut buf).is_err() {
            return;
        }
        let whole = buf.len() / 16 * 16;
        for c in buf[..whole].chunks_exact(16) {
            let o = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let t = u64::from_le_bytes(c[8..].try_into().expect("8 bytes"));
            self.recs.push_back((o, t));
        }
        self.read += whole as u64;
    }

    /// The time of the line starting at `offset`; forgets records before it.
    fn at(&mut self, offset: u64) -> Option<u64> {
        while self.recs.len() > 1 && self.recs[1].0 <= offset {
            self.recs.pop_front();
        }
        self.recs
            .front()
            .filter(|(o, _)| *o <= offset)
            .map(|(_, t)| *t)
    }
}

/// What one read of the log gave.
struct Read1 {
    len: u64,
    /// The writer finished the log.
    finished: bool,
    sections: Vec<Section>,
    bytes: Vec<u8>,
    before: Option<u8>,
    times: Times,
}

fn read_once(
    dir: PathBuf,
    pos: u64,
    want_before: bool,
    mut times: Times,
) -> Result<Read1, LogError> {
    let Some(r) = open_log(&dir)? else {
        return Ok(Read1 {
            len: 0,
            finished: false,
            sections: Vec::new(),
            bytes: Vec::new(),
            before: None,
            times,
        });
    };
    let len = r.len();
    let sections = r.sections()?;
    let bytes = if pos < len {
        times.refresh();
        r.read_range(pos, (pos + READ_BYTES).min(len))?
    } else {
        Vec::new()
    };
    let before = if want_before && pos > 0 && pos <= len {
        r.read_range(pos - 1, pos)?.first().copied()
    } else {
        None
    };
    Ok(Read1 {
        len,
        finished: r.meta()?.is_some(),
        sections,
        bytes,
        before,
        times,
    })
}

/// Splits a chunk into line pieces.
fn pieces(
    bytes: &[u8],
    offset: u64,
    at_line_start: bool,
    ansi: &mut Ansi,
    times: &mut Times,
) -> Vec<LinePiece> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut first = true;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| start + i);
        let piece = &bytes[start..end];
        let cont = first && !at_line_start;
        out.push(LinePiece {
            cont,
            time: if cont {
                None
            } else {
                times.at(offset + start as u64)
            },
            spans: ansi.line(piece),
            marker: !cont && logview::is_marker(piece),
        });
        first = false;
        start = end + 1;
    }
    out
}

/// The job's current status and attempt.
async fn job_state(st: &AppState, job_id: i64) -> Result<(String, i64), OuroError> {
    let row = q("SELECT status, attempt FROM build_jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&mut st.store.read().await?)
        .await?;
    Ok((row.text("status")?, row.i64("attempt")?))
}

fn json_event(kind: &str, data: &impl Serialize) -> SseEvent {
    SseEvent::default()
        .event(kind)
        .json_data(data)
        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"))
}

async fn stream(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((_, number, job_id)): Path<(String, i64, i64)>,
    Query(lq): Query<LogQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let t = target(&st, &ctx, number, job_id, lq.attempt).await?;
    let follow = lq.attempt.is_none();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let start = resume.or(lq.offset).unwrap_or(0);
    let mut hub = st.log_hub.subscribe();
    let mut shutdown = st.shutting_down.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(8);
    tokio::spawn(async move {
        let mut attempt = t.attempt;
        let mut pos = start;
        let mut at_line_start: Option<bool> = if pos == 0 { Some(true) } else { None };
        let mut ansi = Ansi::new();
        let mut times = Times::new(&t.dir);
        let mut sent: HashMap<usize, (u64, Option<u64>)> = HashMap::new();
        let mut last_check: Option<Instant> = None;
        let mut notified = false;
        // The job ended: send what is left even if it ends mid-sequence.
        let mut force = false;
        let send = |ev: SseEvent| {
            let tx = tx.clone();
            async move { tx.send(Ok(ev)).await.is_ok() }
        };
        loop {
            if *shutdown.borrow() {
                return;
            }
            let dir = runs::log_dir(&st.settings.data_dir, job_id, attempt);
            let r = {
                let times = std::mem::replace(&mut times, Times::new(&dir));
                let want = at_line_start.is_none();
                tokio::task::spawn_blocking(move || read_once(dir, pos, want, times)).await
            };
            let r = match r {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, job_id, "live log read failed; retrying");
                    tokio::time::sleep(POLL * 4).await;
                    continue;
                }
                Err(_) => return,
            };
            times = r.times;
            if at_line_start.is_none() && (pos == 0 || r.before.is_some()) {
                at_line_start = Some(r.before.is_none_or(|b| b == b'\n'));
            }
            // Sections are announced when the position reaches their start (and their end),
            // and log events never cross a section boundary, so a client can put every line
            // under its step.
            let mut progressed = false;
            let buf = r.bytes;
            let buf_pos = pos;
            let finished = r.finished || force;
            let mut boundaries: Vec<u64> = Vec::new();
            for s in &r.sections {
                boundaries.push(s.start);
                if let Some(e) = s.end {
                    boundaries.push(e);
                }
            }
            loop {
                for s in &r.sections {
                    let shown_end = s.end.filter(|e| *e <= pos);
                    if s.start <= pos && sent.get(&s.step) != Some(&(s.start, shown_end)) {
                        let mut v = SectionView::of(s);
                        if shown_end.is_none() {
                            v.end = None;
                            v.duration_ms = None;
                            v.exit_code = None;
                            v.status = "running".into();
                        }
                        if !send(json_event("section", &v)).await {
                            return;
                        }
                        sent.insert(s.step, (s.start, shown_end));
                    }
                }
                let off = (pos - buf_pos) as usize;
                if off >= buf.len() {
                    break;
                }
                let avail = &buf[off..];
                let mut take = avail.len().min(EVENT_BYTES);
                let mut complete = finished && pos + take as u64 == r.len;
                if let Some(b) = boundaries.iter().filter(|b| **b > pos).min()
                    && (b - pos) as usize <= take
                {
                    take = (b - pos) as usize;
                    complete = true;
                }
                let window = &avail[..take];
                // Live: never split an escape sequence or a character (wait for the rest).
                let n = logview::safe_cut(window, !complete);
                if n == 0 {
                    break;
                }
                let chunk = &window[..n];
                let data = LogChunk {
                    offset: pos,
                    end: pos + n as u64,
                    text: String::from_utf8_lossy(chunk).into_owned(),
                    lines: pieces(
                        chunk,
                        pos,
                        at_line_start.unwrap_or(true),
                        &mut ansi,
                        &mut times,
                    ),
                };
                at_line_start = Some(chunk.last() == Some(&b'\n'));
                let ev = json_event("log", &data).id(data.end.to_string());
                if !send(ev).await {
                    return;
                }
                pos += n as u64;
                progressed = true;
                if n < take {
                    break;
                }
            }
            if progressed && pos < r.len {
                continue; // more to catch up on
            }
            // Nothing new: has the job finished (or moved to another attempt)?
            let due = notified || last_check.is_none_or(|t| t.elapsed() >= JOB_CHECK);
            notified = false;
            if due && !progressed {
                last_check = Some(Instant::now());
                match job_state(&st, job_id).await {
                    Ok((status, latest)) => {
                        if follow && pos == 0 && latest > attempt {
                            attempt = latest;
                            times =
                                Times::new(&runs::log_dir(&st.settings.data_dir, job_id, attempt));
                            sent.clear();
                            if !send(json_event(
                                "attempt",
                                &serde_json::json!({"attempt": attempt}),
                            ))
                            .await
                            {
                                return;
                            }
                            continue;
                        }
                        let done = !matches!(status.as_str(), "queued" | "running");
                        if done || latest > attempt {
                            // Read once more: the last bytes may have landed just before.
                            let dir = runs::log_dir(&st.settings.data_dir, job_id, attempt);
                            let len = tokio::task::spawn_blocking(move || {
                                open_log(&dir).map(|r| r.map_or(0, |r| r.len()))
                            })
                            .await
                            .ok()
                            .and_then(|r| r.ok())
                            .unwrap_or(0);
                            if len > pos {
                                force = true;
                                continue;
                            }
                            let _ = send(json_event(
                                "end",
                                &serde_json::json!({
                                    "status": status,
                                    "attempt": attempt,
                                    "latest_attempt": latest,
                                    "size": len.max(pos),
                                }),
                            ))
                            .await;
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, job_id, "live log: job state read failed"),
                }
            }
            tokio::select! {
                _ = wait_for(&mut hub, job_id) => { notified = true; }
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Resolves when the hub reports a change of `job_id`'s log (or lagged: maybe it did).
async fn wait_for(hub: &mut tokio::sync::broadcast::Receiver<i64>, job_id: i64) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match hub.recv().await {
            Ok(id) if id == job_id => return,
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
