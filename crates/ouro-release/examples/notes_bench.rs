//! Release notes for many commits: builds a repository with N commits since a tag (default 10 000,
//! with `git fast-import`), then times reading them (`changes::since`), the next version and the
//! notes (`notes::render`, default layout). `bench/release-notes.sh` runs it.
//!
//! Usage: `cargo run -p ouro-release --example notes_bench [N]`

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use ouro_release::notes::{self, ItemRef, NotesInput};
use ouro_release::{changes, version};

const KINDS: &[&str] = &[
    "feat", "fix", "perf", "chore", "docs", "refactor", "test", "ci",
];

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N is a number"))
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bench.git");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git(&["init", "-q", "--bare", dir.to_str().unwrap()]);

    // One base commit tagged v1.0.0, then N commits of mixed types, scopes, item keys and a
    // few non-conventional and breaking ones.
    let mut stream = Vec::new();
    let mut mark = 0;
    let mut commit = |stream: &mut Vec<u8>, msg: &str, i: usize| {
        mark += 1;
        let t = 1_700_000_000 + i;
        let author = format!("Dev {}", i % 37);
        write!(
            stream,
            "commit refs/heads/main\nmark :{mark}\nauthor {author} <dev{}@example.com> {t} +0000\ncommitter CI <ci@example.com> {t} +0000\ndata {}\n{msg}\n",
            i % 37,
            msg.len()
        )
        .unwrap();
        if mark > 1 {
            writeln!(stream, "from :{}", mark - 1).unwrap();
        }
        stream.push(b'\n');
    };
    commit(&mut stream, "chore: initial", 0);
    writeln!(stream, "reset refs/tags/v1.0.0\nfrom :1\n").unwrap();
    for i in 1..=n {
        let kind = KINDS[i % KINDS.len()];
        let msg = match i % 97 {
            0 => format!("Merge-free tidy-up number {i}\n\nno type at all"),
            1 => format!(
                "{kind}(core)!: change number {i}\n\nBREAKING CHANGE: callers must adapt ({i})"
            ),
            _ => format!(
                "{kind}(area{}): change number {i} for DEMO-{}\n\nA body line for change {i}.",
                i % 13,
                i % 500 + 1
            ),
        };
        commit(&mut stream, &msg, i);
    }
    let t = Instant::now();
    let mut child = Command::new("git")
        .args(["--git-dir", dir.to_str().unwrap(), "fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(child.wait().unwrap().success());
    let head = git(&["--git-dir", dir.to_str().unwrap(), "rev-parse", "main"]);
    eprintln!("built a repository with {n} commits in {:?}", t.elapsed());

    let t0 = Instant::now();
    let commits = changes::since(&dir, &head, Some("v1.0.0")).unwrap();
    let read = t0.elapsed();
    assert_eq!(commits.len(), n);
    let conv: Vec<_> = commits.iter().map(|c| c.conventional.clone()).collect();
    let prev = semver::Version::new(1, 0, 0);
    let next = version::next(Some(&prev), &conv, &version::Rules::default(), None, &[]).unwrap();
    let keys = notes::collect_refs(&commits);
    let items = keys
        .iter()
        .map(|k| ItemRef {
            key: k.clone(),
            title: format!("Title of {k}"),
        })
        .collect();
    let t1 = Instant::now();
    let mut input = NotesInput::new(next.version.clone(), Some(prev), "2026-11-27", commits);
    input.items = items;
    let text = notes::render(&input, None).unwrap();
    let render = t1.elapsed();
    let total = t0.elapsed();
    println!(
        "commits={n} version={} items={} notes_bytes={} read_ms={} render_ms={} total_ms={}",
        next.version,
        keys.len(),
        text.len(),
        read.as_millis(),
        render.as_millis(),
        total.as_millis()
    );
}
