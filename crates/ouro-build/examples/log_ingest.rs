//! Log ingest micro-benchmark (issue 5, W4): 100 MB of log lines through the secret masker into
//! the compressed log store, then byte-exact retrieval checked.
//!
//! Run: `cargo run --release -p ouro-build --example log_ingest [MB] [CHUNK_KB] [TEXT] [SECRETS]`
//! (numbers go to docs/benchmarks.md; no timing in tests). TEXT is `build` (the default: lines
//! like a compiler's) or `w4` (the line `bench/pipelines.py` W4 prints, again and again: every
//! letter and digit on each line, so a prefilter looking for a secret's rare bytes finds
//! candidates everywhere). SECRETS is `token` (a job's API token alone, as every job has) or a
//! number N (the token, three typical secrets and N more; the default is 0).

use std::time::Instant;

use ouro_build::logs::{LogConfig, LogReader, LogWriter};
use ouro_build::mask::{Masker, SecretSet};
use sha2::{Digest, Sha256};

fn main() {
    let mut args = std::env::args().skip(1);
    let mb: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let chunk_kb: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let text = args.next().unwrap_or_else(|| "build".into());
    let secrets_arg = args.next().unwrap_or_else(|| "0".into());
    let total = mb * 1_000_000;

    let mut data = Vec::with_capacity(total + 200);
    let mut i = 0u64;
    const W4_LINE: &[u8] = b"ouro log line 0123456789 abcdefghijklmnopqrstuvwxyz \
        ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ....\n";
    while text == "w4" && data.len() < total {
        data.extend_from_slice(W4_LINE);
    }
    // Build-log-like lines with a counter, so compression has real work.
    while data.len() < total {
        data.extend_from_slice(
            format!(
                "{i:>9} Compiling crate-{} v0.{}.{} (/build/ws/crates/x) target=release\n",
                i % 97,
                i % 13,
                i % 7
            )
            .as_bytes(),
        );
        i += 1;
    }
    data.truncate(total);

    // Every job has one: its API token (`runner::job_api_token`).
    let mut values: Vec<String> =
        vec!["ourojob_12_6f1d3c0b9e7a4f25a8c1d6e3b2f09a7c4e5d8b1a3f6c9e2d7b0a5c8f1e4d7a2b".into()];
    if secrets_arg != "token" {
        let extra: usize = secrets_arg.parse().expect("SECRETS: `token` or a number");
        values.extend(
            [
                "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                "s3cr3t-password-value",
                "AKIAIOSFODNN7EXAMPLE",
            ]
            .map(String::from),
        );
        values.extend((0..extra).map(|i| format!("extra-secret-{i:04}-value")));
    }
    let secrets = SecretSet::new(&values).expect("secrets");
    let search = if secrets.is_packed() {
        "SIMD"
    } else {
        "automaton"
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        cap_bytes: u64::MAX,
        ..LogConfig::default()
    };

    // The parts alone: the masker, and the store without masking.
    let t = Instant::now();
    let mut m = Masker::new(secrets.clone());
    let mut out = Vec::with_capacity(chunk_kb * 1024 + 64);
    let mut n_out = 0;
    for chunk in data.chunks(chunk_kb * 1024) {
        out.clear();
        m.push(chunk, &mut out);
        n_out += out.len();
    }
    let mask_only = t.elapsed();
    std::hint::black_box(n_out);
    let dir0 = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let mut w = LogWriter::create(dir0.path(), cfg.clone()).expect("create");
    for chunk in data.chunks(chunk_kb * 1024) {
        let off = w.received();
        w.append(off, chunk, 0).expect("append");
    }
    w.finish().expect("finish");
    let store_only = t.elapsed();
    drop(dir0);

    let t = Instant::now();
    let mut w = LogWriter::create(dir.path(), cfg).expect("create");
    let mut m = Masker::new(secrets);
    let mut out = Vec::with_capacity(chunk_kb * 1024 + 64);
    let mut hasher = Sha256::new();
    for (n, chunk) in data.chunks(chunk_kb * 1024).enumerate() {
        out.clear();
        m.push(chunk, &mut out);
        hasher.update(&out);
        let off = w.received();
        w.append(off, &out, n as u64).expect("append");
    }
    out.clear();
    m.finish(&mut out);
    hasher.update(&out);
    let off = w.received();
    w.append(off, &out, 0).expect("append");
    let meta = w.finish().expect("finish");
    let ingest = t.elapsed();

    let t = Instant::now();
    let r = LogReader::open(dir.path()).expect("open");
    let mut check = Sha256::new();
    let mut sink = HashWriter(&mut check);
    r.copy_range(0, r.len(), &mut sink).expect("read");
    let read = t.elapsed();
    assert_eq!(check.finalize(), hasher.finalize(), "byte-exact retrieval");
    assert_eq!(
        meta.stored as usize,
        data.len(),
        "no secret in the data: same length"
    );

    let on_disk: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    let mbs = |d: std::time::Duration| total as f64 / 1e6 / d.as_secs_f64();
    println!(
        "parts: masker alone {:.0} MB/s ({} secrets, {search} search); store alone {:.0} MB/s",
        mbs(mask_only),
        values.len(),
        mbs(store_only)
    );
    println!(
        "ingest (mask + store): {mb} MB in {:.3} s = {:.0} MB/s; read back: {:.3} s = {:.0} MB/s; on disk {:.1} MB ({:.1}x); chunk {chunk_kb} KiB; text {text}",
        ingest.as_secs_f64(),
        mbs(ingest),
        read.as_secs_f64(),
        mbs(read),
        on_disk as f64 / 1e6,
        total as f64 / on_disk as f64,
    );
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
