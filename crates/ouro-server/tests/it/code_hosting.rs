//! Code hosting with the real `git` CLI against the in-process server: create repositories over
//! the API, clone, push, fetch over smart HTTP, who may do what, imports, and the `code.pushed`
//! events (with the Plan consumer linking "fixes DEMO-1").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPOS: &str = "/api/v1/projects/demo/repos";

/// A git runner with its own HOME (no user config), never prompting.
pub(crate) struct Git {
    home: tempfile::TempDir,
}

impl Git {
    pub(crate) fn new() -> Git {
        let home = tempfile::tempdir().unwrap();
        Git { home }
    }

    pub(crate) fn cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(dir)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            .env("GIT_AUTHOR_NAME", "Ada Dev")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada Dev")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com");
        c
    }

    /// Runs git; returns (success, stdout + stderr).
    /// (Async: the server runs on the test's runtime, so git must not block its thread.)
    pub(crate) async fn try_run(&self, dir: &Path, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::from(self.cmd(dir, args))
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub(crate) async fn run(&self, dir: &Path, args: &[&str]) -> String {
        let (ok, text) = self.try_run(dir, args).await;
        assert!(ok, "git {args:?} failed: {text}");
        text
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        let d = self.home.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes a file and commits it; returns the commit id.
    pub(crate) async fn commit(
        &self,
        repo: &Path,
        file: &str,
        content: &str,
        message: &str,
    ) -> String {
        std::fs::write(repo.join(file), content).unwrap();
        self.run(repo, &["add", "."]).await;
        self.run(repo, &["commit", "-q", "-m", message]).await;
        self.run(repo, &["rev-parse", "HEAD"])
            .await
            .trim()
            .to_string()
    }
}

/// `http://user:token@host:port/git/...` from the API's clone URL.
pub(crate) fn with_credentials(clone_url: &str, user: &str, token: &str) -> String {
    clone_url.replacen("http://", &format!("http://{user}:{token}@"), 1)
}

async fn create_repo(s: &TestServer, body: Value) -> (u16, Value) {
    s.admin(Method::POST, REPOS, Some(body)).await
}

pub(crate) async fn member(s: &TestServer, name: &str, role: &str) -> String {
    let tok = s.user(name).await;
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/api/v1/projects/demo/members/{name}"),
            Some(json!({"role": role})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tok
}

async fn pushed_events(s: &TestServer) -> Vec<Value> {
    let (st, body) = s
        .admin(
            Method::GET,
            "/api/v1/projects/demo/events?kind=code.pushed",
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn create_clone_push_fetch_over_http() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (st, item) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/items",
                Some(json!({"type": "story", "title": "Checkout"})),
            )
            .await;
        assert_eq!(st, 201, "{item}");
        let key = item["key"].as_str().unwrap().to_string();
        // A maintainer: main is a protected branch (docs/push-rules.md), and this test pushes
        // to it directly more than once.
        let dev = member(&s, "dev", "maintainer").await;
        let viewer = member(&s, "viewer", "viewer").await;

        // A developer creates the repository; the clone URL follows the contract.
        let (st, repo) = s
            .call(
                Method::POST,
                REPOS,
                Some(&dev),
                Some(json!({"name": "app"})),
            )
            .await;
        assert_eq!(st, 201, "{repo}");
        assert_eq!(repo["name"], "app");
        assert_eq!(repo["kind"], "empty");
        assert_eq!(repo["default_branch"], "main");
        let clone_url = repo["clone_url"].as_str().unwrap().to_string();
        assert!(clone_url.ends_with("/git/demo/app.git"), "{clone_url}");
        let (st, list) = s.call(Method::GET, REPOS, Some(&viewer), None).await;
        assert_eq!(st, 200);
        assert_eq!(list[0]["name"], "app");
        let (st, one) = s
            .call(Method::GET, &format!("{REPOS}/app"), Some(&viewer), None)
            .await;
        assert_eq!((st, &one["clone_url"]), (200, &json!(clone_url)));

        let git = Git::new();
        let work = git.dir("work");
        let dev_url = with_credentials(&clone_url, "dev", &dev);
        // Clone the empty repository, commit, push.
        git.run(&work, &["clone", "-q", &dev_url, "app"]).await;
        let app = work.join("app");
        git.run(&app, &["checkout", "-q", "-b", "main"]).await;
        let c1 = git
            .commit(&app, "README.md", "# app\n", "Start the app")
            .await;
        std::fs::create_dir_all(app.join("src")).unwrap();
        std::fs::write(app.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        let c2 = git
            .commit(
                &app,
                "README.md",
                "# app\n\nDocs.\n",
                &format!("Add lib\n\nfixes {key}"),
            )
            .await;
        git.run(&app, &["push", "-q", "origin", "main"]).await;

        // One code.pushed for refs/heads/main with both commits, read with gix.
        let events = pushed_events(&s).await;
        assert_eq!(events.len(), 1, "{events:?}");
        let p = &events[0]["payload"];
        assert_eq!(p["ref"], "refs/heads/main");
        assert_eq!(p["old"], "0000000000000000000000000000000000000000");
        assert_eq!(p["new"], c2.as_str());
        assert_eq!(events[0]["actor"], "user:dev");
        let commits = p["commits"].as_array().unwrap();
        assert_eq!(commits.len(), 2, "{p}");
        assert_eq!(commits[0]["id"], c1.as_str());
        assert_eq!(commits[0]["parents"], json!([]));
        assert_eq!(commits[0]["files"], json!(["README.md"]));
        assert_eq!(commits[1]["id"], c2.as_str());
        assert_eq!(commits[1]["parents"], json!([c1]));
        assert_eq!(commits[1]["author"]["name"], "Ada Dev");
        assert_eq!(commits[1]["committer"]["email"], "ada@example.com");
        assert!(commits[1]["message"].as_str().unwrap().contains(&key));
        assert_eq!(commits[1]["files_changed"], 2);
        assert_eq!(commits[1]["files"], json!(["README.md", "src/lib.rs"]));

        // The Plan consumer links the item to the commit that says "fixes KEY".
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, links) = s
                .admin(
                    Method::GET,
                    &format!("/api/v1/projects/demo/items/{key}/links"),
                    None,
                )
                .await;
            let linked = links["subjects"]
                .as_array()
                .is_some_and(|a| a.iter().any(|l| l["subject_id"] == c2.as_str()));
            if linked {
                break;
            }
            assert!(Instant::now() < deadline, "no commit link: {links}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A viewer clones and sees the commit; a push with nothing new adds no event.
        let viewer_url = with_credentials(&clone_url, "viewer", &viewer);
        git.run(&work, &["clone", "-q", &viewer_url, "copy"]).await;
        let copy = work.join("copy");
        assert_eq!(git.run(&copy, &["rev-parse", "HEAD"]).await.trim(), c2);
        git.run(&app, &["push", "-q", "origin", "main"]).await;
        assert_eq!(pushed_events(&s).await.len(), 1);

        // Fetch picks up a new commit and a new branch; one event per moved ref.
        let c3 = git.commit(&app, "b.txt", "b\n", "Third").await;
        git.run(&app, &["branch", "feature"]).await;
        git.run(&app, &["push", "-q", "origin", "main", "feature"])
            .await;
        let events = pushed_events(&s).await;
        assert_eq!(events.len(), 3, "{events:?}");
        let mut refs: Vec<(String, usize)> = events[1..]
            .iter()
            .map(|e| {
                (
                    e["payload"]["ref"].as_str().unwrap().to_string(),
                    e["payload"]["commits"].as_array().unwrap().len(),
                )
            })
            .collect();
        refs.sort();
        // The new commit is listed once, under the first ref that brought it.
        assert_eq!(refs.iter().map(|r| r.1).sum::<usize>(), 1, "{refs:?}");
        assert_eq!(refs[0].0, "refs/heads/feature");
        assert_eq!(refs[1].0, "refs/heads/main");
        git.run(&copy, &["fetch", "-q", "origin"]).await;
        assert_eq!(
            git.run(&copy, &["rev-parse", "origin/feature"])
                .await
                .trim(),
            c3
        );

        // A viewer may not push.
        git.commit(&copy, "v.txt", "v\n", "Viewer change").await;
        let (ok, out) = git.try_run(&copy, &["push", "origin", "HEAD:main"]).await;
        assert!(!ok, "viewer push succeeded: {out}");
        assert!(out.contains("403"), "{out}");
        assert_eq!(pushed_events(&s).await.len(), 3);

        // Delete branch: an event with deleted = true and no commits.
        git.run(&app, &["push", "-q", "origin", "--delete", "feature"])
            .await;
        let events = pushed_events(&s).await;
        assert_eq!(events.len(), 4);
        assert_eq!(events[3]["payload"]["deleted"], true);
        assert_eq!(events[3]["payload"]["commits"], json!([]));
        s.stop().await;
    }
}

#[tokio::test]
async fn refusals_for_anonymous_and_wrong_credentials() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (st, repo) = create_repo(&s, json!({"name": "app"})).await;
        assert_eq!(st, 201, "{repo}");
        let url = repo["clone_url"].as_str().unwrap().to_string();
        let git = Git::new();
        let work = git.dir("w");

        // Anonymous on a private project: 401 with the Basic challenge, so git fails.
        let r = s
            .req(
                Method::GET,
                "/git/demo/app.git/info/refs?service=git-upload-pack",
                None,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(
            r.headers().get("www-authenticate").unwrap(),
            "Basic realm=\"Ouro\""
        );
        let (ok, out) = git.try_run(&work, &["clone", &url, "anon"]).await;
        assert!(!ok, "{out}");
        assert!(!work.join("anon").exists());

        // A wrong token, and a right token under someone else's name: 401 too.
        let tok = s.user("dev").await;
        let (ok, out) = git
            .try_run(
                &work,
                &["clone", &with_credentials(&url, "dev", "nope"), "wrong"],
            )
            .await;
        assert!(!ok, "{out}");
        let r = s
            .client
            .get(s.url("/git/demo/app.git/info/refs?service=git-upload-pack"))
            .basic_auth("admin", Some(&tok))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        // A user who is not a member learns nothing (404).
        let r = s
            .client
            .get(s.url("/git/demo/app.git/info/refs?service=git-upload-pack"))
            .basic_auth("dev", Some(&tok))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        // The admin with the right token gets the ref advertisement.
        let r = s
            .client
            .get(s.url("/git/demo/app.git/info/refs?service=git-upload-pack"))
            .basic_auth("admin", Some(&s.admin_token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers().get("content-type").unwrap(),
            "application/x-git-upload-pack-advertisement"
        );
        // An unknown repository is a 404.
        let r = s
            .client
            .get(s.url("/git/demo/nope.git/info/refs?service=git-upload-pack"))
            .basic_auth("admin", Some(&s.admin_token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);

        // Public project: anonymous may clone, but pushing asks for credentials.
        let (st, p) = s
            .admin(
                Method::PATCH,
                "/api/v1/projects/demo",
                Some(json!({"visibility": "public"})),
            )
            .await;
        assert_eq!(st, 200, "{p}");
        git.run(&work, &["clone", "-q", &url, "public"]).await;
        let r = s
            .req(
                Method::GET,
                "/git/demo/app.git/info/refs?service=git-receive-pack",
                None,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        s.stop().await;
    }
}

#[tokio::test]
async fn import_from_a_file_url_and_name_rules() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let git = Git::new();
        let src = git.dir("src");
        git.run(&src, &["init", "-q", "-b", "trunk"]).await;
        let c = git.commit(&src, "a.txt", "a\n", "Imported commit").await;
        let file_url = format!("file://{}", src.display());
        let (st, repo) = create_repo(&s, json!({"name": "imported", "import_url": file_url})).await;
        assert_eq!(st, 201, "{repo}");
        assert_eq!(repo["kind"], "import");
        assert_eq!(repo["default_branch"], "trunk");
        assert_eq!(repo["source_url"], json!(file_url));
        let url = with_credentials(repo["clone_url"].as_str().unwrap(), "admin", &s.admin_token);
        let work = git.dir("w");
        git.run(&work, &["clone", "-q", &url, "copy"]).await;
        assert_eq!(
            git.run(&work.join("copy"), &["rev-parse", "HEAD"])
                .await
                .trim(),
            c
        );
        let (st, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=repo.created",
                None,
            )
            .await;
        assert_eq!(st, 200);
        assert_eq!(evs["items"][0]["payload"]["kind"], "import");

        // A source that is not a repository: 422, and no row.
        let (st, body) = create_repo(
            &s,
            json!({"name": "broken", "import_url": "file:///nonexistent/repo"}),
        )
        .await;
        assert_eq!(
            (st, error_code(&body)),
            (422, "code.import_failed".into()),
            "{body}"
        );
        let (_, one) = s.admin(Method::GET, &format!("{REPOS}/broken"), None).await;
        assert_eq!(error_code(&one), "code.repo_not_found");

        // Names: invalid ones are 422 naming the field, a taken one 409.
        for bad in ["", "a b", "x.git", "..", "a/b", ".hidden", "ü"] {
            let (st, body) = create_repo(&s, json!({"name": bad})).await;
            assert_eq!(st, 422, "{bad:?}: {body}");
            assert_eq!(body["error"]["details"]["field"], "name", "{bad:?}");
        }
        let (st, body) = create_repo(&s, json!({"name": "imported"})).await;
        assert_eq!(
            (st, error_code(&body)),
            (409, "code.repo_name_taken".into())
        );
        let (st, body) = create_repo(&s, json!({"name": "x", "import_url": "ftp://h/r"})).await;
        assert_eq!(st, 422, "{body}");
        assert_eq!(body["error"]["details"]["field"], "import_url");

        // Delete (maintainer): the row, the directory and a repo.deleted event.
        let dir = ouro_code::repos::root(&s.state.settings.data_dir);
        assert!(std::fs::read_dir(&dir).unwrap().next().is_some());
        let (st, _) = s
            .admin(Method::DELETE, &format!("{REPOS}/imported"), None)
            .await;
        assert_eq!(st, 204);
        let (st, _) = s
            .admin(Method::GET, &format!("{REPOS}/imported"), None)
            .await;
        assert_eq!(st, 404);
        let (_, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=repo.deleted",
                None,
            )
            .await;
        assert_eq!(evs["items"].as_array().unwrap().len(), 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn code_page_lists_and_creates_repositories() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (st, html) = s.admin_page("/projects/demo/code").await;
        assert_eq!(st, 200);
        assert!(html.contains("No repositories yet"), "{html}");
        assert!(html.contains("id=\"new-repo-form\""));
        // The Code phase is lit in the project navigation.
        assert!(html.contains("href=\"/projects/demo/code\" aria-current=\"page\""));

        let (st, loc, _) = s
            .admin_form(
                "/projects/demo/code/repos",
                form_body(&[("name", "web"), ("import_url", "")]),
            )
            .await;
        assert_eq!((st, loc.as_str()), (303, "/projects/demo/code"));
        let (_, html) = s.admin_page("/projects/demo/code").await;
        assert!(html.contains("data-repo=\"web\""), "{html}");
        assert!(html.contains("/git/demo/web.git"));
        assert!(html.contains("data-copy=\"clone-web\""));
        let (st, js) = s.admin_page("/assets/copy.js").await;
        assert_eq!(st, 200);
        assert!(js.contains("clipboard"));

        // A bad name comes back with the form as typed and the reason.
        let (st, _, html) = s
            .admin_form(
                "/projects/demo/code/repos",
                form_body(&[("name", "web.git"), ("import_url", "")]),
            )
            .await;
        assert_eq!(st, 422);
        assert!(html.contains("id=\"repo-error\""), "{html}");
        assert!(html.contains("value=\"web.git\""));
        let (st, _, _) = s
            .admin_form("/projects/demo/code/repos", form_body(&[("name", "web")]))
            .await;
        assert_eq!(st, 409);

        // A viewer sees the list but not the form.
        let viewer = member(&s, "viewer", "viewer").await;
        let r = s
            .req(Method::GET, "/projects/demo/code", Some(&viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let html = r.text().await.unwrap();
        assert!(html.contains("data-repo=\"web\""));
        assert!(!html.contains("id=\"new-repo-form\""));
        s.stop().await;
    }
}

/// Bytes that do not compress (a simple xorshift), so the pack is as large as the file.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn pushes_stream_past_the_json_body_limit() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st| st.max_body_bytes = 4096,
                ..Options::default()
            },
        )
        .await;
        s.demo_project().await;
        let (st, repo) = create_repo(&s, json!({"name": "big"})).await;
        assert_eq!(st, 201, "{repo}");
        let url = with_credentials(repo["clone_url"].as_str().unwrap(), "admin", &s.admin_token);
        let git = Git::new();
        let work = git.dir("w");
        git.run(&work, &["init", "-q", "-b", "main", "big"]).await;
        let big = work.join("big");
        // 3 MB of noise: a pack far over the 4 KB JSON limit goes through the stream.
        std::fs::write(big.join("blob.bin"), noise(3 * 1024 * 1024)).unwrap();
        git.run(&big, &["add", "."]).await;
        git.run(&big, &["commit", "-q", "-m", "Big file"]).await;
        git.run(&big, &["push", "-q", &url, "main"]).await;
        git.run(&work, &["clone", "-q", &url, "again"]).await;
        assert_eq!(
            std::fs::read(work.join("again/blob.bin")).unwrap().len(),
            3 * 1024 * 1024
        );
        let events = pushed_events(&s).await;
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0]["payload"]["commits"][0]["files"],
            json!(["blob.bin"])
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn concurrent_pushes_and_a_long_negotiation() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (st, repo) = create_repo(&s, json!({"name": "app"})).await;
        assert_eq!(st, 201, "{repo}");
        let url = with_credentials(repo["clone_url"].as_str().unwrap(), "admin", &s.admin_token);
        let git = Git::new();
        let work = git.dir("w");
        git.run(&work, &["init", "-q", "-b", "main", "a"]).await;
        let a = work.join("a");
        git.commit(&a, "f", "1\n", "Base").await;
        git.run(&a, &["push", "-q", &url, "main"]).await;
        git.run(&work, &["clone", "-q", &url, "b"]).await;
        let b = work.join("b");
        let ca = git.commit(&a, "a.txt", "a\n", "On branch one").await;
        let cb = git.commit(&b, "b.txt", "b\n", "On branch two").await;
        // Two pushes at once to different branches: each gets its own event with its commit.
        let args_a = ["push", url.as_str(), "HEAD:refs/heads/one"];
        let args_b = ["push", url.as_str(), "HEAD:refs/heads/two"];
        let (ra, rb) = tokio::join!(git.try_run(&a, &args_a), git.try_run(&b, &args_b));
        assert!(ra.0 && rb.0, "{ra:?} {rb:?}");
        let events = pushed_events(&s).await;
        assert_eq!(events.len(), 3, "{events:?}");
        for (r, c) in [("refs/heads/one", &ca), ("refs/heads/two", &cb)] {
            let e = events
                .iter()
                .find(|e| e["payload"]["ref"] == r)
                .unwrap_or_else(|| panic!("no event for {r}"));
            assert_eq!(e["payload"]["commits"].as_array().unwrap().len(), 1);
            assert_eq!(e["payload"]["commits"][0]["id"], c.as_str());
        }
        // Many local commits make the fetch negotiation large (git gzips such requests).
        for i in 0..60 {
            git.commit(&a, "n.txt", &format!("{i}\n"), &format!("Local {i}"))
                .await;
        }
        let mut fetch = git.cmd(&a, &["fetch", "-q", &url, "two"]);
        fetch
            .env("GIT_TRACE_CURL", "1")
            .env("GIT_TRACE_CURL_NO_DATA", "1");
        let out = tokio::process::Command::from(fetch).output().await.unwrap();
        let trace = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(out.status.success(), "{trace}");
        assert!(
            trace.contains("content-encoding: gzip"),
            "the fetch request was not gzipped: {trace}"
        );
        assert_eq!(git.run(&a, &["rev-parse", "FETCH_HEAD"]).await.trim(), cb);
        s.stop().await;
    }
}

