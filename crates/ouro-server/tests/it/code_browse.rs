//! Browsing repositories (API and pages), with repositories built by the real `git` CLI pushing
//! over HTTP to the in-process server: branches (with `/`), tags, trees, blobs (binary, not
//! UTF-8, huge), raw files, the log with paging, commits and their diffs (root and merge
//! commits), compare, and bad input (invalid refs, `..`, missing paths, empty repositories).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPOS: &str = "/api/v1/projects/demo/repos";
const APP: &str = "/api/v1/projects/demo/repos/app";

pub struct Git {
    home: tempfile::TempDir,
    /// Each git run gets a later date, so the log's order does not depend on timing.
    tick: std::sync::atomic::AtomicU64,
}

impl Git {
    fn new() -> Git {
        Git {
            home: tempfile::tempdir().unwrap(),
            tick: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn run(&self, dir: &Path, args: &[&str]) -> String {
        let t = 1_700_000_000 + 60 * self.tick.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let date = format!("@{t} +0000");
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(dir)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("GIT_AUTHOR_NAME", "Ada Dev")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada Dev")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        let out = tokio::process::Command::from(c).output().await.unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "git {args:?} failed: {text}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn work(&self) -> PathBuf {
        let d = self.home.path().join("work");
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    async fn commit_all(&self, dir: &Path, msg: &str) -> String {
        self.run(dir, &["add", "-A"]).await;
        self.run(dir, &["commit", "-q", "-m", msg]).await;
        self.run(dir, &["rev-parse", "HEAD"]).await
    }
}

fn with_credentials(clone_url: &str, token: &str) -> String {
    clone_url.replacen("http://", &format!("http://admin:{token}@"), 1)
}

/// Commit ids of the repository [`build`] pushes.
#[allow(dead_code)]
pub struct Built {
    pub git: Git,
    pub root: String,
    pub files: String,
    pub feature: String,
    pub readme: String,
    pub merge: String,
}

/// Creates `app` and pushes: a root commit (README.md, src/main.rs), one adding odd files
/// (binary, Latin-1, a non-UTF-8 name, a 1.2 MB file), a branch `feature/x`, a README change on
/// main, and a merge of `feature/x`; tags `v1` (lightweight, on the root) and `v2` (annotated).
pub async fn build(s: &TestServer) -> Built {
    let (st, repo) = s
        .admin(Method::POST, REPOS, Some(json!({"name": "app"})))
        .await;
    assert_eq!(st, 201, "{repo}");
    let url = with_credentials(repo["clone_url"].as_str().unwrap(), &s.admin_token);
    let git = Git::new();
    let w = git.work();
    git.run(&w, &["init", "-q", "-b", "main"]).await;
    std::fs::write(
        w.join("README.md"),
        "# Hello app\n\nSee **docs** <script>alert(1)</script>.\n",
    )
    .unwrap();
    std::fs::create_dir_all(w.join("src")).unwrap();
    let main_rs: String = (1..=20).map(|i| format!("line {i}\n")).collect();
    std::fs::write(w.join("src/main.rs"), &main_rs).unwrap();
    let root = git.commit_all(&w, "Root commit").await;
    std::fs::write(w.join("bin.dat"), [0u8, 1, 2, 3, 0, 255]).unwrap();
    std::fs::write(w.join("latin1.txt"), b"caf\xe9\n").unwrap();
    std::fs::write(
        w.join(std::ffi::OsStr::from_bytes(b"n\xffme.txt")),
        "odd name\n",
    )
    .unwrap();
    let big: String = (0..120_000).map(|i| format!("{i:09}\n")).collect();
    std::fs::write(w.join("big.txt"), big).unwrap();
    let files = git
        .commit_all(&w, "Odd files\n\nBinary, Latin-1, big.")
        .await;
    git.run(&w, &["checkout", "-q", "-b", "feature/x"]).await;
    std::fs::write(
        w.join("src/main.rs"),
        main_rs.replace("line 10\n", "LINE TEN\n"),
    )
    .unwrap();
    let feature = git.commit_all(&w, "Shout line ten").await;
    git.run(&w, &["checkout", "-q", "main"]).await;
    std::fs::write(w.join("README.md"), "# Hello app\n\nNow with more.\n").unwrap();
    let readme = git.commit_all(&w, "Better README").await;
    git.run(
        &w,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "Merge feature/x",
            "feature/x",
        ],
    )
    .await;
    let merge = git.run(&w, &["rev-parse", "HEAD"]).await;
    git.run(&w, &["tag", "v1", &root]).await;
    git.run(&w, &["tag", "-a", "v2", "-m", "Release two", &readme])
        .await;
    git.run(&w, &["push", "-q", &url, "main", "feature/x", "v1", "v2"])
        .await;
    Built {
        git,
        root,
        files,
        feature,
        readme,
        merge,
    }
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    s.admin(Method::GET, path, None).await
}

#[tokio::test]
async fn browse_refs_trees_blobs_and_raw() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let b = build(&s).await;
        let viewer = s.user("viewer").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/viewer",
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 200);

        // Branches: the default first, with ahead/behind.
        let (st, br) = s
            .call(Method::GET, &format!("{APP}/branches"), Some(&viewer), None)
            .await;
        assert_eq!(st, 200, "{br}");
        assert_eq!(br[0]["name"], "main");
        assert_eq!(br[0]["default"], true);
        assert_eq!(br[0]["commit"], b.merge.as_str());
        assert_eq!(br[1]["name"], "feature/x");
        assert_eq!(br[1]["ahead"], 0, "merged into main");
        assert_eq!(
            br[1]["behind"], 2,
            "main has the README change and the merge"
        );

        // Tags: annotated and lightweight, both peeled to commits.
        let (st, tags) = get(&s, &format!("{APP}/tags")).await;
        assert_eq!(st, 200, "{tags}");
        let v1 = tags
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "v1")
            .unwrap();
        let v2 = tags
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "v2")
            .unwrap();
        assert_eq!(v1["annotated"], false);
        assert_eq!(v1["commit"], b.root.as_str());
        assert_eq!(v2["annotated"], true);
        assert_eq!(v2["commit"], b.readme.as_str());
        assert_eq!(v2["subject"], "Release two");
        assert_eq!(v2["tagger_name"], "Ada Dev");

        // The root tree: directories first, sizes, a non-UTF-8 name shown lossily.
        let (st, t) = get(&s, &format!("{APP}/tree")).await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["ref"]["name"], "main");
        assert_eq!(t["ref"]["kind"], "branch");
        let names: Vec<&str> = t["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names[0], "src");
        assert!(
            names.contains(&"README.md") && names.contains(&"bin.dat"),
            "{names:?}"
        );
        let odd = t["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["lossy_name"] == true)
            .unwrap();
        assert_eq!(odd["name"], "n\u{fffd}me.txt");
        let big = t["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "big.txt")
            .unwrap();
        assert_eq!(big["size"], 1_200_000);
        // A subdirectory at a tag, at a commit id, and at a branch with '/'.
        let (st, t) = get(&s, &format!("{APP}/tree?ref=v1&path=src")).await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["entries"][0]["path"], "src/main.rs");
        assert_eq!(t["ref"]["kind"], "tag");
        let (st, t) = get(&s, &format!("{APP}/tree?ref={}", &b.root[..8])).await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["ref"]["commit"], b.root.as_str());
        assert_eq!(
            t["entries"].as_array().unwrap().len(),
            2,
            "the root commit had two entries"
        );
        let (st, t) = get(&s, &format!("{APP}/tree?ref=feature/x&path=src/")).await;
        assert_eq!(st, 200, "{t}");

        // Blobs: text, Latin-1 (lossy with a note), binary (base64), huge (not inline).
        let (st, f) = get(&s, &format!("{APP}/blob?path=src/main.rs&ref=feature/x")).await;
        assert_eq!(st, 200, "{f}");
        assert_eq!(f["encoding"], "utf-8");
        assert!(f["content"].as_str().unwrap().contains("LINE TEN"));
        let (_, f) = get(&s, &format!("{APP}/blob?path=latin1.txt")).await;
        assert_eq!(f["encoding"], "lossy");
        assert_eq!(f["content"], "caf\u{fffd}\n");
        let (_, f) = get(&s, &format!("{APP}/blob?path=bin.dat")).await;
        assert_eq!(f["binary"], true);
        assert_eq!(f["encoding"], "base64");
        assert_eq!(f["content"], "AAECAwD/");
        let (_, f) = get(&s, &format!("{APP}/blob?path=big.txt")).await;
        assert_eq!(f["too_large"], true);
        assert_eq!(f["content"], Value::Null);
        assert_eq!(f["size"], 1_200_000);

        // Raw: text/plain or octet-stream, nosniff, a safe file name, the exact bytes.
        let r = s
            .req(
                Method::GET,
                &format!("{APP}/raw?path=bin.dat"),
                Some(&viewer),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            r.headers()["content-disposition"],
            "attachment; filename=\"bin.dat\""
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &[0u8, 1, 2, 3, 0, 255]);
        let r = s
            .req(
                Method::GET,
                &format!("{APP}/raw?path=README.md&ref=v1"),
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert!(
            r.text().await.unwrap().contains("<script>"),
            "raw, not rendered"
        );
        let r = s
            .req(
                Method::GET,
                &format!("{APP}/raw?path=big.txt"),
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.bytes().await.unwrap().len(),
            1_200_000,
            "huge files stream whole"
        );

        // Bad input: invalid refs 422 on `ref`; unknown refs and paths 404; `..` 422.
        for bad in ["a..b", "-x", "a%20b", "x.lock", "a~1", "%40%7B0%7D"] {
            let (st, e) = get(&s, &format!("{APP}/tree?ref={bad}")).await;
            assert_eq!(st, 422, "{bad}: {e}");
            assert_eq!(e["error"]["details"]["field"], "ref", "{bad}");
        }
        let (st, e) = get(&s, &format!("{APP}/tree?ref=nope")).await;
        assert_eq!((st, error_code(&e).as_str()), (404, "code.ref_not_found"));
        let (st, e) = get(&s, &format!("{APP}/tree?ref=deadbeef")).await;
        assert_eq!((st, error_code(&e).as_str()), (404, "code.ref_not_found"));
        for bad in ["../etc", "src/../README.md", "a//b", "./x"] {
            let (st, e) = get(&s, &format!("{APP}/blob?path={bad}")).await;
            assert_eq!(st, 422, "{bad}: {e}");
            assert_eq!(e["error"]["details"]["field"], "path");
        }
        let (st, e) = get(&s, &format!("{APP}/blob?path=missing.txt")).await;
        assert_eq!((st, error_code(&e).as_str()), (404, "code.path_not_found"));
        let (st, _) = get(&s, &format!("{APP}/blob?path=src")).await;
        assert_eq!(st, 404, "a directory is not a file");
        let (st, e) = get(&s, &format!("{APP}/tree?path=README.md")).await;
        assert_eq!(st, 422, "{e}");
        let (st, _) = get(&s, &format!("{APP}/raw?path=nope")).await;
        assert_eq!(st, 404);
        // A pathspec-looking name is just a (missing) name.
        let (st, _) = get(&s, &format!("{APP}/tree?path=%3A(glob)*")).await;
        assert_eq!(st, 404);
        let (st, e) = get(&s, "/api/v1/projects/demo/repos/nope/tree").await;
        assert_eq!((st, error_code(&e).as_str()), (404, "code.repo_not_found"));
        s.stop().await;
    }
}

