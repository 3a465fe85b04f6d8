//! Mirrors and imported history: a mirror follows its source on demand (and on its schedule,
//! through the same `sync`), refuses pushes, reports failed fetches, keeps credentials out of
//! sight; an import's whole history becomes `code.pushed` events.

use std::collections::HashSet;

use crate::code_hosting::{Git, member, with_credentials};
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPOS: &str = "/api/v1/projects/demo/repos";

async fn events(s: &TestServer, kind: &str) -> Vec<Value> {
    let (st, body) = s
        .admin(
            Method::GET,
            &format!("/api/v1/projects/demo/events?kind={kind}&limit=200"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_mirror_follows_its_source_and_refuses_pushes() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let git = Git::new();
        let src = git.dir("src");
        git.run(&src, &["init", "-q", "-b", "main"]).await;
        let c1 = git.commit(&src, "a.txt", "a\n", "First").await;
        git.run(&src, &["branch", "old"]).await;
        let url = format!("file://{}", src.display());

        // Validation: a mirror needs a URL; an interval only applies to a mirror and has bounds.
        for (body, field) in [
            (json!({"name": "m", "mirror": true}), "import_url"),
            (
                json!({"name": "m", "import_url": url, "mirror_interval_minutes": 5}),
                "mirror_interval_minutes",
            ),
            (
                json!({"name": "m", "import_url": url, "mirror": true, "mirror_interval_minutes": 0}),
                "interval_minutes",
            ),
        ] {
            let (st, b) = s.admin(Method::POST, REPOS, Some(body)).await;
            assert_eq!(st, 422, "{b}");
            assert_eq!(b["error"]["details"]["field"], field, "{b}");
        }

        let (st, repo) = s
            .admin(
                Method::POST,
                REPOS,
                Some(json!({"name": "m", "import_url": url, "mirror": true, "mirror_interval_minutes": 5})),
            )
            .await;
        assert_eq!(st, 201, "{repo}");
        assert_eq!(repo["kind"], "mirror");
        assert_eq!(repo["mirror"]["interval_minutes"], 5);
        assert_eq!(repo["mirror"]["last_status"], Value::Null);
        // The clone's history is indexed: one event per ref, each commit listed once.
        let pushed = events(&s, "code.pushed").await;
        assert_eq!(pushed.len(), 2, "{pushed:?}");
        let listed: Vec<&str> = pushed
            .iter()
            .flat_map(|e| e["payload"]["commits"].as_array().unwrap())
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, vec![c1.as_str()]);

        // The source moves on: a new commit, a deleted branch, a new tag.
        let c2 = git
            .commit(&src, "b.txt", "b\n", "Second, fixes nothing")
            .await;
        git.run(&src, &["branch", "-D", "old"]).await;
        git.run(&src, &["tag", "v1"]).await;
        let (st, out) = s
            .admin(Method::POST, &format!("{REPOS}/m/mirror/sync"), None)
            .await;
        assert_eq!(st, 200, "{out}");
        assert_eq!(out["last_status"], "ok", "{out}");
        assert_eq!(out["refs_moved"], 3, "{out}");
        assert!(out["last_synced_at"].is_string());
        let pushed = events(&s, "code.pushed").await;
        let by_mirror: Vec<&Value> = pushed
            .iter()
            .filter(|e| e["actor"] == "system:mirror")
            .collect();
        assert_eq!(by_mirror.len(), 3, "{pushed:?}");
        let main = by_mirror
            .iter()
            .find(|e| e["payload"]["ref"] == "refs/heads/main")
            .unwrap();
        assert_eq!(main["payload"]["old"], json!(c1));
        assert_eq!(main["payload"]["new"], json!(c2));
        assert_eq!(
            main["payload"]["commits"][0]["message"],
            "Second, fixes nothing\n"
        );
        assert!(
            by_mirror
                .iter()
                .any(|e| e["payload"]["ref"] == "refs/heads/old" && e["payload"]["deleted"] == true)
        );
        // Nothing moved: no events.
        let (_, out) = s
            .admin(Method::POST, &format!("{REPOS}/m/mirror/sync"), None)
            .await;
        assert_eq!(out["refs_moved"], 0, "{out}");
        assert_eq!(events(&s, "code.pushed").await.len(), pushed.len());

        // Clones see the source's state; pushes are refused with the reason.
        let clone_url =
            with_credentials(repo["clone_url"].as_str().unwrap(), "admin", &s.admin_token);
        let work = git.dir("w");
        git.run(&work, &["clone", "-q", &clone_url, "copy"]).await;
        let copy = work.join("copy");
        assert_eq!(git.run(&copy, &["rev-parse", "HEAD"]).await.trim(), c2);
        assert!(git.run(&copy, &["tag"]).await.contains("v1"));
        git.commit(&copy, "c.txt", "c\n", "Local").await;
        let (ok, text) = git
            .try_run(&copy, &["push", "-q", "origin", "HEAD:main"])
            .await;
        assert!(!ok, "a push to a mirror must fail: {text}");
        let (st, b) = s
            .call(
                Method::GET,
                "/git/demo/m.git/info/refs?service=git-receive-pack",
                Some(&s.admin_token),
                None,
            )
            .await;
        assert_eq!(st, 409, "{b}");

        // The interval can change; viewers cannot fetch; other repositories are not mirrors.
        let (st, out) = s
            .admin(
                Method::PATCH,
                &format!("{REPOS}/m/mirror"),
                Some(json!({"interval_minutes": 30})),
            )
            .await;
        assert_eq!(
            (st, out["interval_minutes"].clone()),
            (200, json!(30)),
            "{out}"
        );
        let (st, out) = s
            .admin(
                Method::PATCH,
                &format!("{REPOS}/m/mirror"),
                Some(json!({"interval_minutes": 100000})),
            )
            .await;
        assert_eq!(st, 422, "{out}");
        let viewer = member(&s, "viewer", "viewer").await;
        let (st, _) = s
            .call(
                Method::POST,
                &format!("{REPOS}/m/mirror/sync"),
                Some(&viewer),
                None,
            )
            .await;
        assert_eq!(st, 403);
        let (st, _) = s
            .admin(Method::POST, REPOS, Some(json!({"name": "plain"})))
            .await;
        assert_eq!(st, 201);
        let (st, b) = s
            .admin(Method::POST, &format!("{REPOS}/plain/mirror/sync"), None)
            .await;
        assert_eq!(
            (st, error_code(&b)),
            (409, "code.not_a_mirror".into()),
            "{b}"
        );

        // A source that went away: the outcome says so, nothing moves, the next fetch is planned.
        std::fs::remove_dir_all(&src).unwrap();
        let (st, out) = s
            .admin(Method::POST, &format!("{REPOS}/m/mirror/sync"), None)
            .await;
        assert_eq!(st, 200, "{out}");
        assert_eq!(out["last_status"], "failed", "{out}");
        assert!(!out["last_error"].as_str().unwrap().is_empty(), "{out}");
        let (_, one) = s.admin(Method::GET, &format!("{REPOS}/m"), None).await;
        assert_eq!(one["mirror"]["last_status"], "failed");
        git.run(&work, &["clone", "-q", &clone_url, "again"]).await;

        // The scheduler's pass fetches only what is due (nothing is, right after a fetch).
        let root = ouro_code::repos::root(&s.state.settings.data_dir);
        let n = ouro_code::mirror::sync_due(&s.state.store, &root, &s.state.secrets)
            .await
            .unwrap();
        assert_eq!(n, 0);
        s.stop().await;
    }
}