/// The repository `app` of project `demo`, created by the admin and cloned with the admin's
/// credentials, on a `main` branch without commits; returns (git, work dir, plain clone URL).
pub async fn app_checkout(s: &TestServer) -> (Git, PathBuf, String) {
    let (st, repo) = s
        .admin(
            Method::POST,
            "/api/v1/projects/demo/repos",
            Some(json!({"name": "app"})),
        )
        .await;
    assert_eq!(st, 201, "{repo}");
    let url = repo["clone_url"].as_str().unwrap().to_string();
    let git = Git::new();
    let top = git.dir("w");
    let admin = with_credentials(&url, "admin", &s.admin_token);
    git.run(&top, &["clone", "-q", &admin, "app"]).await;
    let work = top.join("app");
    git.run(&work, &["checkout", "-q", "-b", "main"]).await;
    (git, work, url)
}

/// [`app_checkout`] with a first commit (`file` holding `text`) pushed to `main`.
pub async fn app_with_main(s: &TestServer, file: &str, text: &str) -> (Git, PathBuf, String) {
    let (git, work, url) = app_checkout(s).await;
    git.commit(&work, file, text, "Start").await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    (git, work, url)
}

/// The push's ref advertisement is answered in process and its POST runs receive-pack
/// directly: the advertisement over HTTP is byte for byte what `git http-backend` says for the
/// same repository (empty, then with branches, tags and a symbolic ref), and the real git client
/// pushes with protocol v0, v1 and v2 settings and from a shallow clone; a refused push still
/// says why.
#[tokio::test]
async fn pushes_through_the_in_process_advertisement() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        let (st, repo) = create_repo(&s, json!({"name": "app"})).await;
        assert_eq!(st, 201, "{repo}");
        let url = repo["clone_url"].as_str().unwrap().to_string();
        let dir = ouro_code::repos::dir(
            &ouro_code::repos::root(&s.state.settings.data_dir),
            project.id,
            repo["id"].as_i64().unwrap(),
        );
        let advertised = async || {
            let res = s
                .client
                .get(s.url("/git/demo/app.git/info/refs?service=git-receive-pack"))
                .basic_auth("admin", Some(&s.admin_token))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let ct = res.headers()["content-type"].to_str().unwrap().to_string();
            let cache = res.headers()["cache-control"].to_str().unwrap().to_string();
            (ct, cache, res.bytes().await.unwrap().to_vec())
        };
        let by_git = async || {
            let out = ouro_code::advertise::http_backend_info_refs(&dir)
                .await
                .unwrap();
            let (headers, body) = ouro_code::advertise::split_cgi(&out).unwrap();
            let h = |k: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            (h("content-type"), h("cache-control"), body.to_vec())
        };
        assert!(dir.is_dir(), "{}", dir.display());
        assert_eq!(advertised().await, by_git().await, "empty repository");

        let git = Git::new();
        let top = git.dir("w");
        let admin = with_credentials(&url, "admin", &s.admin_token);
        git.run(&top, &["clone", "-q", &admin, "app"]).await;
        let work = top.join("app");
        git.run(&work, &["checkout", "-q", "-b", "main"]).await;
        for (n, version) in ["0", "1", "2"].iter().enumerate() {
            git.commit(&work, "f.txt", &format!("v{n}\n"), &format!("c{n}"))
                .await;
            let setting = format!("protocol.version={version}");
            git.run(&work, &["-c", &setting, "push", "-q", "origin", "main"])
                .await;
        }
        git.run(&work, &["tag", "-a", "-m", "t", "v1"]).await;
        git.run(&work, &["push", "-q", "origin", "v1", "main:topic"])
            .await;
        git.run(
            &dir,
            &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
        )
        .await;
        let (ct, cache, body) = advertised().await;
        assert_eq!((ct.clone(), cache.clone(), body.clone()), by_git().await);
        assert_eq!(ct, "application/x-git-receive-pack-advertisement");
        let text = String::from_utf8_lossy(&body);
        for r in [
            "refs/heads/main",
            "refs/heads/topic",
            "refs/tags/v1",
            "refs/heads/alias",
        ] {
            assert!(text.contains(r), "{r}: {text}");
        }
        git.run(&dir, &["symbolic-ref", "--delete", "refs/heads/alias"])
            .await;

        // A shallow clone pushes too.
        git.run(&top, &["clone", "-q", "--depth", "1", &admin, "shallow"])
            .await;
        let shallow = top.join("shallow");
        let tip = git.commit(&shallow, "s.txt", "s\n", "from shallow").await;
        git.run(&shallow, &["push", "-q", "origin", "HEAD:main"])
            .await;
        let (_, _, body) = advertised().await;
        assert!(String::from_utf8_lossy(&body).contains(&tip));

        // Every push was recorded once: 3 to main, the tag, topic, the shallow one.
        let events = pushed_events(&s).await;
        assert_eq!(events.len(), 6, "{events:?}");

        // A developer may not push to main: refused, with the reason, and nothing moves.
        let dev = member(&s, "dev", "developer").await;
        let dev_url = with_credentials(&url, "dev", &dev);
        git.commit(&work, "g.txt", "g\n", "by dev").await;
        git.run(&work, &["pull", "-q", "--no-rebase", &admin, "main"])
            .await;
        let (ok, out) = git.try_run(&work, &["push", &dev_url, "HEAD:main"]).await;
        assert!(!ok, "{out}");
        assert!(out.contains("remote: ouro: push refused"), "{out}");
        assert!(out.contains("is protected"), "{out}");
        assert_eq!(pushed_events(&s).await.len(), 6);
    }
}
