//! A real git repository with a sequence of conventional commits, tagged between releases: the
//! commits since each tag, the versions they give and the notes (snapshots), custom and broken
//! templates.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ouro_core::ErrorCode;
use ouro_release::changes::{self, Commit};
use ouro_release::notes::{self, CrRef, ItemRef, NotesInput};
use ouro_release::version::{self, Rules};
use semver::Version;

/// A repository whose commits have fixed dates, so shas (and snapshots) are stable.
struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tick: u64,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("work");
        std::fs::create_dir(&dir).unwrap();
        let mut r = Repo {
            _tmp: tmp,
            dir,
            tick: 0,
        };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn git_dir(&self) -> PathBuf {
        self.dir.join(".git")
    }

    fn cmd(&mut self, author: &str) -> Command {
        self.tick += 1;
        let date = format!("{} +0000", 1_700_000_000 + self.tick * 60);
        let mut c = Command::new("git");
        c.current_dir(&self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", author)
            .env(
                "GIT_AUTHOR_EMAIL",
                format!("{}@example.com", author.to_lowercase()),
            )
            .env("GIT_COMMITTER_NAME", "Ouro Test")
            .env("GIT_COMMITTER_EMAIL", "ci@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        c
    }

    fn git(&mut self, args: &[&str]) -> String {
        self.git_as("Alice", args)
    }

    fn git_as(&mut self, author: &str, args: &[&str]) -> String {
        let out = self.cmd(author).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn commit(&mut self, author: &str, message: &str) {
        self.git_as(author, &["commit", "-q", "--allow-empty", "-m", message]);
    }

    /// A commit whose message is the given raw bytes, not UTF-8 and without an encoding
    /// header (`git commit` would re-encode it, so the object is written directly).
    fn commit_raw(&mut self, author: &str, message: &[u8]) {
        let tree = self.git(&["rev-parse", "HEAD^{tree}"]);
        let parent = self.head();
        self.tick += 1;
        let date = 1_700_000_000 + self.tick * 60;
        let mut object = format!(
            "tree {tree}\nparent {parent}\nauthor {author} <{}@example.com> {date} +0000\ncommitter Ouro Test <ci@example.com> {date} +0000\n\n",
            author.to_lowercase()
        )
        .into_bytes();
        object.extend_from_slice(message);
        let mut child = self
            .cmd(author)
            .args(["hash-object", "-t", "commit", "-w", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&object).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let sha = String::from_utf8(out.stdout).unwrap().trim().to_string();
        self.git(&["update-ref", "HEAD", &sha]);
        let stored = self
            .cmd(author)
            .args(["cat-file", "commit", &sha])
            .output()
            .unwrap();
        assert!(
            std::str::from_utf8(&stored.stdout).is_err(),
            "the stored message is not UTF-8"
        );
    }

    /// A commit recorded in Latin-1 with an `encoding` header: git re-encodes it when reading.
    fn commit_latin1(&mut self, author: &str, message: &[u8]) {
        let file = self.dir.join("..").join("msg.txt");
        std::fs::write(&file, message).unwrap();
        let file = file.to_str().unwrap().to_string();
        self.git_as(
            author,
            &[
                "-c",
                "i18n.commitEncoding=latin1",
                "commit",
                "-q",
                "--allow-empty",
                "-F",
                &file,
            ],
        );
    }

    fn head(&mut self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    fn tag(&mut self, version: &Version) {
        let name = format!("v{version}");
        self.git(&["tag", "-a", "-m", &name, &name]);
    }
}

/// Computes, checks and tags one release, returning its commits and version.
fn release(
    repo: &mut Repo,
    previous: Option<&Version>,
    rules: &Rules,
    pre: Option<&str>,
    existing: &[Version],
) -> Result<(Vec<Commit>, Version), String> {
    let head = repo.head();
    let tag = previous.map(|v| format!("v{v}"));
    let commits = changes::since(&repo.git_dir(), &head, tag.as_deref()).unwrap();
    let conv: Vec<_> = commits.iter().map(|c| c.conventional.clone()).collect();
    let next = version::next(previous, &conv, rules, pre, existing).map_err(|e| e.message)?;
    repo.tag(&next.version);
    Ok((commits, next.version))
}

fn items(keys: &[String]) -> Vec<ItemRef> {
    // The caller resolves keys to items; `UTF-8` is a well-formed key but no item.
    keys.iter()
        .filter(|k| k.starts_with("DEMO-"))
        .map(|k| ItemRef {
            key: k.clone(),
            title: format!("Item {k}"),
        })
        .collect()
}

fn notes_for(commits: Vec<Commit>, version: &Version, previous: Option<&Version>) -> String {
    let keys = notes::collect_refs(&commits);
    let mut input = NotesInput::new(version.clone(), previous.cloned(), "2026-11-27", commits);
    input.items = items(&keys);
    input.change_requests = vec![CrRef {
        number: 3,
        title: "Dark mode".into(),
    }];
    notes::render(&input, None).unwrap()
}

#[test]
fn a_real_history_gets_the_right_versions_and_notes() {
    let mut repo = Repo::new();
    let rules = Rules::default();
    let mut existing = Vec::new();

    // First release: whatever the commits, the initial version.
    repo.commit("Alice", "chore: initial commit");
    let (commits, v1) = release(&mut repo, None, &rules, None, &existing).unwrap();
    assert_eq!(v1.to_string(), "0.1.0");
    assert_eq!(commits.len(), 1);
    existing.push(v1.clone());

    // A fix: patch.
    repo.commit("Bob", "fix(parser): handle empty input\n\nFixes DEMO-1");
    let (commits, v2) = release(&mut repo, Some(&v1), &rules, None, &existing).unwrap();
    assert_eq!(v2.to_string(), "0.1.1");
    assert_eq!(commits.len(), 1, "only the commits since v0.1.0");
    assert_eq!(notes::collect_refs(&commits), ["DEMO-1"]);
    existing.push(v2.clone());

    // A feature on a branch, merged, and docs: minor.
    repo.git(&["checkout", "-q", "-b", "dark"]);
    repo.commit("Carol", "feat(ui): dark mode (DEMO-2)");
    repo.git(&["checkout", "-q", "main"]);
    repo.commit("Alice", "docs: usage");
    repo.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge branch 'dark'",
        "dark",
    ]);
    let (commits, v3) = release(&mut repo, Some(&v2), &rules, None, &existing).unwrap();
    assert_eq!(v3.to_string(), "0.2.0");
    assert_eq!(commits.len(), 3);
    assert_eq!(
        commits.last().unwrap().parents.len(),
        2,
        "the merge comes last"
    );
    existing.push(v3.clone());

    // A breaking change, a chore, a non-conventional commit and two non-UTF-8 messages:
    // in 0.x the breaking change bumps the minor version.
    repo.commit(
        "Bob",
        "feat(api)!: remove the v1 routes\n\nBREAKING CHANGE: clients must call /api/v2.\nRefs DEMO-3",
    );
    repo.commit("Alice", "chore(deps): bump serde");
    repo.commit("Dave", "Tidy up the README (see UTF-8 notes)");
    repo.commit_latin1("Eve", b"fix(i18n): caf\xe9 menu renders \xe9");
    repo.commit_raw("Zoë", b"perf: faster r\xe9sum\xe9 upload\n");
    let (commits, v4) = release(&mut repo, Some(&v3), &rules, None, &existing).unwrap();
    assert_eq!(v4.to_string(), "0.3.0");
    assert_eq!(commits.len(), 5, "none is dropped");
    assert_eq!(
        commits[3].message, "fix(i18n): café menu renders é",
        "Latin-1 with an encoding header is re-encoded"
    );
    assert_eq!(
        commits[4].conventional.description,
        "faster r\u{fffd}sum\u{fffd} upload"
    );
    assert_eq!(commits[4].author_name, "Zoë");
    insta::assert_snapshot!("notes_0_3_0", notes_for(commits, &v4, Some(&v3)));
    existing.push(v4.clone());

    // Going to 1.0.0 is explicit; then a breaking change is a major bump, first as candidates.
    repo.commit("Alice", "docs: stability promise");
    let one = version::explicit("1.0.0").unwrap();
    repo.tag(&one);
    existing.push(one.clone());
    repo.commit("Carol", "feat!: drop the XML export");
    let (_, rc1) = release(&mut repo, Some(&one), &rules, Some("rc"), &existing).unwrap();
    assert_eq!(rc1.to_string(), "2.0.0-rc.1");
    existing.push(rc1.clone());
    repo.commit("Bob", "fix: export of empty lists");
    let (commits, rc2) = release(&mut repo, Some(&rc1), &rules, Some("rc"), &existing).unwrap();
    assert_eq!(rc2.to_string(), "2.0.0-rc.2");
    assert_eq!(commits.len(), 1);
    existing.push(rc2.clone());
    // The final release counts from 1.0.0: all commits since then.
    let head = repo.head();
    let commits = changes::since(&repo.git_dir(), &head, Some("v1.0.0")).unwrap();
    assert_eq!(commits.len(), 2);
    let conv: Vec<_> = commits.iter().map(|c| c.conventional.clone()).collect();
    let two = version::next(Some(&one), &conv, &rules, None, &existing).unwrap();
    assert_eq!(two.version.to_string(), "2.0.0");
    assert_eq!(two.bump, version::Bump::Major);
    repo.tag(&two.version);
    insta::assert_snapshot!("notes_2_0_0", notes_for(commits, &two.version, Some(&one)));

    // Only chores and docs since: no release, with a message.
    repo.commit("Alice", "chore: tidy");
    repo.commit("Alice", "docs: typo");
    let err = release(&mut repo, Some(&two.version), &rules, None, &existing).unwrap_err();
    assert!(
        err.starts_with("nothing to release since 2.0.0: only 2 other commits"),
        "{err}"
    );
}

#[test]
fn unknown_commits_and_tags_are_refused() {
    let mut repo = Repo::new();
    repo.commit("Alice", "feat: a");
    let head = repo.head();
    let dir = repo.git_dir();
    let e = changes::since(&dir, "0123456789012345678901234567890123456789", None).unwrap_err();
    assert_eq!(e.code, ErrorCode::ReleaseCommitNotFound);
    let e = changes::since(&dir, "--output=/tmp/x", None).unwrap_err();
    assert_eq!(e.code, ErrorCode::ReleaseCommitNotFound);
    for tag in ["v9.9.9", "--all", "../x", "a..b", "v1^{tree}"] {
        let e = changes::since(&dir, &head, Some(tag)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ReleaseTagNotFound, "{tag:?}");
    }
    // A branch name works as the commit to release.
    assert_eq!(changes::since(&dir, "main", None).unwrap().len(), 1);
    // Nothing since the tag at HEAD itself.
    repo.git(&["tag", "v1.0.0"]);
    assert!(
        changes::since(&dir, &head, Some("v1.0.0"))
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn commits_can_be_read_from_async_code() {
    let mut repo = Repo::new();
    repo.commit("Alice", "feat: a");
    repo.git(&["tag", "v0.1.0"]);
    repo.commit("Bob", "fix: b");
    let head = repo.head();
    let commits = changes::since_async(repo.git_dir(), head, Some("v0.1.0".into()))
        .await
        .unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].conventional.kind.as_deref(), Some("fix"));
    assert_eq!(commits[0].author_email, "bob@example.com");
    let e = changes::since_async(repo.git_dir(), "nope".into(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ReleaseCommitNotFound);
}

fn sample() -> NotesInput {
    let commits = vec![
        Commit::new(
            "a".repeat(40).as_str(),
            vec![],
            "Alice",
            "a@x",
            0,
            "feat(ui): dark mode DEMO-2",
        ),
        Commit::new(
            "b".repeat(40).as_str(),
            vec![],
            "Bob",
            "b@x",
            0,
            "Untyped change",
        ),
    ];
    NotesInput::new(
        Version::new(1, 1, 0),
        Some(Version::new(1, 0, 0)),
        "2026-11-27",
        commits,
    )
}

#[test]
fn a_project_template_overrides_the_layout() {
    let mut input = sample();
    input.items = vec![ItemRef {
        key: "DEMO-2".into(),
        title: "Dark mode".into(),
    }];
    // Plain Jinja whitespace rules: `-` trims around a tag.
    let template = "# Release {{ version }} (after {{ previous }})\n\
        {%- for s in sections %}\n\
        {{ s.title | upper }}:\n\
          {%- for c in s.commits %}\n\
        - {{ c.short }}={{ c.scope or '' }}/{{ c.description }}{% if c.items %} [{{ c.items | join(',') }}]{% endif %}\n\
          {%- endfor %}\n\
        {%- endfor %}\n\
        by {{ contributors | join(' & ') }}; {{ commits | length }} commits\n";
    let out = notes::render(&input, Some(template)).unwrap();
    assert_eq!(
        out,
        "# Release 1.1.0 (after 1.0.0)\n\
         FEATURES:\n\
         - aaaaaaa=ui/dark mode DEMO-2 [DEMO-2]\n\
         OTHER:\n\
         - bbbbbbb=/Untyped change\n\
         by Alice & Bob; 2 commits\n"
    );
    // The default layout has no leftover template syntax and keeps the "Other" commit.
    let default = notes::render(&input, None).unwrap();
    assert!(
        default.contains("### Other\n\n- Untyped change (bbbbbbb)"),
        "{default}"
    );
    assert!(!default.contains("{{") && !default.contains("{%"));
}

#[test]
fn the_documented_example_template_works() {
    // docs/releases.md, "Your own layout".
    let template = "# {{ version }}\n\
{% for s in sections %}\n\
{{ s.title }}:\n\
{%- for c in s.commits %}\n\
- {{ c.description }}{% if c.scope %} ({{ c.scope }}){% endif %}\n\
{%- endfor %}\n\
{% endfor %}\n";
    let out = notes::render(&sample(), Some(template)).unwrap();
    assert_eq!(
        out,
        "# 1.1.0\n\nFeatures:\n- dark mode DEMO-2 (ui)\n\nOther:\n- Untyped change\n\n"
    );
    // And the documented error message.
    let e = notes::render(&sample(), Some("a\nb\n{{ version }")).unwrap_err();
    assert!(
        e.message
            .starts_with("the notes template fails at line 3: syntax error"),
        "{}",
        e.message
    );
}

#[test]
fn bad_templates_are_422_with_a_line_never_a_panic() {
    let input = sample();
    let cases = [
        (
            "syntax",
            "ok\n{% for c in commits %}\n{{ c.short }\n",
            Some(3),
        ),
        ("unclosed block", "line one\n{% if version %}\nno end", None),
        (
            "unknown filter",
            "a\nb\n{{ version | nosuchfilter }}",
            Some(3),
        ),
        (
            "undefined variable",
            "{{ version }}\n{{ nosuchvar }}",
            Some(2),
        ),
        (
            "undefined attribute",
            "{% for c in commits %}{{ c.nope }}{% endfor %}",
            Some(1),
        ),
        (
            "endless loop",
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            Some(1),
        ),
        (
            "recursion",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            Some(1),
        ),
        ("file access", "{% include '/etc/passwd' %}", Some(1)),
        (
            "huge output",
            "{% for a in range(99999) %}{{ 'x' * 1000 }}{% endfor %}",
            None,
        ),
    ];
    for (what, template, line) in cases {
        let e = notes::render(&input, Some(template)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ReleaseTemplateInvalid, "{what}: {e:?}");
        assert_eq!(e.code.http_status(), 422);
        let details = e.details.clone().unwrap();
        assert_eq!(details["field"], "template", "{what}");
        if let Some(line) = line {
            assert_eq!(details["line"], line, "{what}: {e:?}");
            assert!(
                e.message.contains(&format!("line {line}")),
                "{what}: {}",
                e.message
            );
        }
    }
    let big = "x".repeat(notes::MAX_TEMPLATE_BYTES + 1);
    assert_eq!(
        notes::render(&input, Some(&big)).unwrap_err().code,
        ErrorCode::ReleaseTemplateInvalid
    );
}

#[test]
fn default_notes_for_an_empty_release() {
    let input = NotesInput::new(Version::new(0, 1, 0), None, "2026-11-27", vec![]);
    let out = notes::render(&input, None).unwrap();
    assert_eq!(out, "## 0.1.0 (2026-11-27)\n\nNo changes.\n");
}