#[tokio::test]
async fn mirror_credentials_stay_sealed() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        // The source is a repository of this same server, reached with a token in the URL.
        let git = Git::new();
        let (st, src) = s
            .admin(Method::POST, REPOS, Some(json!({"name": "src"})))
            .await;
        assert_eq!(st, 201);
        let src_url = with_credentials(src["clone_url"].as_str().unwrap(), "admin", &s.admin_token);
        let work = git.dir("w");
        git.run(&work, &["clone", "-q", &src_url, "src"]).await;
        let src_dir = work.join("src");
        let c1 = git.commit(&src_dir, "a.txt", "a\n", "One").await;
        git.run(&src_dir, &["push", "-q", "origin", "HEAD:main"])
            .await;

        let (st, m) = s
            .admin(
                Method::POST,
                REPOS,
                Some(json!({"name": "m", "import_url": src_url, "mirror": true})),
            )
            .await;
        assert_eq!(st, 201, "{m}");
        let shown = m["source_url"].as_str().unwrap();
        assert!(shown.contains(":***@"), "{shown}");
        assert!(!shown.contains(&s.admin_token));
        assert_eq!(m["mirror"]["interval_minutes"], 60);
        // Neither the repository's config nor the ledger holds the token.
        let root = ouro_code::repos::root(&s.state.settings.data_dir);
        let config = std::fs::read_to_string(
            root.join(project.id.to_string())
                .join(format!("{}.git/config", m["id"])),
        )
        .unwrap();
        assert!(!config.contains(&s.admin_token), "{config}");
        let created = events(&s, "repo.created").await;
        assert!(
            !created
                .iter()
                .any(|e| e.to_string().contains(&s.admin_token))
        );

        // Fetching uses the sealed URL.
        let c2 = git.commit(&src_dir, "b.txt", "b\n", "Two").await;
        git.run(&src_dir, &["push", "-q", "origin", "HEAD:main"])
            .await;
        let (st, out) = s
            .admin(Method::POST, &format!("{REPOS}/m/mirror/sync"), None)
            .await;
        assert_eq!(
            (st, out["last_status"].clone()),
            (200, json!("ok")),
            "{out}"
        );
        let pushed = events(&s, "code.pushed").await;
        assert!(
            pushed
                .iter()
                .any(|e| e["payload"]["repo"] == "m" && e["payload"]["new"] == json!(c2))
        );
        assert!(
            pushed
                .iter()
                .any(|e| e["payload"]["repo"] == "m" && e["payload"]["new"] == json!(c1))
        );

        // A failing source with a password: the message masks it.
        let bad = format!(
            "http://admin:{}@127.0.0.1:1/git/demo/none.git",
            s.admin_token
        );
        let (st, b) = s
            .admin(
                Method::POST,
                REPOS,
                Some(json!({"name": "bad", "import_url": bad, "mirror": true})),
            )
            .await;
        assert_eq!(
            (st, error_code(&b)),
            (422, "code.import_failed".into()),
            "{b}"
        );
        assert!(!b.to_string().contains(&s.admin_token), "{b}");
        s.stop().await;
    }
}

