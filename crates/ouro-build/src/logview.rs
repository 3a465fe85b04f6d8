//! Viewing job logs: turning the stored bytes of a [`crate::logs::Reader`] into lines for people.
//! No HTTP here; the server's log API and job page use it.
//!
//! - ANSI: SGR sequences (`ESC [ ... m`: reset, bold, dim, italic, underline, the 16 colours, the
//!   256-colour palette `38;5;n`/`48;5;n`, true colour `38;2;r;g;b` mapped to the nearest palette
//!   entry) become `<span>`s with CSS classes (`ansi-fg-N`, `ansi-bg-N`, `ansi-bold`, ...; see
//!   [`palette_css`]). Every other escape sequence (cursor movement, OSC titles and links,
//!   charset switches) and every control character except tab is dropped; a dangling `ESC` at the
//!   end of the input is dropped too. All text is HTML-escaped. A carriage return inside a line
//!   (progress bars) keeps only what was printed after it, as a terminal shows it.
//! - Lines: [`LineScanner`] splits a byte stream into numbered lines with their offsets (a line is
//!   kept up to [`MAX_LINE`] bytes; the rest is counted, not stored), so any log is read with
//!   bounded memory. [`tail_window`] finds where the last N lines start; [`render`] turns a byte
//!   range into [`Block`]s: runs of lines per step section, each line with its number, offset,
//!   time and HTML.
//! - Search: [`search`] scans a whole log for a case-insensitive text (in the text without
//!   escapes) and gives the matching lines with the match highlighted (`<mark>`).
//! - [`LogHub`]: the writer side calls `notify(job_id)` after appending, so live streams wake at
//!   once; streams poll as a fallback.

use std::collections::VecDeque;
use std::io::{self, Write};

use serde::Serialize;

use crate::logs::{LogError, Reader, Section};

/// A line is kept (rendered, searched) up to this many bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// The text style in effect at a point of the output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Palette index 0..=255.
    pub fg: Option<u8>,
    pub bg: Option<u8>,
    pub bold: bool,
    pub dim: bool,
    pub italic: bool,
    pub underline: bool,
}

impl Style {
    /// The CSS classes of this style, space separated ("" for the default style).
    pub fn classes(&self) -> String {
        let mut c: Vec<String> = Vec::new();
        if self.bold {
            c.push("ansi-bold".into());
        }
        if self.dim {
            c.push("ansi-dim".into());
        }
        if self.italic {
            c.push("ansi-italic".into());
        }
        if self.underline {
            c.push("ansi-underline".into());
        }
        if let Some(f) = self.fg {
            c.push(format!("ansi-fg-{f}"));
        }
        if let Some(b) = self.bg {
            c.push(format!("ansi-bg-{b}"));
        }
        c.join(" ")
    }

