//! The job log store: idempotent appends by offset, gaps and mismatches refused, the cap with
//! its marker, byte-exact retrieval (whole and ranges), sections and line times, reopening.

use ouro_build::logs::{LogConfig, LogError, LogReader, LogWriter, truncation_marker};
use proptest::prelude::*;

fn cfg(cap: u64, seg: usize) -> LogConfig {
    LogConfig {
        cap_bytes: cap,
        segment_bytes: seg,
        zstd_level: 1,
    }
}

#[test]
fn repeated_chunk_is_ignored_gap_and_mismatch_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), cfg(1 << 20, 8)).unwrap();
    w.append(0, b"hello ", 1).unwrap();
    w.append(6, b"world\n", 2).unwrap();
    // A retry of either chunk, and of an overlapping part, is fine.
    w.append(0, b"hello ", 3).unwrap();
    w.append(6, b"world\n", 3).unwrap();
    w.append(3, b"lo wo", 3).unwrap();
    // A chunk that overlaps the end stores only the new part.
    w.append(10, b"d\nmore\n", 4).unwrap();
    assert_eq!(w.received(), 17);
    let gap = w.append(20, b"x", 5).unwrap_err();
    assert!(
        matches!(
            gap,
            LogError::Gap {
                offset: 20,
                have: 17
            }
        ),
        "{gap:?}"
    );
    assert_eq!(gap.code(), "build.log_gap");
    let mm = w.append(0, b"HELLO", 5).unwrap_err();
    assert!(matches!(mm, LogError::Mismatch { offset: 0 }), "{mm:?}");
    assert_eq!(mm.code(), "build.log_mismatch");
    // Nothing of the refused chunks was stored.
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.read_all().unwrap(), b"hello world\nmore\n");
    w.finish().unwrap();
    assert!(matches!(w.append(17, b"x", 6), Err(LogError::Finished)));
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.read_all().unwrap(), b"hello world\nmore\n");
    let meta = r.meta().unwrap().unwrap();
    assert_eq!(
        (meta.received, meta.stored, meta.truncated),
        (17, 17, false)
    );
}

#[test]
fn cap_truncates_with_marker_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), cfg(100, 32)).unwrap();
    let line = b"0123456789abcdefghi\n"; // 20 bytes
    let mut off = 0;
    for _ in 0..50 {
        w.append(off, line, 7).unwrap();
        off += line.len() as u64;
    }
    assert!(w.truncated());
    assert_eq!(w.received(), 1000);
    // A retry of a chunk past the cap is still accepted.
    w.append(500, line, 8).unwrap();
    let meta = w.finish().unwrap();
    let mut expected: Vec<u8> = line.repeat(5);
    expected.extend_from_slice(&truncation_marker(100));
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.read_all().unwrap(), expected);
    assert_eq!(meta.stored, expected.len() as u64);
    assert!(meta.truncated);
    assert!(
        String::from_utf8_lossy(&truncation_marker(100)).contains("log truncated"),
        "the marker says what happened"
    );
}

#[test]
fn ranges_sections_and_line_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), cfg(1 << 20, 10)).unwrap();
    w.begin_step(0, "build", 1000).unwrap();
    w.append(0, b"line one\nline ", 1000).unwrap();
    w.append(14, b"two\nline three\n", 1500).unwrap();
    w.end_step(0, Some(0), 1700).unwrap();
    w.begin_step(1, "test", 1800).unwrap();
    w.append(29, b"fail\n", 1900).unwrap();
    w.end_step(1, Some(3), 2500).unwrap();
    let text = b"line one\nline two\nline three\nfail\n";
    // Live reader (segments sealed and the open tail).
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.len(), text.len() as u64);
    for (a, b) in [(0, 0), (0, 5), (3, 12), (9, 29), (28, 34), (0, 34)] {
        assert_eq!(
            r.read_range(a, b).unwrap(),
            &text[a as usize..b as usize],
            "{a}..{b}"
        );
    }
    assert!(matches!(r.read_range(10, 99), Err(LogError::Range { .. })));
    w.finish().unwrap();
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.read_range(9, 18).unwrap(), b"line two\n");
    let s = r.sections().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(
        (s[0].name.as_str(), s[0].start, s[0].end),
        ("build", 0, Some(29))
    );
    assert_eq!((s[0].duration_ms, s[0].exit_code), (Some(700), Some(0)));
    assert_eq!(
        (s[1].name.as_str(), s[1].start, s[1].end),
        ("test", 29, Some(34))
    );
    assert_eq!((s[1].duration_ms, s[1].exit_code), (Some(700), Some(3)));
    // "line one" at 1000; "line two" started in the 1000 chunk; "line three" at 1500.
    assert_eq!(r.time_at(0).unwrap(), Some(1000));
    assert_eq!(r.time_at(9).unwrap(), Some(1000));
    assert_eq!(r.time_at(18).unwrap(), Some(1500));
    assert_eq!(r.time_at(29).unwrap(), Some(1900));
    assert_eq!(r.times().unwrap(), vec![(0, 1000), (18, 1500), (29, 1900)]);
}

