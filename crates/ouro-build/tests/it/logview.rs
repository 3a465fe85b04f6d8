//! Viewing logs: ANSI to HTML (escaping, colours as classes, unknown and dangling escapes
//! harmless, carriage returns), line scanning with offsets, the tail window, rendering by step
//! section with times and the truncation marker, search with highlights.

use ouro_build::logs::{LogConfig, LogReader, LogWriter};
use ouro_build::logview::{
    self, Ansi, LineScanner, RawLine, escape_html, highlight, render, search, spans_html,
    tail_window,
};

fn html(line: &[u8]) -> String {
    spans_html(&Ansi::new().line(line))
}

#[test]
fn script_tags_and_quotes_are_escaped() {
    assert_eq!(
        html(b"<script>alert('x')</script> & \"y\""),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
    );
    // Inside a coloured span too.
    assert_eq!(
        html(b"\x1b[31m<b>\x1b[0m"),
        "<span class=\"ansi-fg-1\">&lt;b&gt;</span>"
    );
}

#[test]
fn colours_and_bold_become_classes_and_reset_ends_them() {
    assert_eq!(
        html(b"a\x1b[1;32mok\x1b[0m b"),
        "a<span class=\"ansi-bold ansi-fg-2\">ok</span> b"
    );
    assert_eq!(
        html(b"\x1b[91;44mx\x1b[39my\x1b[49mz"),
        "<span class=\"ansi-fg-9 ansi-bg-4\">x</span><span class=\"ansi-bg-4\">y</span>z"
    );
    // 256 colours and true colour (to the nearest palette entry).
    assert_eq!(
        html(b"\x1b[38;5;208mo\x1b[48;5;17mp"),
        "<span class=\"ansi-fg-208\">o</span><span class=\"ansi-fg-208 ansi-bg-17\">p</span>"
    );
    assert_eq!(
        html(b"\x1b[38;2;255;0;0mr"),
        "<span class=\"ansi-fg-196\">r</span>"
    );
    // An empty SGR is a reset; a style carries over to the next line.
    let mut a = Ansi::new();
    assert_eq!(
        spans_html(&a.line(b"\x1b[33myellow")),
        "<span class=\"ansi-fg-3\">yellow</span>"
    );
    assert_eq!(
        spans_html(&a.line(b"still\x1b[mplain")),
        "<span class=\"ansi-fg-3\">still</span>plain"
    );
}

#[test]
fn unknown_and_dangling_escapes_are_dropped() {
    // Cursor movement, erase line, an OSC title and hyperlink, a charset switch.
    assert_eq!(html(b"\x1b[2K\x1b[1Ga\x1b[?25lb"), "ab");
    assert_eq!(
        html(b"\x1b]0;title\x07c\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"),
        "clink"
    );
    assert_eq!(html(b"\x1b(Bd"), "d");
    // Dangling at the end, or a CSI cut short.
    assert_eq!(html(b"e\x1b"), "e");
    assert_eq!(html(b"f\x1b[31"), "f");
    assert_eq!(html(b"g\x1b]unterminated <script>"), "g");
    // Other control characters go; tabs stay; invalid UTF-8 is replaced.
    assert_eq!(html(b"h\x07\x08i\tj"), "hi\tj");
    assert_eq!(html(b"k\xffl"), "k\u{fffd}l");
    // Malformed SGR parameters do not panic.
    assert_eq!(html(b"\x1b[38;5mm\x1b[38;2;1mn\x1b[999mo"), "mno");
}

#[test]
fn a_carriage_return_keeps_what_was_printed_after_it() {
    assert_eq!(html(b"10%\r50%\r100% done\r"), "100% done");
    assert_eq!(
        html(b"\x1b[32m10%\r100%"),
        "<span class=\"ansi-fg-2\">100%</span>"
    );
}

#[test]
fn the_palette_stylesheet_has_every_colour() {
    let css = logview::palette_css();
    assert!(css.contains(".ansi-fg-0{color:#000000}"));
    assert!(css.contains(".ansi-bg-255{"));
    assert!(css.contains(".ansi-fg-196{color:#ff0000}"));
    assert_eq!(escape_html("<&>"), "&lt;&amp;&gt;");
}

#[test]
fn the_scanner_numbers_lines_with_offsets_across_writes() {
    use std::io::Write;
    let mut got = Vec::new();
    {
        let mut sc = LineScanner::new(0, 1, |l: RawLine<'_>| {
            got.push((
                l.number,
                l.offset,
                String::from_utf8_lossy(l.bytes).into_owned(),
                l.complete,
            ))
        });
        sc.write_all(b"one\ntw").unwrap();
        sc.write_all(b"o\n\nfour").unwrap();
        sc.finish();
    }
    assert_eq!(
        got,
        vec![
            (1, 0, "one".into(), true),
            (2, 4, "two".into(), true),
            (3, 8, "".into(), true),
            (4, 9, "four".into(), false),
        ]
    );
}