    fn apply_sgr(&mut self, params: &[u8]) {
        let ps: Vec<Option<u32>> = params
            .split(|b| *b == b';' || *b == b':')
            .map(|p| {
                if p.is_empty() {
                    None
                } else {
                    std::str::from_utf8(p).ok().and_then(|s| s.parse().ok())
                }
            })
            .collect();
        let mut i = 0;
        while i < ps.len() {
            let p = ps[i].unwrap_or(0);
            match p {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => {
                    self.bold = false;
                    self.dim = false;
                }
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some((p - 30) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((p - 40) as u8),
                49 => self.bg = None,
                90..=97 => self.fg = Some((p - 90 + 8) as u8),
                100..=107 => self.bg = Some((p - 100 + 8) as u8),
                38 | 48 => {
                    let colour = match ps.get(i + 1).copied().flatten() {
                        Some(5) => {
                            let c = ps.get(i + 2).copied().flatten();
                            i += 2;
                            c.filter(|c| *c <= 255).map(|c| c as u8)
                        }
                        Some(2) => {
                            let rgb = [2, 3, 4].map(|k| ps.get(i + k).copied().flatten());
                            i += 4;
                            match rgb {
                                [Some(r), Some(g), Some(b)] if r < 256 && g < 256 && b < 256 => {
                                    Some(nearest_palette(r as u8, g as u8, b as u8))
                                }
                                _ => None,
                            }
                        }
                        _ => {
                            // Malformed: ignore the rest of the sequence.
                            return;
                        }
                    };
                    if let Some(c) = colour {
                        if p == 38 {
                            self.fg = Some(c);
                        } else {
                            self.bg = Some(c);
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// The xterm 256-colour palette as RGB.
pub fn palette_rgb(i: u8) -> (u8, u8, u8) {
    const BASE: [(u8, u8, u8); 16] = [
        (0, 0, 0),
        (205, 49, 49),
        (13, 188, 121),
        (229, 229, 16),
        (36, 114, 200),
        (188, 63, 188),
        (17, 168, 205),
        (229, 229, 229),
        (102, 102, 102),
        (241, 76, 76),
        (35, 209, 139),
        (245, 245, 67),
        (59, 142, 234),
        (214, 112, 214),
        (41, 184, 219),
        (255, 255, 255),
    ];
    match i {
        0..=15 => BASE[i as usize],
        16..=231 => {
            let n = i - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            (level(n / 36), level((n / 6) % 6), level(n % 6))
        }
        _ => {
            let v = 8 + (i - 232) * 10;
            (v, v, v)
        }
    }
}

/// The palette entry (16..=255) closest to a true colour.
pub fn nearest_palette(r: u8, g: u8, b: u8) -> u8 {
    let mut best = (u32::MAX, 16u8);
    for i in 16..=255u8 {
        let (pr, pg, pb) = palette_rgb(i);
        let d = |a: u8, b: u8| (a as i32 - b as i32).pow(2) as u32;
        let dist = d(r, pr) + d(g, pg) + d(b, pb);
        if dist < best.0 {
            best = (dist, i);
        }
    }
    best.1
}

/// The stylesheet of the ANSI classes (all 256 colours, foreground and background).
pub fn palette_css() -> String {
    let mut s = String::from(
        "/* ANSI colours of job logs (generated by ouro_build::logview::palette_css). */\n\
         .ansi-bold{font-weight:bold}.ansi-dim{opacity:.7}.ansi-italic{font-style:italic}\
         .ansi-underline{text-decoration:underline}\n",
    );
    for i in 0..=255u8 {
        let (r, g, b) = palette_rgb(i);
        s.push_str(&format!(
            ".ansi-fg-{i}{{color:#{r:02x}{g:02x}{b:02x}}}.ansi-bg-{i}{{background-color:#{r:02x}{g:02x}{b:02x}}}\n"
        ));
    }
    s
}

/// A run of text in one style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// CSS classes ("" for plain text).
    #[serde(rename = "c")]
    pub classes: String,
    /// The text (not escaped).
    #[serde(rename = "t")]
    pub text: String,
}

/// HTML-escapes `s` (text and attribute safe).
pub fn escape_html(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Spans as HTML.
pub fn spans_html(spans: &[Span]) -> String {
    let mut o = String::new();
    for s in spans {
        if s.classes.is_empty() {
            o.push_str(&escape_html(&s.text));
        } else {
            o.push_str(&format!(
                "<span class=\"{}\">{}</span>",
                escape_html(&s.classes),
                escape_html(&s.text)
            ));
        }
    }
    o
}

/// The plain text of spans.
pub fn spans_text(spans: &[Span]) -> String {
    spans.iter().map(|s| s.text.as_str()).collect()
}

/// Turns lines with ANSI escapes into styled spans; the style carries over from line to line.
#[derive(Debug, Clone, Default)]
pub struct Ansi {
    pub style: Style,
}

impl Ansi {
    pub fn new() -> Self {
        Ansi::default()
    }

    /// The spans of one line (`line` without its `\n`; a trailing `\r` is ignored).
    pub fn line(&mut self, line: &[u8]) -> Vec<Span> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut spans: Vec<Span> = Vec::new();
        let mut cur: Vec<u8> = Vec::new();
        let mut cur_style = self.style;
        let flush = |spans: &mut Vec<Span>, cur: &mut Vec<u8>, st: &Style| {
            if !cur.is_empty() {
                let text = String::from_utf8_lossy(cur).into_owned();
                let classes = st.classes();
                match spans.last_mut() {
                    Some(l) if l.classes == classes => l.text.push_str(&text),
                    _ => spans.push(Span { classes, text }),
                }
                cur.clear();
            }
        };
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            match b {
                0x1b => {
                    let (len, sgr) = escape_len(&line[i..]);
                    if let Some(params) = sgr {
                        let mut st = self.style;
                        st.apply_sgr(params);
                        if st != self.style {
                            flush(&mut spans, &mut cur, &cur_style);
                            self.style = st;
                            cur_style = st;
                        }
                    }
                    i += len;
                    continue;
                }
                b'\r' => {
                    // What follows overwrites the line.
                    cur.clear();
                    spans.clear();
                }
                b'\t' => cur.push(b),
                0..=0x1f | 0x7f => {}
                _ => cur.push(b),
            }
            i += 1;
        }
        flush(&mut spans, &mut cur, &cur_style);
        spans
    }
}

/// The length of the escape sequence at the start of `s` (which starts with ESC), and the SGR
/// parameters when it is one. An unterminated sequence takes the rest of the input.
fn escape_len(s: &[u8]) -> (usize, Option<&[u8]>) {
    debug_assert_eq!(s.first(), Some(&0x1b));
    match s.get(1) {
        None => (1, None),
        Some(b'[') => {
            // CSI: parameters 0x30-0x3f, intermediates 0x20-0x2f, one final byte 0x40-0x7e.
            let mut j = 2;
            while j < s.len() && (0x30..=0x3f).contains(&s[j]) {
                j += 1;
            }
            let params_end = j;
            while j < s.len() && (0x20..=0x2f).contains(&s[j]) {
                j += 1;
            }
            match s.get(j) {
                Some(f) if (0x40..=0x7e).contains(f) => {
                    let params = &s[2..params_end];
                    let sgr = *f == b'm'
                        && params_end == j
                        && params
                            .iter()
                            .all(|c| c.is_ascii_digit() || *c == b';' || *c == b':');
                    (j + 1, sgr.then_some(params))
                }
                // Not a valid CSI: drop the introducer only.
                Some(_) => (j, None),
                None => (s.len(), None),
            }
        }
        Some(b']') | Some(b'P') | Some(b'_') | Some(b'^') | Some(b'X') => {
            // OSC and other strings: up to BEL or ESC \.
            let mut j = 2;
            while j < s.len() {
                if s[j] == 0x07 {
                    return (j + 1, None);
                }
                if s[j] == 0x1b && s.get(j + 1) == Some(&b'\\') {
                    return (j + 2, None);
                }
                j += 1;
            }
            (s.len(), None)
        }
        Some(c) if (0x20..=0x2f).contains(c) => {
            // ESC intermediates final (charset selection and the like).
            let mut j = 1;
            while j < s.len() && (0x20..=0x2f).contains(&s[j]) {
                j += 1;
            }
            ((j + 1).min(s.len()), None)
        }
        Some(_) => (2, None),
    }
}

/// Where a chunk of a live log may be cut so that no UTF-8 character and no escape sequence is
/// split: a length `<= bytes.len()` (0: wait for more). When `more` is false (nothing follows)
/// everything may go.
pub fn safe_cut(bytes: &[u8], more: bool) -> usize {
    if !more || bytes.is_empty() {
        return bytes.len();
    }
    let mut cut = bytes.len();
    // An escape sequence still open near the end.
    let from = cut.saturating_sub(256);
    if let Some(esc) = bytes[from..].iter().rposition(|b| *b == 0x1b) {
        let esc = from + esc;
        let (len, _) = escape_len(&bytes[esc..]);
        let terminated =
            esc + len < bytes.len() || (esc + len == bytes.len() && escape_complete(&bytes[esc..]));
        if !terminated && !bytes[esc..].contains(&b'\n') {
            cut = esc;
        }
    }
    // A UTF-8 character split at the end.
    let s = &bytes[..cut];
    let back = s.len().saturating_sub(3);
    for i in (back..s.len()).rev() {
        let b = s[i];
        if b & 0xc0 == 0x80 {
            continue; // continuation byte
        }
        let need = if b >= 0xf0 {
            4
        } else if b >= 0xe0 {
            3
        } else if b >= 0xc0 {
            2
        } else {
            1
        };
        if i + need > s.len() {
            cut = i;
        }
        break;
    }
    if cut == 0 && bytes.len() >= 256 {
        bytes.len() // never stall on garbage
    } else {
        cut
    }
}

fn escape_complete(s: &[u8]) -> bool {
    match s.get(1) {
        None => false,
        Some(b'[') => s.last().is_some_and(|f| (0x40..=0x7e).contains(f)) && s.len() > 2,
        Some(b']') | Some(b'P') | Some(b'_') | Some(b'^') | Some(b'X') => {
            s.ends_with(&[0x07]) || s.ends_with(b"\x1b\\")
        }
        Some(_) => true,
    }
}

/// One line as scanned: its number (from 1), the offset of its first byte, its bytes (without
/// the `\n`, cut at [`MAX_LINE`]), and whether it ended with `\n`.
#[derive(Debug)]
pub struct RawLine<'a> {
    pub number: u64,
    pub offset: u64,
    pub bytes: &'a [u8],
    /// The line is longer than what `bytes` holds.
    pub cut: bool,
    pub complete: bool,
}

/// Splits written bytes into lines and calls `f` for each (an `io::Write`, so a
/// [`Reader::copy_range`] can feed it). Call [`LineScanner::finish`] for the last, unterminated line.
pub struct LineScanner<F: FnMut(RawLine<'_>)> {
    f: F,
    buf: Vec<u8>,
    /// Offset of the next byte written.
    pos: u64,
    line_start: u64,
    number: u64,
    cut: bool,
}

impl<F: FnMut(RawLine<'_>)> LineScanner<F> {
    /// A scanner whose first byte is at `offset` (a line start) and whose first line is `number`.
    pub fn new(offset: u64, number: u64, f: F) -> Self {
        LineScanner {
            f,
            buf: Vec::new(),
            pos: offset,
            line_start: offset,
            number,
            cut: false,
        }
    }

    /// Hands over the last line when it has no `\n`.
    pub fn finish(mut self) {
        if self.pos > self.line_start {
            (self.f)(RawLine {
                number: self.number,
                offset: self.line_start,
                bytes: &self.buf,
                cut: self.cut,
                complete: false,
            });
        }
    }
}

impl<F: FnMut(RawLine<'_>)> Write for LineScanner<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let (piece, nl) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            let room = MAX_LINE - self.buf.len();
            if piece.len() > room {
                self.cut = true;
            }
            self.buf.extend_from_slice(&piece[..piece.len().min(room)]);
            self.pos += piece.len() as u64;
            rest = &rest[piece.len()..];
            if nl {
                self.pos += 1;
                rest = &rest[1..];
                (self.f)(RawLine {
                    number: self.number,
                    offset: self.line_start,
                    bytes: &self.buf,
                    cut: self.cut,
                    complete: true,
                });
                self.number += 1;
                self.line_start = self.pos;
                self.buf.clear();
                self.cut = false;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts lines without keeping them: an `io::Write` that remembers the start offsets of the last
/// `keep` lines.
struct LineCounter {
    pos: u64,
    /// Lines started so far (the line holding `pos` included once a byte of it was seen).
    lines: u64,
    at_start: bool,
    keep: usize,
    /// `(number, offset)` of the last `keep` line starts.
    starts: VecDeque<(u64, u64)>,
}

impl Write for LineCounter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        for (i, b) in data.iter().enumerate() {
            if self.at_start {
                self.lines += 1;
                self.starts.push_back((self.lines, self.pos + i as u64));
                if self.starts.len() > self.keep {
                    self.starts.pop_front();
                }
                self.at_start = false;
            }
            if *b == b'\n' {
                self.at_start = true;
            }
        }
        self.pos += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where to start showing the end of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// The number of the first line shown (from 1).
    pub first_line: u64,
    /// The offset of its first byte.
    pub start: u64,
    /// How many lines the log has (an unterminated last line counts).
    pub total_lines: u64,
}

impl Window {
    /// Whether lines before the window are hidden.
    pub fn partial(&self) -> bool {
        self.start > 0
    }
}

/// The start of the last `max_lines` lines of the log, moved later (to a line start) when they
/// hold more than `max_bytes`. Reads the log once, one segment at a time.
pub fn tail_window(r: &Reader, max_lines: usize, max_bytes: u64) -> Result<Window, LogError> {
    let mut c = LineCounter {
        pos: 0,
        lines: 0,
        at_start: true,
        keep: max_lines.max(1),
        starts: VecDeque::new(),
    };
    r.copy_range(0, r.len(), &mut c)?;
    let len = r.len();
    let pick = c
        .starts
        .iter()
        .find(|(_, o)| len - o <= max_bytes)
        .or(c.starts.back())
        .copied();
    Ok(match pick {
        Some((n, o)) => Window {
            first_line: n,
            start: o,
            total_lines: c.lines,
        },
        None => Window {
            first_line: 1,
            start: 0,
            total_lines: 0,
        },
    })
}

/// The time of a line from the log's `times` records (`(offset, ms)`, sorted): that of the last
/// record at or before `offset`.
pub fn time_of(times: &[(u64, u64)], offset: u64) -> Option<u64> {
    let i = times.partition_point(|(o, _)| *o <= offset);
    (i > 0).then(|| times[i - 1].1)
}

/// `HH:MM:SS` (UTC) of unix milliseconds.
pub fn clock(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// A human duration: `850ms`, `12.3s`, `4m 05s`, `1h 02m`.
pub fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A rendered line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub number: u64,
    pub offset: u64,
    /// Unix ms of the line's first byte, when recorded.
    pub time_ms: Option<u64>,
    /// The line as HTML (escaped, ANSI as spans).
    pub html: String,
    /// The line is the truncation marker of a capped log.
    pub marker: bool,
    /// The line was longer than [`MAX_LINE`] and is shown cut.
    pub cut: bool,
}

/// A step section as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SectionView {
    pub step: usize,
    pub name: String,
    pub start: u64,
    pub end: Option<u64>,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i32>,
    /// `running`, `success` or `failure`.
    pub status: String,
}

impl SectionView {
    pub fn of(s: &Section) -> SectionView {
        let status = match (s.end, s.exit_code) {
            (None, _) => "running",
            (Some(_), Some(0)) => "success",
            _ => "failure",
        };
        SectionView {
            step: s.step,
            name: s.name.clone(),
            start: s.start,
            end: s.end,
            duration_ms: s.duration_ms,
            exit_code: s.exit_code,
            status: status.to_string(),
        }
    }

    pub fn duration(&self) -> String {
        self.duration_ms.map(duration_text).unwrap_or_default()
    }
}

/// Lines in one section (or outside any, `section: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Block {
    pub section: Option<SectionView>,
    pub lines: Vec<Line>,
}

/// The section holding the byte at `offset`: the last one started at or before it and not ended
/// before it.
fn section_at(sections: &[Section], offset: u64) -> Option<usize> {
    sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.start <= offset && s.end.is_none_or(|e| offset < e))
        .map(|(i, _)| i)
        .next_back()
}

/// Whether a line is the truncation marker of a capped log.
pub fn is_marker(bytes: &[u8]) -> bool {
    bytes.starts_with(b"--- ouro: log truncated:")
}

/// Renders bytes `start..end` of the log (`start` at a line start, its line `first_line`) into
/// blocks by section. Sections with no lines in the range that start in it get an empty block.
pub fn render(
    r: &Reader,
    start: u64,
    end: u64,
    first_line: u64,
    times: &[(u64, u64)],
    sections: &[Section],
) -> Result<Vec<Block>, LogError> {
    let mut ansi = Ansi::new();
    let mut blocks: Vec<(Option<usize>, Vec<Line>)> = Vec::new();
    {
        let mut sc = LineScanner::new(start, first_line, |l: RawLine<'_>| {
            let spans = ansi.line(l.bytes);
            let line = Line {
                number: l.number,
                offset: l.offset,
                time_ms: time_of(times, l.offset),
                html: spans_html(&spans),
                marker: is_marker(l.bytes),
                cut: l.cut,
            };
            let sec = section_at(sections, l.offset);
            match blocks.last_mut() {
                Some((s, lines)) if *s == sec => lines.push(line),
                _ => blocks.push((sec, vec![line])),
            }
        });
        r.copy_range(start, end, &mut sc)?;
        sc.finish();
    }
    // Steps that printed nothing still show.
    for (i, s) in sections.iter().enumerate() {
        if s.start < start || s.start > end || blocks.iter().any(|(b, _)| *b == Some(i)) {
            continue;
        }
        // Order: by start offset; at the same offset a section before loose lines, sections by
        // their order.
        let key = |b: &Option<usize>, lines: &[Line]| match b {
            Some(b) => (sections[*b].start, 0, *b),
            None => (lines.first().map_or(u64::MAX, |l| l.offset), 1, 0),
        };
        let mine = (s.start, 0, i);
        let at = blocks
            .iter()
            .position(|(b, lines)| key(b, lines) > mine)
            .unwrap_or(blocks.len());
        blocks.insert(at, (Some(i), Vec::new()));
    }
    Ok(blocks
        .into_iter()
        .map(|(s, lines)| Block {
            section: s.map(|i| SectionView::of(&sections[i])),
            lines,
        })
        .collect())
}

/// A line matching a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    pub number: u64,
    pub offset: u64,
    pub time_ms: Option<u64>,
    /// The line's text (escapes removed), HTML-escaped, each match in `<mark>`.
    pub html: String,
}

/// The result of [`search`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchResult {
    pub matches: Vec<Match>,
    /// More lines matched than `limit`.
    pub more: bool,
}