#[tokio::test]
async fn an_import_indexes_its_whole_history() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (st, item) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/items",
                Some(json!({"type": "story", "title": "Old work"})),
            )
            .await;
        assert_eq!(st, 201);
        let key = item["key"].as_str().unwrap().to_string();
        let git = Git::new();
        let src = git.dir("src");
        git.run(&src, &["init", "-q", "-b", "main"]).await;
        // 1,203 commits on main through fast-import (quick), one of them naming the item.
        let mut stream = String::new();
        for i in 0..1203 {
            let msg = if i == 7 {
                format!("Change {i}, fixes {key}\n")
            } else {
                format!("Change {i}\n")
            };
            let body = format!("v{i}\n");
            stream.push_str(&format!(
                "commit refs/heads/main\nmark :{}\ncommitter A <a@example.com> {} +0000\ndata {}\n{msg}",
                i + 1,
                1_700_000_000 + i,
                msg.len()
            ));
            if i > 0 {
                stream.push_str(&format!("from :{i}\n"));
            }
            stream.push_str(&format!(
                "M 644 inline f.txt\ndata {}\n{body}\n",
                body.len()
            ));
        }
        let mut child = git
            .cmd(&src, &["fast-import", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stream.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        git.run(&src, &["reset", "-q", "--hard"]).await;
        git.run(&src, &["checkout", "-q", "-b", "topic"]).await;
        let topic = git.commit(&src, "t.txt", "t\n", "Topic work").await;
        // The source's HEAD names the default branch, whose history is listed first.
        git.run(&src, &["checkout", "-q", "main"]).await;

        let url = format!("file://{}", src.display());
        let (st, repo) = s
            .admin(
                Method::POST,
                REPOS,
                Some(json!({"name": "old", "import_url": url})),
            )
            .await;
        assert_eq!(st, 201, "{repo}");
        let pushed = events(&s, "code.pushed").await;
        let main: Vec<&Value> = pushed
            .iter()
            .filter(|e| e["payload"]["ref"] == "refs/heads/main")
            .collect();
        let summary: Vec<String> = pushed
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["payload"]["ref"], e["payload"]["part"], e["payload"]["commits_total"]
                )
            })
            .collect();
        assert_eq!(main.len(), 2, "1,203 commits are two parts: {summary:?}");
        let mut ids = HashSet::new();
        for e in &main {
            assert_eq!(e["payload"]["imported"], true);
            assert_eq!(e["payload"]["parts"], 2);
            assert_eq!(e["payload"]["commits_total"], 1203);
            for c in e["payload"]["commits"].as_array().unwrap() {
                assert!(ids.insert(c["id"].as_str().unwrap().to_string()));
            }
        }
        assert_eq!(ids.len(), 1203);
        let topic_events: Vec<&Value> = pushed
            .iter()
            .filter(|e| e["payload"]["ref"] == "refs/heads/topic")
            .collect();
        assert_eq!(topic_events.len(), 1);
        let commits = topic_events[0]["payload"]["commits"].as_array().unwrap();
        assert_eq!(
            commits.len(),
            1,
            "the shared history is listed under main only"
        );
        assert_eq!(commits[0]["id"], json!(topic));

        // Plan links the item that an imported commit names.
        let mut linked = false;
        for _ in 0..100 {
            let (_, links) = s
                .admin(
                    Method::GET,
                    &format!("/api/v1/projects/demo/items/{key}/links"),
                    None,
                )
                .await;
            if links.to_string().contains("commit") {
                linked = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(linked, "the imported commit naming {key} links it");
        s.stop().await;
    }
}