#[test]
fn reopen_continues_where_the_log_ended() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = LogWriter::create(dir.path(), cfg(1 << 20, 16)).unwrap();
        w.append(0, b"0123456789012345678901234", 1).unwrap();
        // Dropped without finish: a server restart.
    }
    let mut w = LogWriter::reopen(dir.path(), cfg(1 << 20, 16)).unwrap();
    assert_eq!(w.received(), 25);
    w.append(20, b"01234", 2).unwrap(); // the runner resends the last chunk
    w.append(25, b"end\n", 2).unwrap();
    w.finish().unwrap();
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.read_all().unwrap(), b"0123456789012345678901234end\n");
    assert!(matches!(
        LogWriter::reopen(dir.path(), cfg(1 << 20, 16)),
        Err(LogError::Finished)
    ));
}

#[test]
fn stored_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), LogConfig::default()).unwrap();
    let line = b"Compiling ouro-build v0.1.0 (crates/ouro-build)\n";
    let mut off = 0;
    for _ in 0..40_000 {
        w.append(off, line, 1).unwrap();
        off += line.len() as u64;
    }
    w.finish().unwrap();
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk < off / 20, "{on_disk} bytes on disk for {off}");
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.len(), off);
    assert_eq!(r.read_range(off - line.len() as u64, off).unwrap(), line);
}

proptest! {
    /// Whatever the chunking, retries and segment size, the stored log is byte-exact.
    #[test]
    fn roundtrip_is_byte_exact(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(0usize..3000, 0..20),
        seg in 1usize..700,
        retry in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(dir.path(), cfg(1 << 20, seg)).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort();
        cuts.push(data.len());
        let mut last = 0;
        for c in cuts {
            w.append(last as u64, &data[last..c], 1).unwrap();
            if retry {
                w.append(last as u64, &data[last..c], 2).unwrap();
            }
            last = c;
        }
        w.finish().unwrap();
        let r = LogReader::open(dir.path()).unwrap();
        prop_assert_eq!(r.read_all().unwrap(), data.clone());
        let (a, b) = (data.len() / 3, data.len() * 2 / 3);
        prop_assert_eq!(r.read_range(a as u64, b as u64).unwrap(), data[a..b].to_vec());
    }
}

#[test]
fn a_tail_left_behind_by_a_crash_after_sealing_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = LogWriter::create(dir.path(), cfg(1 << 20, 10)).unwrap();
        w.append(0, b"0123456789abcde", 1).unwrap();
    }
    // The crash: segment 0 was sealed but its tail not yet removed.
    std::fs::write(dir.path().join(format!("tail-{:016x}", 0)), b"0123456789").unwrap();
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.read_all().unwrap(), b"0123456789abcde");
    let mut w = LogWriter::reopen(dir.path(), cfg(1 << 20, 10)).unwrap();
    assert!(!dir.path().join(format!("tail-{:016x}", 0)).exists());
    w.append(15, b"fgh", 2).unwrap();
    w.finish().unwrap();
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.read_all().unwrap(), b"0123456789abcdefgh");
}

#[test]
fn a_reader_follows_a_live_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), cfg(1 << 20, 8)).unwrap();
    let mut seen = Vec::new();
    let mut off = 0u64;
    for i in 0..50u64 {
        let chunk = format!("line {i}\n");
        w.append(off, chunk.as_bytes(), i).unwrap();
        off += chunk.len() as u64;
        // A follower (the live view) reads what is new since its last read.
        let r = LogReader::open(dir.path()).unwrap();
        let have = seen.len() as u64;
        seen.extend(r.read_range(have, r.len()).unwrap());
    }
    let expected: String = (0..50).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8(seen).unwrap(), expected);
}

proptest! {
    /// Chunk by chunk from any offset, a log comes back byte-exact, each chunk within one
    /// segment, while the log is live (a tail not yet sealed) and once it is finished.
    #[test]
    fn chunks_from_any_offset_are_the_stored_bytes_one_segment_at_a_time(
        data in proptest::collection::vec(any::<u8>(), 1..3000),
        seg in 1usize..700,
        from in 0usize..3000,
        finish in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(dir.path(), cfg(1 << 20, seg)).unwrap();
        w.append(0, &data, 1).unwrap();
        if finish {
            w.finish().unwrap();
        }
        let r = LogReader::open(dir.path()).unwrap();
        let len = r.len();
        prop_assert_eq!(len, data.len() as u64);
        let end = len - (len / 5);
        let mut pos = (from as u64).min(end);
        let mut got = Vec::new();
        while pos < end {
            let c = r.chunk_from(pos, end).unwrap();
            prop_assert!(!c.is_empty());
            prop_assert!(c.len() <= seg, "a chunk of {} bytes, segments of {seg}", c.len());
            pos += c.len() as u64;
            got.extend_from_slice(&c);
        }
        let start = (from as u64).min(end) as usize;
        prop_assert_eq!(got, data[start..end as usize].to_vec());
        prop_assert!(r.chunk_from(end, end).unwrap().is_empty());
        prop_assert!(r.chunk_from(len + 1, len + 1).is_err());
    }
}