/// Finds lines whose text (without escapes) contains `query`, ignoring case; at most `limit`.
pub fn search(
    r: &Reader,
    query: &str,
    limit: usize,
    times: &[(u64, u64)],
) -> Result<SearchResult, LogError> {
    let needle = query.to_lowercase();
    let mut out = SearchResult {
        matches: Vec::new(),
        more: false,
    };
    if needle.is_empty() {
        return Ok(out);
    }
    let mut ansi = Ansi::new();
    {
        let mut sc = LineScanner::new(0, 1, |l: RawLine<'_>| {
            if out.more {
                return;
            }
            let text = spans_text(&ansi.line(l.bytes));
            if let Some(html) = highlight(&text, &needle) {
                if out.matches.len() >= limit {
                    out.more = true;
                    return;
                }
                out.matches.push(Match {
                    number: l.number,
                    offset: l.offset,
                    time_ms: time_of(times, l.offset),
                    html,
                });
            }
        });
        r.copy_range(0, r.len(), &mut sc)?;
        sc.finish();
    }
    Ok(out)
}

/// `text` HTML-escaped with every case-insensitive occurrence of `needle` (lowercase) in
/// `<mark>`, or `None` when it does not occur.
pub fn highlight(text: &str, needle: &str) -> Option<String> {
    if needle.is_empty() {
        return None;
    }
    // Match on a per-char lowercase copy, keeping a map back to byte positions of `text`.
    let mut lower = String::with_capacity(text.len());
    let mut map: Vec<usize> = Vec::with_capacity(text.len() + 1);
    for (i, ch) in text.char_indices() {
        for lc in ch.to_lowercase() {
            let before = lower.len();
            lower.push(lc);
            for _ in before..lower.len() {
                map.push(i);
            }
        }
    }
    map.push(text.len());
    let mut out = String::new();
    let mut last = 0; // byte position in `text`
    let mut found = false;
    let mut from = 0;
    while let Some(p) = lower[from..].find(needle) {
        let a = map[from + p];
        let end_l = from + p + needle.len();
        let b = if end_l < map.len() {
            map[end_l]
        } else {
            text.len()
        };
        // A match ending inside a char's lowercase expansion covers that char.
        let b = if b <= a {
            text[a..]
                .chars()
                .next()
                .map_or(text.len(), |c| a + c.len_utf8())
        } else {
            b
        };
        if a >= last {
            out.push_str(&escape_html(&text[last..a]));
            out.push_str("<mark>");
            out.push_str(&escape_html(&text[a..b]));
            out.push_str("</mark>");
            last = b;
            found = true;
        }
        from = end_l.max(from + 1);
        while from < lower.len() && !lower.is_char_boundary(from) {
            from += 1;
        }
        if from >= lower.len() {
            break;
        }
    }
    if !found {
        return None;
    }
    out.push_str(&escape_html(&text[last..]));
    Some(out)
}