#[tokio::test]
async fn log_commits_diffs_and_compare() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let b = build(&s).await;

        // The log, paged, newest first; filtered by path.
        let (st, log) = get(&s, &format!("{APP}/commits?per_page=2")).await;
        assert_eq!(st, 200, "{log}");
        assert_eq!(log["commits"][0]["id"], b.merge.as_str());
        assert_eq!(log["commits"].as_array().unwrap().len(), 2);
        assert_eq!(log["has_next"], true);
        let (_, p3) = get(&s, &format!("{APP}/commits?per_page=2&page=3")).await;
        assert_eq!(p3["commits"].as_array().unwrap().len(), 1);
        assert_eq!(p3["commits"][0]["id"], b.root.as_str());
        assert_eq!(p3["has_next"], false);
        let (_, l) = get(&s, &format!("{APP}/commits?path=src/main.rs")).await;
        let ids: Vec<&str> = l["commits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![b.feature.as_str(), b.root.as_str()]);
        let (_, l) = get(&s, &format!("{APP}/commits?ref=v1")).await;
        assert_eq!(l["commits"].as_array().unwrap().len(), 1);
        let (st, _) = get(&s, &format!("{APP}/commits?per_page=1000&page=0")).await;
        assert_eq!(st, 200, "paging input is clamped");

        // One commit.
        let (st, c) = get(&s, &format!("{APP}/commits/{}", &b.files[..12])).await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(c["id"], b.files.as_str());
        assert_eq!(c["subject"], "Odd files");
        assert_eq!(c["body"], "Binary, Latin-1, big.");
        assert_eq!(c["author_name"], "Ada Dev");
        assert_eq!(c["parents"][0], b.root.as_str());
        let (st, _) = get(&s, &format!("{APP}/commits/{}", "0".repeat(40))).await;
        assert_eq!(st, 404);
        let (st, _) = get(&s, &format!("{APP}/commits/main")).await;
        assert_eq!(st, 422, "commits/{{sha}} takes an id");

        // The root commit's diff: everything added, against the empty tree.
        let (st, d) = get(&s, &format!("{APP}/commits/{}/diff", b.root)).await;
        assert_eq!(st, 200, "{d}");
        assert_eq!(d["base"], "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        assert_eq!(d["files"].as_array().unwrap().len(), 2);
        assert!(
            d["files"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["status"] == "added")
        );
        assert_eq!(d["additions"], 23);

        // The odd files: binary marked, Latin-1 lossy, non-UTF-8 path lossy, the big file
        // collapsed (120,000 lines) and loadable on its own.
        let (_, d) = get(&s, &format!("{APP}/commits/{}/diff", b.files)).await;
        let files = d["files"].as_array().unwrap();
        let by = |p: &str| files.iter().find(|f| f["new_path"] == p).unwrap().clone();
        assert_eq!(by("bin.dat")["binary"], true);
        assert_eq!(
            by("latin1.txt")["hunks"][0]["lines"][0]["text"],
            "caf\u{fffd}"
        );
        let odd = files.iter().find(|f| f["lossy_path"] == true).unwrap();
        assert_eq!(odd["new_path"], "n\u{fffd}me.txt");
        let big = by("big.txt");
        assert_eq!(big["collapsed"], true);
        assert_eq!(big["additions"], 120_000);
        assert_eq!(big["hunks"].as_array().unwrap().len(), 0);
        let (st, one) = get(
            &s,
            &format!("{APP}/commits/{}/diff?path=latin1.txt&context=0", b.files),
        )
        .await;
        assert_eq!(st, 200, "{one}");
        assert_eq!(one["files"].as_array().unwrap().len(), 1);
        assert_eq!(one["files"][0]["collapsed"], false);
        let (st, _) = get(
            &s,
            &format!("{APP}/commits/{}/diff?path=README.md", b.files),
        )
        .await;
        assert_eq!(st, 404, "not changed in that commit");

        // A modification: line numbers on both sides.
        let (_, d) = get(&s, &format!("{APP}/commits/{}/diff", b.feature)).await;
        let h = &d["files"][0]["hunks"][0];
        assert_eq!(h["old_start"], 7);
        let del = h["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == "del")
            .unwrap();
        assert_eq!(
            (del["old"].clone(), del["new"].clone()),
            (json!(10), Value::Null)
        );
        assert_eq!(del["text"], "line 10");

        // A merge commit: against its first parent, so only the merged-in change shows.
        let (_, d) = get(&s, &format!("{APP}/commits/{}/diff", b.merge)).await;
        assert_eq!(d["base"], b.readme.as_str());
        let paths: Vec<&str> = d["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["new_path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, vec!["src/main.rs"]);

        // Compare: commits on head not on base, and the diff from the merge base.
        let (st, c) = get(&s, &format!("{APP}/compare?base=v1&head=feature/x")).await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(c["merge_base"], b.root.as_str());
        assert_eq!(c["commits"].as_array().unwrap().len(), 2);
        assert_eq!(c["commits"][0]["id"], b.feature.as_str());
        assert!(c["diff"]["files"].as_array().unwrap().len() >= 5);
        let (st, c) = get(&s, &format!("{APP}/compare?base=feature/x&head=main")).await;
        assert_eq!(st, 200);
        assert_eq!(
            c["commits"].as_array().unwrap().len(),
            2,
            "README change and merge"
        );
        assert_eq!(c["diff"]["files"][0]["new_path"], "README.md");
        let (st, e) = get(&s, &format!("{APP}/compare?base=a..b&head=main")).await;
        assert_eq!(st, 422);
        assert_eq!(e["error"]["details"]["field"], "base");
        let (st, e) = get(&s, &format!("{APP}/compare?base=main")).await;
        assert_eq!(st, 422);
        assert_eq!(e["error"]["details"]["field"], "head");
        let (st, _) = get(&s, &format!("{APP}/compare?base=main&head=nope")).await;
        assert_eq!(st, 404);
        s.stop().await;
    }
}

#[tokio::test]
async fn empty_repositories_are_empty_states() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (st, _) = s
            .admin(Method::POST, REPOS, Some(json!({"name": "app"})))
            .await;
        assert_eq!(st, 201);
        let (st, t) = get(&s, &format!("{APP}/tree")).await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["empty"], true);
        assert_eq!(t["entries"], json!([]));
        let (st, l) = get(&s, &format!("{APP}/commits")).await;
        assert_eq!(st, 200, "{l}");
        assert_eq!(l["commits"], json!([]));
        let (st, b) = get(&s, &format!("{APP}/branches")).await;
        assert_eq!((st, b), (200, json!([])));
        let (st, b) = get(&s, &format!("{APP}/tags")).await;
        assert_eq!((st, b), (200, json!([])));
        // Another ref in an empty repository does not exist.
        let (st, _) = get(&s, &format!("{APP}/tree?ref=dev")).await;
        assert_eq!(st, 404);
        let (st, _) = get(&s, &format!("{APP}/blob?path=README.md")).await;
        assert_eq!(st, 404);
        // The pages say so instead of failing.
        for page in ["", "/commits/main", "/branches", "/tags"] {
            let (st, html) = s
                .admin_page(&format!("/projects/demo/code/app{page}"))
                .await;
            assert_eq!(st, 200, "{page}: {html}");
            assert!(html.contains("empty-repo"), "{page}");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn pages_tree_blob_commits_diff_branches_tags_compare() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let b = build(&s).await;
        let page = |p: String| {
            let s = &s;
            async move { s.admin_page(&format!("/projects/demo/code/app{p}")).await }
        };

        // The repo list links to the repo home; the home shows the tree, the README
        // (sanitised) and the clone URL with a copy button; the tab bar links everywhere.
        let (st, html) = s.admin_page("/projects/demo/code").await;
        assert_eq!(st, 200);
        assert!(html.contains("href=\"/projects/demo/code/app\""));
        let (st, html) = page(String::new()).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("Now with more"), "README rendered");
        assert!(html.contains("<h1>Hello app</h1>"), "as Markdown");
        assert!(html.contains("/git/demo/app.git") && html.contains("copy-button"));
        assert!(html.contains("/projects/demo/code/app/change-requests"));
        assert!(html.contains("/projects/demo/code/app/settings"));
        assert!(html.contains("href=\"/projects/demo/code/app/tree/main/src\""));
        assert!(html.contains("name is not UTF-8"));
        // An old README with a script tag is sanitised.
        let (st, html) = page("/tree/v1".into()).await;
        assert_eq!(st, 200);
        assert!(!html.contains("<script>alert"), "sanitised");

        // A branch with '/' and a path: the longest ref prefix wins.
        let (st, html) = page("/tree/feature/x/src".into()).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("/blob/feature/x/src/main.rs"), "{html}");
        // A tree URL of a file goes to the blob.
        let r = s
            .req(
                Method::GET,
                "/projects/demo/code/app/tree/main/README.md",
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_redirection() || r.status() == 200,
            "{}",
            r.status()
        );

        // Blob: numbered lines with anchors, a raw link; lossy, binary and huge files.
        let (st, html) = page("/blob/feature/x/src/main.rs".into()).await;
        assert_eq!(st, 200);
        assert!(html.contains("id=\"L10\"") && html.contains("href=\"#L10\""));
        assert!(html.contains("LINE TEN"));
        assert!(html.contains("/projects/demo/code/app/raw/feature/x/src/main.rs"));
        let (_, html) = page("/blob/main/latin1.txt".into()).await;
        assert!(html.contains("blob-lossy"));
        let (_, html) = page("/blob/main/bin.dat".into()).await;
        assert!(html.contains("blob-binary"));
        let (_, html) = page("/blob/main/big.txt".into()).await;
        assert!(html.contains("blob-too-large"));
        assert!(!html.contains("id=\"L1\""));
        let r = s
            .req(
                Method::GET,
                "/projects/demo/code/app/raw/main/bin.dat",
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");

        // Bad input on pages: invalid ref 422, unknown 404, '..' 422, missing path 404.
        let (st, _) = page("/tree/a..b".into()).await;
        assert_eq!(st, 422, "a..b is not a valid ref name");
        let (st, _) = page("/tree/nope/src".into()).await;
        assert_eq!(st, 404, "no such ref");
        let (st, _) = page(format!("/blob/{}/README.md", b.root)).await;
        assert_eq!(st, 200, "a full commit id as the ref");
        let (st, _) = page("/blob/main/src/..%2FREADME.md".into()).await;
        assert_eq!(st, 422);
        let (st, _) = page("/blob/main/nope.txt".into()).await;
        assert_eq!(st, 404);
        let (st, _) = page("/commits/a%20b".into()).await;
        assert_eq!(st, 422);
        let (st, _) = page("/commit/zzz".into()).await;
        assert_eq!(st, 422);

        // Commits, paged.
        let (st, html) = page("/commits/main".into()).await;
        assert_eq!(st, 200);
        assert!(html.contains(&b.merge[..10]) && html.contains(&b.root[..10]));
        assert!(!html.contains("rel=\"next\""), "five commits fit one page");
        let (st, html) = page("/commits/feature/x".into()).await;
        assert_eq!(st, 200);
        assert!(!html.contains(&b.readme[..10]));

        // A commit: metadata and the diff, unified and split; the big file collapsed with
        // an htmx link that loads it.
        let (st, html) = page(format!("/commit/{}", b.feature)).await;
        assert_eq!(st, 200);
        assert!(html.contains("Shout line ten"));
        assert!(html.contains("diff-unified") && html.contains("-line 10"));
        let (_, html) = page(format!("/commit/{}?view=split", b.feature)).await;
        assert!(html.contains("diff-split"));
        let (_, html) = page(format!("/commit/{}", b.files)).await;
        assert!(html.contains("Binary file not shown"));
        assert!(html.contains("This file&#x27;s diff is large") || html.contains("diff is large"));
        let href = format!(
            "/projects/demo/code/app/diff-file?base={}&#38;head={}&#38;view=unified&#38;path=big.txt",
            b.root, b.files
        );
        assert!(html.contains(&href), "{html}");
        let (st, frag) = s.admin_page(&href.replace("&#38;", "&")).await;
        assert_eq!(st, 200);
        assert!(frag.contains("000119999"), "the whole file");
        assert!(!frag.contains("<html"), "a fragment");
        let (_, html) = page(format!("/commit/{}", b.root)).await;
        assert!(html.contains("root commit"));
        let (_, html) = page(format!("/commit/{}", b.merge)).await;
        assert!(html.contains("merge: changes against the first parent"));
        assert!(html.contains("src/main.rs") && !html.contains("data-path=\"README.md\""));

        // Branches, tags, compare.
        let (st, html) = page("/branches".into()).await;
        assert_eq!(st, 200);
        assert!(
            html.contains("data-branch=\"feature/x\"") && html.contains("compare/main...feature/x")
        );
        let (st, html) = page("/tags".into()).await;
        assert_eq!(st, 200);
        assert!(html.contains("data-tag=\"v2\"") && html.contains("annotated"));
        let (st, html) = page("/compare/v1...feature/x".into()).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("Shout line ten") && html.contains("LINE TEN"));
        let (st, _) = page("/compare/main".into()).await;
        assert_eq!(st, 422);
        s.stop().await;
    }
}