#[tokio::test]
async fn the_code_page_creates_and_fetches_mirrors() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let git = Git::new();
        let src = git.dir("src");
        git.run(&src, &["init", "-q", "-b", "main"]).await;
        git.commit(&src, "a.txt", "a\n", "First").await;
        let url = format!("file://{}", src.display());
        let (st, _, html) = s
            .admin_form(
                "/projects/demo/code/repos",
                form_body(&[
                    ("name", "m"),
                    ("import_url", &url),
                    ("mirror", "1"),
                    ("mirror_interval_minutes", "abc"),
                ]),
            )
            .await;
        assert_eq!(st, 422, "{html}");
        assert!(html.contains("id=\"repo-error\""));
        assert!(
            html.contains("value=\"abc\""),
            "the form keeps what was typed"
        );
        let (st, loc, _) = s
            .admin_form(
                "/projects/demo/code/repos",
                form_body(&[
                    ("name", "m"),
                    ("import_url", &url),
                    ("mirror", "1"),
                    ("mirror_interval_minutes", "120"),
                ]),
            )
            .await;
        assert_eq!((st, loc.as_str()), (303, "/projects/demo/code"));
        let (_, html) = s.admin_page("/projects/demo/code").await;
        assert!(html.contains("data-mirror=\"m\""), "{html}");
        assert!(html.contains("every 2 hour(s)"), "{html}");
        assert!(html.contains("not fetched since the clone"));
        let (st, loc, _) = s
            .admin_form("/projects/demo/code/m/mirror/sync", form_body(&[]))
            .await;
        assert_eq!((st, loc.as_str()), (303, "/projects/demo/code"));
        let (_, html) = s.admin_page("/projects/demo/code").await;
        let at = html.find("data-mirror=").unwrap();
        let status = &html[at..at + 600.min(html.len() - at)];
        assert!(status.contains(": ok"), "{status}");
        s.stop().await;
    }
}

/// Git's automatic housekeeping still happens, after the push has its answer (receive-pack's own
/// `autogc` is off): with a threshold of one loose object, the loose objects get packed.
#[tokio::test]
async fn housekeeping_runs_after_a_push() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        let (st, repo) = s
            .admin(Method::POST, REPOS, Some(json!({"name": "app"})))
            .await;
        assert_eq!(st, 201);
        let dir = ouro_code::repos::root(&s.state.settings.data_dir)
            .join(project.id.to_string())
            .join(format!("{}.git", repo["id"]));
        let git = Git::new();
        let d = dir.to_string_lossy().to_string();
        git.run(&dir, &["-C", &d, "config", "gc.auto", "1"]).await;
        git.run(&dir, &["-C", &d, "config", "gc.autoDetach", "false"])
            .await;
        // git estimates the loose objects from one of its 256 fan-out directories: write enough
        // that the estimate passes the threshold.
        let blobs = git.dir("blobs");
        let mut args: Vec<String> = vec!["-C".into(), d.clone(), "hash-object".into(), "-w".into()];
        for i in 0..1500 {
            let p = blobs.join(format!("b{i}"));
            std::fs::write(&p, format!("blob {i}\n")).unwrap();
            args.push(p.to_string_lossy().into_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        git.run(&dir, &args).await;
        assert!(!packed_now(&dir), "nothing is packed before the pushes");
        let url = with_credentials(repo["clone_url"].as_str().unwrap(), "admin", &s.admin_token);
        let work = git.dir("w");
        git.run(&work, &["clone", "-q", &url, "app"]).await;
        let app = work.join("app");
        for i in 0..3 {
            git.commit(&app, &format!("f{i}.txt"), "x\n", &format!("C{i}"))
                .await;
            git.run(&app, &["push", "-q", "origin", "HEAD:main"]).await;
        }
        let packed = || packed_now(&dir);
        let mut ok = packed();
        for _ in 0..100 {
            if ok {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            ok = packed();
        }
        assert!(
            ok,
            "git maintenance packed the loose objects after the pushes"
        );
        s.stop().await;
    }
}

fn packed_now(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir.join("objects/pack"))
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "pack"))
        })
        .unwrap_or(false)
}