/// Wakes live log streams when a job's log grows. The writer side (the runner protocol, the
/// in-process runner) calls [`LogHub::notify`] after appending; streams [`LogHub::subscribe`] and
/// still poll, so a missed or absent notification only delays them.
#[derive(Debug, Clone)]
pub struct LogHub {
    tx: tokio::sync::broadcast::Sender<i64>,
}

impl Default for LogHub {
    fn default() -> Self {
        LogHub::new()
    }
}

impl LogHub {
    pub fn new() -> Self {
        let (tx, _) = tokio::sync::broadcast::channel(1024);
        LogHub { tx }
    }

    /// The log of job `job_id` changed (bytes, a section, finished).
    pub fn notify(&self, job_id: i64) {
        let _ = self.tx.send(job_id);
    }

    /// A receiver of the ids of jobs whose logs changed (a lagging receiver should treat the
    /// lag as a wake-up).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_lengths() {
        assert_eq!(escape_len(b"\x1b[31mX"), (5, Some(&b"31"[..])));
        assert_eq!(escape_len(b"\x1b[2KX").0, 4);
        assert_eq!(escape_len(b"\x1b]0;title\x07X").0, 10);
        assert_eq!(escape_len(b"\x1b(BX").0, 3);
        assert_eq!(escape_len(b"\x1b").0, 1);
    }

    #[test]
    fn safe_cut_keeps_escapes_and_chars_whole() {
        assert_eq!(safe_cut(b"abc\x1b[3", true), 3);
        assert_eq!(safe_cut(b"abc\x1b[31m", true), 8);
        assert_eq!(safe_cut("ab\u{e9}".as_bytes(), true), 4);
        assert_eq!(safe_cut(&"ab\u{e9}".as_bytes()[..3], true), 2);
        assert_eq!(safe_cut(&"ab\u{e9}".as_bytes()[..3], false), 3);
    }
}