fn cfg(cap: u64) -> LogConfig {
    LogConfig {
        cap_bytes: cap,
        segment_bytes: 16,
        zstd_level: 1,
    }
}

#[test]
fn render_groups_lines_by_step_with_times_and_marks_the_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), cfg(60)).unwrap();
    w.append(0, b"setup\n", 1_000).unwrap();
    w.begin_step(0, "build", 2_000).unwrap();
    w.append(6, b"\x1b[1mcompiling\x1b[0m\n", 2_500).unwrap();
    w.end_step(0, Some(0), 3_000).unwrap();
    w.begin_step(1, "quiet", 3_000).unwrap();
    w.end_step(1, Some(0), 3_200).unwrap();
    w.begin_step(2, "test", 4_000).unwrap();
    let off = w.received();
    w.append(off, b"<fail>\nmore than the cap allows, much more\n", 4_500)
        .unwrap();
    w.end_step(2, Some(1), 5_000).unwrap();
    w.finish().unwrap();

    let r = LogReader::open(dir.path()).unwrap();
    let blocks = render(
        &r,
        0,
        r.len(),
        1,
        &r.times().unwrap(),
        &r.sections().unwrap(),
    )
    .unwrap();
    let names: Vec<Option<String>> = blocks
        .iter()
        .map(|b| b.section.as_ref().map(|s| s.name.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            None,
            Some("build".into()),
            Some("quiet".into()),
            Some("test".into())
        ]
    );
    assert_eq!(blocks[0].lines[0].html, "setup");
    assert_eq!(blocks[0].lines[0].time_ms, Some(1_000));
    let build = &blocks[1];
    assert_eq!(build.lines[0].number, 2);
    assert_eq!(build.lines[0].offset, 6);
    assert_eq!(
        build.lines[0].html,
        "<span class=\"ansi-bold\">compiling</span>"
    );
    assert_eq!(build.lines[0].time_ms, Some(2_500));
    let sec = build.section.as_ref().unwrap();
    assert_eq!(sec.status, "success");
    assert_eq!(sec.duration_ms, Some(1_000));
    assert!(blocks[2].lines.is_empty());
    let test = &blocks[3];
    assert_eq!(test.section.as_ref().unwrap().status, "failure");
    assert_eq!(test.lines[0].html, "&lt;fail&gt;");
    assert!(
        test.lines.iter().any(|l| l.marker),
        "the truncation marker is a marked line: {test:?}"
    );
    assert!(!test.lines[0].marker);
}

#[test]
fn the_tail_window_starts_at_a_line_and_respects_lines_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), cfg(1 << 20)).unwrap();
    let mut text = String::new();
    for i in 1..=100 {
        text.push_str(&format!("line {i}\n"));
    }
    text.push_str("partial");
    w.append(0, text.as_bytes(), 1).unwrap();
    let r = LogReader::open(dir.path()).unwrap();
    let win = tail_window(&r, 10, 1 << 20).unwrap();
    assert_eq!(win.total_lines, 101);
    assert_eq!(win.first_line, 92);
    let at = text.find("line 92\n").unwrap() as u64;
    assert_eq!(win.start, at);
    assert!(win.partial());
    // A byte budget moves the start later, still to a line start.
    let win = tail_window(&r, 10, 20).unwrap();
    assert_eq!(win.first_line, 100);
    assert_eq!(win.start, text.find("line 100\n").unwrap() as u64);
    // Everything fits.
    let win = tail_window(&r, 1000, 1 << 20).unwrap();
    assert_eq!((win.first_line, win.start), (1, 0));
    assert!(!win.partial());
}

#[test]
fn search_finds_lines_ignoring_case_and_escapes_and_highlights() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), cfg(1 << 20)).unwrap();
    w.append(
        0,
        b"compiling\n\x1b[31mERROR\x1b[0m: <bad> error\nok\nlast error",
        7,
    )
    .unwrap();
    let r = LogReader::open(dir.path()).unwrap();
    let res = search(&r, "Error", 10, &r.times().unwrap()).unwrap();
    assert!(!res.more);
    let got: Vec<(u64, &str)> = res
        .matches
        .iter()
        .map(|m| (m.number, m.html.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "<mark>ERROR</mark>: &lt;bad&gt; <mark>error</mark>"),
            (4, "last <mark>error</mark>")
        ]
    );
    assert_eq!(res.matches[0].offset, 10);
    assert_eq!(res.matches[0].time_ms, Some(7));
    // The escape's own letters are not searched.
    assert!(search(&r, "31m", 10, &[]).unwrap().matches.is_empty());
    // The limit.
    let res = search(&r, "error", 1, &[]).unwrap();
    assert_eq!(res.matches.len(), 1);
    assert!(res.more);
    // Highlighting is HTML-safe and finds non-ASCII case pairs.
    assert_eq!(
        highlight("<ÉTÉ>", "été").as_deref(),
        Some("&lt;<mark>ÉTÉ</mark>&gt;")
    );
    assert_eq!(highlight("abc", "x"), None);
}
